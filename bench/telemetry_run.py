"""Telemetry on vs off: the same warm-invoke load against two servers, alternating, so both
see the same machine conditions; prints throughput and latency and the cost of telemetry."""

import argparse
import concurrent.futures
import http.server
import json
import os
import sqlite3
import statistics
import subprocess
import tempfile
import threading

from run import PAYLOAD, RAMPART, ROOT, post, wait_line, wrk


class Sink(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint that takes span exports and drops them."""
    spans_bytes = 0

    def do_POST(self):
        Sink.spans_bytes += len(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def start(telemetry, otlp=None):
    data_dir = tempfile.mkdtemp(prefix=f"rampart-bench-telemetry-{telemetry}-")
    extra = ["--otlp-endpoint", otlp] if otlp else []
    server = subprocess.Popen(
        [RAMPART, "serve", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
         "--data-dir", data_dir, "--telemetry", telemetry, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "RAMPART_LOG": "warn"},
    )
    endpoint = json.loads(wait_line(server, '"ready"'))["endpoint"]
    subprocess.run([RAMPART, "deploy", os.path.join(ROOT, "bench", "functions"), "--endpoint", endpoint],
                   check=True, stdout=subprocess.DEVNULL)
    return server, f"{endpoint}/2015-03-31/functions/echo-rust/invocations", data_dir


def storage(data_dir, function):
    """Metric storage of one function: series, 1-second rows and their average size."""
    db = sqlite3.connect(f"file:{os.path.join(data_dir, 'rampart.db')}?mode=ro", uri=True)
    like = f'%["FunctionName","{function}"]%'
    series = db.execute("SELECT count(*) FROM metric_series WHERE dimensions LIKE ?", (like,)).fetchone()[0]
    rows, hist = db.execute(
        "SELECT count(*), avg(coalesce(length(histogram), 0)) FROM metric_points p "
        "JOIN metric_series s ON s.id = p.series WHERE p.resolution = 1 AND s.dimensions LIKE ?",
        (like,)).fetchone()
    db.close()
    # Fixed columns (ids, time, unit, four doubles) and the two index entries: about 90 bytes.
    return series, rows, 90 + (hist or 0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10, help="seconds per load run")
    ap.add_argument("--rounds", type=int, default=2, help="on/off pairs per client count")
    ap.add_argument("--no-otlp", action="store_true", help="metrics only: no span export")
    args = ap.parse_args()
    sink = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    otlp = f"http://127.0.0.1:{sink.server_address[1]}"
    servers = {"on": start("on", None if args.no_otlp else otlp), "off": start("off")}
    try:
        results = {}
        for clients in (1, 32):
            for mode, (_, url, _) in servers.items():
                with concurrent.futures.ThreadPoolExecutor(clients) as pool:
                    for _ in range(3):
                        list(pool.map(lambda _: post(url, PAYLOAD), range(clients)))
            for _ in range(args.rounds):
                for mode, (_, url, _) in servers.items():
                    results.setdefault((mode, clients), []).append(wrk(url, clients, args.duration))
        print(f"\n## Telemetry cost ({args.duration} s per run, {args.rounds} alternating rounds, median;"
              f" on = metrics recorded{'' if args.no_otlp else ' and spans exported over OTLP to a local sink'})\n")
        print("| telemetry | clients | req/s | p50 ms | p99 ms |")
        print("|---|---:|---:|---:|---:|")
        med = {}
        for (mode, clients), runs in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0] != "off")):
            rps = statistics.median(r[0] for r in runs)
            p50 = statistics.median(r[1] for r in runs)
            p99 = statistics.median(r[2] for r in runs)
            med[(mode, clients)] = (rps, p50)
            print(f"| {mode} | {clients} | {rps:,.0f} | {p50:.3f} | {p99:.3f} |")
        print()
        for clients in (1, 32):
            on, off = med[("on", clients)], med[("off", clients)]
            print(f"- {clients} clients: telemetry costs {1 - on[0] / off[0]:+.1%} throughput, "
                  f"{on[1] / off[1] - 1:+.1%} p50 (target: at most 5% throughput)")
        series, rows, row_bytes = storage(servers["on"][2], "echo-rust")
        bound = series * (3 * 3600 + 15 * 1440) * row_bytes
        print(f"\nStorage: {series} series of echo-rust, {rows} 1-second rows written, about {row_bytes:.0f} B"
              f" each; a function busy every second keeps at most {series} x (10,800 1-second +"
              f" 21,600 1-minute rows) = {bound / 1e6:.1f} MB at the default retention"
              f" ({series * 86400 * row_bytes / 1e6:.1f} MB of 1-second rows written per day, pruned after 3 h)."
              f" Spans exported: {Sink.spans_bytes / 1e6:.1f} MB.")
    finally:
        sink.shutdown()
        for server, _, _ in servers.values():
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()

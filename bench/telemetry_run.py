"""Telemetry on vs off: the same warm-invoke load against two servers, alternating, so both
see the same machine conditions; prints throughput and latency and the cost of telemetry."""

import argparse
import concurrent.futures
import json
import os
import statistics
import subprocess
import tempfile

from run import PAYLOAD, RAMPART, ROOT, post, wait_line, wrk


def start(telemetry):
    data_dir = tempfile.mkdtemp(prefix=f"rampart-bench-telemetry-{telemetry}-")
    server = subprocess.Popen(
        [RAMPART, "serve", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
         "--data-dir", data_dir, "--telemetry", telemetry],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "RAMPART_LOG": "warn"},
    )
    endpoint = json.loads(wait_line(server, '"ready"'))["endpoint"]
    subprocess.run([RAMPART, "deploy", os.path.join(ROOT, "bench", "functions"), "--endpoint", endpoint],
                   check=True, stdout=subprocess.DEVNULL)
    return server, f"{endpoint}/2015-03-31/functions/echo-rust/invocations"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10, help="seconds per load run")
    ap.add_argument("--rounds", type=int, default=2, help="on/off pairs per client count")
    args = ap.parse_args()
    servers = {mode: start(mode) for mode in ("on", "off")}
    try:
        results = {}
        for clients in (1, 32):
            for mode, (_, url) in servers.items():
                with concurrent.futures.ThreadPoolExecutor(clients) as pool:
                    for _ in range(3):
                        list(pool.map(lambda _: post(url, PAYLOAD), range(clients)))
            for _ in range(args.rounds):
                for mode, (_, url) in servers.items():
                    results.setdefault((mode, clients), []).append(wrk(url, clients, args.duration))
        print(f"\n## Telemetry cost ({args.duration} s per run, {args.rounds} alternating rounds, median)\n")
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
    finally:
        for server, _ in servers.values():
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()

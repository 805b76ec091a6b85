"""Durable queue benchmark (see bench/queue)."""

import argparse
import json
import os
import re
import sqlite3
import subprocess
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RAMPART = os.path.join(ROOT, "target", "release", "rampart")


def wrk_event(url, clients, duration):
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write('wrk.method = "POST"\nwrk.body = "{\\"n\\": 1}"\nwrk.headers["X-Amz-Invocation-Type"] = "Event"\n')
    out = subprocess.run(
        ["wrk", "-t", str(min(clients, 2)), "-c", str(clients), "-d", f"{duration}s", "--latency", "-s", script.name, url],
        capture_output=True, text=True, timeout=duration + 60, check=True,
    ).stdout
    os.unlink(script.name)
    if "Non-2xx" in out:
        raise SystemExit(f"non-2xx answers:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))

    def pct(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v

    return rps, pct(50), pct(99), total


def one_per_transaction(n):
    """The baseline: each event its own committed, fsynced transaction (WAL, synchronous=FULL)."""
    d = tempfile.mkdtemp()
    db = sqlite3.connect(os.path.join(d, "b.db"), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE events (id TEXT PRIMARY KEY, payload BLOB, t INTEGER)")
    start = time.perf_counter()
    for i in range(n):
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO events VALUES (?, ?, ?)", (f"e{i}", b'{"n": 1}', i))
        db.execute("COMMIT")
    return n / (time.perf_counter() - start)


def stats(endpoint, fn):
    with urllib.request.urlopen(f"{endpoint}/rampart/v1/functions/{fn}/stats", timeout=30) as r:
        return json.loads(r.read())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=5)
    args = ap.parse_args()
    data_dir = tempfile.mkdtemp(prefix="rampart-queue-bench-")
    server = subprocess.Popen(
        [RAMPART, "serve", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--data-dir", data_dir],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, "RAMPART_LOG": "warn"},
    )
    try:
        endpoint = json.loads(server.stdout.readline())["endpoint"]
        subprocess.run([RAMPART, "deploy", os.path.join(ROOT, "bench", "functions"), "--endpoint", endpoint],
                       check=True, stdout=subprocess.DEVNULL)
        url = f"{endpoint}/2015-03-31/functions/echo-rust/invocations"
        concurrency = f"{endpoint}/2017-10-31/functions/echo-rust/concurrency"
        # Deliveries paused (reserved concurrency 0) while enqueueing is measured, so the
        # figures are the queue's own; they resume for the end-to-end part.
        urllib.request.urlopen(urllib.request.Request(
            concurrency, data=b'{"ReservedConcurrentExecutions": 0}', method="PUT"), timeout=30).read()
        baseline = one_per_transaction(2000)
        rows = []
        accepted = 0
        start = time.perf_counter()
        for clients in (1, 16, 64):
            rps, p50, p99, total = wrk_event(url, clients, args.duration)
            accepted += total
            rows.append((clients, rps, p50, p99))
        enqueue_done = time.perf_counter()
        urllib.request.urlopen(urllib.request.Request(concurrency, method="DELETE"), timeout=30).read()
        deadline = time.time() + 600
        while stats(endpoint, "echo-rust")["queue_depth"] > 0 and time.time() < deadline:
            time.sleep(0.2)
        drained = time.perf_counter()
        s = stats(endpoint, "echo-rust")
        print(f"\n## Durable enqueue (Event invocations, wrk, {args.duration} s per run, deliveries paused)\n")
        print("| clients | acknowledged events/s | p50 ack ms | p99 ack ms | vs one-per-transaction |")
        print("|---:|---:|---:|---:|---:|")
        for clients, rps, p50, p99 in rows:
            print(f"| {clients} | {rps:,.0f} | {p50:.3f} | {p99:.3f} | {rps / baseline:.1f}x |")
        print(f"\nbaseline, one event per fsynced transaction (same disk, same run): {baseline:,.0f} events/s")
        print(f"\n## End-to-end delivery to the Rust echo\n")
        print(f"{accepted:,} events queued; with deliveries resumed the queue drained in "
              f"{drained - enqueue_done:.1f} s: {s['async']['delivered']:,} delivered, "
              f"{s['dead_letters']} dead letters, {s['async']['delivered'] / (drained - enqueue_done):,.0f} deliveries/s")
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    main()

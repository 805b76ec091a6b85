"""Drives the benchmark: starts rampart and the baseline echo server, loads them with wrk,
measures cold starts, and prints one table with ratios against the same-run baseline."""

import argparse
import concurrent.futures
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RAMPART = os.path.join(ROOT, "target", "release", "rampart")
ECHO_SERVER = os.path.join(ROOT, "target", "functions", "release", "echo-server")
PAYLOAD = '{"counter": 1, "operation": "increment"}'


def wait_line(proc, needle, timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise SystemExit(f"process exited before printing {needle!r}")
        if needle in line:
            return line.strip()
    raise SystemExit(f"timed out waiting for {needle!r}")


def wrk(url, clients, duration, body=PAYLOAD):
    """Runs wrk with a POST body; returns (requests/s, p50 ms, p99 ms)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write('wrk.method = "POST"\nwrk.body = %s\nwrk.headers["Content-Type"] = "application/json"\n' % json.dumps(body))
    threads = min(clients, 2)
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(clients), "-d", f"{duration}s", "--latency", "-s", script.name, url],
        capture_output=True, text=True, timeout=duration + 60, check=True,
    ).stdout
    os.unlink(script.name)
    if "Non-2xx" in out:
        raise SystemExit(f"non-2xx answers under load:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def pct(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    return rps, pct(50), pct(99)


def post(url, body, timeout=60):
    req = urllib.request.Request(url, data=body.encode(), method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read()


def median_start(cmd, runs):
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, check=True)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10, help="seconds per load run")
    ap.add_argument("--cold-runs", type=int, default=10, help="0 skips the cold starts")
    args = ap.parse_args()
    data_dir = tempfile.mkdtemp(prefix="rampart-bench-")
    server = subprocess.Popen(
        [RAMPART, "serve", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--data-dir", data_dir],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, "RAMPART_LOG": "warn"},
    )
    echo = subprocess.Popen([ECHO_SERVER], stdout=subprocess.PIPE, text=True)
    try:
        ready = json.loads(wait_line(server, '"ready"'))
        endpoint, http_endpoint = ready["endpoint"], ready["http_endpoint"]
        echo_url = "http://" + wait_line(echo, "listening").split()[1] + "/"
        subprocess.run([RAMPART, "deploy", os.path.join(ROOT, "bench", "functions"), "--endpoint", endpoint],
                       check=True, stdout=subprocess.DEVNULL)
        rows = []
        for clients in (1, 32):
            base = wrk(echo_url, clients, args.duration)
            rows.append(("baseline: loopback HTTP echo", clients, base, None))
            invoke_rust = f"{endpoint}/2015-03-31/functions/echo-rust/invocations"
            # The 2.0 event the route hands the function (the echo returns it): Invoke with it
            # as the payload separates the gateway's own cost from the event's size.
            route_event = post(f"{http_endpoint}/echo", PAYLOAD)[1].decode()
            targets = [
                ("invoke echo-rust", invoke_rust, PAYLOAD),
                ("route POST /echo -> echo-rust", f"{http_endpoint}/echo", PAYLOAD),
                (f"invoke echo-rust, the route's {len(route_event)} B event as payload", invoke_rust, route_event),
                ("invoke echo-python", f"{endpoint}/2015-03-31/functions/echo-python/invocations", PAYLOAD),
            ]
            for name, url, body in targets:
                # Warm one instance per client, concurrently, so the run measures warm invokes.
                with concurrent.futures.ThreadPoolExecutor(clients) as pool:
                    for _ in range(3):
                        list(pool.map(lambda _: post(url, body), range(clients)))
                rows.append((name, clients, wrk(url, clients, args.duration, body), base))

        print(f"\n## Warm invocations ({args.duration} s per run, wrk, payload {len(PAYLOAD)} B)\n")
        print("| target | clients | req/s | p50 ms | p99 ms | req/s vs baseline | p50 vs baseline |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for name, clients, (rps, p50, p99), base in rows:
            ratio = f"{rps / base[0]:.2f}x" if base else "1.00x"
            lat = f"{p50 / base[1]:.1f}x" if base else "1.0x"
            print(f"| {name} | {clients} | {rps:,.0f} | {p50:.3f} | {p99:.3f} | {ratio} | {lat} |")

        print("\nRoute path cost (throughput lost, p50 added) against:")
        for clients in (1, 32):
            by_name = {name: r for name, c, r, _ in rows if c == clients}
            route = by_name["route POST /echo -> echo-rust"]
            for name, r in by_name.items():
                if name.startswith("invoke echo-rust"):
                    print(f"- {name}, {clients} clients: {1 - route[0] / r[0]:+.1%} throughput, "
                          f"{route[1] / r[1] - 1:+.1%} p50")
        if args.cold_runs == 0:
            return

        # Cold starts: a new function each time, first invoke timed end to end and as reported.
        python = subprocess.run(["python3", "-c", "import sys; print(sys.executable)"],
                                capture_output=True, text=True, check=True).stdout.strip()
        bare_python = median_start([python, "-c", "pass"], args.cold_runs)
        bare_node = median_start(["node", "-e", "0"], args.cold_runs)
        work = tempfile.mkdtemp(prefix="rampart-cold-")
        cold = {}
        for kind, runtime, files, handler in (
            ("provided (Rust echo)", "provided.al2023", {"bootstrap": os.path.join(ROOT, "target", "functions", "release", "echo")}, "x"),
            ("python3.12", "python3.12", {"app.py": os.path.join(ROOT, "bench", "functions", "echo-python", "app.py")}, "app.handler"),
            ("nodejs20.x", "nodejs20.x", None, "index.handler"),
        ):
            totals, inits = [], []
            for i in range(args.cold_runs):
                name = f"cold-{runtime.replace('.', '-')}-{i}"
                proj = os.path.join(work, name)
                os.makedirs(os.path.join(proj, "code"), exist_ok=True)
                if files is None:
                    with open(os.path.join(proj, "code", "index.mjs"), "w") as f:
                        f.write("export const handler = async (e) => e;\n")
                else:
                    for dst, src in files.items():
                        with open(src, "rb") as s, open(os.path.join(proj, "code", dst), "wb") as d:
                            d.write(s.read())
                        os.chmod(os.path.join(proj, "code", dst), 0o755)
                with open(os.path.join(proj, "rampart.toml"), "w") as f:
                    f.write(f'[[function]]\nname = "{name}"\nruntime = "{runtime}"\nhandler = "{handler}"\ncode = "code"\n')
                subprocess.run([RAMPART, "deploy", proj, "--endpoint", endpoint], check=True, stdout=subprocess.DEVNULL)
                req = urllib.request.Request(f"{endpoint}/2015-03-31/functions/{name}/invocations",
                                             data=b"{}", method="POST", headers={"X-Amz-Log-Type": "Tail"})
                t = time.perf_counter()
                with urllib.request.urlopen(req, timeout=60) as r:
                    r.read()
                    tail = r.headers.get("X-Amz-Log-Result", "")
                totals.append((time.perf_counter() - t) * 1000)
                import base64
                m = re.search(r"Init Duration: ([\d.]+) ms", base64.b64decode(tail).decode())
                inits.append(float(m.group(1)) if m else float("nan"))
            cold[kind] = (statistics.median(totals), statistics.median(inits))

        print(f"\n## Cold starts (median of {args.cold_runs}; first invoke of a new function)\n")
        print("| runtime | first invoke ms (client) | Init Duration ms (REPORT) | bare start ms | over bare |")
        print("|---|---:|---:|---:|---:|")
        for kind, (total, init) in cold.items():
            bare = bare_python if kind.startswith("python") else bare_node if kind.startswith("node") else None
            bare_txt = f"{bare:.1f}" if bare else "-"
            over = f"{total - bare:+.1f} ms" if bare else "-"
            print(f"| {kind} | {total:.1f} | {init:.1f} | {bare_txt} | {over} |")
        print(f"\nbare `python3 -c pass` ({python}): {bare_python:.1f} ms; bare `node -e 0`: {bare_node:.1f} ms")
    finally:
        server.terminate()
        echo.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        echo.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())

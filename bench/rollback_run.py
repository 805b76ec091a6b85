"""Rollback under load: clients invoke fn:live continuously while a bad canary is deployed;
measures first failing request -> alias back to 100% old version, and failures meanwhile."""

import argparse
import base64
import io
import json
import os
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zipfile

from run import RAMPART, wait_line

HEALTHY = "def handler(event, context):\n    return 'ok'\n"
BROKEN = ("import random\ndef handler(event, context):\n"
          "    if random.random() < 0.3:\n        raise RuntimeError('bad canary')\n    return 'ok'\n")


def call(endpoint, path, body=None, method="POST"):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(endpoint + path, data=data, method=method,
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read() or b"null"), r.headers


def zipped(source):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("app.py", source)
    return base64.b64encode(buf.getvalue()).decode()


def one_run(endpoint, clients, run):
    name = f"shop{run}"
    call(endpoint, "/2015-03-31/functions", {
        "FunctionName": name, "Runtime": "python3.12", "Handler": "app.handler",
        "Role": "arn:aws:iam::000000000000:role/r", "Code": {"ZipFile": zipped(HEALTHY)}})
    call(endpoint, f"/rampart/v1/functions/{name}/deployments",
         {"Alias": "live", "Strategy": {"Type": "AllAtOnce"}})
    events = []  # (time, executed version, failed)
    stop = threading.Event()

    def client():
        while not stop.is_set():
            req = urllib.request.Request(f"{endpoint}/2015-03-31/functions/{name}:live/invocations",
                                         data=b"{}", method="POST")
            with urllib.request.urlopen(req, timeout=60) as r:
                r.read()
                events.append((time.monotonic(), r.headers.get("X-Amz-Executed-Version"),
                               r.headers.get("X-Amz-Function-Error") is not None))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    time.sleep(2)  # steady load on the old version
    call(endpoint, f"/2015-03-31/functions/{name}/code", {"ZipFile": zipped(BROKEN)}, method="PUT")
    deployment, _ = call(endpoint, f"/rampart/v1/functions/{name}/deployments",
                         {"Alias": "live", "Strategy": {"Type": "Canary", "Percent": 10, "IntervalSeconds": 300}})
    did, new_version = deployment["DeploymentId"], deployment["ToVersion"]
    deadline = time.monotonic() + 120
    rolled = None
    while time.monotonic() < deadline:
        listed, _ = call(endpoint, f"/rampart/v1/deployments?function={name}", method="GET")
        d = next(d for d in listed["Deployments"] if d["DeploymentId"] == did)
        if d["Status"] == "RolledBack":
            rolled = time.monotonic()
            reason = d["Reason"]
            break
        time.sleep(0.05)
    time.sleep(1)
    stop.set()
    for t in threads:
        t.join()
    if rolled is None:
        raise SystemExit("the bad canary was not rolled back within 120 s")
    failures = [t for t, v, failed in events if failed]
    first_fail = min(failures)
    on_new = [e for e in events if e[1] == new_version]
    last_new = max(t for t, _, _ in on_new)
    failed_between = sum(1 for t in failures if first_fail <= t <= rolled)
    return {
        "to_rollback_s": rolled - first_fail,
        "last_new_request_after_first_fail_s": last_new - first_fail,
        "failed": failed_between,
        "requests_on_new": len(on_new),
        "total": len(events),
        "reason": reason,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    data_dir = tempfile.mkdtemp(prefix="rampart-bench-rollback-")
    server = subprocess.Popen(
        [RAMPART, "serve", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--data-dir", data_dir],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, "RAMPART_LOG": "warn"},
    )
    try:
        endpoint = json.loads(wait_line(server, '"ready"'))["endpoint"]
        results = [one_run(endpoint, args.clients, i) for i in range(args.runs)]
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"\n## Rollback of a bad canary ({args.clients} clients of steady load, canary 10% for 5 min,"
          f" the new version fails 30% of calls)\n")
    print("| run | first failure -> rolled back, s | last request on the new version, s after first failure |"
          " failed requests meanwhile | requests on the new version | requests in the run |")
    print("|---:|---:|---:|---:|---:|---:|")
    for i, r in enumerate(results, 1):
        print(f"| {i} | {r['to_rollback_s']:.2f} | {r['last_new_request_after_first_fail_s']:.2f} |"
              f" {r['failed']} | {r['requests_on_new']} | {r['total']} |")
    print(f"\nmedian time to rollback: {statistics.median(r['to_rollback_s'] for r in results):.2f} s"
          f" (target: within 30 s of the breach becoming visible); reason: {results[0]['reason']}")


if __name__ == "__main__":
    main()

"""Crash-safety chaos run for the durable queue (see bench/chaos)."""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RAMPART = os.path.join(ROOT, "target", "release", "rampart")
# Records each delivered request id, one line per delivery.
COUNTER = """
import os
def handler(event, context):
    with open(os.environ["TMPDIR"] + "/../../delivered", "a") as f:
        f.write(context.aws_request_id + "\\n")
    return "ok"
"""


def start(data_dir):
    proc = subprocess.Popen(
        [RAMPART, "serve", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--data-dir", data_dir],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, "RAMPART_LOG": "warn"},
    )
    ready = json.loads(proc.stdout.readline())
    return proc, ready["endpoint"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    data_dir = tempfile.mkdtemp(prefix="rampart-chaos-")
    project = tempfile.mkdtemp(prefix="rampart-chaos-fn-")
    os.makedirs(os.path.join(project, "code"))
    with open(os.path.join(project, "code", "app.py"), "w") as f:
        f.write(COUNTER)
    with open(os.path.join(project, "rampart.toml"), "w") as f:
        f.write('[[function]]\nname = "counter"\nruntime = "python3.12"\nhandler = "app.handler"\ncode = "code"\n')
    proc, endpoint = start(data_dir)
    subprocess.run([RAMPART, "deploy", project, "--endpoint", endpoint], check=True, stdout=subprocess.DEVNULL)
    state = {"endpoint": endpoint, "sent": 0}
    lock = threading.Lock()
    acked = set()
    stop = threading.Event()

    def client():
        while not stop.is_set():
            with lock:
                if state["sent"] >= args.events:
                    return
                state["sent"] += 1
                url = f"{state['endpoint']}/2015-03-31/functions/counter/invocations"
            req = urllib.request.Request(url, data=b'{"n": 1}', method="POST",
                                         headers={"X-Amz-Invocation-Type": "Event"})
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    if r.status == 202:
                        with lock:
                            acked.add(r.headers["x-amzn-requestid"])
                        continue
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            # Not acknowledged: it may or may not be stored; only 202s are promised.
            time.sleep(0.01)

    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    for t in threads:
        t.start()
    for k in range(args.kills):
        time.sleep(rng.uniform(0.2, 1.0))
        proc.kill()
        proc.wait()
        new_proc, new_endpoint = start(data_dir)
        with lock:
            state["endpoint"] = new_endpoint
        proc = new_proc
        print(f"kill {k + 1}/{args.kills}: {len(acked)} acknowledged so far", flush=True)
    for t in threads:
        t.join()
    deadline = time.time() + 300
    path = os.path.join(data_dir, "delivered")
    while time.time() < deadline:
        delivered = open(path).read().split() if os.path.exists(path) else []
        if acked.issubset(set(delivered)):
            break
        time.sleep(0.5)
    delivered = open(path).read().split() if os.path.exists(path) else []
    unique = set(delivered)
    lost = acked - unique
    print(f"\nacknowledged {len(acked)}, delivered {len(delivered)} times to {len(unique)} distinct ids: "
          f"{len(delivered) - len(unique)} duplicates, {len(lost)} lost")
    proc.terminate()
    proc.wait(timeout=60)
    sys.exit(1 if lost else 0)


if __name__ == "__main__":
    main()

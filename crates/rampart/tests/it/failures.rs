//! Every way an invocation can fail, and that the next one works.

use std::time::Duration;

use serde_json::json;

use crate::harness::{Server, alive};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_exception_is_200_with_unhandled() {
    let server = Server::start();
    let code = "def handler(event, context):\n    raise ValueError('no good')\n";
    server
        .deploy(
            "raises",
            "python3.12",
            "app.handler",
            &[("app.py", code)],
            json!({}),
        )
        .await;
    let r = server.invoke("raises", "{}").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-amz-function-error"), Some("Unhandled"));
    let v = r.json();
    assert_eq!(v["errorType"], "ValueError");
    assert_eq!(v["errorMessage"], "no good");
    assert!(
        v["stackTrace"].as_array().is_some_and(|s| !s.is_empty()),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_errors_are_reported_and_crash_loops_back_off() {
    let server = Server::start();
    let code = "import missing_module\ndef handler(event, context):\n    return 1\n";
    server
        .deploy(
            "broken",
            "python3.12",
            "app.handler",
            &[("app.py", code)],
            json!({}),
        )
        .await;
    for _ in 0..3 {
        let r = server.invoke("broken", "{}").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-amz-function-error"), Some("Unhandled"));
        assert_eq!(
            r.json()["errorType"],
            "Runtime.ImportModuleError",
            "{}",
            r.text()
        );
    }
    // Past three failures the pool backs off: the next call fails fast with the same error
    // and starts no process.
    let r = server.invoke("broken", "{}").await;
    assert_eq!(r.json()["errorType"], "Runtime.ImportModuleError");
    let init_reports = || async {
        let lines = server.log_lines("broken").await;
        lines
            .iter()
            .filter(|l| l["line"].as_str().unwrap().starts_with("INIT_REPORT"))
            .count()
    };
    server
        .eventually(
            "three INIT_REPORT lines stored",
            Duration::from_secs(5),
            || async { init_reports().await >= 3 },
        )
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        init_reports().await,
        3,
        "one INIT_REPORT per failed start, none during backoff"
    );
    // Backing off, the function is marked degraded: in its stats and in `rampart functions`.
    let (_, stats) = server.get_json("/rampart/v1/functions/broken/stats").await;
    assert_eq!(stats["degraded"], true, "{stats}");
    let (ok, out, _) = crate::harness::rampart_cli(&server.endpoint, &["functions", "list"]);
    assert!(
        ok && out
            .lines()
            .any(|l| l.starts_with("broken") && l.contains("degraded")),
        "{out}"
    );
    // A missing handler attribute and a bad handler name are init errors too.
    server
        .deploy(
            "nohandler",
            "python3.12",
            "app.nope",
            &[("app.py", "x = 1\n")],
            json!({}),
        )
        .await;
    assert_eq!(
        server.invoke("nohandler", "{}").await.json()["errorType"],
        "Runtime.HandlerNotFound"
    );
    // A fixed deploy recovers at once.
    let fixed = "def handler(event, context):\n    return 'fixed'\n";
    let zip = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        crate::harness::zip_of(&[("app.py", fixed)]),
    );
    let resp = server
        .http
        .put(server.url("/2015-03-31/functions/broken/code"))
        .json(&json!({"ZipFile": zip}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(server.invoke("broken", "{}").await.json(), json!("fixed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_kills_the_whole_process_group_and_the_next_call_works() {
    let server = Server::start();
    // The handler starts a grandchild that would outlive a plain kill of the runtime process.
    let code = r#"
import os, subprocess, time
def handler(event, context):
    if event.get("hang"):
        child = subprocess.Popen(["sleep", "300"])
        open(os.environ["TMPDIR"] + "/../../child.pid", "w").write(str(child.pid))
        time.sleep(300)
    return {"pid": os.getpid()}
"#;
    server
        .deploy(
            "slow",
            "python3.12",
            "app.handler",
            &[("app.py", code)],
            json!({"Timeout": 1}),
        )
        .await;
    let first = server.invoke("slow", "{}").await.json()["pid"]
        .as_i64()
        .unwrap() as i32;
    let started = tokio::time::Instant::now();
    let r = server.invoke("slow", r#"{"hang": true}"#).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert_eq!(r.header("x-amz-function-error"), Some("Unhandled"));
    let v = r.json();
    assert_eq!(v["errorType"], "Sandbox.Timedout");
    let id = r.header("x-amzn-requestid").unwrap();
    assert_eq!(
        v["errorMessage"],
        format!("RequestId: {id} Error: Task timed out after 1.00 seconds")
    );
    let grandchild: i32 = std::fs::read_to_string(server.data_dir.join("child.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    server
        .eventually(
            "the timed-out instance and its children to die",
            Duration::from_secs(5),
            || async move { !alive(first) && !alive(grandchild) },
        )
        .await;
    let next = server.invoke("slow", "{}").await;
    assert_eq!(next.header("x-amz-function-error"), None);
    assert_ne!(
        next.json()["pid"].as_i64().unwrap() as i32,
        first,
        "a fresh instance"
    );
    let lines = server.log_lines("slow").await;
    assert!(lines.iter().any(|l| {
        l["line"]
            .as_str()
            .unwrap()
            .contains("Task timed out after 1.00 seconds")
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_init_goes_on_inside_the_invocation_within_its_timeout() {
    let server = Server::start_with(&["--init-timeout", "500ms"], &[]);
    let slow = |secs: f64| {
        format!(
            "import time\ntime.sleep({secs})\ndef handler(e, c):\n    return c.get_remaining_time_in_millis()\n"
        )
    };
    // Init takes 1 s: past the init limit, inside the 3 s timeout.
    server
        .deploy(
            "slowinit",
            "python3.12",
            "app.handler",
            &[("app.py", &slow(1.0))],
            json!({"Timeout": 3}),
        )
        .await;
    let r = server
        .invoke_with("slowinit", "{}", &[("X-Amz-Log-Type", "Tail")])
        .await;
    assert_eq!(r.header("x-amz-function-error"), None, "{}", r.text());
    let remaining = r.json().as_i64().unwrap();
    assert!(
        remaining < 2700,
        "the overrun counts against the timeout: {remaining} ms left"
    );
    let tail = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        r.header("x-amz-log-result").unwrap(),
    )
    .unwrap();
    assert!(String::from_utf8_lossy(&tail).contains("Phase: init\tStatus: timeout"));
    // Init longer than limit plus timeout: the invocation times out.
    server
        .deploy(
            "neverinit",
            "python3.12",
            "app.handler",
            &[("app.py", &slow(30.0))],
            json!({"Timeout": 1}),
        )
        .await;
    let r = server.invoke("neverinit", "{}").await;
    assert_eq!(r.json()["errorType"], "Sandbox.Timedout", "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_instance_is_an_exit_error_and_is_replaced() {
    let server = Server::start();
    let code = r#"
import os, time
def handler(event, context):
    if event.get("wait"):
        open(os.environ["TMPDIR"] + "/../../instance.pid", "w").write(str(os.getpid()))
        time.sleep(30)
    if event.get("exit"):
        os._exit(3)
    return {"pid": os.getpid()}
"#;
    server
        .deploy(
            "victim",
            "python3.12",
            "app.handler",
            &[("app.py", code)],
            json!({"Timeout": 60}),
        )
        .await;
    let pid_file = server.data_dir.join("instance.pid");
    let call = server.invoke("victim", r#"{"wait": true}"#);
    let killer = async {
        server
            .eventually("the handler to start", Duration::from_secs(10), || {
                let f = pid_file.clone();
                async move { std::fs::read_to_string(f).is_ok_and(|s| !s.is_empty()) }
            })
            .await;
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid).unwrap(),
            rustix::process::Signal::KILL,
        )
        .unwrap();
        pid
    };
    let (r, killed) = tokio::join!(call, killer);
    assert_eq!(r.header("x-amz-function-error"), Some("Unhandled"));
    let v = r.json();
    assert_eq!(v["errorType"], "Runtime.ExitError");
    let id = r.header("x-amzn-requestid").unwrap();
    assert_eq!(
        v["errorMessage"],
        format!("RequestId: {id} Error: Runtime exited with error: signal: killed")
    );
    // The process exiting by itself names its status.
    let r = server.invoke("victim", r#"{"exit": true}"#).await;
    assert!(
        r.json()["errorMessage"]
            .as_str()
            .unwrap()
            .ends_with("Runtime exited with error: exit status 3"),
        "{}",
        r.text()
    );
    let next = server.invoke("victim", "{}").await;
    assert_eq!(next.header("x-amz-function-error"), None, "{}", next.text());
    assert_ne!(next.json()["pid"].as_i64().unwrap() as i32, killed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_pool_throttles_with_429() {
    let server = Server::start();
    let code = "import time\ndef handler(event, context):\n    time.sleep(event.get('sleep', 0))\n    return 'ok'\n";
    server
        .deploy(
            "narrow",
            "python3.12",
            "app.handler",
            &[("app.py", code)],
            json!({"ReservedConcurrentExecutions": 1}),
        )
        .await;
    let slow = server.invoke("narrow", r#"{"sleep": 1.5}"#);
    let throttled = async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        server.invoke("narrow", "{}").await
    };
    let (slow, throttled) = tokio::join!(slow, throttled);
    assert_eq!(slow.status, 200);
    assert_eq!(throttled.status, 429, "{}", throttled.text());
    assert_eq!(
        throttled.header("x-amzn-errortype"),
        Some("TooManyRequestsException")
    );
    assert_eq!(throttled.header("retry-after"), Some("1"));
    let v = throttled.json();
    assert_eq!(
        v["Reason"],
        "ReservedFunctionConcurrentInvocationLimitExceeded"
    );
    assert_eq!(v["message"], "Rate Exceeded.");
    // Free again afterwards.
    assert_eq!(server.invoke("narrow", "{}").await.status, 200);
    // Raising the reservation takes effect at once; null removes it.
    let set = |v: serde_json::Value| {
        server
            .http
            .put(server.url("/2015-03-31/functions/narrow/configuration"))
            .json(&json!({"ReservedConcurrentExecutions": v}))
            .send()
    };
    assert_eq!(set(json!(2)).await.unwrap().status(), 200);
    let (a, b) = tokio::join!(
        server.invoke("narrow", r#"{"sleep": 0.5}"#),
        server.invoke("narrow", r#"{"sleep": 0.5}"#)
    );
    assert_eq!((a.status, b.status), (200, 200));
    let cleared: serde_json::Value = set(serde_json::Value::Null)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        cleared["ReservedConcurrentExecutions"],
        serde_json::Value::Null
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_lambdas_errors() {
    let server = Server::start();
    server
        .deploy(
            "echo",
            "python3.12",
            "app.handler",
            &[("app.py", "def handler(e, c):\n    return e\n")],
            json!({}),
        )
        .await;
    let r = server.invoke("nope", "{}").await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.header("x-amzn-errortype"),
        Some("ResourceNotFoundException")
    );
    assert_eq!(
        r.header("x-amzn-requestid").map(str::len),
        Some(36),
        "errors carry a request id"
    );
    assert_eq!(r.json()["Type"], "User");
    let wrong_method = server
        .http
        .get(server.url("/2015-03-31/functions/echo/invocations"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_method.status(), 405);
    assert!(wrong_method.headers().contains_key("x-amzn-errortype"));
    assert_eq!(
        r.json()["Message"],
        "Function not found: arn:aws:lambda:us-east-1:000000000000:function:nope"
    );
    let r = server.invoke("echo", "{not json").await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.header("x-amzn-errortype"),
        Some("InvalidRequestContentException")
    );
    let big = format!("\"{}\"", "x".repeat(6 * 1024 * 1024));
    let r = server.invoke("echo", &big).await;
    assert_eq!(r.status, 413);
    assert_eq!(
        r.header("x-amzn-errortype"),
        Some("RequestTooLargeException")
    );
    let r = server.invoke("echo:7", "{}").await;
    assert_eq!(r.status, 404);
    let r = server
        .invoke_with("echo", "{}", &[("X-Amz-Invocation-Type", "Bogus")])
        .await;
    assert_eq!(r.status, 400);
    assert!(r.json()["message"].as_str().unwrap().contains("Bogus"));
    let r = server
        .invoke_with("echo", "{}", &[("X-Amz-Invocation-Type", "DryRun")])
        .await;
    assert_eq!(r.status, 204);
    let r = server.invoke("bad%20name", "{}").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.header("x-amzn-errortype"), Some("ValidationException"));
    // An empty payload is the event {}.
    assert_eq!(server.invoke("echo", "").await.json(), json!({}));
    // Just under the limit is accepted.
    let ok = format!("\"{}\"", "x".repeat(6_291_456 - 2));
    assert_eq!(server.invoke("echo", &ok).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_response_is_function_response_size_too_large() {
    let server = Server::start();
    let code = "def handler(event, context):\n    return 'x' * (7 * 1024 * 1024)\n";
    server
        .deploy(
            "huge",
            "python3.12",
            "app.handler",
            &[("app.py", code)],
            json!({"MemorySize": 512}),
        )
        .await;
    let r = server.invoke("huge", "{}").await;
    assert_eq!(r.header("x-amz-function-error"), Some("Unhandled"));
    assert_eq!(
        r.json()["errorType"],
        "Function.ResponseSizeTooLarge",
        "{}",
        r.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_ends_the_instance_with_out_of_memory() {
    let server = Server::start();
    let code = "def handler(event, context):\n    hog = bytearray(400 * 1024 * 1024)\n    return len(hog)\n";
    server
        .deploy(
            "hog",
            "python3.12",
            "app.handler",
            &[("app.py", code)],
            json!({"MemorySize": 128}),
        )
        .await;
    let r = server.invoke("hog", "{}").await;
    assert_eq!(r.header("x-amz-function-error"), Some("Unhandled"));
    let v = r.json();
    // With a writable memory cgroup (as on these machines) the kernel kills it.
    let cgroup = server.log().contains("sandbox=cgroup");
    let expected = if cgroup {
        "Runtime.OutOfMemory"
    } else {
        "MemoryError"
    };
    assert_eq!(v["errorType"], expected, "{v}");
    if cgroup {
        let message = v["errorMessage"].as_str().unwrap();
        assert!(
            message.ends_with("Runtime exited with error: signal: killed"),
            "{v}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_falls_back_to_setrlimit() {
    let server = Server::start_with(&["--sandbox", "rlimit"], &[]);
    assert!(server.log().contains("setrlimit"), "{}", server.log());
    let code = "def handler(event, context):\n    hog = bytearray(400 * 1024 * 1024)\n    return len(hog)\n";
    server
        .deploy(
            "hog",
            "python3.12",
            "app.handler",
            &[("app.py", code)],
            json!({"MemorySize": 128}),
        )
        .await;
    let r = server.invoke("hog", "{}").await;
    assert_eq!(r.header("x-amz-function-error"), Some("Unhandled"));
    assert_eq!(r.json()["errorType"], "MemoryError", "{}", r.text());
    // Under the limit it runs.
    let fits = "def handler(event, context):\n    return len(bytearray(16 * 1024 * 1024))\n";
    server
        .deploy(
            "fits",
            "python3.12",
            "app.handler",
            &[("app.py", fits)],
            json!({"MemorySize": 128}),
        )
        .await;
    assert_eq!(
        server.invoke("fits", "{}").await.json(),
        json!(16 * 1024 * 1024)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provided_without_bootstrap_is_invalid_entrypoint() {
    let server = Server::start();
    server
        .deploy(
            "nobootstrap",
            "provided.al2023",
            "x",
            &[("README", "no bootstrap here")],
            json!({}),
        )
        .await;
    let r = server.invoke("nobootstrap", "{}").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-amz-function-error"), Some("Unhandled"));
    assert_eq!(r.json()["errorType"], "Runtime.InvalidEntrypoint");
}

/// A custom runtime that probes the Runtime API's protocol checks and reports what it saw.
const PROTOCOL_PROBE: &str = r#"#!PYTHON
import http.client, json, os
host, port = os.environ["AWS_LAMBDA_RUNTIME_API"].split(":")
def call(method, path, body=None):
    c = http.client.HTTPConnection(host, int(port), timeout=5)
    c.request(method, "/2018-06-01" + path, body=body)
    r = c.getresponse()
    data = r.read()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, data
seen = {}
seen["response_before_next"] = call("POST", "/runtime/invocation/abc/response", b"1")[0]
status, headers, body = call("GET", "/runtime/invocation/next")
rid = headers["lambda-runtime-aws-request-id"]
seen["deadline_ms"] = int(headers["lambda-runtime-deadline-ms"])
seen["arn"] = headers.get("lambda-runtime-invoked-function-arn")
seen["trace"] = headers.get("lambda-runtime-trace-id", "")
seen["init_error_after_init"] = call("POST", "/runtime/init/error", b"{}")[0]
s, h, b = call("POST", "/runtime/invocation/wrong-id/response", b"1")
seen["wrong_id"] = [s, json.loads(b)["errorType"]]
seen["next_while_busy"] = call("GET", "/runtime/invocation/next")[0]
s, h, b = call("POST", f"/runtime/invocation/{rid}/response", json.dumps(seen).encode())
assert s == 202, s
s, h, b = call("POST", f"/runtime/invocation/{rid}/response", b"again")
open(os.environ["TMPDIR"] + "/../../second_answer", "w").write(json.dumps([s, json.loads(b)["errorType"]]))
call("GET", "/runtime/invocation/next")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_api_enforces_its_protocol() {
    let server = Server::start();
    let bootstrap = PROTOCOL_PROBE.replace("PYTHON", &crate::harness::python());
    server
        .deploy(
            "probe",
            "provided.al2023",
            "x",
            &[("bootstrap", &bootstrap)],
            json!({}),
        )
        .await;
    let before = jiff::Timestamp::now().as_millisecond();
    let r = server.invoke("probe", "{}").await;
    assert_eq!(r.header("x-amz-function-error"), None, "{}", r.text());
    let v = r.json();
    assert_eq!(v["response_before_next"], 403);
    assert_eq!(v["init_error_after_init"], 403);
    assert_eq!(v["wrong_id"], json!([400, "InvalidRequestID"]));
    assert_eq!(v["next_while_busy"], 403);
    let deadline = v["deadline_ms"].as_i64().unwrap();
    assert!(
        deadline > before + 2000 && deadline < before + 4000,
        "3 s timeout: {deadline} vs {before}"
    );
    assert_eq!(
        v["arn"],
        "arn:aws:lambda:us-east-1:000000000000:function:probe"
    );
    assert!(v["trace"].as_str().unwrap().starts_with("Root=1-"));
    let path = server.data_dir.join("second_answer");
    server
        .eventually("the second answer", Duration::from_secs(5), || {
            let p = path.clone();
            async move { std::fs::read_to_string(p).is_ok_and(|s| !s.is_empty()) }
        })
        .await;
    let second: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(second, json!([403, "InvalidStateTransition"]));
}

/// A custom runtime that answers, then, asked to, never calls `next` again (wedged).
const WEDGING_RUNTIME: &str = r#"
import json, os, time, urllib.request
api = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime/invocation/"
while True:
    with urllib.request.urlopen(api + "next") as r:
        request_id = r.headers["Lambda-Runtime-Aws-Request-Id"]
        event = json.loads(r.read())
    answer = json.dumps({"pid": os.getpid()}).encode()
    urllib.request.urlopen(urllib.request.Request(api + request_id + "/response", data=answer, method="POST")).read()
    if event.get("wedge"):
        time.sleep(3600)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wedged_instance_is_replaced_and_the_event_retried() {
    let server = Server::start_with(&["--next-timeout", "500ms"], &[]);
    let bootstrap = format!("#!/bin/sh\nexec {} runtime.py\n", crate::harness::python());
    server
        .deploy(
            "wedge",
            "provided.al2023",
            "x",
            &[("bootstrap", &bootstrap), ("runtime.py", WEDGING_RUNTIME)],
            json!({"Timeout": 10}),
        )
        .await;
    let first = server.invoke("wedge", r#"{"wedge": true}"#).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let wedged_pid = first.json()["pid"].clone();
    // The next event goes to the warm (wedged) instance, which never takes it: after the
    // bound it is killed and the event runs on a new instance, well before the timeout.
    let started = tokio::time::Instant::now();
    let second = server.invoke("wedge", "{}").await;
    assert_eq!(second.status, 200, "{}", second.text());
    assert_eq!(
        second.header("x-amz-function-error"),
        None,
        "{}",
        second.text()
    );
    assert_ne!(second.json()["pid"], wedged_pid, "a new instance ran it");
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "it waited for the wedged instance first"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    server
        .eventually(
            "the recovery to be counted",
            Duration::from_secs(5),
            || async {
                let text = server
                    .http
                    .get(server.url("/metrics"))
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap();
                text.contains("rampart_lambda_recoveries_total{function_name=\"wedge\"} 1")
            },
        )
        .await;
}

//! Asynchronous invocations: 202 only once stored, delivery at least once, retries with
//! backoff, dead letters, limits, and `kill -9` right after the 202.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;

use crate::harness::{Server, python, rampart_cli};

/// Appends `<request id> <epoch ms>` to `<data dir>/delivered`; fails when asked to.
const RECORDER: &str = r#"
import os, time
def handler(event, context):
    time.sleep(event.get("sleep", 0))
    with open(os.environ["TMPDIR"] + "/../../delivered", "a") as f:
        f.write(f"{context.aws_request_id} {int(time.time() * 1000)}\n")
    if event.get("fail"):
        raise RuntimeError("asked to fail")
    return "ok"
"#;

fn delivered(server: &Server) -> Vec<(String, i64)> {
    std::fs::read_to_string(server.data_dir.join("delivered"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (id, ms) = l.split_once(' ')?;
            Some((id.to_owned(), ms.parse().ok()?))
        })
        .collect()
}

async fn event(server: &Server, name: &str, payload: &str) -> crate::harness::Invoked {
    server
        .invoke_with(name, payload, &[("X-Amz-Invocation-Type", "Event")])
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_accepted_once_stored_and_delivered() {
    let server = Server::start();
    server
        .deploy(
            "rec",
            "python3.12",
            "app.handler",
            &[("app.py", RECORDER)],
            json!({}),
        )
        .await;
    let r = event(&server, "rec", "{}").await;
    assert_eq!(r.status, 202);
    assert!(r.body.is_empty());
    let id = r.header("x-amzn-requestid").unwrap().to_owned();
    server
        .eventually("the event delivered", Duration::from_secs(10), || async {
            delivered(&server).iter().any(|(d, _)| *d == id)
        })
        .await;
    // boto3's InvocationType='Event'.
    let script = format!(
        "import boto3\nc = boto3.client('lambda', endpoint_url='{}', region_name='us-east-1', aws_access_key_id='a', aws_secret_access_key='b')\nr = c.invoke(FunctionName='rec', InvocationType='Event', Payload=b'{{}}')\nprint(r['StatusCode'], r['ResponseMetadata']['RequestId'])\n",
        server.endpoint
    );
    let out = std::process::Command::new(python())
        .args(["-c", &script])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.starts_with("202 "),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let boto_id = text.trim().split(' ').nth(1).unwrap().to_owned();
    server
        .eventually(
            "the boto3 event delivered",
            Duration::from_secs(10),
            || async { delivered(&server).iter().any(|(d, _)| *d == boto_id) },
        )
        .await;
    // The CLI.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(["invoke", "rec", "--async", "--endpoint", &server.endpoint])
        .output()
        .unwrap();
    assert!(out.status.success());
    let cli_id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(cli_id.len(), 36, "{cli_id}");
    // Limits and unknown functions are refused before anything is stored.
    let big = format!("\"{}\"", "x".repeat(1_048_576));
    let r = event(&server, "rec", &big).await;
    assert_eq!(r.status, 413);
    let r = event(&server, "missing", "{}").await;
    assert_eq!(r.status, 404);
    let r = event(&server, "rec", "{not json").await;
    assert_eq!(r.status, 400);
    server
        .eventually("the queue drained", Duration::from_secs(10), || async {
            server.get_json("/rampart/v1/functions/rec/stats").await.1["queue_depth"] == 0
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_retried_with_backoff_then_dead_lettered() {
    let server = Server::start_with(&["--async-retry-base", "200ms"], &[]);
    server
        .deploy(
            "rec",
            "python3.12",
            "app.handler",
            &[("app.py", RECORDER)],
            json!({}),
        )
        .await;
    let r = event(&server, "rec", r#"{"fail": true}"#).await;
    assert_eq!(r.status, 202);
    let id = r.header("x-amzn-requestid").unwrap().to_owned();
    server
        .eventually(
            "the event dead-lettered",
            Duration::from_secs(15),
            || async {
                server.get_json("/rampart/v1/functions/rec/stats").await.1["dead_letters"] == 1
            },
        )
        .await;
    let attempts: Vec<i64> = delivered(&server)
        .into_iter()
        .filter(|(d, _)| *d == id)
        .map(|(_, t)| t)
        .collect();
    assert_eq!(
        attempts.len(),
        3,
        "one delivery and two retries: {attempts:?}"
    );
    let first_gap = attempts[1] - attempts[0];
    let second_gap = attempts[2] - attempts[1];
    assert!(first_gap >= 150, "first retry after ~200 ms: {first_gap}");
    assert!(
        second_gap >= 300,
        "second retry after ~400 ms: {second_gap}"
    );
    let (_, dlq) = server.get_json("/rampart/v1/functions/rec/dlq").await;
    let dead = &dlq["dead_letters"][0];
    assert_eq!(dead["id"], id.as_str());
    assert_eq!(dead["reason"], "RetriesExhausted");
    assert_eq!(dead["attempts"], 3);
    assert_eq!(dead["payload"], r#"{"fail": true}"#);
    assert!(
        dead["last_error"]
            .as_str()
            .unwrap()
            .contains("asked to fail")
    );
    let (_, stats) = server.get_json("/rampart/v1/functions/rec/stats").await;
    assert_eq!(stats["queue_depth"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_events_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path(), &[], &[]);
    server
        .deploy(
            "rec",
            "python3.12",
            "app.handler",
            &[("app.py", RECORDER)],
            json!({"Timeout": 10}),
        )
        .await;
    // Slow deliveries, so most events are still queued (or mid-delivery) when the server dies.
    let mut accepted = HashSet::new();
    for _ in 0..20 {
        let r = event(&server, "rec", r#"{"sleep": 0.3}"#).await;
        assert_eq!(r.status, 202);
        accepted.insert(r.header("x-amzn-requestid").unwrap().to_owned());
    }
    server.kill9();
    let before = delivered(&server).len();
    assert!(
        before < accepted.len(),
        "the kill came before the deliveries ended ({before} done)"
    );
    let server = Server::start_in(dir.path(), &[], &[]);
    server
        .eventually(
            "every accepted event delivered",
            Duration::from_secs(60),
            || async {
                let done: HashSet<String> =
                    delivered(&server).into_iter().map(|(d, _)| d).collect();
                accepted.is_subset(&done)
            },
        )
        .await;
    let (_, stats) = server.get_json("/rampart/v1/functions/rec/stats").await;
    assert_eq!(stats["dead_letters"], 0, "{stats}");
    assert_eq!(stats["queue_depth"], 0, "{stats}");
}

/// Records every event it receives (destination records included) in `<data dir>/sink`.
const SINK: &str = r#"
import json, os
def handler(event, context):
    with open(os.environ["TMPDIR"] + "/../../sink", "a") as f:
        f.write(json.dumps(event) + "\n")
    return "sunk"
"#;

/// Fails until `<data dir>/fixed` exists.
const FLAKY: &str = r#"
import os
def handler(event, context):
    if not os.path.exists(os.environ["TMPDIR"] + "/../../fixed"):
        raise ValueError("not fixed yet")
    with open(os.environ["TMPDIR"] + "/../../delivered", "a") as f:
        f.write(f"{context.aws_request_id} 0\n")
    return {"fixed": True}
"#;

fn sunk(server: &Server) -> Vec<serde_json::Value> {
    std::fs::read_to_string(server.data_dir.join("sink"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_invoke_configs_route_records_to_destinations() {
    let server = Server::start();
    for (name, code) in [("sink", SINK), ("flaky", FLAKY)] {
        server
            .deploy(
                name,
                "python3.12",
                "app.handler",
                &[("app.py", code)],
                json!({}),
            )
            .await;
    }
    let sink_arn = "arn:aws:lambda:us-east-1:000000000000:function:sink";
    // boto3 sets, reads, merges, lists and deletes the configuration.
    let script = format!(
        r#"
import boto3
c = boto3.client('lambda', endpoint_url='{ep}', region_name='us-east-1', aws_access_key_id='a', aws_secret_access_key='b')
r = c.put_function_event_invoke_config(FunctionName='flaky', MaximumRetryAttempts=1,
    DestinationConfig={{'OnFailure': {{'Destination': '{sink}'}}}})
assert r['MaximumRetryAttempts'] == 1 and r['MaximumEventAgeInSeconds'] == 21600, r
assert r['FunctionArn'].endswith(':function:flaky:$LATEST'), r
r = c.update_function_event_invoke_config(FunctionName='flaky', MaximumRetryAttempts=0,
    DestinationConfig={{'OnSuccess': {{'Destination': '{sink}'}}}})
assert r['MaximumRetryAttempts'] == 0, r
assert r['DestinationConfig']['OnFailure']['Destination'] == '{sink}', r
assert r['DestinationConfig']['OnSuccess']['Destination'] == '{sink}', r
g = c.get_function_event_invoke_config(FunctionName='flaky')
assert g['MaximumRetryAttempts'] == 0, g
assert len(c.list_function_event_invoke_configs(FunctionName='flaky')['FunctionEventInvokeConfigs']) == 1
c.put_function_event_invoke_config(FunctionName='sink', MaximumRetryAttempts=2)
c.delete_function_event_invoke_config(FunctionName='sink')
try:
    c.get_function_event_invoke_config(FunctionName='sink')
    raise SystemExit('expected ResourceNotFoundException')
except c.exceptions.ResourceNotFoundException:
    pass
print('ok')
"#,
        ep = server.endpoint,
        sink = sink_arn
    );
    let out = std::process::Command::new(python())
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ok"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Bad values and non-function destinations are refused by the server.
    for bad in [
        json!({"MaximumRetryAttempts": 3}),
        json!({"MaximumEventAgeInSeconds": 30}),
        json!({"DestinationConfig": {"OnFailure": {"Destination": "arn:aws:sqs:us-east-1:000000000000:q"}}}),
    ] {
        let r = server
            .http
            .put(server.url("/2019-09-25/functions/flaky/event-invoke-config"))
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
    // A failure (no retries) goes to the on-failure destination with Lambda's record.
    let r = event(&server, "flaky", r#"{"order": 7}"#).await;
    let failed_id = r.header("x-amzn-requestid").unwrap().to_owned();
    server
        .eventually("the failure record", Duration::from_secs(10), || async {
            !sunk(&server).is_empty()
        })
        .await;
    let record = &sunk(&server)[0];
    assert_eq!(record["version"], "1.0");
    assert_eq!(record["requestContext"]["requestId"], failed_id.as_str());
    assert_eq!(record["requestContext"]["condition"], "RetriesExhausted");
    assert_eq!(record["requestContext"]["approximateInvokeCount"], 1);
    assert_eq!(
        record["requestContext"]["functionArn"],
        "arn:aws:lambda:us-east-1:000000000000:function:flaky:$LATEST"
    );
    assert_eq!(record["requestPayload"], json!({"order": 7}));
    assert_eq!(record["responseContext"]["functionError"], "Unhandled");
    assert_eq!(record["responsePayload"]["errorType"], "ValueError");
    assert!(record["timestamp"].as_str().unwrap().ends_with('Z'));
    // A success goes to the on-success destination.
    std::fs::write(server.data_dir.join("fixed"), "").unwrap();
    event(&server, "flaky", r#"{"order": 8}"#).await;
    server
        .eventually("the success record", Duration::from_secs(10), || async {
            sunk(&server).len() == 2
        })
        .await;
    let record = &sunk(&server)[1];
    assert_eq!(record["requestContext"]["condition"], "Success");
    assert_eq!(record["responsePayload"], json!({"fixed": true}));
    assert!(record["responseContext"].get("functionError").is_none());
    let (_, stats) = server.get_json("/rampart/v1/functions/flaky/stats").await;
    assert_eq!(stats["dead_letters"], 0, "destinations took them: {stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_can_be_inspected_replayed_and_purged() {
    let server = Server::start_with(&["--async-retry-base", "100ms"], &[]);
    server
        .deploy(
            "flaky",
            "python3.12",
            "app.handler",
            &[("app.py", FLAKY)],
            json!({}),
        )
        .await;
    let r = server
        .http
        .put(server.url("/2019-09-25/functions/flaky/event-invoke-config"))
        .json(&json!({"MaximumRetryAttempts": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut ids = Vec::new();
    for i in 0..3 {
        let r = event(&server, "flaky", &format!(r#"{{"n": {i}}}"#)).await;
        ids.push(r.header("x-amzn-requestid").unwrap().to_owned());
    }
    let stats = || async { server.get_json("/rampart/v1/functions/flaky/stats").await.1 };
    server
        .eventually("three dead letters", Duration::from_secs(10), || async {
            stats().await["dead_letters"] == 3
        })
        .await;
    let cli = |args: &[&str]| {
        let (ok, out, err) = rampart_cli(&server.endpoint, args);
        assert!(ok, "{err}");
        out
    };
    let list = cli(&["dlq", "list", "flaky"]);
    assert!(
        ids.iter().all(|id| list.contains(id.as_str())) && list.contains("RetriesExhausted"),
        "{list}"
    );
    let shown = cli(&["dlq", "show", &ids[0]]);
    assert!(
        shown.contains("not fixed yet") && shown.contains(r#"{\"n\": 0}"#),
        "{shown}"
    );
    // Fixed: replay one, then the rest; each is delivered.
    std::fs::write(server.data_dir.join("fixed"), "").unwrap();
    assert!(cli(&["dlq", "replay", "flaky", "--id", &ids[0]]).contains("replayed 1"));
    assert!(cli(&["dlq", "replay", "flaky", "--all"]).contains("replayed 2"));
    server
        .eventually(
            "the replayed events delivered",
            Duration::from_secs(10),
            || async {
                let done: HashSet<String> =
                    delivered(&server).into_iter().map(|(d, _)| d).collect();
                ids.iter().all(|id| done.contains(id))
            },
        )
        .await;
    assert_eq!(stats().await["dead_letters"], 0);
    // Purge.
    std::fs::remove_file(server.data_dir.join("fixed")).unwrap();
    event(&server, "flaky", "{}").await;
    server
        .eventually("a new dead letter", Duration::from_secs(10), || async {
            stats().await["dead_letters"] == 1
        })
        .await;
    assert!(cli(&["dlq", "purge", "flaky"]).contains("purged 1"));
    assert_eq!(stats().await["dead_letters"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_deduplicate_within_the_window() {
    let server = Server::start_with(&["--idempotency-window", "1s"], &[]);
    server
        .deploy(
            "rec",
            "python3.12",
            "app.handler",
            &[("app.py", RECORDER)],
            json!({}),
        )
        .await;
    let keyed = |key: &'static str| {
        let server = &server;
        async move {
            server
                .invoke_with(
                    "rec",
                    "{}",
                    &[
                        ("X-Amz-Invocation-Type", "Event"),
                        ("X-Rampart-Idempotency-Key", key),
                    ],
                )
                .await
        }
    };
    let first = keyed("order-1").await;
    let second = keyed("order-1").await;
    assert_eq!((first.status, second.status), (202, 202));
    let id = first.header("x-amzn-requestid").unwrap().to_owned();
    assert_eq!(
        second.header("x-amzn-requestid"),
        Some(id.as_str()),
        "the first request's id"
    );
    let other = keyed("order-2").await;
    assert_ne!(other.header("x-amzn-requestid"), Some(id.as_str()));
    server
        .eventually("two deliveries", Duration::from_secs(10), || async {
            delivered(&server).len() == 2
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(delivered(&server).len(), 2, "the duplicate stored nothing");
    // Past the window the key is new again.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let later = keyed("order-1").await;
    assert_ne!(later.header("x-amzn-requestid"), Some(id.as_str()));
    let (_, stats) = server.get_json("/rampart/v1/functions/rec/stats").await;
    assert!(stats["async"]["received"].as_u64().unwrap() >= 3, "{stats}");
    server
        .eventually("delivery counted", Duration::from_secs(10), || async {
            server.get_json("/rampart/v1/functions/rec/stats").await.1["async"]["delivered"] == 3
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_deliveries_keep_their_attempts() {
    let server = Server::start();
    server
        .deploy(
            "rec",
            "python3.12",
            "app.handler",
            &[("app.py", RECORDER)],
            json!({"ReservedConcurrentExecutions": 1, "Timeout": 10}),
        )
        .await;
    let r = server
        .http
        .put(server.url("/2019-09-25/functions/rec/event-invoke-config"))
        .json(&json!({"MaximumRetryAttempts": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A synchronous call holds the only slot while the event waits.
    let busy = server.invoke("rec", r#"{"sleep": 1.5}"#);
    let queued = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        event(&server, "rec", "{}")
            .await
            .header("x-amzn-requestid")
            .unwrap()
            .to_owned()
    };
    let (sync_result, id) = tokio::join!(busy, queued);
    assert_eq!(sync_result.status, 200);
    server
        .eventually(
            "the throttled event delivered",
            Duration::from_secs(10),
            || async { delivered(&server).iter().any(|(d, _)| *d == id) },
        )
        .await;
    let (_, stats) = server.get_json("/rampart/v1/functions/rec/stats").await;
    assert_eq!(
        stats["dead_letters"], 0,
        "throttling used up no attempt: {stats}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_event_is_lost_across_repeated_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path(), &[], &[]);
    server
        .deploy(
            "rec",
            "python3.12",
            "app.handler",
            &[("app.py", RECORDER)],
            json!({"Timeout": 10}),
        )
        .await;
    let mut accepted: HashSet<String> = HashSet::new();
    // Four rounds: four concurrent clients send events, the server is killed mid-stream.
    for round in 0..4 {
        let endpoint = server.endpoint.clone();
        let mut clients = Vec::new();
        for _ in 0..4 {
            let http = server.http.clone();
            let url = format!("{endpoint}/2015-03-31/functions/rec/invocations");
            clients.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                for _ in 0..10 {
                    let sent = http
                        .post(&url)
                        .header("X-Amz-Invocation-Type", "Event")
                        .body(r#"{"sleep": 0.05}"#)
                        .send()
                        .await;
                    // Once the server is gone, requests fail: only 202s count as accepted.
                    match sent {
                        Ok(r) if r.status() == 202 => {
                            ids.push(r.headers()["x-amzn-requestid"].to_str().unwrap().to_owned())
                        }
                        _ => break,
                    }
                }
                ids
            }));
        }
        tokio::time::sleep(Duration::from_millis(40 + 30 * round)).await;
        server.kill9();
        for c in clients {
            accepted.extend(c.await.unwrap());
        }
        server = Server::start_in(dir.path(), &[], &[]);
    }
    assert!(
        accepted.len() >= 4,
        "some events were accepted: {}",
        accepted.len()
    );
    server
        .eventually(
            "every accepted event delivered",
            Duration::from_secs(60),
            || async {
                let done: HashSet<String> =
                    delivered(&server).into_iter().map(|(d, _)| d).collect();
                accepted.is_subset(&done)
            },
        )
        .await;
    let deliveries = delivered(&server);
    let unique: HashSet<&String> = deliveries.iter().map(|(d, _)| d).collect();
    eprintln!(
        "accepted {}, delivered {} times ({} duplicates, 0 lost)",
        accepted.len(),
        deliveries.len(),
        deliveries.len() - unique.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_too_old_go_to_the_dead_letters() {
    let server = Server::start_with(&["--async-max-event-age", "1s"], &[]);
    // Reserved concurrency 0 disables the function: every delivery is throttled (no attempt
    // used) until the event is too old.
    server
        .deploy(
            "rec",
            "python3.12",
            "app.handler",
            &[("app.py", RECORDER)],
            json!({"ReservedConcurrentExecutions": 0}),
        )
        .await;
    let r = event(&server, "rec", r#"{"n": 1}"#).await;
    assert_eq!(r.status, 202);
    let id = r.header("x-amzn-requestid").unwrap().to_owned();
    server
        .eventually("the event expired", Duration::from_secs(10), || async {
            server.get_json("/rampart/v1/functions/rec/stats").await.1["dead_letters"] == 1
        })
        .await;
    let (_, dlq) = server.get_json("/rampart/v1/functions/rec/dlq").await;
    assert_eq!(dlq["dead_letters"][0]["id"], id.as_str());
    assert_eq!(dlq["dead_letters"][0]["reason"], "EventAgeExceeded");
    assert_eq!(dlq["dead_letters"][0]["attempts"], 0);
    assert!(delivered(&server).is_empty());
    let (_, stats) = server.get_json("/rampart/v1/functions/rec/stats").await;
    assert_eq!(stats["async"]["expired"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asynchronous_routes_and_manifest_settings() {
    let server = Server::start();
    let project = tempfile::tempdir().unwrap();
    std::fs::create_dir(project.path().join("code")).unwrap();
    std::fs::write(project.path().join("code/app.py"), RECORDER).unwrap();
    std::fs::write(
        project.path().join("rampart.toml"),
        r#"
[[function]]
name = "rec"
runtime = "python3.12"
handler = "app.handler"
code = "code"
[function.event_invoke]
maximum_retry_attempts = 1
maximum_event_age = "10m"

[[api]]
name = "jobs"
[[api.route]]
route = "POST /jobs"
function = "rec"
asynchronous = true
"#,
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args([
            "deploy",
            project.path().to_str().unwrap(),
            "--endpoint",
            &server.endpoint,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, config) = server
        .get_json("/2019-09-25/functions/rec/event-invoke-config")
        .await;
    assert_eq!(status, 200);
    assert_eq!(config["MaximumRetryAttempts"], 1);
    assert_eq!(config["MaximumEventAgeInSeconds"], 600);
    // The route answers 202 with the request id at once; the event is delivered later.
    let r = server
        .http
        .post(format!("{}/jobs", server.http_endpoint))
        .body(r#"{"job": 1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let body: serde_json::Value = r.json().await.unwrap();
    let id = body["requestId"].as_str().unwrap().to_owned();
    server
        .eventually(
            "the route's event delivered",
            Duration::from_secs(10),
            || async { delivered(&server).iter().any(|(d, _)| *d == id) },
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_deliveries_leave_room_for_synchronous_callers() {
    let server = Server::start();
    server
        .deploy(
            "rec",
            "python3.12",
            "app.handler",
            &[("app.py", RECORDER)],
            json!({"ReservedConcurrentExecutions": 2, "Timeout": 10}),
        )
        .await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(
            event(&server, "rec", r#"{"sleep": 1}"#)
                .await
                .header("x-amzn-requestid")
                .unwrap()
                .to_owned(),
        );
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Background deliveries hold at most half of the two slots: a synchronous call still fits.
    let (_, stats) = server.get_json("/rampart/v1/functions/rec/stats").await;
    assert!(stats["busy"].as_u64().unwrap() <= 1, "{stats}");
    let r = server.invoke("rec", "{}").await;
    assert_eq!(r.status, 200, "{}", r.text());
    server
        .eventually(
            "every queued event delivered",
            Duration::from_secs(20),
            || async {
                let done: HashSet<String> =
                    delivered(&server).into_iter().map(|(d, _)| d).collect();
                ids.iter().all(|id| done.contains(id))
            },
        )
        .await;
}

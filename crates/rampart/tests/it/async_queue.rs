//! Asynchronous invocations: 202 only once stored, delivery at least once, retries with
//! backoff, dead letters, limits, and `kill -9` right after the 202.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;

use crate::harness::{Server, python};

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

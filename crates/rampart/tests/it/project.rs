//! The counter project through the CLI: `rampart deploy` (with the Rust twin's build step),
//! `rampart invoke`, `functions`, `logs`, and `rampart up`.

use std::process::{Command, Stdio};

use crate::harness::{Server, rampart_cli as rampart};

fn counter_dir() -> String {
    format!("{}/../../examples/counter", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_project_deploys_and_runs_in_three_languages() {
    let server = Server::start();
    let ep = server.endpoint.clone();
    let dir = counter_dir();
    let (ok, out, err) = tokio::task::spawn_blocking({
        let ep = ep.clone();
        move || rampart(&ep, &["deploy", &dir])
    })
    .await
    .unwrap();
    assert!(ok, "deploy failed: {out}{err}");
    for name in ["counter", "counter-node", "counter-rust"] {
        assert!(out.contains(&format!("{name}: created")), "{out}");
        let (ok, out, err) = rampart(
            &ep,
            &[
                "invoke",
                name,
                "--payload",
                r#"{"counter": 99, "operation": "increment"}"#,
            ],
        );
        assert!(ok, "{name}: {err}");
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(v["statusCode"], 200, "{name}: {out}");
        let body: serde_json::Value = serde_json::from_str(v["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["counter"], 100, "{name} clamps: {out}");
        let (_, out, _) = rampart(
            &ep,
            &[
                "invoke",
                name,
                "--payload",
                r#"{"counter": 3, "operation": "jump"}"#,
            ],
        );
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(v["statusCode"], 400, "{name}: {out}");
    }
    // A second deploy with nothing changed changes nothing.
    let dir = counter_dir();
    let (ok, out, err) = tokio::task::spawn_blocking(move || rampart(&ep, &["deploy", &dir]))
        .await
        .unwrap();
    assert!(ok, "{err}");
    assert_eq!(out.matches("unchanged").count(), 3, "{out}");
    let ep = server.endpoint.clone();
    let (ok, out, _) = rampart(&ep, &["functions", "list"]);
    assert!(
        ok && out.contains("counter-rust") && out.contains("provided.al2023"),
        "{out}"
    );
    let (ok, out, _) = rampart(&ep, &["functions", "show", "counter"]);
    assert!(ok && out.contains("\"Instances\""), "{out}");
    let (ok, out, _) = rampart(&ep, &["logs", "counter-rust"]);
    assert!(
        ok && out.contains("increment: counter is now 100") && out.contains("REPORT RequestId"),
        "{out}"
    );
    let (ok, _, err) = rampart(&ep, &["invoke", "counter", "--payload", "{oops"]);
    assert!(
        !ok && err.contains("InvalidRequestContentException"),
        "{err}"
    );
    let (ok, _, _) = rampart(&ep, &["functions", "delete", "counter-node"]);
    assert!(ok);
    let (ok, _, err) = rampart(&ep, &["invoke", "counter-node"]);
    assert!(!ok && err.contains("ResourceNotFoundException"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_serves_the_project() {
    let dir = counter_dir();
    let server = tokio::task::spawn_blocking(move || Server::up(&dir))
        .await
        .unwrap();
    for name in ["counter", "counter-node", "counter-rust"] {
        let r = server
            .invoke(name, r#"{"counter": 1, "operation": "decrement"}"#)
            .await;
        assert_eq!(r.json()["statusCode"], 200, "{name}: {}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_prints_new_lines_as_they_come() {
    use std::io::{BufRead, BufReader};
    let server = Server::start();
    let code = "def handler(event, context):\n    print('marker', event['n'])\n    return 1\n";
    server
        .deploy(
            "chatty",
            "python3.12",
            "app.handler",
            &[("app.py", code)],
            serde_json::json!({}),
        )
        .await;
    server.invoke("chatty", r#"{"n": 1}"#).await;
    let mut follower = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(["logs", "chatty", "--follow", "--since", "10m"])
        .env("RAMPART_ENDPOINT", &server.endpoint)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let wait_for = |needle: &str| {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while let Some(left) = deadline.checked_duration_since(tokio::time::Instant::now()) {
            if let Ok(line) = rx.recv_timeout(left)
                && line.contains(needle)
            {
                return;
            }
        }
        panic!("logs --follow never printed {needle}");
    };
    wait_for("marker 1");
    server.invoke("chatty", r#"{"n": 2}"#).await;
    wait_for("marker 2");
    let _ = follower.kill();
    let _ = follower.wait();
    // --request filters to one invocation.
    let r = server.invoke("chatty", r#"{"n": 3}"#).await;
    let id = r.header("x-amzn-requestid").unwrap().to_owned();
    server
        .eventually("the REPORT line", std::time::Duration::from_secs(5), || {
            let (server, id) = (&server, id.clone());
            async move {
                server.log_lines("chatty").await.iter().any(|l| {
                    l["line"]
                        .as_str()
                        .unwrap()
                        .starts_with(&format!("REPORT RequestId: {id}"))
                })
            }
        })
        .await;
    let (ok, out, _) = rampart(&server.endpoint, &["logs", "chatty", "--request", &id]);
    assert!(
        ok && out.contains("marker 3") && !out.contains("marker 2"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_rejects_a_bad_manifest_before_serving() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rampart.toml"), "[[function]]\nname = \"x\"\nruntime = \"python3.12\"\nhandler = \"a.b\"\ncode = \".\"\ntimeout = 0\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args([
            "up",
            dir.path().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rampart.toml") && err.contains("function 'x'") && err.contains("'timeout'"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_filter_by_level_text_and_time() {
    let server = Server::start();
    let code = "def handler(event, context):\n    print('[ERROR] db down')\n    print('[INFO] fine')\n    print('{\"level\": \"WARN\", \"message\": \"slow\"}')\n    print('plain words')\n    return {}\n";
    server
        .deploy(
            "chatty",
            "python3.12",
            "app.handler",
            &[("app.py", code)],
            serde_json::json!({}),
        )
        .await;
    assert_eq!(server.invoke("chatty", "{}").await.status, 200);
    let ep = server.endpoint.clone();
    server
        .eventually_static(
            "the lines to be stored",
            std::time::Duration::from_secs(5),
            || rampart(&ep, &["logs", "chatty"]).1.contains("plain words"),
        )
        .await;
    let (ok, out, err) = rampart(&ep, &["logs", "chatty", "--level", "warn"]);
    assert!(ok, "{err}");
    assert!(out.contains("db down") && out.contains("slow"), "{out}");
    assert!(
        !out.contains("fine") && !out.contains("plain") && !out.contains("REPORT"),
        "{out}"
    );
    let (ok, out, _) = rampart(&ep, &["logs", "chatty", "--filter", "down"]);
    assert!(
        ok && out.lines().count() == 1 && out.contains("db down"),
        "{out}"
    );
    let (ok, out, _) = rampart(&ep, &["logs", "chatty", "--until", "1h"]);
    assert!(ok && out.is_empty(), "nothing is older than an hour: {out}");
    let (ok, out, _) = rampart(
        &ep,
        &[
            "logs",
            "chatty",
            "--since",
            "2020-01-01T00:00:00Z",
            "--filter",
            "fine",
        ],
    );
    assert!(ok && out.contains("[INFO] fine"), "{out}");
    let (ok, _, err) = rampart(&ep, &["logs", "chatty", "--since", "yesterday"]);
    assert!(!ok && err.contains("neither an age"), "{err}");
    let (ok, _, err) = rampart(&ep, &["logs", "chatty", "--level", "loud"]);
    assert!(
        !ok && err.contains("InvalidParameterValueException"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_applies_alarms_and_gradual_deployments_from_the_manifest() {
    let server = Server::start();
    let ep = server.endpoint.clone();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("code")).unwrap();
    let write_code = |tag: u32| {
        std::fs::write(
            dir.path().join("code/app.py"),
            format!("def handler(event, context):\n    return {tag}\n"),
        )
        .unwrap();
    };
    write_code(1);
    std::fs::write(
        dir.path().join("rampart.toml"),
        r#"
[[alarm]]
name = "shop-errors"
metric = "Errors"
dimensions = { FunctionName = "shop" }
statistic = "Sum"
period = "1m"
evaluation_periods = 1
threshold = 5
comparison = "GreaterThanThreshold"
treat_missing_data = "notBreaching"

[[function]]
name = "shop"
runtime = "python3.12"
handler = "app.handler"
code = "code"

[function.deployment]
alias = "live"
type = "Canary10Percent5Minutes"
interval = "1s"
alarms = ["shop-errors"]
"#,
    )
    .unwrap();
    let project = dir.path().to_str().unwrap().to_owned();
    let (ok, out, err) = rampart(&ep, &["deploy", &project]);
    assert!(ok, "{err}");
    assert!(out.contains("alarm shop-errors: put"), "{out}");
    assert!(
        out.contains("behind alias live: Succeeded"),
        "the first deploy points the alias: {out}"
    );
    write_code(2);
    let (ok, out, err) = rampart(&ep, &["deploy", &project]);
    assert!(ok && out.contains("InProgress"), "{out}{err}");
    server
        .eventually_static(
            "the canary to complete",
            std::time::Duration::from_secs(20),
            || {
                rampart(&ep, &["deployments", "shop"])
                    .1
                    .lines()
                    .nth(1)
                    .is_some_and(|l| l.contains("Succeeded"))
            },
        )
        .await;
    let r = server.invoke("shop:live", "{}").await;
    assert_eq!(r.text(), "2", "the alias serves the new version");
    let (ok, _, err) = rampart(
        &ep,
        &[
            "alarms",
            "put",
            "shop-slow",
            "--dimension",
            "FunctionName=shop",
            "--metric",
            "Duration",
            "--stat",
            "p99",
            "--period",
            "1m",
            "--evaluation-periods",
            "5",
            "--datapoints-to-alarm",
            "3",
            "--threshold",
            "500",
            "--comparison",
            "GreaterThanThreshold",
        ],
    );
    assert!(ok, "{err}");
    let (ok, _, err) = rampart(
        &ep,
        &[
            "alarms",
            "put",
            "bad",
            "--metric",
            "Errors",
            "--period",
            "7s",
            "--threshold",
            "1",
            "--comparison",
            "GreaterThanThreshold",
        ],
    );
    assert!(!ok && err.contains("InvalidParameterValue"), "{err}");
    let (ok, out, _) = rampart(&ep, &["alarms", "list"]);
    assert!(
        ok && out.contains("shop-errors") && out.contains("shop-slow"),
        "{out}"
    );
    let (ok, _, err) = rampart(
        &ep,
        &[
            "alarms",
            "set-state",
            "shop-errors",
            "ALARM",
            "--reason",
            "drill",
        ],
    );
    assert!(ok, "{err}");
    let (ok, out, _) = rampart(&ep, &["alarms", "history", "shop-errors"]);
    assert!(ok && out.contains("Alarm updated from"), "{out}");
    let (ok, _, err) = rampart(&ep, &["deploy", "rollback", "shop"]);
    assert!(
        !ok && err.contains("no deployment of shop is in progress"),
        "{err}"
    );
    let (ok, out, _) = rampart(&ep, &["alarms", "delete", "shop-errors"]);
    assert!(ok && out.contains("deleted"), "{out}");
}

//! Server and instance lifecycle: restarts, `kill -9`, draining, warm pools, idle reclaim.

use std::time::Duration;

use serde_json::json;

use crate::harness::{Server, alive, pids_with};

const PID: &str = "import os, time\ndef handler(e, c):\n    time.sleep(e.get('sleep', 0))\n    return {'pid': os.getpid(), 'v': 'one'}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_survive_kill_9_and_instances_die_with_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path(), &[], &[]);
    // A second server on the same data dir is refused before it touches anything.
    let second = std::process::Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("in use by another rampart server"));
    server
        .deploy(
            "durable",
            "python3.12",
            "app.handler",
            &[("app.py", PID)],
            json!({"Timeout": 5}),
        )
        .await;
    let pid = server.invoke("durable", "{}").await.json()["pid"]
        .as_i64()
        .unwrap() as i32;
    // Update, then kill -9 right after the acknowledgement.
    let two = PID.replace("'one'", "'two'");
    let zip = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        crate::harness::zip_of(&[("app.py", &two)]),
    );
    let r = server
        .http
        .put(server.url("/2015-03-31/functions/durable/code"))
        .json(&json!({"ZipFile": zip}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    server.kill9();
    // Instances never outlive the server, even after kill -9.
    server
        .eventually_static(
            "the instance to die with its server",
            Duration::from_secs(5),
            || !alive(pid),
        )
        .await;
    let server = Server::start_in(dir.path(), &[], &[]);
    let r = server.invoke("durable", "{}").await;
    assert_eq!(r.json()["v"], "two", "{}", r.text());
    let (_, list) = server.get_json("/2015-03-31/functions").await;
    assert_eq!(list["Functions"].as_array().unwrap().len(), 1);
    assert_eq!(server.invoke("durable:1", "{}").await.json()["v"], "one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_refuses_new_and_stops_instances() {
    let mut server = Server::start();
    server
        .deploy(
            "drain",
            "python3.12",
            "app.handler",
            &[("app.py", PID)],
            json!({"Timeout": 10}),
        )
        .await;
    let idle_pid = server.invoke("drain", "{}").await.json()["pid"]
        .as_i64()
        .unwrap() as i32;
    let endpoint = server.endpoint.clone();
    let http = server.http.clone();
    let in_flight = tokio::spawn(async move {
        let r = http
            .post(format!("{endpoint}/2015-03-31/functions/drain/invocations"))
            .body(r#"{"sleep": 1.5}"#)
            .send()
            .await
            .unwrap();
        (
            r.status().as_u16(),
            r.json::<serde_json::Value>().await.unwrap(),
        )
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut child = server.sigterm();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = server.invoke("drain", "{}").await;
    assert_eq!(refused.status, 503, "{}", refused.text());
    let (status, body) = in_flight.await.unwrap();
    assert_eq!(status, 200, "in-flight invocation finished: {body}");
    let busy_pid = body["pid"].as_i64().unwrap() as i32;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "server did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "{exit:?}\n{}", server.log());
    assert!(
        !alive(idle_pid) && !alive(busy_pid),
        "no instance outlives the server"
    );
    assert!(pids_with(&server.data_dir.display().to_string()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_instances_are_kept_warm_and_idle_ones_reclaimed() {
    let server = Server::start();
    server
        .deploy(
            "warm",
            "python3.12",
            "app.handler",
            &[("app.py", PID)],
            json!({"MinInstances": 1, "IdleTimeoutSeconds": 1}),
        )
        .await;
    let stats = || async { server.get_json("/rampart/v1/functions/warm/stats").await.1 };
    server
        .eventually("a pre-warmed instance", Duration::from_secs(10), || async {
            stats().await["idle"] == 1
        })
        .await;
    // The first invocation finds it warm: no Init Duration.
    let r = server
        .invoke_with("warm", "{}", &[("X-Amz-Log-Type", "Tail")])
        .await;
    let pid = r.json()["pid"].as_i64().unwrap() as i32;
    let tail = String::from_utf8(
        base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            r.header("x-amz-log-result").unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert!(!tail.contains("Init Duration"), "{tail}");
    // Three at once scale out; past the idle timeout the extra ones go, one stays.
    let _ = tokio::join!(
        server.invoke("warm", r#"{"sleep": 0.3}"#),
        server.invoke("warm", r#"{"sleep": 0.3}"#),
        server.invoke("warm", r#"{"sleep": 0.3}"#)
    );
    assert!(stats().await["instances"].as_u64().unwrap() >= 2);
    server
        .eventually(
            "idle instances reclaimed down to min_instances",
            Duration::from_secs(10),
            || async { stats().await["instances"] == 1 },
        )
        .await;
    // A killed warm instance is replaced.
    let survivor = server.invoke("warm", "{}").await.json()["pid"]
        .as_i64()
        .unwrap() as i32;
    let _ = pid;
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(survivor).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    // Reaped means the server's monitor has seen the exit.
    let proc_dir = format!("/proc/{survivor}");
    server
        .eventually_static("the killed instance reaped", Duration::from_secs(5), || {
            !std::path::Path::new(&proc_dir).exists()
        })
        .await;
    server
        .eventually(
            "the warm pool refilled",
            Duration::from_secs(10),
            || async {
                let s = stats().await;
                s["idle"] == 1 && s["instances"] == 1
            },
        )
        .await;
    let r = server.invoke("warm", "{}").await;
    let pid = r.json()["pid"].as_i64();
    assert!(pid.is_some_and(|p| p as i32 != survivor), "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_leaving_during_a_cold_start_leaves_nothing_behind() {
    let server = Server::start();
    let code = "import time\ntime.sleep(1)\ndef handler(e, c):\n    return 'up'\n";
    server
        .deploy(
            "slowstart",
            "python3.12",
            "app.handler",
            &[("app.py", code)],
            json!({}),
        )
        .await;
    // The caller gives up while the instance is still starting.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let gone = impatient
        .post(server.url("/2015-03-31/functions/slowstart/invocations"))
        .body("{}")
        .send()
        .await;
    assert!(gone.is_err(), "the caller timed out");
    let stats = || async {
        server
            .get_json("/rampart/v1/functions/slowstart/stats")
            .await
            .1
    };
    let tmp = server.data_dir.join("tmp");
    server
        .eventually(
            "the abandoned instance stopped and cleaned up",
            Duration::from_secs(10),
            || async {
                let s = stats().await;
                let left = std::fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0);
                s["instances"] == 0 && s["busy"] == 0 && left == 0
            },
        )
        .await;
    assert_eq!(server.invoke("slowstart", "{}").await.json(), json!("up"));
}

//! Gradual deployments: a canary of a failing version rolls back by itself, a healthy one
//! completes, a failed hook or a guarding alarm rolls back, a request rolls back, and a
//! restart mid-deployment rolls back.

use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use crate::harness::{Server, zip_of};

/// Succeeds, or fails the share of calls named in its code.
fn code(fail_share: f64, tag: u32) -> String {
    format!(
        "import random\ndef handler(event, context):\n    if random.random() < {fail_share}:\n        raise RuntimeError('canary broke')\n    return {{'tag': {tag}}}\n"
    )
}

async fn update(server: &Server, name: &str, source: &str) {
    let zip = zip_of(&[("app.py", source)]);
    let r = server
        .http
        .put(server.url(&format!("/2015-03-31/functions/{name}/code")))
        .json(&json!({"ZipFile": base64::engine::general_purpose::STANDARD.encode(zip)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

async fn post(server: &Server, path: &str, body: Value) -> (u16, Value) {
    let r = server
        .http
        .post(server.url(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn deployment(server: &Server, id: &str) -> Value {
    let (_, all) = server.get_json("/rampart/v1/deployments").await;
    all["Deployments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["DeploymentId"] == id)
        .cloned()
        .unwrap()
}

async fn wait_status(server: &Server, id: &str, status: &str, within: Duration) -> Value {
    let id = id.to_owned();
    server
        .eventually(&format!("deployment {id} to be {status}"), within, || {
            let id = id.clone();
            async move { deployment(server, &id).await["Status"] == status }
        })
        .await;
    deployment(server, &id).await
}

async fn alias(server: &Server, name: &str) -> Value {
    server
        .get_json(&format!("/2015-03-31/functions/{name}/aliases/live"))
        .await
        .1
}

/// `shop` with version 1 published behind alias `live`.
async fn shop(server: &Server) {
    server
        .deploy(
            "shop",
            "python3.12",
            "app.handler",
            &[("app.py", &code(0.0, 1))],
            json!({}),
        )
        .await;
    let (status, first) = post(
        server,
        "/rampart/v1/functions/shop/deployments",
        json!({"Alias": "live", "Strategy": {"Type": "AllAtOnce"}}),
    )
    .await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(
        first["Status"], "Succeeded",
        "a first deploy just points the alias: {first}"
    );
}

async fn start(server: &Server, preference: Value) -> String {
    let (status, d) = post(server, "/rampart/v1/functions/shop/deployments", preference).await;
    assert_eq!(status, 201, "{d}");
    d["DeploymentId"].as_str().unwrap().to_owned()
}

/// Calls `shop:live` `n` times; returns how many ran on each version.
async fn load(server: &Server, n: usize) -> (usize, usize) {
    let (mut old, mut new) = (0, 0);
    for _ in 0..n {
        let r = server.invoke("shop:live", "{}").await;
        if r.header("x-amz-executed-version") == Some("1") {
            old += 1;
        } else {
            new += 1;
        }
    }
    (old, new)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_rolls_back_by_itself_and_a_healthy_one_completes() {
    let server = Server::start();
    shop(&server).await;
    // Version 2 fails 30% of its calls; the canary would wait a minute at 50%.
    update(&server, "shop", &code(0.3, 2)).await;
    let id = start(
        &server,
        json!({"Alias": "live", "Strategy": {"Type": "Canary", "Percent": 50, "IntervalSeconds": 60}}),
    )
    .await;
    let breach = tokio::time::Instant::now();
    let (old, new) = load(&server, 120).await;
    assert!(
        old > 20 && new > 20,
        "both versions took traffic: {old} / {new}"
    );
    let d = wait_status(&server, &id, "RolledBack", Duration::from_secs(30)).await;
    assert!(
        breach.elapsed() < Duration::from_secs(30),
        "rolled back within 30 s"
    );
    assert!(d["Reason"].as_str().unwrap().contains("fails"), "{d}");
    let a = alias(&server, "shop").await;
    assert_eq!(a["FunctionVersion"], "1", "{a}");
    assert!(a.get("RoutingConfig").is_none(), "{a}");
    assert_eq!(
        load(&server, 20).await,
        (20, 0),
        "all traffic is back on version 1"
    );

    // A healthy version 3 with short steps completes.
    update(&server, "shop", &code(0.0, 3)).await;
    let id = start(
        &server,
        json!({"Alias": "live", "Strategy": {"Type": "Linear", "Percent": 50, "IntervalSeconds": 1}}),
    )
    .await;
    load(&server, 30).await;
    let d = wait_status(&server, &id, "Succeeded", Duration::from_secs(20)).await;
    assert_eq!(d["Weight"], 1.0);
    assert_ne!(alias(&server, "shop").await["FunctionVersion"], "1");
    let (old, _) = load(&server, 10).await;
    assert_eq!(old, 0, "all traffic on the new version");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_alarms_requests_and_restarts_roll_back() {
    let temp = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(temp.path(), &["--alarm-interval", "1s"], &[]);
    shop(&server).await;
    server
        .deploy(
            "bad-hook",
            "python3.12",
            "app.handler",
            &[(
                "app.py",
                "def handler(e, c):\n    raise RuntimeError('not ready')\n",
            )],
            json!({}),
        )
        .await;
    // A failing pre-traffic hook: no traffic moves.
    update(&server, "shop", &code(0.0, 2)).await;
    let id = start(
        &server,
        json!({"Alias": "live", "Strategy": {"Type": "AllAtOnce"}, "PreTrafficHook": "bad-hook"}),
    )
    .await;
    let d = wait_status(&server, &id, "RolledBack", Duration::from_secs(10)).await;
    assert!(
        d["Reason"]
            .as_str()
            .unwrap()
            .contains("PreTraffic hook bad-hook failed"),
        "{d}"
    );
    assert_eq!(alias(&server, "shop").await["FunctionVersion"], "1");

    // A guarding alarm in ALARM.
    let r = server
        .http
        .post(server.url("/"))
        .header("x-amz-target", "GraniteServiceVersion20100801.PutMetricAlarm")
        .header("content-type", "application/x-amz-json-1.0")
        .body(json!({"AlarmName": "shop-errors", "Namespace": "AWS/Lambda", "MetricName": "Errors",
            "Dimensions": [{"Name": "FunctionName", "Value": "shop"}], "Statistic": "Sum", "Period": 10,
            "EvaluationPeriods": 1, "Threshold": 0, "ComparisonOperator": "GreaterThanThreshold",
            "TreatMissingData": "breaching"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = start(
        &server,
        json!({"Alias": "live", "Strategy": {"Type": "Canary", "Percent": 10, "IntervalSeconds": 60},
               "Alarms": ["shop-errors"]}),
    )
    .await;
    let d = wait_status(&server, &id, "RolledBack", Duration::from_secs(15)).await;
    assert!(d["Reason"].as_str().unwrap().contains("shop-errors"), "{d}");

    // A rollback request.
    let id = start(
        &server,
        json!({"Alias": "live", "Strategy": {"Type": "Canary", "Percent": 10, "IntervalSeconds": 60},
               "BuiltInGuard": false}),
    )
    .await;
    let (status, _) = post(
        &server,
        "/rampart/v1/functions/shop/deployments/rollback",
        json!({}),
    )
    .await;
    assert_eq!(status, 202);
    let d = wait_status(&server, &id, "RolledBack", Duration::from_secs(10)).await;
    assert_eq!(d["Reason"], "rolled back on request");

    // An alarm action rolls a deployment back.
    let id = start(
        &server,
        json!({"Alias": "live", "Strategy": {"Type": "Canary", "Percent": 10, "IntervalSeconds": 60},
               "BuiltInGuard": false}),
    )
    .await;
    let cloudwatch = |target: &str, body: Value| {
        server
            .http
            .post(server.url("/"))
            .header(
                "x-amz-target",
                format!("GraniteServiceVersion20100801.{target}"),
            )
            .header("content-type", "application/x-amz-json-1.0")
            .body(body.to_string())
            .send()
    };
    let r = cloudwatch("PutMetricAlarm", json!({"AlarmName": "stop-shop", "Namespace": "app",
        "MetricName": "never", "Statistic": "Sum", "Period": 60, "EvaluationPeriods": 1, "Threshold": 1,
        "ComparisonOperator": "GreaterThanThreshold", "TreatMissingData": "ignore",
        "AlarmActions": ["rampart:rollback:shop"]}))
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let r = cloudwatch(
        "SetAlarmState",
        json!({"AlarmName": "stop-shop", "StateValue": "ALARM", "StateReason": "drill"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let d = wait_status(&server, &id, "RolledBack", Duration::from_secs(10)).await;
    assert_eq!(d["Reason"], "rolled back on request");

    // kill -9 mid-deployment: the next server rolls it back.
    let id = start(
        &server,
        json!({"Alias": "live", "Strategy": {"Type": "Canary", "Percent": 10, "IntervalSeconds": 60},
               "BuiltInGuard": false}),
    )
    .await;
    server
        .eventually("the canary weight", Duration::from_secs(5), || async {
            alias(&server, "shop").await.get("RoutingConfig").is_some()
        })
        .await;
    server.kill9();
    let server = Server::start_in(temp.path(), &[], &[]);
    let d = deployment(&server, &id).await;
    assert_eq!(d["Status"], "RolledBack", "{d}");
    assert!(d["Reason"].as_str().unwrap().contains("restarted"), "{d}");
    let a = alias(&server, "shop").await;
    assert_eq!(a["FunctionVersion"], "1", "{a}");
    assert!(a.get("RoutingConfig").is_none(), "{a}");
    let (_, audit) = server
        .get_json("/rampart/v1/audit?action=StartDeployment")
        .await;
    assert!(audit["records"].as_array().unwrap().len() >= 5, "{audit}");
}

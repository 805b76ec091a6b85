//! Metrics: Lambda's metric set from known invocation patterns, the CloudWatch API through
//! boto3 (put, get, list, errors, gzip), and a function publishing a custom metric with
//! unmodified boto3 code.

use std::time::Duration;

use serde_json::json;

use crate::harness::{Server, rampart_cli, run_python};

/// Shared by the scripts: a CloudWatch client on the server and a poll for a condition.
const PRELUDE: &str = r#"
import datetime, json, sys, time
import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

endpoint = sys.argv[1]
cw = boto3.client(
    "cloudwatch", endpoint_url=endpoint, region_name="us-east-1",
    aws_access_key_id="AKID", aws_secret_access_key="SECRET",
    config=Config(retries={"total_max_attempts": 1}),
)
now = datetime.datetime.now(datetime.timezone.utc)
start, end = now - datetime.timedelta(minutes=10), now + datetime.timedelta(minutes=1)

def stats(name, statistics=None, extended=None, dims=None, ns="AWS/Lambda", period=60, unit=None):
    args = dict(Namespace=ns, MetricName=name, Dimensions=dims or [], StartTime=start,
                EndTime=end, Period=period)
    if statistics:
        args["Statistics"] = statistics
    if extended:
        args["ExtendedStatistics"] = extended
    if unit:
        args["Unit"] = unit
    points = cw.get_metric_statistics(**args)["Datapoints"]
    merged = {}
    for p in points:
        for k, v in p.items():
            if k in ("Sum", "SampleCount"):
                merged[k] = merged.get(k, 0) + v
            elif k == "Maximum":
                merged[k] = max(merged.get(k, v), v)
            elif k == "Minimum":
                merged[k] = min(merged.get(k, v), v)
            else:
                merged[k] = v
    return merged

def wait_for(what, check, timeout=15):
    deadline = time.time() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)

def error_code(call):
    try:
        call()
    except ClientError as e:
        return e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]
    raise AssertionError("the call should have failed")
"#;

const LAMBDA_METRICS: &str = r#"
fn = [{"Name": "FunctionName", "Value": "timed"}]
invocations = wait_for("45 invocations", lambda: stats("Invocations", ["Sum"], dims=fn).get("Sum") == 45 and stats("Invocations", ["Sum"], dims=fn))
errors = stats("Errors", ["Sum", "SampleCount"], dims=fn)
assert errors == {"Sum": 5, "SampleCount": 45, "Timestamp": errors["Timestamp"], "Unit": "Count"}, errors
duration = stats("Duration", ["SampleCount", "Minimum", "Maximum"], dims=fn, unit="Milliseconds")
assert duration["SampleCount"] == 45, duration
assert 40 <= duration["Maximum"] < 90, duration
# 13 values near 0 ms, then 8 each near 10, 20, 30 and 40 ms: the 23rd of 45 is near 20 ms.
p = stats("Duration", extended=["p50", "p99"], dims=fn)["ExtendedStatistics"]
assert 20 <= p["p50"] < 35, p
assert 40 <= p["p99"] < 90, p
cold = stats("ColdStarts", ["Sum"], dims=fn)
assert cold["Sum"] >= 1, cold
init = stats("InitDuration", ["SampleCount", "Maximum"], dims=fn)
assert init["SampleCount"] == cold["Sum"] and init["Maximum"] > 0, init
concurrency = stats("ConcurrentExecutions", ["Maximum"], dims=fn)
assert concurrency["Maximum"] == 1, concurrency
assert stats("ConcurrentExecutions", ["Maximum"])["Maximum"] >= 1, "account-wide series"
throttles = wait_for("a throttle", lambda: stats("Throttles", ["Sum"], dims=fn).get("Sum") == 1 and stats("Throttles", ["Sum"], dims=fn))
slow = [{"Name": "FunctionName", "Value": "slow"}]
timeouts = wait_for("a timeout", lambda: stats("Timeouts", ["Sum"], dims=slow))
assert timeouts["Sum"] == 1, timeouts
assert stats("Errors", ["Sum"], dims=slow)["Sum"] == 1
assert stats("Timeouts", ["Sum"], dims=fn) == {}, "no timeouts of the timed function"
# 10-second periods read the 1-second points.
fine = cw.get_metric_statistics(Namespace="AWS/Lambda", MetricName="Invocations", Dimensions=fn,
    StartTime=now - datetime.timedelta(minutes=5), EndTime=end, Period=10, Statistics=["Sum"])
assert sum(p["Sum"] for p in fine["Datapoints"]) == 45, fine
# GetMetricData: metric stats, newest first by default.
data = cw.get_metric_data(StartTime=start, EndTime=end, MetricDataQueries=[
    {"Id": "inv", "MetricStat": {"Metric": {"Namespace": "AWS/Lambda", "MetricName": "Invocations", "Dimensions": fn}, "Period": 60, "Stat": "Sum"}},
    {"Id": "p99", "MetricStat": {"Metric": {"Namespace": "AWS/Lambda", "MetricName": "Duration", "Dimensions": fn}, "Period": 60, "Stat": "p99"}, "Label": "tail"},
])["MetricDataResults"]
assert [r["Id"] for r in data] == ["inv", "p99"] and data[1]["Label"] == "tail", data
assert sum(data[0]["Values"]) == 45 and data[0]["StatusCode"] == "Complete", data
# Under 100 values a bucket's p99 is its maximum: the bucket holding a 40 ms call shows it.
assert data[1]["Values"] and 40 <= max(data[1]["Values"]) < 90, data
metrics = cw.list_metrics(Namespace="AWS/Lambda", Dimensions=[{"Name": "FunctionName", "Value": "timed"}])["Metrics"]
names = {m["MetricName"] for m in metrics}
assert {"Invocations", "Errors", "Duration", "Throttles", "ConcurrentExecutions", "ColdStarts"} <= names, names
assert all(m["Dimensions"] == fn for m in metrics), "no Resource dimension for $LATEST"
print("lambda metrics ok")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lambda_metrics_follow_a_known_invocation_pattern() {
    let server = Server::start();
    let code = "import time\ndef handler(event, context):\n    time.sleep(event['ms'] / 1000)\n    if event.get('fail'):\n        raise RuntimeError('asked to fail')\n    return event\n";
    server
        .deploy(
            "timed",
            "python3.12",
            "app.handler",
            &[("app.py", code)],
            json!({"Timeout": 1}),
        )
        .await;
    for i in 0..40 {
        let ms = 10 * (i % 5);
        let r = server.invoke("timed", &format!(r#"{{"ms": {ms}}}"#)).await;
        assert_eq!(r.header("x-amz-function-error"), None, "{}", r.text());
    }
    for _ in 0..5 {
        let r = server.invoke("timed", r#"{"ms": 0, "fail": true}"#).await;
        assert_eq!(r.header("x-amz-function-error"), Some("Unhandled"));
    }
    // One throttle: no concurrency left.
    let r = server
        .http
        .put(server.url("/2017-10-31/functions/timed/concurrency"))
        .json(&json!({"ReservedConcurrentExecutions": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(server.invoke("timed", r#"{"ms": 0}"#).await.status, 429);
    // A timeout, on a function of its own: an error, and a timeout.
    server
        .deploy(
            "slow",
            "python3.12",
            "app.handler",
            &[("app.py", code)],
            json!({"Timeout": 1}),
        )
        .await;
    let r = server.invoke("slow", r#"{"ms": 3000}"#).await;
    assert_eq!(r.header("x-amz-function-error"), Some("Unhandled"));
    let script = format!("{PRELUDE}{LAMBDA_METRICS}");
    let (ok, output) = run_python(&script, &[&server.endpoint]);
    assert!(ok && output.contains("lambda metrics ok"), "{output}");

    // The CLI reads the same series: a table whose values add up, and a sparkline.
    let (ok, out, err) = rampart_cli(
        &server.endpoint,
        &[
            "metrics",
            "timed",
            "--metric",
            "Invocations",
            "--stat",
            "Sum",
            "--since",
            "10m",
        ],
    );
    assert!(ok, "{err}");
    let total: f64 = out
        .lines()
        .filter(|l| l.starts_with("20"))
        .map(|l| l.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(total, 45.0, "{out}");
    assert!(
        out.lines().last().unwrap().contains(['▁', '▅', '█']),
        "{out}"
    );
    let (ok, out, err) = rampart_cli(
        &server.endpoint,
        &[
            "metrics", "timed", "--metric", "Duration", "--stat", "p99", "--period", "10s",
            "--since", "5m",
        ],
    );
    assert!(ok && out.contains("Milliseconds"), "{out}{err}");
    let (ok, _, err) = rampart_cli(&server.endpoint, &["metrics", "timed", "--stat", "median"]);
    assert!(!ok && err.contains("not a statistic"), "{err}");
    let (ok, _, err) = rampart_cli(&server.endpoint, &["metrics", "timed", "--period", "7s"]);
    assert!(!ok && err.contains("InvalidParameterValue"), "{err}");
    // `top` lists every function; the loaded one first once it has a rate.
    let (ok, out, err) = rampart_cli(&server.endpoint, &["top", "--once"]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("FUNCTION") && out.contains("timed") && out.contains("slow"),
        "{out}"
    );
}

const CUSTOM_METRICS: &str = r#"
dims = [{"Name": "host", "Value": "a"}]
cw.put_metric_data(Namespace="app", MetricData=[
    {"MetricName": "latency", "Dimensions": dims, "Value": v, "Unit": "Milliseconds", "Timestamp": now}
    for v in range(1, 101)
])
cw.put_metric_data(Namespace="app", MetricData=[
    {"MetricName": "latency", "Dimensions": dims, "Values": [1000.0, 2000.0], "Counts": [2, 1], "Unit": "Milliseconds", "Timestamp": now},
    {"MetricName": "bytes", "StatisticValues": {"SampleCount": 4, "Sum": 40, "Minimum": 5, "Maximum": 15}, "Unit": "Bytes", "Timestamp": now},
])
# Over 10 KB: botocore gzips the body.
cw.put_metric_data(Namespace="app", MetricData=[
    {"MetricName": "big", "Dimensions": [{"Name": "shard", "Value": f"s{i % 3}"}, {"Name": "padding", "Value": "x" * 40}], "Value": 1.0, "Timestamp": now}
    for i in range(300)
])
got = stats("latency", ["SampleCount", "Sum", "Minimum", "Maximum", "Average"], ns="app", dims=dims)
assert got["SampleCount"] == 103 and got["Sum"] == 5050 + 4000, got
assert got["Minimum"] == 1 and got["Maximum"] == 2000 and got["Unit"] == "Milliseconds", got
p = stats("latency", extended=["p50", "p99", "p100"], ns="app", dims=dims)["ExtendedStatistics"]
assert abs(p["p50"] - 52) <= 0.1 and p["p100"] == 2000, p
assert stats("latency", ["Sum"], ns="app", dims=dims, unit="Seconds") == {}, "other units match nothing"
b = stats("bytes", ["SampleCount", "Sum", "Average"], ns="app")
assert b["SampleCount"] == 4 and b["Average"] == 10, b
assert stats("bytes", extended=["p50"], ns="app")["ExtendedStatistics"] == {}, "no percentiles from a set"
padding = {"Name": "padding", "Value": "x" * 40}
big = stats("big", ["Sum"], ns="app", dims=[{"Name": "shard", "Value": "s1"}, padding])
assert big["Sum"] == 100, big
listed = cw.list_metrics(Namespace="app", MetricName="big")["Metrics"]
assert len(listed) == 3, listed
only = cw.list_metrics(Namespace="app", Dimensions=[{"Name": "shard", "Value": "s2"}])["Metrics"]
assert [m["MetricName"] for m in only] == ["big"], only
pages = list(cw.get_paginator("list_metrics").paginate(Namespace="app"))
assert sum(len(p["Metrics"]) for p in pages) == 5, pages

# Metric math over queries that are not returned themselves.
latency = {"Namespace": "app", "MetricName": "latency", "Dimensions": dims}
data = cw.get_metric_data(StartTime=start, EndTime=end, ScanBy="TimestampAscending", MetricDataQueries=[
    {"Id": "total", "MetricStat": {"Metric": latency, "Period": 600, "Stat": "Sum"}, "ReturnData": False},
    {"Id": "n", "MetricStat": {"Metric": latency, "Period": 600, "Stat": "SampleCount"}, "ReturnData": False},
    {"Id": "mean", "Expression": "total / n", "Label": "mean latency"},
    {"Id": "scaled", "Expression": "(mean - 1) * 2"},
])["MetricDataResults"]
assert [r["Id"] for r in data] == ["mean", "scaled"] and data[0]["Label"] == "mean latency", data
means = data[0]["Values"]
assert len(means) == 1 and abs(means[0] - 9050 / 103) < 1e-9, data
assert all(abs(s - (m - 1) * 2) < 1e-9 for m, s in zip(means, data[1]["Values"])), data
bad = lambda expr: error_code(lambda: cw.get_metric_data(StartTime=start, EndTime=end, MetricDataQueries=[
    {"Id": "a", "MetricStat": {"Metric": latency, "Period": 60, "Stat": "Sum"}},
    {"Id": "b", "Expression": expr}]))
assert bad("SUM(METRICS())") == ("InvalidParameterValue", 400)
assert bad("a / later") == ("InvalidParameterValue", 400)

# Errors, as CloudWatch reports them.
assert error_code(lambda: cw.put_metric_data(Namespace="AWS/Mine", MetricData=[{"MetricName": "m", "Value": 1}])) == ("InvalidParameterValue", 400)
assert error_code(lambda: cw.put_metric_data(Namespace="app", MetricData=[{"MetricName": "m", "Value": float("nan")}])) == ("InvalidParameterValue", 400)
old = now - datetime.timedelta(days=21)
assert error_code(lambda: cw.put_metric_data(Namespace="app", MetricData=[{"MetricName": "m", "Value": 1, "Timestamp": old}])) == ("InvalidParameterValue", 400)
assert error_code(lambda: cw.put_metric_data(Namespace="app", MetricData=[{"MetricName": "m", "Value": 1, "Dimensions": [{"Name": f"d{i}", "Value": "v"} for i in range(31)]}])) == ("InvalidParameterValue", 400)
assert error_code(lambda: cw.put_metric_data(Namespace="app", MetricData=[{"MetricName": "m", "Value": 1, "Values": [1.0]}])) == ("InvalidParameterCombination", 400)
assert error_code(lambda: cw.get_metric_statistics(Namespace="app", MetricName="latency", StartTime=now - datetime.timedelta(days=3), EndTime=now, Period=60, Statistics=["Sum"])) == ("InvalidParameterCombination", 400)
assert error_code(lambda: cw.get_metric_statistics(Namespace="app", MetricName="latency", StartTime=start, EndTime=end, Period=7, Statistics=["Sum"])) == ("InvalidParameterValue", 400)
assert error_code(lambda: cw.get_metric_statistics(Namespace="app", MetricName="latency", StartTime=start, EndTime=end, Period=60)) == ("MissingParameter", 400)
assert error_code(lambda: cw.get_metric_data(StartTime=start, EndTime=end, MetricDataQueries=[{"Id": "Bad", "MetricStat": {"Metric": {"Namespace": "app", "MetricName": "latency"}, "Period": 60, "Stat": "Sum"}}])) == ("InvalidParameterValue", 400)
print("custom metrics ok")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_puts_gets_and_lists_custom_metrics() {
    let server = Server::start();
    let script = format!("{PRELUDE}{CUSTOM_METRICS}");
    let (ok, output) = run_python(&script, &[&server.endpoint]);
    assert!(ok && output.contains("custom metrics ok"), "{output}");
}

const MONITORED_COUNTER: &str = r#"
dims = [{"Name": "operation", "Value": "increment"}]
got = wait_for("the counter's metric", lambda: stats("counter", ["Maximum", "SampleCount"], ns="counter", dims=dims))
assert got["Maximum"] == 42 and got["SampleCount"] == 1 and got["Unit"] == "Count", got
print("monitored counter ok")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitored_counter_publishes_its_value_with_plain_boto3() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/counter-monitored"
    );
    let server = tokio::task::spawn_blocking(move || Server::up(dir))
        .await
        .unwrap();
    let r = server
        .invoke(
            "counter-monitored",
            r#"{"counter": 41, "operation": "increment"}"#,
        )
        .await;
    assert_eq!(r.json()["statusCode"], 200, "{}", r.text());
    assert_eq!(r.json()["body"], r#"{"counter": 42}"#);
    let r = server
        .invoke(
            "counter-monitored",
            r#"{"counter": 1, "operation": "multiply"}"#,
        )
        .await;
    assert_eq!(r.json()["statusCode"], 400, "{}", r.text());
    let script = format!("{PRELUDE}{MONITORED_COUNTER}");
    let (ok, output) = run_python(&script, &[&server.endpoint]);
    assert!(ok && output.contains("monitored counter ok"), "{output}");
    let (ok, out, err) = rampart_cli(
        &server.endpoint,
        &[
            "metrics",
            "counter-monitored",
            "--namespace",
            "counter",
            "--metric",
            "counter",
            "--stat",
            "Maximum",
            "--dimension",
            "operation=increment",
            "--since",
            "10m",
        ],
    );
    assert!(ok, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("20") && l.contains(" 42.000 ") && l.ends_with("Count")),
        "{out}"
    );
}

const ASYNC_METRICS: &str = r#"
fn = [{"Name": "FunctionName", "Value": "queued"}]
dropped = wait_for("the dropped event", lambda: stats("AsyncEventsDropped", ["Sum"], dims=fn))
assert dropped["Sum"] == 1, dropped
assert stats("AsyncEventsReceived", ["Sum"], dims=fn)["Sum"] == 1
age = stats("AsyncEventAge", ["SampleCount", "Minimum"], dims=fn, unit="Milliseconds")
assert age["SampleCount"] == 1 and age["Minimum"] >= 0, age
assert stats("Errors", ["Sum"], dims=fn)["Sum"] == 1
# Sampled every 5 s: the instance that ran the event, and the queue (empty by now or not).
wait_for("the instance count", lambda: stats("Instances", ["Maximum"], dims=fn).get("Maximum", 0) >= 1)
assert stats("QueueDepth", ["SampleCount"], dims=fn)["SampleCount"] >= 1
print("async metrics ok")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_events_are_metered_from_acceptance_to_drop() {
    let server = Server::start();
    server
        .deploy(
            "queued",
            "python3.12",
            "app.handler",
            &[(
                "app.py",
                "def handler(event, context):\n    raise RuntimeError('always')\n",
            )],
            json!({}),
        )
        .await;
    let r = server
        .http
        .put(server.url("/2019-09-25/functions/queued/event-invoke-config"))
        .json(&json!({"MaximumRetryAttempts": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = server
        .invoke_with("queued", "{}", &[("x-amz-invocation-type", "Event")])
        .await;
    assert_eq!(r.status, 202);
    let script = format!("{PRELUDE}{ASYNC_METRICS}");
    let (ok, output) = run_python(&script, &[&server.endpoint]);
    assert!(ok && output.contains("async metrics ok"), "{output}");
}

/// `promtool check metrics` on what `GET /metrics` serves (the Debian `prometheus` package).
fn promtool_check(text: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool on PATH (scripts/test installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_exposition_passes_promtool() {
    let server = Server::start();
    server
        .deploy(
            "scraped",
            "python3.12",
            "app.handler",
            &[("app.py", "def handler(e, c):\n    return e\n")],
            json!({}),
        )
        .await;
    for _ in 0..3 {
        assert_eq!(server.invoke("scraped", "{}").await.status, 200);
    }
    let r = server
        .http
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = r.text().await.unwrap();
    assert!(
        text.contains("rampart_lambda_invocations_total{function_name=\"scraped\"} 3"),
        "{text}"
    );
    assert!(text.contains("rampart_lambda_duration_seconds_count{function_name=\"scraped\"} 3"));
    assert!(text.contains("rampart_lambda_cold_starts_total{function_name=\"scraped\"} 1"));
    assert!(text.contains(
        "rampart_lambda_duration_seconds_bucket{function_name=\"scraped\",le=\"+Inf\"} 3\n"
    ));
    let (ok, report) = promtool_check(&text);
    assert!(ok && report.trim().is_empty(), "promtool: {report}\n{text}");
    let open = server
        .http
        .get(server.url("/metrics"))
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap();
    assert!(
        open.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    assert!(open.text().await.unwrap().ends_with("# EOF\n"));
}

const ROUTE_METRICS: &str = r#"
dims = [{"Name": "ApiId", "Value": "shop"}, {"Name": "Route", "Value": "POST /orders"}]
count = wait_for("5 requests", lambda: stats("Count", ["Sum"], ns="AWS/ApiGateway", dims=dims).get("Sum") == 5 and True)
assert stats("5XXError", ["Sum", "Average"], ns="AWS/ApiGateway", dims=dims)["Sum"] == 1
assert stats("4XXError", ["Sum"], ns="AWS/ApiGateway", dims=dims)["Sum"] == 1
assert stats("Throttles", ["Sum"], ns="AWS/ApiGateway", dims=dims)["Sum"] == 1
latency = stats("Latency", ["SampleCount", "Minimum"], ns="AWS/ApiGateway", dims=dims)
assert latency["SampleCount"] == 5 and latency["Minimum"] > 0 and latency["Unit"] == "Milliseconds", latency
print("route metrics ok")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_count_requests_errors_and_latency() {
    let server = Server::start();
    let code = "def handler(event, context):\n    if event.get('body') == 'fail':\n        raise RuntimeError('no')\n    return {'statusCode': 201, 'body': 'ok'}\n";
    server
        .deploy(
            "orders",
            "python3.12",
            "app.handler",
            &[("app.py", code)],
            json!({}),
        )
        .await;
    let r = server
        .http
        .put(server.url("/rampart/v1/apis/shop"))
        .json(&json!({"name": "shop", "routes": [{"route": "POST /orders", "function": "orders"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for body in ["a", "b", "c", "fail"] {
        let r = server
            .http
            .post(format!("{}/orders", server.http_endpoint))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), if body == "fail" { 500 } else { 201 });
    }
    // No concurrency left: the gateway answers 429.
    let r = server
        .http
        .put(server.url("/2017-10-31/functions/orders/concurrency"))
        .json(&json!({"ReservedConcurrentExecutions": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = server
        .http
        .post(format!("{}/orders", server.http_endpoint))
        .body("d")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let script = format!("{PRELUDE}{ROUTE_METRICS}");
    let (ok, output) = run_python(&script, &[&server.endpoint]);
    assert!(ok && output.contains("route metrics ok"), "{output}");
}

const ALARMS: &str = r#"
def alarm(name, **over):
    args = dict(AlarmName=name, Namespace="app", MetricName="errors", Dimensions=[{"Name": "svc", "Value": "a"}],
                Statistic="Sum", Period=10, EvaluationPeriods=2, DatapointsToAlarm=1, Threshold=5,
                ComparisonOperator="GreaterThanThreshold", TreatMissingData="notBreaching")
    args.update(over)
    cw.put_metric_alarm(**args)

def state(name):
    alarms = cw.describe_alarms(AlarmNames=[name])["MetricAlarms"]
    return alarms[0]["StateValue"] if alarms else None

alarm("errors-high")
alarm("silent-breaching", MetricName="never", TreatMissingData="breaching")
alarm("silent-missing", MetricName="never", TreatMissingData="missing")
described = cw.describe_alarms(AlarmNames=["errors-high"])["MetricAlarms"][0]
assert described["AlarmArn"].endswith(":alarm:errors-high") and described["Period"] == 10, described
assert described["ComparisonOperator"] == "GreaterThanThreshold" and described["TreatMissingData"] == "notBreaching"

# No data, not breaching: OK. No data, breaching: ALARM. No data, missing: INSUFFICIENT_DATA.
wait_for("OK with no data", lambda: state("errors-high") == "OK")
wait_for("ALARM from missing data", lambda: state("silent-breaching") == "ALARM")
assert state("silent-missing") == "INSUFFICIENT_DATA"

# Composite alarms over them.
cw.put_composite_alarm(AlarmName="any-trouble", AlarmRule='ALARM("errors-high") OR ALARM(silent-breaching)')
cw.put_composite_alarm(AlarmName="both", AlarmRule="ALARM(silent-breaching) AND OK(silent-missing)")
def composite(name):
    found = cw.describe_alarms(AlarmNames=[name], AlarmTypes=["CompositeAlarm"])["CompositeAlarms"]
    return found[0]["StateValue"] if found else None
wait_for("the composite in ALARM", lambda: composite("any-trouble") == "ALARM")
wait_for("the other composite OK", lambda: composite("both") == "OK")
assert cw.describe_alarms(AlarmNames=["any-trouble"])["CompositeAlarms"] == [], "metric alarms only by default"
assert error_code(lambda: cw.put_composite_alarm(AlarmName="bad", AlarmRule="ALARM(a) XOR ALARM(b)")) == ("InvalidParameterValue", 400)
assert error_code(lambda: cw.put_composite_alarm(AlarmName="self", AlarmRule="ALARM(self)")) == ("InvalidParameterValue", 400)

# A breaching datapoint in the last complete period: ALARM within an evaluation or two.
ten_ago = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=10)
cw.put_metric_data(Namespace="app", MetricData=[
    {"MetricName": "errors", "Dimensions": [{"Name": "svc", "Value": "a"}], "Value": 9, "Timestamp": ten_ago}])
wait_for("ALARM after a breach", lambda: state("errors-high") == "ALARM")
described = cw.describe_alarms(StateValue="ALARM", AlarmNamePrefix="errors")["MetricAlarms"]
assert [a["AlarmName"] for a in described] == ["errors-high"], described
assert "Threshold Crossed" in described[0]["StateReason"] and "recentDatapoints" in described[0]["StateReasonData"]
history = cw.describe_alarm_history(AlarmName="errors-high", HistoryItemType="StateUpdate")["AlarmHistoryItems"]
assert any("to ALARM" in h["HistorySummary"] for h in history), history
configs = cw.describe_alarm_history(AlarmName="errors-high", HistoryItemType="ConfigurationUpdate")["AlarmHistoryItems"]
assert configs and configs[-1]["HistorySummary"].startswith("Alarm created"), configs

# SetAlarmState holds until the next evaluation, which sets it back.
cw.set_alarm_state(AlarmName="errors-high", StateValue="OK", StateReason="testing actions")
history = cw.describe_alarm_history(AlarmName="errors-high", HistoryItemType="StateUpdate")["AlarmHistoryItems"]
assert any(h["HistorySummary"] == "Alarm updated from ALARM to OK" for h in history), history
wait_for("re-evaluated to ALARM", lambda: state("errors-high") == "ALARM")

# Bad requests get CloudWatch's errors.
assert error_code(lambda: alarm("bad", Period=7)) == ("InvalidParameterValue", 400)
assert error_code(lambda: alarm("bad", EvaluationPeriods=1, DatapointsToAlarm=2)) == ("InvalidParameterValue", 400)
assert error_code(lambda: alarm("bad", ExtendedStatistic="p99")) == ("InvalidParameterCombination", 400)
assert error_code(lambda: cw.delete_alarms(AlarmNames=["nope"])) == ("ResourceNotFound", 404)
assert error_code(lambda: cw.set_alarm_state(AlarmName="nope", StateValue="OK", StateReason="x")) == ("ResourceNotFound", 404)
assert error_code(lambda: cw.set_alarm_state(AlarmName="errors-high", StateValue="OK", StateReason="x", StateReasonData="{bad")) == ("InvalidFormat", 400)

# Anomaly detection: three days of the same minute at 10 teach the band; 50 now is outside.
import math
minute = math.floor(time.time() / 60) * 60 - 60
def at(ts):
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)
for metric, now_value in (("visits", 50.0), ("calm", 10.0)):
    cw.put_metric_data(Namespace="shop", MetricData=[
        {"MetricName": metric, "Value": 10.0, "Timestamp": at(minute - k * 86400 + s)}
        for k in (1, 2, 3) for s in (0, 60)] + [
        {"MetricName": metric, "Value": now_value, "Timestamp": at(minute + 5)}])
    cw.put_metric_alarm(AlarmName=f"odd-{metric}", EvaluationPeriods=2, DatapointsToAlarm=1,
        ComparisonOperator="LessThanLowerOrGreaterThanUpperThreshold", ThresholdMetricId="ad1",
        Metrics=[{"Id": "m1", "ReturnData": True, "MetricStat": {"Metric": {"Namespace": "shop", "MetricName": metric},
                                                                  "Period": 60, "Stat": "Average"}},
                 {"Id": "ad1", "Expression": "ANOMALY_DETECTION_BAND(m1, 2)", "ReturnData": True}])
wait_for("the anomaly to alarm", lambda: state("odd-visits") == "ALARM")
wait_for("the usual value to be OK", lambda: state("odd-calm") == "OK")
described = cw.describe_alarms(AlarmNames=["odd-visits"])["MetricAlarms"][0]
assert described["ThresholdMetricId"] == "ad1" and len(described["Metrics"]) == 2, described
assert "band" in described["StateReason"], described["StateReason"]
assert error_code(lambda: cw.put_metric_alarm(AlarmName="odd-bad", EvaluationPeriods=1,
    ComparisonOperator="GreaterThanThreshold", ThresholdMetricId="ad1",
    Metrics=[{"Id": "m1", "MetricStat": {"Metric": {"Namespace": "shop", "MetricName": "visits"}, "Period": 60, "Stat": "Average"}},
             {"Id": "ad1", "Expression": "ANOMALY_DETECTION_BAND(m1, 2)"}])) == ("InvalidParameterValue", 400)
cw.delete_alarms(AlarmNames=["odd-visits", "odd-calm"])

cw.delete_alarms(AlarmNames=["silent-breaching", "silent-missing"])
assert [a["AlarmName"] for a in cw.describe_alarms()["MetricAlarms"]] == ["errors-high"]
print("alarms ok")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_are_defined_evaluated_and_described_through_boto3() {
    let server = Server::start_with(&["--alarm-interval", "1s"], &[]);
    let script = format!("{PRELUDE}{ALARMS}");
    let (ok, output) = run_python(&script, &[&server.endpoint]);
    assert!(ok && output.contains("alarms ok"), "{output}");
    // Alarm changes are control actions: they are in the audit trail.
    let (_, audit) = server
        .get_json("/rampart/v1/audit?action=PutMetricAlarm")
        .await;
    assert_eq!(audit["records"].as_array().unwrap().len(), 5, "{audit}");
    let (_, audit) = server
        .get_json("/rampart/v1/audit?action=PutCompositeAlarm")
        .await;
    assert_eq!(audit["records"].as_array().unwrap().len(), 2, "{audit}");
    let (_, audit) = server
        .get_json("/rampart/v1/audit?action=DeleteAlarms")
        .await;
    assert!(!audit["records"].as_array().unwrap().is_empty(), "{audit}");
}

const ALARM_ACTIONS: &str = r#"
hook = sys.argv[2]
cw.put_metric_alarm(AlarmName="act", Namespace="app", MetricName="quiet", Statistic="Sum", Period=60,
    EvaluationPeriods=1, Threshold=1, ComparisonOperator="GreaterThanThreshold", TreatMissingData="ignore",
    AlarmActions=["arn:aws:lambda:us-east-1:000000000000:function:on-alarm", hook,
                  "rampart:recycle:target", "mailto:ops@example.com"])
cw.set_alarm_state(AlarmName="act", StateValue="ALARM", StateReason="drill")
items = cw.describe_alarm_history(AlarmName="act", HistoryItemType="Action")["AlarmHistoryItems"]
summaries = sorted(i["HistorySummary"] for i in items)
assert len(summaries) == 4, summaries
assert sum(s.startswith("Successfully executed action") for s in summaries) == 3, summaries
assert any(s.startswith("Failed to execute action mailto:") for s in summaries), summaries
print("alarm actions ok")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarm_actions_invoke_post_and_recycle() {
    // A webhook that fails its first call: the action retries.
    let posts: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>> = Default::default();
    let kept = posts.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::Json<serde_json::Value>| {
            let kept = kept.clone();
            async move {
                let mut posts = kept.lock().unwrap();
                posts.push(body.0);
                if posts.len() == 1 {
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    axum::http::StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let server = Server::start();
    server
        .deploy(
            "on-alarm",
            "python3.12",
            "app.handler",
            &[("app.py", "import json\ndef handler(event, context):\n    print('record ' + json.dumps(event))\n")],
            json!({}),
        )
        .await;
    server
        .deploy(
            "target",
            "python3.12",
            "app.handler",
            &[(
                "app.py",
                "import os\ndef handler(event, context):\n    return os.getpid()\n",
            )],
            json!({}),
        )
        .await;
    let before = server.invoke("target", "{}").await.json();
    let script = format!("{PRELUDE}{ALARM_ACTIONS}");
    let (ok, output) = run_python(&script, &[&server.endpoint, &hook]);
    assert!(ok && output.contains("alarm actions ok"), "{output}");
    // The webhook got the record (on the second attempt).
    let got = posts.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[1]["alarmData"]["alarmName"], "act");
    assert_eq!(got[1]["alarmData"]["state"]["value"], "ALARM");
    assert_eq!(
        got[1]["alarmData"]["previousState"]["value"],
        "INSUFFICIENT_DATA"
    );
    // The function was invoked asynchronously with it.
    server
        .eventually(
            "the alarm record to reach on-alarm",
            Duration::from_secs(10),
            || async {
                server.log_lines("on-alarm").await.iter().any(|l| {
                    l["line"].as_str().is_some_and(|t| {
                        t.starts_with("record ") && t.contains("\"alarmName\": \"act\"")
                    })
                })
            },
        )
        .await;
    // The target's instances were replaced.
    let after = server.invoke("target", "{}").await.json();
    assert_ne!(before, after, "a new instance answers after the recycle");
    let (_, audit) = server
        .get_json("/rampart/v1/audit?action=AlarmAction")
        .await;
    assert_eq!(audit["records"].as_array().unwrap().len(), 4, "{audit}");
}

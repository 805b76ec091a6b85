//! Synchronous invocations of Python and Node.js functions: results, errors, context, logs.

use base64::Engine;
use serde_json::{Value, json};

use crate::harness::Server;

const COUNTER: &str = include_str!("../../../../examples/counter/python/lambda_function.py");
const COUNTER_NODE: &str = include_str!("../../../../examples/counter/node/index.mjs");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_counter_answers_like_lambda() {
    let server = Server::start();
    server
        .deploy(
            "counter",
            "python3.12",
            "lambda_function.lambda_handler",
            &[("lambda_function.py", COUNTER)],
            json!({}),
        )
        .await;
    let r = server
        .invoke("counter", r#"{"counter": 41, "operation": "increment"}"#)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"statusCode": 200, "body": "{\"counter\": 42}"})
    );
    assert_eq!(r.header("x-amz-executed-version"), Some("$LATEST"));
    assert_eq!(r.header("x-amz-function-error"), None);
    let request_id = r.header("x-amzn-requestid").expect("request id");
    assert_eq!(request_id.len(), 36);
    // Clamped to 0..100, and an unknown operation is a 400 from the handler (not an error).
    let r = server
        .invoke("counter", r#"{"counter": 100, "operation": "increment"}"#)
        .await;
    assert_eq!(r.json()["body"], "{\"counter\": 100}");
    let r = server
        .invoke("counter", r#"{"counter": 0, "operation": "decrement"}"#)
        .await;
    assert_eq!(r.json()["body"], "{\"counter\": 0}");
    let r = server
        .invoke("counter", r#"{"counter": 0, "operation": "multiply"}"#)
        .await;
    assert_eq!(
        r.json(),
        json!({"statusCode": 400, "body": "{\"error\": \"Invalid operation\"}"})
    );
    assert_eq!(r.header("x-amz-function-error"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_counter_and_module_kinds() {
    let server = Server::start();
    server
        .deploy(
            "counter-node",
            "nodejs20.x",
            "index.handler",
            &[("index.mjs", COUNTER_NODE)],
            json!({}),
        )
        .await;
    let r = server
        .invoke(
            "counter-node",
            r#"{"counter": 7, "operation": "decrement"}"#,
        )
        .await;
    assert_eq!(
        r.json(),
        json!({"statusCode": 200, "body": "{\"counter\":6}"})
    );
    // CommonJS with a callback handler.
    let cjs = "exports.handler = (event, context, callback) => { callback(null, {cjs: event.x, fn: context.functionName}); };";
    server
        .deploy(
            "cjs",
            "nodejs22.x",
            "index.handler",
            &[("index.js", cjs)],
            json!({}),
        )
        .await;
    let r = server.invoke("cjs", r#"{"x": 1}"#).await;
    assert_eq!(r.json(), json!({"cjs": 1, "fn": "cjs"}));
    // A thrown error in an async handler.
    let throws = "export const handler = async () => { throw new TypeError('bad input'); };";
    server
        .deploy(
            "throws",
            "nodejs20.x",
            "app.handler",
            &[("app.mjs", throws)],
            json!({}),
        )
        .await;
    let r = server.invoke("throws", "{}").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-amz-function-error"), Some("Unhandled"));
    assert_eq!(r.json()["errorType"], "TypeError");
    assert_eq!(r.json()["errorMessage"], "bad input");
}

const CONTEXT_PY: &str = r#"
import os

def handler(event, context):
    return {
        "aws_request_id": context.aws_request_id,
        "function_name": context.function_name,
        "function_version": context.function_version,
        "invoked_function_arn": context.invoked_function_arn,
        "memory_limit_in_mb": str(context.memory_limit_in_mb),
        "log_group_name": context.log_group_name,
        "log_stream_name": context.log_stream_name,
        "remaining": context.get_remaining_time_in_millis(),
        "client_context_custom": context.client_context.custom if context.client_context else None,
        "env": {k: v for k, v in os.environ.items()},
        "cwd": os.getcwd(),
        "event": event,
    }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_and_environment_are_lambdas_and_nothing_of_the_server() {
    let server = Server::start_with(&[], &[("RAMPART_TEST_SECRET", "do-not-leak")]);
    server
        .deploy(
            "ctx",
            "python3.12",
            "app.handler",
            &[("app.py", CONTEXT_PY)],
            json!({"Timeout": 7, "MemorySize": 256, "Environment": {"Variables": {"MY_SETTING": "on"}}}),
        )
        .await;
    let client_context = base64::engine::general_purpose::STANDARD
        .encode(r#"{"custom": {"k": "v"}, "env": {}, "client": {}}"#);
    let r = server
        .invoke_with(
            "ctx",
            r#"{"hello": "world"}"#,
            &[("X-Amz-Client-Context", &client_context)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["aws_request_id"], r.header("x-amzn-requestid").unwrap());
    assert_eq!(v["function_name"], "ctx");
    assert_eq!(v["function_version"], "$LATEST");
    assert_eq!(
        v["invoked_function_arn"],
        "arn:aws:lambda:us-east-1:000000000000:function:ctx"
    );
    assert_eq!(v["memory_limit_in_mb"], "256");
    assert_eq!(v["log_group_name"], "/aws/lambda/ctx");
    assert!(v["log_stream_name"].as_str().unwrap().contains("[$LATEST]"));
    let remaining = v["remaining"].as_i64().unwrap();
    assert!(
        remaining > 5000 && remaining <= 7000,
        "remaining {remaining}"
    );
    assert_eq!(v["client_context_custom"], json!({"k": "v"}));
    assert_eq!(v["event"], json!({"hello": "world"}));
    let env = &v["env"];
    for key in [
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_RUNTIME_API",
        "LAMBDA_TASK_ROOT",
        "_HANDLER",
        "AWS_REGION",
        "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "TZ",
    ] {
        assert!(env.get(key).is_some(), "{key} missing from {env}");
    }
    assert_eq!(env["MY_SETTING"], "on");
    assert_eq!(env["AWS_EXECUTION_ENV"], "AWS_Lambda_python3.12");
    assert!(
        env.get("RAMPART_TEST_SECRET").is_none(),
        "the server's environment leaked"
    );
    assert!(
        env.get("RAMPART_LOG").is_none(),
        "the server's environment leaked"
    );
    assert_eq!(v["cwd"], env["LAMBDA_TASK_ROOT"]);
    // Addressed with a qualifier, the invoked ARN carries it.
    let qualified = server.invoke("ctx:%24LATEST", "{}").await.json();
    assert_eq!(
        qualified["invoked_function_arn"],
        "arn:aws:lambda:us-east-1:000000000000:function:ctx:$LATEST"
    );
    // Each instance has its own temp dir.
    let tmp = env["TMPDIR"].as_str().unwrap();
    assert!(
        tmp.starts_with(server.data_dir.join("tmp").to_str().unwrap()),
        "{tmp}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_and_stored_logs_have_lambdas_lines() {
    let server = Server::start();
    let code = "def handler(event, context):\n    print('hello from the handler')\n    return 1\n";
    server
        .deploy(
            "logs",
            "python3.12",
            "app.handler",
            &[("app.py", code)],
            json!({}),
        )
        .await;
    let r = server
        .invoke_with("logs", "{}", &[("X-Amz-Log-Type", "Tail")])
        .await;
    let id = r.header("x-amzn-requestid").unwrap().to_owned();
    let tail = base64::engine::general_purpose::STANDARD
        .decode(r.header("x-amz-log-result").expect("log result"))
        .unwrap();
    let tail = String::from_utf8(tail).unwrap();
    assert!(
        tail.contains(&format!("START RequestId: {id} Version: $LATEST")),
        "{tail}"
    );
    assert!(tail.contains("hello from the handler"), "{tail}");
    assert!(tail.contains(&format!("END RequestId: {id}")), "{tail}");
    assert!(
        tail.contains(&format!("REPORT RequestId: {id}\tDuration: ")),
        "{tail}"
    );
    assert!(
        tail.contains("\tInit Duration: "),
        "cold start reports init: {tail}"
    );
    assert!(tail.contains("Max Memory Used: "), "{tail}");
    // The second invocation is warm: no Init Duration, and no tail unless asked.
    let r2 = server.invoke("logs", "{}").await;
    assert!(r2.header("x-amz-log-result").is_none());
    let id2 = r2.header("x-amzn-requestid").unwrap().to_owned();
    let mut lines: Vec<Value> = Vec::new();
    server
        .eventually("stored logs", std::time::Duration::from_secs(5), || {
            let server = &server;
            let id2 = id2.clone();
            async move {
                server.log_lines("logs").await.iter().any(|l| {
                    l["line"]
                        .as_str()
                        .unwrap()
                        .starts_with(&format!("REPORT RequestId: {id2}"))
                })
            }
        })
        .await;
    lines.extend(server.log_lines("logs").await);
    let handler_line = lines
        .iter()
        .find(|l| l["line"] == "hello from the handler")
        .expect("handler line stored");
    assert_eq!(handler_line["request_id"], id.as_str());
    let report2 = lines
        .iter()
        .find(|l| {
            l["line"]
                .as_str()
                .unwrap()
                .starts_with(&format!("REPORT RequestId: {id2}"))
        })
        .unwrap();
    assert!(!report2["line"].as_str().unwrap().contains("Init Duration"));
    // Filtered by request id.
    let (_, only) = server
        .get_json(&format!("/rampart/v1/functions/logs/logs?request_id={id2}"))
        .await;
    let only = only["lines"].as_array().unwrap();
    assert!(!only.is_empty() && only.iter().all(|l| l["request_id"] == id2.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_instances_are_reused_one_invocation_at_a_time() {
    let server = Server::start();
    let code = "import os, time\ncalls = 0\ndef handler(event, context):\n    global calls\n    calls += 1\n    time.sleep(event.get('sleep', 0))\n    return {'pid': os.getpid(), 'calls': calls}\n";
    server
        .deploy(
            "warm",
            "python3.12",
            "app.handler",
            &[("app.py", code)],
            json!({}),
        )
        .await;
    let a = server.invoke("warm", "{}").await.json();
    let b = server.invoke("warm", "{}").await.json();
    assert_eq!(a["pid"], b["pid"], "warm instance reused");
    assert_eq!(b["calls"], 2);
    // Two at once need two instances.
    let (x, y) = tokio::join!(
        server.invoke("warm", r#"{"sleep": 0.5}"#),
        server.invoke("warm", r#"{"sleep": 0.5}"#)
    );
    assert_ne!(x.json()["pid"], y.json()["pid"]);
    let (_, stats) = server.get_json("/rampart/v1/functions/warm/stats").await;
    assert_eq!(stats["instances"], 2, "{stats}");
    assert_eq!(stats["idle"], 2, "{stats}");
}

const STREAMING: &str = r#"
export const handler = awslambda.streamifyResponse(async (event, responseStream) => {
  responseStream.write("hello ");
  if (event.fail) {
    throw new Error("broke midway");
  }
  responseStream.write("world");
  responseStream.end();
});
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_responses_are_buffered_and_their_failures_reported() {
    let server = Server::start();
    server
        .deploy(
            "stream",
            "nodejs20.x",
            "index.handler",
            &[("index.mjs", STREAMING)],
            json!({}),
        )
        .await;
    let r = server.invoke("stream", "{}").await;
    assert_eq!(r.header("x-amz-function-error"), None, "{}", r.text());
    assert_eq!(r.text(), "hello world");
    let r = server.invoke("stream", r#"{"fail": true}"#).await;
    assert_eq!(
        r.header("x-amz-function-error"),
        Some("Unhandled"),
        "{}",
        r.text()
    );
    assert_eq!(r.json()["errorMessage"], "broke midway", "{}", r.text());
}

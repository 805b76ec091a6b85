//! HTTP API routes: API Gateway proxy events (1.0 and 2.0), `body` mode, response mapping,
//! gateway errors, deploys without a restart, and the counter routes through curl.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

use crate::harness::{Server, rampart_cli as cli};

/// Returns its event as the body of a 200 response, so tests can read what the route sent.
const ECHO_EVENT: &str = r#"
import json
def handler(event, context):
    return {"statusCode": 200, "headers": {"content-type": "application/json"}, "body": json.dumps(event)}
"#;

/// Answers with whatever response shape the request asks for (in its JSON body).
const SHAPED: &str = r#"
import json, time
def handler(event, context):
    body = event.get("body") if "requestContext" in event else json.dumps(event)
    ask = json.loads(body or "{}")
    if ask.get("sleep"):
        time.sleep(ask["sleep"])
    if ask.get("print"):
        print(ask["print"])
    if ask.get("raise"):
        raise RuntimeError("asked to fail")
    return ask["respond"]
"#;

async fn put_api(server: &Server, api: Value) -> reqwest::Response {
    let name = api["name"].as_str().unwrap().to_owned();
    server
        .http
        .put(server.url(&format!("/rampart/v1/apis/{name}")))
        .json(&api)
        .send()
        .await
        .unwrap()
}

async fn setup() -> Server {
    let server = Server::start();
    server
        .deploy(
            "echo",
            "python3.12",
            "app.handler",
            &[("app.py", ECHO_EVENT)],
            json!({}),
        )
        .await;
    server
        .deploy(
            "shaped",
            "python3.12",
            "app.handler",
            &[("app.py", SHAPED)],
            json!({"Timeout": 5}),
        )
        .await;
    server
}

fn route_url(server: &Server, path: &str) -> String {
    format!("{}{path}", server.http_endpoint)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_format_2_event_has_every_field() {
    let server = setup().await;
    let r = put_api(
        &server,
        json!({"name": "v2", "routes": [{"route": "POST /pets/{id}/{rest+}", "function": "echo"}]}),
    )
    .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = server
        .http
        .post(route_url(
            &server,
            "/pets/42/a/b%20c?x=1&x=2&y=hello%20world",
        ))
        .header("cookie", "c1=v1; c2=v2")
        .header("x-multi", "a")
        .header("x-multi", "b")
        .header("user-agent", "rampart-test")
        .header("content-type", "application/json")
        .body(r#"{"k":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("apigw-requestid"));
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["version"], "2.0");
    assert_eq!(e["routeKey"], "POST /pets/{id}/{rest+}");
    assert_eq!(e["rawPath"], "/pets/42/a/b%20c");
    assert_eq!(e["rawQueryString"], "x=1&x=2&y=hello%20world");
    assert_eq!(e["cookies"], json!(["c1=v1", "c2=v2"]));
    assert!(
        e["headers"].get("cookie").is_none(),
        "cookies leave the headers"
    );
    assert_eq!(e["headers"]["x-multi"], "a,b");
    assert_eq!(e["headers"]["user-agent"], "rampart-test");
    assert_eq!(
        e["queryStringParameters"],
        json!({"x": "1,2", "y": "hello world"})
    );
    assert_eq!(e["pathParameters"], json!({"id": "42", "rest": "a/b c"}));
    assert!(e.get("stageVariables").is_none());
    assert_eq!(e["body"], r#"{"k":1}"#);
    assert_eq!(e["isBase64Encoded"], false);
    let ctx = &e["requestContext"];
    assert_eq!(ctx["apiId"], "v2");
    assert_eq!(ctx["stage"], "$default");
    assert_eq!(ctx["routeKey"], "POST /pets/{id}/{rest+}");
    assert_eq!(ctx["http"]["method"], "POST");
    assert_eq!(ctx["http"]["path"], "/pets/42/a/b c");
    assert_eq!(ctx["http"]["protocol"], "HTTP/1.1");
    assert_eq!(ctx["http"]["sourceIp"], "127.0.0.1");
    assert_eq!(ctx["http"]["userAgent"], "rampart-test");
    assert_eq!(ctx["requestId"].as_str().unwrap().len(), 36);
    let time = ctx["time"].as_str().unwrap();
    assert!(time.ends_with(" +0000") && time.len() == 26, "{time}");
    assert!(ctx["timeEpoch"].as_i64().unwrap() > 1_700_000_000_000);
    // No query, no body, no cookies: those keys are absent, not null.
    let e: Value = server
        .http
        .post(route_url(&server, "/pets/1/x"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for key in ["queryStringParameters", "cookies", "body"] {
        assert!(e.get(key).is_none(), "{key} should be omitted: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_format_1_event_has_every_field() {
    let server = setup().await;
    let r = put_api(
        &server,
        json!({"name": "rest", "stage": "prod", "payload_format": "1.0", "stage_variables": {"env": "test"},
               "routes": [{"route": "ANY /items/{id}", "function": "echo"}, {"route": "GET /plain", "function": "echo"}]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let r = server
        .http
        .put(route_url(&server, "/prod/items/7?a=1&a=2"))
        .header("x-multi", "a")
        .header("x-multi", "b")
        .body("hi")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-amzn-requestid"));
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["resource"], "/items/{id}");
    assert_eq!(e["path"], "/items/7");
    assert_eq!(e["httpMethod"], "PUT");
    // Names as HTTP/1.1 clients spell them (hyper does not keep the wire casing).
    assert_eq!(e["headers"]["X-Multi"], "b", "the last value");
    assert_eq!(e["multiValueHeaders"]["X-Multi"], json!(["a", "b"]));
    assert_eq!(e["headers"]["X-Forwarded-Proto"], "http");
    assert!(e["headers"]["X-Amzn-Trace-Id"].is_string());
    assert_eq!(e["queryStringParameters"], json!({"a": "2"}));
    assert_eq!(
        e["multiValueQueryStringParameters"],
        json!({"a": ["1", "2"]})
    );
    assert_eq!(e["pathParameters"], json!({"id": "7"}));
    assert_eq!(e["stageVariables"], json!({"env": "test"}));
    assert_eq!(e["body"], "hi");
    assert_eq!(e["isBase64Encoded"], false);
    let ctx = &e["requestContext"];
    assert_eq!(ctx["path"], "/prod/items/7");
    assert_eq!(ctx["stage"], "prod");
    assert_eq!(ctx["resourcePath"], "/items/{id}");
    assert_eq!(ctx["httpMethod"], "PUT");
    assert_eq!(ctx["identity"]["sourceIp"], "127.0.0.1");
    assert!(ctx["identity"]["caller"].is_null());
    assert!(ctx["requestTime"].as_str().unwrap().ends_with(" +0000"));
    // Nulls where there is nothing.
    let e: Value = server
        .http
        .get(route_url(&server, "/prod/plain"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for key in [
        "queryStringParameters",
        "multiValueQueryStringParameters",
        "pathParameters",
        "body",
    ] {
        assert!(e[key].is_null(), "{key} should be null: {e}");
    }
    // Without the stage prefix there is no such route.
    let r = server
        .http
        .get(route_url(&server, "/plain"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

async fn shaped(server: &Server, path: &str, ask: Value) -> reqwest::Response {
    server
        .http
        .post(route_url(server, path))
        .json(&ask)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_and_errors_map_as_api_gateway_does() {
    let server = setup().await;
    let r = put_api(
        &server,
        json!({"name": "shapes", "timeout_ms": 1000, "routes": [
            {"route": "POST /v2", "function": "shaped"},
            {"route": "POST /v1", "function": "shaped", "payload_format": "1.0"},
            {"route": "POST /body", "function": "shaped", "payload_format": "body"},
        ]}),
    )
    .await;
    assert_eq!(r.status(), 200);

    // 2.0: structured response with headers, cookies and a base64 body.
    let png = [0x89u8, b'P', b'N', b'G', 0, 255];
    let r = shaped(
        &server,
        "/v2",
        json!({"respond": {
        "statusCode": 201, "headers": {"x-a": "1", "x-n": 5},
        "cookies": ["a=1; Secure", "b=2"], "body": BASE64.encode(png), "isBase64Encoded": true}}),
    )
    .await;
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["x-a"], "1");
    assert_eq!(r.headers()["x-n"], "5");
    let cookies: Vec<_> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(cookies, ["a=1; Secure", "b=2"]);
    assert_eq!(r.bytes().await.unwrap().as_ref(), png);
    // 2.0 inference: JSON without statusCode is a 200 with the JSON as body.
    let r = shaped(&server, "/v2", json!({"respond": {"hello": "world"}})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"hello": "world"}));
    // Function error: 500 for 2.0, 502 for 1.0.
    let r = shaped(&server, "/v2", json!({"raise": true})).await;
    assert_eq!(r.status(), 500);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"message": "Internal Server Error"})
    );
    let r = shaped(&server, "/v1", json!({"raise": true})).await;
    assert_eq!(r.status(), 502);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"message": "Internal server error"})
    );
    // 1.0 is strict: an extra key is a malformed response.
    let r = shaped(
        &server,
        "/v1",
        json!({"respond": {"statusCode": 200, "body": "x", "extra": 1}}),
    )
    .await;
    assert_eq!(r.status(), 502);
    let r = shaped(
        &server,
        "/v1",
        json!({"respond": {"statusCode": 200, "body": 5}}),
    )
    .await;
    assert_eq!(r.status(), 502, "a non-string body is malformed");
    // 1.0 multiValueHeaders.
    let r = shaped(
        &server,
        "/v1",
        json!({"respond": {"statusCode": 202, "headers": {"x-one": "1"},
        "multiValueHeaders": {"set-cookie": ["a=1", "b=2"]}, "body": "done"}}),
    )
    .await;
    assert_eq!(r.status(), 202);
    assert_eq!(r.headers()["x-one"], "1");
    assert_eq!(r.headers().get_all("set-cookie").iter().count(), 2);
    assert_eq!(r.text().await.unwrap(), "done");
    // Integration timeout: 503 for 2.0 (504 for 1.0); the gateway answers, the function runs on.
    let started = tokio::time::Instant::now();
    let r = shaped(
        &server,
        "/v2",
        json!({"sleep": 2, "print": "ran-to-the-end", "respond": 1}),
    )
    .await;
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"message": "Service Unavailable"})
    );
    assert!(
        started.elapsed() < Duration::from_millis(1900),
        "{:?}",
        started.elapsed()
    );
    let r = shaped(&server, "/v1", json!({"sleep": 2, "respond": 1})).await;
    assert_eq!(r.status(), 504);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"message": "Endpoint request timed out"})
    );
    // The invocation the gateway stopped waiting for ran to its end.
    server
        .eventually(
            "the timed-out invocation to finish",
            Duration::from_secs(10),
            || async {
                let lines = server.log_lines("shaped").await;
                lines.iter().any(|l| {
                    l["line"]
                        .as_str()
                        .is_some_and(|m| m.contains("ran-to-the-end"))
                })
            },
        )
        .await;
    // body mode: the JSON body is the event.
    let r = shaped(
        &server,
        "/body",
        json!({"respond": {"statusCode": 418, "body": "teapot"}}),
    )
    .await;
    assert_eq!(r.status(), 418);
    assert_eq!(r.text().await.unwrap(), "teapot");
    let r = server
        .http
        .post(route_url(&server, "/body"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Unknown route.
    let r = server
        .http
        .get(route_url(&server, "/nowhere"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"message": "Not Found"})
    );
    // Over 10 MB.
    let r = server
        .http
        .post(route_url(&server, "/v2"))
        .body(vec![b'x'; 10 * 1024 * 1024 + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_bodies_round_trip_as_base64() {
    let server = setup().await;
    let echo_body = r#"
def handler(event, context):
    return {"statusCode": 200, "body": event["body"], "isBase64Encoded": event["isBase64Encoded"],
            "headers": {"content-type": "application/octet-stream"}}
"#;
    server
        .deploy(
            "bin",
            "python3.12",
            "app.handler",
            &[("app.py", echo_body)],
            json!({}),
        )
        .await;
    assert_eq!(
        put_api(
            &server,
            json!({"name": "bin", "routes": [{"route": "POST /bin", "function": "bin"}]})
        )
        .await
        .status(),
        200
    );
    let bytes: Vec<u8> = (0..=255u8).collect();
    let r = server
        .http
        .post(route_url(&server, "/bin"))
        .header("content-type", "application/octet-stream")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().to_vec(), bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apis_deploy_without_restart_and_conflicts_are_refused() {
    let server = setup().await;
    assert_eq!(
        put_api(
            &server,
            json!({"name": "a", "routes": [{"route": "GET /x/{id}", "function": "echo"}]})
        )
        .await
        .status(),
        200
    );
    let r = put_api(
        &server,
        json!({"name": "b", "routes": [{"route": "GET /x/{name}", "function": "echo"}]}),
    )
    .await;
    assert_eq!(r.status(), 409);
    let v: Value = r.json().await.unwrap();
    let message = v["message"].as_str().unwrap();
    assert!(
        message.contains("'GET /x/{name}' of API 'b'")
            && message.contains("'GET /x/{id}' of API 'a'"),
        "{message}"
    );
    let r = put_api(
        &server,
        json!({"name": "c", "routes": [{"route": "GET /y", "function": "missing"}]}),
    )
    .await;
    assert_eq!(r.status(), 400);
    // Replacing an API's routes takes effect at once.
    assert_eq!(
        server
            .http
            .get(route_url(&server, "/x/1"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        put_api(
            &server,
            json!({"name": "a", "routes": [{"route": "GET /z", "function": "echo"}]})
        )
        .await
        .status(),
        200
    );
    assert_eq!(
        server
            .http
            .get(route_url(&server, "/x/1"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        server
            .http
            .get(route_url(&server, "/z"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let (_, list) = server.get_json("/rampart/v1/apis").await;
    assert_eq!(list["apis"].as_array().unwrap().len(), 1);
    let r = server
        .http
        .delete(server.url("/rampart/v1/apis/a"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        server
            .http
            .get(route_url(&server, "/z"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_routes_answer_curl_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let project = format!("{}/../../examples/counter", env!("CARGO_MANIFEST_DIR"));
    let mut server = Server::start_in(dir.path(), &[], &[]);
    // Only the Python counter and the routes: a manifest of our own around the example's code.
    let manifest = format!(
        "[[function]]\nname = \"counter\"\nruntime = \"python3.12\"\nhandler = \"lambda_function.lambda_handler\"\ncode = \"{project}/python\"\n\n{}",
        std::fs::read_to_string(format!("{project}/rampart.toml"))
            .unwrap()
            .split("[[api]]")
            .nth(1)
            .map(|a| format!("[[api]]{a}"))
            .unwrap()
    );
    let proj = tempfile::tempdir().unwrap();
    std::fs::write(proj.path().join("rampart.toml"), manifest).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args([
            "deploy",
            proj.path().to_str().unwrap(),
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
    let run = |args: Vec<String>| {
        let out = std::process::Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let post = |server: &Server| {
        run(vec![
            "-d".into(),
            r#"{"counter":1,"operation":"increment"}"#.into(),
            route_url(server, "/counter"),
        ])
    };
    assert_eq!(post(&server), "{\"counter\": 2}\n200");
    let get = run(vec![route_url(&server, "/counter/decrement?counter=5")]);
    assert_eq!(get, "{\"counter\": 4}\n200");
    let bad = run(vec![route_url(&server, "/counter/jump?counter=5")]);
    assert_eq!(bad, "{\"error\": \"Invalid operation\"}\n400");
    // Routes are stored: after kill -9 and a restart they are served again.
    server.kill9();
    let server = Server::start_in(dir.path(), &[], &[]);
    assert_eq!(post(&server), "{\"counter\": 2}\n200");
}

/// Records each invocation in `<data dir>/witness`, then answers with a CORS header of its own.
const WITNESS: &str = r#"
import os
def handler(event, context):
    with open(os.environ["TMPDIR"] + "/../../witness", "a") as f:
        f.write(event.get("rawPath", "?") + "\n")
    return {"statusCode": 200, "headers": {"access-control-allow-origin": "*", "x-total": "3"}, "body": "ok"}
"#;

async fn witness_server() -> Server {
    let server = Server::start();
    server
        .deploy(
            "witness",
            "python3.12",
            "app.handler",
            &[("app.py", WITNESS)],
            json!({}),
        )
        .await;
    let r = put_api(
        &server,
        json!({"name": "web", "routes": [{"route": "ANY /{proxy+}", "function": "witness"}],
               "cors": {"allow_origins": ["https://app.example"], "allow_methods": ["GET", "POST"],
                        "allow_headers": ["content-type"], "expose_headers": ["x-total"],
                        "max_age": 600, "allow_credentials": true}}),
    )
    .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    server
}

fn witnessed(server: &Server) -> String {
    std::fs::read_to_string(server.data_dir.join("witness")).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_never_reach_a_function() {
    let server = witness_server().await;
    let get = |path: String| {
        let http = server.http.clone();
        let url = route_url(&server, &path);
        async move { http.get(url).send().await.unwrap() }
    };
    for path in [
        "/a%zz".to_string(),
        "/a%2".to_string(),
        "/a?q=%G1".to_string(),
        "/a%ff%fe".to_string(),
        format!("/{}", "a".repeat(9000)),
    ] {
        let r = get(path.clone()).await;
        assert_eq!(r.status(), 400, "{path}");
        assert_eq!(
            r.json::<Value>().await.unwrap(),
            json!({"message": "Bad Request"})
        );
    }
    let r = server
        .http
        .get(route_url(&server, "/a"))
        .header("x-big", "v".repeat(11 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        witnessed(&server),
        "",
        "no bad request reached the function"
    );
    // A good one does.
    assert_eq!(get("/a%20b".into()).await.status(), 200);
    assert_eq!(witnessed(&server), "/a%20b\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflights_are_answered_by_the_gateway() {
    let server = witness_server().await;
    let r = server
        .http
        .request(reqwest::Method::OPTIONS, route_url(&server, "/items"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let h = r.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example");
    assert_eq!(h["access-control-allow-methods"], "GET,POST");
    assert_eq!(h["access-control-allow-headers"], "content-type");
    assert_eq!(h["access-control-max-age"], "600");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(
        witnessed(&server),
        "",
        "a preflight does not invoke the function"
    );
    // Actual requests get the API's headers, not the function's.
    let r = server
        .http
        .post(route_url(&server, "/items"))
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(r.headers()["access-control-expose-headers"], "x-total");
    assert_eq!(r.headers()["x-total"], "3");
    // Another origin gets no CORS headers at all.
    let r = server
        .http
        .post(route_url(&server, "/items"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let r = server
        .http
        .request(reqwest::Method::OPTIONS, route_url(&server, "/items"))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_and_usage_plans_limit_routes() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path(), &[], &[]);
    server
        .deploy(
            "echo",
            "python3.12",
            "app.handler",
            &[("app.py", ECHO_EVENT)],
            json!({}),
        )
        .await;
    let r = put_api(
        &server,
        json!({"name": "secure", "routes": [
        {"route": "GET /secure", "function": "echo", "api_key_required": true},
        {"route": "GET /open", "function": "echo"}]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let ep = server.endpoint.clone();
    let (ok, _, err) = cli(
        &ep,
        &[
            "plans",
            "set",
            "basic",
            "--rate",
            "1",
            "--burst",
            "2",
            "--quota-day",
            "4",
        ],
    );
    assert!(ok, "{err}");
    let (ok, _, err) = cli(&ep, &["keys", "create", "app", "--plan", "nope"]);
    assert!(!ok && err.contains("does not exist"), "{err}");
    let (ok, app_key, err) = cli(&ep, &["keys", "create", "app", "--plan", "basic"]);
    assert!(ok, "{err}");
    let app_key = app_key.trim().to_owned();
    assert!(app_key.starts_with("rk_"), "{app_key}");
    let (_, free_key, _) = cli(&ep, &["keys", "create", "free"]);
    let free_key = free_key.trim().to_owned();
    let get = |server: &Server, path: &str, key: Option<&str>| {
        let mut req = server.http.get(route_url(server, path));
        if let Some(k) = key {
            req = req.header("x-api-key", k);
        }
        req.send()
    };
    assert_eq!(get(&server, "/open", None).await.unwrap().status(), 200);
    let r = get(&server, "/secure", None).await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"message": "Forbidden"})
    );
    assert_eq!(
        get(&server, "/secure", Some("rk_wrong"))
            .await
            .unwrap()
            .status(),
        403
    );
    for _ in 0..5 {
        assert_eq!(
            get(&server, "/secure", Some(&free_key))
                .await
                .unwrap()
                .status(),
            200,
            "no plan, no limit"
        );
    }
    // Rate 1/s with a burst of 2.
    assert_eq!(
        get(&server, "/secure", Some(&app_key))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        get(&server, "/secure", Some(&app_key))
            .await
            .unwrap()
            .status(),
        200
    );
    let r = get(&server, "/secure", Some(&app_key)).await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"message": "Too Many Requests"})
    );
    // The daily quota of 4: two more after the bucket refills, then "Limit Exceeded".
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(
            get(&server, "/secure", Some(&app_key))
                .await
                .unwrap()
                .status(),
            200
        );
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = get(&server, "/secure", Some(&app_key)).await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"message": "Limit Exceeded"})
    );
    let (ok, list, _) = cli(&ep, &["keys", "list"]);
    assert!(
        ok && list.contains("app") && list.contains("basic"),
        "{list}"
    );
    assert!(!list.contains(&app_key[3..]), "secrets are never listed");
    let app_line = list.lines().find(|l| l.starts_with("app ")).unwrap();
    assert!(
        app_line.split_whitespace().nth(2) == Some("4"),
        "{app_line}"
    );
    // Counts survive kill -9 and a restart.
    server.kill9();
    let server = Server::start_in(dir.path(), &[], &[]);
    let r = get(&server, "/secure", Some(&app_key)).await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"message": "Limit Exceeded"})
    );
    assert_eq!(
        get(&server, "/secure", Some(&free_key))
            .await
            .unwrap()
            .status(),
        200,
        "keys survive too"
    );
    // A deleted key is refused.
    let (ok, _, _) = cli(&server.endpoint, &["keys", "delete", "free"]);
    assert!(ok);
    assert_eq!(
        get(&server, "/secure", Some(&free_key))
            .await
            .unwrap()
            .status(),
        403
    );
}

/// Whole events, as snapshots (ids, times, ports redacted): any change to their shape shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_snapshots() {
    let server = setup().await;
    let r = put_api(
        &server,
        json!({"name": "snap", "stage_variables": {"color": "blue"}, "routes": [
            {"route": "POST /v2/{id}", "function": "echo"},
            {"route": "POST /v1/{proxy+}", "function": "echo", "payload_format": "1.0"}]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let send = |path: &'static str| {
        server
            .http
            .post(route_url(&server, path))
            .header("user-agent", "snapshot")
            .header("cookie", "a=1")
            .header("content-type", "text/plain")
            .body("hello")
            .send()
    };
    let redact = |v: Value| {
        let mut v = v;
        for key in [
            "requestId",
            "extendedRequestId",
            "time",
            "timeEpoch",
            "requestTime",
            "requestTimeEpoch",
            "domainName",
            "domainPrefix",
        ] {
            if v["requestContext"].get(key).is_some() {
                v["requestContext"][key] = json!(format!("[{key}]"));
            }
        }
        for map in ["headers", "multiValueHeaders"] {
            let Some(headers) = v.get_mut(map).and_then(Value::as_object_mut) else {
                continue;
            };
            for (name, value) in headers.iter_mut() {
                let lower = name.to_ascii_lowercase();
                if ["host", "x-forwarded-port", "x-amzn-trace-id"].contains(&lower.as_str()) {
                    *value = json!(format!("[{lower}]"));
                }
            }
        }
        v
    };
    let v2: Value = send("/v2/7?a=1&a=2").await.unwrap().json().await.unwrap();
    insta::assert_json_snapshot!("event_v2", redact(v2));
    let v1: Value = send("/v1/x/y?a=1&a=2").await.unwrap().json().await.unwrap();
    insta::assert_json_snapshot!("event_v1", redact(v1));
}

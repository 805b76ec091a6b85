//! Tracing: trace headers in (X-Ray or W3C), handed to the function, spans out over OTLP/HTTP
//! to a real receiver that decodes the protobuf, and trace continuity across the async queue.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind};
use prost::Message;
use serde_json::json;

use crate::harness::Server;

/// An OTLP/HTTP receiver: decodes every export and keeps the spans.
async fn receiver() -> (String, Arc<Mutex<Vec<Span>>>) {
    let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
    let kept = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: Bytes| {
            let kept = kept.clone();
            async move {
                assert_eq!(headers["content-type"], "application/x-protobuf");
                let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                let resource = request.resource_spans[0].resource.as_ref().unwrap();
                assert!(resource.attributes.iter().any(|a| a.key == "service.name"));
                for rs in request.resource_spans {
                    for ss in rs.scope_spans {
                        kept.lock().unwrap().extend(ss.spans);
                    }
                }
                "{}"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), spans)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The spans of one trace, once `names` are all there.
async fn spans_of(
    server: &Server,
    spans: &Arc<Mutex<Vec<Span>>>,
    trace: &str,
    names: &[&str],
) -> Vec<Span> {
    let found = || -> Vec<Span> {
        spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| hex(&s.trace_id) == trace)
            .cloned()
            .collect()
    };
    server
        .eventually(
            &format!("spans {names:?} of {trace}"),
            Duration::from_secs(10),
            || {
                let got = found();
                async move { names.iter().all(|n| got.iter().any(|s| s.name == *n)) }
            },
        )
        .await;
    found()
}

fn named<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    spans.iter().find(|s| s.name == name).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_flow_from_callers_to_functions_and_out_over_otlp() {
    let (endpoint, spans) = receiver().await;
    let server = Server::start_with(
        &["--otlp-endpoint", &endpoint, "--trace-sample-rate", "1"],
        &[],
    );
    let code =
        "import os\ndef handler(event, context):\n    return os.environ.get('_X_AMZN_TRACE_ID')\n";
    server
        .deploy(
            "traced",
            "python3.12",
            "app.handler",
            &[("app.py", code)],
            json!({}),
        )
        .await;

    // X-Ray header in: the function sees the same root, with the invocation span as parent.
    let r = server
        .invoke_with(
            "traced",
            "{}",
            &[(
                "x-amzn-trace-id",
                "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
            )],
        )
        .await;
    let seen: String = r.json().as_str().unwrap().to_owned();
    assert!(
        seen.starts_with("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=")
            && seen.ends_with(";Sampled=1"),
        "{seen}"
    );
    let trace = "5759e988bd862e3fe1be46a994272793";
    let got = spans_of(
        &server,
        &spans,
        trace,
        &["Invoke traced", "Initialization", "Invocation"],
    )
    .await;
    let root = named(&got, "Invoke traced");
    assert_eq!(hex(&root.parent_span_id), "53995c3f42cd8ad8");
    assert_eq!(root.kind, SpanKind::Server as i32);
    let invocation = named(&got, "Invocation");
    assert_eq!(invocation.parent_span_id, root.span_id);
    assert!(
        seen.contains(&format!("Parent={}", hex(&invocation.span_id))),
        "{seen}"
    );
    let init = named(&got, "Initialization");
    assert_eq!(init.parent_span_id, root.span_id);
    assert!(init.end_time_unix_nano <= invocation.start_time_unix_nano + 1_000_000);
    assert!(root.start_time_unix_nano <= init.start_time_unix_nano);

    // W3C traceparent in: mapped onto the X-Ray form for the function.
    let r = server
        .invoke_with(
            "traced",
            "{}",
            &[(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            )],
        )
        .await;
    let seen: String = r.json().as_str().unwrap().to_owned();
    assert!(
        seen.starts_with("Root=1-0af76519-16cd43dd8448eb211c80319c;Parent="),
        "{seen}"
    );
    let got = spans_of(
        &server,
        &spans,
        "0af7651916cd43dd8448eb211c80319c",
        &["Invoke traced", "Invocation"],
    )
    .await;
    assert_eq!(
        hex(&named(&got, "Invoke traced").parent_span_id),
        "b7ad6b7169203331"
    );
    assert!(
        got.iter().all(|s| s.name != "Initialization"),
        "a warm call has no init span"
    );

    // No header: a new sampled trace in X-Ray form.
    let r = server.invoke("traced", "{}").await;
    let seen: String = r.json().as_str().unwrap().to_owned();
    let root = seen.strip_prefix("Root=1-").unwrap();
    assert_eq!(root.split(';').next().unwrap().len(), 8 + 1 + 24, "{seen}");
    assert!(seen.ends_with(";Sampled=1"), "{seen}");

    // Not sampled by the caller: handed on, not exported.
    let r = server
        .invoke_with(
            "traced",
            "{}",
            &[(
                "x-amzn-trace-id",
                "Root=1-5759e988-000000000000000000000001;Sampled=0",
            )],
        )
        .await;
    assert!(r.json().as_str().unwrap().ends_with(";Sampled=0"));

    // Across the queue: enqueue, wait and delivery share the caller's trace.
    let r = server
        .invoke_with(
            "traced",
            "{}",
            &[
                ("x-amz-invocation-type", "Event"),
                (
                    "x-amzn-trace-id",
                    "Root=1-5759e988-aaaaaaaaaaaaaaaaaaaaaaaa;Sampled=1",
                ),
            ],
        )
        .await;
    assert_eq!(r.status, 202);
    let got = spans_of(
        &server,
        &spans,
        "5759e988aaaaaaaaaaaaaaaaaaaaaaaa",
        &[
            "Enqueue traced",
            "QueueWait",
            "Deliver traced",
            "Invocation",
        ],
    )
    .await;
    let enqueue = named(&got, "Enqueue traced");
    assert_eq!(enqueue.kind, SpanKind::Producer as i32);
    let deliver = named(&got, "Deliver traced");
    assert_eq!(deliver.kind, SpanKind::Consumer as i32);
    assert_eq!(deliver.parent_span_id, enqueue.span_id);
    assert_eq!(named(&got, "QueueWait").parent_span_id, enqueue.span_id);
    assert_eq!(named(&got, "Invocation").parent_span_id, deliver.span_id);

    assert!(
        !spans
            .lock()
            .unwrap()
            .iter()
            .any(|s| hex(&s.trace_id) == "5759e988000000000000000000000001"),
        "unsampled traces are not exported"
    );
}

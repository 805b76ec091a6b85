//! The HTTP listener: requests matched to API routes become API Gateway proxy events
//! (payload format 1.0 or 2.0) or plain JSON events (`body`), and function results become HTTP
//! responses, with API Gateway's own errors (`shared/spec/api-gateway-events.md`).

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use rampart_model::{CorsConfig, PayloadFormat, function_arn};
use rampart_runtime::{InvokeError, InvokeRequest};
use serde_json::{Map, Value, json};

use crate::Gateway;
use crate::keys::Refusal;
use crate::proxy_event::{HttpRequest, event_v1, event_v2};
use crate::routes::Matched;
use crate::spans::Traced;
use rampart_telemetry::trace::SpanKind;

/// API Gateway's request body limit.
const MAX_BODY_BYTES: usize = 10 * 1024 * 1024;
/// Default integration timeouts: REST (1.0) 29 s, HTTP APIs 30 s.
const REST_TIMEOUT: Duration = Duration::from_secs(29);
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// A gateway-generated answer: `{"message": ...}` JSON, as API Gateway sends.
fn gateway_error(status: StatusCode, message: &str) -> Response {
    let mut response = (status, axum::Json(json!({ "message": message }))).into_response();
    if let Ok(id) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        response.headers_mut().insert("x-amzn-requestid", id);
    }
    response
}

/// Longest request target (path and query) accepted.
const MAX_TARGET_BYTES: usize = 8192;
/// Most header bytes (names and values) accepted, as API Gateway's 10 KB.
const MAX_HEADER_BYTES: usize = 10 * 1024;

/// Refuses what API Gateway refuses before routing: over-long targets or headers, and
/// malformed percent-encoding.
fn check_request(parts: &axum::http::request::Parts) -> Result<(), &'static str> {
    let target = parts.uri.path_and_query().map_or("", |p| p.as_str());
    if target.len() > MAX_TARGET_BYTES {
        return Err("the request URI is too long");
    }
    let header_bytes: usize = parts
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return Err("the request headers are too large");
    }
    let well_encoded = |s: &str| {
        let bytes = s.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                let hex = bytes.get(i + 1..i + 3);
                if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                    return false;
                }
                i += 3;
            } else {
                i += 1;
            }
        }
        true
    };
    let path = parts.uri.path();
    if !well_encoded(path)
        || !well_encoded(parts.uri.query().unwrap_or(""))
        || percent_encoding::percent_decode_str(path)
            .decode_utf8()
            .is_err()
    {
        return Err("malformed percent-encoding");
    }
    Ok(())
}

/// Every request of the HTTP listener.
pub(crate) async fn serve(
    State(gateway): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    if let Err(why) = check_request(&parts) {
        tracing::debug!(%why, "refused an HTTP request");
        return gateway_error(StatusCode::BAD_REQUEST, "Bad Request");
    }
    let table = gateway.routes();
    let origin = parts
        .headers
        .get("origin")
        .and_then(|o| o.to_str().ok())
        .map(str::to_owned);
    let preflight_method = parts
        .headers
        .get("access-control-request-method")
        .and_then(|m| m.to_str().ok());
    if parts.method == axum::http::Method::OPTIONS
        && let (Some(origin), Some(method)) = (&origin, preflight_method)
        && let Some(matched) = table.find(method, parts.uri.path())
        && let Some(cors) = &matched.route.api.cors
    {
        // Answered by the gateway itself: the function is not invoked.
        return preflight(cors, origin, &parts.headers);
    }
    let Some(matched) = table.find(parts.method.as_str(), parts.uri.path()) else {
        // REST APIs (1.0) answer an unknown resource with 403, HTTP APIs with 404.
        return match table.unmatched_format(parts.uri.path()) {
            PayloadFormat::V1 => {
                gateway_error(StatusCode::FORBIDDEN, "Missing Authentication Token")
            }
            _ => gateway_error(StatusCode::NOT_FOUND, "Not Found"),
        };
    };
    let started = tokio::time::Instant::now();
    let mut response = route_request(&gateway, &matched, &parts, body, peer).await;
    if let (Some(cors), Some(origin)) = (&matched.route.api.cors, &origin) {
        apply_cors(&mut response, cors, origin);
    }
    gateway
        .telemetry
        .api()
        .route(&matched.route.api.name, &matched.route.spec.route)
        .answered(
            jiff::Timestamp::now().as_second(),
            response.status().as_u16(),
            started.elapsed().as_secs_f64() * 1000.0,
        );
    response
}

/// A preflight answer from the API's CORS configuration.
fn preflight(cors: &CorsConfig, origin: &str, request: &HeaderMap) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let Some(allowed) = cors.allowed_origin(origin) else {
        return response;
    };
    let headers = response.headers_mut();
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    put("access-control-allow-origin", allowed);
    put("access-control-allow-methods", cors.allow_methods.join(","));
    let allow_headers = if cors.allow_headers.iter().any(|h| h == "*") {
        request
            .get("access-control-request-headers")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("*")
            .to_owned()
    } else {
        cors.allow_headers.join(",")
    };
    if !allow_headers.is_empty() {
        put("access-control-allow-headers", allow_headers);
    }
    if let Some(age) = cors.max_age {
        put("access-control-max-age", age.to_string());
    }
    if cors.allow_credentials {
        put("access-control-allow-credentials", "true".into());
    }
    put("vary", "Origin".into());
    response
}

/// The API's CORS headers on a response, replacing any the function set (as HTTP APIs do).
fn apply_cors(response: &mut Response, cors: &CorsConfig, origin: &str) {
    let headers = response.headers_mut();
    let theirs: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("access-control-"))
        .cloned()
        .collect();
    for name in theirs {
        headers.remove(name);
    }
    let Some(allowed) = cors.allowed_origin(origin) else {
        return;
    };
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    put("access-control-allow-origin", allowed);
    if !cors.expose_headers.is_empty() {
        put(
            "access-control-expose-headers",
            cors.expose_headers.join(","),
        );
    }
    if cors.allow_credentials {
        put("access-control-allow-credentials", "true".into());
    }
    put("vary", "Origin".into());
}

/// Invokes the matched route's function and maps its result.
async fn route_request(
    gateway: &Gateway,
    matched: &Matched<'_>,
    parts: &axum::http::request::Parts,
    body: Body,
    peer: std::net::SocketAddr,
) -> Response {
    let body =
        match http_body_util::BodyExt::collect(http_body_util::Limited::new(body, MAX_BODY_BYTES))
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(e)
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                return gateway_error(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large");
            }
            Err(_) => return gateway_error(StatusCode::BAD_REQUEST, "Bad Request"),
        };
    let raw_path = parts.uri.path();
    let format = matched.route.format;
    if matched.route.spec.api_key_required {
        let presented = parts.headers.get("x-api-key").and_then(|k| k.to_str().ok());
        match gateway
            .keys
            .admit(gateway.registry.store(), presented)
            .await
        {
            Ok(()) => {}
            Err(Refusal::Forbidden) => return gateway_error(StatusCode::FORBIDDEN, "Forbidden"),
            Err(Refusal::QuotaExceeded) => {
                return gateway_error(StatusCode::TOO_MANY_REQUESTS, "Limit Exceeded");
            }
            Err(Refusal::Throttled(wait)) => {
                let mut response =
                    gateway_error(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
                let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
                response
                    .headers_mut()
                    .insert("retry-after", HeaderValue::from(secs));
                return response;
            }
        }
    }
    // A route names a function, or `function:qualifier` (a version or an alias).
    let target = match crate::invoke::resolve(gateway, &matched.route.spec.function, None).await {
        Ok(target) => target,
        Err(e) => {
            tracing::warn!(function = %matched.route.spec.function, route = %matched.route.spec.route, error = %e.message(), "a route's function cannot be invoked");
            return function_failed(format);
        }
    };
    let function = target.name.clone();
    let request_id = uuid::Uuid::new_v4().to_string();
    let traced = Traced::begin(&parts.headers, gateway.telemetry.tracer());
    let trace_id = traced.function_header();
    let request = HttpRequest {
        trace_id: &trace_id,
        method: parts.method.as_str(),
        raw_path,
        raw_query: parts.uri.query().unwrap_or(""),
        headers: &parts.headers,
        body: &body,
        source_ip: peer.ip().to_string(),
        request_id: &request_id,
    };
    let event = match format {
        PayloadFormat::V2 => event_v2(matched, &request),
        PayloadFormat::V1 => event_v1(matched, &request),
        PayloadFormat::Body => {
            if body.is_empty() {
                Bytes::from_static(b"{}")
            } else if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_ok() {
                body.clone()
            } else {
                return gateway_error(StatusCode::BAD_REQUEST, "the request body must be JSON");
            }
        }
    };
    if matched.route.spec.asynchronous {
        return enqueue_route_event(gateway, &function, &target.spec, event, request_id, &traced)
            .await;
    }
    if event.len() > rampart_model::MAX_SYNC_PAYLOAD_BYTES {
        return gateway_error(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large");
    }
    let default_timeout = if format == PayloadFormat::V1 {
        REST_TIMEOUT
    } else {
        HTTP_TIMEOUT
    };
    let integration_timeout = matched
        .route
        .api
        .timeout_ms
        .map_or(default_timeout, Duration::from_millis)
        .min(target.spec.config.timeout() + Duration::from_secs(1));
    let invoke = InvokeRequest {
        request_id: request_id.clone(),
        payload: event,
        invoked_arn: function_arn(
            &gateway.region,
            &function,
            target
                .explicit
                .then(|| target.qualifier.to_string())
                .as_deref(),
        ),
        trace_id,
        client_context: None,
        tail: false,
        extra_meters: target.extra_meters.clone(),
    };
    // The invocation runs on even when the gateway stops waiting, as on AWS.
    let running = gateway
        .dispatcher
        .invoke_detachable(target.spec.clone(), invoke);
    let result = tokio::time::timeout(integration_timeout, running).await;
    traced.finish(
        gateway.telemetry.tracer(),
        matched.route.spec.route.clone(),
        SpanKind::Server,
        vec![
            ("faas.name", function.clone()),
            ("faas.invocation_id", request_id.clone()),
            ("http.route", matched.route.spec.route.clone()),
        ],
        result.as_ref().ok().and_then(|r| r.as_ref().ok()),
        None,
    );
    let outcome = match result {
        Err(_) => {
            return match format {
                PayloadFormat::V1 => {
                    gateway_error(StatusCode::GATEWAY_TIMEOUT, "Endpoint request timed out")
                }
                _ => gateway_error(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable"),
            };
        }
        Ok(Err(InvokeError::Throttled { .. })) => {
            return gateway_error(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
        }
        Ok(Err(InvokeError::ShuttingDown)) => {
            return gateway_error(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable");
        }
        Ok(Ok(outcome)) => outcome,
    };
    if outcome.function_error {
        return function_failed(format);
    }
    let mapped = match format {
        PayloadFormat::V1 => response_v1(&outcome.body),
        PayloadFormat::V2 | PayloadFormat::Body => response_v2(outcome.body),
    };
    let mut response = mapped.unwrap_or_else(|why| {
        tracing::info!(%function, %why, "malformed Lambda proxy response");
        function_failed(format)
    });
    let header = if format == PayloadFormat::V1 {
        "x-amzn-requestid"
    } else {
        "apigw-requestid"
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(header, v);
    }
    response
}

/// An asynchronous route: the event is stored (then the caller hears 202 with its request id)
/// and delivered like any `Event` invocation.
async fn enqueue_route_event(
    gateway: &Gateway,
    function: &str,
    spec: &rampart_runtime::FunctionSpec,
    event: Bytes,
    request_id: String,
    traced: &Traced,
) -> Response {
    if event.len() > rampart_model::MAX_ASYNC_PAYLOAD_BYTES {
        return gateway_error(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large");
    }
    let stored = gateway
        .registry
        .store()
        .enqueue(rampart_store::NewEvent {
            id: request_id.clone(),
            function: function.to_owned(),
            qualifier: spec.version_label.to_string(),
            payload: event.to_vec(),
            enqueued_ms: jiff::Timestamp::now().as_millisecond(),
            trace: Some(traced.event_header()),
        })
        .await;
    if let Err(e) = stored {
        tracing::error!(error = %e, "queueing a route's event failed");
        return gateway_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
    }
    gateway.queue_wakeup.notify_one();
    gateway.event_received(function, &spec.version_label);
    traced.finish(
        gateway.telemetry.tracer(),
        format!("Enqueue {function}"),
        SpanKind::Producer,
        vec![
            ("faas.name", function.to_owned()),
            ("faas.invocation_id", request_id.clone()),
        ],
        None,
        None,
    );
    let mut response = (
        StatusCode::ACCEPTED,
        axum::Json(json!({ "requestId": request_id })),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-amzn-requestid", v);
    }
    response
}

/// A function error or a malformed response, as each format reports it.
fn function_failed(format: PayloadFormat) -> Response {
    match format {
        PayloadFormat::V1 => gateway_error(StatusCode::BAD_GATEWAY, "Internal server error"),
        _ => gateway_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
    }
}

/// Header values API Gateway accepts: strings, numbers, booleans.
fn header_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn put_header(
    headers: &mut HeaderMap,
    name: &str,
    value: &str,
    append: bool,
) -> Result<(), String> {
    let name =
        HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("bad header name '{name}'"))?;
    let value =
        HeaderValue::from_str(value).map_err(|_| format!("bad value for header '{name}'"))?;
    if append {
        headers.append(name, value);
    } else {
        headers.insert(name, value);
    }
    Ok(())
}

/// The body of a structured response, base64-decoded when flagged so.
fn body_bytes(object: &Map<String, Value>) -> Result<Bytes, String> {
    let base64 = match object.get("isBase64Encoded") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("isBase64Encoded must be a boolean".into()),
    };
    match object.get("body") {
        None | Some(Value::Null) => Ok(Bytes::new()),
        Some(Value::String(s)) if base64 => BASE64
            .decode(s)
            .map(Bytes::from)
            .map_err(|e| format!("body is not valid base64: {e}")),
        Some(Value::String(s)) => Ok(Bytes::from(s.clone())),
        Some(_) => Err("body must be a string".into()),
    }
}

fn status_of(object: &Map<String, Value>) -> Result<StatusCode, String> {
    match object.get("statusCode") {
        None => Ok(StatusCode::OK),
        Some(v) => v
            .as_u64()
            .and_then(|c| u16::try_from(c).ok())
            .and_then(|c| StatusCode::from_u16(c).ok())
            .ok_or_else(|| format!("statusCode {v} is not an HTTP status")),
    }
}

/// The status, single-value headers and body of a structured proxy response (both formats).
fn structured_response(object: &Map<String, Value>) -> Result<Response, String> {
    let mut response = Response::new(Body::from(body_bytes(object)?));
    *response.status_mut() = status_of(object)?;
    if let Some(h) = object.get("headers").filter(|h| !h.is_null()) {
        for (name, value) in h.as_object().ok_or("headers must be an object")? {
            let text =
                header_text(value).ok_or_else(|| format!("header '{name}' must be a string"))?;
            put_header(response.headers_mut(), name, &text, false)?;
        }
    }
    Ok(response)
}

/// Payload format 1.0 responses: validated strictly (only the five keys).
fn response_v1(result: &[u8]) -> Result<Response, String> {
    let value: Value = serde_json::from_slice(result).map_err(|e| format!("not JSON: {e}"))?;
    let object = value.as_object().ok_or("not a JSON object")?;
    if let Some(extra) = object.keys().find(|k| {
        !matches!(
            k.as_str(),
            "statusCode" | "headers" | "multiValueHeaders" | "body" | "isBase64Encoded"
        )
    }) {
        return Err(format!("unexpected key '{extra}'"));
    }
    let mut response = structured_response(object)?;
    let headers = response.headers_mut();
    if let Some(h) = object.get("multiValueHeaders").filter(|h| !h.is_null()) {
        for (name, values) in h.as_object().ok_or("multiValueHeaders must be an object")? {
            let values = values
                .as_array()
                .ok_or_else(|| format!("multiValueHeaders '{name}' must be a list"))?;
            // The list wins over the single value of the same name.
            headers.remove(name.as_str());
            for value in values {
                let text = header_text(value)
                    .ok_or_else(|| format!("header '{name}' must hold strings"))?;
                put_header(headers, name, &text, true)?;
            }
        }
    }
    Ok(response)
}

/// Payload format 2.0 responses: a structured object when it has `statusCode`, else inferred
/// (200, the JSON text as the body).
fn response_v2(result: Bytes) -> Result<Response, String> {
    let inferred = |result: Bytes| {
        let mut response = Response::new(Body::from(result));
        response
            .headers_mut()
            .insert("content-type", HeaderValue::from_static("application/json"));
        Ok(response)
    };
    if !has_status_code(&result)? {
        return inferred(result);
    }
    let value: Value = serde_json::from_slice(&result).map_err(|e| format!("not JSON: {e}"))?;
    let object = value.as_object().ok_or("not a JSON object")?;
    let mut response = structured_response(object)?;
    let headers = response.headers_mut();
    if let Some(c) = object.get("cookies").filter(|c| !c.is_null()) {
        for cookie in c.as_array().ok_or("cookies must be a list")? {
            let text = cookie.as_str().ok_or("cookies must hold strings")?;
            put_header(headers, "set-cookie", text, true)?;
        }
    }
    Ok(response)
}

/// Whether a result is a JSON object with a `statusCode` key, found without building the
/// object: an inferred 2.0 response is passed on as it came.
fn has_status_code(result: &[u8]) -> Result<bool, String> {
    struct Probe(bool);
    impl<'de> serde::Deserialize<'de> for Probe {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(ProbeVisitor)
        }
    }
    struct ProbeVisitor;
    impl<'de> serde::de::Visitor<'de> for ProbeVisitor {
        type Value = Probe;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Probe, A::Error> {
            let mut found = false;
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                found |= key == "statusCode";
                map.next_value::<serde::de::IgnoredAny>()?;
            }
            Ok(Probe(found))
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Probe, A::Error> {
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok(Probe(false))
        }
        fn visit_bool<E>(self, _: bool) -> Result<Probe, E> {
            Ok(Probe(false))
        }
        fn visit_i64<E>(self, _: i64) -> Result<Probe, E> {
            Ok(Probe(false))
        }
        fn visit_u64<E>(self, _: u64) -> Result<Probe, E> {
            Ok(Probe(false))
        }
        fn visit_f64<E>(self, _: f64) -> Result<Probe, E> {
            Ok(Probe(false))
        }
        fn visit_str<E>(self, _: &str) -> Result<Probe, E> {
            Ok(Probe(false))
        }
        fn visit_unit<E>(self) -> Result<Probe, E> {
            Ok(Probe(false))
        }
    }
    serde_json::from_slice::<Probe>(result)
        .map(|p| p.0)
        .map_err(|e| format!("not JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_code_probe_tells_structured_from_inferred_results() {
        assert_eq!(
            has_status_code(br#"{"statusCode":201,"body":"x"}"#),
            Ok(true)
        );
        assert_eq!(has_status_code(br#"{"a":{"statusCode":1}}"#), Ok(false));
        assert_eq!(has_status_code(br#"{"statusCode":null}"#), Ok(true));
        assert_eq!(has_status_code(br#""text""#), Ok(false));
        assert_eq!(has_status_code(b"[1,2]"), Ok(false));
        assert_eq!(has_status_code(b"null"), Ok(false));
        assert_eq!(has_status_code(b"[]"), Ok(false));
        assert!(has_status_code(b"{").is_err());
        assert!(has_status_code(b"not json").is_err());
    }

    #[test]
    fn bare_lists_and_values_are_inferred() {
        for body in [&b"[1,2]"[..], b"\"text\"", b"{\"a\":1}", b"42"] {
            let response = response_v2(Bytes::copy_from_slice(body)).unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.headers()["content-type"], "application/json");
        }
        let response = response_v2(Bytes::from_static(b"{\"statusCode\":204}")).unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert!(response_v2(Bytes::from_static(b"{\"statusCode\":\"x\"}")).is_err());
    }
}

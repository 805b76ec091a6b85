//! `POST /2015-03-31/functions/{name}/invocations` (invoke-api.md §2).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use rampart_model::{
    FunctionRef, MAX_ASYNC_PAYLOAD_BYTES, MAX_CLIENT_CONTEXT_BYTES, MAX_SYNC_PAYLOAD_BYTES,
    Qualifier, function_arn,
};
use rampart_runtime::{FunctionSpec, InvokeError, InvokeRequest};

use rampart_telemetry::trace::SpanKind;

use crate::spans::Traced;
use crate::{ApiError, Gateway};

/// Rampart's header for deduplicating asynchronous invocations (not a Lambda feature): a second
/// `Event` with the same key for the same function within the window stores nothing and gets
/// the first request's id.
pub const IDEMPOTENCY_HEADER: &str = "x-rampart-idempotency-key";

/// The function a request names, resolved against the registry.
pub(crate) struct Target {
    pub name: String,
    pub qualifier: Qualifier,
    /// The caller named the qualifier (in the name, the ARN or the query).
    pub explicit: bool,
    pub spec: Arc<FunctionSpec>,
    /// An alias's meters, when called through one.
    pub extra_meters: Vec<Arc<rampart_telemetry::FunctionMeters>>,
}

/// Parses `FunctionName` (name or ARN) and the `Qualifier` query, and finds the version.
pub(crate) async fn resolve(
    gateway: &Gateway,
    raw: &str,
    query_qualifier: Option<&str>,
) -> Result<Target, ApiError> {
    let function = FunctionRef::parse(raw).map_err(|e| ApiError::validation(e.message))?;
    let query_qualifier = query_qualifier
        .map(Qualifier::parse)
        .transpose()
        .map_err(|e| ApiError::validation(e.message))?;
    let explicit = function.qualifier.is_some() || query_qualifier.is_some();
    let qualifier = match (function.qualifier, query_qualifier) {
        (Some(a), Some(b)) if a != b => {
            return Err(ApiError::invalid_parameter(
                "The derived qualifier from the function name does not match the specified qualifier.",
            ));
        }
        (a, b) => a.or(b).unwrap_or(Qualifier::Latest),
    };
    let name = function.name.to_string();
    let not_found = || {
        let q = match &qualifier {
            Qualifier::Latest => None,
            q => Some(q.to_string()),
        };
        ApiError::not_found(format!(
            "Function not found: {}",
            function_arn(&gateway.region, &name, q.as_deref())
        ))
    };
    if let Some(region) = &function.region
        && *region != gateway.region
    {
        return Err(ApiError::not_found(format!(
            "Functions from '{region}' are not reachable in this region ('{}')",
            gateway.region
        )));
    }
    let mut extra_meters = Vec::new();
    let spec = match &qualifier {
        Qualifier::Latest => gateway.registry.latest(&name).map(|d| d.spec.clone()),
        Qualifier::Version(n) => gateway.registry.version(&name, *n).await?,
        Qualifier::Alias(alias) => match gateway.registry.alias(&name, alias.as_str()) {
            None => None,
            Some(found) => {
                let spec = match crate::versions::choose(&found) {
                    Some(n) => gateway.registry.version(&name, n).await?,
                    None => gateway.registry.latest(&name).map(|d| d.spec.clone()),
                };
                if let Some(spec) = &spec {
                    extra_meters = gateway.telemetry.lambda().alias(
                        &name,
                        alias.as_str(),
                        spec.version,
                        &spec.version_label,
                    );
                }
                spec
            }
        },
    };
    let spec = spec.ok_or_else(not_found)?;
    Ok(Target {
        name,
        qualifier,
        explicit,
        spec,
        extra_meters,
    })
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub(crate) async fn invoke(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if gateway.draining() {
        return Err(ApiError::shutting_down());
    }
    let invocation_type = header(&headers, "x-amz-invocation-type").unwrap_or("RequestResponse");
    let tail = match header(&headers, "x-amz-log-type").unwrap_or("None") {
        "None" => false,
        "Tail" => true,
        other => {
            return Err(ApiError::invalid_parameter(format!(
                "LogType '{other}' is not valid: use None or Tail"
            )));
        }
    };
    let target = resolve(&gateway, &name, query.get("Qualifier").map(String::as_str)).await?;
    let traced = Traced::begin(&headers, gateway.telemetry.tracer());
    match invocation_type {
        "RequestResponse" => {}
        "DryRun" => return Ok(StatusCode::NO_CONTENT.into_response()),
        "Event" => {
            // Accepted only once durably stored: the 202 means the event cannot be lost.
            let payload = read_payload(body, MAX_ASYNC_PAYLOAD_BYTES).await?;
            let new_id = uuid::Uuid::new_v4().to_string();
            let now = jiff::Timestamp::now().as_millisecond();
            let store = gateway.registry.store();
            let event = rampart_store::NewEvent {
                id: new_id,
                function: target.name.clone(),
                qualifier: target.spec.version_label.to_string(),
                payload: payload.to_vec(),
                enqueued_ms: now,
                trace: Some(traced.event_header()),
            };
            let request_id = match header(&headers, IDEMPOTENCY_HEADER) {
                Some(key) => {
                    if key.is_empty() || key.len() > 256 {
                        return Err(ApiError::invalid_parameter(format!(
                            "{IDEMPOTENCY_HEADER} must be 1 to 256 characters"
                        )));
                    }
                    let window = gateway.async_settings.idempotency_window.as_millis() as i64;
                    store.enqueue_once(event, key.to_owned(), window).await?
                }
                None => {
                    let id = event.id.clone();
                    store.enqueue(event).await?;
                    id
                }
            };
            gateway.queue_wakeup.notify_one();
            gateway.event_received(&target.name, &target.spec.version_label);
            traced.finish(
                gateway.telemetry.tracer(),
                format!("Enqueue {}", target.name),
                SpanKind::Producer,
                vec![
                    ("faas.name", target.name.clone()),
                    ("faas.invocation_id", request_id.clone()),
                ],
                None,
                None,
            );
            let mut response = StatusCode::ACCEPTED.into_response();
            if let Ok(v) = HeaderValue::from_str(&request_id) {
                response.headers_mut().insert("x-amzn-requestid", v);
            }
            return Ok(response);
        }
        other => {
            return Err(ApiError::invalid_parameter(format!(
                "InvocationType '{other}' is not valid: use RequestResponse, Event or DryRun"
            )));
        }
    }
    let client_context = header(&headers, "x-amz-client-context")
        .map(decode_client_context)
        .transpose()?;
    let payload = read_payload(body, MAX_SYNC_PAYLOAD_BYTES).await?;
    let request_id = uuid::Uuid::new_v4().to_string();
    // The ARN in the form the caller addressed the function (runtime-api.md §3.1).
    let qualifier_text = target.qualifier.to_string();
    let invoked_arn = function_arn(
        &gateway.region,
        &target.name,
        target.explicit.then_some(qualifier_text.as_str()),
    );
    let request = InvokeRequest {
        request_id: request_id.clone(),
        payload,
        invoked_arn,
        trace_id: traced.function_header(),
        client_context,
        tail,
        extra_meters: target.extra_meters.clone(),
    };
    let limited = target.spec.config.max_concurrency.is_some();
    let result = gateway
        .dispatcher
        .invoke(target.spec.clone(), request)
        .await;
    traced.finish(
        gateway.telemetry.tracer(),
        format!("Invoke {}", target.name),
        SpanKind::Server,
        vec![
            ("faas.name", target.name.clone()),
            ("faas.invocation_id", request_id.clone()),
        ],
        result.as_ref().ok(),
        None,
    );
    let outcome = result.map_err(|e| match e {
        InvokeError::Throttled { retry_after } => ApiError::throttled(
            if limited {
                "ReservedFunctionConcurrentInvocationLimitExceeded"
            } else {
                "ConcurrentInvocationLimitExceeded"
            },
            retry_after,
        ),
        InvokeError::ShuttingDown => ApiError::shutting_down(),
    })?;
    let mut response = Response::new(Body::from(outcome.body));
    let h = response.headers_mut();
    let content_type = outcome
        .content_type
        .as_deref()
        .and_then(|t| HeaderValue::from_str(t).ok())
        .unwrap_or(HeaderValue::from_static("application/json"));
    h.insert("content-type", content_type);
    h.insert(
        "x-amz-executed-version",
        HeaderValue::from_str(&outcome.executed_version).expect("version labels are ASCII"),
    );
    if outcome.function_error {
        h.insert(
            "x-amz-function-error",
            HeaderValue::from_static("Unhandled"),
        );
    }
    if let Some(tail) = outcome.log_tail {
        let encoded = BASE64.encode(tail.as_bytes());
        h.insert(
            "x-amz-log-result",
            HeaderValue::from_str(&encoded).expect("base64 is a valid header value"),
        );
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        h.insert("x-amzn-requestid", v);
    }
    Ok(response)
}

/// Reads the event, enforcing the 6 MB limit and that it is JSON (an empty body is `{}`).
async fn read_payload(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::too_large(format!(
            "Request must be smaller than {limit} bytes for the InvokeFunction operation"
        ))
    };
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Bytes::from_static(b"{}"));
    }
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&bytes) {
        return Err(ApiError::invalid_content(format!(
            "Could not parse request body into json: {e}"
        )));
    }
    Ok(bytes)
}

fn decode_client_context(encoded: &str) -> Result<String, ApiError> {
    if encoded.len() > MAX_CLIENT_CONTEXT_BYTES {
        return Err(ApiError::invalid_parameter(format!(
            "Client context must be at most {MAX_CLIENT_CONTEXT_BYTES} bytes"
        )));
    }
    let bad = || ApiError::invalid_content("Client context must be a base64-encoded JSON object");
    let decoded = BASE64.decode(encoded).map_err(|_| bad())?;
    let text = String::from_utf8(decoded).map_err(|_| bad())?;
    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&text).map_err(|_| bad())?;
    Ok(text)
}

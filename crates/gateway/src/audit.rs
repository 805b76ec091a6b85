//! The audit trail of the control plane: every change (function, configuration, concurrency,
//! event invoke config, API, key, plan, DLQ replay or purge), successful or not, recorded with
//! its time, principal, source address, parameters (secrets redacted) and result, in the
//! store's hash chain.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Query, Request, State};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rampart_store::NewAuditRecord;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{ApiError, Gateway};

/// The action a control-plane request performs, by method and route; `None` for reads and
/// the data plane (invocations, metrics).
fn action(method: &Method, route: &str) -> Option<&'static str> {
    let action = match (method.as_str(), route) {
        ("POST", "/2015-03-31/functions") => "CreateFunction20150331",
        ("DELETE", "/2015-03-31/functions/{name}") => "DeleteFunction20150331",
        ("PUT", "/2015-03-31/functions/{name}/configuration") => {
            "UpdateFunctionConfiguration20150331v2"
        }
        ("PUT", "/2015-03-31/functions/{name}/code") => "UpdateFunctionCode20150331v2",
        ("PUT", "/2017-10-31/functions/{name}/concurrency") => "PutFunctionConcurrency20171031",
        ("DELETE", "/2017-10-31/functions/{name}/concurrency") => {
            "DeleteFunctionConcurrency20171031"
        }
        ("PUT", "/2019-09-25/functions/{name}/event-invoke-config") => {
            "PutFunctionEventInvokeConfig"
        }
        ("POST", "/2019-09-25/functions/{name}/event-invoke-config") => {
            "UpdateFunctionEventInvokeConfig"
        }
        ("DELETE", "/2019-09-25/functions/{name}/event-invoke-config") => {
            "DeleteFunctionEventInvokeConfig"
        }
        ("POST", "/2015-03-31/functions/{name}/versions") => "PublishVersion20150331",
        ("POST", "/2015-03-31/functions/{name}/aliases") => "CreateAlias20150331",
        ("PUT", "/2015-03-31/functions/{name}/aliases/{alias}") => "UpdateAlias20150331",
        ("DELETE", "/2015-03-31/functions/{name}/aliases/{alias}") => "DeleteAlias20150331",
        ("POST", "/rampart/v1/functions/{name}/deployments") => "StartDeployment",
        ("POST", "/rampart/v1/functions/{name}/deployments/rollback") => "RollbackDeployment",
        ("POST", "/rampart/v1/functions/{name}/dlq/replay") => "ReplayDeadLetters",
        ("DELETE", "/rampart/v1/functions/{name}/dlq") => "PurgeDeadLetters",
        ("POST", "/rampart/v1/keys") => "CreateApiKey",
        ("DELETE", "/rampart/v1/keys/{name}") => "DeleteApiKey",
        ("PUT", "/rampart/v1/plans/{name}") => "PutUsagePlan",
        ("DELETE", "/rampart/v1/plans/{name}") => "DeleteUsagePlan",
        ("PUT", "/rampart/v1/apis/{name}") => "PutApi",
        ("DELETE", "/rampart/v1/apis/{name}") => "DeleteApi",
        _ => return None,
    };
    Some(action)
}

/// The access key id of a SigV4 `Authorization` header, else `anonymous` (signatures are not
/// verified yet: the principal is what the caller claims).
fn principal(headers: &HeaderMap) -> String {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split("Credential=").nth(1))
        .and_then(|c| c.split('/').next())
        .filter(|k| !k.is_empty())
        .map_or_else(|| "anonymous".to_owned(), str::to_owned)
}

/// Request fields whose values are never recorded.
fn secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["zipfile", "secret", "password", "token", "credential"]
        .iter()
        .any(|s| key.contains(s))
}

/// The parameters as recorded: secrets and environment variable values replaced by a note.
fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if secret_key(key) && !v.is_null() {
                    *v = json!("(redacted)");
                } else if key == "Environment" {
                    if let Some(vars) = v.get_mut("Variables").and_then(Value::as_object_mut) {
                        for value in vars.values_mut() {
                            *value = json!("(redacted)");
                        }
                    }
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

fn parameters(query: Option<&str>, body: &[u8]) -> String {
    let mut params = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body)
            .unwrap_or_else(|_| json!({ "body": format!("({} bytes, not JSON)", body.len()) }))
    };
    redact(&mut params);
    if let Some(q) = query.filter(|q| !q.is_empty())
        && let Value::Object(map) = &mut params
    {
        map.insert("query".into(), json!(q));
    }
    params.to_string()
}

/// Records each control-plane request after it is answered (the middleware of the API
/// router; needs the route, so it runs as a route layer).
pub(crate) async fn record(
    State(gateway): State<Arc<Gateway>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let Some(action) = action(request.method(), &route) else {
        return next.run(request).await;
    };
    let source = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_owned(), |c| c.0.ip().to_string());
    let principal = principal(request.headers());
    let query = request.uri().query().map(str::to_owned);
    let path = request.uri().path().to_owned();
    let (parts, body) = request.into_parts();
    let limited = http_body_util::Limited::new(body, rampart_model::MAX_CONTROL_BODY_BYTES);
    let (parameters, response) = match http_body_util::BodyExt::collect(limited).await {
        Ok(body) => {
            let body = body.to_bytes();
            let parameters = parameters(query.as_deref(), &body);
            let request = Request::from_parts(parts, Body::from(body));
            (parameters, next.run(request).await)
        }
        // Refused, and recorded as refused.
        Err(_) => (
            json!({ "body": "(larger than the limit)" }).to_string(),
            ApiError::too_large(format!(
                "the request body is larger than {} bytes",
                rampart_model::MAX_CONTROL_BODY_BYTES
            ))
            .into_response(),
        ),
    };
    let result = if response.status().is_success() {
        "OK".to_owned()
    } else {
        response
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map_or_else(|| response.status().as_u16().to_string(), str::to_owned)
    };
    let resource = resource(&route, &path, &parameters);
    let record = NewAuditRecord {
        ts_ms: jiff::Timestamp::now().as_millisecond(),
        principal,
        source,
        action: action.to_owned(),
        resource,
        parameters,
        result,
    };
    if let Err(e) = gateway.registry.store().append_audit(record).await {
        tracing::error!(error = %e, action, "recording an audit record failed");
    }
    response
}

/// The `{name}` the route names, or the function a create names.
fn resource(route: &str, path: &str, parameters: &str) -> String {
    let segments: Vec<&str> = path.split('/').collect();
    if let Some(i) = route.split('/').position(|s| s == "{name}")
        && let Some(name) = segments.get(i)
    {
        return percent_encoding::percent_decode_str(name)
            .decode_utf8_lossy()
            .into_owned();
    }
    serde_json::from_str::<Value>(parameters)
        .ok()
        .and_then(|p| {
            p.get("FunctionName")
                .or_else(|| p.get("name"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

#[derive(Deserialize)]
pub(crate) struct AuditQuery {
    since_ms: Option<i64>,
    action: Option<String>,
    limit: Option<usize>,
}

/// `GET /rampart/v1/audit`: records, oldest first.
pub(crate) async fn list(
    State(gateway): State<Arc<Gateway>>,
    Query(q): Query<AuditQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    let records = gateway
        .registry
        .store()
        .query_audit(q.since_ms, q.action, q.limit.unwrap_or(1000).min(10_000))
        .await?;
    let records: Vec<Value> = records
        .into_iter()
        .map(|r| {
            json!({
                "seq": r.seq,
                "time": jiff::Timestamp::from_millisecond(r.record.ts_ms)
                    .map(|t| t.to_string())
                    .unwrap_or_default(),
                "ts_ms": r.record.ts_ms,
                "principal": r.record.principal,
                "source": r.record.source,
                "action": r.record.action,
                "resource": r.record.resource,
                "parameters": serde_json::from_str::<Value>(&r.record.parameters).unwrap_or(Value::Null),
                "result": r.record.result,
                "hash": r.hash,
            })
        })
        .collect();
    Ok(axum::Json(json!({ "records": records })))
}

/// `GET /rampart/v1/audit/verify`: the chain checked end to end.
pub(crate) async fn verify(
    State(gateway): State<Arc<Gateway>>,
) -> Result<axum::Json<Value>, ApiError> {
    let check = gateway.registry.store().verify_audit().await?;
    Ok(axum::Json(json!({
        "ok": check.problems.is_empty(),
        "records": check.records,
        "problems": check.problems,
        "head": check.head,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_environment_values_are_redacted() {
        let recorded = parameters(
            Some("Qualifier=3"),
            br#"{"FunctionName":"f","Code":{"ZipFile":"UEsDB..."},"Environment":{"Variables":{"DB_PASSWORD":"hunter2","MODE":"x"}},"Nested":[{"SessionToken":"t"}]}"#,
        );
        assert!(!recorded.contains("hunter2") && !recorded.contains("UEsDB"));
        assert!(!recorded.contains("\"t\""), "{recorded}");
        assert!(recorded.contains("DB_PASSWORD") && recorded.contains("\"FunctionName\":\"f\""));
        assert!(recorded.contains("Qualifier=3"));
        assert_eq!(
            parameters(None, b"\x00\x01"),
            r#"{"body":"(2 bytes, not JSON)"}"#
        );
    }

    #[test]
    fn actions_principals_and_resources() {
        assert_eq!(
            action(&Method::POST, "/2015-03-31/functions"),
            Some("CreateFunction20150331")
        );
        assert_eq!(action(&Method::GET, "/2015-03-31/functions"), None);
        assert_eq!(
            action(&Method::POST, "/2015-03-31/functions/{name}/invocations"),
            None
        );
        let mut headers = HeaderMap::new();
        assert_eq!(principal(&headers), "anonymous");
        headers.insert(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKID123/20261125/us-east-1/lambda/aws4_request, SignedHeaders=host, Signature=x"
                .parse()
                .unwrap(),
        );
        assert_eq!(principal(&headers), "AKID123");
        assert_eq!(
            resource(
                "/2015-03-31/functions/{name}/code",
                "/2015-03-31/functions/my%2Dfn/code",
                "{}"
            ),
            "my-fn"
        );
        assert_eq!(
            resource(
                "/2015-03-31/functions",
                "/2015-03-31/functions",
                r#"{"FunctionName":"new"}"#
            ),
            "new"
        );
    }
}

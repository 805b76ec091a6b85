//! Rampart's own management API under `/rampart/v1`: logs and instance stats for the CLI.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use rampart_model::ApiSpec;
use rampart_store::LogQuery;
use serde_json::{Value, json};

use crate::{ApiError, Gateway, RouteTable};

/// Most lines one logs request returns.
const MAX_LOG_LINES: usize = 10_000;

/// `GET /rampart/v1/functions/{name}/logs?since_ms=&until_ms=&after_id=&request_id=&filter=&level=&limit=`
/// (`filter`: lines containing the text; `level`: lines logged at that level or worse).
pub(crate) async fn logs(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let number = |key: &str| -> Result<Option<i64>, ApiError> {
        query
            .get(key)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| ApiError::invalid_parameter(format!("{key} must be an integer")))
            })
            .transpose()
    };
    let limit = number("limit")?.map_or(1000, |l| l.clamp(1, MAX_LOG_LINES as i64) as usize);
    let levels = match query.get("level") {
        None => Vec::new(),
        Some(level) => rampart_store::levels_from(level).ok_or_else(|| {
            ApiError::invalid_parameter(format!(
                "level '{level}' is not one of TRACE, DEBUG, INFO, WARN, ERROR, FATAL"
            ))
        })?,
    };
    let lines = gateway
        .registry
        .store()
        .query_logs(LogQuery {
            function: name,
            since_ms: number("since_ms")?,
            until_ms: number("until_ms")?,
            after_id: number("after_id")?,
            request_id: query.get("request_id").cloned(),
            contains: query.get("filter").filter(|f| !f.is_empty()).cloned(),
            levels,
            limit,
        })
        .await?;
    let lines: Vec<Value> = lines
        .into_iter()
        .map(|l| {
            json!({
                "id": l.id, "ts_ms": l.ts_ms, "version": l.version, "instance": l.instance,
                "request_id": l.request_id, "stream": l.stream, "line": l.line,
            })
        })
        .collect();
    Ok(Json(json!({ "lines": lines })))
}

/// `GET /rampart/v1/functions/{name}/stats`: instance counts.
pub(crate) async fn stats(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if gateway.registry.latest(&name).is_none() {
        return Err(ApiError::not_found(format!("Function not found: {name}")));
    }
    let s = gateway.dispatcher.stats(&name);
    let (depth, oldest) = gateway.registry.store().queue_depth(&name).await?;
    let oldest_age_ms = oldest.map(|t| (jiff::Timestamp::now().as_millisecond() - t).max(0));
    let dead = gateway.registry.store().dead_letter_count(&name).await?;
    Ok(Json(json!({
        "instances": s.instances, "idle": s.idle, "busy": s.busy, "concurrency_limit": s.limit,
        "degraded": s.degraded,
        "queue_depth": depth, "oldest_event_age_ms": oldest_age_ms, "dead_letters": dead,
        "async": gateway.counters(&name),
    })))
}

/// `PUT /rampart/v1/apis/{name}`: creates or replaces an API (its whole route table), served at
/// once; refused when a route conflicts with another API's or names a missing function.
pub(crate) async fn put_api(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let api: ApiSpec = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid_content(format!("could not parse the API: {e}")))?;
    if api.name != name {
        return Err(ApiError::invalid_parameter(format!(
            "the API in the body is named '{}', the path names '{name}'",
            api.name
        )));
    }
    api.validate()?;
    for route in &api.routes {
        // Resolving it now names a missing function, version or alias at deploy time.
        if let Err(e) = crate::invoke::resolve(&gateway, &route.function, None).await {
            return Err(ApiError::invalid_parameter(format!(
                "route '{}' calls '{}', which cannot be invoked: {}",
                route.route,
                route.function,
                e.message()
            )));
        }
    }
    let _changing = gateway.api_changes.lock().await;
    let mut apis = gateway.registry.store().list_apis().await?;
    apis.retain(|a| a.name != name);
    apis.push(api.clone());
    let table = RouteTable::build(&apis).map_err(ApiError::conflict)?;
    gateway
        .registry
        .store()
        .put_api(api.clone(), jiff::Timestamp::now().as_millisecond())
        .await?;
    *gateway.routes.write().expect("routes lock") = Arc::new(table);
    Ok(Json(serde_json::to_value(api).expect("an API serializes")))
}

/// `GET /rampart/v1/apis`: every API.
pub(crate) async fn list_apis(
    State(gateway): State<Arc<Gateway>>,
) -> Result<Json<Value>, ApiError> {
    let apis = gateway.registry.store().list_apis().await?;
    Ok(Json(json!({ "apis": apis })))
}

/// `DELETE /rampart/v1/apis/{name}`.
pub(crate) async fn delete_api(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
) -> Result<axum::response::Response, ApiError> {
    let _changing = gateway.api_changes.lock().await;
    if !gateway.registry.store().delete_api(&name).await? {
        return Err(ApiError::not_found(format!("API not found: {name}")));
    }
    let apis = gateway.registry.store().list_apis().await?;
    let table = RouteTable::build(&apis).map_err(ApiError::conflict)?;
    *gateway.routes.write().expect("routes lock") = Arc::new(table);
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    name: String,
    #[serde(default)]
    plan: Option<String>,
}

/// `POST /rampart/v1/keys`: creates a key; the secret is in this answer and nowhere else.
pub(crate) async fn create_key(
    State(gateway): State<Arc<Gateway>>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let input: NewKey = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid_content(format!("could not parse the key: {e}")))?;
    rampart_model::FunctionName::parse(&input.name).map_err(|_| {
        ApiError::invalid_parameter(format!(
            "key name '{}' must be 1 to 64 characters of [a-zA-Z0-9-_]",
            input.name
        ))
    })?;
    if let Some(plan) = &input.plan
        && !gateway.keys.has_plan(plan)
    {
        return Err(ApiError::invalid_parameter(format!(
            "usage plan '{plan}' does not exist"
        )));
    }
    let secret =
        crate::keys::new_secret().map_err(|e| ApiError::internal(&std::io::Error::other(e)))?;
    let key = rampart_store::ApiKey {
        name: input.name.clone(),
        hash: crate::keys::hash(&secret),
        plan: input.plan.clone(),
        created_ms: jiff::Timestamp::now().as_millisecond(),
    };
    gateway.registry.store().create_key(key.clone()).await?;
    gateway.keys.remember(&key);
    Ok((
        StatusCode::CREATED,
        Json(json!({"name": input.name, "plan": input.plan, "key": secret})),
    ))
}

/// `GET /rampart/v1/keys`: names, plans and usage; never secrets.
pub(crate) async fn list_keys(
    State(gateway): State<Arc<Gateway>>,
) -> Result<Json<Value>, ApiError> {
    let store = gateway.registry.store();
    let mut out = Vec::new();
    for key in store.list_keys().await? {
        let (day, month) = gateway.keys.usage(store, &key.name).await?;
        out.push(json!({
            "name": key.name, "plan": key.plan, "created_ms": key.created_ms,
            "requests_today": day, "requests_this_month": month,
        }));
    }
    Ok(Json(json!({ "keys": out })))
}

/// `DELETE /rampart/v1/keys/{name}`.
pub(crate) async fn delete_key(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
) -> Result<axum::response::Response, ApiError> {
    if !gateway.registry.store().delete_key(&name).await? {
        return Err(ApiError::not_found(format!("API key not found: {name}")));
    }
    gateway.keys.forget(&name);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `PUT /rampart/v1/plans/{name}`: creates or replaces a usage plan.
pub(crate) async fn put_plan(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let plan: rampart_model::UsagePlan = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid_content(format!("could not parse the plan: {e}")))?;
    plan.validate()?;
    rampart_model::FunctionName::parse(&name).map_err(|_| {
        ApiError::invalid_parameter(format!(
            "plan name '{name}' must be 1 to 64 characters of [a-zA-Z0-9-_]"
        ))
    })?;
    gateway
        .registry
        .store()
        .put_plan(name.clone(), plan.clone())
        .await?;
    gateway.keys.set_plan(&name, Some(plan.clone()));
    Ok(Json(json!({"name": name, "plan": plan})))
}

/// `GET /rampart/v1/plans`.
pub(crate) async fn list_plans(
    State(gateway): State<Arc<Gateway>>,
) -> Result<Json<Value>, ApiError> {
    let plans: Vec<Value> = gateway
        .registry
        .store()
        .list_plans()
        .await?
        .into_iter()
        .map(|(name, plan)| json!({"name": name, "plan": plan}))
        .collect();
    Ok(Json(json!({ "plans": plans })))
}

/// `DELETE /rampart/v1/plans/{name}`: keys on it keep working, without limits.
pub(crate) async fn delete_plan(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
) -> Result<axum::response::Response, ApiError> {
    if !gateway.registry.store().delete_plan(&name).await? {
        return Err(ApiError::not_found(format!("usage plan not found: {name}")));
    }
    gateway.keys.set_plan(&name, None);
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn dead_letter_json(d: rampart_store::DeadLetter) -> Value {
    json!({
        "id": d.id, "function": d.function, "reason": d.reason, "attempts": d.attempts,
        "enqueued_ms": d.enqueued_ms, "failed_ms": d.failed_ms,
        "last_error": d.last_error,
        "payload": String::from_utf8_lossy(&d.payload),
    })
}

/// `GET /rampart/v1/dlq/{id}`: one dead letter.
pub(crate) async fn dead_letter(
    State(gateway): State<Arc<Gateway>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let dead = gateway
        .registry
        .store()
        .dead_letter_by_id(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no dead letter {id}")))?;
    Ok(Json(dead_letter_json(dead)))
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Replay {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    all: bool,
}

/// `POST /rampart/v1/functions/{name}/dlq/replay` with `{"id": ...}` or `{"all": true}`.
pub(crate) async fn replay_dead_letters(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let replay: Replay = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid_content(format!("could not parse the replay: {e}")))?;
    if replay.id.is_none() && !replay.all {
        return Err(ApiError::invalid_parameter(
            "name an event with \"id\" or replay \"all\"",
        ));
    }
    let replayed = gateway
        .registry
        .store()
        .replay_dead_letters(name, replay.id, jiff::Timestamp::now().as_millisecond())
        .await?;
    gateway.queue_wakeup.notify_one();
    Ok(Json(json!({ "replayed": replayed })))
}

/// `DELETE /rampart/v1/functions/{name}/dlq`: purges a function's dead letters.
pub(crate) async fn purge_dead_letters(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let purged = gateway.registry.store().purge_dead_letters(name).await?;
    Ok(Json(json!({ "purged": purged })))
}

/// `GET /rampart/v1/functions/{name}/dlq`: dead-lettered events, newest first.
pub(crate) async fn dead_letters(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let dead = gateway.registry.store().dead_letters(&name, 1000).await?;
    let dead: Vec<Value> = dead.into_iter().map(dead_letter_json).collect();
    Ok(Json(json!({ "dead_letters": dead })))
}

/// `GET /metrics`: Prometheus text, or OpenMetrics when the scraper accepts it.
pub(crate) async fn prometheus(
    State(gateway): State<Arc<Gateway>>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    let openmetrics = headers
        .get("accept")
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    let content_type = if openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    (
        [(axum::http::header::CONTENT_TYPE, content_type)],
        gateway.telemetry.prometheus(openmetrics),
    )
        .into_response()
}

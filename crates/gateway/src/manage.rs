//! Rampart's own management API under `/rampart/v1`: logs and instance stats for the CLI.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use rampart_store::LogQuery;
use serde_json::{Value, json};

use crate::{ApiError, Gateway};

/// Most lines one logs request returns.
const MAX_LOG_LINES: usize = 10_000;

/// `GET /rampart/v1/functions/{name}/logs?since_ms=&after_id=&request_id=&limit=`
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
    let lines = gateway
        .registry
        .store()
        .query_logs(LogQuery {
            function: name,
            since_ms: number("since_ms")?,
            after_id: number("after_id")?,
            request_id: query.get("request_id").cloned(),
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
    Ok(Json(json!({
        "instances": s.instances, "idle": s.idle, "busy": s.busy, "concurrency_limit": s.limit,
    })))
}

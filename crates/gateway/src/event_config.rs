//! Put/Update/Get/Delete/ListFunctionEventInvokeConfigs (invoke-api.md §3): retries, event age
//! and destinations of asynchronous invocations, per function and qualifier.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rampart_model::{EventInvokeConfig, function_arn};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::invoke::resolve;
use crate::{ApiError, Gateway};

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct DestinationInput {
    destination: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct DestinationsInput {
    on_success: Option<DestinationInput>,
    on_failure: Option<DestinationInput>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ConfigInput {
    maximum_retry_attempts: Option<u32>,
    maximum_event_age_in_seconds: Option<u64>,
    destination_config: Option<DestinationsInput>,
}

impl ConfigInput {
    fn apply(self, config: &mut EventInvokeConfig) {
        if let Some(r) = self.maximum_retry_attempts {
            config.maximum_retry_attempts = r;
        }
        if let Some(a) = self.maximum_event_age_in_seconds {
            config.maximum_event_age_secs = a;
        }
        if let Some(d) = self.destination_config {
            if let Some(s) = d.on_success {
                config.on_success = s.destination;
            }
            if let Some(f) = d.on_failure {
                config.on_failure = f.destination;
            }
        }
    }
}

fn output(
    gateway: &Gateway,
    function: &str,
    qualifier: &str,
    config: &EventInvokeConfig,
    modified_ms: i64,
) -> Value {
    let destination = |d: &Option<String>| match d {
        Some(arn) => json!({"Destination": arn}),
        None => json!({}),
    };
    json!({
        "LastModified": modified_ms as f64 / 1000.0,
        "FunctionArn": function_arn(&gateway.region, function, Some(qualifier)),
        "MaximumRetryAttempts": config.maximum_retry_attempts,
        "MaximumEventAgeInSeconds": config.maximum_event_age_secs,
        "DestinationConfig": {"OnSuccess": destination(&config.on_success), "OnFailure": destination(&config.on_failure)},
    })
}

async fn target(
    gateway: &Gateway,
    name: &str,
    query: &HashMap<String, String>,
) -> Result<(String, String), ApiError> {
    let t = resolve(gateway, name, query.get("Qualifier").map(String::as_str)).await?;
    Ok((t.name, t.spec.version_label.to_string()))
}

async fn store_config(
    gateway: &Gateway,
    name: &str,
    query: &HashMap<String, String>,
    body: &Bytes,
    replace: bool,
) -> Result<Json<Value>, ApiError> {
    let (function, qualifier) = target(gateway, name, query).await?;
    let input: ConfigInput = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid_content(format!("could not parse the request body: {e}")))?;
    let mut config = if replace {
        EventInvokeConfig::default()
    } else {
        gateway
            .event_config(&function, &qualifier)
            .map(|(c, _)| c)
            .unwrap_or_default()
    };
    input.apply(&mut config);
    config.validate()?;
    let now = jiff::Timestamp::now().as_millisecond();
    gateway
        .registry
        .store()
        .put_event_invoke_config(function.clone(), qualifier.clone(), config.clone(), now)
        .await?;
    gateway
        .event_configs
        .write()
        .expect("event configs lock")
        .insert((function.clone(), qualifier.clone()), (config.clone(), now));
    Ok(Json(output(gateway, &function, &qualifier, &config, now)))
}

/// `PUT .../event-invoke-config`: replaces the whole configuration.
pub(crate) async fn put(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    store_config(&gateway, &name, &query, &body, true).await
}

/// `POST .../event-invoke-config`: merges into the configuration.
pub(crate) async fn update(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    store_config(&gateway, &name, &query, &body, false).await
}

/// `GET .../event-invoke-config`.
pub(crate) async fn get(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let (function, qualifier) = target(&gateway, &name, &query).await?;
    let (config, modified) = gateway.event_config(&function, &qualifier).ok_or_else(|| {
        ApiError::not_found(format!(
            "The function {} doesn't have an EventInvokeConfig",
            function_arn(&gateway.region, &function, Some(&qualifier))
        ))
    })?;
    Ok(Json(output(
        &gateway, &function, &qualifier, &config, modified,
    )))
}

/// `DELETE .../event-invoke-config`.
pub(crate) async fn delete(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (function, qualifier) = target(&gateway, &name, &query).await?;
    let existed = gateway
        .registry
        .store()
        .delete_event_invoke_config(function.clone(), qualifier.clone())
        .await?;
    gateway
        .event_configs
        .write()
        .expect("event configs lock")
        .remove(&(function.clone(), qualifier.clone()));
    if !existed {
        return Err(ApiError::not_found(format!(
            "The function {} doesn't have an EventInvokeConfig",
            function_arn(&gateway.region, &function, Some(&qualifier))
        )));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET .../event-invoke-config/list`.
pub(crate) async fn list(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (function, _) = target(&gateway, &name, &HashMap::new()).await?;
    let configs: Vec<Value> = gateway
        .event_configs
        .read()
        .expect("event configs lock")
        .iter()
        .filter(|((f, _), _)| *f == function)
        .map(|((f, q), (c, t))| output(&gateway, f, q, c, *t))
        .collect();
    Ok(Json(json!({ "FunctionEventInvokeConfigs": configs })))
}

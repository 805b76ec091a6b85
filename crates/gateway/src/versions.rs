//! PublishVersion, ListVersionsByFunction and the alias APIs at Lambda's paths and shapes
//! (deployments.md §1-2), and the weighted choice of an alias's version per invocation.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use rampart_model::function_arn;
use rampart_store::{AliasChange, AliasRecord};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::control::{body_of, configuration, parse_json, unqualified};
use crate::{ApiError, Gateway};

/// The version number aliases use for `$LATEST`.
const LATEST: u64 = 0;

fn label(version: u64) -> String {
    if version == LATEST {
        "$LATEST".to_owned()
    } else {
        version.to_string()
    }
}

/// The version an invocation of `alias` runs: the additional version with its weight's
/// probability, else the alias's own. `$LATEST` is `None`.
pub(crate) fn choose(alias: &AliasRecord) -> Option<u64> {
    let chosen = match alias.additional {
        Some((extra, weight)) if uniform() < weight => extra,
        _ => alias.version,
    };
    (chosen != LATEST).then_some(chosen)
}

/// A uniform draw in [0, 1).
fn uniform() -> f64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return 1.0;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct PublishInput {
    code_sha256: Option<String>,
    description: Option<String>,
    revision_id: Option<String>,
}

/// `POST /2015-03-31/functions/{name}/versions`.
pub(crate) async fn publish(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let name = unqualified(&gateway, &name)?;
    let body = body_of(body)?;
    let input: PublishInput = if body.is_empty() {
        PublishInput::default()
    } else {
        parse_json(&body)?
    };
    let sha_hex = input
        .code_sha256
        .map(|b64| {
            BASE64
                .decode(&b64)
                .map(|d| d.iter().map(|b| format!("{b:02x}")).collect::<String>())
                .map_err(|_| ApiError::invalid_parameter("CodeSha256 is not base64"))
        })
        .transpose()?;
    let version = gateway
        .registry
        .publish_version(
            name.as_str(),
            sha_hex,
            input.revision_id,
            input.description.unwrap_or_default(),
        )
        .await?;
    let body = version_configuration(&gateway, name.as_str(), version).await?;
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn version_configuration(
    gateway: &Gateway,
    function: &str,
    version: u64,
) -> Result<Value, ApiError> {
    let store = gateway.registry.store();
    let record = store
        .get_version(function, version)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Function not found: {function}:{version}")))?;
    let revision = store
        .get_function(function)
        .await?
        .map(|f| f.revision_id)
        .unwrap_or_default();
    Ok(configuration(
        gateway,
        &record,
        &version.to_string(),
        &revision,
    ))
}

/// `GET /2015-03-31/functions/{name}/versions`: `$LATEST`, then the published versions.
pub(crate) async fn list_versions(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let name = unqualified(&gateway, &name)?;
    let deployed = gateway
        .registry
        .latest(name.as_str())
        .ok_or_else(|| ApiError::not_found(format!("Function not found: {}", name.as_str())))?;
    let mut versions = vec![configuration(
        &gateway,
        &deployed.record.latest,
        "$LATEST",
        &deployed.record.revision_id,
    )];
    for (version, _) in gateway
        .registry
        .store()
        .published_versions(name.as_str())
        .await?
    {
        versions.push(version_configuration(&gateway, name.as_str(), version).await?);
    }
    Ok(Json(json!({ "Versions": versions })))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RoutingConfig {
    #[serde(default)]
    additional_version_weights: BTreeMap<String, f64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AliasInput {
    name: Option<String>,
    function_version: Option<String>,
    description: Option<String>,
    routing_config: Option<RoutingConfig>,
    revision_id: Option<String>,
}

fn alias_json(gateway: &Gateway, alias: &AliasRecord) -> Value {
    let mut out = json!({
        "AliasArn": function_arn(&gateway.region, &alias.function, Some(&alias.name)),
        "Name": alias.name,
        "FunctionVersion": label(alias.version),
        "Description": alias.description,
        "RevisionId": alias.revision_id,
    });
    if let Some((extra, weight)) = alias.additional {
        out["RoutingConfig"] = json!({ "AdditionalVersionWeights": { extra.to_string(): weight } });
    }
    out
}

fn check_alias_name(name: &str) -> Result<(), ApiError> {
    let valid = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !name.chars().all(|c| c.is_ascii_digit());
    if valid {
        Ok(())
    } else {
        Err(ApiError::validation(format!(
            "1 validation error detected: Value '{name}' at 'name' failed to satisfy constraint: Member must satisfy regular expression pattern: (?!^[0-9]+$)([a-zA-Z0-9-_]+)"
        )))
    }
}

fn parse_version(text: &str) -> Result<u64, ApiError> {
    match text {
        "$LATEST" => Ok(LATEST),
        n => {
            n.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                ApiError::invalid_parameter(format!("'{n}' is not a function version"))
            })
        }
    }
}

/// The alias change a request asks for; `current` fills in what an update leaves out.
fn change_of(input: &AliasInput, current: Option<&AliasRecord>) -> Result<AliasChange, ApiError> {
    let version = match (&input.function_version, current) {
        (Some(v), _) => parse_version(v)?,
        (None, Some(c)) => c.version,
        (None, None) => {
            return Err(ApiError::invalid_parameter("FunctionVersion is required"));
        }
    };
    let additional = match (&input.routing_config, current) {
        (Some(routing), _) => {
            let weights = &routing.additional_version_weights;
            if weights.len() > 1 {
                return Err(ApiError::invalid_parameter(
                    "RoutingConfig.AdditionalVersionWeights takes at most one version",
                ));
            }
            weights
                .iter()
                .next()
                .map(|(v, w)| Ok::<_, ApiError>((parse_version(v)?, *w)))
                .transpose()?
        }
        (None, Some(c)) => c.additional,
        (None, None) => None,
    };
    Ok(AliasChange {
        version,
        additional,
        description: input
            .description
            .clone()
            .or_else(|| current.map(|c| c.description.clone()))
            .unwrap_or_default(),
    })
}

/// `POST /2015-03-31/functions/{name}/aliases`.
pub(crate) async fn create_alias(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let function = unqualified(&gateway, &name)?;
    let input: AliasInput = parse_json(&body_of(body)?)?;
    let alias = input
        .name
        .clone()
        .ok_or_else(|| ApiError::invalid_parameter("Name is required"))?;
    check_alias_name(&alias)?;
    let change = change_of(&input, None)?;
    let created = gateway
        .registry
        .put_alias(function.as_str(), &alias, change, true, None)
        .await?;
    Ok((StatusCode::CREATED, Json(alias_json(&gateway, &created))).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ListAliasesQuery {
    function_version: Option<String>,
}

/// `GET /2015-03-31/functions/{name}/aliases[?FunctionVersion=N]`.
pub(crate) async fn list_aliases(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
    Query(query): Query<ListAliasesQuery>,
) -> Result<Json<Value>, ApiError> {
    let function = unqualified(&gateway, &name)?;
    if gateway.registry.latest(function.as_str()).is_none() {
        return Err(ApiError::not_found(format!(
            "Function not found: {}",
            function.as_str()
        )));
    }
    let filter = query
        .function_version
        .as_deref()
        .map(parse_version)
        .transpose()?;
    let aliases: Vec<Value> = gateway
        .registry
        .aliases_of(function.as_str())
        .iter()
        .filter(|a| filter.is_none_or(|v| a.version == v))
        .map(|a| alias_json(&gateway, a))
        .collect();
    Ok(Json(json!({ "Aliases": aliases })))
}

fn existing(gateway: &Gateway, function: &str, alias: &str) -> Result<AliasRecord, ApiError> {
    gateway.registry.alias(function, alias).ok_or_else(|| {
        ApiError::not_found(format!(
            "Alias not found: {}",
            function_arn(&gateway.region, function, Some(alias))
        ))
    })
}

/// `GET /2015-03-31/functions/{name}/aliases/{alias}`.
pub(crate) async fn get_alias(
    State(gateway): State<Arc<Gateway>>,
    Path((name, alias)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let function = unqualified(&gateway, &name)?;
    let found = existing(&gateway, function.as_str(), &alias)?;
    Ok(Json(alias_json(&gateway, &found)))
}

/// `PUT /2015-03-31/functions/{name}/aliases/{alias}`.
pub(crate) async fn update_alias(
    State(gateway): State<Arc<Gateway>>,
    Path((name, alias)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let function = unqualified(&gateway, &name)?;
    let current = existing(&gateway, function.as_str(), &alias)?;
    let input: AliasInput = parse_json(&body_of(body)?)?;
    let change = change_of(&input, Some(&current))?;
    let updated = gateway
        .registry
        .put_alias(function.as_str(), &alias, change, false, input.revision_id)
        .await?;
    Ok(Json(alias_json(&gateway, &updated)))
}

/// `DELETE /2015-03-31/functions/{name}/aliases/{alias}`.
pub(crate) async fn delete_alias(
    State(gateway): State<Arc<Gateway>>,
    Path((name, alias)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let function = unqualified(&gateway, &name)?;
    existing(&gateway, function.as_str(), &alias)?;
    gateway
        .registry
        .delete_alias(function.as_str(), &alias)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alias(additional: Option<(u64, f64)>) -> AliasRecord {
        AliasRecord {
            function: "f".into(),
            name: "live".into(),
            version: 1,
            additional,
            description: String::new(),
            revision_id: String::new(),
        }
    }

    #[test]
    fn weights_split_invocations() {
        let split = alias(Some((2, 0.25)));
        let twos = (0..20_000).filter(|_| choose(&split) == Some(2)).count();
        // 5,000 expected; 6 standard deviations (about 61 each) either side.
        assert!((4_630..5_370).contains(&twos), "{twos}");
        assert!((0..1000).all(|_| choose(&alias(None)) == Some(1)));
        assert!((0..1000).all(|_| choose(&alias(Some((2, 0.0)))) == Some(1)));
        assert!((0..1000).all(|_| choose(&alias(Some((2, 1.0)))) == Some(2)));
    }

    #[test]
    fn alias_names_follow_lambda_rules() {
        for ok in ["live", "prod-2", "a_b"] {
            assert!(check_alias_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "123", "a b", "a:b", &"x".repeat(129)] {
            assert!(check_alias_name(bad).is_err(), "{bad}");
        }
    }
}

//! The Lambda control API subset (invoke-api.md §3): create, get, list, update and delete
//! functions, with Lambda's paths and JSON shapes.
//!
//! Rampart extensions accepted on create and configuration updates (and echoed in
//! `FunctionConfiguration`): `ReservedConcurrentExecutions` (the most instances at once),
//! `MinInstances` (kept warm) and `IdleTimeoutSeconds` (idle instances reclaimed after it).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use rampart_model::{FunctionConfig, FunctionName, Qualifier, Runtime, function_arn};
use rampart_store::VersionRecord;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::invoke::resolve;
use crate::{ApiError, Gateway};

/// The request body, or Lambda's error for one that is too large or unreadable.
pub(crate) fn body_of(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(format!(
                "Request must be smaller than {} bytes for this operation",
                rampart_model::MAX_CONTROL_BODY_BYTES
            ))
        } else {
            ApiError::invalid_content(format!("could not read the request body: {e}"))
        }
    })
}

pub(crate) fn parse_json<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid_content(format!("could not parse the request body: {e}")))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EnvironmentInput {
    #[serde(default)]
    variables: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct CodeInput {
    zip_file: Option<String>,
    s3_bucket: Option<String>,
    image_uri: Option<String>,
}

/// Fields shared by CreateFunction and UpdateFunctionConfiguration.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct ConfigInput {
    runtime: Option<String>,
    handler: Option<String>,
    role: Option<String>,
    description: Option<String>,
    timeout: Option<u32>,
    memory_size: Option<u32>,
    environment: Option<EnvironmentInput>,
    package_type: Option<String>,
    /// `null` clears the reservation; absent leaves it as it is.
    #[serde(default, deserialize_with = "present")]
    reserved_concurrent_executions: Option<Option<u32>>,
    min_instances: Option<u32>,
    idle_timeout_seconds: Option<u64>,
    revision_id: Option<String>,
}

impl ConfigInput {
    /// Applies the given fields onto `config`.
    fn apply(self, config: &mut FunctionConfig) -> Result<(), ApiError> {
        if let Some(p) = self.package_type
            && p != "Zip"
        {
            return Err(ApiError::invalid_parameter(format!(
                "PackageType '{p}' is not supported: Rampart runs Zip packages"
            )));
        }
        if let Some(r) = self.runtime {
            config.runtime = r.parse::<Runtime>()?;
        }
        if let Some(h) = self.handler {
            config.handler = h;
        }
        if let Some(r) = self.role {
            config.role = r;
        }
        if let Some(d) = self.description {
            config.description = d;
        }
        if let Some(t) = self.timeout {
            config.timeout_secs = t;
        }
        if let Some(m) = self.memory_size {
            config.memory_mb = m;
        }
        if let Some(e) = self.environment {
            config.environment = e.variables;
        }
        if let Some(c) = self.reserved_concurrent_executions {
            config.max_concurrency = c;
        }
        if let Some(m) = self.min_instances {
            config.min_instances = m;
        }
        if let Some(i) = self.idle_timeout_seconds {
            config.idle_timeout_secs = i;
        }
        config.validate()?;
        Ok(())
    }
}

/// Tells a field given as `null` (`Some(None)`) from one left out (`None`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateInput {
    function_name: String,
    #[serde(default)]
    code: CodeInput,
    #[serde(flatten)]
    config: ConfigInput,
}

fn decode_zip(code: CodeInput) -> Result<Vec<u8>, ApiError> {
    if code.s3_bucket.is_some() || code.image_uri.is_some() {
        return Err(ApiError::invalid_parameter(
            "only Code.ZipFile is supported: Rampart has no S3 or image registry",
        ));
    }
    let zip = code
        .zip_file
        .ok_or_else(|| ApiError::invalid_parameter("Code.ZipFile is required"))?;
    BASE64
        .decode(zip.as_bytes())
        .map_err(|e| ApiError::invalid_parameter(format!("Code.ZipFile is not valid base64: {e}")))
}

fn hex_to_base64(hex: &str) -> String {
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .filter_map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect();
    BASE64.encode(bytes)
}

/// Lambda's `FunctionConfiguration` for one version.
pub(crate) fn configuration(
    gateway: &Gateway,
    version: &VersionRecord,
    label: &str,
    revision_id: &str,
) -> Value {
    let c = &version.config;
    let name = &version.function;
    let qualified = (label != "$LATEST").then_some(label);
    let last_modified = jiff::Timestamp::from_millisecond(version.created_ms)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .strftime("%Y-%m-%dT%H:%M:%S%.3f+0000")
        .to_string();
    json!({
        "FunctionName": name,
        "FunctionArn": function_arn(&gateway.region, name, qualified),
        "Runtime": c.runtime.id(),
        "Role": c.role,
        "Handler": c.handler,
        "CodeSize": version.code_size,
        "Description": c.description,
        "Timeout": c.timeout_secs,
        "MemorySize": c.memory_mb,
        "LastModified": last_modified,
        "CodeSha256": hex_to_base64(&version.code_sha256),
        "Version": label,
        "Environment": {"Variables": c.environment},
        "TracingConfig": {"Mode": "PassThrough"},
        "RevisionId": revision_id,
        "State": "Active",
        "LastUpdateStatus": "Successful",
        "PackageType": "Zip",
        "Architectures": [std::env::consts::ARCH.replace("aarch64", "arm64")],
        "EphemeralStorage": {"Size": 512},
        "LoggingConfig": {"LogFormat": "Text", "LogGroup": format!("/aws/lambda/{name}")},
        "ReservedConcurrentExecutions": c.max_concurrency,
        "MinInstances": c.min_instances,
        "IdleTimeoutSeconds": c.idle_timeout_secs,
        "RampartVersion": version.version,
    })
}

pub(crate) async fn create_function(
    State(gateway): State<Arc<Gateway>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let input: CreateInput = parse_json(&body_of(body)?)?;
    let name = FunctionName::parse(&input.function_name)?;
    let runtime = input
        .config
        .runtime
        .as_deref()
        .ok_or_else(|| ApiError::invalid_parameter("Runtime is required for a Zip package"))?
        .parse::<Runtime>()?;
    let handler = input
        .config
        .handler
        .clone()
        .ok_or_else(|| ApiError::invalid_parameter("Handler is required for a Zip package"))?;
    let mut config = FunctionConfig::new(runtime, handler);
    input.config.apply(&mut config)?;
    // Refuse a taken name before unpacking a large bundle.
    if gateway.registry.latest(name.as_str()).is_some() {
        return Err(ApiError::conflict(format!(
            "Function already exist: {name}"
        )));
    }
    let bundle = gateway
        .registry
        .install_code(decode_zip(input.code)?)
        .await?;
    let deployed = gateway.registry.create(&name, config, &bundle).await?;
    let body = configuration(
        &gateway,
        &deployed.record.latest,
        "$LATEST",
        &deployed.record.revision_id,
    );
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub(crate) async fn list_functions(
    State(gateway): State<Arc<Gateway>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let max_items = match query.get("MaxItems") {
        Some(m) => m
            .parse::<usize>()
            .ok()
            .filter(|m| (1..=10_000).contains(m))
            .ok_or_else(|| ApiError::invalid_parameter("MaxItems must be 1 to 10000"))?
            .min(50),
        None => 50,
    };
    let marker = query.get("Marker").filter(|m| !m.is_empty()).cloned();
    let mut page = gateway
        .registry
        .store()
        .list_functions(marker, max_items + 1)
        .await?;
    let next = (page.len() > max_items).then(|| {
        page.truncate(max_items);
        page.last().map(|f| f.latest.function.clone())
    });
    let functions: Vec<Value> = page
        .iter()
        .map(|f| {
            let mut c = configuration(&gateway, &f.latest, "$LATEST", &f.revision_id);
            if let Some(obj) = c.as_object_mut() {
                // ListFunctions omits the state fields.
                obj.remove("State");
                obj.remove("LastUpdateStatus");
            }
            c
        })
        .collect();
    let mut body = json!({"Functions": functions});
    if let Some(Some(next)) = next {
        body["NextMarker"] = next.into();
    }
    Ok(Json(body))
}

async fn configuration_of(
    gateway: &Gateway,
    name: &str,
    qualifier: Option<&str>,
) -> Result<Value, ApiError> {
    let target = resolve(gateway, name, qualifier).await?;
    let deployed = gateway
        .registry
        .latest(&target.name)
        .ok_or_else(|| ApiError::not_found(format!("Function not found: {}", target.name)))?;
    let version = match target.qualifier {
        Qualifier::Latest => deployed.record.latest.clone(),
        _ => gateway
            .registry
            .store()
            .get_version(&target.name, target.spec.version)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("Function not found: {}", target.name)))?,
    };
    Ok(configuration(
        gateway,
        &version,
        &target.spec.version_label,
        &deployed.record.revision_id,
    ))
}

pub(crate) async fn get_function(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: axum::http::HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let config =
        configuration_of(&gateway, &name, query.get("Qualifier").map(String::as_str)).await?;
    let sha_hex: String = BASE64
        .decode(config["CodeSha256"].as_str().unwrap_or_default())
        .unwrap_or_default()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    // Where the caller reached us, so the link works from where it is followed.
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let mut body = json!({
        "Configuration": config,
        "Code": {"RepositoryType": "S3", "Location": format!("http://{host}/rampart/v1/code/{sha_hex}")},
        "Tags": {},
    });
    if let Some(reserved) = body["Configuration"]["ReservedConcurrentExecutions"].as_u64() {
        body["Concurrency"] = json!({"ReservedConcurrentExecutions": reserved});
    }
    Ok(Json(body))
}

pub(crate) async fn get_function_configuration(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        configuration_of(&gateway, &name, query.get("Qualifier").map(String::as_str)).await?,
    ))
}

/// The function a control call on `$LATEST` names (qualified names are refused).
pub(crate) fn unqualified(gateway: &Gateway, raw: &str) -> Result<FunctionName, ApiError> {
    let function =
        rampart_model::FunctionRef::parse(raw).map_err(|e| ApiError::validation(e.message))?;
    if function
        .qualifier
        .as_ref()
        .is_some_and(|q| *q != Qualifier::Latest)
    {
        return Err(ApiError::invalid_parameter(
            "only the unqualified function ($LATEST) can be updated or deleted",
        ));
    }
    if gateway.registry.latest(function.name.as_str()).is_none() {
        return Err(ApiError::not_found(format!(
            "Function not found: {}",
            function_arn(&gateway.region, function.name.as_str(), None)
        )));
    }
    Ok(function.name)
}

fn updated(gateway: &Gateway, deployed: &crate::Deployed) -> Json<Value> {
    Json(configuration(
        gateway,
        &deployed.record.latest,
        "$LATEST",
        &deployed.record.revision_id,
    ))
}

pub(crate) async fn update_function_configuration(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let name = unqualified(&gateway, &name)?;
    let mut input: ConfigInput = parse_json(&body_of(body)?)?;
    let revision = input.revision_id.take();
    // Applied inside the store's transaction, to the version it reads: concurrent updates
    // each build on the other instead of one overwriting the other.
    let deployed = gateway
        .registry
        .update(&name, revision, move |v: &mut VersionRecord| {
            input
                .apply(&mut v.config)
                .map_err(|e| e.message().to_owned())
        })
        .await?;
    Ok(updated(&gateway, &deployed))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UpdateCodeInput {
    zip_file: Option<String>,
    s3_bucket: Option<String>,
    image_uri: Option<String>,
    revision_id: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

pub(crate) async fn update_function_code(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let name = unqualified(&gateway, &name)?;
    let input: UpdateCodeInput = parse_json(&body_of(body)?)?;
    let zip = decode_zip(CodeInput {
        zip_file: input.zip_file,
        s3_bucket: input.s3_bucket,
        image_uri: input.image_uri,
    })?;
    let bundle = gateway.registry.install_code(zip).await?;
    if input.dry_run {
        let current = gateway
            .registry
            .latest(name.as_str())
            .ok_or_else(|| ApiError::not_found(format!("Function not found: {name}")))?;
        return Ok(updated(&gateway, &current));
    }
    let deployed = gateway
        .registry
        .update(&name, input.revision_id, move |v: &mut VersionRecord| {
            v.code_sha256 = bundle.sha256_hex;
            v.code_size = bundle.size;
            Ok(())
        })
        .await?;
    Ok(updated(&gateway, &deployed))
}

pub(crate) async fn delete_function(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let name = unqualified(&gateway, &name)?;
    match query.get("Qualifier").map(String::as_str) {
        None | Some("$LATEST") => gateway.registry.delete(&name).await?,
        Some(q) => {
            let version = q.parse::<u64>().map_err(|_| {
                ApiError::invalid_parameter(format!(
                    "Qualifier '{q}' is not a version: delete aliases with DeleteAlias"
                ))
            })?;
            gateway
                .registry
                .delete_version(name.as_str(), version)
                .await?;
        }
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ConcurrencyInput {
    reserved_concurrent_executions: u32,
}

/// `PUT /2017-10-31/functions/{name}/concurrency` (PutFunctionConcurrency). `0` disables the
/// function: every synchronous invocation is throttled, as on Lambda.
pub(crate) async fn put_concurrency(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let name = unqualified(&gateway, &name)?;
    let input: ConcurrencyInput = parse_json(&body_of(body)?)?;
    let reserved = input.reserved_concurrent_executions;
    gateway
        .registry
        .update(&name, None, move |v: &mut VersionRecord| {
            v.config.max_concurrency = Some(reserved);
            v.config.validate().map_err(|e| e.message)
        })
        .await?;
    Ok(Json(json!({"ReservedConcurrentExecutions": reserved})))
}

/// `GET /2019-09-30/functions/{name}/concurrency` (GetFunctionConcurrency).
pub(crate) async fn get_concurrency(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let name = unqualified(&gateway, &name)?;
    let deployed = gateway
        .registry
        .latest(name.as_str())
        .ok_or_else(|| ApiError::not_found(format!("Function not found: {name}")))?;
    Ok(Json(match deployed.record.latest.config.max_concurrency {
        Some(n) => json!({"ReservedConcurrentExecutions": n}),
        None => json!({}),
    }))
}

/// `DELETE /2017-10-31/functions/{name}/concurrency` (DeleteFunctionConcurrency).
pub(crate) async fn delete_concurrency(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let name = unqualified(&gateway, &name)?;
    gateway
        .registry
        .update(&name, None, |v: &mut VersionRecord| {
            v.config.max_concurrency = None;
            v.config.validate().map_err(|e| e.message)
        })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /rampart/v1/code/{sha256_hex}`: the zip a version was deployed with (GetFunction's
/// `Code.Location`).
pub(crate) async fn download_code(
    State(gateway): State<Arc<Gateway>>,
    Path(sha256_hex): Path<String>,
) -> Result<Response, ApiError> {
    let valid = sha256_hex.len() == 64 && sha256_hex.bytes().all(|b| b.is_ascii_hexdigit());
    if !valid {
        return Err(ApiError::not_found("no such code bundle"));
    }
    let zip = gateway.registry.read_code(sha256_hex).await?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/zip")], zip).into_response())
}

//! `rampart deploy`: package each function of a project and create or update it through the
//! Lambda control API, only where code or configuration changed.

use std::io::{Cursor, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use base64::Engine;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use zip::write::SimpleFileOptions;

use crate::client::Client;
use crate::manifest::{Manifest, ProjectFunction};

/// Directories never packaged.
const SKIPPED: &[&str] = &["__pycache__", ".git", "node_modules/.cache"];

/// What a deploy did to one function.
pub struct Deployed {
    /// The function.
    pub name: String,
    /// `created`, `updated` or `unchanged`.
    pub action: String,
}

/// Deploys every function of `manifest`.
pub async fn deploy(client: &Client, manifest: &Manifest) -> Result<Vec<Deployed>> {
    let mut done = Vec::new();
    for alarm in &manifest.alarms {
        let input = alarm.put_metric_alarm()?;
        let name = input["AlarmName"].as_str().unwrap_or_default().to_owned();
        client.cloudwatch("PutMetricAlarm", &input).await?;
        done.push(Deployed {
            name: format!("alarm {name}"),
            action: "put".into(),
        });
    }
    for function in &manifest.functions {
        if let Some(build) = &function.build {
            run_build(&manifest.dir, build, function.name.as_str()).await?;
        }
        let code_dir = function.code_dir.clone();
        let bootstrap = function.bootstrap.clone();
        let zip =
            tokio::task::spawn_blocking(move || package(code_dir.as_deref(), bootstrap.as_deref()))
                .await
                .context("packaging task failed")??;
        let mut action = deploy_one(client, function, &zip).await?.to_owned();
        if let Some(config) = &function.event_invoke {
            let body = serde_json::json!({
                "MaximumRetryAttempts": config.maximum_retry_attempts,
                "MaximumEventAgeInSeconds": config.maximum_event_age_secs,
                "DestinationConfig": {
                    "OnSuccess": config.on_success.as_ref().map(|d| serde_json::json!({"Destination": d})).unwrap_or_default(),
                    "OnFailure": config.on_failure.as_ref().map(|d| serde_json::json!({"Destination": d})).unwrap_or_default(),
                },
            });
            client
                .manage(
                    reqwest::Method::PUT,
                    &format!(
                        "/2019-09-25/functions/{}/event-invoke-config",
                        function.name
                    ),
                    Some(body),
                    &format!("setting the event invoke config of {}", function.name),
                )
                .await?;
        }
        if let Some(preference) = &function.deployment {
            let started = client
                .manage(
                    reqwest::Method::POST,
                    &format!("/rampart/v1/functions/{}/deployments", function.name),
                    Some(serde_json::to_value(preference).context("encoding the deployment")?),
                    &format!("deploying {} gradually", function.name),
                )
                .await?;
            action = format!(
                "{action}; deployment {} to version {} behind alias {}: {}",
                started["DeploymentId"].as_str().unwrap_or("?"),
                started["ToVersion"].as_str().unwrap_or("?"),
                preference.alias,
                started["Status"].as_str().unwrap_or("?")
            );
        }
        done.push(Deployed {
            name: function.name.to_string(),
            action,
        });
    }
    for api in &manifest.apis {
        client.put_api(api).await?;
        done.push(Deployed {
            name: format!("api {}", api.name),
            action: "deployed".into(),
        });
    }
    Ok(done)
}

async fn run_build(dir: &Path, build: &[String], name: &str) -> Result<()> {
    let status = tokio::process::Command::new(&build[0])
        .args(&build[1..])
        .current_dir(dir)
        .kill_on_drop(true)
        .status()
        .await
        .with_context(|| format!("function {name}: running build command {build:?}"))?;
    if !status.success() {
        bail!("function {name}: build command {build:?} failed ({status})");
    }
    Ok(())
}

/// The configuration fields of the control API for `function`.
fn configuration(function: &ProjectFunction) -> Value {
    let c = &function.config;
    json!({
        "FunctionName": function.name.as_str(),
        "Runtime": c.runtime.id(),
        "Handler": c.handler,
        "Role": "arn:aws:iam::000000000000:role/rampart",
        "Description": c.description,
        "Timeout": c.timeout_secs,
        "MemorySize": c.memory_mb,
        "Environment": {"Variables": c.environment},
        "ReservedConcurrentExecutions": c.max_concurrency,
        "MinInstances": c.min_instances,
        "IdleTimeoutSeconds": c.idle_timeout_secs,
    })
}

async fn deploy_one(
    client: &Client,
    function: &ProjectFunction,
    zip: &[u8],
) -> Result<&'static str> {
    let name = function.name.as_str();
    let wanted = configuration(function);
    let Some(current) = client.get_function(name).await? else {
        client.create_function(wanted, zip).await?;
        return Ok("created");
    };
    let current = &current["Configuration"];
    let sha = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(zip));
    let mut changed = false;
    if current["CodeSha256"].as_str() != Some(sha.as_str()) {
        client.update_code(name, zip).await?;
        changed = true;
    }
    let differs = [
        "Runtime",
        "Handler",
        "Description",
        "Timeout",
        "MemorySize",
        "ReservedConcurrentExecutions",
        "MinInstances",
        "IdleTimeoutSeconds",
    ]
    .iter()
    .any(|k| current[k] != wanted[k])
        || current["Environment"]["Variables"] != wanted["Environment"]["Variables"];
    if differs {
        let mut update = wanted.clone();
        if let Some(obj) = update.as_object_mut() {
            obj.remove("FunctionName");
        }
        client.update_configuration(name, &update).await?;
        changed = true;
    }
    Ok(if changed { "updated" } else { "unchanged" })
}

/// Zips `dir` (plus `bootstrap`, packaged as the executable `bootstrap`) deterministically:
/// sorted entries and fixed timestamps, so unchanged code has an unchanged `CodeSha256`.
pub fn package(dir: Option<&Path>, bootstrap: Option<&Path>) -> Result<Vec<u8>> {
    let mut files = Vec::new();
    if let Some(dir) = dir {
        collect(dir, dir, &mut files)?;
    }
    files.sort();
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for rel in &files {
        let path = dir.expect("files come from the code dir").join(rel);
        let mode = std::fs::metadata(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .permissions()
            .mode();
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        zip.start_file(rel.as_str(), options.unix_permissions(mode & 0o777))
            .context("writing the zip")?;
        zip.write_all(&bytes).context("writing the zip")?;
    }
    if let Some(bootstrap) = bootstrap {
        let bytes = std::fs::read(bootstrap)
            .with_context(|| format!("reading bootstrap {}", bootstrap.display()))?;
        zip.start_file("bootstrap", options.unix_permissions(0o755))
            .context("writing the zip")?;
        zip.write_all(&bytes).context("writing the zip")?;
    }
    Ok(zip.finish().context("writing the zip")?.into_inner())
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let path = entry.path();
        let rel = path
            .strip_prefix(root)
            .expect("walked paths are under the root")
            .to_string_lossy()
            .into_owned();
        if SKIPPED
            .iter()
            .any(|s| rel == *s || rel.ends_with(&format!("/{s}")))
            || rel.ends_with(".pyc")
        {
            continue;
        }
        let kind = entry
            .file_type()
            .with_context(|| format!("reading {}", path.display()))?;
        if kind.is_dir() {
            collect(root, &path, out)?;
        } else if kind.is_file() || kind.is_symlink() {
            out.push(rel);
        }
    }
    Ok(())
}

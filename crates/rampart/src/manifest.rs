//! `rampart.toml`: the functions of a project directory.
//!
//! ```toml
//! [[function]]
//! name = "counter"
//! runtime = "python3.12"
//! handler = "lambda_function.lambda_handler"
//! code = "python"            # directory, relative to this file (optional with `bootstrap`)
//! timeout = 3                # seconds, 1..=900 (default 3)
//! memory_mb = 128            # 128..=10240 (default 128)
//! max_concurrency = 10       # reserved concurrency (default: no reservation, cap 100)
//! min_instances = 0          # kept warm
//! idle_timeout = "10m"       # idle instances reclaimed after this (default 10m)
//! build = ["cargo", "build", "--release"]   # optional, run in this directory before packaging
//! bootstrap = "target/release/app"          # optional: packaged as the executable `bootstrap`
//! [function.environment]
//! GREETING = "hello"
//!
//! [[api]]                    # HTTP routes, served on the HTTP listener
//! name = "counter"
//! stage = "$default"         # or a stage name: routes are served under /{stage}
//! payload_format = "2.0"     # "1.0" (REST), "2.0" (HTTP API) or "body"
//! [[api.route]]
//! route = "POST /counter"    # "METHOD /path/{param}/{proxy+}" or "$default"
//! function = "counter"
//! payload_format = "body"    # optional, per route
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rampart_model::{FunctionConfig, FunctionName, Runtime};
use serde::Deserialize;

/// One function as the manifest declares it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FunctionEntry {
    name: String,
    runtime: String,
    #[serde(default)]
    handler: Option<String>,
    #[serde(default)]
    code: Option<PathBuf>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    timeout: Option<u32>,
    #[serde(default)]
    memory_mb: Option<u32>,
    #[serde(default)]
    environment: BTreeMap<String, String>,
    #[serde(default)]
    max_concurrency: Option<u32>,
    #[serde(default)]
    min_instances: Option<u32>,
    #[serde(default)]
    idle_timeout: Option<String>,
    #[serde(default)]
    build: Option<Vec<String>>,
    #[serde(default)]
    bootstrap: Option<PathBuf>,
    #[serde(default)]
    event_invoke: Option<EventInvokeEntry>,
    #[serde(default)]
    deployment: Option<DeploymentEntry>,
}

/// `[function.deployment]`: how `rampart deploy` moves an alias to the new version.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeploymentEntry {
    alias: String,
    /// `AllAtOnce`, `Canary`, `Linear`, or a CodeDeploy name (`Canary10Percent5Minutes`).
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    percent: Option<f64>,
    /// Overrides the step interval (`5m`, `10s`).
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    alarms: Vec<String>,
    #[serde(default)]
    pre_traffic_hook: Option<String>,
    #[serde(default)]
    post_traffic_hook: Option<String>,
    #[serde(default)]
    built_in_guard: Option<bool>,
}

/// `[[alarm]]`: a metric alarm, put with PutMetricAlarm by `rampart deploy`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct AlarmEntry {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default = "lambda_namespace")]
    namespace: String,
    metric: String,
    #[serde(default)]
    dimensions: BTreeMap<String, String>,
    statistic: String,
    period: String,
    evaluation_periods: u32,
    #[serde(default)]
    datapoints_to_alarm: Option<u32>,
    threshold: f64,
    comparison: String,
    #[serde(default)]
    treat_missing_data: Option<String>,
    #[serde(default)]
    actions: Vec<String>,
    #[serde(default)]
    ok_actions: Vec<String>,
}

fn lambda_namespace() -> String {
    "AWS/Lambda".into()
}

impl AlarmEntry {
    /// An alarm given field by field (`rampart alarms put`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: String,
        namespace: String,
        metric: String,
        dimensions: BTreeMap<String, String>,
        statistic: String,
        period: String,
        evaluation_periods: u32,
        datapoints_to_alarm: Option<u32>,
        threshold: f64,
        comparison: String,
        treat_missing_data: String,
        actions: Vec<String>,
    ) -> Self {
        Self {
            name,
            description: None,
            namespace,
            metric,
            dimensions,
            statistic,
            period,
            evaluation_periods,
            datapoints_to_alarm,
            threshold,
            comparison,
            treat_missing_data: Some(treat_missing_data),
            actions,
            ok_actions: Vec::new(),
        }
    }

    /// The PutMetricAlarm input of this alarm.
    pub fn put_metric_alarm(&self) -> Result<serde_json::Value> {
        let period = parse_duration(&self.period)
            .map_err(|m| anyhow::anyhow!("alarm '{}': period: {m}", self.name))?
            .as_secs();
        let percentile = self.statistic.starts_with('p');
        let mut input = serde_json::json!({
            "AlarmName": self.name,
            "AlarmDescription": self.description.clone().unwrap_or_default(),
            "Namespace": self.namespace,
            "MetricName": self.metric,
            "Dimensions": self.dimensions.iter().map(|(k, v)| serde_json::json!({"Name": k, "Value": v})).collect::<Vec<_>>(),
            "Period": period,
            "EvaluationPeriods": self.evaluation_periods,
            "DatapointsToAlarm": self.datapoints_to_alarm.unwrap_or(self.evaluation_periods),
            "Threshold": self.threshold,
            "ComparisonOperator": self.comparison,
            "TreatMissingData": self.treat_missing_data.clone().unwrap_or_else(|| "missing".into()),
            "AlarmActions": self.actions,
            "OKActions": self.ok_actions,
        });
        input[if percentile {
            "ExtendedStatistic"
        } else {
            "Statistic"
        }] = serde_json::json!(self.statistic);
        Ok(input)
    }
}

/// `[function.event_invoke]`: retries, event age and destinations of asynchronous invocations.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventInvokeEntry {
    #[serde(default)]
    maximum_retry_attempts: Option<u32>,
    #[serde(default)]
    maximum_event_age: Option<String>,
    #[serde(default)]
    on_success: Option<String>,
    #[serde(default)]
    on_failure: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestFile {
    #[serde(default)]
    function: Vec<toml::Value>,
    #[serde(default)]
    api: Vec<toml::Value>,
    #[serde(default)]
    alarm: Vec<AlarmEntry>,
}

/// An API as the manifest declares it (`route` entries under `[[api.route]]`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiEntry {
    name: String,
    #[serde(default)]
    stage: Option<String>,
    #[serde(default)]
    payload_format: Option<rampart_model::PayloadFormat>,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    route: Vec<rampart_model::RouteSpec>,
    #[serde(default)]
    cors: Option<rampart_model::CorsConfig>,
    #[serde(default)]
    stage_variables: std::collections::BTreeMap<String, String>,
}

fn deployment_preference(
    d: DeploymentEntry,
) -> Result<rampart_gateway::Preference, (&'static str, String)> {
    use rampart_gateway::Strategy;
    let interval = d
        .interval
        .as_deref()
        .map(parse_duration)
        .transpose()
        .map_err(|m| ("deployment.interval", m))?
        .map(|i| i.as_secs());
    let kind = d.kind.as_deref().unwrap_or("AllAtOnce");
    let strategy = match kind {
        "AllAtOnce" => Strategy::AllAtOnce,
        "Canary" | "Linear" => {
            let percent = d
                .percent
                .ok_or(("deployment.percent", format!("is required for {kind}")))?;
            let interval_secs =
                interval.ok_or(("deployment.interval", format!("is required for {kind}")))?;
            if kind == "Canary" {
                Strategy::Canary {
                    percent,
                    interval_secs,
                }
            } else {
                Strategy::Linear {
                    percent,
                    interval_secs,
                }
            }
        }
        name => match (Strategy::from_name(name), interval) {
            (Some(Strategy::Canary { percent, .. }), Some(interval_secs)) => Strategy::Canary {
                percent,
                interval_secs,
            },
            (Some(Strategy::Linear { percent, .. }), Some(interval_secs)) => Strategy::Linear {
                percent,
                interval_secs,
            },
            (Some(s), _) => s,
            (None, _) => {
                return Err((
                    "deployment.type",
                    format!(
                        "'{name}' is not AllAtOnce, Canary, Linear or a CodeDeploy configuration name"
                    ),
                ));
            }
        },
    };
    if d.alias.is_empty() || d.alias.chars().all(|c| c.is_ascii_digit()) {
        return Err(("deployment.alias", "must be an alias name".into()));
    }
    Ok(rampart_gateway::Preference {
        alias: d.alias,
        strategy,
        alarms: d.alarms,
        pre_traffic_hook: d.pre_traffic_hook,
        post_traffic_hook: d.post_traffic_hook,
        built_in_guard: d.built_in_guard.unwrap_or(true),
    })
}

/// A validated function of a project.
#[derive(Debug, Clone)]
pub struct ProjectFunction {
    /// The function's name.
    pub name: FunctionName,
    /// Its configuration.
    pub config: FunctionConfig,
    /// The directory packaged as its code, if any.
    pub code_dir: Option<PathBuf>,
    /// A command run (in the project directory) before packaging.
    pub build: Option<Vec<String>>,
    /// A file packaged as the executable `bootstrap`.
    pub bootstrap: Option<PathBuf>,
    /// Its asynchronous-invocation settings, when declared.
    pub event_invoke: Option<rampart_model::EventInvokeConfig>,
    /// How a deploy moves its alias to the new version, when declared.
    pub deployment: Option<rampart_gateway::Preference>,
}

/// The project of a directory.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The project directory.
    pub dir: PathBuf,
    /// Its functions, in file order.
    pub functions: Vec<ProjectFunction>,
    /// Its HTTP APIs.
    pub apis: Vec<rampart_model::ApiSpec>,
    /// Its metric alarms (put before the functions, so deployments can be guarded by them).
    pub alarms: Vec<AlarmEntry>,
}

impl Manifest {
    /// Reads and validates `<dir>/rampart.toml`.
    ///
    /// # Errors
    /// A message naming the file, the function and the field at fault.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("rampart.toml");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Self::parse(dir, &path, &text)
    }

    fn parse(dir: &Path, path: &Path, text: &str) -> Result<Self> {
        let file = path.display();
        let raw: ManifestFile =
            toml::from_str(text).with_context(|| format!("{file}: invalid manifest"))?;
        if raw.function.is_empty() && raw.api.is_empty() {
            bail!("{file}: no [[function]] is declared");
        }
        let mut functions: Vec<ProjectFunction> = Vec::new();
        for (i, value) in raw.function.into_iter().enumerate() {
            let label = value
                .get("name")
                .and_then(|n| n.as_str())
                .map_or_else(|| format!("#{}", i + 1), |n| format!("'{n}'"));
            let entry: FunctionEntry = value.try_into().map_err(|e: toml::de::Error| {
                anyhow::anyhow!("{file}: function {label}: {}", e.message())
            })?;
            let function = entry.validate(dir).map_err(|(field, message)| {
                anyhow::anyhow!("{file}: function {label}: field '{field}': {message}")
            })?;
            if functions.iter().any(|f| f.name == function.name) {
                bail!("{file}: function {label}: field 'name': declared twice");
            }
            functions.push(function);
        }
        let mut apis: Vec<rampart_model::ApiSpec> = Vec::new();
        for (i, value) in raw.api.into_iter().enumerate() {
            let label = value
                .get("name")
                .and_then(|n| n.as_str())
                .map_or_else(|| format!("#{}", i + 1), |n| format!("'{n}'"));
            let entry: ApiEntry = value.try_into().map_err(|e: toml::de::Error| {
                anyhow::anyhow!("{file}: api {label}: {}", e.message())
            })?;
            let timeout_ms = entry
                .timeout
                .as_deref()
                .map(parse_duration)
                .transpose()
                .map_err(|e| anyhow::anyhow!("{file}: api {label}: field 'timeout': {e}"))?
                .map(|d| d.as_millis() as u64);
            let api = rampart_model::ApiSpec {
                name: entry.name,
                stage: entry.stage.unwrap_or_else(|| "$default".into()),
                payload_format: entry.payload_format.unwrap_or_default(),
                timeout_ms,
                routes: entry.route,
                cors: entry.cors,
                stage_variables: entry.stage_variables,
            };
            api.validate().map_err(|e| {
                anyhow::anyhow!("{file}: api {label}: field '{}': {}", e.field, e.message)
            })?;
            if apis.iter().any(|a| a.name == api.name) {
                bail!("{file}: api {label}: field 'name': declared twice");
            }
            apis.push(api);
        }
        for alarm in &raw.alarm {
            alarm
                .put_metric_alarm()
                .map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            functions,
            apis,
            alarms: raw.alarm,
        })
    }
}

impl FunctionEntry {
    fn validate(self, dir: &Path) -> Result<ProjectFunction, (&'static str, String)> {
        let name = FunctionName::parse(&self.name).map_err(|e| ("name", e.message))?;
        let runtime: Runtime = self
            .runtime
            .parse()
            .map_err(|e: rampart_model::ValidationError| ("runtime", e.message))?;
        let handler = match (self.handler, runtime.family()) {
            (Some(h), _) => h,
            // Custom runtimes ignore the handler; Lambda still wants one.
            (None, rampart_model::RuntimeFamily::Provided) => "bootstrap".to_owned(),
            (None, _) => {
                return Err((
                    "handler",
                    "is required for this runtime (for example lambda_function.lambda_handler)"
                        .into(),
                ));
            }
        };
        let mut config = FunctionConfig::new(runtime, handler);
        if let Some(t) = self.timeout {
            config.timeout_secs = t;
        }
        if let Some(m) = self.memory_mb {
            config.memory_mb = m;
        }
        if let Some(d) = self.description {
            config.description = d;
        }
        config.environment = self.environment;
        config.max_concurrency = self.max_concurrency;
        if let Some(m) = self.min_instances {
            config.min_instances = m;
        }
        if let Some(idle) = self.idle_timeout {
            let d = parse_duration(&idle).map_err(|e| ("idle_timeout", e))?;
            config.idle_timeout_secs = d.as_secs().max(1);
        }
        config
            .validate()
            .map_err(|e| (manifest_field(e.field), e.message))?;
        let code_dir = match (&self.code, &self.bootstrap) {
            (Some(code), _) => {
                let code_dir = dir.join(code);
                if !code_dir.is_dir() {
                    return Err(("code", format!("{} is not a directory", code_dir.display())));
                }
                Some(code_dir)
            }
            (None, Some(_)) => None,
            (None, None) => {
                return Err((
                    "code",
                    "is required (or a bootstrap for a provided runtime)".into(),
                ));
            }
        };
        if let Some(b) = &self.build
            && b.is_empty()
        {
            return Err(("build", "must name a program".into()));
        }
        let event_invoke = match self.event_invoke {
            None => None,
            Some(e) => {
                let mut c = rampart_model::EventInvokeConfig::default();
                if let Some(r) = e.maximum_retry_attempts {
                    c.maximum_retry_attempts = r;
                }
                if let Some(age) = e.maximum_event_age {
                    c.maximum_event_age_secs = parse_duration(&age)
                        .map_err(|m| ("event_invoke.maximum_event_age", m))?
                        .as_secs();
                }
                c.on_success = e.on_success;
                c.on_failure = e.on_failure;
                c.validate().map_err(|v| ("event_invoke", v.message))?;
                Some(c)
            }
        };
        let deployment = self.deployment.map(deployment_preference).transpose()?;
        Ok(ProjectFunction {
            deployment,
            event_invoke,
            name,
            config,
            code_dir,
            build: self.build,
            bootstrap: self.bootstrap.map(|b| dir.join(b)),
        })
    }
}

/// The manifest's name for a configuration field named as AWS names it.
fn manifest_field(aws: &str) -> &'static str {
    match aws {
        "Timeout" => "timeout",
        "MemorySize" => "memory_mb",
        "Handler" => "handler",
        "Environment" => "environment",
        "Description" => "description",
        "ReservedConcurrentExecutions" => "max_concurrency",
        "MinInstances" => "min_instances",
        "IdleTimeout" => "idle_timeout",
        "Runtime" => "runtime",
        _ => "function",
    }
}

/// Parses `"30s"`, `"10m"`, `"1h"` (and ISO 8601 durations).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let d: jiff::SignedDuration = text
        .parse()
        .map_err(|e| format!("'{text}' is not a duration like 30s, 10m or 1h: {e}"))?;
    std::time::Duration::try_from(d).map_err(|_| format!("'{text}' must not be negative"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        Manifest::parse(dir.path(), Path::new("rampart.toml"), text)
    }

    const GOOD: &str = r#"
[[function]]
name = "counter"
runtime = "python3.12"
handler = "app.handler"
code = "src"
timeout = 10
idle_timeout = "2m"
max_concurrency = 4
[function.environment]
GREETING = "hi"
"#;

    #[test]
    fn reads_a_good_manifest() {
        let m = parse(GOOD).unwrap();
        let f = &m.functions[0];
        assert_eq!(f.name.as_str(), "counter");
        assert_eq!(f.config.timeout_secs, 10);
        assert_eq!(f.config.idle_timeout_secs, 120);
        assert_eq!(f.config.max_concurrency, Some(4));
        assert_eq!(f.config.environment["GREETING"], "hi");
        assert_eq!(f.config.memory_mb, 128);
    }

    #[test]
    fn event_invoke_settings_are_read_and_checked() {
        let with = format!(
            "{GOOD}\n[function.event_invoke]\nmaximum_retry_attempts = 0\nmaximum_event_age = \"2m\"\n"
        );
        let m = parse(&with).unwrap();
        let c = m.functions[0].event_invoke.as_ref().unwrap();
        assert_eq!(
            (c.maximum_retry_attempts, c.maximum_event_age_secs),
            (0, 120)
        );
        let err = format!("{:#}", parse(&with.replace("= 0", "= 5")).unwrap_err());
        assert!(
            err.contains("'counter'") && err.contains("event_invoke"),
            "{err}"
        );
    }

    #[test]
    fn apis_are_read_and_checked() {
        let with_api = format!(
            "{GOOD}\n[[api]]\nname = \"shop\"\npayload_format = \"1.0\"\ntimeout = \"2s\"\n[[api.route]]\nroute = \"POST /counter\"\nfunction = \"counter\"\npayload_format = \"body\"\n"
        );
        let m = parse(&with_api).unwrap();
        let api = &m.apis[0];
        assert_eq!(
            (api.name.as_str(), api.stage.as_str(), api.timeout_ms),
            ("shop", "$default", Some(2000))
        );
        assert_eq!(api.payload_format, rampart_model::PayloadFormat::V1);
        assert_eq!(
            api.routes[0].payload_format,
            Some(rampart_model::PayloadFormat::Body)
        );
        let err = format!(
            "{:#}",
            parse(&with_api.replace("POST /counter", "FETCH /counter")).unwrap_err()
        );
        assert!(
            err.contains("api 'shop'") && err.contains("'route'"),
            "{err}"
        );
        let err = format!(
            "{:#}",
            parse(&with_api.replace(
                "function = \"counter\"\npayload",
                "fn = \"counter\"\npayload"
            ))
            .unwrap_err()
        );
        assert!(err.contains("api 'shop'") && err.contains("fn"), "{err}");
    }

    #[test]
    fn errors_name_file_function_and_field() {
        let err = parse(&GOOD.replace("timeout = 10", "timeout = 901")).unwrap_err();
        let err = format!("{err:#}");
        assert!(
            err.contains("rampart.toml") && err.contains("'counter'") && err.contains("'timeout'"),
            "{err}"
        );
        let err = parse(&GOOD.replace("timeout = 10", "timout = 10")).unwrap_err();
        let err = format!("{err:#}");
        assert!(err.contains("'counter'") && err.contains("timout"), "{err}");
        let err = parse(&GOOD.replace("python3.12", "cobol")).unwrap_err();
        let err = format!("{err:#}");
        assert!(err.contains("'runtime'"), "{err}");
        let err = parse(&GOOD.replace("\"2m\"", "\"soon\"")).unwrap_err();
        let err = format!("{err:#}");
        assert!(err.contains("'idle_timeout'"), "{err}");
        let err = parse(&GOOD.replace("code = \"src\"", "code = \"nope\"")).unwrap_err();
        let err = format!("{err:#}");
        assert!(err.contains("'code'"), "{err}");
        let err = parse(&GOOD.replace("name = \"counter\"", "name = \"bad name\"")).unwrap_err();
        let err = format!("{err:#}");
        assert!(err.contains("'name'"), "{err}");
        let err = parse("[[function]]\nname = \"x\"\n").unwrap_err();
        let err = format!("{err:#}");
        assert!(
            err.contains("function 'x'") && err.contains("runtime"),
            "{err}"
        );
        let err = parse("stray = 1\n").unwrap_err();
        let err = format!("{err:#}");
        assert!(err.contains("stray"), "{err}");
        let twice =
            format!("{GOOD}{GOOD}").replace("[function.environment]\nGREETING = \"hi\"\n", "");
        assert!(format!("{:#}", parse(&twice).unwrap_err()).contains("twice"));
    }
}

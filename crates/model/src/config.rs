//! A function's configuration: what one immutable version runs and with which limits.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{ValidationError, limits::*};

/// How a runtime's process is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuntimeFamily {
    /// Rampart's Python bootstrap on the machine's python3.
    Python,
    /// Rampart's Node.js bootstrap on the machine's node.
    Node,
    /// The function's own `bootstrap` executable.
    Provided,
}

/// A Lambda runtime identifier such as `python3.12`, `nodejs20.x` or `provided.al2023`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Runtime {
    id: String,
    family: RuntimeFamily,
}

impl Runtime {
    /// The identifier as given (`python3.12`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// How the runtime's process is started.
    pub fn family(&self) -> RuntimeFamily {
        self.family
    }
}

impl FromStr for Runtime {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let family = if let Some(minor) = s.strip_prefix("python3.") {
            minor
                .parse::<u32>()
                .ok()
                .filter(|m| (8..=14).contains(m))
                .map(|_| RuntimeFamily::Python)
        } else if let Some(major) = s.strip_prefix("nodejs").and_then(|r| r.strip_suffix(".x")) {
            major
                .parse::<u32>()
                .ok()
                .filter(|m| (18..=24).contains(m) && m % 2 == 0)
                .map(|_| RuntimeFamily::Node)
        } else if matches!(s, "provided" | "provided.al2" | "provided.al2023") {
            Some(RuntimeFamily::Provided)
        } else {
            None
        };
        family
            .map(|family| Self {
                id: s.to_owned(),
                family,
            })
            .ok_or_else(|| {
                ValidationError::new(
                    "Runtime",
                    format!(
                        "runtime '{s}' is not supported: use python3.8 to python3.14, nodejs18.x to nodejs24.x, provided, provided.al2 or provided.al2023"
                    ),
                )
            })
    }
}

impl TryFrom<String> for Runtime {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Runtime> for String {
    fn from(r: Runtime) -> Self {
        r.id
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

/// Environment variables a function may not set: the platform owns them (runtime-api.md §2).
const RESERVED_ENV: &[&str] = &[
    "_HANDLER",
    "_X_AMZN_TRACE_ID",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_RUNTIME_API",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
];

/// Everything that defines how one version of a function runs. Immutable once a version holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionConfig {
    /// Which runtime starts the function.
    pub runtime: Runtime,
    /// `module.function` for managed runtimes; free-form for `provided`.
    pub handler: String,
    /// Longest an invocation may run, in seconds (1..=900).
    pub timeout_secs: u32,
    /// Memory limit in MB (128..=10240); enforced with a cgroup or `setrlimit`.
    pub memory_mb: u32,
    /// The function's own environment variables.
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    /// Free text, at most 256 characters.
    #[serde(default)]
    pub description: String,
    /// The execution role ARN as given (stored and echoed; not enforced).
    #[serde(default)]
    pub role: String,
    /// Reserved concurrency: the most instances that may run at once (`0` disables the function,
    /// as on Lambda); `None` means the default cap.
    #[serde(default)]
    pub max_concurrency: Option<u32>,
    /// Instances kept warm even when idle.
    #[serde(default)]
    pub min_instances: u32,
    /// How long an idle instance is kept before it is reclaimed, in seconds.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: u64,
}

fn default_idle_timeout() -> u64 {
    DEFAULT_IDLE_TIMEOUT_SECS
}

impl FunctionConfig {
    /// A configuration with Lambda's defaults for everything but runtime and handler.
    pub fn new(runtime: Runtime, handler: impl Into<String>) -> Self {
        Self {
            runtime,
            handler: handler.into(),
            timeout_secs: DEFAULT_TIMEOUT_SECS,
            memory_mb: DEFAULT_MEMORY_MB,
            environment: BTreeMap::new(),
            description: String::new(),
            role: String::new(),
            max_concurrency: None,
            min_instances: 0,
            idle_timeout_secs: DEFAULT_IDLE_TIMEOUT_SECS,
        }
    }

    /// The timeout as a [`Duration`].
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs.into())
    }

    /// The idle timeout as a [`Duration`].
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }

    /// The most instances that may run at once.
    pub fn concurrency_limit(&self) -> u32 {
        self.max_concurrency.unwrap_or(DEFAULT_MAX_CONCURRENCY)
    }

    /// Checks every field against Lambda's rules.
    ///
    /// # Errors
    /// The first [`ValidationError`] found, naming the field.
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_handler(&self.handler)?;
        if !(1..=MAX_TIMEOUT_SECS).contains(&self.timeout_secs) {
            return Err(ValidationError::new(
                "Timeout",
                format!(
                    "timeout {} is out of range: it must be 1 to {MAX_TIMEOUT_SECS} seconds",
                    self.timeout_secs
                ),
            ));
        }
        if !(MIN_MEMORY_MB..=MAX_MEMORY_MB).contains(&self.memory_mb) {
            return Err(ValidationError::new(
                "MemorySize",
                format!(
                    "memory size {} is out of range: it must be {MIN_MEMORY_MB} to {MAX_MEMORY_MB} MB",
                    self.memory_mb
                ),
            ));
        }
        if self.description.chars().count() > 256 {
            return Err(ValidationError::new(
                "Description",
                "description must be at most 256 characters",
            ));
        }
        validate_environment(&self.environment)?;
        if let Some(max) = self.max_concurrency
            && max > MAX_RESERVED_CONCURRENCY
        {
            return Err(ValidationError::new(
                "ReservedConcurrentExecutions",
                format!(
                    "reserved concurrency {max} exceeds the limit of {MAX_RESERVED_CONCURRENCY} instances"
                ),
            ));
        }
        if self.min_instances > self.concurrency_limit() {
            return Err(ValidationError::new(
                "MinInstances",
                format!(
                    "min_instances {} exceeds the concurrency limit {}",
                    self.min_instances,
                    self.concurrency_limit()
                ),
            ));
        }
        if !(1..=MAX_IDLE_TIMEOUT_SECS).contains(&self.idle_timeout_secs) {
            return Err(ValidationError::new(
                "IdleTimeout",
                format!(
                    "idle_timeout {} is out of range: it must be 1 to {MAX_IDLE_TIMEOUT_SECS} seconds",
                    self.idle_timeout_secs
                ),
            ));
        }
        Ok(())
    }
}

fn validate_handler(handler: &str) -> Result<(), ValidationError> {
    if handler.is_empty() || handler.len() > 128 || handler.chars().any(char::is_whitespace) {
        return Err(ValidationError::new(
            "Handler",
            format!(
                "handler '{handler}' must be 1 to 128 characters with no whitespace (for example lambda_function.lambda_handler)"
            ),
        ));
    }
    Ok(())
}

fn validate_environment(env: &BTreeMap<String, String>) -> Result<(), ValidationError> {
    let reserved: Vec<&str> = env
        .keys()
        .map(String::as_str)
        .filter(|k| RESERVED_ENV.contains(k))
        .collect();
    if !reserved.is_empty() {
        return Err(ValidationError::new(
            "Environment",
            format!(
                "Lambda was unable to configure your environment variables because the environment variables you have provided contains reserved keys that are currently not supported for modification. Reserved keys used in this request: {}",
                reserved.join(", ")
            ),
        ));
    }
    for key in env.keys() {
        let mut chars = key.chars();
        let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
        if !starts_with_letter
            || key.len() < 2
            || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(ValidationError::new(
                "Environment",
                format!(
                    "environment variable name '{key}' must start with a letter and hold at least 2 characters of [a-zA-Z0-9_]"
                ),
            ));
        }
    }
    let size: usize = env.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_ENVIRONMENT_BYTES {
        return Err(ValidationError::new(
            "Environment",
            format!(
                "environment variables take {size} bytes: Lambda allows at most {MAX_ENVIRONMENT_BYTES}"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> FunctionConfig {
        FunctionConfig::new("python3.12".parse().unwrap(), "app.handler")
    }

    #[test]
    fn runtimes_map_to_families() {
        let family = |s: &str| s.parse::<Runtime>().map(|r| r.family());
        assert_eq!(family("python3.12"), Ok(RuntimeFamily::Python));
        assert_eq!(family("nodejs20.x"), Ok(RuntimeFamily::Node));
        assert_eq!(family("nodejs22.x"), Ok(RuntimeFamily::Node));
        assert_eq!(family("provided.al2023"), Ok(RuntimeFamily::Provided));
        assert_eq!(family("provided"), Ok(RuntimeFamily::Provided));
        assert!(family("python2.7").is_err());
        assert!(family("nodejs21.x").is_err());
        assert!(family("java21").is_err());
    }

    #[test]
    fn defaults_are_lambdas() {
        let c = config();
        assert_eq!((c.timeout_secs, c.memory_mb), (3, 128));
        assert!(c.validate().is_ok());
    }

    #[test]
    fn out_of_range_values_name_their_field() {
        let mut c = config();
        c.timeout_secs = 901;
        assert_eq!(c.validate().unwrap_err().field, "Timeout");
        let mut c = config();
        c.memory_mb = 64;
        assert_eq!(c.validate().unwrap_err().field, "MemorySize");
        let mut c = config();
        c.handler = "has space".into();
        assert_eq!(c.validate().unwrap_err().field, "Handler");
        let mut c = config();
        c.idle_timeout_secs = u64::MAX;
        assert_eq!(c.validate().unwrap_err().field, "IdleTimeout");
    }

    #[test]
    fn environment_rules() {
        let mut c = config();
        c.environment.insert("AWS_REGION".into(), "x".into());
        assert!(c.validate().unwrap_err().message.contains("AWS_REGION"));
        let mut c = config();
        c.environment.insert("1X".into(), "x".into());
        assert!(c.validate().is_err());
        let mut c = config();
        c.environment.insert("BIG".into(), "x".repeat(5000));
        assert!(c.validate().unwrap_err().message.contains("4096"));
        let mut c = config();
        c.environment.insert("GOOD_1".into(), "x".into());
        assert!(c.validate().is_ok());
    }

    #[test]
    fn config_round_trips_through_json() {
        let mut c = config();
        c.environment.insert("K1".into(), "v".into());
        c.max_concurrency = Some(4);
        let back: FunctionConfig =
            serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }
}

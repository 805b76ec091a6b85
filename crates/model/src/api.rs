//! HTTP APIs: routes that call functions with API Gateway's proxy events
//! (`shared/spec/api-gateway-events.md`).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{FunctionName, ValidationError};

/// The event a route sends and how it reads the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum PayloadFormat {
    /// REST API proxy events (payload format 1.0); strict response validation.
    #[serde(rename = "1.0")]
    V1,
    /// HTTP API proxy events (payload format 2.0); response inference.
    #[serde(rename = "2.0")]
    #[default]
    V2,
    /// The request's JSON body is the event; a result with `statusCode`/`body` is mapped as a
    /// 2.0 proxy response.
    #[serde(rename = "body")]
    Body,
}

/// HTTP methods a route can name.
pub const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "ANY",
];

/// One route of an API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// `"METHOD /path/{param}/{proxy+}"` or `"$default"`.
    pub route: String,
    /// The function it calls.
    pub function: String,
    /// Overrides the API's payload format for this route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_format: Option<PayloadFormat>,
    /// Requests must carry a valid `x-api-key`; its usage plan's limits apply.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub api_key_required: bool,
    /// The event is queued (durably) and the caller gets 202 with its request id at once.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub asynchronous: bool,
}

/// Limits of the keys assigned to it: a token bucket (rate, burst) and quotas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct UsagePlan {
    /// Sustained requests per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_second: Option<f64>,
    /// Requests allowed at once above the rate (the bucket's size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Requests per UTC day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_per_day: Option<u64>,
    /// Requests per UTC month.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_per_month: Option<u64>,
}

impl UsagePlan {
    /// Checks the numbers.
    ///
    /// # Errors
    /// The field at fault.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self
            .rate_per_second
            .is_some_and(|r| !(r.is_finite() && r > 0.0 && r <= 1_000_000.0))
        {
            return Err(ValidationError::new(
                "rate_per_second",
                "must be above 0 and at most 1000000",
            ));
        }
        if self.burst == Some(0) {
            return Err(ValidationError::new("burst", "must be at least 1"));
        }
        if self.burst.is_some() && self.rate_per_second.is_none() {
            return Err(ValidationError::new("burst", "needs a rate_per_second"));
        }
        Ok(())
    }
}

/// An API: a named set of routes served on the HTTP listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSpec {
    /// 1-64 characters of `[a-zA-Z0-9-_]`.
    pub name: String,
    /// `$default` (no path prefix) or a stage name, served under `/{stage}` as API Gateway does.
    #[serde(default = "default_stage")]
    pub stage: String,
    /// Default payload format of the routes.
    #[serde(default)]
    pub payload_format: PayloadFormat,
    /// Integration timeout in milliseconds (default: 29 s for 1.0, 30 s otherwise; never more
    /// than the function's timeout plus one second).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// The routes.
    pub routes: Vec<RouteSpec>,
    /// Stage variables, passed in every event (`stageVariables`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub stage_variables: std::collections::BTreeMap<String, String>,
    /// CORS: when set, the gateway answers preflights itself and adds the headers to responses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<CorsConfig>,
}

/// An API's CORS configuration, as HTTP APIs' `CorsConfiguration`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Allowed origins (`*` for any).
    #[serde(default)]
    pub allow_origins: Vec<String>,
    /// Allowed methods (`*` for any).
    #[serde(default)]
    pub allow_methods: Vec<String>,
    /// Allowed request headers (`*` for any).
    #[serde(default)]
    pub allow_headers: Vec<String>,
    /// Response headers exposed to the browser.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// How long a preflight may be cached, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<u32>,
    /// Whether credentials are allowed (not with origin `*`).
    #[serde(default)]
    pub allow_credentials: bool,
}

impl CorsConfig {
    /// The `Access-Control-Allow-Origin` value for a request from `origin`, if it is allowed.
    pub fn allowed_origin(&self, origin: &str) -> Option<String> {
        if self.allow_origins.iter().any(|o| o == "*") {
            return Some("*".into());
        }
        self.allow_origins
            .iter()
            .any(|o| o.eq_ignore_ascii_case(origin))
            .then(|| origin.to_owned())
    }
}

fn default_stage() -> String {
    "$default".into()
}

/// A parsed route key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteKey {
    /// `$default`: everything no other route matches.
    Default,
    /// A method (or `ANY`) and a path template.
    Path {
        /// `GET`, ..., or `ANY`.
        method: String,
        /// Segments of the template.
        segments: Vec<Segment>,
    },
}

/// One segment of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Matches itself.
    Literal(String),
    /// `{name}`: one segment.
    Param(String),
    /// `{name+}`: the rest of the path (last segment only).
    Greedy(String),
}

impl RouteKey {
    /// Parses `"$default"` or `"METHOD /path"`.
    ///
    /// # Errors
    /// A [`ValidationError`] on `route` saying what is wrong.
    pub fn parse(key: &str) -> Result<Self, ValidationError> {
        if key == "$default" {
            return Ok(Self::Default);
        }
        let bad = |why: &str| ValidationError::new("route", format!("route '{key}': {why}"));
        let (method, path) = key
            .split_once(' ')
            .ok_or_else(|| bad("must be \"$default\" or \"METHOD /path\""))?;
        if !METHODS.contains(&method) {
            return Err(bad(&format!(
                "method must be one of {}",
                METHODS.join(", ")
            )));
        }
        let rest = path
            .strip_prefix('/')
            .ok_or_else(|| bad("the path must start with '/'"))?;
        let mut segments = Vec::new();
        let parts: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        for (i, part) in parts.iter().enumerate() {
            if part.is_empty() {
                return Err(bad("empty path segment"));
            }
            let segment = match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(inner) => {
                    let (name, greedy) = match inner.strip_suffix('+') {
                        Some(n) => (n, true),
                        None => (inner, false),
                    };
                    if name.is_empty()
                        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    {
                        return Err(bad(&format!("bad parameter '{part}'")));
                    }
                    if greedy && i + 1 != parts.len() {
                        return Err(bad("a greedy {name+} parameter must be the last segment"));
                    }
                    if greedy {
                        Segment::Greedy(name.to_owned())
                    } else {
                        Segment::Param(name.to_owned())
                    }
                }
                None if part.contains('{') || part.contains('}') => {
                    return Err(bad(&format!("segment '{part}' mixes text and a parameter")));
                }
                None => Segment::Literal((*part).to_owned()),
            };
            segments.push(segment);
        }
        Ok(Self::Path {
            method: method.to_owned(),
            segments,
        })
    }
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Literal(l) => f.write_str(l),
            Self::Param(p) => write!(f, "{{{p}}}"),
            Self::Greedy(p) => write!(f, "{{{p}+}}"),
        }
    }
}

impl ApiSpec {
    /// Checks the name, the stage and every route (parse, function name, duplicates).
    ///
    /// # Errors
    /// The first problem found, naming the route.
    pub fn validate(&self) -> Result<(), ValidationError> {
        FunctionName::parse(&self.name).map_err(|_| {
            ValidationError::new(
                "name",
                format!(
                    "API name '{}' must be 1 to 64 characters of [a-zA-Z0-9-_]",
                    self.name
                ),
            )
        })?;
        if self.stage != "$default"
            && (self.stage.is_empty()
                || self.stage.len() > 128
                || !self
                    .stage
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        {
            return Err(ValidationError::new(
                "stage",
                format!(
                    "stage '{}' must be $default or 1 to 128 characters of [a-zA-Z0-9-_]",
                    self.stage
                ),
            ));
        }
        if let Some(cors) = &self.cors
            && cors.allow_credentials
            && cors.allow_origins.iter().any(|o| o == "*")
        {
            return Err(ValidationError::new(
                "cors",
                "allow_credentials cannot be combined with allow_origins = [\"*\"]",
            ));
        }
        if self
            .timeout_ms
            .is_some_and(|t| !(50..=900_000).contains(&t))
        {
            return Err(ValidationError::new("timeout_ms", "must be 50 to 900000"));
        }
        for (i, route) in self.routes.iter().enumerate() {
            RouteKey::parse(&route.route)?;
            // A function name, or `name:qualifier` (a version or an alias).
            crate::FunctionRef::parse(&route.function).map_err(|e| {
                ValidationError::new(
                    "function",
                    format!("route '{}': {}", route.route, e.message),
                )
            })?;
            if let Some(earlier) = self.routes[..i].iter().find(|r| r.route == route.route) {
                return Err(ValidationError::new(
                    "route",
                    format!(
                        "route '{}' is declared twice (functions {} and {})",
                        route.route, earlier.function, route.function
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The payload format of `route`.
    pub fn format_of(&self, route: &RouteSpec) -> PayloadFormat {
        route.payload_format.unwrap_or(self.payload_format)
    }
}

/// Retries, event age and destinations of a function's asynchronous invocations
/// (Lambda's `FunctionEventInvokeConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventInvokeConfig {
    /// Retries after a failed delivery, 0 to 2.
    #[serde(default = "default_retries")]
    pub maximum_retry_attempts: u32,
    /// Oldest an event may get, 60 to 21600 seconds.
    #[serde(default = "default_event_age")]
    pub maximum_event_age_secs: u64,
    /// Function ARN that receives a record of each success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_success: Option<String>,
    /// Function ARN that receives a record of each final failure (else Rampart's DLQ).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<String>,
}

fn default_retries() -> u32 {
    2
}

fn default_event_age() -> u64 {
    21_600
}

impl Default for EventInvokeConfig {
    fn default() -> Self {
        Self {
            maximum_retry_attempts: default_retries(),
            maximum_event_age_secs: default_event_age(),
            on_success: None,
            on_failure: None,
        }
    }
}

impl EventInvokeConfig {
    /// Checks the ranges and that destinations are functions.
    ///
    /// # Errors
    /// The field at fault, named as Lambda names it.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.maximum_retry_attempts > 2 {
            return Err(ValidationError::new(
                "MaximumRetryAttempts",
                "must be 0 to 2",
            ));
        }
        if !(60..=21_600).contains(&self.maximum_event_age_secs) {
            return Err(ValidationError::new(
                "MaximumEventAgeInSeconds",
                "must be 60 to 21600",
            ));
        }
        for destination in [&self.on_success, &self.on_failure].into_iter().flatten() {
            destination_function(destination)?;
        }
        Ok(())
    }
}

/// The function a destination ARN names (Rampart delivers destinations to functions only).
///
/// # Errors
/// When the ARN is not a function's.
pub fn destination_function(arn: &str) -> Result<FunctionName, ValidationError> {
    let parsed = crate::FunctionRef::parse(arn)
        .ok()
        .filter(|_| arn.starts_with("arn:"));
    parsed.map(|f| f.name).ok_or_else(|| {
        ValidationError::new(
            "DestinationConfig",
            format!("destination '{arn}' must be a function ARN (arn:aws:lambda:<region>:<account>:function:<name>): Rampart delivers destinations to functions"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_keys_parse() {
        assert_eq!(RouteKey::parse("$default").unwrap(), RouteKey::Default);
        let RouteKey::Path { method, segments } =
            RouteKey::parse("GET /pets/{id}/{rest+}").unwrap()
        else {
            panic!()
        };
        assert_eq!(method, "GET");
        assert_eq!(
            segments,
            vec![
                Segment::Literal("pets".into()),
                Segment::Param("id".into()),
                Segment::Greedy("rest".into())
            ]
        );
        assert!(RouteKey::parse("GET /").is_ok());
        for bad in [
            "GET",
            "FETCH /x",
            "GET x",
            "GET /a//b",
            "GET /{a+}/b",
            "GET /a{b}",
            "GET /{}",
        ] {
            assert!(RouteKey::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn apis_validate() {
        let route = |r: &str| RouteSpec {
            route: r.into(),
            function: "f".into(),
            payload_format: None,
            api_key_required: false,
            asynchronous: false,
        };
        let mut api = ApiSpec {
            name: "shop".into(),
            stage: "$default".into(),
            payload_format: PayloadFormat::V2,
            timeout_ms: None,
            routes: vec![route("GET /a"), route("ANY /{proxy+}")],
            stage_variables: Default::default(),
            cors: None,
        };
        assert!(api.validate().is_ok());
        api.routes.push(route("GET /a"));
        assert!(api.validate().unwrap_err().message.contains("twice"));
        api.routes.pop();
        api.stage = "bad stage".into();
        assert_eq!(api.validate().unwrap_err().field, "stage");
        api.stage = "$default".into();
        api.cors = Some(CorsConfig {
            allow_origins: vec!["*".into()],
            allow_credentials: true,
            ..CorsConfig::default()
        });
        assert_eq!(api.validate().unwrap_err().field, "cors");
    }
}

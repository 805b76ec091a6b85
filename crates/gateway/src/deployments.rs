//! Gradual deployments (deployments.md §3): an alias moves from its version to a new one in
//! steps (AllAtOnce, Canary, Linear), guarded by alarms, by Rampart's own comparison of the new
//! version with the old one, and by pre- and post-traffic hook functions; any guard that trips,
//! a failed hook, or a rollback request returns all traffic to the old version.
//!
//! A server restart rolls back the deployments it was running (their alias goes back to the
//! old version): a half-shifted alias is never left behind unwatched.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rampart_runtime::InvokeRequest;
use rampart_store::{AliasChange, DeploymentRow, SeriesKey};
use rampart_telemetry::alarms::AlarmState;
use rampart_telemetry::{LAMBDA_NAMESPACE, Query as MetricQuery};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::control::{body_of, parse_json, unqualified};
use crate::{ApiError, Gateway};

/// How often a running deployment checks its guards.
const GUARD_EVERY: Duration = Duration::from_secs(1);
/// The built-in guard needs this many invocations of the new version before it judges.
const MIN_SAMPLES: f64 = 10.0;
/// It rolls back when the new version's error rate exceeds the old one's by this much...
const ERROR_RATE_MARGIN: f64 = 0.05;
/// ...and the difference is this many standard errors wide (two-proportion z-test).
const Z_THRESHOLD: f64 = 3.0;
/// Or when its p99 duration is above twice the old one's plus this many milliseconds.
const P99_MARGIN_MS: f64 = 50.0;

/// How traffic moves.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "Type")]
pub enum Strategy {
    /// All at once.
    AllAtOnce,
    /// `Percent` now, the rest after `IntervalSeconds`.
    Canary {
        /// Share of traffic on the new version first, percent.
        #[serde(rename = "Percent")]
        percent: f64,
        /// Wait before the rest moves.
        #[serde(rename = "IntervalSeconds")]
        interval_secs: u64,
    },
    /// `Percent` more every `IntervalSeconds`.
    Linear {
        /// Share added each step, percent.
        #[serde(rename = "Percent")]
        percent: f64,
        /// Wait between steps.
        #[serde(rename = "IntervalSeconds")]
        interval_secs: u64,
    },
}

impl Strategy {
    /// The weights of the new version, step by step, ending at 1.0, and the wait after each
    /// step but the last.
    fn steps(self) -> (Vec<f64>, Duration) {
        match self {
            Self::AllAtOnce => (vec![1.0], Duration::ZERO),
            Self::Canary {
                percent,
                interval_secs,
            } => (
                vec![percent / 100.0, 1.0],
                Duration::from_secs(interval_secs),
            ),
            Self::Linear {
                percent,
                interval_secs,
            } => {
                let step = (percent / 100.0).clamp(0.01, 1.0);
                let mut weights = Vec::new();
                let mut w = step;
                while w < 1.0 - 1e-9 {
                    weights.push(w);
                    w += step;
                }
                weights.push(1.0);
                (weights, Duration::from_secs(interval_secs))
            }
        }
    }

    /// The strategy a CodeDeploy configuration name describes
    /// (`Canary10Percent5Minutes`, `Linear10PercentEvery1Minute`, `AllAtOnce`).
    pub fn from_name(name: &str) -> Option<Self> {
        if name == "AllAtOnce" {
            return Some(Self::AllAtOnce);
        }
        let minutes = |rest: &str| -> Option<u64> {
            let n: u64 = rest
                .trim_end_matches("Minutes")
                .trim_end_matches("Minute")
                .parse()
                .ok()?;
            Some(n * 60)
        };
        if let Some(rest) = name.strip_prefix("Canary") {
            let (percent, rest) = rest.split_once("Percent")?;
            return Some(Self::Canary {
                percent: percent.parse().ok()?,
                interval_secs: minutes(rest)?,
            });
        }
        if let Some(rest) = name.strip_prefix("Linear") {
            let (percent, rest) = rest.split_once("PercentEvery")?;
            return Some(Self::Linear {
                percent: percent.parse().ok()?,
                interval_secs: minutes(rest)?,
            });
        }
        None
    }
}

/// A deployment preference.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Preference {
    /// The alias moved.
    pub alias: String,
    /// How.
    pub strategy: Strategy,
    /// CloudWatch alarms that roll the deployment back when in ALARM.
    #[serde(default)]
    pub alarms: Vec<String>,
    /// A function that must succeed before traffic moves.
    pub pre_traffic_hook: Option<String>,
    /// A function that must succeed once all traffic is on the new version.
    pub post_traffic_hook: Option<String>,
    /// Rampart's own comparison of the new version with the old one (default on).
    #[serde(default = "yes")]
    pub built_in_guard: bool,
}

fn yes() -> bool {
    true
}

/// Running deployments' rollback switches, by function.
#[derive(Default)]
pub(crate) struct Running(Mutex<HashMap<String, CancellationToken>>);

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn row_json(d: &DeploymentRow) -> Value {
    let spec: Value = serde_json::from_str(&d.spec).unwrap_or(Value::Null);
    json!({
        "DeploymentId": d.id, "FunctionName": d.function, "Alias": d.alias,
        "FromVersion": d.from_version.to_string(), "ToVersion": d.to_version.to_string(),
        "Status": d.status, "Weight": d.weight, "Reason": d.reason,
        "StartedMs": d.started_ms, "UpdatedMs": d.updated_ms, "Preference": spec,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StartInput {
    #[serde(flatten)]
    preference: Preference,
    /// The version to move to; the newest deploy (published now) when absent.
    to_version: Option<String>,
}

/// `POST /rampart/v1/functions/{name}/deployments`: starts a deployment.
pub(crate) async fn start(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let function = unqualified(&gateway, &name)?.to_string();
    let input: StartInput = parse_json(&body_of(body)?)?;
    let preference = input.preference;
    if let Strategy::Canary { percent, .. } | Strategy::Linear { percent, .. } = preference.strategy
        && !(percent > 0.0 && percent < 100.0)
    {
        return Err(ApiError::invalid_parameter(
            "Percent must be between 0 and 100",
        ));
    }
    for hook in [&preference.pre_traffic_hook, &preference.post_traffic_hook]
        .into_iter()
        .flatten()
    {
        if gateway.registry.latest(hook).is_none() {
            return Err(ApiError::invalid_parameter(format!(
                "the hook function {hook} does not exist"
            )));
        }
    }
    let to = match &input.to_version {
        Some(v) => v
            .parse::<u64>()
            .map_err(|_| ApiError::invalid_parameter("ToVersion must be a version number"))?,
        None => {
            gateway
                .registry
                .publish_version(&function, None, None, String::new())
                .await?
        }
    };
    if !gateway.registry.store().is_published(&function, to).await? {
        return Err(ApiError::not_found(format!(
            "Function not found: {function}:{to}"
        )));
    }
    if gateway
        .deployments
        .0
        .lock()
        .expect("deployments lock")
        .contains_key(&function)
    {
        return Err(ApiError::conflict(format!(
            "a deployment of {function} is in progress: roll it back or wait for it"
        )));
    }
    let alias = gateway.registry.alias(&function, &preference.alias);
    let from = match &alias {
        // A first deploy: the alias starts on the new version.
        None => {
            let change = AliasChange {
                version: to,
                additional: None,
                description: String::new(),
            };
            gateway
                .registry
                .put_alias(&function, &preference.alias, change, true, None)
                .await?;
            to
        }
        Some(a) => a.version,
    };
    let now = now_ms();
    let done = from == to;
    let row = DeploymentRow {
        id: format!(
            "d-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..9].to_uppercase()
        ),
        function: function.clone(),
        alias: preference.alias.clone(),
        from_version: from,
        to_version: to,
        spec: serde_json::to_string(&preference).expect("a preference serializes"),
        status: if done { "Succeeded" } else { "InProgress" }.into(),
        weight: if done { 1.0 } else { 0.0 },
        reason: if done {
            "the alias already points to this version".into()
        } else {
            "started".into()
        },
        started_ms: now,
        updated_ms: now,
    };
    gateway
        .registry
        .store()
        .insert_deployment(row.clone())
        .await?;
    if !done {
        let stop = CancellationToken::new();
        gateway
            .deployments
            .0
            .lock()
            .expect("deployments lock")
            .insert(function.clone(), stop.clone());
        let runner = gateway.clone();
        let id = row.id.clone();
        gateway.deployment_tasks.spawn(async move {
            runner.drive(id, function, preference, from, to, stop).await;
        });
    }
    Ok((StatusCode::CREATED, Json(row_json(&row))).into_response())
}

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    function: Option<String>,
}

/// `GET /rampart/v1/deployments[?function=]`.
pub(crate) async fn list(
    State(gateway): State<Arc<Gateway>>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let rows = gateway
        .registry
        .store()
        .list_deployments(q.function)
        .await?;
    Ok(Json(
        json!({ "Deployments": rows.iter().map(row_json).collect::<Vec<_>>() }),
    ))
}

/// `POST /rampart/v1/functions/{name}/deployments/rollback`: stops the running deployment
/// and returns all traffic to the old version.
pub(crate) async fn rollback(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let function = unqualified(&gateway, &name)?.to_string();
    if gateway.request_rollback(&function) {
        Ok(StatusCode::ACCEPTED)
    } else {
        Err(ApiError::not_found(format!(
            "no deployment of {function} is in progress"
        )))
    }
}

/// Why a guard stopped a deployment.
enum Verdict {
    Continue,
    RollBack(String),
}

impl Gateway {
    /// Asks the running deployment of `function` to roll back; false when none runs.
    pub(crate) fn request_rollback(&self, function: &str) -> bool {
        let running = self.deployments.0.lock().expect("deployments lock");
        match running.get(function) {
            Some(stop) => {
                stop.cancel();
                true
            }
            None => false,
        }
    }

    /// Rolls back the deployments a previous server left in progress.
    pub(crate) async fn roll_back_interrupted(&self) -> Result<(), ApiError> {
        for d in self.registry.store().list_deployments(None).await? {
            if d.status != "InProgress" {
                continue;
            }
            self.settle(
                &d.id,
                &d.function,
                &d.alias,
                d.from_version,
                "RolledBack",
                0.0,
                "the server restarted during the deployment: traffic returned to the old version"
                    .into(),
            )
            .await;
        }
        Ok(())
    }

    /// Points the alias at `version` alone and records the deployment's end.
    #[allow(clippy::too_many_arguments)]
    async fn settle(
        &self,
        id: &str,
        function: &str,
        alias: &str,
        version: u64,
        status: &'static str,
        weight: f64,
        reason: String,
    ) {
        let change = AliasChange {
            version,
            additional: None,
            description: self
                .registry
                .alias(function, alias)
                .map(|a| a.description)
                .unwrap_or_default(),
        };
        if let Err(e) = self
            .registry
            .put_alias(function, alias, change, false, None)
            .await
        {
            tracing::error!(%function, %alias, error = %e.message(), "settling a deployment's alias failed");
        }
        tracing::info!(%function, %alias, deployment = %id, status, %reason, "deployment ended");
        if let Err(e) = self
            .registry
            .store()
            .update_deployment(id, status, weight, reason, now_ms())
            .await
        {
            tracing::error!(error = %e, "recording a deployment's end failed");
        }
    }

    /// Runs a deployment to its end.
    async fn drive(
        self: Arc<Self>,
        id: String,
        function: String,
        preference: Preference,
        from: u64,
        to: u64,
        stop: CancellationToken,
    ) {
        let started_s = jiff::Timestamp::now().as_second();
        let outcome = self
            .shift(&id, &function, &preference, from, to, started_s, &stop)
            .await;
        let (version, status, weight, reason) = match outcome {
            Ok(()) => (
                to,
                "Succeeded",
                1.0,
                "all traffic is on the new version".to_owned(),
            ),
            Err(why) => (from, "RolledBack", 0.0, why),
        };
        self.settle(
            &id,
            &function,
            &preference.alias,
            version,
            status,
            weight,
            reason,
        )
        .await;
        self.deployments
            .0
            .lock()
            .expect("deployments lock")
            .remove(&function);
    }

    #[allow(clippy::too_many_arguments)]
    async fn shift(
        &self,
        id: &str,
        function: &str,
        preference: &Preference,
        from: u64,
        to: u64,
        started_s: i64,
        stop: &CancellationToken,
    ) -> Result<(), String> {
        if let Some(hook) = &preference.pre_traffic_hook {
            self.run_hook(hook, id, "PreTraffic").await?;
        }
        let (weights, interval) = preference.strategy.steps();
        for (i, weight) in weights.iter().copied().enumerate() {
            let last = i + 1 == weights.len();
            let change = AliasChange {
                version: if last { to } else { from },
                additional: (!last).then_some((to, weight)),
                description: String::new(),
            };
            self.registry
                .put_alias(function, &preference.alias, change, false, None)
                .await
                .map_err(|e| format!("moving the alias failed: {}", e.message()))?;
            let _ = self
                .registry
                .store()
                .update_deployment(
                    id,
                    "InProgress",
                    weight,
                    format!("{:.0}% on version {to}", weight * 100.0),
                    now_ms(),
                )
                .await;
            // Watch for the interval (and after the last step, one guard check).
            let until = tokio::time::Instant::now() + if last { Duration::ZERO } else { interval };
            loop {
                if stop.is_cancelled() {
                    return Err("rolled back on request".into());
                }
                if let Verdict::RollBack(why) =
                    self.guard(function, preference, from, to, started_s).await
                {
                    return Err(why);
                }
                if tokio::time::Instant::now() >= until {
                    break;
                }
                tokio::select! {
                    () = tokio::time::sleep(GUARD_EVERY) => {}
                    () = stop.cancelled() => {}
                    () = self.deployments_stop.cancelled() => return Err("the server is stopping".into()),
                }
            }
        }
        if let Some(hook) = &preference.post_traffic_hook {
            self.run_hook(hook, id, "PostTraffic").await?;
        }
        Ok(())
    }

    /// Invokes a hook synchronously; its function error (or any failure) fails the deployment.
    async fn run_hook(&self, hook: &str, id: &str, phase: &str) -> Result<(), String> {
        let spec = self
            .registry
            .latest(hook)
            .ok_or_else(|| format!("the {phase} hook {hook} does not exist"))?
            .spec
            .clone();
        let payload =
            json!({"DeploymentId": id, "LifecycleEventHookExecutionId": format!("{id}-{phase}")});
        let request = InvokeRequest {
            request_id: uuid::Uuid::new_v4().to_string(),
            payload: Bytes::from(payload.to_string()),
            invoked_arn: rampart_model::function_arn(&self.region, hook, None),
            trace_id: rampart_telemetry::trace::TraceContext::new_root().xray_header([1; 8]),
            client_context: None,
            tail: false,
            extra_meters: Vec::new(),
        };
        match self.dispatcher.invoke(spec, request).await {
            Ok(o) if !o.function_error => Ok(()),
            Ok(o) => Err(format!(
                "the {phase} hook {hook} failed: {}",
                String::from_utf8_lossy(&o.body)
            )),
            Err(e) => Err(format!("the {phase} hook {hook} could not run: {e:?}")),
        }
    }

    /// The guards: alarms in ALARM, and the built-in comparison of the new version with the
    /// old one since the deployment started.
    async fn guard(
        &self,
        function: &str,
        preference: &Preference,
        from: u64,
        to: u64,
        started_s: i64,
    ) -> Verdict {
        if !preference.alarms.is_empty()
            && let Ok(alarms) = self.registry.store().list_alarms().await
        {
            for name in &preference.alarms {
                if alarms
                    .iter()
                    .any(|a| &a.name == name && a.state == AlarmState::Alarm.as_str())
                {
                    return Verdict::RollBack(format!("the guarding alarm {name} is in ALARM"));
                }
            }
        }
        if !preference.built_in_guard {
            return Verdict::Continue;
        }
        let (new, old) = (
            self.version_stats(function, to, started_s).await,
            self.version_stats(function, from, started_s).await,
        );
        let (Some(new), Some(old)) = (new, old) else {
            return Verdict::Continue;
        };
        if let Some(why) = compare(&new, &old) {
            return Verdict::RollBack(why);
        }
        Verdict::Continue
    }

    /// Invocations, errors and p99 duration of one version since `since_s`.
    async fn version_stats(
        &self,
        function: &str,
        version: u64,
        since_s: i64,
    ) -> Option<VersionStats> {
        let now = jiff::Timestamp::now().as_second() + 1;
        let query = |metric: &str| MetricQuery {
            key: SeriesKey::new(
                LAMBDA_NAMESPACE,
                metric,
                vec![
                    ("FunctionName".to_owned(), function.to_owned()),
                    ("Resource".to_owned(), format!("{function}:{version}")),
                ],
            ),
            unit: None,
            start: since_s,
            end: now,
            period: u32::try_from(now - since_s).unwrap_or(1).max(1),
        };
        let errors = self.telemetry.query(&query("Errors")).await.ok()?;
        let durations = self.telemetry.query(&query("Duration")).await.ok()?;
        let mut total = rampart_telemetry::Aggregate::without_histogram();
        for b in &errors {
            total.merge(&b.values);
        }
        let mut duration = rampart_telemetry::Aggregate::empty();
        for b in &durations {
            duration.merge(&b.values);
        }
        Some(VersionStats {
            invocations: total.count,
            errors: total.sum,
            p99_ms: duration.percentile(99.0),
        })
    }
}

/// What the built-in guard compares.
#[derive(Debug, Clone, Copy)]
struct VersionStats {
    invocations: f64,
    errors: f64,
    p99_ms: Option<f64>,
}

/// The built-in guard's test: the new version's error rate is worse than the old one's by
/// more than [`ERROR_RATE_MARGIN`] with a two-proportion z-score above [`Z_THRESHOLD`], or its
/// p99 is above twice the old one's plus [`P99_MARGIN_MS`]; both need [`MIN_SAMPLES`]
/// invocations of the new version (the old one may have none: its rate is then taken as 0).
fn compare(new: &VersionStats, old: &VersionStats) -> Option<String> {
    if new.invocations < MIN_SAMPLES {
        return None;
    }
    let p_new = new.errors / new.invocations;
    let p_old = if old.invocations > 0.0 {
        old.errors / old.invocations
    } else {
        0.0
    };
    let pooled = (new.errors + old.errors) / (new.invocations + old.invocations.max(0.0));
    let se =
        (pooled * (1.0 - pooled) * (1.0 / new.invocations + 1.0 / old.invocations.max(1.0))).sqrt();
    let z = if se > 0.0 {
        (p_new - p_old) / se
    } else if p_new > p_old {
        f64::INFINITY
    } else {
        0.0
    };
    if p_new - p_old > ERROR_RATE_MARGIN && z > Z_THRESHOLD {
        return Some(format!(
            "the new version fails {:.1}% of {} invocations against {:.1}% of {} for the old one (z = {z:.1})",
            p_new * 100.0,
            new.invocations,
            p_old * 100.0,
            old.invocations
        ));
    }
    if let (Some(p99_new), Some(p99_old)) = (new.p99_ms, old.p99_ms)
        && old.invocations >= MIN_SAMPLES
        && p99_new > 2.0 * p99_old + P99_MARGIN_MS
    {
        return Some(format!(
            "the new version's p99 duration is {p99_new:.1} ms against {p99_old:.1} ms for the old one"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies_step_as_codedeploy_names_them() {
        assert_eq!(
            Strategy::from_name("AllAtOnce").unwrap().steps().0,
            vec![1.0]
        );
        let (w, i) = Strategy::from_name("Canary10Percent5Minutes")
            .unwrap()
            .steps();
        assert_eq!((w, i), (vec![0.1, 1.0], Duration::from_secs(300)));
        let (w, i) = Strategy::from_name("Linear10PercentEvery1Minute")
            .unwrap()
            .steps();
        assert_eq!(w.len(), 10);
        assert!((w[0] - 0.1).abs() < 1e-9 && w[9] == 1.0);
        assert_eq!(i, Duration::from_secs(60));
        assert!(Strategy::from_name("Sideways").is_none());
    }

    #[test]
    fn the_built_in_guard_needs_a_significant_difference() {
        let stats = |invocations, errors| VersionStats {
            invocations,
            errors,
            p99_ms: Some(10.0),
        };
        // 30% failing against 0%: rolled back.
        assert!(compare(&stats(40.0, 12.0), &stats(100.0, 0.0)).is_some());
        // Too few samples to judge.
        assert!(compare(&stats(5.0, 3.0), &stats(100.0, 0.0)).is_none());
        // Same rate: fine.
        assert!(compare(&stats(100.0, 5.0), &stats(100.0, 5.0)).is_none());
        // A small difference is not significant.
        assert!(compare(&stats(20.0, 2.0), &stats(20.0, 1.0)).is_none());
        // Latency: p99 far above the old one's.
        let slow = VersionStats {
            invocations: 50.0,
            errors: 0.0,
            p99_ms: Some(500.0),
        };
        assert!(compare(&slow, &stats(50.0, 0.0)).unwrap().contains("p99"));
    }
}

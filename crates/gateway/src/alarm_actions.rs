//! Alarm actions, run when an alarm changes state (by evaluation or SetAlarmState):
//! - `arn:aws:lambda:<region>:<account>:function:<name>`: invoke the function asynchronously
//!   with the alarm's state-change record (Lambda's CloudWatch alarm event);
//! - `http://...` or `https://...`: POST the record as JSON (5 s timeout, 3 attempts);
//! - `rampart:recycle:<function>`: replace the function's instances, gracefully;
//! - `rampart:rollback:<function>`: roll back the function's deployment in progress.
//!
//! Each outcome goes into the alarm's history (`Action`) and the audit trail.

use std::sync::Arc;
use std::time::Duration;

use rampart_model::FunctionRef;
use rampart_store::{NewAuditRecord, NewEvent};
use rampart_telemetry::alarms::AlarmTransition;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::Gateway;

const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);
const WEBHOOK_ATTEMPTS: u32 = 3;

/// The record an action receives (the shape of Lambda's CloudWatch alarm event).
fn record(gateway: &Gateway, t: &AlarmTransition) -> Value {
    let time = jiff::Timestamp::from_millisecond(t.ts_ms)
        .map(|t| t.to_string())
        .unwrap_or_default();
    json!({
        "source": "aws.cloudwatch",
        "alarmArn": format!("arn:aws:cloudwatch:{}:{}:alarm:{}", gateway.region, rampart_model::ACCOUNT_ID, t.alarm.name),
        "accountId": rampart_model::ACCOUNT_ID,
        "time": time,
        "region": gateway.region,
        "alarmData": {
            "alarmName": t.alarm.name,
            "state": {"value": t.to.as_str(), "reason": t.reason, "reasonData": t.reason_data, "timestamp": time},
            "previousState": {"value": t.from},
            "configuration": if let Some(rule) = &t.alarm.rule {
                json!({"description": t.alarm.description, "alarmRule": rule})
            } else { json!({
                "description": t.alarm.description,
                "metrics": [{"metricStat": {
                    "metric": {"namespace": t.alarm.namespace, "name": t.alarm.metric,
                               "dimensions": t.alarm.dimensions.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>()},
                    "period": t.alarm.period, "stat": t.alarm.statistic}}],
            })},
        },
    })
}

/// Runs one action; `Ok` describes what was done.
async fn run(
    gateway: &Gateway,
    http: &reqwest::Client,
    action: &str,
    payload: &Value,
) -> Result<String, String> {
    if let Some(function) = action.strip_prefix("rampart:rollback:") {
        return if gateway.request_rollback(function) {
            Ok(format!("rolling back the deployment of {function}"))
        } else {
            Err(format!("no deployment of {function} is in progress"))
        };
    }
    if let Some(function) = action.strip_prefix("rampart:recycle:") {
        let deployed = gateway
            .registry
            .latest(function)
            .ok_or_else(|| format!("function {function} does not exist"))?;
        gateway.dispatcher.recycle_function(function);
        gateway.dispatcher.ensure_warm(deployed.spec.clone());
        return Ok(format!("recycled the instances of {function}"));
    }
    if action.starts_with("http://") || action.starts_with("https://") {
        let mut last = String::new();
        for attempt in 1..=WEBHOOK_ATTEMPTS {
            match http
                .post(action)
                .timeout(WEBHOOK_TIMEOUT)
                .json(payload)
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => return Ok(format!("posted to {action}")),
                Ok(r) => last = format!("{action} answered {}", r.status()),
                Err(e) => last = format!("posting to {action} failed: {e}"),
            }
            if attempt < WEBHOOK_ATTEMPTS {
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
        }
        return Err(last);
    }
    if action.starts_with("arn:aws:lambda:") {
        let target = FunctionRef::parse(action).map_err(|e| e.message)?;
        let name = target.name.to_string();
        if gateway.registry.latest(&name).is_none() {
            return Err(format!("function {name} does not exist"));
        }
        let id = uuid::Uuid::new_v4().to_string();
        gateway
            .registry
            .store()
            .enqueue(NewEvent {
                id: id.clone(),
                function: name.clone(),
                qualifier: "$LATEST".into(),
                payload: payload.to_string().into_bytes(),
                enqueued_ms: jiff::Timestamp::now().as_millisecond(),
                trace: None,
            })
            .await
            .map_err(|e| format!("queueing the record for {name} failed: {e}"))?;
        gateway.queue_wakeup.notify_one();
        return Ok(format!("queued the record for {name} as {id}"));
    }
    Err(format!(
        "'{action}' is not an action Rampart runs (a Lambda function ARN, an http(s) URL, rampart:recycle:<function> or rampart:rollback:<function>)"
    ))
}

/// Runs the actions of one transition and records their outcomes.
pub(crate) async fn act(gateway: &Gateway, http: &reqwest::Client, transition: &AlarmTransition) {
    let actions = transition.actions();
    if actions.is_empty() {
        return;
    }
    let payload = record(gateway, transition);
    for action in actions {
        let outcome = run(gateway, http, action, &payload).await;
        let now = jiff::Timestamp::now().as_millisecond();
        let (summary, result) = match &outcome {
            Ok(done) => (
                format!("Successfully executed action {action}: {done}"),
                "OK".to_owned(),
            ),
            Err(why) => (
                format!("Failed to execute action {action}: {why}"),
                "ActionFailed".to_owned(),
            ),
        };
        if outcome.is_err() {
            tracing::warn!(alarm = %transition.alarm.name, %summary, "an alarm action failed");
        }
        let store = gateway.registry.store();
        let data = json!({"actionState": if outcome.is_ok() {"Succeeded"} else {"Failed"}, "stateUpdateTimestamp": transition.ts_ms, "action": action});
        if let Err(e) = store
            .record_alarm_history(
                &transition.alarm.name,
                "Action",
                summary,
                data.to_string(),
                now,
            )
            .await
        {
            tracing::error!(error = %e, "recording an alarm action failed");
        }
        let audit = NewAuditRecord {
            ts_ms: now,
            principal: "rampart".into(),
            source: "alarm".into(),
            action: "AlarmAction".into(),
            resource: transition.alarm.name.clone(),
            parameters: json!({"action": action, "state": transition.to.as_str()}).to_string(),
            result,
        };
        if let Err(e) = store.append_audit(audit).await {
            tracing::error!(error = %e, "recording an alarm action in the audit trail failed");
        }
    }
}

impl Gateway {
    /// Runs the actions of every alarm transition received, until `shutdown` or the sender
    /// is gone.
    pub async fn run_alarm_actions(
        self: Arc<Self>,
        mut transitions: mpsc::Receiver<AlarmTransition>,
        shutdown: CancellationToken,
    ) {
        let http = reqwest::Client::new();
        loop {
            let transition = tokio::select! {
                t = transitions.recv() => match t {
                    Some(t) => t,
                    None => return,
                },
                () = shutdown.cancelled() => return,
            };
            act(&self, &http, &transition).await;
        }
    }
}

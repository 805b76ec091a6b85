//! CloudWatch's metric alarm operations (awsJson 1.0): PutMetricAlarm, DescribeAlarms,
//! DeleteAlarms, SetAlarmState, DescribeAlarmHistory. Alarms are evaluated by the telemetry
//! crate's evaluator; changes are recorded in the alarm history and the audit trail.

use rampart_store::{AlarmRow, NewAuditRecord};
use rampart_telemetry::alarms::{
    AlarmState, AlarmTransition, AnomalyBand, Comparison, MetricAlarm, TreatMissingData,
};
use rampart_telemetry::parse_percentile;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Gateway;
use crate::cloudwatch::{CwError, Dimension, check_dimensions};

const MAX_ACTIONS: usize = 5;
const MAX_RECORDS: usize = 100;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct PutMetricAlarmInput {
    alarm_name: Option<String>,
    alarm_description: Option<String>,
    actions_enabled: Option<bool>,
    #[serde(rename = "OKActions", default)]
    ok_actions: Vec<String>,
    #[serde(default)]
    alarm_actions: Vec<String>,
    #[serde(default)]
    insufficient_data_actions: Vec<String>,
    metric_name: Option<String>,
    namespace: Option<String>,
    statistic: Option<String>,
    extended_statistic: Option<String>,
    #[serde(default)]
    dimensions: Vec<Dimension>,
    period: Option<i64>,
    unit: Option<String>,
    evaluation_periods: Option<u32>,
    datapoints_to_alarm: Option<u32>,
    threshold: Option<f64>,
    comparison_operator: Option<String>,
    treat_missing_data: Option<String>,
    metrics: Option<Value>,
    threshold_metric_id: Option<String>,
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// Records an alarm change in the audit trail (CloudWatch calls share one route, so the
/// audit middleware does not see them).
async fn audit(gateway: &Gateway, action: &str, resource: &str, parameters: Value, result: &str) {
    let record = NewAuditRecord {
        ts_ms: now_ms(),
        principal: "anonymous".into(),
        source: "cloudwatch".into(),
        action: action.into(),
        resource: resource.into(),
        parameters: parameters.to_string(),
        result: result.into(),
    };
    if let Err(e) = gateway.registry.store().append_audit(record).await {
        tracing::error!(error = %e, action, "recording an audit record failed");
    }
}

/// What every metric alarm checks: the period, N and M of N, their product, the treatment
/// of missing data and the action lists.
fn evaluation_settings(
    input: &PutMetricAlarmInput,
    period: i64,
) -> Result<(u32, u32, TreatMissingData), CwError> {
    if !([10, 20, 30].contains(&period) || (period >= 60 && period % 60 == 0)) {
        return Err(CwError::invalid(
            "The parameter Period must be 10, 20, 30 or a multiple of 60.",
        ));
    }
    let n = input
        .evaluation_periods
        .ok_or_else(|| CwError::missing("EvaluationPeriods"))?;
    let m = input.datapoints_to_alarm.unwrap_or(n);
    if n == 0 || m == 0 || m > n {
        return Err(CwError::invalid(
            "EvaluationPeriods must be at least 1 and DatapointsToAlarm from 1 to EvaluationPeriods.",
        ));
    }
    let limit = if period < 3600 { 86_400 } else { 604_800 };
    if period * i64::from(n) > limit {
        return Err(CwError::invalid(format!(
            "Period x EvaluationPeriods must be at most {limit} seconds."
        )));
    }
    let treat_missing_data = match input.treat_missing_data.as_deref() {
        None | Some("missing") => TreatMissingData::Missing,
        Some("ignore") => TreatMissingData::Ignore,
        Some("breaching") => TreatMissingData::Breaching,
        Some("notBreaching") => TreatMissingData::NotBreaching,
        Some(other) => {
            return Err(CwError::invalid(format!(
                "The TreatMissingData '{other}' is not one of missing, ignore, breaching, notBreaching."
            )));
        }
    };
    for (what, list) in [
        ("OKActions", &input.ok_actions),
        ("AlarmActions", &input.alarm_actions),
        ("InsufficientDataActions", &input.insufficient_data_actions),
    ] {
        if list.len() > MAX_ACTIONS {
            return Err(CwError::invalid(format!(
                "The collection {what} must not have more than {MAX_ACTIONS} members."
            )));
        }
    }
    Ok((n, m, treat_missing_data))
}

fn definition(mut input: PutMetricAlarmInput) -> Result<MetricAlarm, CwError> {
    let name = input
        .alarm_name
        .take()
        .ok_or_else(|| CwError::missing("AlarmName"))?;
    if name.is_empty() || name.len() > 255 {
        return Err(CwError::invalid(
            "The parameter AlarmName must be 1 to 255 characters.",
        ));
    }
    if let Some(band_id) = input.threshold_metric_id.clone() {
        return anomaly_definition(name, band_id, input);
    }
    if input.metrics.is_some() {
        return Err(CwError::invalid(
            "Metrics without ThresholdMetricId (metric math alarms) are not supported by Rampart yet.",
        ));
    }
    let period = input.period.ok_or_else(|| CwError::missing("Period"))?;
    let (n, m, treat_missing_data) = evaluation_settings(&input, period)?;
    let namespace = input
        .namespace
        .ok_or_else(|| CwError::missing("Namespace"))?;
    let metric = input
        .metric_name
        .ok_or_else(|| CwError::missing("MetricName"))?;
    let statistic = match (input.statistic, input.extended_statistic) {
        (Some(s), None)
            if ["SampleCount", "Average", "Sum", "Minimum", "Maximum"].contains(&s.as_str()) =>
        {
            s
        }
        (None, Some(p)) if parse_percentile(&p).is_some() => p,
        (Some(_), Some(_)) => {
            return Err(CwError::combination(
                "The parameters Statistic and ExtendedStatistic are mutually exclusive.",
            ));
        }
        (None, None) => return Err(CwError::missing("Statistic or ExtendedStatistic")),
        (Some(s), None) | (None, Some(s)) => {
            return Err(CwError::invalid(format!(
                "The statistic '{s}' is not valid."
            )));
        }
    };
    let threshold = input
        .threshold
        .ok_or_else(|| CwError::missing("Threshold"))?;
    let comparison = match input
        .comparison_operator
        .as_deref()
        .ok_or_else(|| CwError::missing("ComparisonOperator"))?
    {
        "GreaterThanOrEqualToThreshold" => Comparison::GreaterThanOrEqualToThreshold,
        "GreaterThanThreshold" => Comparison::GreaterThanThreshold,
        "LessThanThreshold" => Comparison::LessThanThreshold,
        "LessThanOrEqualToThreshold" => Comparison::LessThanOrEqualToThreshold,
        other => {
            return Err(CwError::invalid(format!(
                "The ComparisonOperator '{other}' is not valid for a static threshold."
            )));
        }
    };
    let mut dimensions = check_dimensions(&input.dimensions, "Dimensions")?;
    dimensions.sort();
    Ok(MetricAlarm {
        name,
        description: input.alarm_description.unwrap_or_default(),
        actions_enabled: input.actions_enabled.unwrap_or(true),
        alarm_actions: input.alarm_actions,
        ok_actions: input.ok_actions,
        insufficient_data_actions: input.insufficient_data_actions,
        namespace,
        metric,
        dimensions,
        statistic,
        period: period as u32,
        unit: input.unit,
        evaluation_periods: n,
        datapoints_to_alarm: m,
        threshold,
        comparison,
        treat_missing_data,
        rule: None,
        anomaly: None,
    })
}

/// `ANOMALY_DETECTION_BAND(m1)` or `ANOMALY_DETECTION_BAND(m1, 2)`: the metric id and width.
fn parse_band(expression: &str) -> Option<(String, f64)> {
    let inner = expression
        .trim()
        .strip_prefix("ANOMALY_DETECTION_BAND(")?
        .strip_suffix(')')?;
    let mut parts = inner.split(',').map(str::trim);
    let id = parts.next().filter(|id| !id.is_empty())?.to_owned();
    let width = match parts.next() {
        Some(w) => w.parse().ok().filter(|w: &f64| *w > 0.0)?,
        None => 2.0,
    };
    parts.next().is_none().then_some((id, width))
}

/// An anomaly-detection alarm: `Metrics` holds the metric query and the band expression named
/// by `ThresholdMetricId`; the operator compares with the band.
fn anomaly_definition(
    name: String,
    band_id: String,
    input: PutMetricAlarmInput,
) -> Result<MetricAlarm, CwError> {
    let metrics = input
        .metrics
        .as_ref()
        .and_then(Value::as_array)
        .ok_or_else(|| CwError::missing("Metrics"))?;
    let band = metrics
        .iter()
        .find(|q| q["Id"] == band_id.as_str())
        .ok_or_else(|| {
            CwError::invalid(format!(
                "ThresholdMetricId {band_id} names no query in Metrics."
            ))
        })?;
    let (metric_id, width) = band["Expression"]
        .as_str()
        .and_then(parse_band)
        .ok_or_else(|| {
            CwError::invalid(
                "The ThresholdMetricId query must be ANOMALY_DETECTION_BAND(id[, width]).",
            )
        })?;
    let query = metrics
        .iter()
        .find(|q| q["Id"] == metric_id.as_str())
        .ok_or_else(|| {
            CwError::invalid(format!(
                "The band names {metric_id}, which is not a query in Metrics."
            ))
        })?;
    let stat = &query["MetricStat"];
    let metric = &stat["Metric"];
    let text = |v: &Value, what: &str| {
        v.as_str()
            .map(str::to_owned)
            .ok_or_else(|| CwError::missing(&format!("Metrics.{metric_id}.{what}")))
    };
    let statistic = text(&stat["Stat"], "MetricStat.Stat")?;
    if !["SampleCount", "Average", "Sum", "Minimum", "Maximum"].contains(&statistic.as_str())
        && parse_percentile(&statistic).is_none()
    {
        return Err(CwError::invalid(format!(
            "The statistic '{statistic}' is not valid."
        )));
    }
    let period = stat["Period"]
        .as_i64()
        .ok_or_else(|| CwError::missing(&format!("Metrics.{metric_id}.MetricStat.Period")))?;
    let (n, m, treat_missing_data) = evaluation_settings(&input, period)?;
    let dimensions: Vec<Dimension> =
        serde_json::from_value(metric["Dimensions"].clone()).unwrap_or_default();
    let mut dimensions = check_dimensions(&dimensions, "Dimensions")?;
    dimensions.sort();
    let comparison = match input.comparison_operator.as_deref() {
        Some("LessThanLowerOrGreaterThanUpperThreshold") => {
            Comparison::LessThanLowerOrGreaterThanUpperThreshold
        }
        Some("LessThanLowerThreshold") => Comparison::LessThanLowerThreshold,
        Some("GreaterThanUpperThreshold") => Comparison::GreaterThanUpperThreshold,
        _ => {
            return Err(CwError::invalid(
                "An anomaly detection alarm compares with its band: LessThanLowerOrGreaterThanUpperThreshold, LessThanLowerThreshold or GreaterThanUpperThreshold.",
            ));
        }
    };
    Ok(MetricAlarm {
        name,
        description: input.alarm_description.unwrap_or_default(),
        actions_enabled: input.actions_enabled.unwrap_or(true),
        alarm_actions: input.alarm_actions,
        ok_actions: input.ok_actions,
        insufficient_data_actions: input.insufficient_data_actions,
        namespace: text(&metric["Namespace"], "MetricStat.Metric.Namespace")?,
        metric: text(&metric["MetricName"], "MetricStat.Metric.MetricName")?,
        dimensions,
        statistic,
        period: period as u32,
        unit: stat["Unit"].as_str().map(str::to_owned),
        evaluation_periods: n,
        datapoints_to_alarm: m,
        threshold: 0.0,
        comparison,
        treat_missing_data,
        rule: None,
        anomaly: Some(AnomalyBand {
            width,
            metric_id,
            band_id,
        }),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct PutCompositeAlarmInput {
    alarm_name: Option<String>,
    alarm_rule: Option<String>,
    alarm_description: Option<String>,
    actions_enabled: Option<bool>,
    #[serde(rename = "OKActions", default)]
    ok_actions: Vec<String>,
    #[serde(default)]
    alarm_actions: Vec<String>,
    #[serde(default)]
    insufficient_data_actions: Vec<String>,
}

pub(crate) async fn put_composite_alarm(
    gateway: &Gateway,
    input: PutCompositeAlarmInput,
) -> Result<Value, CwError> {
    let name = input
        .alarm_name
        .ok_or_else(|| CwError::missing("AlarmName"))?;
    if name.is_empty() || name.len() > 255 {
        return Err(CwError::invalid(
            "The parameter AlarmName must be 1 to 255 characters.",
        ));
    }
    let rule = input
        .alarm_rule
        .ok_or_else(|| CwError::missing("AlarmRule"))?;
    let parsed = rampart_telemetry::alarm_rule::Rule::parse(&rule)
        .map_err(|why| CwError::invalid(format!("The AlarmRule is not valid: {why}.")))?;
    if parsed.names().contains(&name.as_str()) {
        return Err(CwError::invalid(
            "A composite alarm cannot name itself in its rule.",
        ));
    }
    if parsed.names().len() > 100 {
        return Err(CwError::invalid(
            "The AlarmRule names more than 100 alarms.",
        ));
    }
    let mut alarm = MetricAlarm::composite(
        name.clone(),
        rule,
        input.alarm_description.unwrap_or_default(),
    );
    alarm.actions_enabled = input.actions_enabled.unwrap_or(true);
    alarm.alarm_actions = input.alarm_actions;
    alarm.ok_actions = input.ok_actions;
    alarm.insufficient_data_actions = input.insufficient_data_actions;
    let text = serde_json::to_string(&alarm).expect("an alarm serializes");
    let params = serde_json::from_str::<Value>(&text).unwrap_or(Value::Null);
    let stored = gateway
        .registry
        .store()
        .put_alarm(&name, text, now_ms())
        .await
        .map_err(|e| CwError::internal(format!("storing the alarm failed: {e}")));
    let result = if stored.is_ok() {
        "OK"
    } else {
        "InternalServiceError"
    };
    audit(gateway, "PutCompositeAlarm", &name, params, result).await;
    stored?;
    Ok(json!({}))
}

pub(crate) async fn put_metric_alarm(
    gateway: &Gateway,
    input: PutMetricAlarmInput,
) -> Result<Value, CwError> {
    let alarm = definition(input)?;
    let text = serde_json::to_string(&alarm).expect("an alarm serializes");
    let params = serde_json::from_str::<Value>(&text).unwrap_or(Value::Null);
    let stored = gateway
        .registry
        .store()
        .put_alarm(&alarm.name, text, now_ms())
        .await
        .map_err(|e| CwError::internal(format!("storing the alarm failed: {e}")));
    let result = if stored.is_ok() {
        "OK"
    } else {
        "InternalServiceError"
    };
    audit(gateway, "PutMetricAlarm", &alarm.name, params, result).await;
    stored?;
    Ok(json!({}))
}

fn alarm_arn(gateway: &Gateway, name: &str) -> String {
    format!(
        "arn:aws:cloudwatch:{}:{}:alarm:{name}",
        gateway.region,
        rampart_model::ACCOUNT_ID
    )
}

fn describe(gateway: &Gateway, row: &AlarmRow) -> Option<Value> {
    let alarm: MetricAlarm = serde_json::from_str(&row.definition).ok()?;
    if let Some(rule) = &alarm.rule {
        return Some(json!({
            "AlarmName": alarm.name,
            "AlarmArn": alarm_arn(gateway, &row.name),
            "AlarmDescription": alarm.description,
            "AlarmRule": rule,
            "AlarmConfigurationUpdatedTimestamp": row.config_updated_ms as f64 / 1000.0,
            "ActionsEnabled": alarm.actions_enabled,
            "OKActions": alarm.ok_actions,
            "AlarmActions": alarm.alarm_actions,
            "InsufficientDataActions": alarm.insufficient_data_actions,
            "StateValue": row.state,
            "StateReason": row.reason,
            "StateUpdatedTimestamp": row.state_updated_ms as f64 / 1000.0,
        }));
    }
    let mut out = json!({
        "AlarmName": alarm.name,
        "AlarmArn": alarm_arn(gateway, &row.name),
        "AlarmDescription": alarm.description,
        "AlarmConfigurationUpdatedTimestamp": row.config_updated_ms as f64 / 1000.0,
        "ActionsEnabled": alarm.actions_enabled,
        "OKActions": alarm.ok_actions,
        "AlarmActions": alarm.alarm_actions,
        "InsufficientDataActions": alarm.insufficient_data_actions,
        "StateValue": row.state,
        "StateReason": row.reason,
        "StateUpdatedTimestamp": row.state_updated_ms as f64 / 1000.0,
        "MetricName": alarm.metric,
        "Namespace": alarm.namespace,
        "Dimensions": alarm.dimensions.iter().map(|(n, v)| json!({"Name": n, "Value": v})).collect::<Vec<_>>(),
        "Period": alarm.period,
        "EvaluationPeriods": alarm.evaluation_periods,
        "DatapointsToAlarm": alarm.datapoints_to_alarm,
        "Threshold": alarm.threshold,
        "ComparisonOperator": serde_json::to_value(alarm.comparison).ok()?,
        "TreatMissingData": serde_json::to_value(alarm.treat_missing_data).ok()?,
    });
    if parse_percentile(&alarm.statistic).is_some() {
        out["ExtendedStatistic"] = json!(alarm.statistic);
    } else {
        out["Statistic"] = json!(alarm.statistic);
    }
    if let Some(unit) = alarm.unit {
        out["Unit"] = json!(unit);
    }
    if let Some(data) = &row.reason_data {
        out["StateReasonData"] = json!(data);
    }
    if let Some(band) = &alarm.anomaly {
        out["ThresholdMetricId"] = json!(band.band_id);
        out["Metrics"] = json!([
            {"Id": band.metric_id, "ReturnData": true, "MetricStat": {
                "Metric": {"Namespace": out["Namespace"], "MetricName": out["MetricName"], "Dimensions": out["Dimensions"]},
                "Period": alarm.period, "Stat": alarm.statistic}},
            {"Id": band.band_id, "ReturnData": true,
             "Expression": format!("ANOMALY_DETECTION_BAND({}, {})", band.metric_id, band.width)},
        ]);
        if let Some(map) = out.as_object_mut() {
            for key in [
                "Threshold",
                "MetricName",
                "Namespace",
                "Dimensions",
                "Statistic",
                "ExtendedStatistic",
                "Period",
            ] {
                map.remove(key);
            }
        }
    }
    Some(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DescribeAlarmsInput {
    #[serde(default)]
    alarm_names: Vec<String>,
    alarm_name_prefix: Option<String>,
    state_value: Option<String>,
    max_records: Option<usize>,
    next_token: Option<String>,
    /// `MetricAlarm`, `CompositeAlarm`; metric alarms only when absent, as CloudWatch.
    #[serde(default)]
    alarm_types: Vec<String>,
}

pub(crate) async fn describe_alarms(
    gateway: &Gateway,
    input: DescribeAlarmsInput,
) -> Result<Value, CwError> {
    if let Some(state) = &input.state_value
        && AlarmState::parse(state).is_none()
    {
        return Err(CwError::invalid(format!(
            "The StateValue '{state}' is not valid."
        )));
    }
    let offset = match &input.next_token {
        None => 0,
        Some(t) => t
            .parse::<usize>()
            .map_err(|_| CwError::invalid("The NextToken is not valid."))?,
    };
    let limit = input.max_records.unwrap_or(50).clamp(1, MAX_RECORDS);
    let rows = gateway
        .registry
        .store()
        .list_alarms()
        .await
        .map_err(|e| CwError::internal(format!("reading alarms failed: {e}")))?;
    let matching: Vec<&AlarmRow> = rows
        .iter()
        .filter(|r| input.alarm_names.is_empty() || input.alarm_names.contains(&r.name))
        .filter(|r| {
            input
                .alarm_name_prefix
                .as_ref()
                .is_none_or(|p| r.name.starts_with(p.as_str()))
        })
        .filter(|r| input.state_value.as_ref().is_none_or(|s| *s == r.state))
        .collect();
    let wants = |kind: &str| {
        if input.alarm_types.is_empty() {
            kind == "MetricAlarm"
        } else {
            input.alarm_types.iter().any(|t| t == kind)
        }
    };
    let matching: Vec<(&AlarmRow, Value)> = matching
        .into_iter()
        .filter_map(|r| Some((r, describe(gateway, r)?)))
        .filter(|(_, v)| {
            wants(if v.get("AlarmRule").is_some() {
                "CompositeAlarm"
            } else {
                "MetricAlarm"
            })
        })
        .collect();
    let (mut metric, mut composite) = (Vec::new(), Vec::new());
    for (_, v) in matching.iter().skip(offset).take(limit) {
        if v.get("AlarmRule").is_some() {
            composite.push(v.clone());
        } else {
            metric.push(v.clone());
        }
    }
    let mut out = json!({ "MetricAlarms": metric, "CompositeAlarms": composite });
    if offset + limit < matching.len() {
        out["NextToken"] = json!((offset + limit).to_string());
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DeleteAlarmsInput {
    #[serde(default)]
    alarm_names: Vec<String>,
}

fn not_found(message: String) -> CwError {
    CwError::resource_not_found(message)
}

pub(crate) async fn delete_alarms(
    gateway: &Gateway,
    input: DeleteAlarmsInput,
) -> Result<Value, CwError> {
    if input.alarm_names.is_empty() || input.alarm_names.len() > 100 {
        return Err(CwError::invalid(
            "The collection AlarmNames must have 1 to 100 members.",
        ));
    }
    let names = input.alarm_names.clone();
    let deleted = gateway
        .registry
        .store()
        .delete_alarms(input.alarm_names, now_ms())
        .await;
    let result = if deleted.is_ok() {
        "OK"
    } else {
        "ResourceNotFound"
    };
    audit(
        gateway,
        "DeleteAlarms",
        &names.join(","),
        json!({ "AlarmNames": names }),
        result,
    )
    .await;
    deleted.map_err(|e| not_found(format!("{e}")))?;
    Ok(json!({}))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct SetAlarmStateInput {
    alarm_name: Option<String>,
    state_value: Option<String>,
    state_reason: Option<String>,
    state_reason_data: Option<String>,
}

pub(crate) async fn set_alarm_state(
    gateway: &Gateway,
    input: SetAlarmStateInput,
) -> Result<Value, CwError> {
    let name = input
        .alarm_name
        .ok_or_else(|| CwError::missing("AlarmName"))?;
    let state = input
        .state_value
        .as_deref()
        .and_then(AlarmState::parse)
        .ok_or_else(|| {
            CwError::invalid("The StateValue must be OK, ALARM or INSUFFICIENT_DATA.")
        })?;
    let reason = input
        .state_reason
        .ok_or_else(|| CwError::missing("StateReason"))?;
    if let Some(data) = &input.state_reason_data
        && serde_json::from_str::<Value>(data).is_err()
    {
        return Err(CwError::invalid_format(
            "StateReasonData is not valid JSON.",
        ));
    }
    let set = gateway
        .registry
        .store()
        .set_alarm_state(
            &name,
            state.as_str(),
            reason.clone(),
            input.state_reason_data,
            now_ms(),
        )
        .await;
    let result = if set.is_ok() {
        "OK"
    } else {
        "ResourceNotFound"
    };
    audit(
        gateway,
        "SetAlarmState",
        &name,
        json!({ "StateValue": state.as_str(), "StateReason": reason }),
        result,
    )
    .await;
    let previous = set.map_err(|_| not_found(format!("alarm {name} does not exist")))?;
    // Actions run on the change, as for an evaluated one (bounded: webhooks time out).
    if previous != state.as_str() {
        let rows = gateway.registry.store().list_alarms().await;
        let alarm = rows
            .ok()
            .and_then(|rows| rows.into_iter().find(|r| r.name == name))
            .and_then(|r| serde_json::from_str::<MetricAlarm>(&r.definition).ok());
        if let Some(alarm) = alarm {
            let transition = AlarmTransition {
                alarm,
                from: previous,
                to: state,
                reason,
                reason_data: None,
                ts_ms: now_ms(),
            };
            crate::alarm_actions::act(gateway, &reqwest::Client::new(), &transition).await;
        }
    }
    Ok(json!({}))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DescribeAlarmHistoryInput {
    alarm_name: Option<String>,
    history_item_type: Option<String>,
    start_date: Option<f64>,
    end_date: Option<f64>,
    max_records: Option<usize>,
}

pub(crate) async fn describe_alarm_history(
    gateway: &Gateway,
    input: DescribeAlarmHistoryInput,
) -> Result<Value, CwError> {
    if let Some(kind) = &input.history_item_type
        && !["ConfigurationUpdate", "StateUpdate", "Action"].contains(&kind.as_str())
    {
        return Err(CwError::invalid(format!(
            "The HistoryItemType '{kind}' is not valid."
        )));
    }
    let items = gateway
        .registry
        .store()
        .alarm_history(
            input.alarm_name,
            input.history_item_type,
            input.start_date.map_or(i64::MIN, |s| (s * 1000.0) as i64),
            input.end_date.map_or(i64::MAX, |s| (s * 1000.0) as i64),
            input.max_records.unwrap_or(100).clamp(1, 100),
        )
        .await
        .map_err(|e| CwError::internal(format!("reading alarm history failed: {e}")))?;
    let items: Vec<Value> = items
        .into_iter()
        .map(|i| {
            json!({
                "AlarmName": i.alarm,
                "AlarmType": "MetricAlarm",
                "Timestamp": i.ts_ms as f64 / 1000.0,
                "HistoryItemType": i.kind,
                "HistorySummary": i.summary,
                "HistoryData": i.data,
            })
        })
        .collect();
    Ok(json!({ "AlarmHistoryItems": items }))
}

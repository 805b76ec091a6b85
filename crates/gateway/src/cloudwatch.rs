//! The CloudWatch metrics API as current boto3 speaks it: awsJson 1.0 (`POST /`,
//! `X-Amz-Target: GraniteServiceVersion20100801.<Operation>`), with query-compatible errors
//! (`shared/spec/metrics-and-alarms.md` §2-4). PutMetricData, GetMetricStatistics,
//! GetMetricData (metric stats) and ListMetrics.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rampart_store::{MetricPoint, SeriesKey};
use rampart_telemetry::{Aggregate, Bucket, Query};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{Gateway, cloudwatch_alarms as alarms, metric_math};

/// The JSON 1.0 target prefix of CloudWatch operations.
const TARGET_PREFIX: &str = "GraniteServiceVersion20100801.";
/// Largest request CloudWatch takes (after gzip decoding).
pub(crate) const MAX_REQUEST_BYTES: usize = 1024 * 1024;
const MAX_DATUMS: usize = 1000;
const MAX_DIMENSIONS: usize = 30;
const MAX_VALUES: usize = 150;
const MAX_DATAPOINTS: i64 = 1440;
const MAX_QUERIES: usize = 500;
const LIST_PAGE: usize = 500;
/// Accepted timestamps: two weeks back to two hours ahead.
const MAX_AGE_SECS: f64 = 14.0 * 86_400.0;
const MAX_AHEAD_SECS: f64 = 2.0 * 3600.0;
const UNITS: &[&str] = &[
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

/// A CloudWatch error: the query-protocol code goes in `x-amzn-query-error`, the JSON shape
/// name in `__type`.
#[derive(Debug)]
pub(crate) struct CwError {
    status: StatusCode,
    code: &'static str,
    shape: &'static str,
    message: String,
}

impl CwError {
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "InvalidParameterValue",
            shape: "InvalidParameterValueException",
            message: message.into(),
        }
    }

    pub(crate) fn missing(parameter: &str) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "MissingParameter",
            shape: "MissingRequiredParameterException",
            message: format!("The parameter {parameter} is required."),
        }
    }

    pub(crate) fn combination(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "InvalidParameterCombination",
            shape: "InvalidParameterCombinationException",
            message: message.into(),
        }
    }

    pub(crate) fn resource_not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "ResourceNotFound",
            shape: "ResourceNotFoundException",
            message: message.into(),
        }
    }

    pub(crate) fn invalid_format(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "InvalidFormat",
            shape: "InvalidFormatFault",
            message: message.into(),
        }
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "InternalServiceError",
            shape: "InternalServiceFault",
            message: message.into(),
        }
    }
}

impl IntoResponse for CwError {
    fn into_response(self) -> Response {
        let fault = if self.status.is_server_error() {
            "Receiver"
        } else {
            "Sender"
        };
        let body = json!({ "__type": self.shape, "message": self.message });
        let mut response = (self.status, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert("content-type", HeaderValue::from_static(JSON_1_0));
        if let Ok(v) = HeaderValue::from_str(&format!("{};{fault}", self.code)) {
            headers.insert("x-amzn-query-error", v);
        }
        headers.insert("x-amzn-requestid", request_id());
        response
    }
}

const JSON_1_0: &str = "application/x-amz-json-1.0";

fn request_id() -> HeaderValue {
    HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()).expect("a uuid is a header value")
}

fn ok(body: Value) -> Response {
    let mut response = (StatusCode::OK, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static(JSON_1_0));
    headers.insert("x-amzn-requestid", request_id());
    response
}

/// `POST /` with a CloudWatch target.
pub(crate) async fn serve(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match handle(&gateway, &headers, body).await {
        Ok(body) => ok(body),
        Err(e) => e.into_response(),
    }
}

async fn handle(gateway: &Gateway, headers: &HeaderMap, body: Bytes) -> Result<Value, CwError> {
    let target = headers
        .get("x-amz-target")
        .and_then(|t| t.to_str().ok())
        .unwrap_or_default();
    let Some(operation) = target.strip_prefix(TARGET_PREFIX) else {
        return Err(CwError {
            status: StatusCode::BAD_REQUEST,
            code: "InvalidAction",
            shape: "UnknownOperationException",
            message: format!("unknown operation target '{target}'"),
        });
    };
    let gzip = headers
        .get("content-encoding")
        .is_some_and(|e| e.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let body = if gzip { gunzip(&body)? } else { body };
    if body.len() > MAX_REQUEST_BYTES {
        return Err(CwError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "RequestEntityTooLarge",
            shape: "RequestEntityTooLargeException",
            message: format!("the request is larger than {MAX_REQUEST_BYTES} bytes"),
        });
    }
    let telemetry = &gateway.telemetry;
    match operation {
        "PutMetricData" => put_metric_data(telemetry, parse(&body)?).await,
        "GetMetricStatistics" => get_metric_statistics(telemetry, parse(&body)?).await,
        "GetMetricData" => get_metric_data(telemetry, parse(&body)?).await,
        "ListMetrics" => list_metrics(telemetry, parse(&body)?).await,
        "PutMetricAlarm" => alarms::put_metric_alarm(gateway, parse(&body)?).await,
        "PutCompositeAlarm" => alarms::put_composite_alarm(gateway, parse(&body)?).await,
        "DescribeAlarms" => alarms::describe_alarms(gateway, parse(&body)?).await,
        "DeleteAlarms" => alarms::delete_alarms(gateway, parse(&body)?).await,
        "SetAlarmState" => alarms::set_alarm_state(gateway, parse(&body)?).await,
        "DescribeAlarmHistory" => alarms::describe_alarm_history(gateway, parse(&body)?).await,
        other => Err(CwError {
            status: StatusCode::BAD_REQUEST,
            code: "InvalidAction",
            shape: "UnknownOperationException",
            message: format!("the operation {other} is not supported by Rampart"),
        }),
    }
}

fn gunzip(body: &[u8]) -> Result<Bytes, CwError> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .take(MAX_REQUEST_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| CwError::invalid(format!("the gzip body does not decode: {e}")))?;
    Ok(Bytes::from(out))
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, CwError> {
    let body = if body.is_empty() { &b"{}"[..] } else { body };
    serde_json::from_slice(body).map_err(|e| {
        let text = String::from_utf8_lossy(body);
        if text.contains("NaN") || text.contains("Infinity") {
            CwError::invalid("values must be finite numbers: NaN and Infinity are not accepted")
        } else {
            CwError::invalid(format!("the request body is not valid: {e}"))
        }
    })
}

#[derive(Deserialize, Clone)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Dimension {
    name: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DimensionFilter {
    name: String,
    value: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StatisticSet {
    sample_count: f64,
    sum: f64,
    minimum: f64,
    maximum: f64,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Datum {
    metric_name: Option<String>,
    #[serde(default)]
    dimensions: Vec<Dimension>,
    timestamp: Option<f64>,
    value: Option<f64>,
    statistic_values: Option<StatisticSet>,
    values: Option<Vec<f64>>,
    counts: Option<Vec<f64>>,
    unit: Option<String>,
    storage_resolution: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutMetricDataInput {
    namespace: Option<String>,
    metric_data: Option<Vec<Datum>>,
}

fn now_secs_f64() -> f64 {
    jiff::Timestamp::now().as_millisecond() as f64 / 1000.0
}

fn check_name(what: &str, name: &str, max: usize) -> Result<(), CwError> {
    if name.is_empty() || name.len() > max || !name.is_ascii() {
        return Err(CwError::invalid(format!(
            "The parameter {what} must be 1 to {max} ASCII characters."
        )));
    }
    Ok(())
}

/// Checks the dimensions found at parameter `path` (`MetricData.member.1.Dimensions`).
pub(crate) fn check_dimensions(
    dimensions: &[Dimension],
    path: &str,
) -> Result<Vec<(String, String)>, CwError> {
    if dimensions.len() > MAX_DIMENSIONS {
        return Err(CwError::invalid(format!(
            "The collection {path} must not have more than {MAX_DIMENSIONS} members."
        )));
    }
    let mut seen = HashSet::new();
    for d in dimensions {
        check_name(&format!("{path}.Name"), &d.name, 255)?;
        if d.name.starts_with(':') {
            return Err(CwError::invalid(format!(
                "The dimension name '{}' must not start with ':'.",
                d.name
            )));
        }
        if d.value.is_empty() || d.value.len() > 1024 {
            return Err(CwError::invalid(format!(
                "The value of dimension '{}' must be 1 to 1024 characters.",
                d.name
            )));
        }
        if !seen.insert(d.name.as_str()) {
            return Err(CwError::invalid(format!(
                "The dimension '{}' appears more than once in {path}.",
                d.name
            )));
        }
    }
    Ok(dimensions
        .iter()
        .map(|d| (d.name.clone(), d.value.clone()))
        .collect())
}

fn check_unit(unit: Option<&str>) -> Result<String, CwError> {
    let unit = unit.unwrap_or("None");
    if UNITS.contains(&unit) {
        Ok(unit.to_owned())
    } else {
        Err(CwError::invalid(format!("The unit '{unit}' is not valid.")))
    }
}

fn check_value(value: f64, at: &str) -> Result<f64, CwError> {
    // CloudWatch accepts magnitudes up to 2^360.
    if value.is_finite() && value.abs() <= 2f64.powi(360) {
        Ok(value)
    } else {
        Err(CwError::invalid(format!(
            "The value {value} for parameter {at} is invalid."
        )))
    }
}

/// One datum's values as an aggregate.
fn datum_values(datum: &Datum, at: &str) -> Result<Aggregate, CwError> {
    let mut values = Aggregate::empty();
    match (&datum.value, &datum.statistic_values, &datum.values) {
        (Some(v), None, None) => values.add(check_value(*v, &format!("{at}.Value"))?, 1),
        (None, Some(set), None) => {
            for v in [set.sample_count, set.sum, set.minimum, set.maximum] {
                check_value(v, &format!("{at}.StatisticValues"))?;
            }
            if set.sample_count <= 0.0 || set.minimum > set.maximum {
                return Err(CwError::invalid(format!(
                    "The parameter {at}.StatisticValues is invalid: SampleCount must be positive and Minimum at most Maximum."
                )));
            }
            values.add_set(set.sample_count, set.sum, set.minimum, set.maximum);
        }
        (None, None, Some(list)) => {
            if list.len() > MAX_VALUES {
                return Err(CwError::invalid(format!(
                    "The collection {at}.Values must not have more than {MAX_VALUES} members."
                )));
            }
            let counts = datum
                .counts
                .clone()
                .unwrap_or_else(|| vec![1.0; list.len()]);
            if counts.len() != list.len() {
                return Err(CwError::invalid(format!(
                    "The parameters {at}.Values and {at}.Counts must be of the same size."
                )));
            }
            for (v, n) in list.iter().zip(counts) {
                let v = check_value(*v, &format!("{at}.Values"))?;
                if !(n >= 0.0 && n.is_finite()) {
                    return Err(CwError::invalid(format!(
                        "The parameter {at}.Counts must hold non-negative numbers."
                    )));
                }
                if n.fract() == 0.0 {
                    values.add(v, n as u64);
                } else {
                    values.add_set(n, v * n, v, v);
                }
            }
        }
        (None, None, None) => {
            return Err(CwError::missing(&format!(
                "{at}.Value, {at}.StatisticValues or {at}.Values"
            )));
        }
        _ => {
            return Err(CwError::combination(format!(
                "The parameters {at}.Value, {at}.StatisticValues and {at}.Values are mutually exclusive."
            )));
        }
    }
    Ok(values)
}

async fn put_metric_data(
    telemetry: &rampart_telemetry::Telemetry,
    input: PutMetricDataInput,
) -> Result<Value, CwError> {
    let namespace = input
        .namespace
        .ok_or_else(|| CwError::missing("Namespace"))?;
    check_name("Namespace", &namespace, 255)?;
    if namespace.starts_with("AWS/") || namespace.starts_with(':') {
        return Err(CwError::invalid(
            "The value AWS/ for parameter Namespace is invalid: namespaces starting with AWS/ are reserved.",
        ));
    }
    let data = input
        .metric_data
        .ok_or_else(|| CwError::missing("MetricData"))?;
    if data.is_empty() || data.len() > MAX_DATUMS {
        return Err(CwError::invalid(format!(
            "The collection MetricData must have 1 to {MAX_DATUMS} members."
        )));
    }
    let now = now_secs_f64();
    let mut batch: BTreeMap<SeriesKey, Vec<MetricPoint>> = BTreeMap::new();
    for (i, datum) in data.iter().enumerate() {
        let at = format!("MetricData.member.{}", i + 1);
        let name = datum
            .metric_name
            .as_deref()
            .ok_or_else(|| CwError::missing(&format!("{at}.MetricName")))?;
        check_name(&format!("{at}.MetricName"), name, 255)?;
        let dimensions = check_dimensions(&datum.dimensions, &format!("{at}.Dimensions"))?;
        let unit = check_unit(datum.unit.as_deref())?;
        if let Some(r) = datum.storage_resolution
            && r != 1
            && r != 60
        {
            return Err(CwError::invalid(format!(
                "The value {r} for parameter {at}.StorageResolution is invalid: use 1 or 60."
            )));
        }
        let ts = datum.timestamp.unwrap_or(now);
        if !ts.is_finite() || ts < now - MAX_AGE_SECS || ts > now + MAX_AHEAD_SECS {
            return Err(CwError::invalid(format!(
                "The parameter {at}.Timestamp must specify a time no more than two weeks in the past and no more than two hours in the future."
            )));
        }
        let values = datum_values(datum, &at)?;
        batch
            .entry(SeriesKey::new(namespace.clone(), name, dimensions))
            .or_default()
            .push(values.to_point(1, ts.floor() as i64, &unit));
    }
    telemetry
        .put(batch.into_iter().collect())
        .await
        .map_err(|e| CwError::internal(format!("storing the metric data failed: {e}")))?;
    Ok(json!({}))
}

use rampart_telemetry::{parse_percentile, statistic};

fn check_period(period: Option<i64>) -> Result<u32, CwError> {
    let period = period.ok_or_else(|| CwError::missing("Period"))?;
    if period < 1 || !([1, 5, 10, 20, 30].contains(&period) || period % 60 == 0) {
        return Err(CwError::invalid(
            "The parameter Period must be 1, 5, 10, 20, 30 or a multiple of 60.",
        ));
    }
    u32::try_from(period).map_err(|_| CwError::invalid("The parameter Period is too large."))
}

/// Start and end in whole seconds, the start rounded as CloudWatch rounds it.
fn check_range(start: Option<f64>, end: Option<f64>, period: u32) -> Result<(i64, i64), CwError> {
    let start = start.ok_or_else(|| CwError::missing("StartTime"))?;
    let end = end.ok_or_else(|| CwError::missing("EndTime"))?;
    if !(start.is_finite() && end.is_finite()) || start >= end {
        return Err(CwError::invalid(
            "The parameter StartTime must be less than the parameter EndTime.",
        ));
    }
    let align = if period >= 60 { 60 } else { i64::from(period) };
    let start = (start.floor() as i64).div_euclid(align) * align;
    Ok((start, end.ceil() as i64))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetMetricStatisticsInput {
    #[serde(flatten)]
    metric: Metric,
    start_time: Option<f64>,
    end_time: Option<f64>,
    period: Option<i64>,
    statistics: Option<Vec<String>>,
    extended_statistics: Option<Vec<String>>,
    unit: Option<String>,
}

async fn get_metric_statistics(
    telemetry: &rampart_telemetry::Telemetry,
    input: GetMetricStatisticsInput,
) -> Result<Value, CwError> {
    let query = metric_query(
        input.metric,
        "",
        input.period,
        input.unit.as_deref(),
        (input.start_time, input.end_time),
    )?;
    let statistics = input.statistics.unwrap_or_default();
    let extended = input.extended_statistics.unwrap_or_default();
    match (statistics.is_empty(), extended.is_empty()) {
        (true, true) => return Err(CwError::missing("Statistics or ExtendedStatistics")),
        (false, false) => {
            return Err(CwError::combination(
                "The parameters Statistics and ExtendedStatistics are mutually exclusive.",
            ));
        }
        _ => {}
    }
    if statistics.len() > 5 || statistics.iter().any(|s| !BASIC.contains(&s.as_str())) {
        return Err(CwError::invalid(
            "The parameter Statistics must hold 1 to 5 of SampleCount, Average, Sum, Minimum, Maximum.",
        ));
    }
    if extended.len() > 10 || extended.iter().any(|s| parse_percentile(s).is_none()) {
        return Err(CwError::invalid(
            "The parameter ExtendedStatistics must hold 1 to 10 percentiles p0.0 to p100.",
        ));
    }
    let period = i64::from(query.period);
    let requested = (query.end - query.start + period - 1) / period;
    if requested > MAX_DATAPOINTS {
        return Err(CwError::combination(format!(
            "You have requested up to {requested} datapoints, which exceeds the limit of {MAX_DATAPOINTS}. You may reduce the datapoints requested by increasing Period, or decreasing the time range."
        )));
    }
    let label = query.key.name.clone();
    let buckets = read(telemetry, query).await?;
    let datapoints: Vec<Value> = buckets
        .iter()
        .map(|b| {
            let mut point = json!({ "Timestamp": b.ts, "Unit": b.unit });
            for s in &statistics {
                if let Some(v) = statistic(&b.values, s) {
                    point[s.as_str()] = json!(v);
                }
            }
            if !extended.is_empty() {
                let values: serde_json::Map<String, Value> = extended
                    .iter()
                    .filter_map(|p| Some((p.clone(), json!(statistic(&b.values, p)?))))
                    .collect();
                point["ExtendedStatistics"] = Value::Object(values);
            }
            point
        })
        .collect();
    Ok(json!({ "Label": label, "Datapoints": datapoints }))
}

/// The statistics CloudWatch computes without percentiles.
const BASIC: [&str; 5] = ["SampleCount", "Average", "Sum", "Minimum", "Maximum"];

/// A validated read of one metric: `at` prefixes parameter names in errors (the metric's
/// place in the request).
fn metric_query(
    metric: Metric,
    at: &str,
    period: Option<i64>,
    unit: Option<&str>,
    (start, end): (Option<f64>, Option<f64>),
) -> Result<Query, CwError> {
    let namespace = metric
        .namespace
        .ok_or_else(|| CwError::missing(&format!("{at}Namespace")))?;
    let name = metric
        .metric_name
        .ok_or_else(|| CwError::missing(&format!("{at}MetricName")))?;
    let dimensions = check_dimensions(&metric.dimensions, &format!("{at}Dimensions"))?;
    let period = check_period(period)?;
    let (start, end) = check_range(start, end, period)?;
    let unit = unit.map(|u| check_unit(Some(u))).transpose()?;
    Ok(Query {
        key: SeriesKey::new(namespace, name, dimensions),
        unit,
        start,
        end,
        period,
    })
}

async fn read(
    telemetry: &rampart_telemetry::Telemetry,
    query: Query,
) -> Result<Vec<Bucket>, CwError> {
    telemetry
        .query(&query)
        .await
        .map_err(|e| CwError::internal(format!("reading metrics failed: {e}")))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Metric {
    namespace: Option<String>,
    metric_name: Option<String>,
    #[serde(default)]
    dimensions: Vec<Dimension>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct MetricStat {
    metric: Metric,
    period: Option<i64>,
    stat: Option<String>,
    unit: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct MetricDataQuery {
    id: Option<String>,
    metric_stat: Option<MetricStat>,
    expression: Option<String>,
    label: Option<String>,
    return_data: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetMetricDataInput {
    metric_data_queries: Option<Vec<MetricDataQuery>>,
    start_time: Option<f64>,
    end_time: Option<f64>,
    scan_by: Option<String>,
    max_datapoints: Option<usize>,
}

async fn get_metric_data(
    telemetry: &rampart_telemetry::Telemetry,
    input: GetMetricDataInput,
) -> Result<Value, CwError> {
    let queries = input
        .metric_data_queries
        .ok_or_else(|| CwError::missing("MetricDataQueries"))?;
    if queries.is_empty() || queries.len() > MAX_QUERIES {
        return Err(CwError::invalid(format!(
            "The collection MetricDataQueries must have 1 to {MAX_QUERIES} members."
        )));
    }
    let ascending = match input.scan_by.as_deref() {
        None | Some("TimestampDescending") => false,
        Some("TimestampAscending") => true,
        Some(other) => {
            return Err(CwError::invalid(format!(
                "The value {other} for parameter ScanBy is invalid."
            )));
        }
    };
    let max_points = input.max_datapoints.unwrap_or(100_800);
    let mut ids = HashSet::new();
    // Every query's series (returned or not), by id, for the expressions after it.
    let mut series: BTreeMap<String, metric_math::Series> = BTreeMap::new();
    let mut returned = Vec::new();
    for (i, q) in queries.into_iter().enumerate() {
        let at = format!("MetricDataQueries.member.{}", i + 1);
        let id = q.id.ok_or_else(|| CwError::missing(&format!("{at}.Id")))?;
        let well_formed = id.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !well_formed || id.len() > 255 {
            return Err(CwError::invalid(format!(
                "The value {id} for parameter {at}.Id is invalid: it must start with a lower-case letter and hold only letters, digits and underscores."
            )));
        }
        if !ids.insert(id.clone()) {
            return Err(CwError::invalid(format!(
                "The value {id} for parameter {at}.Id is used more than once."
            )));
        }
        let (label, values) = match (q.metric_stat, q.expression) {
            (Some(stat), None) => {
                let stat_name = stat
                    .stat
                    .ok_or_else(|| CwError::missing(&format!("{at}.MetricStat.Stat")))?;
                if !BASIC.contains(&stat_name.as_str()) && parse_percentile(&stat_name).is_none() {
                    return Err(CwError::invalid(format!(
                        "The value {stat_name} for parameter {at}.MetricStat.Stat is not a statistic Rampart computes."
                    )));
                }
                let query = metric_query(
                    stat.metric,
                    &format!("{at}.MetricStat.Metric."),
                    stat.period,
                    stat.unit.as_deref(),
                    (input.start_time, input.end_time),
                )?;
                let label = q.label.unwrap_or_else(|| query.key.name.clone());
                let values: metric_math::Series = read(telemetry, query)
                    .await?
                    .iter()
                    .filter_map(|b| Some((b.ts, statistic(&b.values, &stat_name)?)))
                    .collect();
                (label, values)
            }
            (None, Some(expression)) => {
                let timestamps: Vec<i64> = series
                    .values()
                    .flat_map(|s| s.keys().copied())
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect();
                let values = metric_math::evaluate(&expression, &series, &timestamps).map_err(
                    |why| {
                        CwError::invalid(format!(
                            "The value {expression} for parameter {at}.Expression is invalid: {why}."
                        ))
                    },
                )?;
                (q.label.unwrap_or_else(|| id.clone()), values)
            }
            (None, None) => {
                return Err(CwError::missing(&format!(
                    "{at}.MetricStat or {at}.Expression"
                )));
            }
            (Some(_), Some(_)) => {
                return Err(CwError::combination(format!(
                    "{at}: MetricStat and Expression are mutually exclusive."
                )));
            }
        };
        if q.return_data != Some(false) {
            returned.push((id.clone(), label));
        }
        series.insert(id, values);
    }
    let results: Vec<Value> = returned
        .into_iter()
        .map(|(id, label)| {
            let mut points: Vec<(i64, f64)> = series[&id].iter().map(|(t, v)| (*t, *v)).collect();
            if !ascending {
                points.reverse();
            }
            let (timestamps, values): (Vec<i64>, Vec<f64>) =
                points.into_iter().take(max_points).unzip();
            json!({
                "Id": id,
                "Label": label,
                "Timestamps": timestamps,
                "Values": values,
                "StatusCode": "Complete",
            })
        })
        .collect();
    Ok(json!({ "MetricDataResults": results, "Messages": [] }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListMetricsInput {
    namespace: Option<String>,
    metric_name: Option<String>,
    #[serde(default)]
    dimensions: Vec<DimensionFilter>,
    next_token: Option<String>,
    recently_active: Option<String>,
}

async fn list_metrics(
    telemetry: &rampart_telemetry::Telemetry,
    input: ListMetricsInput,
) -> Result<Value, CwError> {
    let active_since = match input.recently_active.as_deref() {
        None => None,
        Some("PT3H") => Some(jiff::Timestamp::now().as_second() - 3 * 3600),
        Some(other) => {
            return Err(CwError::invalid(format!(
                "The value {other} for parameter RecentlyActive is invalid: use PT3H."
            )));
        }
    };
    let offset = match &input.next_token {
        None => 0,
        Some(token) => token.parse::<usize>().map_err(|_| CwError {
            status: StatusCode::BAD_REQUEST,
            code: "InvalidNextToken",
            shape: "InvalidNextToken",
            message: "The NextToken is not valid.".into(),
        })?,
    };
    let series = telemetry
        .store()
        .list_metric_series(input.namespace, input.metric_name, active_since)
        .await
        .map_err(|e| CwError::internal(format!("listing metrics failed: {e}")))?;
    let matching: Vec<_> = series
        .into_iter()
        .filter(|s| {
            input.dimensions.iter().all(|f| {
                s.key
                    .dimensions
                    .iter()
                    .any(|(n, v)| *n == f.name && f.value.as_ref().is_none_or(|fv| fv == v))
            })
        })
        .collect();
    let page: Vec<Value> = matching
        .iter()
        .skip(offset)
        .take(LIST_PAGE)
        .map(|s| {
            let dims: Vec<Value> = s
                .key
                .dimensions
                .iter()
                .map(|(n, v)| json!({ "Name": n, "Value": v }))
                .collect();
            json!({ "Namespace": s.key.namespace, "MetricName": s.key.name, "Dimensions": dims })
        })
        .collect();
    let mut out = json!({ "Metrics": page });
    if offset + LIST_PAGE < matching.len() {
        out["NextToken"] = json!((offset + LIST_PAGE).to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_and_percentiles_are_named_as_cloudwatch_names_them() {
        let mut values = Aggregate::empty();
        for v in 1..=100 {
            values.add(f64::from(v), 1);
        }
        assert_eq!(statistic(&values, "SampleCount"), Some(100.0));
        assert_eq!(statistic(&values, "Average"), Some(50.5));
        assert_eq!(statistic(&values, "Minimum"), Some(1.0));
        assert_eq!(statistic(&values, "p100"), Some(100.0));
        assert!((statistic(&values, "p99.9").unwrap() - 100.0).abs() < 0.2);
        assert_eq!(statistic(&values, "p101"), None);
        assert_eq!(statistic(&values, "tm90"), None);
    }

    #[test]
    fn periods_and_ranges_are_checked_and_rounded() {
        assert!(check_period(Some(7)).is_err());
        assert!(check_period(Some(0)).is_err());
        assert_eq!(check_period(Some(120)).unwrap(), 120);
        assert_eq!(
            check_range(Some(125.5), Some(300.0), 60).unwrap(),
            (120, 300)
        );
        assert_eq!(
            check_range(Some(127.0), Some(300.0), 5).unwrap(),
            (125, 300)
        );
        assert!(check_range(Some(300.0), Some(300.0), 60).is_err());
    }

    #[test]
    fn gzip_bodies_decode_within_the_request_limit() {
        use std::io::Write;
        let gzip = |data: &[u8]| {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(data).unwrap();
            encoder.finish().unwrap()
        };
        assert_eq!(gunzip(&gzip(b"{}")).unwrap().as_ref(), b"{}");
        // A small body that inflates past the limit stops one byte over it (refused as too
        // large by the caller), never inflating the whole bomb.
        let bomb = gzip(&vec![b' '; 64 * MAX_REQUEST_BYTES]);
        assert!(bomb.len() < MAX_REQUEST_BYTES / 10);
        assert_eq!(gunzip(&bomb).unwrap().len(), MAX_REQUEST_BYTES + 1);
        assert_eq!(
            gunzip(b"not gzip").unwrap_err().code,
            "InvalidParameterValue"
        );
    }
}

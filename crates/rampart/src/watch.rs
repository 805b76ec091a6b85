//! `rampart metrics` (one metric as a table and a sparkline) and `rampart top` (live
//! per-function rates), both read through the CloudWatch API.

use std::time::Duration;

use anyhow::{Result, bail};
use serde_json::{Value, json};

use crate::client::Client;

const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// One character a value, scaled between the smallest and largest; gaps stay blank.
pub fn sparkline(values: &[Option<f64>]) -> String {
    let present = values.iter().flatten();
    let (low, high) = present.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(*v), hi.max(*v))
    });
    values
        .iter()
        .map(|v| match v {
            None => ' ',
            Some(_) if high <= low => BARS[BARS.len() / 2],
            Some(v) => {
                let step = ((v - low) / (high - low) * (BARS.len() - 1) as f64).round();
                BARS[step as usize]
            }
        })
        .collect()
}

fn is_percentile(stat: &str) -> bool {
    stat.strip_prefix('p')
        .and_then(|n| n.parse::<f64>().ok())
        .is_some_and(|n| (0.0..=100.0).contains(&n))
}

/// What `rampart metrics` reads.
pub struct MetricRequest {
    /// The function (the `FunctionName` dimension of `AWS/Lambda` metrics).
    pub function: String,
    /// The namespace (`AWS/Lambda`, or a custom one).
    pub namespace: String,
    /// The metric name.
    pub metric: String,
    /// `Sum`, `Average`, `Minimum`, `Maximum`, `SampleCount` or `pNN`.
    pub stat: String,
    /// Bucket length.
    pub period: Duration,
    /// How far back.
    pub since: Duration,
    /// Dimensions beyond `FunctionName` (`Name=Value`); replace it for custom namespaces.
    pub dimensions: Vec<String>,
}

/// Prints one metric's datapoints and their sparkline.
pub async fn metrics(client: &Client, request: MetricRequest) -> Result<()> {
    let basic = ["Sum", "Average", "Minimum", "Maximum", "SampleCount"];
    if !basic.contains(&request.stat.as_str()) && !is_percentile(&request.stat) {
        bail!(
            "--stat {} is not a statistic: use Sum, Average, Minimum, Maximum, SampleCount or pNN",
            request.stat
        );
    }
    let mut dimensions = Vec::new();
    if request.namespace == "AWS/Lambda" {
        dimensions.push(json!({"Name": "FunctionName", "Value": request.function}));
    }
    for d in &request.dimensions {
        let Some((name, value)) = d.split_once('=') else {
            bail!("--dimension {d} must be Name=Value");
        };
        dimensions.push(json!({"Name": name, "Value": value}));
    }
    let period = request.period.as_secs().max(1);
    let now = jiff::Timestamp::now().as_second();
    let start = (now - request.since.as_secs() as i64).div_euclid(period as i64) * period as i64;
    let mut input = json!({
        "Namespace": request.namespace,
        "MetricName": request.metric,
        "Dimensions": dimensions,
        "StartTime": start,
        "EndTime": now + 1,
        "Period": period,
    });
    let extended = is_percentile(&request.stat);
    if extended {
        input["ExtendedStatistics"] = json!([request.stat]);
    } else {
        input["Statistics"] = json!([request.stat]);
    }
    let answer = client.cloudwatch("GetMetricStatistics", &input).await?;
    let mut points: Vec<(i64, f64, String)> = answer["Datapoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let value = if extended {
                p["ExtendedStatistics"][&request.stat].as_f64()
            } else {
                p[&request.stat].as_f64()
            }?;
            let unit = p["Unit"].as_str().unwrap_or_default().to_owned();
            Some((p["Timestamp"].as_f64()? as i64, value, unit))
        })
        .collect();
    points.sort_by_key(|p| p.0);
    let what = dimensions
        .iter()
        .map(|d| {
            format!(
                "{}={}",
                d["Name"].as_str().unwrap_or(""),
                d["Value"].as_str().unwrap_or("")
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "{} {} ({}{}{}), {period} s periods",
        request.metric,
        request.stat,
        request.namespace,
        if what.is_empty() { "" } else { ", " },
        what
    );
    if points.is_empty() {
        println!("no datapoints in the last {} s", request.since.as_secs());
        return Ok(());
    }
    println!("{:<22}  {:>14}  UNIT", "TIME", "VALUE");
    for (ts, value, unit) in &points {
        let time = jiff::Timestamp::from_second(*ts)
            .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_default();
        println!("{time:<22}  {value:>14.3}  {unit}");
    }
    let slots = ((now + 1 - start) as u64).div_ceil(period) as usize;
    let mut values = vec![None; slots];
    for (ts, value, _) in &points {
        let slot = ((ts - start) as u64 / period) as usize;
        if let Some(v) = values.get_mut(slot) {
            *v = Some(*value);
        }
    }
    // Only the last 120 periods fit a line.
    let shown = &values[values.len().saturating_sub(120)..];
    println!("{}", sparkline(shown));
    Ok(())
}

/// One function's row of `rampart top`.
struct Row {
    function: String,
    rate: f64,
    errors: f64,
    p99: Option<f64>,
    concurrency: f64,
    instances: i64,
}

/// The window `top` averages over: two closed 5-second buckets.
const TOP_PERIOD: i64 = 5;
const TOP_WINDOW: i64 = 10;

async fn top_row(client: &Client, function: &str, now: i64) -> Result<Row> {
    let end = now.div_euclid(TOP_PERIOD) * TOP_PERIOD;
    let start = end - TOP_WINDOW;
    let query = |id: &str, metric: &str, stat: &str| {
        json!({
            "Id": id,
            "MetricStat": {
                "Metric": {
                    "Namespace": "AWS/Lambda",
                    "MetricName": metric,
                    "Dimensions": [{"Name": "FunctionName", "Value": function}],
                },
                "Period": TOP_PERIOD,
                "Stat": stat,
            },
        })
    };
    let answer = client
        .cloudwatch(
            "GetMetricData",
            &json!({
                "StartTime": start,
                "EndTime": end,
                "MetricDataQueries": [
                    query("invocations", "Invocations", "Sum"),
                    query("errors", "Errors", "Sum"),
                    query("p99", "Duration", "p99"),
                    query("concurrency", "ConcurrentExecutions", "Maximum"),
                ],
            }),
        )
        .await?;
    let values = |id: &str| -> Vec<f64> {
        answer["MetricDataResults"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["Id"] == id)
            .and_then(|r| r["Values"].as_array())
            .map(|v| v.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default()
    };
    let stats = client.stats(function).await.unwrap_or(Value::Null);
    let window = TOP_WINDOW as f64;
    Ok(Row {
        function: function.to_owned(),
        // A fold from +0.0: an empty f64 sum is -0.0.
        rate: values("invocations").iter().fold(0.0, |a, b| a + b) / window,
        errors: values("errors").iter().fold(0.0, |a, b| a + b) / window,
        p99: values("p99").into_iter().reduce(f64::max),
        concurrency: values("concurrency").into_iter().fold(0.0, f64::max),
        instances: stats["instances"].as_i64().unwrap_or(0),
    })
}

fn render_top(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<32} {:>10} {:>10} {:>10} {:>6} {:>9}\n",
        "FUNCTION", "REQ/S", "ERR/S", "P99 MS", "CONC", "INSTANCES"
    );
    for r in rows {
        let p99 = r.p99.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
        out.push_str(&format!(
            "{:<32} {:>10.1} {:>10.1} {:>10} {:>6} {:>9}\n",
            r.function, r.rate, r.errors, p99, r.concurrency, r.instances
        ));
    }
    out
}

/// Prints every function's request and error rates, p99 and concurrency over the last ten
/// seconds, redrawn every `interval` until interrupted (or once).
pub async fn top(client: &Client, interval: Duration, once: bool) -> Result<()> {
    loop {
        let functions = client.list_functions().await?;
        let now = jiff::Timestamp::now().as_second();
        let mut rows = Vec::new();
        for f in &functions {
            if let Some(name) = f["FunctionName"].as_str() {
                rows.push(top_row(client, name, now).await?);
            }
        }
        rows.sort_by(|a, b| b.rate.total_cmp(&a.rate).then(a.function.cmp(&b.function)));
        let table = render_top(&rows);
        if once {
            print!("{table}");
            return Ok(());
        }
        // Home and clear, then the table: redrawn in place.
        print!("\x1b[H\x1b[2J{table}");
        std::io::Write::flush(&mut std::io::stdout())?;
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparklines_scale_between_extremes_and_keep_gaps() {
        assert_eq!(sparkline(&[Some(0.0), Some(7.0), None, Some(3.5)]), "▁█ ▅");
        assert_eq!(sparkline(&[Some(2.0), Some(2.0)]), "▅▅");
        assert_eq!(sparkline(&[]), "");
    }
}

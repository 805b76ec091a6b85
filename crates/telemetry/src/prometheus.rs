//! `GET /metrics`: the recorded function metrics in Prometheus text (0.0.4) or OpenMetrics,
//! with stable names (`rampart_lambda_<what>[_<unit>][_total]`) and a `function_name` label.
//!
//! Only the per-function series (dimension `FunctionName` alone) are shown: the per-version and
//! account-wide series are the same values again and would be counted twice by `sum()`.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::lambda::LAMBDA_NAMESPACE;
use crate::recorder::{Kind, Recorder, Totals};

/// Histogram bucket bounds, seconds (durations from a millisecond to Lambda's 15 minutes).
const BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 300.0,
    900.0,
];

/// `ConcurrentExecutions` -> `concurrent_executions`.
fn snake(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The function metrics of a recorder.
#[derive(Debug)]
struct FunctionMetrics(Recorder);

/// Series of one metric name, each with its function.
fn families(recorder: &Recorder) -> Vec<(String, Vec<(String, Totals)>)> {
    let mut families: Vec<(String, Vec<(String, Totals)>)> = Vec::new();
    for totals in recorder.totals() {
        let function = match totals.key.dimensions.as_slice() {
            [(name, value)] if name == "FunctionName" => value.clone(),
            _ => continue,
        };
        if totals.key.namespace != LAMBDA_NAMESPACE {
            continue;
        }
        match families
            .iter_mut()
            .find(|(name, _)| *name == totals.key.name)
        {
            Some((_, members)) => members.push((function, totals)),
            None => families.push((totals.key.name.clone(), vec![(function, totals)])),
        }
    }
    families
}

impl Collector for FunctionMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, members) in families(&self.0) {
            let Some((_, first)) = members.first() else {
                continue;
            };
            let (kind, unit) = (first.kind, first.unit.clone());
            let milliseconds = unit == "Milliseconds";
            let (metric_name, metric_type) = match kind {
                // The text encoders add `_total` to counters.
                Kind::Counter => (
                    format!("rampart_lambda_{}", snake(&name)),
                    MetricType::Counter,
                ),
                Kind::Gauge => (
                    format!("rampart_lambda_{}", snake(&name)),
                    MetricType::Gauge,
                ),
                Kind::Distribution if milliseconds => (
                    format!("rampart_lambda_{}_seconds", snake(&name)),
                    MetricType::Histogram,
                ),
                Kind::Distribution => (
                    format!("rampart_lambda_{}", snake(&name)),
                    MetricType::Histogram,
                ),
            };
            let help = format!("AWS/Lambda {name} per function ({unit})");
            let mut family = encoder.encode_descriptor(&metric_name, &help, None, metric_type)?;
            for (function, totals) in &members {
                let labels = [("function_name", function.as_str())];
                let mut metric = family.encode_family(&labels)?;
                match kind {
                    Kind::Counter => {
                        let count = totals.values.sum.max(0.0) as u64;
                        metric.encode_counter::<NoLabelSet, _, u64>(&count, None)?;
                    }
                    Kind::Gauge => {
                        metric.encode_gauge(&(totals.last as i64))?;
                    }
                    Kind::Distribution => {
                        let scale = if milliseconds { 1000.0 } else { 1.0 };
                        let values = &totals.values;
                        // The encoder takes each bucket's own count and accumulates them.
                        let mut below = 0;
                        let mut buckets = Vec::with_capacity(BUCKETS.len() + 1);
                        for bound in BUCKETS {
                            let at_most = values.count_at_most(bound * scale).unwrap_or(below);
                            buckets.push((bound, at_most.saturating_sub(below)));
                            below = below.max(at_most);
                        }
                        let all = values.count as u64;
                        buckets.push((f64::INFINITY, all.saturating_sub(below)));
                        metric.encode_histogram::<NoLabelSet>(
                            values.sum / scale,
                            values.count as u64,
                            &buckets,
                            None,
                        )?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The exposition of `recorder`'s function metrics: OpenMetrics when `openmetrics`, else the
/// Prometheus text format.
pub fn render(recorder: &Recorder, openmetrics: bool) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(FunctionMetrics(recorder.clone())));
    let mut out = String::new();
    let encoded = if openmetrics {
        prometheus_client::encoding::text::encode(&mut out, &registry)
    } else {
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
    };
    // Writing into a String cannot fail.
    encoded.expect("encoding metrics into a string");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LambdaMetrics;

    #[test]
    fn function_metrics_render_with_stable_names() {
        let recorder = Recorder::new(true);
        let lambda = LambdaMetrics::new(recorder.clone());
        let m = lambda.function("echo", "2");
        for ms in [3.0, 30.0, 300.0] {
            m.invocations.record(1, 1.0);
            m.duration.record(1, ms);
        }
        m.concurrent_executions.record(1, 4.0);
        m.concurrent_executions.record(2, 2.0);
        let text = render(&recorder, false);
        assert!(
            text.contains("# TYPE rampart_lambda_invocations_total counter"),
            "{text}"
        );
        assert!(text.contains("rampart_lambda_invocations_total{function_name=\"echo\"} 3"));
        assert!(text.contains("rampart_lambda_concurrent_executions{function_name=\"echo\"} 2"));
        let bucket = |le: &str, n: u32| {
            format!(
                "rampart_lambda_duration_seconds_bucket{{function_name=\"echo\",le=\"{le}\"}} {n}\n"
            )
        };
        for (le, n) in [
            ("0.0025", 0),
            ("0.005", 1),
            ("0.05", 2),
            ("0.5", 3),
            ("+Inf", 3),
        ] {
            assert!(text.contains(&bucket(le, n)), "{le}: {text}");
        }
        assert!(text.contains("rampart_lambda_duration_seconds_count{function_name=\"echo\"} 3"));
        assert!(
            !text.contains("Resource"),
            "per-version series are not repeated"
        );
        assert_eq!(text.matches("rampart_lambda_invocations_total{").count(), 1);
        let open = render(&recorder, true);
        assert!(open.ends_with("# EOF\n"), "{open}");
        assert_eq!(snake("AsyncEventAge"), "async_event_age");
    }
}

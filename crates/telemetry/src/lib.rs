//! Telemetry: metrics recorded on the invoke path, stored as 1-second and 1-minute rollups
//! with mergeable histograms, kept for a bounded time, and queried by series and period.
//!
//! Values are recorded into in-memory buckets ([`Recorder`]); [`Telemetry::run`] drains the
//! closed seconds every second into the store, rolls closed minutes up into 1-minute points and
//! enforces retention. Queries read the store (`shared/spec/metrics-and-alarms.md` §4).
#![warn(missing_docs)]

mod aggregate;
pub mod alarm_rule;
pub mod alarms;
pub mod anomaly;
mod gateway;
mod lambda;
mod prometheus;
mod recorder;
pub mod trace;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub use aggregate::{Aggregate, parse_percentile, statistic};
pub use gateway::{API_GATEWAY_NAMESPACE, ApiMetrics, RouteMeters};
pub use lambda::{AliasMeters, FunctionMeters, LAMBDA_NAMESPACE, LambdaMetrics, Meter};
use rampart_store::{MetricPoint, SeriesKey, Store, StoredPoint};
pub use recorder::{Kind, Recorder, Series, Totals};
use tokio_util::sync::CancellationToken;

/// How long rollups are kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// 1-second points (CloudWatch: 3 hours).
    pub seconds: Duration,
    /// 1-minute points (CloudWatch: 15 days).
    pub minutes: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            seconds: Duration::from_secs(3 * 3600),
            minutes: Duration::from_secs(15 * 86_400),
        }
    }
}

/// A minute is rolled up this long after it ends, so its last seconds are flushed first.
const ROLLUP_GRACE_SECS: i64 = 5;
/// At most this many seconds are rolled up in one pass (a catch-up after downtime).
const ROLLUP_WINDOW_SECS: i64 = 3600;

/// One bucket of a query's answer.
#[derive(Debug, Clone)]
pub struct Bucket {
    /// Bucket start, epoch seconds.
    pub ts: i64,
    /// The unit of the values.
    pub unit: String,
    /// The merged values.
    pub values: Aggregate,
}

/// Which values a query reads.
#[derive(Debug, Clone)]
pub struct Query {
    /// The series (exact dimension set).
    pub key: SeriesKey,
    /// Only values stored with this unit.
    pub unit: Option<String>,
    /// First second, inclusive.
    pub start: i64,
    /// Last second, exclusive.
    pub end: i64,
    /// Seconds per bucket; buckets start at `start`.
    pub period: u32,
}

/// The metrics subsystem.
pub struct Telemetry {
    store: Store,
    recorder: Recorder,
    lambda: LambdaMetrics,
    api: ApiMetrics,
    retention: Retention,
    /// Where the 1-minute rollup stands (`None` until read); held while writing points so a
    /// late point and a rollup pass never interleave.
    rollup: tokio::sync::Mutex<Option<i64>>,
    /// Where finished spans go.
    tracer: trace::Tracer,
}

fn now_secs() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn minute_of(ts: i64) -> i64 {
    ts.div_euclid(60) * 60
}

impl Telemetry {
    /// Telemetry over `store`; disabled, it records no metrics (queries still answer). Spans
    /// go to `tracer`.
    pub fn new(
        store: Store,
        enabled: bool,
        retention: Retention,
        tracer: trace::Tracer,
    ) -> Arc<Self> {
        let recorder = Recorder::new(enabled);
        Arc::new(Self {
            store,
            lambda: LambdaMetrics::new(recorder.clone()),
            api: ApiMetrics::new(recorder.clone()),
            recorder,
            retention,
            rollup: tokio::sync::Mutex::new(None),
            tracer,
        })
    }

    /// The recorder (for series of one's own).
    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    /// Where spans go.
    pub fn tracer(&self) -> &trace::Tracer {
        &self.tracer
    }

    /// HTTP API metrics by API and route.
    pub fn api(&self) -> &ApiMetrics {
        &self.api
    }

    /// Lambda's metrics by function and version.
    pub fn lambda(&self) -> &LambdaMetrics {
        &self.lambda
    }

    /// Flushes every second, rolls up minutes and prunes, until `shutdown`; then flushes what
    /// is left.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_prune = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => break,
            }
            let now = now_secs();
            // Seconds before the current one are complete enough: later values reopen them.
            if let Err(e) = self.flush(now).await {
                tracing::warn!(error = %e, "flushing metrics failed");
            }
            if now - last_prune >= 60 {
                last_prune = now;
                let seconds = now - self.retention.seconds.as_secs() as i64;
                let minutes = now - self.retention.minutes.as_secs() as i64;
                match self.store.prune_metrics(seconds, minutes).await {
                    Ok(n) if n > 0 => tracing::debug!(points = n, "pruned metric points"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "pruning metrics failed"),
                }
            }
        }
        if let Err(e) = self.flush(i64::MAX).await {
            tracing::warn!(error = %e, "flushing metrics at shutdown failed");
        }
    }

    /// Writes the recorded seconds before `before` and rolls up the minutes that have closed.
    pub async fn flush(&self, before: i64) -> rampart_store::Result<()> {
        let drained = self.recorder.drain(before);
        self.put(drained).await?;
        self.roll_up(now_secs()).await
    }

    /// Stores points (1-second resolution). Points of minutes already rolled up are also
    /// stored as 1-minute points, so late values (a long invocation, a custom metric with an
    /// old timestamp) reach every resolution.
    pub async fn put(
        &self,
        mut batch: Vec<(SeriesKey, Vec<MetricPoint>)>,
    ) -> rampart_store::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut rollup = self.rollup.lock().await;
        let done_until = self.done_until(&mut rollup).await?;
        for (_, points) in &mut batch {
            let late: Vec<MetricPoint> = points
                .iter()
                .filter(|p| p.resolution == 1 && p.ts < done_until)
                .map(|p| MetricPoint {
                    resolution: 60,
                    ts: minute_of(p.ts),
                    ..p.clone()
                })
                .collect();
            points.extend(late);
        }
        self.store.put_metric_points(batch).await
    }

    async fn done_until(&self, cached: &mut Option<i64>) -> rampart_store::Result<i64> {
        if let Some(done) = *cached {
            return Ok(done);
        }
        let done = match self.store.metric_rollup_done_until().await? {
            Some(done) => done,
            // Nothing rolled up yet: nothing was recorded before this minute.
            None => minute_of(now_secs()),
        };
        *cached = Some(done);
        Ok(done)
    }

    /// Rolls the closed minutes' 1-second points up into 1-minute points.
    async fn roll_up(&self, now: i64) -> rampart_store::Result<()> {
        let mut rollup = self.rollup.lock().await;
        let from = self.done_until(&mut rollup).await?;
        let to = minute_of(now - ROLLUP_GRACE_SECS).min(from + ROLLUP_WINDOW_SECS);
        if to <= from {
            return Ok(());
        }
        let seconds = self.store.second_points_between(from, to).await?;
        let mut minutes: BTreeMap<(i64, i64, String), Aggregate> = BTreeMap::new();
        for p in &seconds {
            let values = Aggregate::from_point(&p.point);
            minutes
                .entry((p.series, minute_of(p.point.ts), p.point.unit.clone()))
                .and_modify(|m| m.merge(&values))
                .or_insert(values);
        }
        let points = minutes
            .into_iter()
            .map(|((series, ts, unit), values)| StoredPoint {
                series,
                point: values.to_point(60, ts, &unit),
            })
            .collect();
        self.store.put_metric_rollup(points, to).await?;
        *rollup = Some(to);
        Ok(())
    }

    /// The query's buckets with values, oldest first. Periods that are whole minutes read
    /// 1-minute points where they exist; shorter periods read 1-second points.
    pub async fn query(&self, query: &Query) -> rampart_store::Result<Vec<Bucket>> {
        let Some(series) = self.store.metric_series_id(query.key.clone()).await? else {
            return Ok(Vec::new());
        };
        let period = i64::from(query.period.max(1));
        let mut points = Vec::new();
        if period % 60 == 0 {
            let done_until = {
                let mut rollup = self.rollup.lock().await;
                self.done_until(&mut rollup).await?
            };
            let split = done_until.clamp(query.start, query.end);
            points.extend(
                self.store
                    .metric_points(series, 60, query.start, split)
                    .await?,
            );
            points.extend(
                self.store
                    .metric_points(series, 1, split, query.end)
                    .await?,
            );
        } else {
            points.extend(
                self.store
                    .metric_points(series, 1, query.start, query.end)
                    .await?,
            );
        }
        let mut buckets: BTreeMap<i64, Bucket> = BTreeMap::new();
        for p in points {
            if query.unit.as_ref().is_some_and(|u| *u != p.unit) {
                continue;
            }
            let ts = query.start + (p.ts - query.start).div_euclid(period) * period;
            let values = Aggregate::from_point(&p);
            buckets
                .entry(ts)
                .and_modify(|b| b.values.merge(&values))
                .or_insert(Bucket {
                    ts,
                    unit: p.unit.clone(),
                    values,
                });
        }
        Ok(buckets.into_values().collect())
    }

    /// The function metrics in Prometheus text format, or OpenMetrics when `openmetrics`.
    pub fn prometheus(&self, openmetrics: bool) -> String {
        prometheus::render(&self.recorder, openmetrics)
    }

    /// Evaluates every alarm on its last N complete periods and records each change of state
    /// (with its history). Returns the alarms that changed: `(name, from, to)`.
    pub async fn evaluate_alarms(
        &self,
        now: i64,
    ) -> rampart_store::Result<Vec<alarms::AlarmTransition>> {
        let mut changed = Vec::new();
        let rows = self.store.list_alarms().await?;
        let mut states: std::collections::HashMap<String, alarms::AlarmState> = rows
            .iter()
            .filter_map(|r| Some((r.name.clone(), alarms::AlarmState::parse(&r.state)?)))
            .collect();
        let mut composites = Vec::new();
        for row in rows {
            let Ok(alarm) = serde_json::from_str::<alarms::MetricAlarm>(&row.definition) else {
                tracing::warn!(alarm = %row.name, "an alarm's stored definition does not parse");
                continue;
            };
            if alarm.rule.is_some() {
                composites.push((row, alarm));
                continue;
            }
            let current = alarms::AlarmState::parse(&row.state)
                .unwrap_or(alarms::AlarmState::InsufficientData);
            let period = i64::from(alarm.period.max(1));
            let end = now.div_euclid(period) * period;
            let n = i64::from(alarm.evaluation_periods.max(1));
            let start = end - n * period;
            let buckets = self
                .query(&Query {
                    key: SeriesKey::new(
                        alarm.namespace.clone(),
                        alarm.metric.clone(),
                        alarm.dimensions.clone(),
                    ),
                    unit: alarm.unit.clone(),
                    start,
                    end,
                    period: alarm.period,
                })
                .await?;
            let values: Vec<Option<f64>> = (0..n)
                .map(|i| {
                    let ts = start + i * period;
                    buckets
                        .iter()
                        .find(|b| b.ts == ts)
                        .and_then(|b| statistic(&b.values, &alarm.statistic))
                })
                .collect();
            let bands = match &alarm.anomaly {
                None => vec![None; values.len()],
                Some(anomaly) => {
                    self.anomaly_bands(&alarm, anomaly.width, start, n, period)
                        .await?
                }
            };
            let evaluation = alarms::evaluate_banded(&alarm, &values, &bands, current);
            if evaluation.state == current {
                continue;
            }
            let data = serde_json::json!({
                "version": "1.0",
                "queryDate": now,
                "startDate": start,
                "statistic": alarm.statistic,
                "period": alarm.period,
                "recentDatapoints": values,
                "threshold": alarm.threshold,
            });
            let previous = self
                .store
                .set_alarm_state(
                    &row.name,
                    evaluation.state.as_str(),
                    evaluation.reason.clone(),
                    Some(data.to_string()),
                    now * 1000,
                )
                .await?;
            states.insert(row.name.clone(), evaluation.state);
            changed.push(alarms::AlarmTransition {
                alarm,
                from: previous,
                to: evaluation.state,
                reason: evaluation.reason,
                reason_data: Some(data.to_string()),
                ts_ms: now * 1000,
            });
        }
        // Composite alarms, after the metric alarms they read; a composite over composites
        // settles within a few evaluations.
        for (row, alarm) in composites {
            let rule = alarm.rule.clone().unwrap_or_else(|| "FALSE".into());
            let Ok(parsed) = alarm_rule::Rule::parse(&rule) else {
                continue;
            };
            let holds = parsed.holds(&|name: &str| states.get(name).copied());
            let state = if holds {
                alarms::AlarmState::Alarm
            } else {
                alarms::AlarmState::Ok
            };
            if alarms::AlarmState::parse(&row.state) == Some(state) {
                continue;
            }
            let reason = format!(
                "the rule {rule} is {}",
                if holds { "true" } else { "false" }
            );
            let previous = self
                .store
                .set_alarm_state(&row.name, state.as_str(), reason.clone(), None, now * 1000)
                .await?;
            states.insert(row.name.clone(), state);
            changed.push(alarms::AlarmTransition {
                alarm,
                from: previous,
                to: state,
                reason,
                reason_data: None,
                ts_ms: now * 1000,
            });
        }
        Ok(changed)
    }

    /// The anomaly bands of an alarm's `n` datapoints from `start`, from the metric's last
    /// eight days (see [`anomaly`]).
    async fn anomaly_bands(
        &self,
        alarm: &alarms::MetricAlarm,
        width: f64,
        start: i64,
        n: i64,
        period: i64,
    ) -> rampart_store::Result<Vec<Option<(f64, f64)>>> {
        let from = start - 8 * anomaly::SEASON_SECS;
        let history: Vec<(i64, f64)> = self
            .query(&Query {
                key: SeriesKey::new(
                    alarm.namespace.clone(),
                    alarm.metric.clone(),
                    alarm.dimensions.clone(),
                ),
                unit: alarm.unit.clone(),
                start: from,
                end: start + n * period,
                period: alarm.period,
            })
            .await?
            .iter()
            .filter_map(|b| Some((b.ts, statistic(&b.values, &alarm.statistic)?)))
            .collect();
        Ok((0..n)
            .map(|i| {
                let at = start + i * period;
                let before: Vec<(i64, f64)> =
                    history.iter().copied().filter(|(ts, _)| *ts < at).collect();
                anomaly::band(&before, at, period, width)
            })
            .collect())
    }

    /// Evaluates the alarms every `every` until `shutdown`, handing each change of state to
    /// `transitions` (whose consumer runs the alarm's actions).
    pub async fn run_alarms(
        self: Arc<Self>,
        every: Duration,
        transitions: tokio::sync::mpsc::Sender<alarms::AlarmTransition>,
        shutdown: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => return,
            }
            match self.evaluate_alarms(now_secs()).await {
                Ok(changed) => {
                    for transition in changed {
                        tracing::info!(alarm = %transition.alarm.name, from = %transition.from, to = transition.to.as_str(), "alarm state changed");
                        if transitions.send(transition).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "evaluating alarms failed"),
            }
        }
    }

    /// The store the series live in (listing series).
    pub fn store(&self) -> &Store {
        &self.store
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn telemetry() -> (tempfile::TempDir, Arc<Telemetry>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (
            dir,
            Telemetry::new(store, true, Retention::default(), trace::Tracer::disabled()),
        )
    }

    #[tokio::test]
    async fn recorded_values_are_queried_at_second_and_minute_periods() {
        let (_dir, t) = telemetry();
        let m = t.lambda().function("fn", "3");
        let now = now_secs();
        // Two minutes ago, so the rollup has closed that minute.
        let base = minute_of(now) - 120;
        for i in 0..100i32 {
            let second = base + i64::from(i % 60);
            m.invocations.record(second, 1.0);
            m.duration.record(second, f64::from(i + 1));
        }
        t.flush(now).await.unwrap();
        let key = |dims: Vec<(&str, &str)>| {
            SeriesKey::new(
                LAMBDA_NAMESPACE,
                "Duration",
                dims.into_iter()
                    .map(|(a, b)| (a.to_owned(), b.to_owned()))
                    .collect(),
            )
        };
        for dims in [
            vec![("FunctionName", "fn")],
            vec![("FunctionName", "fn"), ("Resource", "fn:3")],
        ] {
            let q = Query {
                key: key(dims),
                unit: None,
                start: base,
                end: base + 60,
                period: 60,
            };
            let buckets = t.query(&q).await.unwrap();
            assert_eq!(buckets.len(), 1, "one minute");
            let v = &buckets[0].values;
            assert_eq!(v.count, 100.0);
            assert_eq!(v.sum, 5050.0);
            let p99 = v.percentile(99.0).unwrap();
            assert!((p99 - 99.0).abs() <= 0.1, "{p99}");
        }
        // 10-second periods read the 1-second points.
        let q = Query {
            key: key(vec![("FunctionName", "fn")]),
            unit: Some("Milliseconds".into()),
            start: base,
            end: base + 60,
            period: 10,
        };
        let buckets = t.query(&q).await.unwrap();
        assert_eq!(buckets.len(), 6);
        assert_eq!(buckets.iter().map(|b| b.values.count).sum::<f64>(), 100.0);
        // A unit the values were not stored with matches nothing.
        let q = Query {
            unit: Some("Seconds".into()),
            ..q
        };
        assert!(t.query(&q).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn late_points_reach_rolled_up_minutes() {
        let (_dir, t) = telemetry();
        let now = now_secs();
        t.flush(now).await.unwrap();
        let old = minute_of(now) - 600;
        let key = SeriesKey::new("custom", "late", vec![]);
        let mut values = Aggregate::empty();
        values.add(4.0, 1);
        t.put(vec![(
            key.clone(),
            vec![values.to_point(1, old + 7, "Count")],
        )])
        .await
        .unwrap();
        let q = Query {
            key,
            unit: None,
            start: old,
            end: old + 60,
            period: 60,
        };
        let buckets = t.query(&q).await.unwrap();
        assert_eq!(buckets.len(), 1);
        assert_eq!(buckets[0].values.sum, 4.0);
    }

    #[tokio::test]
    async fn closed_minutes_are_rolled_up_from_their_seconds() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let now = now_secs();
        let minute = minute_of(now) - 180;
        // Rolled up until `minute`; its seconds (and the next minute's) wait in the store.
        store.put_metric_rollup(vec![], minute).await.unwrap();
        let key = SeriesKey::new("custom", "rolled", vec![]);
        let points = (0..120)
            .map(|i| {
                let mut values = Aggregate::empty();
                values.add(f64::from(i), 1);
                values.to_point(1, minute + i64::from(i), "Count")
            })
            .collect();
        store
            .put_metric_points(vec![(key.clone(), points)])
            .await
            .unwrap();
        let t = Telemetry::new(
            store.clone(),
            true,
            Retention::default(),
            trace::Tracer::disabled(),
        );
        t.flush(now).await.unwrap();
        assert_eq!(
            store.metric_rollup_done_until().await.unwrap(),
            Some(minute_of(now - ROLLUP_GRACE_SECS))
        );
        let id = store.metric_series_id(key.clone()).await.unwrap().unwrap();
        let minutes = store
            .metric_points(id, 60, minute, minute + 120)
            .await
            .unwrap();
        assert_eq!(minutes.len(), 2, "one point per minute");
        assert_eq!((minutes[0].count, minutes[1].count), (60.0, 60.0));
        let q = Query {
            key,
            unit: None,
            start: minute,
            end: minute + 120,
            period: 120,
        };
        let buckets = t.query(&q).await.unwrap();
        assert_eq!(buckets.len(), 1);
        assert_eq!(buckets[0].values.count, 120.0);
        assert_eq!(buckets[0].values.percentile(100.0), Some(119.0));
    }
}

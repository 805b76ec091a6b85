//! Lambda's metric set (`AWS/Lambda`) and the ones Rampart adds, per function and version,
//! under the dimension sets Lambda publishes (spec metrics-and-alarms.md §1).

use std::sync::Arc;

use rampart_store::SeriesKey;

use crate::recorder::{ByTwoNames, Kind, Recorder, Series};

/// The namespace of function metrics.
pub const LAMBDA_NAMESPACE: &str = "AWS/Lambda";

/// One metric under each dimension set it is published with.
pub struct Meter(Vec<Arc<Series>>);

impl Meter {
    /// Adds `value` at epoch second `second` under every dimension set.
    pub fn record(&self, second: i64, value: f64) {
        for series in &self.0 {
            series.record(second, value);
        }
    }
}

/// The metrics of one function version, created once and kept by the invoke path.
pub struct FunctionMeters {
    /// Handler runs (success or function error).
    pub invocations: Meter,
    /// Invocations ending in a function error (0 or 1 per invocation).
    pub errors: Meter,
    /// Requests refused for lack of concurrency.
    pub throttles: Meter,
    /// Handler time, milliseconds.
    pub duration: Meter,
    /// Busy instances of the function when an invocation starts.
    pub concurrent_executions: Meter,
    /// Invocations that started an instance (Rampart).
    pub cold_starts: Meter,
    /// Init time of a cold start, milliseconds (Rampart).
    pub init_duration: Meter,
    /// Invocations that ran past their timeout (Rampart).
    pub timeouts: Meter,
    /// Async events accepted.
    pub async_events_received: Meter,
    /// Enqueue to delivery, milliseconds.
    pub async_event_age: Meter,
    /// Async events dropped without a destination run.
    pub async_events_dropped: Meter,
    /// Failures to deliver to the dead-letter store.
    pub dead_letter_errors: Meter,
    /// Failures to deliver to a destination.
    pub destination_delivery_failures: Meter,
    /// Asynchronous events waiting (Rampart, sampled).
    pub queue_depth: Meter,
    /// Live instances (Rampart, sampled).
    pub instances: Meter,
    /// Instances replaced for dying idle or wedging (Rampart).
    pub recoveries: Meter,
    /// 1 while new instances keep failing to start and are retried with backoff (Rampart,
    /// sampled).
    pub degraded: Meter,
}

impl FunctionMeters {
    fn new(recorder: &Recorder, function: &str, version: &str) -> Self {
        let mut sets = vec![vec![("FunctionName".to_owned(), function.to_owned())]];
        if version != "$LATEST" {
            sets.push(vec![
                ("FunctionName".to_owned(), function.to_owned()),
                ("Resource".to_owned(), format!("{function}:{version}")),
            ]);
        }
        Self::with_sets(recorder, &sets)
    }

    /// Meters recording under each of `sets` (dimension sets).
    fn with_sets(recorder: &Recorder, sets: &[Vec<(String, String)>]) -> Self {
        let meter = |name: &str, unit: &str, kind: Kind| {
            let series: Vec<Arc<Series>> = sets
                .iter()
                .map(|dims| {
                    recorder.series(
                        SeriesKey::new(LAMBDA_NAMESPACE, name, dims.clone()),
                        unit,
                        kind,
                    )
                })
                .collect();
            Meter(series)
        };
        use Kind::{Counter, Distribution, Gauge};
        Self {
            invocations: meter("Invocations", "Count", Counter),
            errors: meter("Errors", "Count", Counter),
            throttles: meter("Throttles", "Count", Counter),
            duration: meter("Duration", "Milliseconds", Distribution),
            concurrent_executions: meter("ConcurrentExecutions", "Count", Gauge),
            cold_starts: meter("ColdStarts", "Count", Counter),
            init_duration: meter("InitDuration", "Milliseconds", Distribution),
            timeouts: meter("Timeouts", "Count", Counter),
            async_events_received: meter("AsyncEventsReceived", "Count", Counter),
            async_event_age: meter("AsyncEventAge", "Milliseconds", Distribution),
            async_events_dropped: meter("AsyncEventsDropped", "Count", Counter),
            dead_letter_errors: meter("DeadLetterErrors", "Count", Counter),
            destination_delivery_failures: meter("DestinationDeliveryFailures", "Count", Counter),
            queue_depth: meter("QueueDepth", "Count", Gauge),
            instances: meter("Instances", "Count", Gauge),
            recoveries: meter("Recoveries", "Count", Counter),
            degraded: meter("Degraded", "Count", Gauge),
        }
    }
}

/// Meters by function and version, created on first use.
#[derive(Clone)]
pub struct LambdaMetrics {
    recorder: Recorder,
    meters: Arc<ByTwoNames<FunctionMeters>>,
    /// An alias's meters by (function, alias), then by executed version.
    aliases: Arc<ByTwoNames<AliasMeters>>,
    account_concurrency: Arc<Series>,
}

/// An alias's meters: `Resource=fn:alias`, and with the `ExecutedVersion` that ran.
pub struct AliasMeters {
    by_alias: Arc<FunctionMeters>,
    by_version: std::sync::Mutex<std::collections::HashMap<u64, Arc<FunctionMeters>>>,
    function: String,
    alias: String,
}

impl LambdaMetrics {
    /// Lambda metrics recorded into `recorder`.
    pub fn new(recorder: Recorder) -> Self {
        let account_concurrency = recorder.series(
            SeriesKey::new(LAMBDA_NAMESPACE, "ConcurrentExecutions", vec![]),
            "Count",
            Kind::Gauge,
        );
        Self {
            recorder,
            meters: Arc::default(),
            aliases: Arc::default(),
            account_concurrency,
        }
    }

    /// The extra meters of an invocation through `alias` that runs `version`: under
    /// `Resource=fn:alias`, and with `ExecutedVersion` (to compare the versions of a weighted
    /// alias).
    pub fn alias(
        &self,
        function: &str,
        alias: &str,
        version: u64,
        label: &str,
    ) -> Vec<Arc<FunctionMeters>> {
        let meters = self.aliases.get_or(function, alias, || {
            let resource = vec![
                ("FunctionName".to_owned(), function.to_owned()),
                ("Resource".to_owned(), format!("{function}:{alias}")),
            ];
            AliasMeters {
                by_alias: Arc::new(FunctionMeters::with_sets(&self.recorder, &[resource])),
                by_version: Default::default(),
                function: function.to_owned(),
                alias: alias.to_owned(),
            }
        });
        let by_version = meters
            .by_version
            .lock()
            .expect("alias meters lock poisoned")
            .entry(version)
            .or_insert_with(|| {
                let dims = vec![
                    ("FunctionName".to_owned(), meters.function.clone()),
                    (
                        "Resource".to_owned(),
                        format!("{}:{}", meters.function, meters.alias),
                    ),
                    ("ExecutedVersion".to_owned(), label.to_owned()),
                ];
                Arc::new(FunctionMeters::with_sets(&self.recorder, &[dims]))
            })
            .clone();
        vec![meters.by_alias.clone(), by_version]
    }

    /// Invocations in flight across all functions (no dimensions).
    pub fn account_concurrency(&self) -> &Series {
        &self.account_concurrency
    }

    /// The meters of `function` at `version` (`$LATEST` or a number).
    pub fn function(&self, function: &str, version: &str) -> Arc<FunctionMeters> {
        self.meters.get_or(function, version, || {
            FunctionMeters::new(&self.recorder, function, version)
        })
    }
}

impl std::fmt::Debug for LambdaMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LambdaMetrics")
            .field("enabled", &self.recorder.enabled())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for FunctionMeters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionMeters").finish_non_exhaustive()
    }
}

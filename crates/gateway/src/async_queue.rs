//! Delivery of asynchronous invocations: a worker claims due events from the store's queue by
//! lease, invokes them through the dispatcher, and acks, retries later (exponential backoff with
//! jitter) or dead-letters them. An event is never dropped: it is delivered, or it is in the
//! dead-letter table with its reason (`shared/spec/async-invocation.md`).
//!
//! Concurrency policy (so asynchronous work never starves synchronous callers): at most
//! `concurrency` deliveries run at once over all functions; a delivery takes one of the
//! function's concurrency permits like a synchronous call, but never waits for one, and the
//! deliveries of one function hold at most half its concurrency (at least one) at a time. A
//! delivery refused by that policy goes back to the queue without using up an attempt.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rampart_model::Qualifier;
use rampart_runtime::{InvokeError, InvokeOutcome, InvokeRequest};
use rampart_store::QueuedEvent;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use rampart_telemetry::trace::SpanKind;

use crate::Gateway;
use crate::spans::Traced;

/// How asynchronous events are delivered.
#[derive(Debug, Clone)]
pub struct AsyncSettings {
    /// Delay before the first retry; doubles for each further one (Lambda: about a minute).
    pub retry_base: Duration,
    /// Retries after the first failed delivery (Lambda's default `MaximumRetryAttempts`: 2).
    pub max_retries: u32,
    /// Oldest an event may get before it is dead-lettered (Lambda's default: 6 hours).
    pub max_age: Duration,
    /// Deliveries at once, over all functions.
    pub concurrency: usize,
    /// How long an idempotency key (`x-rampart-idempotency-key`) deduplicates events.
    pub idempotency_window: Duration,
}

impl Default for AsyncSettings {
    fn default() -> Self {
        Self {
            retry_base: Duration::from_secs(60),
            max_retries: 2,
            max_age: Duration::from_secs(6 * 3600),
            concurrency: 16,
            idempotency_window: Duration::from_secs(3600),
        }
    }
}

/// Counts of a function's asynchronous events since the server started (the monitoring issue
/// publishes them as metrics).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct AsyncCounters {
    /// Events accepted (202).
    pub received: u64,
    /// Deliveries that succeeded.
    pub delivered: u64,
    /// Failed deliveries scheduled again.
    pub retried: u64,
    /// Events given up on for their age.
    pub expired: u64,
    /// Events put in the dead-letter table.
    pub dead_lettered: u64,
    /// Records that could not be handed to a destination.
    pub destination_failures: u64,
    /// Age of the last delivered event when it was delivered, ms.
    pub last_event_age_ms: i64,
}

/// How long a claimed event is held: the longest function timeout plus a margin. A server that
/// dies releases its leases at its next start (it owns the data dir alone).
const LEASE: Duration = Duration::from_secs(900 + 60);
/// How often the queue is polled when no enqueue woke the worker.
const POLL: Duration = Duration::from_millis(250);

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// The retry delay after `failures` failed deliveries: base x 2^(failures-1), +-20% jitter.
pub fn retry_delay(base: Duration, failures: u32, jitter: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    let delay = base.saturating_mul(1u32 << exp);
    delay.mul_f64(1.0 + 0.2 * (2.0 * jitter.clamp(0.0, 1.0) - 1.0))
}

/// A number in [0, 1) from the event id, so retries of different events spread out.
fn jitter_of(id: &str) -> f64 {
    let h = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    (h % 10_000) as f64 / 10_000.0
}

impl Gateway {
    /// Delivers queued events until `shutdown` is cancelled, then waits (bounded) for the
    /// deliveries in flight.
    pub async fn run_async_worker(self: Arc<Self>, shutdown: CancellationToken) {
        let settings = self.async_settings.clone();
        if let Err(e) = self.registry.store().release_leases().await {
            tracing::error!(error = %e, "could not release the leases of a previous run");
        }
        let slots = Arc::new(Semaphore::new(settings.concurrency));
        let tasks = TaskTracker::new();
        let mut last_prune = tokio::time::Instant::now();
        let freed = Arc::new(tokio::sync::Notify::new());
        let mut idle = true;
        loop {
            if last_prune.elapsed() > Duration::from_secs(60) {
                last_prune = tokio::time::Instant::now();
                let before = now_ms() - settings.idempotency_window.as_millis() as i64;
                if let Err(e) = self.registry.store().prune_idempotency_keys(before).await {
                    tracing::warn!(error = %e, "pruning idempotency keys failed");
                }
            }
            // Wait only when there is nothing to do: no free slot, or the last claim emptied the
            // due events. A full claim goes straight on to the next one.
            if idle || slots.available_permits() == 0 {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = self.queue_wakeup.notified() => {}
                    () = freed.notified() => {}
                    () = tokio::time::sleep(POLL) => {}
                }
            } else if shutdown.is_cancelled() {
                break;
            }
            let free = slots.available_permits();
            if free == 0 {
                continue;
            }
            let claimed = match self
                .registry
                .store()
                .claim(now_ms(), LEASE.as_millis() as i64, free)
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "claiming queued events failed");
                    idle = true;
                    continue;
                }
            };
            idle = claimed.len() < free;
            for event in claimed {
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    break;
                };
                let this = self.clone();
                let settings = settings.clone();
                let freed = freed.clone();
                tasks.spawn(async move {
                    this.deliver(event, &settings).await;
                    drop(permit);
                    freed.notify_one();
                });
            }
        }
        tasks.close();
        if tokio::time::timeout(Duration::from_secs(30), tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "async deliveries still running at shutdown: their leases are released at the next start"
            );
        }
    }

    async fn deliver(&self, event: QueuedEvent, settings: &AsyncSettings) {
        let config = self
            .event_config(&event.function, &event.qualifier)
            .map(|(c, _)| c);
        let max_retries = config
            .as_ref()
            .map_or(settings.max_retries, |c| c.maximum_retry_attempts);
        let max_age = config.as_ref().map_or(settings.max_age, |c| {
            Duration::from_secs(c.maximum_event_age_secs)
        });
        let on_failure = config.as_ref().and_then(|c| c.on_failure.clone());
        let on_success = config.as_ref().and_then(|c| c.on_success.clone());
        let store = self.registry.store();
        let now = now_ms();
        if now - event.enqueued_ms > max_age.as_millis() as i64 {
            self.count(&event.function, |c| c.expired += 1);
            self.fail(
                &event,
                "EventAgeExceeded",
                None,
                event.attempts,
                on_failure.as_deref(),
            )
            .await;
            return;
        }
        let spec = match Qualifier::parse(&event.qualifier) {
            Ok(Qualifier::Latest) => self
                .registry
                .latest(&event.function)
                .map(|d| d.spec.clone()),
            Ok(Qualifier::Version(n)) => self
                .registry
                .version(&event.function, n)
                .await
                .ok()
                .flatten(),
            _ => None,
        };
        let Some(spec) = spec else {
            self.fail(&event, "FunctionNotFound", None, event.attempts, None)
                .await;
            return;
        };
        let traced = Traced::resume(event.trace.as_deref(), self.telemetry.tracer());
        let request = InvokeRequest {
            request_id: event.id.clone(),
            payload: Bytes::from(event.payload.clone()),
            invoked_arn: rampart_model::function_arn(&self.region, &event.function, None),
            trace_id: traced.function_header(),
            client_context: None,
            tail: false,
            extra_meters: Vec::new(),
        };
        let meters = self.meters(&event.function, &event.qualifier);
        let started = jiff::Timestamp::now().as_second();
        meters
            .async_event_age
            .record(started, (now_ms() - event.enqueued_ms) as f64);
        let result = self.dispatcher.invoke_background(spec, request).await;
        // A throttled delivery goes back to the queue: only deliveries that ran are traced.
        if let Ok(outcome) = &result {
            traced.finish(
                self.telemetry.tracer(),
                format!("Deliver {}", event.function),
                SpanKind::Consumer,
                vec![
                    ("faas.name", event.function.clone()),
                    ("faas.invocation_id", event.id.clone()),
                    ("faas.attempt", (event.attempts + 1).to_string()),
                ],
                Some(outcome),
                Some(event.enqueued_ms),
            );
        }
        let result_kind = result.as_ref().ok().map(|o| !o.function_error);
        let id = event.id.clone();
        let age = now_ms() - event.enqueued_ms;
        let recorded = match result {
            Ok(o) if !o.function_error => match on_success {
                Some(destination) => {
                    let record = self.record(&event, "Success", event.attempts + 1, Some(&o));
                    self.forward(&event, &destination, record).await
                }
                None => store.ack(id).await,
            },
            Ok(o) => {
                let failures = event.attempts + 1;
                if failures > max_retries {
                    self.fail(
                        &event,
                        "RetriesExhausted",
                        Some(&o),
                        failures,
                        on_failure.as_deref(),
                    )
                    .await;
                    Ok(())
                } else {
                    self.count(&event.function, |c| c.retried += 1);
                    let error = Some(String::from_utf8_lossy(&o.body).into_owned());
                    let delay = retry_delay(settings.retry_base, failures, jitter_of(&event.id));
                    store
                        .retry_later(id, now_ms() + delay.as_millis() as i64, true, error)
                        .await
                }
            }
            // Throttled or draining: back to the queue without using up an attempt.
            Err(InvokeError::Throttled { retry_after }) => {
                let delay = retry_after.max(Duration::from_millis(200));
                store
                    .retry_later(id, now_ms() + delay.as_millis() as i64, false, None)
                    .await
            }
            Err(InvokeError::ShuttingDown) => store.retry_later(id, now_ms(), false, None).await,
        };
        if let Err(e) = recorded {
            tracing::error!(error = %e, event = %event.id, "recording a delivery failed; the lease will return it");
        } else if matches!(&result_kind, Some(true)) {
            self.count(&event.function, |c| {
                c.delivered += 1;
                c.last_event_age_ms = age;
            });
        }
    }

    /// The metrics of `function` at `qualifier` (`$LATEST` or a version).
    pub(crate) fn meters(
        &self,
        function: &str,
        qualifier: &str,
    ) -> std::sync::Arc<rampart_telemetry::FunctionMeters> {
        self.telemetry.lambda().function(function, qualifier)
    }

    /// Records an accepted asynchronous event (counter and `AsyncEventsReceived`).
    pub(crate) fn event_received(&self, function: &str, qualifier: &str) {
        self.count(function, |c| c.received += 1);
        self.meters(function, qualifier)
            .async_events_received
            .record(jiff::Timestamp::now().as_second(), 1.0);
    }

    /// Changes a function's counters.
    pub(crate) fn count(&self, function: &str, change: impl FnOnce(&mut AsyncCounters)) {
        let mut counters = self.async_counters.lock().expect("counters lock");
        change(counters.entry(function.to_owned()).or_default());
    }

    /// A function's counters.
    pub(crate) fn counters(&self, function: &str) -> AsyncCounters {
        self.async_counters
            .lock()
            .expect("counters lock")
            .get(function)
            .copied()
            .unwrap_or_default()
    }

    /// Gives up on an event: to the on-failure destination when there is one, else to the
    /// dead-letter table, never nowhere.
    async fn fail(
        &self,
        event: &QueuedEvent,
        condition: &str,
        outcome: Option<&InvokeOutcome>,
        invoke_count: u32,
        on_failure: Option<&str>,
    ) {
        let store = self.registry.store();
        let meters = self.meters(&event.function, &event.qualifier);
        let now_secs = jiff::Timestamp::now().as_second();
        // Lambda counts every event given up on as dropped, wherever it goes next.
        meters.async_events_dropped.record(now_secs, 1.0);
        let mut reason = condition.to_owned();
        if let Some(destination) = on_failure {
            let record = self.record(event, condition, invoke_count, outcome);
            match self.forward(event, destination, record).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, event = %event.id, "on-failure destination refused a record");
                    self.count(&event.function, |c| c.destination_failures += 1);
                    meters.destination_delivery_failures.record(now_secs, 1.0);
                    reason.push_str("; the on-failure destination could not take it");
                }
            }
        }
        self.count(&event.function, |c| c.dead_lettered += 1);
        let error = outcome.map(|o| String::from_utf8_lossy(&o.body).into_owned());
        if let Err(e) = store
            .dead_letter(event.id.clone(), reason, error, invoke_count, now_ms())
            .await
        {
            meters.dead_letter_errors.record(now_secs, 1.0);
            tracing::error!(error = %e, event = %event.id, "dead-lettering failed; the lease will return it");
        }
    }

    /// Queues `record` for the destination function, in place of `event` (one transaction).
    async fn forward(
        &self,
        event: &QueuedEvent,
        destination: &str,
        record: Vec<u8>,
    ) -> Result<(), rampart_store::Error> {
        let name = rampart_model::destination_function(destination)
            .map_err(|e| rampart_store::Error::Rejected(e.message))?;
        if self.registry.latest(name.as_str()).is_none() {
            return Err(rampart_store::Error::FunctionNotFound {
                name: name.to_string(),
            });
        }
        self.registry
            .store()
            .forward(
                event.id.clone(),
                uuid::Uuid::new_v4().to_string(),
                name.to_string(),
                record,
                now_ms(),
            )
            .await?;
        self.queue_wakeup.notify_one();
        Ok(())
    }

    /// The invocation record destinations receive (async-invocation.md §4).
    fn record(
        &self,
        event: &QueuedEvent,
        condition: &str,
        invoke_count: u32,
        outcome: Option<&InvokeOutcome>,
    ) -> Vec<u8> {
        let as_json = |bytes: &[u8]| {
            serde_json::from_slice::<serde_json::Value>(bytes).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(bytes).into_owned())
            })
        };
        let mut record = serde_json::json!({
            "version": "1.0",
            "timestamp": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            "requestContext": {
                "requestId": event.id,
                "functionArn": rampart_model::function_arn(&self.region, &event.function, Some(&event.qualifier)),
                "condition": condition,
                "approximateInvokeCount": invoke_count,
            },
            "requestPayload": as_json(&event.payload),
        });
        if let Some(o) = outcome {
            let mut context = serde_json::json!({"statusCode": 200, "executedVersion": o.executed_version.as_ref()});
            if o.function_error {
                context["functionError"] = "Unhandled".into();
            }
            record["responseContext"] = context;
            record["responsePayload"] = as_json(&o.body);
        }
        record.to_string().into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_with_bounded_jitter() {
        let base = Duration::from_secs(60);
        assert_eq!(retry_delay(base, 1, 0.5), Duration::from_secs(60));
        assert_eq!(retry_delay(base, 2, 0.5), Duration::from_secs(120));
        assert_eq!(retry_delay(base, 1, 0.0), Duration::from_secs(48));
        assert_eq!(retry_delay(base, 1, 1.0), Duration::from_secs(72));
        let a = jitter_of("6f1c1a2b-0000-0000-0000-000000000001");
        let b = jitter_of("6f1c1a2b-0000-0000-0000-000000000002");
        assert!((0.0..1.0).contains(&a) && a != b);
    }
}

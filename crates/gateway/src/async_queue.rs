//! Delivery of asynchronous invocations: a worker claims due events from the store's queue by
//! lease, invokes them through the dispatcher, and acks, retries later (exponential backoff with
//! jitter) or dead-letters them. An event is never dropped: it is delivered, or it is in the
//! dead-letter table with its reason (`shared/spec/async-invocation.md`).
//!
//! Concurrency policy: at most `concurrency` deliveries run at once over all functions, and
//! each delivery takes the function's concurrency like a synchronous call but never waits for
//! it: a throttled delivery goes back to the queue (without using up an attempt) instead of
//! holding a place a synchronous caller could take.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rampart_model::Qualifier;
use rampart_runtime::{InvokeError, InvokeRequest};
use rampart_store::QueuedEvent;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Gateway;

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
}

impl Default for AsyncSettings {
    fn default() -> Self {
        Self {
            retry_base: Duration::from_secs(60),
            max_retries: 2,
            max_age: Duration::from_secs(6 * 3600),
            concurrency: 16,
        }
    }
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
    pub async fn run_async_worker(
        self: Arc<Self>,
        settings: AsyncSettings,
        shutdown: CancellationToken,
    ) {
        if let Err(e) = self.registry.store().release_leases().await {
            tracing::error!(error = %e, "could not release the leases of a previous run");
        }
        let slots = Arc::new(Semaphore::new(settings.concurrency));
        let tasks = TaskTracker::new();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.queue_wakeup.notified() => {}
                () = tokio::time::sleep(POLL) => {}
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
                    continue;
                }
            };
            for event in claimed {
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    break;
                };
                let this = self.clone();
                let settings = settings.clone();
                tasks.spawn(async move {
                    this.deliver(event, &settings).await;
                    drop(permit);
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
        let store = self.registry.store();
        let now = now_ms();
        let id = event.id.clone();
        if now - event.enqueued_ms > settings.max_age.as_millis() as i64 {
            let _ = store
                .dead_letter(id, "EventAgeExceeded".into(), None, event.attempts, now)
                .await
                .inspect_err(|e| tracing::error!(error = %e, "dead-lettering failed"));
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
            let _ = store
                .dead_letter(id, "FunctionNotFound".into(), None, event.attempts, now)
                .await
                .inspect_err(|e| tracing::error!(error = %e, "dead-lettering failed"));
            return;
        };
        let request = InvokeRequest {
            request_id: event.id.clone(),
            payload: Bytes::from(event.payload),
            invoked_arn: rampart_model::function_arn(&self.region, &event.function, None),
            trace_id: format!(
                "Root=1-{:08x}-{}",
                jiff::Timestamp::now().as_second(),
                &event
                    .id
                    .replace('-', "")
                    .chars()
                    .take(24)
                    .collect::<String>()
            ),
            client_context: None,
            tail: false,
        };
        let result = self.dispatcher.invoke(spec, request).await;
        let outcome = match result {
            Ok(o) if !o.function_error => store.ack(id).await,
            Ok(o) => {
                let failures = event.attempts + 1;
                let error = Some(String::from_utf8_lossy(&o.body).into_owned());
                if failures > settings.max_retries {
                    store
                        .dead_letter(id, "RetriesExhausted".into(), error, failures, now_ms())
                        .await
                } else {
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
        if let Err(e) = outcome {
            tracing::error!(error = %e, event = %event.id, "recording a delivery failed; the lease will return it");
        }
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

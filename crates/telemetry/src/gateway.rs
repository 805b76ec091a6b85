//! HTTP API metrics under `AWS/ApiGateway`, per API and route (`ApiId`, `Route`), with API
//! Gateway's names: Count, 4XXError, 5XXError (0 or 1 per request, so the Average is the rate)
//! and Latency, and Rampart's Throttles (429 answers: rate limits, quotas, concurrency).

use std::sync::Arc;

use rampart_store::SeriesKey;

use crate::recorder::{ByTwoNames, Kind, Recorder, Series};

/// The namespace of HTTP API metrics.
pub const API_GATEWAY_NAMESPACE: &str = "AWS/ApiGateway";

/// The meters of one route.
pub struct RouteMeters {
    count: Arc<Series>,
    client_errors: Arc<Series>,
    server_errors: Arc<Series>,
    throttles: Arc<Series>,
    latency: Arc<Series>,
}

impl RouteMeters {
    /// Records one answered request: its status and how long the gateway took (ms).
    pub fn answered(&self, second: i64, status: u16, latency_ms: f64) {
        self.count.record(second, 1.0);
        let class = |range: std::ops::Range<u16>| f64::from(u8::from(range.contains(&status)));
        self.client_errors.record(second, class(400..500));
        self.server_errors.record(second, class(500..600));
        self.throttles.record(second, class(429..430));
        self.latency.record(second, latency_ms);
    }
}

/// Route meters by API and route key, created on first use.
#[derive(Clone)]
pub struct ApiMetrics {
    recorder: Recorder,
    meters: Arc<ByTwoNames<RouteMeters>>,
}

impl ApiMetrics {
    /// API metrics recorded into `recorder`.
    pub fn new(recorder: Recorder) -> Self {
        Self {
            recorder,
            meters: Arc::default(),
        }
    }

    /// The meters of `route` (`GET /pets/{id}`, `$default`) of API `api`.
    pub fn route(&self, api: &str, route: &str) -> Arc<RouteMeters> {
        self.meters.get_or(api, route, || {
            let dims = vec![
                ("ApiId".to_owned(), api.to_owned()),
                ("Route".to_owned(), route.to_owned()),
            ];
            let series = |name: &str, unit: &str, kind: Kind| {
                self.recorder.series(
                    SeriesKey::new(API_GATEWAY_NAMESPACE, name, dims.clone()),
                    unit,
                    kind,
                )
            };
            RouteMeters {
                count: series("Count", "Count", Kind::Counter),
                client_errors: series("4XXError", "Count", Kind::Counter),
                server_errors: series("5XXError", "Count", Kind::Counter),
                throttles: series("Throttles", "Count", Kind::Counter),
                latency: series("Latency", "Milliseconds", Kind::Distribution),
            }
        })
    }
}

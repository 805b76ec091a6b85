//! Tracing: trace context from `X-Amzn-Trace-Id` or W3C `traceparent` (generated when
//! absent), spans of each invocation, and their export over OTLP/HTTP (protobuf) when an
//! endpoint is configured (spec metrics-and-alarms.md §6).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, span, status,
};
use prost::Message;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A trace an invocation belongs to, and the span that called it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// 16 bytes: in X-Ray's form, 4 bytes of epoch seconds and 12 random ones.
    pub trace_id: [u8; 16],
    /// The calling span, if the caller named one.
    pub parent: Option<[u8; 8]>,
    /// Whether spans of this trace are recorded.
    pub sampled: bool,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Fresh random bytes from the operating system.
fn random<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    // The OS generator does not fail on Linux once booted; a zero id is still refused below.
    if let Err(e) = getrandom::fill(&mut out) {
        tracing::warn!(error = %e, "no randomness for a trace id");
    }
    out
}

/// A new span id.
pub fn new_span_id() -> [u8; 8] {
    new_span_ids()[0]
}

/// Two new span ids from one draw of randomness.
pub fn new_span_ids() -> [[u8; 8]; 2] {
    loop {
        let bytes = random::<16>();
        let (a, b) = bytes.split_at(8);
        let ids = [
            a.try_into().expect("8 bytes"),
            b.try_into().expect("8 bytes"),
        ];
        if ids[0] != [0; 8] && ids[1] != [0; 8] {
            return ids;
        }
    }
}

impl TraceContext {
    /// A new trace (sampled), with X-Ray's epoch-second prefix.
    pub fn new_root() -> Self {
        let mut trace_id = [0u8; 16];
        let secs = jiff::Timestamp::now().as_second() as u32;
        trace_id[..4].copy_from_slice(&secs.to_be_bytes());
        trace_id[4..].copy_from_slice(&random::<12>());
        Self {
            trace_id,
            parent: None,
            sampled: true,
        }
    }

    /// `Root=1-<8 hex>-<24 hex>;Parent=<16 hex>;Sampled=<0|1|?>` in any order, keys in any
    /// case; `None` without a valid root.
    pub fn parse_xray(header: &str) -> Option<Self> {
        let mut context = Self {
            trace_id: [0; 16],
            parent: None,
            sampled: true,
        };
        let mut root = false;
        for part in header.split(';') {
            let (key, value) = part.trim().split_once('=')?;
            match key.to_ascii_lowercase().as_str() {
                "root" => {
                    let mut pieces = value.split('-');
                    if pieces.next()? != "1" {
                        return None;
                    }
                    let epoch = unhex::<4>(pieces.next()?)?;
                    let random = unhex::<12>(pieces.next()?)?;
                    context.trace_id[..4].copy_from_slice(&epoch);
                    context.trace_id[4..].copy_from_slice(&random);
                    root = true;
                }
                "parent" => context.parent = unhex::<8>(value),
                "sampled" => context.sampled = value != "0",
                _ => {}
            }
        }
        root.then_some(context)
    }

    /// `00-<32 hex trace id>-<16 hex parent>-<2 hex flags>`.
    pub fn parse_traceparent(header: &str) -> Option<Self> {
        let mut parts = header.trim().split('-');
        let version = parts.next()?;
        if version.len() != 2 || version == "ff" {
            return None;
        }
        let trace_id = unhex::<16>(parts.next()?)?;
        let parent = unhex::<8>(parts.next()?)?;
        let flags = unhex::<1>(parts.next()?)?;
        if trace_id == [0; 16] || parent == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            parent: Some(parent),
            sampled: flags[0] & 1 == 1,
        })
    }

    /// The caller's context from either header (X-Ray first), if one is valid.
    pub fn from_headers(xray: Option<&str>, traceparent: Option<&str>) -> Option<Self> {
        xray.and_then(Self::parse_xray)
            .or_else(|| traceparent.and_then(Self::parse_traceparent))
    }

    /// The X-Ray header handed on, naming `parent` as the calling span.
    pub fn xray_header(&self, parent: [u8; 8]) -> String {
        format!(
            "Root=1-{}-{};Parent={};Sampled={}",
            hex(&self.trace_id[..4]),
            hex(&self.trace_id[4..]),
            hex(&parent),
            u8::from(self.sampled)
        )
    }

    /// The W3C header handed on, naming `parent` as the calling span.
    pub fn traceparent(&self, parent: [u8; 8]) -> String {
        format!(
            "00-{}-{}-{:02x}",
            hex(&self.trace_id),
            hex(&parent),
            u8::from(self.sampled)
        )
    }
}

/// What a span did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// Answering a caller (the gateway receiving a request).
    Server,
    /// Work inside Rampart (init, the invocation, a queue wait).
    Internal,
    /// Handing work on to be done later (an event enqueued).
    Producer,
    /// Taking queued work (an event delivered).
    Consumer,
}

/// A finished span.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    /// Its trace.
    pub trace_id: [u8; 16],
    /// Its id.
    pub span_id: [u8; 8],
    /// The span it belongs to.
    pub parent: Option<[u8; 8]>,
    /// `Invoke counter`, `Initialization`, `Invocation`, `QueueWait`, ...
    pub name: String,
    /// What it did.
    pub kind: SpanKind,
    /// Start, epoch nanoseconds.
    pub start_ns: u64,
    /// End, epoch nanoseconds.
    pub end_ns: u64,
    /// Attributes (`faas.name`, `faas.invocation_id`, ...).
    pub attributes: Vec<(&'static str, String)>,
    /// It ended in an error.
    pub error: bool,
}

/// Epoch nanoseconds now.
pub fn now_ns() -> u64 {
    jiff::Timestamp::now().as_nanosecond().max(0) as u64
}

/// Nanoseconds in a duration (saturating).
pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Most spans waiting for export; beyond, spans are dropped (and counted in the log).
const QUEUE: usize = 8192;
/// Most spans one export request carries.
const BATCH: usize = 512;
/// How long spans wait for company before they are sent.
const LINGER: Duration = Duration::from_millis(500);
/// One export attempt's bound.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts per batch before it is dropped.
const ATTEMPTS: u32 = 3;

/// Decides whether a trace Rampart starts is sampled, as X-Ray's default rule does: the
/// first new trace of each second (the reservoir), then a fixed fraction of the rest. A
/// caller's own decision (`Sampled=` or the `traceparent` flag) is always kept.
#[derive(Debug)]
pub struct Sampler {
    rate: f64,
    reserved_second: AtomicI64,
}

impl Sampler {
    /// Samples the first new trace a second and `rate` (0.0 to 1.0) of the others.
    pub fn new(rate: f64) -> Self {
        Self {
            rate: rate.clamp(0.0, 1.0),
            reserved_second: AtomicI64::new(i64::MIN),
        }
    }

    fn decide(&self, trace_id: &[u8; 16]) -> bool {
        let now = jiff::Timestamp::now().as_second();
        let last = self.reserved_second.load(Ordering::Relaxed);
        if last != now
            && self
                .reserved_second
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return true;
        }
        // The trace id's last bytes are random: a uniform draw for free.
        let draw = u32::from_be_bytes(trace_id[12..].try_into().expect("4 bytes"));
        f64::from(draw) < self.rate * f64::from(u32::MAX)
    }
}

/// X-Ray's default fraction of new traces sampled beyond the first each second.
pub const DEFAULT_SAMPLE_RATE: f64 = 0.05;

/// Where finished spans go: to the exporter when one runs, else nowhere.
#[derive(Clone, Debug)]
pub struct Tracer {
    tx: Option<mpsc::Sender<SpanRecord>>,
    sampler: Arc<Sampler>,
}

/// The exporter's side of a [`Tracer`].
pub struct Exporter {
    endpoint: String,
    rx: mpsc::Receiver<SpanRecord>,
}

impl Tracer {
    /// A tracer that records nothing (its sampling decisions still reach functions).
    pub fn disabled() -> Self {
        Self {
            tx: None,
            sampler: Arc::new(Sampler::new(DEFAULT_SAMPLE_RATE)),
        }
    }

    /// This tracer, sampling `rate` of the new traces beyond the first each second.
    pub fn with_sample_rate(mut self, rate: f64) -> Self {
        self.sampler = Arc::new(Sampler::new(rate));
        self
    }

    /// A new trace, sampled as the sampler decides.
    pub fn new_trace(&self) -> TraceContext {
        let mut context = TraceContext::new_root();
        context.sampled = self.sampler.decide(&context.trace_id);
        context
    }

    /// A tracer exporting to `endpoint` (an OTLP/HTTP base URL such as
    /// `http://127.0.0.1:4318`, or the full `/v1/traces` URL), and its exporter to run.
    pub fn otlp(endpoint: &str) -> (Self, Exporter) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let endpoint = endpoint.trim_end_matches('/');
        let endpoint = if endpoint.ends_with("/v1/traces") {
            endpoint.to_owned()
        } else {
            format!("{endpoint}/v1/traces")
        };
        (
            Self {
                tx: Some(tx),
                sampler: Arc::new(Sampler::new(DEFAULT_SAMPLE_RATE)),
            },
            Exporter { endpoint, rx },
        )
    }

    /// Whether spans of `context` are recorded.
    pub fn records(&self, context: &TraceContext) -> bool {
        self.tx.is_some() && context.sampled
    }

    /// Hands a finished span to the exporter; never waits (a full queue drops it).
    pub fn record(&self, span: SpanRecord) {
        if let Some(tx) = &self.tx
            && tx.try_send(span).is_err()
        {
            tracing::debug!("span queue full: a span was dropped");
        }
    }
}

fn to_proto(span: SpanRecord) -> Span {
    let kind = match span.kind {
        SpanKind::Server => span::SpanKind::Server,
        SpanKind::Internal => span::SpanKind::Internal,
        SpanKind::Producer => span::SpanKind::Producer,
        SpanKind::Consumer => span::SpanKind::Consumer,
    };
    Span {
        trace_id: span.trace_id.to_vec(),
        span_id: span.span_id.to_vec(),
        parent_span_id: span.parent.map(|p| p.to_vec()).unwrap_or_default(),
        name: span.name,
        kind: kind as i32,
        start_time_unix_nano: span.start_ns,
        end_time_unix_nano: span.end_ns.max(span.start_ns),
        attributes: span
            .attributes
            .into_iter()
            .map(|(key, value)| KeyValue {
                key: key.to_owned(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(value)),
                }),
                ..Default::default()
            })
            .collect(),
        status: Some(Status {
            code: if span.error {
                status::StatusCode::Error
            } else {
                status::StatusCode::Ok
            } as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The OTLP request carrying `spans`, from the `rampart` service.
pub fn export_request(spans: Vec<SpanRecord>) -> ExportTraceServiceRequest {
    let attribute = |key: &str, value: &str| KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    attribute("service.name", "rampart"),
                    attribute("service.version", env!("CARGO_PKG_VERSION")),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "rampart".to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    ..Default::default()
                }),
                spans: spans.into_iter().map(to_proto).collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

impl Exporter {
    /// Sends spans in batches until `shutdown`, then sends what is left.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let http = match reqwest::Client::builder().timeout(EXPORT_TIMEOUT).build() {
            Ok(http) => http,
            Err(e) => {
                tracing::error!(error = %e, "the OTLP exporter cannot build its HTTP client");
                return;
            }
        };
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            tokio::select! {
                n = self.rx.recv_many(&mut batch, BATCH) => {
                    if n == 0 {
                        break;
                    }
                    let linger = tokio::time::Instant::now() + LINGER;
                    while batch.len() < BATCH {
                        let more = BATCH - batch.len();
                        tokio::select! {
                            r = tokio::time::timeout_at(linger, self.rx.recv_many(&mut batch, more)) => {
                                if !matches!(r, Ok(n) if n > 0) {
                                    break;
                                }
                            }
                            () = shutdown.cancelled() => break,
                        }
                    }
                    self.send(&http, std::mem::take(&mut batch)).await;
                }
                () = shutdown.cancelled() => break,
            }
        }
        while let Ok(span) = self.rx.try_recv() {
            batch.push(span);
            if batch.len() == BATCH {
                self.send(&http, std::mem::take(&mut batch)).await;
            }
        }
        self.send(&http, batch).await;
    }

    async fn send(&self, http: &reqwest::Client, spans: Vec<SpanRecord>) {
        if spans.is_empty() {
            return;
        }
        let count = spans.len();
        let body = export_request(spans).encode_to_vec();
        for attempt in 1..=ATTEMPTS {
            let sent = http
                .post(&self.endpoint)
                .header("content-type", "application/x-protobuf")
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => return,
                Ok(r) => {
                    tracing::warn!(status = %r.status(), attempt, "the OTLP endpoint refused spans")
                }
                Err(e) => tracing::warn!(error = %e, attempt, "sending spans failed"),
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
        }
        tracing::warn!(spans = count, endpoint = %self.endpoint, "dropped spans the OTLP endpoint did not take");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xray_and_w3c_headers_map_onto_each_other() {
        let x = TraceContext::parse_xray(
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1;Lineage=1:abc:0",
        )
        .unwrap();
        assert_eq!(hex(&x.trace_id), "5759e988bd862e3fe1be46a994272793");
        assert_eq!(x.parent, unhex::<8>("53995c3f42cd8ad8"));
        assert!(x.sampled);
        let w = TraceContext::parse_traceparent(
            "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01",
        )
        .unwrap();
        assert_eq!(x, w);
        let span = unhex::<8>("00f067aa0ba902b7").unwrap();
        assert_eq!(
            w.xray_header(span),
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=00f067aa0ba902b7;Sampled=1"
        );
        assert_eq!(
            x.traceparent(span),
            "00-5759e988bd862e3fe1be46a994272793-00f067aa0ba902b7-01"
        );
        let lower =
            TraceContext::parse_xray("root=1-5759e988-bd862e3fe1be46a994272793;sampled=0").unwrap();
        assert!(!lower.sampled && lower.parent.is_none());
    }

    #[test]
    fn bad_headers_start_a_new_trace() {
        for bad in [
            "Root=2-5759e988-bd862e3fe1be46a994272793",
            "Root=1-5759e988-short",
            "Parent=53995c3f42cd8ad8",
            "garbage",
        ] {
            assert!(TraceContext::parse_xray(bad).is_none(), "{bad}");
        }
        for bad in [
            "00-00000000000000000000000000000000-53995c3f42cd8ad8-01",
            "ff-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01",
            "00-5759e988bd862e3fe1be46a994272793-zz995c3f42cd8ad8-01",
        ] {
            assert!(TraceContext::parse_traceparent(bad).is_none(), "{bad}");
        }
        assert!(TraceContext::from_headers(Some("garbage"), None).is_none());
        let fresh = Tracer::disabled().with_sample_rate(1.0).new_trace();
        let now = jiff::Timestamp::now().as_second() as u32;
        let secs = u32::from_be_bytes(fresh.trace_id[..4].try_into().unwrap());
        assert!(now.abs_diff(secs) <= 1 && fresh.sampled && fresh.parent.is_none());
        assert_ne!(fresh.trace_id, TraceContext::new_root().trace_id);
    }

    #[test]
    fn spans_encode_as_otlp_protobuf() {
        let context = TraceContext::new_root();
        let span = SpanRecord {
            trace_id: context.trace_id,
            span_id: new_span_id(),
            parent: None,
            name: "Invoke f".into(),
            kind: SpanKind::Server,
            start_ns: 1,
            end_ns: 2,
            attributes: vec![("faas.name", "f".into())],
            error: true,
        };
        let bytes = export_request(vec![span]).encode_to_vec();
        let decoded = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
        let s = &decoded.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(s.name, "Invoke f");
        assert_eq!(s.trace_id, context.trace_id.to_vec());
        assert_eq!(s.kind, span::SpanKind::Server as i32);
        assert_eq!(
            s.status.as_ref().unwrap().code,
            status::StatusCode::Error as i32
        );
    }

    #[test]
    fn new_traces_are_sampled_by_reservoir_then_rate() {
        let none = Tracer::disabled().with_sample_rate(0.0);
        assert!(none.new_trace().sampled, "the first trace of a second");
        let sampled = (0..1000).filter(|_| none.new_trace().sampled).count();
        assert!(
            sampled <= 1,
            "{sampled}: at most one more when the second turns"
        );
        let some = Tracer::disabled().with_sample_rate(0.25);
        let sampled = (0..4000).filter(|_| some.new_trace().sampled).count();
        assert!((800..1200).contains(&sampled), "{sampled} of 4000 at 25%");
    }
}

//! The spans of one request: the gateway's own span (receiving a call, enqueuing an event or
//! delivering one), and under it the function's init (on a cold start) and invocation, plus
//! the time an event waited in the queue. The function is handed the trace with the
//! invocation span as its parent (`Lambda-Runtime-Trace-Id`, `_X_AMZN_TRACE_ID`).

use axum::http::HeaderMap;
use rampart_runtime::InvokeOutcome;
use rampart_telemetry::trace::{
    SpanKind, SpanRecord, TraceContext, Tracer, nanos, new_span_id, new_span_ids, now_ns,
};

/// A request being traced.
pub(crate) struct Traced {
    context: TraceContext,
    /// The gateway's span.
    root: [u8; 8],
    /// The invocation's span: the function's parent.
    invocation: [u8; 8],
    started_ns: u64,
}

impl Traced {
    /// A request's trace: the caller's (`X-Amzn-Trace-Id`, else `traceparent`) or a new one
    /// sampled by `tracer`'s rule.
    pub(crate) fn begin(headers: &HeaderMap, tracer: &Tracer) -> Self {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        Self::with(
            TraceContext::from_headers(header("x-amzn-trace-id"), header("traceparent"))
                .unwrap_or_else(|| tracer.new_trace()),
        )
    }

    /// The delivery of a queued event, continuing the trace stored with it.
    pub(crate) fn resume(stored: Option<&str>, tracer: &Tracer) -> Self {
        Self::with(TraceContext::from_headers(stored, None).unwrap_or_else(|| tracer.new_trace()))
    }

    fn with(context: TraceContext) -> Self {
        let [root, invocation] = new_span_ids();
        Self {
            context,
            root,
            invocation,
            started_ns: now_ns(),
        }
    }

    /// The trace header the function gets: its parent is the invocation span.
    pub(crate) fn function_header(&self) -> String {
        self.context.xray_header(self.invocation)
    }

    /// The trace header stored with an event this request enqueues: its parent is the
    /// gateway's span.
    pub(crate) fn event_header(&self) -> String {
        self.context.xray_header(self.root)
    }

    /// Records the spans: the gateway's (`name`, `kind`, from the start until now), and,
    /// when the function ran, its init and invocation, and, for a queued event, the wait
    /// since `enqueued_ms`.
    pub(crate) fn finish(
        &self,
        tracer: &Tracer,
        name: String,
        kind: SpanKind,
        mut attributes: Vec<(&'static str, String)>,
        outcome: Option<&InvokeOutcome>,
        enqueued_ms: Option<i64>,
    ) {
        if !tracer.records(&self.context) {
            return;
        }
        let end_ns = now_ns();
        let span = |span_id, parent, name: &str, kind, start_ns, end_ns, error| SpanRecord {
            trace_id: self.context.trace_id,
            span_id,
            parent,
            name: name.to_owned(),
            kind,
            start_ns,
            end_ns,
            attributes: Vec::new(),
            error,
        };
        let error = outcome.is_none_or(|o| o.function_error);
        if let Some(enqueued_ms) = enqueued_ms {
            let enqueued_ns = u64::try_from(enqueued_ms).unwrap_or(0) * 1_000_000;
            tracer.record(span(
                new_span_id(),
                self.context.parent,
                "QueueWait",
                SpanKind::Internal,
                enqueued_ns,
                self.started_ns,
                false,
            ));
        }
        if let Some(outcome) = outcome {
            let run_start = end_ns.saturating_sub(nanos(outcome.duration));
            if let Some(init) = outcome.init_duration {
                tracer.record(span(
                    new_span_id(),
                    Some(self.root),
                    "Initialization",
                    SpanKind::Internal,
                    run_start.saturating_sub(nanos(init)),
                    run_start,
                    false,
                ));
            }
            let mut invocation = span(
                self.invocation,
                Some(self.root),
                "Invocation",
                SpanKind::Internal,
                run_start,
                end_ns,
                outcome.function_error,
            );
            invocation.attributes = vec![
                ("faas.invocation_id", request_id(&attributes)),
                ("faas.coldstart", outcome.cold_start.to_string()),
                ("faas.version", outcome.executed_version.to_string()),
            ];
            tracer.record(invocation);
            attributes.push(("faas.coldstart", outcome.cold_start.to_string()));
        }
        let mut root = span(
            self.root,
            self.context.parent,
            &name,
            kind,
            self.started_ns,
            end_ns,
            error && kind != SpanKind::Producer,
        );
        root.attributes = attributes;
        tracer.record(root);
    }
}

fn request_id(attributes: &[(&'static str, String)]) -> String {
    attributes
        .iter()
        .find(|(k, _)| *k == "faas.invocation_id")
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

//! Instances and the invoke path: runtime processes speaking the Lambda Runtime API, warm pools
//! with per-function concurrency limits, and the failure handling around them.
//!
//! [`Dispatcher::invoke`] is the entry point: it admits the request under the function's
//! concurrency limit (or throttles), takes a warm instance (most recently used first) or starts
//! one, hands it the event through that instance's own Runtime API listener, and turns what
//! happens (a response, an error, an init failure, an exit, a timeout, running out of memory)
//! into an [`InvokeOutcome`]. Output lines flow to a [`LogRecord`] channel the server drains.
#![warn(missing_docs)]

mod api;
mod dispatch;
mod instance;
mod launcher;
mod sandbox;
mod spawn;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rampart_model::FunctionConfig;
use thiserror::Error;
use tokio::sync::mpsc;

pub use dispatch::{Detachable, Dispatcher, PoolStats};
pub use launcher::Launcher;
pub use sandbox::Sandbox;
pub use spawn::{ExecRequest, STUB_ARG, run_stub};

/// What can go wrong outside of a function's own failures.
#[derive(Debug, Error)]
pub enum Error {
    /// A file or directory could not be used.
    #[error("{what}")]
    Io {
        /// The operation and its subject.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}

/// Result of runtime operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One version of a function as instances run it.
#[derive(Debug, Clone)]
pub struct FunctionSpec {
    /// Function name.
    pub name: Arc<str>,
    /// The version number in the store.
    pub version: u64,
    /// How the version is named to the function and the caller: `$LATEST` or the number.
    pub version_label: Arc<str>,
    /// The configuration it runs with.
    pub config: FunctionConfig,
    /// The unpacked code.
    pub task_root: PathBuf,
}

/// How the dispatcher runs instances.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The data dir (instance temp dirs live under `tmp/`).
    pub data_dir: PathBuf,
    /// The region reported in ARNs and `AWS_REGION`.
    pub region: String,
    /// Interpreters and bootstraps.
    pub launcher: Launcher,
    /// Memory limits.
    pub sandbox: Sandbox,
    /// Where output lines go.
    pub log_sink: mpsc::Sender<LogRecord>,
    /// How long a request waits for a free instance before it is throttled.
    pub queue_wait: Duration,
    /// Longest init (start until the first `GET next`), as Lambda's 10 s.
    pub init_timeout: Duration,
    /// Longest a warm instance may take to ask for a delivered event before it counts as
    /// wedged and is replaced.
    pub next_timeout: Duration,
    /// Time between SIGTERM and SIGKILL when an instance is stopped.
    pub kill_grace: Duration,
    /// The `rampart` binary, run as `rampart __instance-stub` to keep pre-forked sandbox slots;
    /// `None` starts every instance directly.
    pub stub: Option<PathBuf>,
    /// Where invocation metrics are recorded.
    pub metrics: rampart_telemetry::LambdaMetrics,
    /// The server's API (`http://host:port`), given to functions as their CloudWatch and
    /// Lambda endpoint.
    pub api_endpoint: Option<String>,
}

/// One line of function output or a platform line.
#[derive(Debug, Clone)]
pub struct LogRecord {
    /// Function name.
    pub function: Arc<str>,
    /// Version label.
    pub version: Arc<str>,
    /// Instance id.
    pub instance: Arc<str>,
    /// The invocation running when it was written.
    pub request_id: Option<Arc<str>>,
    /// Epoch milliseconds.
    pub ts_ms: i64,
    /// `stdout`, `stderr` or `platform`.
    pub stream: &'static str,
    /// The text.
    pub line: String,
}

/// One synchronous invocation.
#[derive(Debug, Clone)]
pub struct InvokeRequest {
    /// The request id (a UUID), also `x-amzn-RequestId`.
    pub request_id: String,
    /// The event.
    pub payload: Bytes,
    /// The ARN as the caller addressed the function.
    pub invoked_arn: String,
    /// X-Ray trace header for `Lambda-Runtime-Trace-Id`.
    pub trace_id: String,
    /// Decoded client context JSON.
    pub client_context: Option<String>,
    /// Return the last 4 KB of the invocation's log.
    pub tail: bool,
    /// Meters the invocation is also recorded in (an alias's, besides the version's own).
    pub extra_meters: Vec<std::sync::Arc<rampart_telemetry::FunctionMeters>>,
}

/// What happened to an invocation that ran (or tried to).
#[derive(Debug, Clone)]
pub struct InvokeOutcome {
    /// The response, or the error object when `function_error` is set.
    pub body: Bytes,
    /// The runtime's content type, when it gave one.
    pub content_type: Option<String>,
    /// The function failed (`X-Amz-Function-Error: Unhandled`).
    pub function_error: bool,
    /// The version that ran (`$LATEST` or a number).
    pub executed_version: Arc<str>,
    /// The invocation's log tail (up to 4 KB), when asked for.
    pub log_tail: Option<String>,
    /// How long the invocation ran.
    pub duration: Duration,
    /// The instance was started for this invocation.
    pub cold_start: bool,
    /// The instance's init time, when it was started for this invocation.
    pub init_duration: Option<Duration>,
}

/// Why an invocation did not run.
#[derive(Debug, Error)]
pub enum InvokeError {
    /// The function's concurrency limit is reached.
    #[error("rate exceeded")]
    Throttled {
        /// Suggested wait before retrying.
        retry_after: Duration,
    },
    /// The server is draining.
    #[error("the server is shutting down")]
    ShuttingDown,
}

pub(crate) fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

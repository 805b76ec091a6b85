//! One instance: a runtime process, its Runtime API listener, its output readers and the task
//! that watches it exit.

use std::os::fd::OwnedFd;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rampart_model::RuntimeFamily;
use rustix::process::{Pid, Signal};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::sandbox::Cgroup;
use crate::{FunctionSpec, LogRecord, Settings, api, now_ms};

/// Longest line kept whole in the log; longer output is split.
const MAX_LINE: usize = 256 * 1024;
/// How much of an invocation's log `X-Amz-Log-Type: Tail` returns.
pub(crate) const TAIL_BYTES: usize = 4096;

/// An invocation handed to the runtime by `GET next`.
pub(crate) struct Event {
    pub request_id: String,
    pub payload: Bytes,
    pub deadline_ms: i64,
    pub invoked_arn: String,
    pub trace_id: String,
    pub client_context: Option<String>,
    pub reply: oneshot::Sender<Reply>,
}

/// What the runtime answered.
pub(crate) enum Reply {
    Response {
        body: Bytes,
        content_type: Option<String>,
    },
    Error {
        body: Bytes,
        error_type: Option<String>,
    },
    /// The response or error body exceeded the limit.
    TooLarge,
    /// The response or error body broke off before its end.
    Truncated,
}

/// How a process ended.
#[derive(Debug, Clone)]
pub(crate) struct ExitInfo {
    /// Go-style text as Lambda prints it: `exit status 1`, `signal: killed`.
    pub description: String,
    /// The kernel's OOM killer ended it.
    pub oom: bool,
}

/// Where an instance is in its life, as the invoke path waits on it.
#[derive(Debug, Clone)]
pub(crate) enum Status {
    /// Started; init not finished (no `GET next` yet).
    Starting,
    /// Init done: it called `GET next`.
    Ready,
    /// It reported `/init/error`.
    InitFailed {
        body: Bytes,
        error_type: Option<String>,
    },
    /// The process is gone.
    Exited(ExitInfo),
}

/// The Runtime API's view of the invocation protocol.
pub(crate) enum Phase {
    /// Before the first `GET next`.
    Init,
    /// Blocked in `GET next`.
    Waiting,
    /// An invocation was delivered; `reply` is taken when it is answered.
    Busy {
        request_id: String,
        reply: Option<oneshot::Sender<Reply>>,
    },
}

/// The invocation being run, for tagging output lines.
pub(crate) struct Current {
    pub request_id: Arc<str>,
    /// The invocation's log text when the caller asked for a tail.
    pub tail: Option<String>,
}

/// State shared by the instance's Runtime API, its readers and the invoke path.
pub(crate) struct Shared {
    pub status: watch::Sender<Status>,
    pub events: tokio::sync::Mutex<mpsc::Receiver<Event>>,
    pub phase: Mutex<Phase>,
    pub current: Mutex<Option<Current>>,
}

impl Shared {
    pub(crate) fn begin(&self, request_id: String, reply: oneshot::Sender<Reply>) {
        *self.phase.lock().expect("phase lock") = Phase::Busy {
            request_id,
            reply: Some(reply),
        };
    }
}

/// Tags and forwards output lines of one instance.
#[derive(Clone)]
struct LogTagger {
    function: Arc<str>,
    version: Arc<str>,
    instance: Arc<str>,
    shared: Arc<Shared>,
    sink: mpsc::Sender<LogRecord>,
}

impl LogTagger {
    fn emit(&self, stream: &'static str, line: String) {
        let request_id = {
            let mut current = self.shared.current.lock().expect("current lock");
            current.as_mut().map(|c| {
                if let Some(tail) = &mut c.tail {
                    append_tail(tail, &line);
                }
                c.request_id.clone()
            })
        };
        let record = LogRecord {
            function: self.function.clone(),
            version: self.version.clone(),
            instance: self.instance.clone(),
            request_id,
            ts_ms: now_ms(),
            stream,
            line,
        };
        // A full sink drops the line rather than stall the function.
        if self.sink.try_send(record).is_err() {
            tracing::debug!("log sink full: a line was dropped");
        }
    }
}

/// Keeps the last [`TAIL_BYTES`] of an invocation's log (trimmed lazily, on a char boundary).
pub(crate) fn append_tail(tail: &mut String, line: &str) {
    tail.push_str(line);
    tail.push('\n');
    if tail.len() > 2 * TAIL_BYTES {
        let mut cut = tail.len() - TAIL_BYTES;
        while !tail.is_char_boundary(cut) {
            cut += 1;
        }
        tail.drain(..cut);
    }
}

/// A running instance.
pub(crate) struct Instance {
    pub id: Arc<str>,
    pub shared: Arc<Shared>,
    pub events: mpsc::Sender<Event>,
    pub spawned_at: Instant,
    pub last_used: Mutex<Instant>,
    pub invocations: AtomicU64,
    pub init_duration: Mutex<Option<Duration>>,
    pid: Pid,
    /// Readable once the process has exited (before the monitor has noticed).
    pidfd: Option<OwnedFd>,
    cgroup: Option<Arc<Cgroup>>,
    /// Ask the monitor to SIGKILL the instance.
    kill: CancellationToken,
    /// Ask the monitor to SIGTERM, then SIGKILL after the grace period.
    terminate: CancellationToken,
    outputs: Vec<Arc<Output>>,
    tagger: LogTagger,
}

impl Instance {
    /// Starts an instance of `spec`; init runs in the background (see [`Status`]).
    ///
    /// # Errors
    /// A message saying why the process could not start (`Runtime.InvalidEntrypoint`).
    pub(crate) async fn spawn(
        id: Arc<str>,
        spec: Arc<FunctionSpec>,
        settings: &Settings,
        processes: &Arc<crate::spawn::Processes>,
        tracker: &TaskTracker,
        on_exit: Box<dyn FnOnce() + Send>,
    ) -> Result<Arc<Self>, String> {
        let begun = Instant::now();
        let (program, args) = settings
            .launcher
            .command(spec.config.runtime.family(), &spec.task_root)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("binding the Runtime API listener: {e}"))?;
        let api_addr = listener
            .local_addr()
            .map_err(|e| format!("reading the Runtime API address: {e}"))?;
        let tmp_dir = settings.data_dir.join("tmp").join(&*id);
        tokio::fs::create_dir_all(&tmp_dir)
            .await
            .map_err(|e| format!("creating the instance's temp dir: {e}"))?;

        let (events_tx, events_rx) = mpsc::channel(1);
        let shared = Arc::new(Shared {
            status: watch::channel(Status::Starting).0,
            events: tokio::sync::Mutex::new(events_rx),
            phase: Mutex::new(Phase::Init),
            current: Mutex::new(None),
        });
        let exec = crate::spawn::ExecRequest {
            program: program.display().to_string(),
            args: args.iter().map(|a| a.display().to_string()).collect(),
            env: environment(&spec, settings, &id, &api_addr.to_string(), &tmp_dir),
            cwd: spec.task_root.display().to_string(),
        };
        let process = crate::spawn::ProcessSpec {
            exec,
            memory_mb: spec.config.memory_mb,
            rlimit_fallback: spec.config.runtime.family() != RuntimeFamily::Node,
            cgroup_name: format!("i-{id}"),
        };
        let (mut child, cgroup) = match processes.start_process(process, tracker).await {
            Ok(started) => started,
            Err(e) => {
                let _ = tokio::fs::remove_dir_all(&tmp_dir).await;
                return Err(e);
            }
        };
        let pid = child
            .id()
            .and_then(|p| Pid::from_raw(p as i32))
            .ok_or("the runtime process exited at once")?;

        let kill = CancellationToken::new();
        let terminate = CancellationToken::new();
        let server_stop = CancellationToken::new();
        let tagger = LogTagger {
            function: spec.name.clone(),
            version: spec.version_label.clone(),
            instance: id.clone(),
            shared: shared.clone(),
            sink: settings.log_sink.clone(),
        };

        // Runtime API.
        let router = api::router(shared.clone());
        let stop = server_stop.clone();
        tracker.spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "instance Runtime API failed");
            }
        });

        // Output readers.
        let mut outputs = Vec::new();
        let mut readers = Vec::new();
        let pipes: [(&'static str, Option<OwnedFd>); 2] = [
            (
                "stdout",
                child.stdout.take().and_then(|p| p.into_owned_fd().ok()),
            ),
            (
                "stderr",
                child.stderr.take().and_then(|p| p.into_owned_fd().ok()),
            ),
        ];
        for (stream, fd) in pipes {
            let Some(receiver) = fd.and_then(|fd| pipe::Receiver::from_owned_fd(fd).ok()) else {
                continue;
            };
            let output = Arc::new(Output {
                receiver,
                stream,
                tagger: tagger.clone(),
                pending: Mutex::default(),
            });
            outputs.push(output.clone());
            readers.push(tracker.spawn(output.run()));
        }

        // Monitor: waits for the exit, or kills on request; then cleans up.
        let monitor_shared = shared.clone();
        let monitor_cgroup = cgroup.clone();
        let (k, t) = (kill.clone(), terminate.clone());
        let grace = settings.kill_grace;
        tracker.spawn(async move {
            let status = tokio::select! {
                status = child.wait() => status,
                () = k.cancelled() => {
                    kill_tree(pid, monitor_cgroup.as_deref());
                    child.wait().await
                }
                () = t.cancelled() => {
                    let _ = rustix::process::kill_process_group(pid, Signal::TERM);
                    match tokio::time::timeout(grace, child.wait()).await {
                        Ok(status) => status,
                        Err(_) => {
                            kill_tree(pid, monitor_cgroup.as_deref());
                            child.wait().await
                        }
                    }
                }
            };
            // Whatever the main process did, nothing of the instance may outlive it.
            kill_tree(pid, monitor_cgroup.as_deref());
            let oom = monitor_cgroup.as_ref().is_some_and(|c| c.oom_killed());
            let description = match status {
                Ok(s) => describe_exit(s),
                Err(e) => format!("wait failed: {e}"),
            };
            monitor_shared
                .status
                .send_replace(Status::Exited(ExitInfo { description, oom }));
            // A descendant that escaped the kill (setsid, no cgroup) may hold the pipes open:
            // stop reading after a moment rather than wait for it.
            for mut reader in readers {
                if tokio::time::timeout(Duration::from_secs(1), &mut reader)
                    .await
                    .is_err()
                {
                    reader.abort();
                }
            }
            server_stop.cancel();
            if let Some(c) = monitor_cgroup {
                // rmdir on a cgroup v1 hierarchy can wait for an RCU grace period.
                let _ = tokio::task::spawn_blocking(move || c.remove()).await;
            }
            let _ = tokio::fs::remove_dir_all(&tmp_dir).await;
            on_exit();
        });

        let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok();
        tracing::debug!(instance = %id, function = %spec.name, took = ?begun.elapsed(), "instance started");
        Ok(Arc::new(Self {
            id,
            shared,
            events: events_tx,
            spawned_at: Instant::now(),
            last_used: Mutex::new(Instant::now()),
            invocations: AtomicU64::new(0),
            init_duration: Mutex::new(None),
            pid,
            pidfd,
            cgroup,
            kill,
            terminate,
            outputs,
            tagger,
        }))
    }

    /// Ends the instance at once (SIGKILL to its process group and cgroup).
    pub(crate) fn kill(&self) {
        self.kill.cancel();
    }

    /// Ends the instance gracefully: SIGTERM, then SIGKILL after the grace period.
    pub(crate) fn terminate(&self) {
        self.terminate.cancel();
    }

    /// Whether the process still runs and can take an invocation.
    pub(crate) fn is_healthy(&self) -> bool {
        !self.kill.is_cancelled()
            && !self.terminate.is_cancelled()
            && matches!(*self.shared.status.borrow(), Status::Ready)
            && !self.has_exited()
    }

    /// Asks the kernel (one non-blocking poll) whether the process has exited, ahead of the
    /// monitor: an instance that died while idle is not handed an event.
    fn has_exited(&self) -> bool {
        use rustix::event::{PollFd, PollFlags, Timespec};
        let Some(fd) = &self.pidfd else { return false };
        let mut fds = [PollFd::new(fd, PollFlags::IN)];
        let now = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        rustix::event::poll(&mut fds, Some(&now)).is_ok_and(|n| n > 0)
    }

    /// Writes a platform line (START, END, REPORT...) into the instance's log.
    pub(crate) fn platform_line(&self, line: String) {
        self.tagger.emit("platform", line);
    }

    /// Takes every byte the process wrote so far (without waiting), so lines printed before
    /// the response are attributed to its invocation.
    pub(crate) fn flush_output(&self) {
        for output in &self.outputs {
            output.drain_now();
        }
    }

    /// Peak memory of the instance in MB, from its cgroup or else the process's high-water mark.
    pub(crate) fn max_memory_mb(&self) -> u64 {
        // procfs and cgroupfs reads are served from kernel memory and never wait on a disk.
        let bytes = self
            .cgroup
            .as_ref()
            .and_then(|c| c.peak_bytes())
            .or_else(|| {
                let status =
                    std::fs::read_to_string(format!("/proc/{}/status", self.pid.as_raw_nonzero()))
                        .ok()?;
                let kb = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))?
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()?;
                Some(kb * 1024)
            });
        bytes.map_or(0, |b| b.div_ceil(1024 * 1024))
    }
}

fn kill_tree(pid: Pid, cgroup: Option<&Cgroup>) {
    let _ = rustix::process::kill_process_group(pid, Signal::KILL);
    if let Some(c) = cgroup {
        c.kill_all();
    }
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        return format!("exit status {code}");
    }
    let signal = status.signal().unwrap_or(0);
    let name = match signal {
        1 => "hangup",
        2 => "interrupt",
        3 => "quit",
        4 => "illegal instruction",
        6 => "aborted",
        7 => "bus error",
        8 => "floating point exception",
        9 => "killed",
        11 => "segmentation fault",
        13 => "broken pipe",
        15 => "terminated",
        _ => return format!("signal: {signal}"),
    };
    format!("signal: {name}")
}

/// The environment of an instance: Lambda's variables and the function's own, nothing of the
/// server's (runtime-api.md §2).
fn environment(
    spec: &FunctionSpec,
    settings: &Settings,
    id: &str,
    api_addr: &str,
    tmp_dir: &std::path::Path,
) -> Vec<(String, String)> {
    let config = &spec.config;
    let date = jiff::Timestamp::now().strftime("%Y/%m/%d");
    let mut path: Vec<String> = settings
        .launcher
        .path_dirs()
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    path.extend(["/usr/local/bin", "/usr/bin", "/bin", "/opt/bin"].map(String::from));
    let task_root = spec.task_root.display().to_string();
    let runtime_dir = settings.launcher.runtime_dir.display().to_string();
    let mut env: Vec<(String, String)> = config
        .environment
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut set = |k: &str, v: String| env.push((k.to_owned(), v));
    set("AWS_LAMBDA_RUNTIME_API", api_addr.to_owned());
    set("_HANDLER", config.handler.clone());
    set("LAMBDA_TASK_ROOT", task_root.clone());
    set("LAMBDA_RUNTIME_DIR", runtime_dir.clone());
    set("AWS_LAMBDA_FUNCTION_NAME", spec.name.to_string());
    set(
        "AWS_LAMBDA_FUNCTION_VERSION",
        spec.version_label.to_string(),
    );
    set(
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        config.memory_mb.to_string(),
    );
    set(
        "AWS_LAMBDA_LOG_GROUP_NAME",
        format!("/aws/lambda/{}", spec.name),
    );
    set(
        "AWS_LAMBDA_LOG_STREAM_NAME",
        format!("{date}/[{}]{id}", spec.version_label),
    );
    set("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".into());
    set("AWS_REGION", settings.region.clone());
    set("AWS_DEFAULT_REGION", settings.region.clone());
    // Local credentials: Rampart does not verify signatures yet; SDKs need some to sign.
    set("AWS_ACCESS_KEY_ID", "rampart".into());
    set("AWS_SECRET_ACCESS_KEY", "rampart".into());
    set("AWS_SESSION_TOKEN", "rampart".into());
    // Unmodified SDK code reaches Rampart's own CloudWatch and Lambda APIs (unless the
    // function's configuration points them elsewhere).
    if let Some(endpoint) = &settings.api_endpoint {
        for key in ["AWS_ENDPOINT_URL_CLOUDWATCH", "AWS_ENDPOINT_URL_LAMBDA"] {
            if !config.environment.contains_key(key) {
                set(key, endpoint.clone());
            }
        }
    }
    set("TZ", ":UTC".into());
    set("LANG", "en_US.UTF-8".into());
    set("PATH", path.join(":"));
    set(
        "LD_LIBRARY_PATH",
        format!(
            "/lib64:/usr/lib64:{runtime_dir}:{runtime_dir}/lib:{task_root}:{task_root}/lib:/opt/lib"
        ),
    );
    set("TMPDIR", tmp_dir.display().to_string());
    match config.runtime.family() {
        RuntimeFamily::Python => {
            set(
                "AWS_EXECUTION_ENV",
                format!("AWS_Lambda_{}", config.runtime),
            );
            set("PYTHONUNBUFFERED", "1".into());
        }
        RuntimeFamily::Node => {
            set(
                "AWS_EXECUTION_ENV",
                format!("AWS_Lambda_{}", config.runtime),
            );
            set(
                "NODE_PATH",
                format!("/opt/nodejs/node_modules:{task_root}/node_modules"),
            );
        }
        RuntimeFamily::Provided => {}
    }
    env
}

/// One output pipe of an instance. The reader task drains it when the reactor says it is
/// readable; the invoke path drains it directly (a raw non-blocking read) before writing END,
/// so every line printed before the response is attributed to its invocation without waking
/// the reader task.
struct Output {
    receiver: pipe::Receiver,
    stream: &'static str,
    tagger: LogTagger,
    /// Bytes of an unfinished line.
    pending: Mutex<Vec<u8>>,
}

impl Output {
    /// Reads what the pipe holds without waiting; emits complete lines. Returns true at EOF.
    fn drain(&self, read: impl Fn(&mut [u8]) -> std::io::Result<usize>) -> bool {
        let mut pending = self.pending.lock().expect("output lock");
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match read(&mut chunk) {
                Ok(0) => return true,
                Ok(n) => {
                    pending.extend_from_slice(&chunk[..n]);
                    let mut start = 0;
                    while let Some(pos) = pending[start..].iter().position(|b| *b == b'\n') {
                        let line = &pending[start..start + pos];
                        let line = line.strip_suffix(b"\r").unwrap_or(line);
                        self.tagger
                            .emit(self.stream, String::from_utf8_lossy(line).into_owned());
                        start += pos + 1;
                    }
                    pending.drain(..start);
                    if pending.len() > MAX_LINE {
                        self.tagger
                            .emit(self.stream, String::from_utf8_lossy(&pending).into_owned());
                        pending.clear();
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return true,
            }
        }
    }

    /// Drains with a raw read, independent of the reactor's readiness state.
    fn drain_now(&self) {
        self.drain(|buf| rustix::io::read(&self.receiver, buf).map_err(std::io::Error::from));
    }

    /// Reads the pipe until EOF, then emits any unfinished line.
    async fn run(self: Arc<Self>) {
        loop {
            if self.receiver.readable().await.is_err() {
                break;
            }
            // try_io clears tokio's readiness when the read would block.
            let eof = self.drain(|buf| {
                self.receiver
                    .try_io(|| rustix::io::read(&self.receiver, &mut *buf).map_err(Into::into))
            });
            if eof {
                break;
            }
        }
        let rest = std::mem::take(&mut *self.pending.lock().expect("output lock"));
        if !rest.is_empty() {
            self.tagger
                .emit(self.stream, String::from_utf8_lossy(&rest).into_owned());
        }
    }
}

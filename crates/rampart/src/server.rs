//! The composition root: builds the store, the dispatcher and the gateway, serves until a
//! signal, then drains in order (refuse new work, finish in-flight invocations, stop instances,
//! flush logs, close the store).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use rampart_gateway::{Gateway, Registry};
use rampart_runtime::{Dispatcher, Launcher, LogRecord, Sandbox, Settings};
use rampart_store::{CodeStore, LogLine, Store};
use rampart_telemetry::Telemetry;
use rampart_telemetry::trace::Tracer;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Address of the API listener (port 0 picks one).
    pub listen: SocketAddr,
    /// Address of the HTTP listener serving API routes (port 0 picks one).
    pub http_listen: SocketAddr,
    /// Where the database, code and instance temp dirs live.
    pub data_dir: PathBuf,
    /// Region in ARNs and `AWS_REGION`.
    pub region: String,
    /// How long a request waits for a free instance before 429.
    pub queue_wait: Duration,
    /// Logs older than this are deleted.
    pub log_retention: Duration,
    /// At most this many log lines are kept per function.
    pub log_max_lines: usize,
    /// Longest wait for in-flight invocations when draining.
    pub drain_timeout: Duration,
    /// Enforce memory with setrlimit even where a cgroup is available.
    pub force_rlimit: bool,
    /// Longest init before it continues inside the invocation.
    pub init_timeout: Duration,
    /// Longest a warm instance may take to ask for a delivered event.
    pub next_timeout: Duration,
    /// How often alarms are evaluated.
    pub alarm_interval: Duration,
    /// How asynchronous events are retried.
    pub async_settings: rampart_gateway::AsyncSettings,
    /// Record metrics.
    pub telemetry: bool,
    /// Where spans are exported (OTLP/HTTP), if anywhere.
    pub otlp_endpoint: Option<String>,
    /// Fraction of new traces sampled beyond the first each second.
    pub trace_sample_rate: f64,
    /// How long metric rollups are kept.
    pub metrics_retention: rampart_telemetry::Retention,
}

/// A server that is listening.
pub struct Running {
    /// The bound API address.
    pub addr: SocketAddr,
    /// The bound HTTP (API routes) address.
    pub http_addr: SocketAddr,
    shutdown: CancellationToken,
    done: tokio::task::JoinHandle<Result<()>>,
}

impl Running {
    /// Asks the server to drain and stop.
    pub fn stop(&self) {
        self.shutdown.cancel();
    }

    /// Waits until the server has stopped.
    pub async fn wait(self) -> Result<()> {
        self.done.await.context("the server task panicked")?
    }
}

/// How long a new server waits for the lock: a killed server's child caught between fork and
/// exec holds the lock file open for a moment after the server is gone.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// Takes the data dir for this server alone: a second server on it would wipe the first one's
/// instance temp dirs and race its bundle cleanup.
async fn lock_data_dir(data_dir: &std::path::Path) -> Result<std::fs::File> {
    tokio::fs::create_dir_all(data_dir)
        .await
        .with_context(|| format!("creating the data dir {}", data_dir.display()))?;
    let path = data_dir.join("lock");
    let file = tokio::fs::File::create(&path)
        .await
        .with_context(|| format!("opening {}", path.display()))?
        .into_std()
        .await;
    let deadline = tokio::time::Instant::now() + LOCK_WAIT;
    loop {
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(file),
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => {
                return Err(anyhow::Error::new(std::io::Error::from(e)).context(format!(
                    "the data dir {} is in use by another rampart server",
                    data_dir.display()
                )));
            }
        }
    }
}

/// Opens everything, binds the listener and starts serving in the background.
pub async fn start(options: Options) -> Result<Running> {
    let data_dir = options.data_dir.clone();
    let lock = lock_data_dir(&data_dir).await?;
    let store = Store::open(&data_dir)
        .with_context(|| format!("opening the store in {}", data_dir.display()))?;
    let launcher = Launcher::prepare(&data_dir)
        .await
        .context("preparing the runtimes")?;
    let sandbox = if options.force_rlimit {
        Sandbox::Rlimit
    } else {
        Sandbox::detect()
    };
    tracing::info!(
        python = ?launcher.python, node = ?launcher.node, sandbox = %sandbox.describe(),
        "runtimes ready"
    );
    // Leftovers of a previous run (instances die with the server, their temp dirs may not).
    let _ = tokio::fs::remove_dir_all(data_dir.join("tmp")).await;

    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("binding {}", options.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let http_listener = tokio::net::TcpListener::bind(options.http_listen)
        .await
        .with_context(|| format!("binding {}", options.http_listen))?;
    let http_addr = http_listener
        .local_addr()
        .context("reading the bound HTTP address")?;
    let (tracer, exporter) = match &options.otlp_endpoint {
        Some(endpoint) => {
            let (tracer, exporter) = Tracer::otlp(endpoint);
            (tracer, Some(exporter))
        }
        None => (Tracer::disabled(), None),
    };
    let tracer = tracer.with_sample_rate(options.trace_sample_rate);
    let telemetry = Telemetry::new(
        store.clone(),
        options.telemetry,
        options.metrics_retention,
        tracer,
    );
    let (log_tx, log_rx) = mpsc::channel(16 * 1024);
    let dispatcher = Dispatcher::try_new(Settings {
        data_dir: data_dir.clone(),
        region: options.region.clone(),
        launcher,
        sandbox,
        log_sink: log_tx,
        queue_wait: options.queue_wait,
        init_timeout: options.init_timeout,
        next_timeout: options.next_timeout,
        kill_grace: Duration::from_millis(500),
        stub: std::env::current_exe().ok(),
        metrics: telemetry.lambda().clone(),
        api_endpoint: Some(format!("http://{addr}")),
    })
    .context("starting the dispatcher")?;
    let registry = Registry::load(store.clone(), CodeStore::new(&data_dir), dispatcher.clone())
        .await
        .context("loading functions")?;
    let gateway = Gateway::load(
        registry,
        dispatcher.clone(),
        telemetry.clone(),
        options.region.clone(),
        options.async_settings.clone(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("loading APIs: {e}"))?;

    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let logs_done = CancellationToken::new();
    tasks.spawn(write_logs(
        store.clone(),
        log_rx,
        options.clone(),
        logs_done.clone(),
    ));
    tasks.spawn(dispatcher.clone().run_maintenance(shutdown.child_token()));
    // Stopped after the drain, so the last invocations' metrics are flushed.
    let telemetry_done = CancellationToken::new();
    let telemetry_task = tokio::spawn(telemetry.clone().run(telemetry_done.clone()));
    // Stopped last, so the spans of the drained invocations are sent.
    let exporter_done = CancellationToken::new();
    let exporter_task = exporter.map(|e| tokio::spawn(e.run(exporter_done.clone())));
    tasks.spawn(
        gateway
            .clone()
            .run_sampler(Duration::from_secs(5), shutdown.child_token()),
    );
    let (transitions_tx, transitions_rx) = mpsc::channel(256);
    tasks.spawn(telemetry.clone().run_alarms(
        options.alarm_interval,
        transitions_tx,
        shutdown.child_token(),
    ));
    tasks.spawn(
        gateway
            .clone()
            .run_alarm_actions(transitions_rx, shutdown.child_token()),
    );
    let queue_stop = CancellationToken::new();
    let queue_worker = tokio::spawn(gateway.clone().run_async_worker(queue_stop.clone()));

    let http_stop = CancellationToken::new();
    // Peer addresses go into the audit trail.
    let router = gateway
        .router()
        .into_make_service_with_connect_info::<SocketAddr>();
    let stop = http_stop.clone();
    let http = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
    });
    let routes = gateway
        .http_router()
        .into_make_service_with_connect_info::<SocketAddr>();
    let stop = http_stop.clone();
    let routes_http = tokio::spawn(async move {
        axum::serve(http_listener, routes)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
    });

    let token = shutdown.clone();
    let done = tokio::spawn(async move {
        token.cancelled().await;
        tracing::info!("draining: new invocations get 503");
        gateway.start_draining();
        // Deployments in progress roll back: no half-shifted alias is left unwatched.
        gateway.stop_deployments(Duration::from_secs(10)).await;
        // Stop claiming queued events; deliveries in flight finish with the drain below.
        queue_stop.cancel();
        dispatcher.shutdown(options.drain_timeout).await;
        if queue_worker.await.is_err() {
            tracing::warn!("the async worker panicked");
        }
        tracing::info!("instances stopped; closing the listener");
        http_stop.cancel();
        for server in [http, routes_http] {
            match tokio::time::timeout(Duration::from_secs(5), server).await {
                Ok(Ok(Err(e))) => tracing::warn!(error = %e, "HTTP server error"),
                Err(_) => tracing::warn!("HTTP connections did not close in time"),
                _ => {}
            }
        }
        logs_done.cancel();
        telemetry_done.cancel();
        if telemetry_task.await.is_err() {
            tracing::warn!("the telemetry task panicked");
        }
        exporter_done.cancel();
        if let Some(task) = exporter_task
            && tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .is_err()
        {
            tracing::warn!("the span exporter did not finish in time");
        }
        tasks.close();
        tasks.wait().await;
        drop(gateway);
        drop(lock);
        tracing::info!("stopped");
        Ok(())
    });
    Ok(Running {
        addr,
        http_addr,
        shutdown,
        done,
    })
}

/// Most lines one log transaction takes.
const LOG_BATCH: usize = 2048;
/// How long the first line of a batch waits for company: one transaction (and one fsync) per
/// interval instead of one per trickle of lines.
const LOG_LINGER: Duration = Duration::from_millis(25);

/// Moves log lines from instances into the store in batches, and applies retention.
async fn write_logs(
    store: Store,
    mut rx: mpsc::Receiver<LogRecord>,
    options: Options,
    done: CancellationToken,
) {
    let mut prune = tokio::time::interval(Duration::from_secs(60));
    let mut batch = Vec::with_capacity(LOG_BATCH);
    loop {
        tokio::select! {
            n = rx.recv_many(&mut batch, LOG_BATCH) => {
                if n == 0 {
                    break;
                }
                let linger = tokio::time::Instant::now() + LOG_LINGER;
                while batch.len() < LOG_BATCH {
                    let more = LOG_BATCH - batch.len();
                    match tokio::time::timeout_at(linger, rx.recv_many(&mut batch, more)).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
                flush(&store, &mut batch).await;
            }
            _ = prune.tick() => {
                let before = jiff::Timestamp::now().as_millisecond()
                    - options.log_retention.as_millis() as i64;
                if let Err(e) = store.prune_logs(before, options.log_max_lines).await {
                    tracing::warn!(error = %e, "pruning logs failed");
                }
            }
            () = done.cancelled() => {
                // Take what is left, then stop.
                while let Ok(r) = rx.try_recv() {
                    batch.push(r);
                }
                break;
            }
        }
    }
    flush(&store, &mut batch).await;
}

async fn flush(store: &Store, batch: &mut Vec<LogRecord>) {
    if batch.is_empty() {
        return;
    }
    let lines = batch
        .drain(..)
        .map(|r| LogLine {
            id: 0,
            function: r.function.to_string(),
            version: r.version.to_string(),
            instance: r.instance.to_string(),
            request_id: r.request_id.map(|r| r.to_string()),
            ts_ms: r.ts_ms,
            stream: r.stream.to_owned(),
            line: r.line,
        })
        .collect();
    if let Err(e) = store.append_logs(lines).await {
        tracing::warn!(error = %e, "storing log lines failed");
    }
}

/// SIGTERM and SIGINT, caught from the moment this is made (the default would kill the
/// process without draining).
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Starts catching the signals.
    pub fn install() -> Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
        })
    }

    /// Resolves when either arrives.
    ///
    /// # Cancel safety
    /// Cancel safe: a signal that arrives meanwhile is kept for the next call.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => tracing::info!("SIGTERM received"),
            _ = self.int.recv() => tracing::info!("SIGINT received"),
        }
    }
}

/// The one machine-readable line announcing the server is ready.
pub fn ready_line(addr: SocketAddr, http_addr: SocketAddr, data_dir: &std::path::Path) -> String {
    serde_json::json!({
        "event": "ready",
        "listen": addr.to_string(),
        "endpoint": format!("http://{addr}"),
        "http_listen": http_addr.to_string(),
        "http_endpoint": format!("http://{http_addr}"),
        "data_dir": data_dir.display().to_string(),
        "pid": std::process::id(),
    })
    .to_string()
}

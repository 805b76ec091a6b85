//! The invoke path: admission under the function's concurrency limit, warm pools (most recently
//! used first), cold starts, and turning every way an invocation can end into an outcome.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::instance::{Current, Event, ExitInfo, Instance, Phase, Reply, Status};
use crate::spawn::Processes;
use crate::{FunctionSpec, InvokeError, InvokeOutcome, InvokeRequest, Settings, now_ms};
use rampart_telemetry::FunctionMeters;

/// How often idle instances are reclaimed and warm pools refilled.
const MAINTENANCE_INTERVAL: Duration = Duration::from_millis(500);
/// Consecutive init failures before cold starts back off.
const CRASH_LOOP_THRESHOLD: u32 = 3;
/// Longest crash-loop backoff.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Counts of a function's instances, for `rampart functions show`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Instances alive (idle, busy or starting).
    pub instances: usize,
    /// Instances waiting for work.
    pub idle: usize,
    /// Invocations running now.
    pub busy: usize,
    /// Reserved concurrency in force.
    pub limit: u32,
    /// Its instances keep failing to start: new ones are tried with backoff.
    pub degraded: bool,
}

/// Runs invocations on instances. Cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Settings,
    processes: Arc<Processes>,
    functions: Mutex<HashMap<Arc<str>, Arc<FunctionPools>>>,
    /// Every live instance, so shutdown can reach those that are starting.
    instances: Mutex<HashMap<Arc<str>, Arc<Instance>>>,
    /// Instance tasks (servers, readers, monitors) and pre-warming.
    tasks: TaskTracker,
    /// Invocations in flight, waited for when draining.
    invocations: TaskTracker,
    draining: AtomicBool,
    /// Invocations admitted and not finished, all functions.
    busy: AtomicUsize,
}

/// A pool's key: the version label (`$LATEST` or the number) and the version it runs.
type PoolKey = (Arc<str>, u64);

/// All pools of one function, sharing its concurrency limit.
struct FunctionPools {
    /// Reserved concurrency in force (the newest version's setting; see `set_concurrency`).
    limit: Mutex<u32>,
    /// Invocations admitted and not finished.
    busy: AtomicUsize,
    /// Background (asynchronous) invocations holding permits now.
    background: AtomicU32,
    permits: Arc<Semaphore>,
    pools: Mutex<HashMap<PoolKey, Arc<Pool>>>,
}

/// Instances of one version of a function, under one label.
struct Pool {
    spec: Arc<FunctionSpec>,
    /// Most recently used last.
    idle: Mutex<Vec<Arc<Instance>>>,
    live: AtomicUsize,
    /// A newer version took over the label (or the function was deleted): no reuse.
    retired: AtomicBool,
    crash: Mutex<CrashLoop>,
    meters: Arc<FunctionMeters>,
}

#[derive(Default)]
struct CrashLoop {
    failures: u32,
    until: Option<Instant>,
    last_error: Bytes,
}

impl Pool {
    fn pop_idle(&self) -> Option<Arc<Instance>> {
        let mut idle = self.idle.lock().expect("idle lock");
        while let Some(instance) = idle.pop() {
            if instance.is_healthy() {
                return Some(instance);
            }
            // Died while idle: replaced on demand.
            instance.kill();
            self.meters.recoveries.record(now_secs(), 1.0);
        }
        None
    }

    fn backing_off(&self) -> Option<Bytes> {
        let crash = self.crash.lock().expect("crash lock");
        crash
            .until
            .filter(|until| Instant::now() < *until)
            .map(|_| crash.last_error.clone())
    }

    fn init_failed(&self, error: Bytes) {
        let mut crash = self.crash.lock().expect("crash lock");
        crash.failures += 1;
        crash.last_error = error;
        if crash.failures >= CRASH_LOOP_THRESHOLD {
            let exp = (crash.failures - CRASH_LOOP_THRESHOLD).min(5);
            let backoff = (Duration::from_secs(1) * 2u32.pow(exp)).min(MAX_BACKOFF);
            tracing::warn!(function = %self.spec.name, failures = crash.failures, ?backoff, "init keeps failing: backing off");
            crash.until = Some(Instant::now() + backoff);
        }
    }

    fn init_succeeded(&self) {
        let mut crash = self.crash.lock().expect("crash lock");
        if crash.failures > 0 {
            *crash = CrashLoop::default();
        }
    }
}

impl Dispatcher {
    /// A dispatcher with no instances yet. Call from within a tokio runtime.
    ///
    /// # Errors
    /// When the spawner thread cannot be started.
    pub fn try_new(settings: Settings) -> std::io::Result<Self> {
        let processes = Arc::new(Processes::start(
            settings.sandbox.clone(),
            settings.stub.clone(),
        )?);
        let tasks = TaskTracker::new();
        processes.refill(&tasks);
        Ok(Self {
            inner: Arc::new(Inner {
                settings,
                processes,
                functions: Mutex::default(),
                instances: Mutex::default(),
                tasks,
                invocations: TaskTracker::new(),
                draining: AtomicBool::new(false),
                busy: AtomicUsize::new(0),
            }),
        })
    }

    /// The settings instances run with.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// Reclaims idle instances and keeps `min_instances` warm until `shutdown` is cancelled.
    pub async fn run_maintenance(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(MAINTENANCE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => self.maintain(),
            }
        }
    }

    fn maintain(&self) {
        self.inner.processes.refill(&self.inner.tasks);
        let functions: Vec<Arc<FunctionPools>> = self
            .inner
            .functions
            .lock()
            .expect("functions lock")
            .values()
            .cloned()
            .collect();
        let now = Instant::now();
        for fp in functions {
            let pools = fp.pools.lock().expect("pools lock");
            for pool in pools.values() {
                let min = pool.spec.config.min_instances as usize;
                let idle_timeout = pool.spec.config.idle_timeout();
                let mut live = pool.live.load(Ordering::Relaxed);
                {
                    let mut idle = pool.idle.lock().expect("idle lock");
                    // Instances that died while idle leave the pool now, not when next picked.
                    idle.retain(|instance| {
                        let healthy = instance.is_healthy();
                        if !healthy {
                            instance.kill();
                        }
                        healthy
                    });
                    // Oldest first; keep min_instances alive.
                    while let Some(oldest) = idle.first() {
                        let expired =
                            *oldest.last_used.lock().expect("last used lock") + idle_timeout <= now;
                        let retired = pool.retired.load(Ordering::Relaxed);
                        if !(retired || (expired && live > min)) {
                            break;
                        }
                        let instance = idle.remove(0);
                        tracing::debug!(instance = %instance.id, function = %pool.spec.name, "reclaiming idle instance");
                        // Its exit takes it off `pool.live`; count it gone for this round now.
                        instance.terminate();
                        live -= 1;
                    }
                }
                let warm_needed = !pool.retired.load(Ordering::Relaxed)
                    && live < min
                    && pool.backing_off().is_none()
                    && !self.inner.draining.load(Ordering::Relaxed);
                if warm_needed {
                    self.prewarm(pool.clone());
                }
            }
        }
    }

    fn prewarm(&self, pool: Arc<Pool>) {
        // Counted now, so the next maintenance round does not start another one.
        pool.live.fetch_add(1, Ordering::Relaxed);
        let this = self.clone();
        self.inner.tasks.spawn(async move {
            let started = this.start_instance(&pool).await;
            let instance = match started {
                Ok(i) => i,
                Err(e) => {
                    pool.init_failed(error_body(
                        "Runtime.InvalidEntrypoint",
                        &format!("Error: {e}"),
                    ));
                    return;
                }
            };
            let mut status = instance.shared.status.subscribe();
            let outcome = tokio::time::timeout(
                this.inner.settings.init_timeout,
                status.wait_for(|s| !matches!(s, Status::Starting)),
            )
            .await
            .map(|s| s.map(|s| s.clone()).unwrap_or(Status::Starting));
            match outcome {
                Ok(Status::Ready) if !pool.retired.load(Ordering::Relaxed) => {
                    *instance.init_duration.lock().expect("init lock") =
                        Some(instance.spawned_at.elapsed());
                    pool.init_succeeded();
                    *instance.last_used.lock().expect("last used lock") = Instant::now();
                    pool.idle.lock().expect("idle lock").insert(0, instance);
                }
                Ok(Status::Ready) => instance.terminate(),
                failed => {
                    let body = match failed {
                        Ok(Status::InitFailed { body, .. }) => body,
                        Ok(Status::Exited(info)) => exit_error("(pre-warm)", &info),
                        _ => error_body(
                            "Sandbox.Timedout",
                            "Error: init timed out while pre-warming",
                        ),
                    };
                    instance
                        .platform_line("INIT_REPORT Phase: init\tStatus: error (pre-warm)".into());
                    pool.init_failed(body);
                    instance.kill();
                }
            }
        });
    }

    /// Starts an instance of the pool's version and registers it; the caller has already
    /// counted it in `pool.live`.
    /// Starts an instance of the pool's version, counted in `pool.live` from now on.
    ///
    /// # Cancel safety
    /// The start runs in its own task: if this future is dropped, the instance still comes up
    /// whole (temp dir, cgroup, monitor) and is then stopped, so nothing is left behind and the
    /// count stays right.
    async fn spawn_instance(&self, pool: &Arc<Pool>) -> Result<Arc<Instance>, String> {
        pool.live.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let this = self.clone();
        let pool = pool.clone();
        self.inner.tasks.spawn(async move {
            let started = this.start_instance(&pool).await;
            if let Err(Ok(instance)) = tx.send(started) {
                // The caller is gone: nobody will use this instance.
                instance.terminate();
            }
        });
        rx.await
            .unwrap_or_else(|_| Err("the instance start was abandoned".into()))
    }

    async fn start_instance(&self, pool: &Arc<Pool>) -> Result<Arc<Instance>, String> {
        let id: Arc<str> = uuid::Uuid::new_v4().simple().to_string().into();
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let exit_pool = pool.clone();
        let exit_id = id.clone();
        let on_exit = Box::new(move || {
            exit_pool.live.fetch_sub(1, Ordering::Relaxed);
            if let Some(inner) = weak.upgrade() {
                inner
                    .instances
                    .lock()
                    .expect("instances lock")
                    .remove(&exit_id);
            }
        });
        let instance = match Instance::spawn(
            id,
            pool.spec.clone(),
            &self.inner.settings,
            &self.inner.processes,
            &self.inner.tasks,
            on_exit,
        )
        .await
        {
            Ok(instance) => instance,
            Err(e) => {
                // No monitor exists to uncount it.
                pool.live.fetch_sub(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        self.refill_after_init(&instance);
        let exited = matches!(*instance.shared.status.borrow(), Status::Exited(_));
        if !exited {
            self.inner
                .instances
                .lock()
                .expect("instances lock")
                .insert(instance.id.clone(), instance.clone());
        }
        Ok(instance)
    }

    /// Tops the sandbox slots up once `instance` has finished its init (or failed it).
    fn refill_after_init(&self, instance: &Instance) {
        let mut status = instance.shared.status.subscribe();
        let processes = self.inner.processes.clone();
        let tasks = self.inner.tasks.clone();
        let bound = self.inner.settings.init_timeout;
        self.inner.tasks.spawn(async move {
            let _ =
                tokio::time::timeout(bound, status.wait_for(|s| !matches!(s, Status::Starting)))
                    .await;
            processes.refill(&tasks);
        });
    }

    fn function_pools(&self, spec: &FunctionSpec) -> Arc<FunctionPools> {
        let mut functions = self.inner.functions.lock().expect("functions lock");
        functions
            .entry(spec.name.clone())
            .or_insert_with(|| new_function_pools(spec.config.concurrency_limit()))
            .clone()
    }

    /// Sets a function's reserved concurrency (all its versions share it, as on Lambda).
    /// Lowering it takes effect as running invocations end.
    pub fn set_concurrency(&self, name: &str, limit: u32) {
        let fp = {
            let mut functions = self.inner.functions.lock().expect("functions lock");
            functions
                .entry(name.into())
                .or_insert_with(|| new_function_pools(limit))
                .clone()
        };
        let mut current = fp.limit.lock().expect("limit lock");
        if limit > *current {
            fp.permits.add_permits((limit - *current) as usize);
        } else if limit < *current {
            let excess = (*current - limit) as usize;
            let forgotten = fp.permits.forget_permits(excess);
            let rest = (excess - forgotten) as u32;
            if rest > 0 {
                // Permits in use now are retired as they come back.
                let permits = fp.permits.clone();
                self.inner.tasks.spawn(async move {
                    if let Ok(p) = permits.acquire_many(rest).await {
                        p.forget();
                    }
                });
            }
        }
        *current = limit;
    }

    fn pool(&self, fp: &FunctionPools, spec: &Arc<FunctionSpec>) -> Arc<Pool> {
        let mut pools = fp.pools.lock().expect("pools lock");
        let key = (spec.version_label.clone(), spec.version);
        if let Some(pool) = pools.get(&key) {
            return pool.clone();
        }
        // A newer version under the same label retires the older pools of that label.
        pools.retain(|(label, _), old| {
            let stale = *label == spec.version_label;
            if stale {
                retire(old);
            }
            !stale
        });
        let pool = Arc::new(Pool {
            spec: spec.clone(),
            idle: Mutex::default(),
            live: AtomicUsize::new(0),
            retired: AtomicBool::new(false),
            crash: Mutex::default(),
            meters: self
                .inner
                .settings
                .metrics
                .function(&spec.name, &spec.version_label),
        });
        pools.insert(key, pool.clone());
        pool
    }

    /// Makes sure the pool of `spec` exists, so `min_instances` are started and kept warm.
    pub fn ensure_warm(&self, spec: Arc<FunctionSpec>) {
        if spec.config.min_instances > 0 {
            let fp = self.function_pools(&spec);
            self.pool(&fp, &spec);
        }
    }

    /// Stops reusing the `$LATEST` instances of a function after an update (idle ones end now,
    /// busy ones when their invocation ends); numbered versions keep theirs.
    pub fn retire_latest(&self, name: &str) {
        self.retire_where(name, |label| label == "$LATEST", false);
    }

    /// Forgets a deleted function: every instance ends (busy ones when their invocation ends),
    /// and a function created later under the same name starts afresh.
    pub fn retire_function(&self, name: &str) {
        self.retire_where(name, |_| true, true);
    }

    /// Replaces every instance of a function, gracefully: idle ones stop now, busy ones
    /// finish their invocation first, and new invocations start new instances. Its
    /// concurrency settings stay.
    pub fn recycle_function(&self, name: &str) {
        self.retire_where(name, |_| true, false);
    }

    fn retire_where(&self, name: &str, matches: impl Fn(&str) -> bool, forget: bool) {
        let fp = {
            let mut functions = self.inner.functions.lock().expect("functions lock");
            if forget {
                functions.remove(name)
            } else {
                functions.get(name).cloned()
            }
        };
        if let Some(fp) = fp {
            fp.pools
                .lock()
                .expect("pools lock")
                .retain(|(label, _), pool| {
                    let stale = matches(label);
                    if stale {
                        retire(pool);
                    }
                    !stale
                });
        }
    }

    /// Instance counts of a function.
    pub fn stats(&self, name: &str) -> PoolStats {
        let fp = self
            .inner
            .functions
            .lock()
            .expect("functions lock")
            .get(name)
            .cloned();
        let Some(fp) = fp else {
            return PoolStats::default();
        };
        let pools = fp.pools.lock().expect("pools lock");
        let limit = *fp.limit.lock().expect("limit lock");
        let mut stats = PoolStats {
            limit,
            busy: (limit as usize).saturating_sub(fp.permits.available_permits()),
            ..PoolStats::default()
        };
        for pool in pools.values() {
            stats.instances += pool.live.load(Ordering::Relaxed);
            stats.idle += pool.idle.lock().expect("idle lock").len();
            stats.degraded |= pool.backing_off().is_some();
        }
        stats
    }

    /// Runs one invocation of `spec`.
    ///
    /// # Errors
    /// [`InvokeError::Throttled`] when the concurrency limit stays reached for the queue wait;
    /// [`InvokeError::ShuttingDown`] while draining. A function's own failure is an `Ok`
    /// outcome with `function_error` set.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the caller's wait; an instance that was running the event is
    /// killed (its invocation cannot be answered any more) and replaced on demand.
    pub async fn invoke(
        &self,
        spec: Arc<FunctionSpec>,
        request: InvokeRequest,
    ) -> Result<InvokeOutcome, InvokeError> {
        self.tracked(spec, request, false).await
    }

    /// Runs a background (asynchronous) invocation under the policy that keeps synchronous
    /// callers from starving: it never waits for a permit, and background invocations of a
    /// function hold at most half its concurrency (at least one) at a time. Otherwise it is
    /// [`InvokeError::Throttled`] at once and the caller requeues it.
    ///
    /// # Errors
    /// As [`Dispatcher::invoke`].
    pub async fn invoke_background(
        &self,
        spec: Arc<FunctionSpec>,
        request: InvokeRequest,
    ) -> Result<InvokeOutcome, InvokeError> {
        self.tracked(spec, request, true).await
    }

    /// Refuses while draining; otherwise runs the invocation as one the drain waits for.
    async fn tracked(
        &self,
        spec: Arc<FunctionSpec>,
        request: InvokeRequest,
        background: bool,
    ) -> Result<InvokeOutcome, InvokeError> {
        if self.inner.draining.load(Ordering::Acquire) {
            return Err(InvokeError::ShuttingDown);
        }
        self.inner
            .invocations
            .track_future(self.invoke_admitted(spec, request, background))
            .await
    }

    /// Runs an invocation on the caller's task; when the caller stops waiting (an API Gateway
    /// integration timeout, a client gone) it moves to a tracked task of its own and runs to
    /// its end, so its instance stays healthy, as on AWS.
    pub fn invoke_detachable(
        &self,
        spec: Arc<FunctionSpec>,
        request: InvokeRequest,
    ) -> Detachable<impl Future<Output = Result<InvokeOutcome, InvokeError>> + Send + 'static> {
        let this = self.clone();
        Detachable {
            running: Some(Box::pin(async move { this.invoke(spec, request).await })),
            tasks: self.inner.tasks.clone(),
        }
    }

    async fn invoke_admitted(
        &self,
        spec: Arc<FunctionSpec>,
        mut request: InvokeRequest,
        background: bool,
    ) -> Result<InvokeOutcome, InvokeError> {
        let fp = self.function_pools(&spec);
        let admitted = if background {
            admit_background(&fp).map(|(permit, slot)| (permit, Some(slot)))
        } else {
            self.admit(&fp).await.map(|permit| (permit, None))
        };
        let (permit, background_slot) = admitted.inspect_err(|_| {
            let meters = self
                .inner
                .settings
                .metrics
                .function(&spec.name, &spec.version_label);
            meters.throttles.record(now_secs(), 1.0);
            for extra in &request.extra_meters {
                extra.throttles.record(now_secs(), 1.0);
            }
        })?;
        let pool = self.pool(&fp, &spec);
        let started = now_secs();
        let _busy = Busy::enter(&fp.busy, &self.inner.busy);
        pool.meters
            .concurrent_executions
            .record(started, fp.busy.load(Ordering::Relaxed) as f64);
        self.inner
            .settings
            .metrics
            .account_concurrency()
            .record(started, self.inner.busy.load(Ordering::Relaxed) as f64);
        let extra_meters = std::mem::take(&mut request.extra_meters);
        let outcome = self
            .run_admitted(&spec, &pool, request, permit, background_slot)
            .await;
        record_outcome(&pool.meters, started, &outcome);
        for extra in &extra_meters {
            record_outcome(extra, started, &outcome);
        }
        Ok(outcome)
    }

    async fn run_admitted(
        &self,
        spec: &Arc<FunctionSpec>,
        pool: &Arc<Pool>,
        request: InvokeRequest,
        permit: OwnedSemaphorePermit,
        background_slot: Option<BackgroundSlot>,
    ) -> InvokeOutcome {
        let pending = PendingInvocation {
            pool: pool.clone(),
            request,
            _permit: permit,
            _background: background_slot,
        };
        if let Some(last_error) = pool.backing_off() {
            return pending.failed_fast(last_error);
        }
        // A warm instance can die while idle, just before it is picked: the event never reached
        // it, so the invocation moves to another instance (once) instead of failing.
        let mut retried = false;
        loop {
            let instance = match pool.pop_idle() {
                Some(instance) => instance,
                None => match self.spawn_instance(pool).await {
                    Ok(instance) => instance,
                    Err(message) => return pending.entrypoint_failed(&message),
                },
            };
            let guard = KillOnDrop(Some(instance.clone()));
            let outcome = pending.run(&instance, &self.inner.settings, !retried).await;
            guard.disarm();
            let reusable = instance.is_healthy() && !pool.retired.load(Ordering::Relaxed);
            if reusable {
                *instance.last_used.lock().expect("last used lock") = Instant::now();
                pool.idle.lock().expect("idle lock").push(instance);
            } else {
                instance.kill();
            }
            match outcome {
                Some(outcome) => return outcome,
                None => {
                    tracing::debug!(function = %spec.name, "idle instance died before its event was delivered: retrying");
                    retried = true;
                }
            }
        }
    }

    async fn admit(&self, fp: &FunctionPools) -> Result<OwnedSemaphorePermit, InvokeError> {
        if let Ok(permit) = fp.permits.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let wait = self.inner.settings.queue_wait;
        match tokio::time::timeout(wait, fp.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(InvokeError::Throttled {
                retry_after: Duration::from_secs(1),
            }),
        }
    }

    /// Drains: refuses new invocations, lets running ones finish (each within its own timeout,
    /// all within `inflight_bound`), then stops every instance (SIGTERM, SIGKILL after the grace)
    /// and waits for their tasks.
    pub async fn shutdown(&self, inflight_bound: Duration) {
        self.inner.draining.store(true, Ordering::Release);
        self.inner.invocations.close();
        if tokio::time::timeout(inflight_bound, self.inner.invocations.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "in-flight invocations did not finish in time: stopping their instances"
            );
        }
        let instances: Vec<Arc<Instance>> = self
            .inner
            .instances
            .lock()
            .expect("instances lock")
            .values()
            .cloned()
            .collect();
        tracing::info!(count = instances.len(), "stopping instances");
        self.inner.processes.close_slots().await;
        for instance in &instances {
            instance.terminate();
        }
        self.inner.tasks.close();
        let bound = self.inner.settings.kill_grace + Duration::from_secs(5);
        if tokio::time::timeout(bound, self.inner.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some instance tasks did not end in time");
        }
        let sandbox = self.inner.settings.sandbox.clone();
        let _ = tokio::task::spawn_blocking(move || sandbox.cleanup()).await;
    }
}

fn new_function_pools(limit: u32) -> Arc<FunctionPools> {
    Arc::new(FunctionPools {
        limit: Mutex::new(limit),
        busy: AtomicUsize::new(0),
        background: AtomicU32::new(0),
        permits: Arc::new(Semaphore::new(limit as usize)),
        pools: Mutex::default(),
    })
}

fn retire(pool: &Pool) {
    pool.retired.store(true, Ordering::Relaxed);
    let idle = std::mem::take(&mut *pool.idle.lock().expect("idle lock"));
    for instance in idle {
        instance.terminate();
    }
}

/// Kills the instance if the invocation future is dropped mid-run.
struct KillOnDrop(Option<Arc<Instance>>);

impl KillOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(instance) = self.0.take() {
            instance.kill();
        }
    }
}

/// An admitted invocation.
struct PendingInvocation {
    pool: Arc<Pool>,
    request: InvokeRequest,
    _permit: OwnedSemaphorePermit,
    _background: Option<BackgroundSlot>,
}

/// A background invocation's place in its function's background share, given back on drop.
struct BackgroundSlot(Arc<FunctionPools>);

/// Counts an admitted invocation as busy (per function and overall) while it lives.
struct Busy<'a>(&'a AtomicUsize, &'a AtomicUsize);

impl<'a> Busy<'a> {
    fn enter(function: &'a AtomicUsize, all: &'a AtomicUsize) -> Self {
        function.fetch_add(1, Ordering::Relaxed);
        all.fetch_add(1, Ordering::Relaxed);
        Self(function, all)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
        self.1.fetch_sub(1, Ordering::Relaxed);
    }
}

fn now_secs() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// Lambda's invocation metrics, stamped with the second the invocation started.
fn record_outcome(meters: &FunctionMeters, started: i64, outcome: &InvokeOutcome) {
    meters.invocations.record(started, 1.0);
    meters
        .errors
        .record(started, if outcome.function_error { 1.0 } else { 0.0 });
    meters
        .duration
        .record(started, outcome.duration.as_secs_f64() * 1000.0);
    if outcome.function_error && error_type(&outcome.body).as_deref() == Some("Sandbox.Timedout") {
        meters.timeouts.record(started, 1.0);
    }
    if let Some(init) = outcome.init_duration {
        meters.cold_starts.record(started, 1.0);
        meters
            .init_duration
            .record(started, init.as_secs_f64() * 1000.0);
    }
}

/// The `errorType` of an error body.
fn error_type(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        #[serde(rename = "errorType")]
        error_type: Option<String>,
    }
    serde_json::from_slice::<ErrorBody>(body).ok()?.error_type
}

impl Drop for BackgroundSlot {
    fn drop(&mut self) {
        self.0.background.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Admission of a background invocation: no waiting, at most half the function's permits.
fn admit_background(
    fp: &Arc<FunctionPools>,
) -> Result<(OwnedSemaphorePermit, BackgroundSlot), InvokeError> {
    let throttled = || InvokeError::Throttled {
        retry_after: Duration::from_millis(100),
    };
    let limit = *fp.limit.lock().expect("limit lock");
    let share = limit.div_ceil(2).max(1);
    if fp.background.fetch_add(1, Ordering::AcqRel) >= share {
        fp.background.fetch_sub(1, Ordering::AcqRel);
        return Err(throttled());
    }
    let slot = BackgroundSlot(fp.clone());
    let permit = fp
        .permits
        .clone()
        .try_acquire_owned()
        .map_err(|_| throttled())?;
    Ok((permit, slot))
}

/// Lambda's error object.
fn error_body(error_type: &str, message: &str) -> Bytes {
    Bytes::from(serde_json::json!({"errorType": error_type, "errorMessage": message}).to_string())
}

impl PendingInvocation {
    fn outcome(&self, body: Bytes, function_error: bool, duration: Duration) -> InvokeOutcome {
        InvokeOutcome {
            body,
            content_type: None,
            function_error,
            executed_version: self.pool.spec.version_label.clone(),
            log_tail: None,
            duration,
            cold_start: true,
            init_duration: None,
        }
    }

    fn failed_fast(&self, last_error: Bytes) -> InvokeOutcome {
        self.outcome(last_error, true, Duration::ZERO)
    }

    fn entrypoint_failed(&self, message: &str) -> InvokeOutcome {
        let id = &self.request.request_id;
        let body = error_body(
            "Runtime.InvalidEntrypoint",
            &format!("RequestId: {id} Error: {message}"),
        );
        self.pool.init_failed(body.clone());
        self.outcome(body, true, Duration::ZERO)
    }

    /// Runs the invocation on `instance`, waiting for its init first on a cold start. `None`
    /// (only when `may_retry`) means a warm instance was found dead before the event reached it.
    async fn run(
        &self,
        instance: &Arc<Instance>,
        settings: &Settings,
        may_retry: bool,
    ) -> Option<InvokeOutcome> {
        let id = self.request.request_id.clone();
        let spec = &self.pool.spec;
        // Cold: this invocation waits for the instance's init (a pre-warmed one has none).
        let cold = instance.init_duration.lock().expect("init lock").is_none();
        instance.invocations.fetch_add(1, Ordering::Relaxed);
        *instance.shared.current.lock().expect("current lock") = Some(Current {
            request_id: id.as_str().into(),
            tail: self.request.tail.then(String::new),
        });
        let mut status = instance.shared.status.subscribe();
        let timeout = spec.config.timeout();
        // The invocation's own time; an init that overran its 10 s spends part of it.
        let mut budget = timeout;
        if cold {
            let init_done = |s: &Status| !matches!(s, Status::Starting);
            let mut waited =
                tokio::time::timeout(settings.init_timeout, status.wait_for(init_done))
                    .await
                    .map(|s| s.map(|s| s.clone()).unwrap_or(Status::Starting));
            if waited.is_err() {
                // As on Lambda, an init past its limit goes on inside the invocation, counted
                // against the function's timeout (Rampart lets the same process finish its init
                // rather than starting it over).
                instance.platform_line(format!(
                    "INIT_REPORT Init Duration: {:.2} ms\tPhase: init\tStatus: timeout",
                    ms(settings.init_timeout)
                ));
                let phase = Instant::now();
                waited = tokio::time::timeout(timeout, status.wait_for(init_done))
                    .await
                    .map(|s| s.map(|s| s.clone()).unwrap_or(Status::Starting));
                budget = timeout.saturating_sub(phase.elapsed());
            }
            let init_ms = ms(instance.spawned_at.elapsed());
            let failure = match waited {
                Ok(Status::Ready) => {
                    *instance.init_duration.lock().expect("init lock") =
                        Some(instance.spawned_at.elapsed());
                    self.pool.init_succeeded();
                    None
                }
                Ok(Status::InitFailed { body, error_type }) => {
                    let error_type = error_type.unwrap_or_else(|| "Runtime.Unknown".into());
                    Some((body, error_type))
                }
                Ok(Status::Exited(info)) => {
                    Some((exit_error(&id, &info), exit_error_type(&info).to_owned()))
                }
                // The status sender is gone only with the instance: treat as an exit.
                Ok(Status::Starting) => Some((
                    error_body(
                        "Runtime.ExitError",
                        &format!("RequestId: {id} Error: Runtime exited during init"),
                    ),
                    "Runtime.ExitError".to_owned(),
                )),
                Err(_) => Some((
                    error_body(
                        "Sandbox.Timedout",
                        &format!(
                            "RequestId: {id} Error: Task timed out after {:.2} seconds",
                            timeout.as_secs_f64()
                        ),
                    ),
                    "Sandbox.Timedout".to_owned(),
                )),
            };
            if let Some((body, error_type)) = failure {
                instance.kill();
                instance.platform_line(format!(
                    "INIT_REPORT Init Duration: {init_ms:.2} ms\tPhase: init\tStatus: error\tError Type: {error_type}"
                ));
                self.pool.init_failed(body.clone());
                return Some(
                    self.finish(instance, body, None, true, Duration::ZERO, false)
                        .await,
                );
            }
        }

        instance.platform_line(format!(
            "START RequestId: {id} Version: {}",
            spec.version_label
        ));
        let started = Instant::now();
        let (reply_tx, reply_rx) = oneshot::channel();
        let event = Event {
            request_id: id.clone(),
            payload: self.request.payload.clone(),
            deadline_ms: now_ms() + budget.as_millis() as i64,
            invoked_arn: self.request.invoked_arn.clone(),
            trace_id: self.request.trace_id.clone(),
            client_context: self.request.client_context.clone(),
            reply: reply_tx,
        };
        if instance.events.send(event).await.is_err() {
            instance.kill();
        }
        let deadline = started + budget;
        // A warm runtime takes the event at once; one that has not asked for it within the
        // bound is wedged (it answered before and never called `next`).
        let pickup = started + settings.next_timeout;
        let mut reply_rx = reply_rx;
        let mut checked_pickup = cold;
        let (body, content_type, function_error) = loop {
            break tokio::select! {
                biased;
                reply = &mut reply_rx => match reply {
                    Ok(Reply::Response { body, content_type }) => (body, content_type, false),
                    Ok(Reply::Error { body, error_type }) => (error_or_header(body, error_type), None, true),
                    Ok(Reply::Truncated) => (error_body(
                        "Runtime.TruncatedResponse",
                        &format!("RequestId: {id} Error: the runtime's response was cut off"),
                    ), None, true),
                    Ok(Reply::TooLarge) => (error_body(
                        "Function.ResponseSizeTooLarge",
                        &format!("Response payload size exceeded maximum allowed payload size ({} bytes).", rampart_model::MAX_RESPONSE_BYTES),
                    ), None, true),
                    Err(_) => (error_body(
                        "Sandbox.Failure",
                        &format!("RequestId: {id} Error: the runtime dropped the invocation"),
                    ), None, true),
                },
                info = exited(&mut status) => {
                    if may_retry && !cold && !delivered(instance, &id) {
                        *instance.shared.current.lock().expect("current lock") = None;
                        return None;
                    }
                    (exit_error(&id, &info), None, true)
                }
                () = tokio::time::sleep_until(pickup), if !checked_pickup => {
                    checked_pickup = true;
                    if delivered(instance, &id) {
                        continue;
                    }
                    instance.kill();
                    self.pool.meters.recoveries.record(now_secs(), 1.0);
                    tracing::warn!(function = %spec.name, "an instance did not ask for its next event: replaced");
                    if may_retry {
                        *instance.shared.current.lock().expect("current lock") = None;
                        return None;
                    }
                    (error_body(
                        "Sandbox.Failure",
                        &format!("RequestId: {id} Error: the runtime did not ask for the event within {:.1} s", settings.next_timeout.as_secs_f64()),
                    ), None, true)
                }
                () = tokio::time::sleep_until(deadline) => {
                    instance.kill();
                    let secs = timeout.as_secs_f64();
                    instance.platform_line(format!(
                        "{} {id} Task timed out after {secs:.2} seconds",
                        jiff::Timestamp::now()
                    ));
                    (error_body(
                        "Sandbox.Timedout",
                        &format!("RequestId: {id} Error: Task timed out after {secs:.2} seconds"),
                    ), None, true)
                }
            };
        };
        let duration = started.elapsed();
        if let Some(reason) = self.exit_reason(&status) {
            instance.platform_line(format!(
                "RequestId: {id} Error: Runtime exited with error: {reason}"
            ));
        }
        let mut outcome = self
            .finish(instance, body, content_type, function_error, duration, cold)
            .await;
        outcome.cold_start = cold;
        Some(outcome)
    }

    fn exit_reason(&self, status: &watch::Receiver<Status>) -> Option<String> {
        match &*status.borrow() {
            Status::Exited(info) => Some(info.description.clone()),
            _ => None,
        }
    }

    /// Writes END and REPORT, collects the tail, and builds the outcome.
    async fn finish(
        &self,
        instance: &Arc<Instance>,
        body: Bytes,
        content_type: Option<String>,
        function_error: bool,
        duration: Duration,
        report_init: bool,
    ) -> InvokeOutcome {
        let id = &self.request.request_id;
        let spec = &self.pool.spec;
        instance.flush_output();
        let duration_ms = ms(duration);
        let init = instance
            .init_duration
            .lock()
            .expect("init lock")
            .filter(|_| report_init)
            .map(ms);
        let billed = (duration_ms + init.unwrap_or(0.0)).ceil().max(1.0) as u64;
        let mut report = format!(
            "REPORT RequestId: {id}\tDuration: {duration_ms:.2} ms\tBilled Duration: {billed} ms\tMemory Size: {} MB\tMax Memory Used: {} MB\t",
            spec.config.memory_mb,
            instance.max_memory_mb()
        );
        if let Some(init) = init {
            report.push_str(&format!("Init Duration: {init:.2} ms\t"));
        }
        instance.platform_line(format!("END RequestId: {id}"));
        instance.platform_line(report);
        let tail = instance
            .shared
            .current
            .lock()
            .expect("current lock")
            .take()
            .and_then(|c| c.tail);
        let mut outcome = self.outcome(body, function_error, duration);
        outcome.content_type = content_type;
        outcome.init_duration = instance
            .init_duration
            .lock()
            .expect("init lock")
            .filter(|_| report_init);
        outcome.log_tail = tail.map(|t| {
            let mut cut = t.len().saturating_sub(crate::instance::TAIL_BYTES);
            while !t.is_char_boundary(cut) {
                cut += 1;
            }
            t[cut..].to_owned()
        });
        outcome
    }
}

/// The runtime's error body, or one built from its error-type header when the body is empty.
fn error_or_header(body: Bytes, error_type: Option<String>) -> Bytes {
    if body.iter().all(u8::is_ascii_whitespace) {
        let error_type = error_type.unwrap_or_else(|| "Unhandled".into());
        return error_body(&error_type, "");
    }
    body
}

/// Whether the runtime took the event `id` with `GET next`.
fn delivered(instance: &Instance, id: &str) -> bool {
    matches!(&*instance.shared.phase.lock().expect("phase lock"), Phase::Busy { request_id, .. } if request_id == id)
}

/// Waits until the instance's process is gone.
///
/// # Cancel safety
/// Cancel safe: it only watches.
async fn exited(status: &mut watch::Receiver<Status>) -> ExitInfo {
    let info = match status.wait_for(|s| matches!(s, Status::Exited(_))).await {
        Ok(s) => match &*s {
            Status::Exited(info) => Some(info.clone()),
            _ => None,
        },
        Err(_) => None,
    };
    match info {
        Some(info) => info,
        // The sender lives as long as the instance: never gone while we hold it.
        None => std::future::pending().await,
    }
}

fn exit_error_type(info: &ExitInfo) -> &'static str {
    if info.oom {
        "Runtime.OutOfMemory"
    } else {
        "Runtime.ExitError"
    }
}

fn exit_error(id: &str, info: &ExitInfo) -> Bytes {
    error_body(
        exit_error_type(info),
        &format!(
            "RequestId: {id} Error: Runtime exited with error: {}",
            info.description
        ),
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A future that, dropped before it finished, goes on in a tracked task of its own
/// ([`Dispatcher::invoke_detachable`]).
pub struct Detachable<F: Future + Send + 'static>
where
    F::Output: Send,
{
    running: Option<Pin<Box<F>>>,
    tasks: TaskTracker,
}

impl<F: Future + Send + 'static> Future for Detachable<F>
where
    F::Output: Send,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<F::Output> {
        let Some(running) = self.running.as_mut() else {
            return Poll::Pending;
        };
        let output = std::task::ready!(running.as_mut().poll(cx));
        self.running = None;
        Poll::Ready(output)
    }
}

impl<F: Future + Send + 'static> Drop for Detachable<F>
where
    F::Output: Send,
{
    fn drop(&mut self) {
        if let Some(running) = self.running.take()
            && tokio::runtime::Handle::try_current().is_ok()
        {
            self.tasks.spawn(running);
        }
    }
}

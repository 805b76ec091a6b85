//! Starting instance processes: the one place with `unsafe` (work between fork and exec), a
//! dedicated spawner thread, and pre-forked sandbox slots.
//!
//! Two facts shape this module:
//! - `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, so every fork
//!   happens on one long-lived thread (never on a blocking-pool thread that retires when idle).
//! - Moving a process into a cgroup v1 memory cgroup waits for an RCU grace period (~20 ms
//!   here), and `spawn` waits for the child's exec. To keep that off cold starts, a few *slots*
//!   are kept ready: a parked stub process (`rampart __instance-stub`) already inside a fresh
//!   cgroup, which execs the runtime with the environment it is sent on stdin.

use std::collections::VecDeque;
use std::ffi::CString;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rustix::process::{Resource, Rlimit, Signal};
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;

use crate::sandbox::{Cgroup, Sandbox};

/// The argument that turns the `rampart` binary into a slot's stub.
pub const STUB_ARG: &str = "__instance-stub";
/// Slots kept ready.
const SLOTS: usize = 2;

/// What the stub is asked to exec, sent as one JSON document on its stdin.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ExecRequest {
    /// The program.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its whole environment.
    pub env: Vec<(String, String)>,
    /// Its working directory.
    pub cwd: String,
}

/// How to start one instance's process.
pub(crate) struct ProcessSpec {
    pub exec: ExecRequest,
    pub memory_mb: u32,
    /// Use `RLIMIT_AS` when no cgroup is available (not for Node: V8 reserves a large
    /// address space up front).
    pub rlimit_fallback: bool,
    pub cgroup_name: String,
}

type SpawnJob = (Command, oneshot::Sender<std::io::Result<Child>>);

/// Starts processes from one long-lived thread.
pub(crate) struct Processes {
    jobs: std::sync::mpsc::Sender<SpawnJob>,
    sandbox: Sandbox,
    slots: Option<Arc<Slots>>,
}

struct Slot {
    child: Child,
    cgroup: Arc<Cgroup>,
}

struct Slots {
    stub: PathBuf,
    ready: Mutex<VecDeque<Slot>>,
    filling: AtomicBool,
    /// Set at shutdown: no more refills.
    closed: AtomicBool,
}

impl Processes {
    /// Starts the spawner thread (it ends when the last handle is dropped). Slots are used when
    /// `stub` is given and instances get cgroups.
    pub(crate) fn start(sandbox: Sandbox, stub: Option<PathBuf>) -> std::io::Result<Self> {
        let (jobs, rx) = std::sync::mpsc::channel::<SpawnJob>();
        let handle = tokio::runtime::Handle::current();
        std::thread::Builder::new()
            .name("rampart-spawner".into())
            .spawn(move || {
                // tokio's process driver needs a runtime context to register the child.
                let _guard = handle.enter();
                while let Ok((mut command, reply)) = rx.recv() {
                    let _ = reply.send(command.spawn());
                }
            })?;
        let slots = stub
            .filter(|_| !matches!(sandbox, Sandbox::Rlimit))
            .map(|stub| {
                Arc::new(Slots {
                    stub,
                    ready: Mutex::default(),
                    filling: AtomicBool::new(false),
                    closed: AtomicBool::new(false),
                })
            });
        Ok(Self {
            jobs,
            sandbox,
            slots,
        })
    }

    async fn spawn(&self, command: Command) -> std::io::Result<Child> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send((command, tx))
            .map_err(|_| std::io::Error::other("the spawner thread is gone"))?;
        rx.await
            .map_err(|_| std::io::Error::other("the spawner thread is gone"))?
    }

    /// Keeps the slots topped up, in the background.
    pub(crate) fn refill(self: &Arc<Self>, tracker: &TaskTracker) {
        let Some(slots) = &self.slots else { return };
        if slots.closed.load(Ordering::Acquire) || slots.filling.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        tracker.spawn(async move {
            let slots = this.slots.as_ref().expect("checked above");
            while slots.ready.lock().expect("slots lock").len() < SLOTS
                && !slots.closed.load(Ordering::Acquire)
            {
                match this.new_slot(slots).await {
                    Ok(slot) if slots.closed.load(Ordering::Acquire) => discard(slot).await,
                    Ok(slot) => slots.ready.lock().expect("slots lock").push_back(slot),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not prepare a sandbox slot");
                        break;
                    }
                }
            }
            slots.filling.store(false, Ordering::Release);
        });
    }

    async fn new_slot(&self, slots: &Slots) -> Result<Slot, String> {
        let name = format!("s-{}", uuid::Uuid::new_v4().simple());
        let cgroup = self
            .sandbox
            .create(&name, None)
            .map(Arc::new)
            .ok_or("no cgroup")?;
        let mut command = Command::new(&slots.stub);
        command
            .arg(STUB_ARG)
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        prepare(&mut command, Some(cgroup.procs.clone()), None);
        match self.spawn(command).await {
            Ok(child) => Ok(Slot { child, cgroup }),
            Err(e) => {
                cgroup.remove();
                Err(format!("starting the slot stub: {e}"))
            }
        }
    }

    /// Ends every parked slot and stops refilling (at shutdown).
    pub(crate) async fn close_slots(&self) {
        if let Some(slots) = &self.slots {
            slots.closed.store(true, Ordering::Release);
            let parked: Vec<Slot> = slots.ready.lock().expect("slots lock").drain(..).collect();
            for slot in parked {
                discard(slot).await;
            }
        }
    }

    /// Starts the process of an instance: from a ready slot when there is one, else directly.
    ///
    /// # Errors
    /// Why the process could not start, as Lambda words it (`fork/exec ...`).
    pub(crate) async fn start_process(
        self: &Arc<Self>,
        spec: ProcessSpec,
        tracker: &TaskTracker,
    ) -> Result<(Child, Option<Arc<Cgroup>>), String> {
        if let Some(slots) = &self.slots {
            let slot = slots.ready.lock().expect("slots lock").pop_front();
            // Refilled once the instance's init is over (see the dispatcher), not now: the new
            // slot's cgroup move would stall forks and thread starts of the starting instance.
            let _ = tracker;
            if let Some(slot) = slot {
                match hand_off(slot, &spec).await {
                    Ok(started) => return Ok(started),
                    Err(e) => tracing::debug!(error = %e, "a sandbox slot was unusable"),
                }
            }
        }
        let cgroup = self
            .sandbox
            .create(&spec.cgroup_name, Some(spec.memory_mb))
            .map(Arc::new);
        let mut command = Command::new(&spec.exec.program);
        command
            .args(&spec.exec.args)
            .env_clear()
            .envs(spec.exec.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&spec.exec.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let rlimit = (cgroup.is_none() && spec.rlimit_fallback)
            .then_some(u64::from(spec.memory_mb) * 1024 * 1024);
        prepare(
            &mut command,
            cgroup.as_ref().map(|c| c.procs.clone()),
            rlimit,
        );
        match self.spawn(command).await {
            Ok(child) => Ok((child, cgroup)),
            Err(e) => {
                if let Some(c) = &cgroup {
                    c.remove();
                }
                Err(format!("fork/exec {}: {e}", spec.exec.program))
            }
        }
    }
}

/// Kills a slot's stub, reaps it, and removes its cgroup.
async fn discard(mut slot: Slot) {
    let _ = slot.child.start_kill();
    slot.cgroup.kill_all();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), slot.child.wait()).await;
    let cgroup = slot.cgroup;
    let _ = tokio::task::spawn_blocking(move || cgroup.remove()).await;
}

/// Gives a parked stub its limit and the program to exec.
async fn hand_off(
    mut slot: Slot,
    spec: &ProcessSpec,
) -> Result<(Child, Option<Arc<Cgroup>>), String> {
    if !matches!(slot.child.try_wait(), Ok(None)) {
        discard(slot).await;
        return Err("the stub is gone".into());
    }
    if let Err(e) = slot.cgroup.set_limit(spec.memory_mb) {
        discard(slot).await;
        return Err(format!("setting the memory limit: {e}"));
    }
    let request = serde_json::to_vec(&spec.exec).expect("exec requests serialize");
    let Some(mut stdin) = slot.child.stdin.take() else {
        discard(slot).await;
        return Err("the stub has no stdin".into());
    };
    // Closing stdin (drop) tells the stub the request is complete.
    if let Err(e) = stdin.write_all(&request).await {
        discard(slot).await;
        return Err(format!("sending the exec request: {e}"));
    }
    drop(stdin);
    Ok((slot.child, Some(slot.cgroup)))
}

/// Arranges for the child to join its cgroup (or take an address-space rlimit) and to die with
/// the server, before it runs any function code.
#[allow(unsafe_code)]
fn prepare(command: &mut Command, cgroup_procs: Option<CString>, rlimit_bytes: Option<u64>) {
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // calls are allowed. It makes only raw syscalls (prctl, open, write, close, setrlimit) on
    // values built before the fork, and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            // An instance never outlives the server, even after `kill -9` of the server.
            rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
            if let Some(procs) = &cgroup_procs {
                let fd = rustix::fs::open(
                    procs.as_c_str(),
                    rustix::fs::OFlags::WRONLY,
                    rustix::fs::Mode::empty(),
                )?;
                // Writing 0 moves the writing process itself into the cgroup.
                rustix::io::write(&fd, b"0")?;
            }
            if let Some(bytes) = rlimit_bytes {
                let limit = Rlimit {
                    current: Some(bytes),
                    maximum: Some(bytes),
                };
                rustix::process::setrlimit(Resource::As, limit)?;
            }
            Ok(())
        });
    }
}

/// The stub's side: reads one [`ExecRequest`] from stdin and execs it (stdin becomes
/// `/dev/null`; stdout and stderr, the process group, the cgroup and the parent-death signal
/// carry over). Returns only if the exec failed.
pub fn run_stub() -> std::io::Error {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        return e;
    }
    let request: ExecRequest = match serde_json::from_slice(&input) {
        Ok(r) => r,
        Err(e) => return std::io::Error::other(format!("bad exec request: {e}")),
    };
    let error = std::process::Command::new(&request.program)
        .args(&request.args)
        .env_clear()
        .envs(request.env)
        .current_dir(&request.cwd)
        .stdin(Stdio::null())
        .exec();
    std::io::Error::other(format!("fork/exec {}: {error}", request.program))
}

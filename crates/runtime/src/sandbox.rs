//! Resource limits for instances: a memory cgroup per instance (v2 where the unified hierarchy
//! has the memory controller, else v1), `setrlimit` as the last fallback.
//!
//! The cgroup filesystem is the API: a directory per instance, the limit written to a file,
//! the process placed in it before it runs a single instruction of the function (`pre_exec`
//! writes `0` to `cgroup.procs`, which moves the writing process itself).

use std::ffi::CString;
use std::fs;
use std::path::{Path, PathBuf};

/// Which cgroup hierarchy instances are placed in.
#[derive(Debug, Clone)]
pub enum Sandbox {
    /// cgroup v2: `<base>/<instance>` with `memory.max`, `memory.peak`, `memory.events`.
    V2 {
        /// Directory under which instance cgroups are created.
        base: PathBuf,
    },
    /// cgroup v1 memory controller: `<base>/<instance>` with `memory.limit_in_bytes`.
    V1 {
        /// Directory under which instance cgroups are created.
        base: PathBuf,
    },
    /// No writable cgroup: `RLIMIT_AS` is set instead (where the runtime tolerates it).
    Rlimit,
}

/// Removes what servers that are gone left under `parent` (their instances died with them, so
/// the cgroups are empty).
fn sweep(parent: &Path) {
    for server in fs::read_dir(parent).into_iter().flatten().flatten() {
        let name = server.file_name();
        let Some(name) = name.to_str() else { continue };
        let is_pid = name.bytes().all(|b| b.is_ascii_digit());
        if !is_pid {
            // Left by an older layout that put instances directly here.
            let _ = fs::remove_dir(server.path());
            continue;
        }
        if Path::new("/proc").join(name).exists() {
            continue;
        }
        for cgroup in fs::read_dir(server.path()).into_iter().flatten().flatten() {
            if cgroup.file_type().is_ok_and(|t| t.is_dir()) {
                let _ = fs::remove_dir(cgroup.path());
            }
        }
        let _ = fs::remove_dir(server.path());
    }
}

/// One instance's cgroup.
#[derive(Debug)]
pub struct Cgroup {
    dir: PathBuf,
    v2: bool,
    /// The peak-usage file, kept open: a path lookup per invocation would cost more than the read.
    peak: Option<fs::File>,
    /// `cgroup.procs` as a C string, built before fork so `pre_exec` need not allocate.
    pub(crate) procs: CString,
}

impl Sandbox {
    /// Finds a writable memory cgroup beside this process's own, creating `rampart/` in it.
    pub fn detect() -> Self {
        let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let mut v1_memory = None;
        let mut v2 = None;
        for line in own.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let path = path.trim_start_matches('/');
            if controllers.split(',').any(|c| c == "memory") {
                v1_memory = Some(Path::new("/sys/fs/cgroup/memory").join(path));
            } else if controllers.is_empty() {
                for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
                    let has_memory = fs::read_to_string(Path::new(root).join("cgroup.controllers"))
                        .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"));
                    if has_memory {
                        v2 = Some(Path::new(root).join(path));
                        break;
                    }
                }
            }
        }
        // A v2 process cannot sit in an inner cgroup with controllers enabled below it, so the
        // instances' parent is a sibling leaf of ours.
        // Each server keeps its instances under rampart/<its pid>, so servers sharing a
        // hierarchy never touch each other's cgroups.
        let own = std::process::id().to_string();
        if let Some(dir) = v2 {
            let parent = dir.join("rampart");
            let base = parent.join(&own);
            let enabled = fs::create_dir_all(&base).is_ok()
                && fs::write(parent.join("cgroup.subtree_control"), "+memory").is_ok()
                && fs::write(base.join("cgroup.subtree_control"), "+memory").is_ok();
            if enabled {
                sweep(&parent);
                return Self::V2 { base };
            }
        }
        if let Some(dir) = v1_memory {
            let parent = dir.join("rampart");
            let base = parent.join(&own);
            if fs::create_dir_all(&base).is_ok() && base.join("memory.limit_in_bytes").exists() {
                sweep(&parent);
                return Self::V1 { base };
            }
        }
        Self::Rlimit
    }

    /// Removes this server's cgroups (at shutdown, once its instances are gone).
    pub fn cleanup(&self) {
        if let Self::V1 { base } | Self::V2 { base } = self {
            for cgroup in fs::read_dir(base).into_iter().flatten().flatten() {
                if cgroup.file_type().is_ok_and(|t| t.is_dir()) {
                    let _ = fs::remove_dir(cgroup.path());
                }
            }
            let _ = fs::remove_dir(base);
        }
    }

    /// A short name for logs.
    pub fn describe(&self) -> String {
        match self {
            Self::V2 { base } => format!("cgroup v2 at {}", base.display()),
            Self::V1 { base } => format!("cgroup v1 at {}", base.display()),
            Self::Rlimit => "setrlimit (no writable memory cgroup)".into(),
        }
    }

    /// Creates a cgroup, with a memory limit when given; `None` when running on rlimits or when
    /// the cgroup could not be made (the instance then runs on rlimits).
    pub(crate) fn create(&self, instance: &str, memory_mb: Option<u32>) -> Option<Cgroup> {
        let (base, v2) = match self {
            Self::V2 { base } => (base, true),
            Self::V1 { base } => (base, false),
            Self::Rlimit => return None,
        };
        let dir = base.join(instance);
        if let Err(e) = fs::create_dir(&dir) {
            tracing::warn!(error = %e, dir = %dir.display(), "could not create an instance cgroup");
            return None;
        }
        let procs = CString::new(
            dir.join("cgroup.procs")
                .into_os_string()
                .into_encoded_bytes(),
        )
        .expect("cgroup paths hold no NUL");
        let peak = fs::File::open(dir.join(if v2 {
            "memory.peak"
        } else {
            "memory.max_usage_in_bytes"
        }))
        .ok();
        let cgroup = Cgroup {
            dir,
            v2,
            peak,
            procs,
        };
        if let Some(mb) = memory_mb
            && let Err(e) = cgroup.set_limit(mb)
        {
            tracing::warn!(error = %e, dir = %cgroup.dir.display(), "could not set a memory limit");
            cgroup.remove();
            return None;
        }
        Some(cgroup)
    }
}

impl Cgroup {
    /// Sets the memory limit (cgroupfs writes are served by the kernel, never a disk).
    pub(crate) fn set_limit(&self, memory_mb: u32) -> std::io::Result<()> {
        let bytes = (u64::from(memory_mb) * 1024 * 1024).to_string();
        if self.v2 {
            fs::write(self.dir.join("memory.max"), &bytes)?;
            // No swap: past the limit the instance is OOM-killed, as on Lambda.
            let _ = fs::write(self.dir.join("memory.swap.max"), "0");
        } else {
            fs::write(self.dir.join("memory.limit_in_bytes"), &bytes)?;
            let _ = fs::write(self.dir.join("memory.memsw.limit_in_bytes"), &bytes);
        }
        Ok(())
    }

    /// Peak memory use of the instance in bytes.
    pub fn peak_bytes(&self) -> Option<u64> {
        use std::os::unix::fs::FileExt;
        let mut buf = [0u8; 32];
        let n = self.peak.as_ref()?.read_at(&mut buf, 0).ok()?;
        std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()
    }

    /// Whether the kernel's OOM killer ended a process of this instance.
    pub fn oom_killed(&self) -> bool {
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        fs::read_to_string(self.dir.join(file))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix("oom_kill "))
            .any(|n| n.trim().parse::<u64>().is_ok_and(|n| n > 0))
    }

    /// Kills every process in the cgroup, including any that left the process group.
    pub fn kill_all(&self) {
        if self.v2 && fs::write(self.dir.join("cgroup.kill"), "1").is_ok() {
            return;
        }
        let procs = fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }

    /// Removes the cgroup (it must be empty: call after the processes are gone).
    pub fn remove(&self) {
        // Called after the processes were reaped, so the cgroup is empty; a leftover one is
        // harmless (its name is never reused).
        if let Err(e) = fs::remove_dir(&self.dir) {
            tracing::debug!(error = %e, dir = %self.dir.display(), "instance cgroup not removed");
        }
    }
}

//! The one place with `unsafe`: work done in the child between fork and exec.

use std::ffi::CString;

use rustix::process::{Resource, Rlimit, Signal};

/// Arranges for the child to join its cgroup (or take an address-space rlimit) and to die with
/// the server, before it runs any function code.
#[allow(unsafe_code)]
pub(crate) fn prepare(
    command: &mut tokio::process::Command,
    cgroup_procs: Option<CString>,
    rlimit_bytes: Option<u64>,
) {
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

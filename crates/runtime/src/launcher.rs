//! Where runtimes come from: Rampart's own Python and Node.js bootstraps (embedded in the
//! binary, written to the data dir at start) and the machine's interpreters, resolved once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rampart_model::RuntimeFamily;

use crate::{Error, Result};

const PYTHON_BOOTSTRAP: &str = include_str!("../bootstraps/python/bootstrap.py");
const NODE_BOOTSTRAP: &str = include_str!("../bootstraps/node/bootstrap.mjs");

/// How long resolving an interpreter may take (a pyenv shim alone costs ~90 ms).
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Knows how to start each runtime family.
#[derive(Debug, Clone)]
pub struct Launcher {
    /// `LAMBDA_RUNTIME_DIR`: holds the bootstraps.
    pub runtime_dir: PathBuf,
    /// The real Python interpreter (not a shim), if the machine has one.
    pub python: Option<PathBuf>,
    /// The Node.js binary, if the machine has one.
    pub node: Option<PathBuf>,
    /// The Python bootstrap to run: compiled to bytecode for this interpreter when that worked
    /// (saves compiling ~900 lines on every cold start), else the source.
    python_bootstrap: PathBuf,
}

impl Launcher {
    /// Writes the bootstraps under `<data_dir>/runtime` and resolves the interpreters:
    /// `RAMPART_PYTHON` / `RAMPART_NODE` when set, else `python3` / `node` from `PATH`.
    ///
    /// # Errors
    /// When the bootstraps cannot be written.
    pub async fn prepare(data_dir: &Path) -> Result<Self> {
        let runtime_dir = data_dir.join("runtime");
        for (dir, file, text) in [
            ("python", "bootstrap.py", PYTHON_BOOTSTRAP),
            ("node", "bootstrap.mjs", NODE_BOOTSTRAP),
        ] {
            let dir = runtime_dir.join(dir);
            tokio::fs::create_dir_all(&dir)
                .await
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
            tokio::fs::write(dir.join(file), text)
                .await
                .map_err(|e| Error::io(format!("writing the {file} bootstrap"), e))?;
        }
        let python = match std::env::var_os("RAMPART_PYTHON") {
            Some(p) => Some(PathBuf::from(p)),
            None => resolve_python().await,
        };
        let node = match std::env::var_os("RAMPART_NODE") {
            Some(p) => Some(PathBuf::from(p)),
            None => find_on_path("node"),
        };
        let source = runtime_dir.join("python/bootstrap.py");
        let python_bootstrap = match &python {
            Some(python) => compile_python(python, &source).await.unwrap_or(source),
            None => source,
        };
        Ok(Self {
            runtime_dir,
            python,
            node,
            python_bootstrap,
        })
    }

    /// The program and arguments that start an instance of `family`, or why it cannot start.
    pub(crate) fn command(
        &self,
        family: RuntimeFamily,
        task_root: &Path,
    ) -> std::result::Result<(PathBuf, Vec<PathBuf>), String> {
        match family {
            RuntimeFamily::Python => {
                let python = self
                    .python
                    .clone()
                    .ok_or("no python3 interpreter was found on this machine")?;
                Ok((python, vec![self.python_bootstrap.clone()]))
            }
            RuntimeFamily::Node => {
                let node = self
                    .node
                    .clone()
                    .ok_or("no node binary was found on this machine")?;
                Ok((node, vec![self.runtime_dir.join("node/bootstrap.mjs")]))
            }
            RuntimeFamily::Provided => {
                let bootstrap = task_root.join("bootstrap");
                if !is_executable(&bootstrap) {
                    return Err(format!(
                        "Couldn't find valid bootstrap(s): [{}]",
                        bootstrap.display()
                    ));
                }
                Ok((bootstrap, Vec::new()))
            }
        }
    }

    /// Directories to put first on an instance's `PATH` (so `python3` and `node` resolve to
    /// the interpreters Rampart found, not to shims).
    pub(crate) fn path_dirs(&self) -> Vec<PathBuf> {
        [&self.python, &self.node]
            .into_iter()
            .flatten()
            .filter_map(|p| p.parent().map(Path::to_path_buf))
            .collect()
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| is_executable(p))
    })
}

/// Compiles the bootstrap to `bootstrap.pyc` beside it with `python`; `None` if that failed.
async fn compile_python(python: &Path, source: &Path) -> Option<PathBuf> {
    let compiled = source.with_extension("pyc");
    let status = tokio::time::timeout(
        RESOLVE_TIMEOUT,
        tokio::process::Command::new(python)
            .args(["-c", "import py_compile, sys; py_compile.compile(sys.argv[1], cfile=sys.argv[2], doraise=True)"])
            .arg(source)
            .arg(&compiled)
            .kill_on_drop(true)
            .status(),
    )
    .await
    .ok()?
    .ok()?;
    status.success().then_some(compiled)
}

/// Asks `python3` for `sys.executable` once, so instances skip the shim's start-up cost.
async fn resolve_python() -> Option<PathBuf> {
    let shim = find_on_path("python3")?;
    let output = tokio::time::timeout(
        RESOLVE_TIMEOUT,
        tokio::process::Command::new(&shim)
            .args(["-c", "import sys; print(sys.executable)"])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .ok()?
    .ok()?;
    let real = String::from_utf8(output.stdout).ok()?;
    let real = PathBuf::from(real.trim());
    Some(if is_executable(&real) { real } else { shim })
}

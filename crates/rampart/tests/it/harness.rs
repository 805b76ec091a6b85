//! Runs the real `rampart` binary on an ephemeral port with a temporary data dir, and deploys
//! functions to it through the Lambda API.

use std::io::{BufRead, BufReader, Cursor, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use zip::write::SimpleFileOptions;

/// How long the server may take to print its ready line.
const READY_DEADLINE: Duration = Duration::from_secs(30);
/// `rampart up` deploys first, and the Rust counter's build may compile its dependencies.
const UP_READY_DEADLINE: Duration = Duration::from_secs(600);

/// A running server; killed on drop, its log printed if the test failed.
pub struct Server {
    child: Option<Child>,
    pub endpoint: String,
    /// Where API routes are served.
    pub http_endpoint: String,
    pub data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    log: Arc<Mutex<String>>,
    pub http: reqwest::Client,
}

impl Server {
    /// A server on a fresh data dir.
    pub fn start() -> Self {
        Self::start_with(&[], &[])
    }

    /// A server on a fresh data dir with extra flags and environment.
    pub fn start_with(args: &[&str], env: &[(&str, &str)]) -> Self {
        let temp = tempfile::tempdir().expect("temp dir");
        let mut server = Self::start_in(temp.path(), args, env);
        server._temp = Some(temp);
        server
    }

    /// `rampart up DIR` on a fresh data dir.
    pub fn up(project: &str) -> Self {
        let temp = tempfile::tempdir().expect("temp dir");
        let mut server = Self::launch(&["up", project], temp.path(), &[], &[]);
        server._temp = Some(temp);
        server
    }

    /// A server on `data_dir` (kept by the caller, e.g. across a restart).
    pub fn start_in(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::launch(&["serve"], data_dir, args, env)
    }

    fn launch(command_args: &[&str], data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_rampart"));
        command
            .args(command_args)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(data_dir)
            .args(args)
            .env("RAMPART_LOG", "info,rampart_runtime=debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("starting rampart");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("\"event\":\"ready\"") {
                    let _ = tx.send(line);
                }
            }
        });
        let deadline = if command_args[0] == "up" {
            UP_READY_DEADLINE
        } else {
            READY_DEADLINE
        };
        let line = match rx.recv_timeout(deadline) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!("rampart did not get ready:\n{}", log.lock().unwrap());
            }
        };
        let ready: Value = serde_json::from_str(&line).expect("ready line is JSON");
        Self {
            child: Some(child),
            endpoint: ready["endpoint"].as_str().expect("endpoint").to_owned(),
            http_endpoint: ready["http_endpoint"]
                .as_str()
                .expect("http endpoint")
                .to_owned(),
            data_dir: data_dir.to_path_buf(),
            _temp: None,
            log,
            http: reqwest::Client::new(),
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// `kill -9` the server and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM; returns the process to wait on.
    pub fn sigterm(&mut self) -> Child {
        let child = self.child.take().expect("running");
        let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("pid");
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
        child
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.endpoint)
    }

    /// Creates a function from inline files; `extra` adds or overrides CreateFunction fields.
    pub async fn create(
        &self,
        name: &str,
        runtime: &str,
        handler: &str,
        files: &[(&str, &str)],
        extra: Value,
    ) -> (u16, Value) {
        let mut body = json!({
            "FunctionName": name,
            "Runtime": runtime,
            "Handler": handler,
            "Role": "arn:aws:iam::000000000000:role/test",
            "Code": {"ZipFile": base64::engine::general_purpose::STANDARD.encode(zip_of(files))},
        });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        let resp = self
            .http
            .post(self.url("/2015-03-31/functions"))
            .json(&body)
            .send()
            .await
            .expect("create request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Like [`Server::create`], asserting success.
    pub async fn deploy(
        &self,
        name: &str,
        runtime: &str,
        handler: &str,
        files: &[(&str, &str)],
        extra: Value,
    ) {
        let (status, body) = self.create(name, runtime, handler, files, extra).await;
        assert_eq!(status, 201, "create {name}: {body}\n{}", self.log());
    }

    /// Invokes `name` with `payload`; returns status, headers and body.
    pub async fn invoke(&self, name: &str, payload: &str) -> Invoked {
        self.invoke_with(name, payload, &[]).await
    }

    pub async fn invoke_with(
        &self,
        name: &str,
        payload: &str,
        headers: &[(&str, &str)],
    ) -> Invoked {
        let mut req = self
            .http
            .post(self.url(&format!("/2015-03-31/functions/{name}/invocations")))
            .body(payload.to_owned());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("invoke request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.expect("invoke body").to_vec();
        Invoked {
            status,
            headers,
            body,
        }
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let resp = self.http.get(self.url(path)).send().await.expect("GET");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Polls `check` every 50 ms until it holds or `deadline` passes.
    pub async fn eventually<F, Fut>(&self, what: &str, deadline: Duration, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let until = tokio::time::Instant::now() + deadline;
        while tokio::time::Instant::now() < until {
            if check().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for {what}\n{}", self.log());
    }

    /// Polls a synchronous `check` until it holds or `deadline` passes.
    pub async fn eventually_static(
        &self,
        what: &str,
        deadline: Duration,
        check: impl Fn() -> bool,
    ) {
        self.eventually(what, deadline, || {
            let ok = check();
            async move { ok }
        })
        .await;
    }

    /// The function's log lines (text only).
    pub async fn log_lines(&self, name: &str) -> Vec<Value> {
        let (_, body) = self
            .get_json(&format!("/rampart/v1/functions/{name}/logs?limit=10000"))
            .await;
        body["lines"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("---- rampart server log ----\n{}", self.log());
        }
    }
}

pub struct Invoked {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Invoked {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Runs the `rampart` CLI against `endpoint`: (succeeded, stdout, stderr).
pub fn rampart_cli(endpoint: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(args)
        .env("RAMPART_ENDPOINT", endpoint)
        .output()
        .expect("running rampart");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A zip of inline files; a file named `bootstrap` is made executable.
pub fn zip_of(files: &[(&str, &str)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, body) in files {
        let mode = if name.ends_with("bootstrap") {
            0o755
        } else {
            0o644
        };
        w.start_file(*name, SimpleFileOptions::default().unix_permissions(mode))
            .expect("zip entry");
        w.write_all(body.as_bytes()).expect("zip write");
    }
    w.finish().expect("zip finish").into_inner()
}

/// Whether a process exists.
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.split(") ")
                .nth(1)
                .is_some_and(|rest| rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Pids of processes whose command line contains `needle`.
pub fn pids_with(needle: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let mut cmdline = String::new();
        if std::fs::File::open(entry.path().join("cmdline"))
            .and_then(|mut f| f.read_to_string(&mut cmdline))
            .is_ok()
            && cmdline.contains(needle)
            && alive(pid)
        {
            pids.push(pid);
        }
    }
    pids
}

/// The real Python interpreter (the shim on PATH costs ~90 ms a start).
pub fn python() -> String {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 on PATH");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Runs a Python script (with boto3 at hand) with `args`; returns whether it succeeded and
/// its output.
pub fn run_python(script: &str, args: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("script.py");
    std::fs::write(&path, script).unwrap();
    let out = Command::new(python())
        .arg(&path)
        .args(args)
        .output()
        .expect("running python");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

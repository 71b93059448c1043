//! One `weir` child process and the helpers every process test uses.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Upper bound of any single wait (start-up, exit, polling).
pub const WAIT: Duration = Duration::from_secs(120);
/// Interval of bounded polling loops.
pub const POLL: Duration = Duration::from_millis(20);

/// `weir` with none of the configuration variables of the environment that runs the tests,
/// logging at info: callers add the subcommand and what they need.
pub fn weir_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weir"));
    for (var, _) in std::env::vars() {
        if var.starts_with("WEIR") || var.starts_with("OTEL_") {
            cmd.env_remove(&var);
        }
    }
    for var in ["DATABASE_URL", "AMQP_URL", "REDIS_URL"] {
        cmd.env_remove(var);
    }
    cmd.env("RUST_LOG", "info");
    cmd
}

/// `weir plugin ARGS`, against the operations listener `ops` with the admin `token` when
/// given: exit code, stdout, stderr.
pub async fn weir_plugin(ops: Option<(&str, &str)>, args: &[&str]) -> (i32, String, String) {
    let mut cmd = weir_command();
    cmd.arg("plugin").args(args);
    if let Some((ops, token)) = ops {
        cmd.env("WEIR_ADMIN_URL", ops)
            .env("WEIR_ADMIN_TOKEN", token);
    }
    let out = cmd.output().await.expect("run weir plugin");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `weir serve` on ephemeral ports (API and operations) with `data_dir` as its data
/// directory: callers add the flags and variables they need.
pub fn serve(data_dir: &Path) -> Command {
    let mut cmd = weir_command();
    cmd.arg("serve")
        .args(["--listen", "127.0.0.1:0", "--ops-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data_dir);
    cmd
}

/// `<dir>/plugins` (created) holding a copy of each of `artifacts` (paths of built test
/// plugins, `weir_plugin_artifacts::*`) under its own file name; returns that directory.
pub fn plugin_dir(dir: &Path, artifacts: &[&str]) -> PathBuf {
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).expect("create the plugin directory");
    for artifact in artifacts {
        let src = Path::new(artifact);
        let name = src.file_name().expect("an artifact is a file");
        std::fs::copy(src, plugins.join(name))
            .unwrap_or_else(|e| panic!("copy {artifact} into {}: {e}", plugins.display()));
    }
    plugins
}

/// Whether every one of `tools` is on the `PATH`. Under `CI=true` a missing one fails `test`;
/// elsewhere it is skipped, with a note.
pub fn tools_present(test: &str, tools: &[&str]) -> bool {
    let missing: Vec<_> = tools
        .iter()
        .filter(|t| {
            !std::process::Command::new("bash")
                .args(["-c", &format!("command -v {t}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test} needs {missing:?} in CI (.ci/run installs them)");
    }
    eprintln!("note: {missing:?} not installed; skipping {test} outside CI");
    false
}

/// A field of a JSON log line, at the top level or under `fields`.
pub fn field<'a>(line: &'a Value, name: &str) -> Option<&'a Value> {
    line.get(name).or_else(|| line.get("fields")?.get(name))
}

/// The message of a JSON log line.
pub fn message(line: &Value) -> &str {
    field(line, "message")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// An HTTP client whose requests are bounded by [`WAIT`].
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(WAIT)
        .build()
        .expect("client")
}

/// A request body placing one line of `sku` for `customer`.
pub fn order_body(customer: &str, sku: &str) -> Value {
    json!({
        "customer_id": customer,
        "currency": "EUR",
        "lines": [{"sku": sku, "quantity": 1}],
    })
}

/// One `weir serve` process: its addresses, its stdout lines and its stderr.
pub struct Weir {
    child: Child,
    /// `http://` address of the API listener.
    pub api: String,
    /// `http://` address of the operations listener.
    pub ops: String,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
    /// Bumped after every stderr line (closed at EOF): what [`Weir::wait_stderr`] awaits.
    stderr_lines: tokio::sync::watch::Receiver<u64>,
    _dir: Option<tempfile::TempDir>,
}

impl Weir {
    /// Spawn `cmd` (a `weir serve`) and wait (bounded) for its `weir listening` line.
    pub async fn spawn(cmd: Command) -> Self {
        Self::spawn_in(cmd, None).await
    }

    /// [`Weir::spawn`], keeping `dir` (its data directory) alive as long as the process.
    pub async fn spawn_in(mut cmd: Command, dir: Option<tempfile::TempDir>) -> Self {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn weir");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let sink = stdout.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && message(&v).starts_with("weir listening")
                {
                    let _ = tx.send(v);
                }
                sink.lock().unwrap().push(line);
            }
        });
        let mut err_lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let err_sink = stderr.clone();
        let (err_tx, stderr_lines) = tokio::sync::watch::channel(0_u64);
        tokio::spawn(async move {
            while let Ok(Some(line)) = err_lines.next_line().await {
                {
                    let mut s = err_sink.lock().unwrap();
                    s.push_str(&line);
                    s.push('\n');
                }
                err_tx.send_modify(|n| *n += 1);
            }
        });
        let listening = tokio::time::timeout(WAIT, rx.recv()).await;
        let Ok(Some(line)) = listening else {
            let _ = child.start_kill();
            panic!(
                "weir did not log `weir listening` within {WAIT:?}; stderr:\n{}",
                stderr.lock().unwrap()
            );
        };
        let addr = |name: &str| {
            format!(
                "http://{}",
                field(&line, name)
                    .and_then(Value::as_str)
                    .unwrap_or_else(|| panic!("no `{name}` in the start-up line {line}"))
            )
        };
        Self {
            api: addr("api"),
            ops: addr("ops"),
            child,
            stdout,
            stderr,
            stderr_lines,
            _dir: dir,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running child has a pid")
    }

    /// A line of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
    pub fn status_kib(&self, field: &str) -> u64 {
        let pid = self.child.id().expect("running child has a pid");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
    }

    /// Send `signal` (`TERM`, `INT`, ...) with `kill`.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("running child has a pid");
        let status = std::process::Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {pid} failed");
    }

    /// Wait for the exit (bounded) and return its code.
    pub async fn exit_code(&mut self) -> Option<i32> {
        match tokio::time::timeout(WAIT, self.child.wait()).await {
            Ok(status) => status.expect("wait for weir").code(),
            Err(_) => {
                let _ = self.child.start_kill();
                panic!("weir did not exit within {WAIT:?}");
            }
        }
    }

    /// Wait for the exit at most `bound` (a hang guard, not a speed claim) and return its
    /// code; the panic names `what` the bound stands for.
    pub async fn exit_code_within(&mut self, bound: Duration, what: &str) -> Option<i32> {
        match tokio::time::timeout(bound, self.child.wait()).await {
            Ok(status) => status.expect("wait for weir").code(),
            Err(_) => {
                let _ = self.child.start_kill();
                panic!(
                    "weir did not exit within {bound:?} ({what}); last messages: {:#?}",
                    self.log()
                        .iter()
                        .rev()
                        .take(8)
                        .map(|l| message(l).to_owned())
                        .collect::<Vec<_>>()
                );
            }
        }
    }

    /// SIGTERM, then (bounded) the exit status and every stdout line.
    pub async fn terminate(mut self) -> (std::process::ExitStatus, Vec<String>) {
        self.signal("TERM");
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("weir did not exit within {WAIT:?} of SIGTERM"))
            .expect("wait for weir");
        // The reader ends at EOF, right after the exit.
        let started = tokio::time::Instant::now();
        while std::sync::Arc::strong_count(&self.stdout) > 1 && started.elapsed() < WAIT {
            tokio::time::sleep(POLL).await;
        }
        let lines = self.stdout.lock().unwrap().clone();
        (status, lines)
    }

    /// SIGKILL.
    pub async fn kill9(mut self) {
        self.child.kill().await.expect("SIGKILL weir");
    }

    /// The stdout lines so far, parsed (lines that are not JSON are skipped).
    pub fn log(&self) -> Vec<Value> {
        self.stdout
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Wait (bounded by [`WAIT`]) until the stderr written after byte `from` satisfies
    /// `done`, woken by each new line (no polling); returns that text. The panic names `what`.
    pub async fn wait_stderr(
        &self,
        from: usize,
        what: &str,
        done: impl Fn(&str) -> bool,
    ) -> String {
        let mut lines = self.stderr_lines.clone();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            // Marked seen before reading: a line written after this read wakes `changed`.
            drop(lines.borrow_and_update());
            let text = self.stderr().get(from..).unwrap_or_default().to_owned();
            if done(&text) {
                return text;
            }
            match tokio::time::timeout_at(deadline, lines.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => panic!("weir closed stderr before {what}; stderr since:\n{text}"),
                Err(_) => {
                    panic!("timed out after {WAIT:?} waiting for {what}; stderr since:\n{text}")
                }
            }
        }
    }

    /// The first log line whose message starts with `prefix`.
    pub fn log_line(&self, prefix: &str) -> Value {
        let log = self.log();
        log.iter()
            .find(|l| message(l).starts_with(prefix))
            .cloned()
            .unwrap_or_else(|| {
                panic!(
                    "no log line starting with {prefix:?}; messages: {:#?}\nstderr:\n{}",
                    log.iter().map(message).collect::<Vec<_>>(),
                    self.stderr()
                )
            })
    }

    /// Wait (bounded) until a log line starting with `prefix` was written.
    pub async fn wait_log(&self, prefix: &str) {
        let started = tokio::time::Instant::now();
        while !self.log().iter().any(|l| message(l).starts_with(prefix)) {
            assert!(
                started.elapsed() < WAIT,
                "timed out waiting for log line {prefix:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Wait (bounded) until the consumer's broker link is up: its topology (exchanges, queue,
    /// bindings) is declared and it consumes (`/infoz` `events.links.consumer.connected`).
    pub async fn consumer_connected(&self) {
        self.wait_infoz("the consumer connected to RabbitMQ", |v| {
            v["events"]["links"]["consumer"]["connected"] == json!(true)
        })
        .await;
    }

    /// Poll `/infoz` until `pred` holds (bounded).
    pub async fn wait_infoz(&self, what: &str, pred: impl Fn(&Value) -> bool) {
        let client = reqwest::Client::new();
        let started = tokio::time::Instant::now();
        loop {
            if let Ok(r) = client.get(format!("{}/infoz", self.ops)).send().await
                && let Ok(v) = r.json::<Value>().await
                && pred(&v)
            {
                return;
            }
            assert!(started.elapsed() < WAIT, "timed out waiting for {what}");
            tokio::time::sleep(POLL).await;
        }
    }

    /// `GET` a JSON document from the operations listener.
    pub async fn ops_json(&self, path: &str) -> Value {
        client()
            .get(format!("{}{path}", self.ops))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: not JSON: {e}"))
    }
}

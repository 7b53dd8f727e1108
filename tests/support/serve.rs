//! Runs the real `pullsecret-injector serve` binary for socket-level tests.
//!
//! The server is started with `--listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --log-format
//! json`; the bound ports are read back from its `listening` log line. Without a kubeconfig it
//! runs with `--no-cluster`; with one (the fake API server's) it runs the cluster side too.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_pullsecret-injector");

/// The binary `Serve` starts: `PULLSECRET_INJECTOR_BIN` when set (to measure a release build
/// with the same tests), else the one cargo built for these tests.
pub fn bin() -> String {
    std::env::var("PULLSECRET_INJECTOR_BIN").unwrap_or_else(|_| BIN.to_string())
}

/// Generous bound for conditions that normally hold within milliseconds.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Polls `check` until it returns `Some`, or panics naming `what` after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// How to start `serve`, beyond the listener and log flags every start gets.
#[derive(Clone, Debug)]
pub struct Options<'a> {
    /// `None`: `--no-cluster`. `Some(path)`: the cluster side, through `KUBECONFIG=path`.
    pub kubeconfig: Option<&'a Path>,
    /// `--namespace`, the webhook's own namespace.
    pub namespace: &'a str,
    /// `RUST_LOG` for the process.
    pub rust_log: &'a str,
    /// How long the process may take to log its listeners.
    pub startup: Duration,
    /// Extra environment for the process (cloud identity for token sources, say).
    pub env: Vec<(String, String)>,
    /// Variables the process must not inherit.
    pub env_remove: Vec<String>,
    /// Stop reading the process's stderr once it has logged its listeners, keeping the pipe
    /// open: a log collector that stalls.
    pub stall_stderr: bool,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Self {
            kubeconfig: None,
            namespace: "psi",
            rust_log: "info",
            startup: DEADLINE,
            env: Vec::new(),
            env_remove: Vec::new(),
            stall_stderr: false,
        }
    }
}

type Logs = Arc<Mutex<Vec<String>>>;
/// The unread end of a stalled stderr pipe, kept open as long as the `Serve`.
type Held = Arc<Mutex<Option<BufReader<ChildStderr>>>>;
type Listeners = (SocketAddr, SocketAddr);

/// One running `serve` process; killed when dropped.
pub struct Serve {
    child: Child,
    pub https: SocketAddr,
    pub admin: SocketAddr,
    logs: Logs,
    _held: Held,
}

/// A log field, at the top level of a JSON line or under `fields`.
fn field<'a>(line: &'a Value, name: &str) -> Option<&'a str> {
    line.get(name)
        .or_else(|| line.get("fields").and_then(|f| f.get(name)))
        .and_then(Value::as_str)
}

/// The addresses in a `listening` log line.
fn listeners(line: &str) -> Option<Listeners> {
    let value = serde_json::from_str::<Value>(line).ok()?;
    if field(&value, "message") != Some("listening") {
        return None;
    }
    let https = field(&value, "https")?.parse().ok()?;
    let admin = field(&value, "admin")?.parse().ok()?;
    Some((https, admin))
}

impl Serve {
    /// Starts `serve --no-cluster --namespace psi` with `args` and waits for its `listening`
    /// line.
    pub fn start(args: &[&str]) -> Self {
        Self::start_with(&Options::default(), args)
    }

    /// Starts `serve` as `options` say, with `args`, and waits (blocking this thread) for its
    /// `listening` line.
    pub fn start_with(options: &Options, args: &[&str]) -> Self {
        let (child, logs, held, listening) = spawn(options, args);
        let found = listening.recv_timeout(options.startup);
        Self::listening(child, (logs, held), found, options.startup)
    }

    /// Like [`Serve::start_with`], waiting off the runtime's threads: a fake API server
    /// answering on this runtime keeps serving while `serve` starts.
    pub async fn start_async(options: &Options<'_>, args: &[&str]) -> Self {
        let (child, logs, held, listening) = spawn(options, args);
        let startup = options.startup;
        let found = tokio::task::spawn_blocking(move || listening.recv_timeout(startup))
            .await
            .expect("join the log reader");
        Self::listening(child, (logs, held), found, startup)
    }

    fn listening(
        mut child: Child,
        (logs, held): (Logs, Held),
        found: Result<Listeners, RecvTimeoutError>,
        startup: Duration,
    ) -> Self {
        match found {
            Ok((https, admin)) => Self {
                child,
                https,
                admin,
                logs,
                _held: held,
            },
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "serve did not log its listeners within {startup:?}; logs:\n{}",
                    lock(&logs).join("\n")
                );
            }
        }
    }

    pub fn logs(&self) -> Vec<String> {
        lock(&self.logs).clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process and waits for it.
    pub fn stop(self) {
        drop(self);
    }

    /// Sends SIGTERM to this server process (by its pid).
    pub fn sigterm(&self) {
        self.signal("-TERM");
    }

    /// Sends `signal` (`-TERM`, `-INT`) to this server process (by its pid).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, up to `deadline`.
    pub async fn exit_status(&mut self, deadline: Duration) -> ExitStatus {
        let child = &mut self.child;
        eventually("serve to exit", deadline, || {
            let status = child.try_wait().unwrap();
            async move { status }
        })
        .await
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    pub fn https_url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.https.port())
    }

    /// GET on the admin port: (status, body), or the error when no answer came.
    pub async fn try_admin_get(&self, path: &str) -> reqwest::Result<(u16, String)> {
        let res = reqwest::Client::new()
            .get(self.admin_url(path))
            .send()
            .await?;
        let status = res.status().as_u16();
        Ok((status, res.text().await?))
    }

    /// GET on the admin port: (status, body).
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        self.try_admin_get(path)
            .await
            .unwrap_or_else(|e| panic!("GET {path} on the admin port: {e}"))
    }

    /// The /metrics text.
    pub async fn metrics(&self) -> String {
        self.admin_get("/metrics").await.1
    }

    /// Waits until /readyz answers 200, up to `deadline`.
    pub async fn wait_ready_within(&self, deadline: Duration) {
        eventually("serve ready", deadline, || async {
            let status = self.try_admin_get("/readyz?verbose").await.ok()?.0;
            (status == 200).then_some(())
        })
        .await;
    }

    /// Waits until some log line satisfies `matches`, up to `deadline`.
    pub async fn wait_log(&self, what: &str, deadline: Duration, matches: impl Fn(&str) -> bool) {
        eventually(what, deadline, || async {
            self.logs().iter().any(|l| matches(l)).then_some(())
        })
        .await;
    }

    /// Waits until the metric sample `sample` reads `value`, up to `deadline`.
    pub async fn wait_metric(&self, sample: &str, value: f64, deadline: Duration) {
        let what = format!("{sample} to read {value}");
        eventually(&what, deadline, || async {
            (self.metric(sample).await == value).then_some(())
        })
        .await;
    }

    /// Value of one sample in /metrics (`name{labels}` exactly as exposed), 0 when absent.
    pub async fn metric(&self, sample: &str) -> f64 {
        self.metrics()
            .await
            .lines()
            .find_map(|l| {
                l.strip_prefix(sample)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0.0)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn lock(logs: &Logs) -> std::sync::MutexGuard<'_, Vec<String>> {
    logs.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts the process and a thread that keeps its stderr lines and reports the listeners.
fn spawn(options: &Options, args: &[&str]) -> (Child, Logs, Held, Receiver<Listeners>) {
    // Every client in these tests uses rustls with ring.
    pullsecret_injector::install_crypto_provider();
    let mut command = Command::new(bin());
    command
        .args(["--log-format", "json", "serve"])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--namespace", options.namespace]);
    match options.kubeconfig {
        Some(path) => command.env("KUBECONFIG", path),
        None => command.arg("--no-cluster"),
    };
    command
        .args(args)
        .env("RUST_LOG", options.rust_log)
        .env_remove("POD_NAMESPACE");
    for name in &options.env_remove {
        command.env_remove(name);
    }
    let mut child = command
        .envs(options.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start serve");
    let stderr = child.stderr.take().expect("stderr piped");
    let logs = Logs::default();
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = logs.clone();
    let held = Held::default();
    let holder = held.clone();
    let stall = options.stall_stderr;
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stderr);
        let mut line = String::new();
        while matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
            let text = line.trim_end_matches(['\n', '\r']).to_string();
            line.clear();
            let found = listeners(&text);
            lock(&sink).push(text);
            if let Some(found) = found {
                let _ = tx.send(found);
                if stall {
                    *holder.lock().unwrap_or_else(|e| e.into_inner()) = Some(reader);
                    return;
                }
            }
        }
    });
    (child, logs, held, rx)
}

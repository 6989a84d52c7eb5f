//! Child processes of this process: started, awaited until READY (bounded), restarted with
//! backoff when they die, stopped when dropped.
//!
//! Invariants: a child is stopped (SIGTERM, then SIGKILL after a grace period) when its
//! [`ChildProcess`] is dropped, so no child outlives its parent's guard by accident; a child that
//! exits or prints anything but `READY ...` as its first stdout line is an error, never "ready".

use frostgate_common::error::{Error, ErrorCode};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a child may take to print its readiness line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A started child process and its readiness line.
#[derive(Debug)]
pub struct ChildProcess {
    child: Child,
    /// The child's `READY ...` line.
    pub ready: String,
}

/// How to start one child: binary and arguments.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    /// What it is, for logs and errors (`enclave`, `host`).
    pub name: &'static str,
    /// The binary.
    pub bin: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
}

/// Starts `cmd` (stdin closed, stdout piped: the rest of `cmd`'s setup is the caller's) and waits
/// at most `timeout` for its first stdout line. Ready when that line is `READY` or starts with
/// `READY `: returns the child and the line. Otherwise the child is killed and reaped, and the
/// error says what it printed (nothing, when it exited or stalled).
///
/// The one readiness protocol of every frostgate daemon, used by the node's children, the dev
/// cluster and the tests.
pub fn spawn_ready(cmd: &mut Command, timeout: Duration) -> Result<(Child, String), String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting {:?}: {e}", cmd.get_program()))?;
    let Some(stdout) = child.stdout.take() else {
        let _ = child.kill();
        let _ = child.wait();
        return Err("stdout not captured".into());
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(timeout).unwrap_or_default();
    let line = line.trim().to_string();
    if line == "READY" || line.starts_with("READY ") {
        return Ok((child, line));
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(if line.is_empty() {
        format!("exited or stalled within {timeout:?} before it was ready")
    } else {
        format!("printed {line:?} instead of READY")
    })
}

impl ChildSpec {
    /// Starts the child and waits (bounded) for its `READY` line on stdout; its stderr is ours.
    pub fn start(&self) -> Result<ChildProcess, Error> {
        let mut cmd = Command::new(&self.bin);
        cmd.args(&self.args).stderr(Stdio::inherit());
        let (child, ready) = spawn_ready(&mut cmd, READY_TIMEOUT)
            .map_err(|why| Error::new(ErrorCode::EnclaveUnavailable, format!("{}: {why}", self.name)))?;
        Ok(ChildProcess { child, ready })
    }
}

impl ChildProcess {
    /// The exit status, if the child has exited (reaped here).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Longest wait between two restarts of a failing child.
const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(10);

/// Keeps `child` running: whenever it dies, restarts it (backoff 200 ms doubling to 10 s while
/// restarts fail) and calls `restarted`. Runs until dropped (which stops the child).
pub async fn keep_running(mut child: ChildProcess, spec: ChildSpec, restarted: impl Fn()) {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tick.tick().await;
        let Some(status) = child.exited() else { continue };
        tracing::error!(code = %ErrorCode::EnclaveUnavailable, child = spec.name, %status, "child died; restarting it");
        let mut delay = Duration::from_millis(200);
        child = loop {
            tokio::time::sleep(delay).await;
            let s = spec.clone();
            match tokio::task::spawn_blocking(move || s.start()).await {
                Ok(Ok(c)) => break c,
                Ok(Err(e)) => tracing::error!(code = %e.code(), child = spec.name, "restart failed: {}", e.message()),
                Err(e) => tracing::error!(child = spec.name, "restart task failed: {e}"),
            }
            delay = (delay * 2).min(MAX_RESTART_BACKOFF);
        };
        restarted();
        tracing::info!(child = spec.name, "child restarted");
    }
}

/// The arguments that start an enclave child on `socket` (it exits with its parent).
pub fn enclave_args(socket: &Path, extra: &[String]) -> Vec<String> {
    let mut args = vec!["serve".into(), "--exit-with-parent".into(), "--listen".into(), socket.display().to_string()];
    args.extend(extra.iter().cloned());
    args
}

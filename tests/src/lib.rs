//! Test support: build and start the real frostgate binaries, each run in its own temp dir.
//!
//! Invariants: every child process is killed when its guard drops; no fixed ports, no sleeps
//! as synchronization (readiness is the enclave's `READY` line on stdout).
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long a child may take to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Directory holding the freshly built `frostgate` and `frostgate-enclave` binaries.
/// Builds them once per test process (a no-op when they are up to date), so tests never run a
/// stale binary.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf();
        let cargo = option_env!("CARGO").unwrap_or("cargo");
        let status = Command::new(cargo)
            // All features: the tests use the development dealer (`dev-dealer`).
            .args(["build", "--quiet", "--all-features", "--bins", "-p", "frostgate-enclave", "-p", "frostgate-host"])
            .current_dir(&workspace)
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building the binaries failed");
        // target/<profile>/deps/<test-binary> or target/<profile>/<binary> -> target/<profile>
        let exe = std::env::current_exe().expect("current exe");
        let dir = exe.parent().expect("target dir");
        if dir.ends_with("deps") { dir.parent().expect("target dir") } else { dir }.to_path_buf()
    })
}

/// Path of the `frostgate-enclave` binary.
pub fn enclave_bin() -> PathBuf {
    bin_dir().join("frostgate-enclave")
}

/// Path of the `frostgate` binary.
pub fn host_bin() -> PathBuf {
    bin_dir().join("frostgate")
}

/// A child process that prints `READY ...` on stdout when it serves; killed on drop.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    /// The file collecting the process's stderr (its logs).
    pub log: PathBuf,
    /// The process's readiness line.
    pub ready: String,
}

impl Daemon {
    /// Starts `bin` and waits (bounded) for its readiness line. Panics with the log if it exits.
    pub fn start(bin: &Path, args: &[String], env: &[(String, String)], log: PathBuf) -> Daemon {
        Self::try_start(bin, args, env, log).unwrap_or_else(|(line, logs)| panic!("not ready: {line:?}; log:\n{logs}"))
    }

    /// Starts `bin`; `Err((stdout line, log))` if it exits or prints anything but `READY`.
    pub fn try_start(
        bin: &Path,
        args: &[String],
        env: &[(String, String)],
        log: PathBuf,
    ) -> Result<Daemon, (String, String)> {
        let stderr = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("log file");
        let mut cmd = Command::new(bin);
        cmd.args(args).env("RUST_LOG", "trace").envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str()))).stderr(stderr);
        match frostgate_host::supervisor::spawn_ready(&mut cmd, READY_TIMEOUT) {
            Ok((child, ready)) => Ok(Daemon { child: Some(child), log, ready }),
            Err(why) => {
                let logs = std::fs::read_to_string(&log).unwrap_or_default();
                Err((why, logs))
            }
        }
    }

    /// Everything the process logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        wait_bounded(&mut child, READY_TIMEOUT)
    }

    /// Waits (bounded) for the process to exit by itself (e.g. an injected crash).
    pub fn wait_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        wait_bounded(&mut child, READY_TIMEOUT)
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running enclave process in its own temp dir; killed on drop.
#[derive(Debug)]
pub struct EnclaveProcess {
    daemon: Daemon,
    /// The enclave's Unix socket.
    pub socket: PathBuf,
    /// The file collecting the enclave's stderr (its logs).
    pub log: PathBuf,
    /// Keeps the socket and log directory alive as long as the process.
    _dir: tempfile::TempDir,
}

impl EnclaveProcess {
    /// Starts the enclave with extra arguments and waits for readiness.
    pub fn start(extra_args: &[&str]) -> Self {
        Self::start_with_env(extra_args, &[])
    }

    /// Starts the enclave with extra arguments and environment, and waits for readiness.
    pub fn start_with_env(extra_args: &[&str], env: &[(String, String)]) -> Self {
        let dir = tempfile::Builder::new().prefix("fg-test-").tempdir().expect("temp dir");
        let socket = dir.path().join("enclave.sock");
        let log = dir.path().join("enclave.log");
        let mut args = vec!["serve".to_string(), "--listen".into(), socket.display().to_string()];
        args.extend(extra_args.iter().map(|a| a.to_string()));
        let daemon = Daemon::start(&enclave_bin(), &args, env, log.clone());
        EnclaveProcess { daemon, socket, log, _dir: dir }
    }

    /// Everything the enclave logged so far.
    pub fn logs(&self) -> String {
        self.daemon.logs()
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.daemon.terminate()
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill(&mut self) {
        self.daemon.kill()
    }
}

/// Waits for a child with a deadline; kills it and panics if the deadline passes.
pub fn wait_bounded(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process {} did not exit within {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A loopback port free now (the kernel's pick; another process may take it before it is used).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

pub mod chaos;
pub mod dev_cluster;
pub mod dkg;
pub mod fuzz;
pub mod latency;
pub mod liar;
pub mod node;
pub mod postgres;
pub mod proxy;
pub mod psbt;
pub mod rng;
pub mod signing;
pub mod token;

/// This process's uid.
pub fn own_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// The metric names starting with `prefix` that `deploy/grafana/frostgate.json` queries.
pub fn dashboard_metrics(prefix: &str) -> std::collections::BTreeSet<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/grafana/frostgate.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("dashboard JSON");
    let mut names = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            let mut rest = expr;
            while let Some(at) = rest.find(prefix) {
                let name: String = rest[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                rest = &rest[at + name.len()..];
                names.insert(name);
            }
        }
    }
    assert!(!names.is_empty(), "the dashboard queries no {prefix} metric");
    names
}

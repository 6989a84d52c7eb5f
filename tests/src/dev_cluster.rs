//! A development cluster (`frostgate dev cluster init/up`) of some `frostgate` binary, in its own
//! temp dir, stopped (`dev cluster down`) when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `bin args`; its one-line JSON output (`Null` when it printed none), or `Err(output)`.
pub fn run_json(bin: &Path, args: &[&str]) -> Result<serde_json::Value, String> {
    let o = Command::new(bin).args(args).output().expect("run frostgate");
    if !o.status.success() {
        return Err(format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)));
    }
    Ok(serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null))
}

/// Whether `pid` exists and is not a zombie.
fn alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
    matches!(state, Some(s) if s != "Z" && s != "X")
}

/// One of a node's two processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    /// `frostgate host serve`.
    Host,
    /// `frostgate-enclave serve`.
    Enclave,
}

impl Process {
    fn pid_file(self) -> &'static str {
        match self {
            Process::Host => "host.pid",
            Process::Enclave => "enclave.pid",
        }
    }
}

/// A running development cluster.
#[derive(Debug)]
pub struct DevCluster {
    /// The cluster directory (`cluster.toml`, `node<i>/`).
    pub dir: PathBuf,
    bin: PathBuf,
    _tmp: tempfile::TempDir,
}

/// How many times a cluster is made again after losing a port to another test's cluster.
pub const PORT_RACES: usize = 3;

impl Drop for DevCluster {
    fn drop(&mut self) {
        let _ = self.run(&["dev", "cluster", "down", "--dir", &self.dir.display().to_string()]);
    }
}

impl DevCluster {
    /// `t`-of-`n` nodes of `bin` (extra `dev cluster init` flags in `extra`), all up.
    pub fn start(bin: &Path, nodes: u16, threshold: u16, extra: &[&str]) -> DevCluster {
        Self::start_with_env(bin, nodes, threshold, extra, &[])
    }

    /// As [`DevCluster::start`], the nodes started with `env` added to their environment.
    ///
    /// A node's port is chosen at `init` and bound at `up`: a cluster another test made meanwhile
    /// may have chosen the same port (tests run in parallel). Only then is the cluster made again,
    /// with other ports (at most [`PORT_RACES`] times); any other failure fails the test.
    pub fn start_with_env(bin: &Path, nodes: u16, threshold: u16, extra: &[&str], env: &[(&str, &str)]) -> DevCluster {
        let mut races = 0;
        loop {
            let cluster = Self::init(bin, nodes, threshold, extra);
            match cluster.up(env) {
                Ok(()) => return cluster,
                Err(e) if e.contains("Address already in use") && races < PORT_RACES => races += 1,
                Err(e) => panic!("up: {e}"),
            }
        }
    }

    /// `dev cluster init` only: configured, nothing started.
    pub fn init(bin: &Path, nodes: u16, threshold: u16, extra: &[&str]) -> DevCluster {
        let tmp = tempfile::tempdir().expect("dir");
        let dir = tmp.path().join("cluster");
        let d = dir.display().to_string();
        let (n, t) = (nodes.to_string(), threshold.to_string());
        let mut init = vec!["dev", "cluster", "init", "--dir", &d, "--nodes", &n, "--threshold", &t, "--json"];
        init.extend_from_slice(extra);
        run_json(bin, &init).expect("init");
        DevCluster { dir, bin: bin.to_path_buf(), _tmp: tmp }
    }

    /// `dev cluster up` (starts the nodes not running) with `env` added to their environment.
    pub fn up(&self, env: &[(&str, &str)]) -> Result<(), String> {
        let o = Command::new(&self.bin)
            .args(["dev", "cluster", "up", "--dir", &self.dir.display().to_string(), "--json"])
            .envs(env.iter().copied())
            .output()
            .expect("run frostgate");
        if o.status.success() {
            Ok(())
        } else {
            Err(format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
        }
    }

    /// Runs this cluster's `frostgate` binary.
    pub fn run(&self, args: &[&str]) -> Result<serde_json::Value, String> {
        run_json(&self.bin, args)
    }

    /// The cluster file.
    pub fn file(&self) -> String {
        self.dir.join("cluster.toml").display().to_string()
    }

    /// Node `i`'s directory.
    pub fn node(&self, i: u16) -> PathBuf {
        self.dir.join(format!("node{i}"))
    }

    /// SIGKILLs node `i`'s host and enclave, and waits (bounded) until both are gone, so a
    /// following `dev cluster up` sees them dead.
    pub fn kill(&self, i: u16) {
        for p in [Process::Host, Process::Enclave] {
            self.kill_process(i, p);
        }
    }

    /// The pid of node `i`'s `process`, while it runs.
    pub fn pid(&self, i: u16, process: Process) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(self.node(i).join(process.pid_file())).ok()?.trim().parse().ok()?;
        alive(pid).then_some(pid)
    }

    /// SIGKILLs node `i`'s `process` (if it runs) and waits (bounded) until it is gone.
    pub fn kill_process(&self, i: u16, process: Process) {
        let Some(pid) = self.pid(i, process) else { return };
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline && alive(pid) {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!alive(pid), "process {pid} survived SIGKILL");
    }

    /// The environment node `i`'s token needs (`frostgate dev cluster env`).
    pub fn token_env(&self, i: u16) -> Vec<(String, String)> {
        let d = self.dir.display().to_string();
        let env = self.run(&["dev", "cluster", "env", "--dir", &d, "--node", &i.to_string(), "--json"]).expect("env");
        env.as_object()
            .expect("object")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().expect("string").to_string()))
            .collect()
    }

    /// Node `i`'s seat `i` of `key` as its own token unseals it from a copy of its store (the
    /// node's enclave must be stopped: one process owns a token), run as the enclave's user in a
    /// two-user cluster: the 32-byte share.
    pub fn unsealed_share(&self, i: u16, key: frostgate_common::ids::KeyId) -> Vec<u8> {
        let n = self.node(i);
        let copy = tempfile::tempdir().expect("dir");
        let open = |p: &Path, mode| std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(mode));
        open(copy.path(), 0o777).expect("chmod");
        for suffix in ["", "-wal"] {
            let to = copy.path().join(format!("host.db{suffix}"));
            if std::fs::copy(format!("{}{suffix}", n.join("host/host.db").display()), &to).is_ok() {
                open(&to, 0o666).expect("chmod");
            }
        }
        let user = nix::unistd::geteuid().is_root().then_some("frostgate-dev-enclave");
        let seat = frostgate_common::ids::ParticipantId::new(i).expect("seat");
        let config = n.join("enclave/enclave.toml");
        crate::dkg::unseal_with(&config, &copy.path().join("host.db"), &self.token_env(i), user, key, seat).1
    }

    /// Arms a development fault point on node `i`.
    pub fn arm(&self, i: u16, point: &str) {
        std::fs::write(self.node(i).join("fault"), point).expect("fault");
    }

    /// Disarms node `i`'s fault point.
    pub fn disarm(&self, i: u16) {
        let _ = std::fs::remove_file(self.node(i).join("fault"));
    }

    /// `frostgate keygen`.
    pub fn keygen(&self) -> serde_json::Value {
        self.run(&["keygen", "--cluster", &self.file(), "--json"]).expect("keygen")
    }

    /// `frostgate sign` of `message` (hex) with `key`.
    pub fn sign(&self, key: &str, message: &str) -> Result<serde_json::Value, String> {
        self.run(&[
            "sign",
            "--cluster",
            &self.file(),
            "--key",
            key,
            "--message",
            message,
            "--timeout-ms",
            "5000",
            "--json",
        ])
    }

    /// Every node's logs.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for entry in std::fs::read_dir(&self.dir).expect("dir").flatten() {
            for log in ["enclave.log", "host.log"] {
                s.push_str(&std::fs::read_to_string(entry.path().join(log)).unwrap_or_default());
            }
        }
        s
    }
}

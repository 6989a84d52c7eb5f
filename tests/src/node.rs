//! One signer node for tests: its own token, an enclave process and a host process with its
//! SQLite store, restartable (SIGKILL) with all state on disk kept.

use crate::signing::Caller;
use crate::token::{TestToken, TokenDir};
use crate::{enclave_bin, host_bin, Daemon};
use frostgate_common::channel::{refuse_all, Channel};
use frostgate_common::protocol::Side;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A node: token, enclave, host.
#[derive(Debug)]
pub struct Node {
    /// The token directory (kept across restarts).
    pub tokens: TokenDir,
    /// The token.
    pub token: TestToken,
    /// The host's database.
    pub db: PathBuf,
    /// Write a fault point's name here to arm it in the enclave or host (dev builds).
    pub fault_file: PathBuf,
    /// The enclave process.
    pub enclave: Option<Daemon>,
    /// The host process.
    pub host: Option<Daemon>,
    /// Extra arguments for `frostgate-enclave serve`.
    pub enclave_args: Vec<String>,
    /// Extra arguments for `frostgate host serve`.
    pub host_args: Vec<String>,
    /// The enclave's identity public key (hex), from `token init`.
    pub identity_key: String,
}

impl Node {
    /// A fresh token with its objects; no process started yet.
    pub fn new() -> Node {
        let tokens = TokenDir::new();
        let token = tokens.add_token("node");
        let o = Command::new(host_bin())
            .args(["token", "init", "--json", "--config"])
            .arg(&token.config)
            .envs(token.env().iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("token init");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let init: serde_json::Value = serde_json::from_slice(&o.stdout).expect("token init json");
        let identity_key = init["identity_public_key"].as_str().expect("identity key").to_string();
        let db = tokens.path().join("host.db");
        let fault_file = tokens.path().join("fault");
        Node {
            tokens,
            token,
            db,
            fault_file,
            enclave: None,
            host: None,
            enclave_args: Vec::new(),
            host_args: Vec::new(),
            identity_key,
        }
    }

    /// Pins the group (participant i+1 = nodes[i]) in every node's enclave configuration.
    pub fn pin_group(nodes: &[Node]) {
        let mut group = String::from("\n[group]\nparticipants = [\n");
        for (i, n) in nodes.iter().enumerate() {
            group.push_str(&format!("  {{ id = {}, identity_key = \"{}\" }},\n", i + 1, n.identity_key));
        }
        group.push_str("]\n");
        for n in nodes {
            let mut config = std::fs::read_to_string(&n.token.config).expect("config");
            if let Some(at) = config.find("\n[group]") {
                config.truncate(at);
            }
            config.push_str(&group);
            std::fs::write(&n.token.config, config).expect("config");
        }
    }

    /// Lets this node's enclave refresh a key down to n = t (`[group] allow_removal_to_threshold`,
    /// appended to the `[group]` table `pin_group` wrote last); takes effect at the next start.
    pub fn allow_removal_to_threshold(&self) {
        let mut config = std::fs::read_to_string(&self.token.config).expect("config");
        assert!(config.contains("\n[group]"), "pin the group first");
        config.push_str("allow_removal_to_threshold = true\n");
        std::fs::write(&self.token.config, config).expect("config");
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tokens.path().join(name)
    }

    fn env(&self) -> Vec<(String, String)> {
        let mut env = self.token.env().to_vec();
        env.push(("FROSTGATE_DEV_FAULT_FILE".into(), self.fault_file.display().to_string()));
        env
    }

    /// The host's client socket.
    pub fn host_socket(&self) -> PathBuf {
        self.path("host.sock")
    }

    /// Starts the enclave.
    pub fn start_enclave(&mut self) {
        let mut args = vec![
            "serve".into(),
            "--listen".into(),
            self.path("enclave.sock").display().to_string(),
            "--config".into(),
            self.token.config.display().to_string(),
        ];
        args.extend(self.enclave_args.iter().cloned());
        self.enclave = Some(Daemon::start(&enclave_bin(), &args, &self.env(), self.path("enclave.log")));
    }

    /// Starts the host (which loads the store into the enclave); `Err(log)` if it refuses.
    pub fn try_start_host(&mut self) -> Result<(), String> {
        let args = vec![
            "host".into(),
            "serve".into(),
            "--db".into(),
            self.db.display().to_string(),
            "--enclave".into(),
            self.path("enclave.sock").display().to_string(),
            "--listen".into(),
            self.host_socket().display().to_string(),
        ];
        let mut args = args;
        args.extend(self.host_args.iter().cloned());
        let d = Daemon::try_start(&host_bin(), &args, &self.env(), self.path("host.log")).map_err(|(_, log)| log)?;
        self.host = Some(d);
        Ok(())
    }

    /// Starts both processes.
    pub fn start(&mut self) {
        self.disarm();
        self.start_enclave();
        self.try_start_host().unwrap_or_else(|log| panic!("host refused to start:\n{log}"));
    }

    /// SIGKILLs both processes.
    pub fn kill(&mut self) {
        if let Some(mut h) = self.host.take() {
            h.kill();
        }
        if let Some(mut e) = self.enclave.take() {
            e.kill();
        }
    }

    /// Arms a fault point.
    pub fn arm(&self, point: &str) {
        std::fs::write(&self.fault_file, point).expect("fault file");
    }

    /// Disarms every fault point.
    pub fn disarm(&self) {
        let _ = std::fs::remove_file(&self.fault_file);
    }

    /// A client of the host (call inside a tokio runtime).
    pub async fn caller(&self) -> Caller {
        let s = tokio::net::UnixStream::connect(self.host_socket()).await.expect("connect to host");
        let (r, w) = s.into_split();
        let (channel, _): (Channel, _) = Channel::start(Side::Host, Box::new(r), Box::new(w), refuse_all());
        Caller::Channel(channel)
    }

    /// Both logs.
    pub fn logs(&self) -> String {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        format!("--- enclave ---\n{}\n--- host ---\n{}", read(&self.path("enclave.log")), read(&self.path("host.log")))
    }

    /// `frostgate store verify --connect <enclave>` against `db`: `Ok(stdout)` or `Err(stderr)`.
    pub fn verify(&self, db: &Path) -> Result<String, String> {
        let o = Command::new(host_bin())
            .args(["store", "verify", "--db"])
            .arg(db)
            .arg("--connect")
            .arg(self.path("enclave.sock"))
            .output()
            .expect("store verify");
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&o.stderr).into_owned())
        }
    }
}

impl Default for Node {
    fn default() -> Self {
        Self::new()
    }
}

//! `frostgate node --config node.toml`: one signer node. Starts its enclave as a child process
//! (stopped with the node, restarted with backoff if it dies) or connects to a running one, then
//! runs the host (which reconnects to a restarted enclave and reloads the store).

use frostgate_common::error::{Error, ErrorCode};
use frostgate_host::api::server::ApiConfig;
use frostgate_host::enclave::{default_enclave_bin, ChildEnclave};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `node.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The host side.
    pub node: NodeSection,
    /// The enclave.
    pub enclave: EnclaveSection,
    /// The network API (default: loopback, port 7300; refused without `[api.tls]` unless
    /// `dev_plaintext = true`).
    #[serde(default = "default_api")]
    pub api: ApiConfig,
}

/// The API's default: loopback only.
pub const DEFAULT_API_LISTEN: &str = "127.0.0.1:7300";

fn default_api() -> ApiConfig {
    ApiConfig { listen: DEFAULT_API_LISTEN.into(), tls: None, dev_plaintext: false, limits: Default::default() }
}

/// `[node]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// The host store (SQLite).
    pub db: PathBuf,
    /// A Unix socket for local clients of the same user (optional).
    pub listen: Option<String>,
    /// Prometheus metrics, loopback `IP:PORT` only.
    pub metrics_listen: Option<String>,
}

/// `[enclave]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnclaveSection {
    /// The enclave's socket.
    pub socket: PathBuf,
    /// Start the enclave as a child with this configuration; without it, connect to a running
    /// enclave at `socket`.
    pub config: Option<PathBuf>,
    /// The enclave binary (default: next to this executable).
    pub binary: Option<PathBuf>,
}

/// Reads and validates `node.toml`.
pub fn load(path: &Path) -> Result<NodeConfig, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::new(ErrorCode::ConfigInvalid, format!("reading {}: {e}", path.display())))?;
    toml::from_str(&text)
        .map_err(|e| Error::new(ErrorCode::ConfigInvalid, format!("{}: {}", path.display(), e.message())))
}

pub async fn run(config: &Path) -> Result<(), Error> {
    let c = load(config)?;
    // Refused before the enclave starts.
    c.api.check()?;
    // The child (if any) lives exactly as long as this function: its supervisor is stopped
    // (and the child dropped -> SIGTERM) before this returns.
    let supervisor = match &c.enclave.config {
        Some(enclave_config) => {
            let bin = c.enclave.binary.clone().unwrap_or_else(default_enclave_bin);
            let start = ChildStart {
                bin,
                socket: c.enclave.socket.clone(),
                args: vec!["--config".into(), enclave_config.display().to_string()],
            };
            let child = start.start()?;
            Some(tokio::spawn(supervise(child, start)))
        }
        None => None,
    };
    let listeners = super::host::Listeners {
        local: c.node.listen.as_deref(),
        api: Some(&c.api),
        metrics: c.node.metrics_listen.as_deref(),
    };
    let result = super::host::serve(&c.node.db, &c.enclave.socket.display().to_string(), listeners).await;
    if let Some(s) = supervisor {
        s.abort();
        let _ = s.await;
    }
    result
}

/// How to start the enclave child.
#[derive(Debug, Clone)]
struct ChildStart {
    bin: PathBuf,
    socket: PathBuf,
    args: Vec<String>,
}

impl ChildStart {
    fn start(&self) -> Result<ChildEnclave, Error> {
        ChildEnclave::start(&self.bin, &self.socket, &self.args)
    }
}

/// Longest wait between two restarts of a failing enclave child.
const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(10);

/// Restarts the enclave child whenever it dies (backoff 200 ms doubling to 10 s while restarts
/// fail). The host side notices the ended connection and reconnects by itself.
async fn supervise(mut child: ChildEnclave, start: ChildStart) {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tick.tick().await;
        let Some(status) = child.exited() else { continue };
        tracing::error!(code = %ErrorCode::EnclaveUnavailable, %status, "the enclave child died; restarting it");
        let mut delay = Duration::from_millis(200);
        child = loop {
            tokio::time::sleep(delay).await;
            let s = start.clone();
            match tokio::task::spawn_blocking(move || s.start()).await {
                Ok(Ok(c)) => break c,
                Ok(Err(e)) => tracing::error!(code = %e.code(), "enclave restart failed: {}", e.message()),
                Err(e) => tracing::error!("enclave restart task failed: {e}"),
            }
            delay = (delay * 2).min(MAX_RESTART_BACKOFF);
        };
        frostgate_host::metrics::global().enclave_restarted();
        tracing::info!("enclave child restarted");
    }
}

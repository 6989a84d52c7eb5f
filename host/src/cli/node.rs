//! `frostgate node --config node.toml`: one signer node. Starts its enclave as a child process
//! (stopped with the node) or connects to a running one, then runs the host.

use frostgate_common::error::{Error, ErrorCode};
use frostgate_host::api::server::ApiConfig;
use frostgate_host::enclave::{default_enclave_bin, ChildEnclave};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// `node.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The host side.
    pub node: NodeSection,
    /// The enclave.
    pub enclave: EnclaveSection,
    /// The network API (default: loopback, port 7300, no TLS).
    #[serde(default = "default_api")]
    pub api: ApiConfig,
}

/// The API's default: loopback only.
pub const DEFAULT_API_LISTEN: &str = "127.0.0.1:7300";

fn default_api() -> ApiConfig {
    ApiConfig { listen: DEFAULT_API_LISTEN.into(), tls: None }
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
    // The child (if any) lives exactly as long as this function: dropped -> SIGTERM.
    let _child = match &c.enclave.config {
        Some(enclave_config) => {
            let bin = c.enclave.binary.clone().unwrap_or_else(default_enclave_bin);
            Some(ChildEnclave::start(
                &bin,
                &c.enclave.socket,
                &["--config".into(), enclave_config.display().to_string()],
            )?)
        }
        None => None,
    };
    let listeners = super::host::Listeners {
        local: c.node.listen.as_deref(),
        api: Some(&c.api),
        metrics: c.node.metrics_listen.as_deref(),
    };
    super::host::serve(&c.node.db, &c.enclave.socket.display().to_string(), listeners).await
}

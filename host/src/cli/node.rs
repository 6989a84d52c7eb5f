//! `frostgate node --config node.toml`: one signer node.
//!
//! One user: starts its enclave as a child process (stopped with the node, restarted with backoff
//! if it dies) or connects to a running one, then runs the host (which reconnects to a restarted
//! enclave and reloads the store). Two users (`[node] user` and `[enclave] user`, started as
//! root): a supervisor that runs the enclave and the host as separate children under their own
//! users, so the host's user can read neither the PIN, the token nor the enclave's memory.

use frostgate_common::error::{Error, ErrorCode};
use frostgate_host::api::server::ApiConfig;
use frostgate_host::node::enclave::default_enclave_bin;
use frostgate_host::supervisor::{self, ChildSpec};
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
    /// Two users (the node starts as root): the host runs as this user. Requires
    /// `[enclave] user`.
    pub user: Option<String>,
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
    /// Two users (the node starts as root): the enclave runs as this user and serves only
    /// `[node] user`. Requires `[node] user`.
    pub user: Option<String>,
}

/// Reads and validates `node.toml`.
pub fn load(path: &Path) -> Result<NodeConfig, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::new(ErrorCode::ConfigInvalid, format!("reading {}: {e}", path.display())))?;
    toml::from_str(&text)
        .map_err(|e| Error::new(ErrorCode::ConfigInvalid, format!("{}: {}", path.display(), e.message())))
}

pub async fn run(config: &Path, role: Role) -> Result<(), Error> {
    let c = load(config)?;
    // Refused before any child starts (the host child checks after dropping root: the check
    // reads the TLS key).
    if role == Role::Node {
        c.api.check()?;
    }
    match (role, &c.node.user, &c.enclave.user) {
        (Role::Host, user, _) => {
            if let Some(user) = user {
                frostgate_common::privileges::drop_to(user)?;
            }
            c.api.check()?;
            // Started by a two-user node: stop with it, even if it was killed.
            tokio::select! {
                r = serve_host(&c) => r,
                _ = frostgate_common::parent::exited(true) => {
                    tracing::warn!("the node supervisor exited: stopping the host");
                    Ok(())
                }
            }
        }
        (Role::Node, Some(host_user), Some(enclave_user)) => two_users(config, &c, host_user, enclave_user).await,
        (Role::Node, None, None) => one_user(&c).await,
        (Role::Node, _, _) => Err(Error::new(
            ErrorCode::ConfigInvalid,
            "set both [node] user and [enclave] user (two users), or neither (one user)",
        )),
    }
}

/// Which part of a node this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// The whole node (the default).
    Node,
    /// Only the host, as `[node] user` (started by a two-user node).
    Host,
}

async fn serve_host(c: &NodeConfig) -> Result<(), Error> {
    let listeners = super::host::Listeners {
        local: c.node.listen.as_deref(),
        api: Some(&c.api),
        metrics: c.node.metrics_listen.as_deref(),
    };
    super::host::serve(&c.node.db, &c.enclave.socket.display().to_string(), listeners).await
}

fn enclave_spec(c: &NodeConfig, enclave_config: &Path, extra: &[String]) -> ChildSpec {
    let mut args = vec!["--config".to_string(), enclave_config.display().to_string()];
    args.extend(extra.iter().cloned());
    ChildSpec {
        name: "enclave",
        bin: c.enclave.binary.clone().unwrap_or_else(default_enclave_bin),
        args: supervisor::enclave_args(&c.enclave.socket, &args),
    }
}

/// One user: the enclave as a child (restarted if it dies), the host in this process.
async fn one_user(c: &NodeConfig) -> Result<(), Error> {
    // The child (if any) lives exactly as long as this function: its supervisor is stopped
    // (and the child dropped -> SIGTERM) before this returns.
    let keeper = match &c.enclave.config {
        Some(enclave_config) => {
            let spec = enclave_spec(c, enclave_config, &[]);
            let child = spec.start()?;
            Some(tokio::spawn(supervisor::keep_running(child, spec, || {
                frostgate_host::node::metrics::global().enclave_restarted()
            })))
        }
        None => None,
    };
    let result = serve_host(c).await;
    if let Some(k) = keeper {
        k.abort();
        let _ = k.await;
    }
    result
}

/// Two users (started as root): this process only supervises. The enclave runs as
/// `[enclave] user` and serves only `[node] user`; the host runs as `[node] user` (this binary
/// with `--role host`). Either is restarted if it dies; both stop with this process.
async fn two_users(config: &Path, c: &NodeConfig, host_user: &str, enclave_user: &str) -> Result<(), Error> {
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::new(
            ErrorCode::ConfigInvalid,
            "a node with [node] user and [enclave] user must start as root",
        ));
    }
    let host_account = frostgate_common::privileges::account(host_user)?;
    frostgate_common::privileges::account(enclave_user)?;
    let enclave_config = c.enclave.config.as_ref().ok_or_else(|| {
        Error::new(ErrorCode::ConfigInvalid, "[enclave] user needs [enclave] config (the enclave runs as a child)")
    })?;
    let extra = ["--user".to_string(), enclave_user.to_string(), "--allowed-uid".into(), host_account.uid.to_string()];
    let enclave = enclave_spec(c, enclave_config, &extra);
    let host = ChildSpec {
        name: "host",
        bin: std::env::current_exe().map_err(|e| Error::new(ErrorCode::Internal, format!("current exe: {e}")))?,
        args: vec!["node".into(), "--config".into(), config.display().to_string(), "--role".into(), "host".into()],
    };
    let enclave_child = enclave.start()?;
    let host_child = host.start()?;
    // Readiness: the host's line (it names the API and metrics addresses).
    super::out(&format!("{}\n", host_child.ready));
    let keepers = [
        tokio::spawn(supervisor::keep_running(enclave_child, enclave, || {
            tracing::warn!("enclave restarted by the node supervisor")
        })),
        tokio::spawn(supervisor::keep_running(host_child, host, || {
            tracing::warn!("host restarted by the node supervisor")
        })),
    ];
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::new(ErrorCode::Internal, format!("SIGTERM handler: {e}")))?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping the host and the enclave"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping the host and the enclave"),
    }
    for k in keepers {
        k.abort();
        let _ = k.await;
    }
    Ok(())
}

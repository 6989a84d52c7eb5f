//! `frostgate host serve`: the host process in front of an enclave.

use super::out;
use clap::{Args, Subcommand};
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::transport::{Address, Listener};
use frostgate_host::api::server::ApiConfig;
use frostgate_host::api::tls::TlsFiles;
use frostgate_host::node::enclave::EnclaveClient;
use frostgate_host::node::proxy::Host;
use frostgate_host::node::store::HostStore;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// Connect to the enclave, load the store into it, serve its commits and local clients.
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The host store (SQLite; created if missing).
    #[arg(long, env = "FROSTGATE_DB")]
    db: PathBuf,
    /// The enclave's address.
    #[arg(long, env = "FROSTGATE_ENCLAVE")]
    enclave: String,
    /// A Unix socket for local clients of the same user (the full boundary message set).
    #[arg(long)]
    listen: Option<String>,
    /// The network API (gRPC), `IP:PORT`; a non-loopback address requires the --tls-* flags.
    #[arg(long)]
    api_listen: Option<String>,
    /// The API's TLS certificate (PEM); with --tls-key and --tls-client-cert: mutual TLS.
    #[arg(long, requires_all = ["tls_key", "tls_client_cert", "api_listen"])]
    tls_cert: Option<PathBuf>,
    /// The API's TLS private key (PEM, PKCS#8).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// A client certificate (PEM) the API accepts (pinned; repeat for several clients).
    #[arg(long, requires = "tls_cert")]
    tls_client_cert: Vec<PathBuf>,
    /// DEVELOPMENT ONLY: serve the API as plaintext gRPC (loopback only) without the --tls-*
    /// flags. Any local user can then call the node, and sign.
    #[arg(long, conflicts_with = "tls_cert")]
    dev_plaintext_api: bool,
    /// Started as root: become this user before opening anything (two-user deployments).
    #[arg(long)]
    user: Option<String>,
    /// Serve Prometheus metrics at `http://ADDR/metrics` (loopback IP:PORT only; port 0 picks one).
    #[arg(long)]
    metrics_listen: Option<String>,
}

pub async fn run(cmd: HostCommand) -> Result<(), Error> {
    let HostCommand::Serve(a) = cmd;
    if let Some(user) = &a.user {
        frostgate_common::privileges::drop_to(user)?;
    }
    let tls = match (a.tls_cert, a.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key, peers: a.tls_client_cert }),
        _ => None,
    };
    let dev_plaintext = a.dev_plaintext_api;
    let api = a.api_listen.map(|listen| ApiConfig { listen, tls, dev_plaintext, limits: Default::default() });
    let listeners = Listeners { local: a.listen.as_deref(), api: api.as_ref(), metrics: a.metrics_listen.as_deref() };
    serve(&a.db, &a.enclave, listeners).await
}

/// Where a host serves: a local Unix socket, the network API, metrics (each optional).
#[derive(Debug, Clone, Copy)]
pub struct Listeners<'a> {
    /// Unix socket for local clients of the same user.
    pub local: Option<&'a str>,
    /// The gRPC API.
    pub api: Option<&'a ApiConfig>,
    /// Prometheus metrics, loopback `IP:PORT`.
    pub metrics: Option<&'a str>,
}

/// The host process: load the store into the enclave, serve its commits and local clients,
/// until SIGTERM. Shared by `frostgate host serve` and `frostgate node`.
pub async fn serve(db: &std::path::Path, enclave: &str, listeners: Listeners<'_>) -> Result<(), Error> {
    if listeners.local.is_none() && listeners.api.is_none() {
        return Err(Error::new(ErrorCode::ConfigInvalid, "nothing to serve: give a local socket or an API address"));
    }
    // Checked before anything else starts: a bad metrics or API address (or a non-loopback API
    // without TLS) refuses the whole host.
    let metrics = match listeners.metrics {
        Some(a) => Some(frostgate_host::node::metrics::bind(a).await?),
        None => None,
    };
    let api = match listeners.api {
        Some(c) => Some(frostgate_host::api::server::bind(c).await?),
        None => None,
    };
    let store = Arc::new(HostStore::open(db)?);
    let enclave = EnclaveClient::connect_with_store(enclave.parse::<Address>()?, Some(store.clone())).await?;
    let host = Host::new(enclave, store);
    let status = host.load_settled().await?;
    tracing::info!(head = status.head_version, records = status.records, "store loaded into the enclave");
    tokio::spawn(host.clone().supervise());
    let local = match listeners.local {
        Some(l) => {
            let address: Address = l.parse()?;
            Some((Listener::bind(&address)?, address))
        }
        None => None,
    };
    let uid = nix::unistd::geteuid().as_raw();
    let mut ready = "READY".to_string();
    if let Some((_, address)) = &local {
        ready.push_str(&format!(" {address}"));
    }
    let mut servers = tokio::task::JoinSet::new();
    if let Some(api) = api {
        ready.push_str(&format!(" api={}{}", api.local_addr()?, if api.tls() { " tls=mutual" } else { "" }));
        servers.spawn(api.serve(host.clone()));
    }
    if let Some(listener) = metrics {
        let local = listener.local_addr().map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
        ready.push_str(&format!(" metrics=http://{local}/metrics"));
        tokio::spawn(frostgate_host::node::metrics::serve(listener));
        tokio::spawn(host.clone().poll_enclave(std::time::Duration::from_secs(5)));
    }
    out(&format!("{ready}\n"));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::new(ErrorCode::Internal, format!("SIGTERM handler: {e}")))?;
    let socket = local.as_ref().map(|(_, a)| a.clone());
    if let Some((listener, _)) = local {
        let host = host.clone();
        servers.spawn(async move {
            host.serve(listener, uid).await;
            Ok(())
        });
    }
    let result = tokio::select! {
        done = servers.join_next() => match done {
            Some(Ok(Err(e))) => Err(e),
            _ => Err(Error::new(ErrorCode::Internal, "a listener stopped")),
        },
        _ = term.recv() => {
            tracing::info!("SIGTERM: host shutting down");
            Ok(())
        }
    };
    if let Some(Address::Unix(p)) = &socket {
        let _ = std::fs::remove_file(p);
    }
    result
}

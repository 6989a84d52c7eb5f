//! `frostgate host serve`: the host process in front of an enclave.

use super::out;
use clap::{Args, Subcommand};
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::transport::{Address, Listener};
use frostgate_host::enclave::EnclaveClient;
use frostgate_host::proxy::Host;
use frostgate_host::store::HostStore;
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
    /// Where local clients connect (Unix socket).
    #[arg(long)]
    listen: String,
    /// Serve Prometheus metrics at `http://ADDR/metrics` (loopback IP:PORT only; port 0 picks one).
    #[arg(long)]
    metrics_listen: Option<String>,
}

pub async fn run(cmd: HostCommand) -> Result<(), Error> {
    let HostCommand::Serve(args) = cmd;
    serve(&args.db, &args.enclave, &args.listen, args.metrics_listen.as_deref()).await
}

/// The host process: load the store into the enclave, serve its commits and local clients,
/// until SIGTERM. Shared by `frostgate host serve` and `frostgate node`.
pub async fn serve(
    db: &std::path::Path,
    enclave: &str,
    listen: &str,
    metrics_listen: Option<&str>,
) -> Result<(), Error> {
    // Checked before anything else starts: a bad metrics address refuses the whole host.
    let metrics = match metrics_listen {
        Some(a) => Some(frostgate_host::metrics::bind(a).await?),
        None => None,
    };
    let store = Arc::new(HostStore::open(db)?);
    let enclave = EnclaveClient::connect_with_store(enclave.parse::<Address>()?, Some(store.clone())).await?;
    let host = Host::new(enclave, store);
    let status = host.load().await?;
    tracing::info!(head = status.head_version, records = status.records, "store loaded into the enclave");
    let address: Address = listen.parse()?;
    let listener = Listener::bind(&address)?;
    let uid = nix::unistd::geteuid().as_raw();
    let mut ready = format!("READY {address}");
    if let Some(listener) = metrics {
        let local = listener.local_addr().map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
        ready.push_str(&format!(" metrics=http://{local}/metrics"));
        tokio::spawn(frostgate_host::metrics::serve(listener));
        tokio::spawn(host.clone().poll_enclave(std::time::Duration::from_secs(5)));
    }
    out(&format!("{ready}\n"));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::new(ErrorCode::Internal, format!("SIGTERM handler: {e}")))?;
    tokio::select! {
        _ = host.serve(listener, uid) => {}
        _ = term.recv() => tracing::info!("SIGTERM: host shutting down"),
    }
    #[allow(irrefutable_let_patterns)] // refutable with the `vsock` feature
    if let Address::Unix(p) = &address {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}

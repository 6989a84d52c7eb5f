//! `frostgate serve`: a signing service for applications over one cluster. Applications submit
//! sign requests (a digest or a PSBT) by their own idempotent ids, see them later, wait for them
//! and cancel them; requests are logged durably (SQLite) before they are answered, and signed by
//! workers through the coordinator ([`crate::coordinator::Signing`]).
//!
//! - [`request`]: the request schema, states and outcome;
//! - [`log`]: the request log (idempotency, cancel, leases);
//! - [`writer`]: its group commit on SQLite (`pg_group.rs` on PostgreSQL), paced by [`pacing`];
//! - [`worker`]: claims and signs;
//! - [`handlers`]: the operations both APIs share;
//! - [`http`]: the JSON API;
//! - [`grpc`]: the gRPC API (`service.proto`);
//! - [`config`]: `service.toml` and the clients.

pub mod changes;
pub mod client;
pub mod config;
pub mod grpc;
pub mod handlers;
pub mod http;
pub mod log;
pub mod metrics;
pub mod pacing;
mod pg_group;
mod pg_rows;
pub mod postgres;
pub mod request;
pub mod store;
pub mod worker;
pub mod writer;

use crate::api::connection::ApiLimits;
use crate::coordinator::{cluster::Cluster, dkg_relay, Settings};
use config::ServiceConfig;
use frostgate_common::error::{Error, ErrorCode};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Concurrent gRPC streams on one connection (HTTP/2's own default for the JSON API is 200).
const GRPC_STREAMS_PER_CONNECTION: u32 = 64;

/// What `frostgate serve` runs with (its flags over `service.toml`).
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The configuration file's content.
    pub config: ServiceConfig,
    /// The cluster file.
    pub cluster: PathBuf,
    /// `sqlite:PATH`.
    pub store: String,
    /// The HTTP listener.
    pub http_listen: SocketAddr,
    /// The gRPC listener, if any.
    pub grpc_listen: Option<SocketAddr>,
    /// The metrics listener (loopback), if any.
    pub metrics_listen: Option<String>,
    /// DEVELOPMENT ONLY: plaintext on loopback, every caller the development client.
    pub dev_plaintext: bool,
}

fn config_err(m: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::ConfigInvalid, m.to_string())
}

/// The service's TLS files: its certificate and key, every client's certificate pinned.
fn tls_files(o: &ServeOptions) -> Result<crate::api::tls::TlsFiles, Error> {
    let t = o.config.tls.as_ref().ok_or_else(|| Error::new(ErrorCode::TlsRequired, "[tls] is required"))?;
    let peers = o.config.clients.iter().map(|c| c.certificate.clone()).collect();
    Ok(crate::api::tls::TlsFiles { cert: t.cert.clone(), key: t.key.clone(), peers })
}

/// A running service (its listeners bound, its workers claiming).
#[derive(Debug)]
pub struct Running {
    /// The JSON API's address.
    pub http: SocketAddr,
    /// The gRPC API's address.
    pub grpc: Option<SocketAddr>,
    /// The metrics address.
    pub metrics: Option<SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    workers: Arc<worker::Workers>,
}

impl Running {
    /// The `READY` line naming the addresses.
    pub fn ready_line(&self) -> String {
        let mut ready = format!("READY http={}", self.http);
        if let Some(g) = self.grpc {
            ready.push_str(&format!(" grpc={g}"));
        }
        if let Some(m) = self.metrics {
            ready.push_str(&format!(" metrics={m}"));
        }
        ready
    }

    /// Stops serving and claiming; the open signings send their closings.
    pub async fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        self.workers.finish().await;
    }
}

/// Serves until SIGTERM or SIGINT; prints `READY http=ADDR [grpc=ADDR] [metrics=ADDR]` once
/// listening.
pub async fn serve(o: ServeOptions) -> Result<(), Error> {
    let running = start(o).await?;
    println!("{}", running.ready_line());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::new(ErrorCode::Internal, format!("SIGTERM handler: {e}")))?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping the service"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping the service"),
    }
    running.stop().await;
    Ok(())
}

/// Binds the listeners and starts the workers.
pub async fn start(o: ServeOptions) -> Result<Running, Error> {
    let cluster = Cluster::load(&o.cluster)?;
    let log = store::RequestLog::open(&o.store, o.config.store.ca.as_deref()).await?;
    let tls = match (o.dev_plaintext, &o.config.tls) {
        (true, _) if !o.http_listen.ip().is_loopback() => {
            return Err(config_err("--dev-plaintext serves on a loopback address only"))
        }
        (true, _) => None,
        (false, None) => return Err(Error::new(
            ErrorCode::TlsRequired,
            "the service serves mutual TLS: give [tls] cert and key and [[clients]] (or --dev-plaintext on loopback)",
        )),
        (false, Some(_)) => Some(crate::api::tls::server_config_http(&tls_files(&o)?)?),
    };
    let limits = &o.config.limits;
    limits.check()?;
    if o.dev_plaintext && o.grpc_listen.is_some_and(|a| !a.ip().is_loopback()) {
        return Err(config_err("--dev-plaintext serves on a loopback address only"));
    }
    let nodes = dkg_relay::connect_all(&cluster).await;
    let settings = Settings::with_timeout(Duration::from_millis(limits.signer_timeout_ms));
    let workers = worker::Workers::new(
        log.clone(),
        nodes,
        cluster.threshold,
        settings,
        limits.workers,
        Duration::from_secs(limits.lease_secs.max(1)),
    );
    let clients = if o.dev_plaintext { Default::default() } else { o.config.clients()?.into_iter().collect() };
    let log_for_metrics = log.clone();
    let api = Arc::new(handlers::Api {
        log,
        workers: workers.clone(),
        clients,
        dev: o.dev_plaintext,
        max_open_per_client: limits.max_open_per_client,
        max_calls_per_client: limits.max_calls_per_client,
        calls: Default::default(),
        max_body_bytes: limits.max_body_bytes,
    });
    let listener = tokio::net::TcpListener::bind(o.http_listen)
        .await
        .map_err(|e| config_err(format!("HTTP listen address {}: {e}", o.http_listen)))?;
    let addr = listener.local_addr().map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
    if tls.is_none() {
        tracing::warn!(%addr, "DEVELOPMENT: the service serves plaintext HTTP; any local user can submit requests");
    }
    let grpc = match o.grpc_listen {
        None => None,
        Some(at) => {
            let l = tokio::net::TcpListener::bind(at)
                .await
                .map_err(|e| config_err(format!("gRPC listen address {at}: {e}")))?;
            let bound = l.local_addr().map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
            // gRPC is HTTP/2 only: the nodes' TLS configuration (ALPN h2).
            let tls = match &tls {
                None => None,
                Some(_) => Some(crate::api::tls::server_config(&tls_files(&o)?)?),
            };
            Some((l, bound, tls))
        }
    };
    let metrics = match &o.metrics_listen {
        None => None,
        Some(at) => Some(crate::node::metrics::bind(at).await?),
    };
    let incoming = crate::api::connection::incoming(listener, tls, ApiLimits::default());
    let mut tasks = vec![tokio::spawn(workers.clone().run())];
    tasks.push(tokio::spawn(http::serve(incoming, http::router(api.clone()))));
    let mut grpc_addr = None;
    if let Some((l, bound, tls)) = grpc {
        grpc_addr = Some(bound);
        let incoming = crate::api::connection::incoming(l, tls, ApiLimits::default());
        // Bounded as the JSON API: the body limit, and streams per connection.
        let service = crate::api::pb::signing_service_server::SigningServiceServer::new(grpc::Grpc(api))
            .max_decoding_message_size(limits.max_body_bytes);
        tasks.push(tokio::spawn(async move {
            if let Err(e) = tonic::transport::Server::builder()
                .max_concurrent_streams(Some(GRPC_STREAMS_PER_CONNECTION))
                .add_service(service)
                .serve_with_incoming(incoming)
                .await
            {
                tracing::warn!("gRPC server: {e}");
            }
        }));
    }
    let mut metrics_addr = None;
    if let Some(l) = metrics {
        metrics_addr = Some(l.local_addr().map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?);
        let (log, changes) = (log_for_metrics, workers.changes.clone());
        let render: crate::node::metrics::Render = Arc::new(move || {
            let (log, changes) = (log.clone(), changes.clone());
            Box::pin(async move {
                metrics::global().render(&log.open_counts().await.unwrap_or_default(), changes.open_channels())
            })
        });
        tasks.push(tokio::spawn(crate::node::metrics::serve_with(l, render)));
    }
    Ok(Running { http: addr, grpc: grpc_addr, metrics: metrics_addr, tasks, workers })
}

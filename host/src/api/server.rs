//! The gRPC server: each RPC is checked ([`Proto::from_pb`]), admitted for its caller
//! ([`Admission`]), forwarded to the enclave through [`Host::forward`] like any local request,
//! and its reply converted back ([`SignerApi::serve`]; one method per RPC, generated in
//! [`super::rpc`]).
//!
//! Invariants: the listener is bound only after its configuration is accepted. Mutual TLS is
//! required, loopback included; plaintext only with `dev_plaintext = true` and only on loopback
//! (`tls_required` otherwise, before any socket exists). Connections and callers are bounded
//! ([`super::connection`], [`Admission`]).

use super::admission::Admission;
use super::connection::{self, ApiLimits, CallerId};
use super::convert::Proto;
use super::pb;
use super::request::NetworkRequest;
use super::tls::{self, TlsFiles};
use super::{status, MAX_MESSAGE_LEN};
use crate::node::proxy::Host;
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::protocol::*;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

/// `[api]` of `node.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// `IP:PORT` (port 0 picks one). Loopback unless `tls` is set.
    pub listen: String,
    /// Mutual TLS: the node's certificate and key, and the pinned client certificates.
    pub tls: Option<TlsFiles>,
    /// DEVELOPMENT ONLY: serve plaintext gRPC (loopback only) when `tls` is absent. Any local
    /// user can then call the node, and sign.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dev_plaintext: bool,
    /// Connection and per-caller bounds.
    #[serde(default)]
    pub limits: ApiLimits,
}

/// A bound, not yet serving, API listener.
#[derive(Debug)]
pub struct Bound {
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: ApiLimits,
}

impl ApiConfig {
    /// Checks everything short of binding: the address and TLS (`tls_required` without TLS,
    /// unless `dev_plaintext` on loopback) and the TLS files (`config_invalid`).
    pub fn check(&self) -> Result<(), Error> {
        self.prepare().map(|_| ())
    }

    fn prepare(&self) -> Result<(SocketAddr, Option<Arc<rustls::ServerConfig>>), Error> {
        let addr: SocketAddr = self.listen.parse().map_err(|e| {
            Error::new(ErrorCode::ConfigInvalid, format!("API listen address {:?}: {e} (want IP:PORT)", self.listen))
        })?;
        if !addr.ip().is_loopback() && self.tls.is_none() {
            return Err(Error::new(
                ErrorCode::TlsRequired,
                format!("API listen address {addr} is not loopback: configure mutual TLS ([api.tls]) or use loopback"),
            ));
        }
        if self.tls.is_none() && !self.dev_plaintext {
            return Err(Error::new(
                ErrorCode::TlsRequired,
                format!(
                    "API {addr}: mutual TLS ([api.tls]) is required; plaintext only for development, with \
                     `dev_plaintext = true` (any local user can then sign)"
                ),
            ));
        }
        Ok((addr, self.tls.as_ref().map(tls::server_config).transpose()?))
    }
}

/// Checks the configuration and binds the listener.
pub async fn bind(config: &ApiConfig) -> Result<Bound, Error> {
    let (addr, tls) = config.prepare()?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Error::new(ErrorCode::ConfigInvalid, format!("API listen address {addr}: {e}")))?;
    if tls.is_none() {
        tracing::warn!(%addr, "DEVELOPMENT: the API serves plaintext gRPC; any local user can call it");
    }
    Ok(Bound { listener, tls, limits: config.limits })
}

impl Bound {
    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        self.listener.local_addr().map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))
    }

    /// Whether clients must use mutual TLS.
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Serves the API until the future is dropped or the listener fails.
    pub async fn serve(self, host: Arc<Host>) -> Result<(), Error> {
        let admission = Admission::new(self.limits);
        let service = pb::signer_server::SignerServer::new(SignerApi { host, admission })
            .max_decoding_message_size(MAX_MESSAGE_LEN)
            .max_encoding_message_size(MAX_MESSAGE_LEN);
        let router = tonic::transport::Server::builder().tcp_nodelay(true).add_service(service);
        // Nagle off, connection bounds, idle timeout and (with TLS) the pinned handshake.
        let incoming = connection::incoming(self.listener, self.tls, self.limits);
        router
            .serve_with_incoming(incoming)
            .await
            .map_err(|e| Error::new(ErrorCode::Internal, format!("API server: {e}")))
    }
}

/// The `Signer` service of one node (its RPC methods are generated in [`super::rpc`]).
#[derive(Debug)]
pub(crate) struct SignerApi {
    host: Arc<Host>,
    admission: Admission,
}

/// The caller of a request (set by the connection layer).
fn caller_of<T>(r: &Request<T>) -> CallerId {
    r.extensions().get::<CallerId>().cloned().unwrap_or_else(|| CallerId("unknown".into()))
}

impl SignerApi {
    /// One RPC: the request checked ([`Proto::from_pb`]), admitted for its caller, forwarded to
    /// the enclave, its typed reply converted back; any error becomes the status.
    pub(crate) async fn serve<Q>(&self, request: Request<Q::Pb>) -> Result<Response<<Q::Reply as Proto>::Pb>, Status>
    where
        Q: NetworkRequest,
        Q::Reply: Proto,
    {
        let caller = caller_of(&request);
        let m: Message = Q::from_pb(request.into_inner()).map_err(|e| status(&e))?.into();
        let ticket = self.admission.enter(&caller, &m).map_err(|e| status(&e))?;
        let reply = self.host.forward(m).await;
        self.admission.settle(ticket, &reply);
        let reply = reply_of::<Q>(reply).map_err(|e| status(&e))?;
        Ok(Response::new(reply.to_pb()))
    }
}

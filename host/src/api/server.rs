//! The gRPC server: each RPC is checked ([`Proto::from_pb`]), admitted for its caller
//! ([`Admission`]), forwarded to the enclave through [`Host::forward`] like any local request,
//! and its reply converted back.
//!
//! Invariants: the listener is bound only after its configuration is accepted. Mutual TLS is
//! required, loopback included; plaintext only with `dev_plaintext = true` and only on loopback
//! (`tls_required` otherwise, before any socket exists). Connections and callers are bounded
//! ([`super::connection`], [`Admission`]).

use super::admission::Admission;
use super::connection::{self, ApiLimits, CallerId};
use super::convert::Proto;
use super::pb;
use super::tls::{self, TlsFiles};
use super::{status, MAX_MESSAGE_LEN};
use crate::proxy::Host;
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

/// The `Signer` service of one node.
#[derive(Debug)]
struct SignerApi {
    host: Arc<Host>,
    admission: Admission,
}

/// The caller of a request (set by the connection layer).
fn caller_of<T>(r: &Request<T>) -> CallerId {
    r.extensions().get::<CallerId>().cloned().unwrap_or_else(|| CallerId("unknown".into()))
}

fn unexpected(kind: &str) -> Status {
    status(&Error::new(ErrorCode::UnexpectedMessage, format!("the enclave answered {kind}")))
}

impl SignerApi {
    /// Admits one request for its caller and forwards it; an error becomes the status.
    async fn forward(&self, caller: &CallerId, m: Message) -> Result<Message, Status> {
        let ticket = self.admission.enter(caller, &m).map_err(|e| status(&e))?;
        let reply = self.host.forward(m).await;
        self.admission.settle(ticket, &reply);
        match reply {
            Message::Error(e) => Err(status(&e)),
            reply => Ok(reply),
        }
    }

    /// The common shape: checked request in, one reply kind out.
    async fn unary<Q: Proto, A: Proto>(
        &self,
        request: Request<Q::Pb>,
        wrap: fn(Q) -> Message,
        unwrap: fn(Message) -> Option<A>,
    ) -> Result<Response<A::Pb>, Status> {
        let caller = caller_of(&request);
        let m = wrap(Q::from_pb(request.into_inner()).map_err(|e| status(&e))?);
        let reply = self.forward(&caller, m).await?;
        let kind = reply.info().name;
        unwrap(reply).map(|a| Response::new(a.to_pb())).ok_or_else(|| unexpected(kind))
    }
}

/// A DKG step's reply or the blame that aborted it.
fn dkg_outcome<T>(m: Message, ok: fn(Message) -> Option<T>, blame: fn(pb::DkgBlame) -> T) -> Result<T, Status> {
    let kind = m.info().name;
    match m {
        Message::DkgBlame(b) => Ok(blame(b.to_pb())),
        other => ok(other).ok_or_else(|| unexpected(kind)),
    }
}

fn checked<T: Proto>(p: T::Pb) -> Result<T, Status> {
    T::from_pb(p).map_err(|e| status(&e))
}

#[tonic::async_trait]
impl pb::signer_server::Signer for SignerApi {
    async fn health(&self, r: Request<pb::HealthRequest>) -> Result<Response<pb::HealthReply>, Status> {
        match self.forward(&caller_of(&r), Message::Health).await? {
            Message::HealthReply(h) => Ok(Response::new(h.to_pb())),
            other => Err(unexpected(other.info().name)),
        }
    }

    async fn get_key(&self, r: Request<pb::KeyRef>) -> Result<Response<pb::KeyInfo>, Status> {
        self.unary(r, Message::GetKey, |m| match m {
            Message::KeyInfo(k) => Some(k),
            _ => None,
        })
        .await
    }

    async fn get_identity(&self, r: Request<pb::GetIdentityRequest>) -> Result<Response<pb::Identity>, Status> {
        match self.forward(&caller_of(&r), Message::GetIdentity).await? {
            Message::Identity(i) => Ok(Response::new(i.to_pb())),
            other => Err(unexpected(other.info().name)),
        }
    }

    async fn open_session(&self, r: Request<pb::OpenSession>) -> Result<Response<pb::SessionOpened>, Status> {
        self.unary(r, Message::OpenSession, |m| match m {
            Message::SessionOpened(s) => Some(s),
            _ => None,
        })
        .await
    }

    async fn open_attempt(&self, r: Request<pb::OpenAttempt>) -> Result<Response<pb::AttemptRef>, Status> {
        self.unary(r, Message::OpenAttempt, |m| match m {
            Message::AttemptOpened(a) => Some(a),
            _ => None,
        })
        .await
    }

    async fn round1(&self, r: Request<pb::SeatRef>) -> Result<Response<pb::Round1Reply>, Status> {
        self.unary(r, Message::Round1, |m| match m {
            Message::Round1Reply(a) => Some(a),
            _ => None,
        })
        .await
    }

    async fn round2(&self, r: Request<pb::Round2>) -> Result<Response<pb::Round2Reply>, Status> {
        self.unary(r, Message::Round2, |m| match m {
            Message::Round2Reply(a) => Some(a),
            _ => None,
        })
        .await
    }

    async fn verify_share(&self, r: Request<pb::VerifyShare>) -> Result<Response<pb::ShareVerdictReply>, Status> {
        self.unary(r, Message::VerifyShare, |m| match m {
            Message::ShareVerdict(v) => Some(v),
            _ => None,
        })
        .await
    }

    async fn aggregate(&self, r: Request<pb::Aggregate>) -> Result<Response<pb::AggregateReply>, Status> {
        self.unary(r, Message::Aggregate, |m| match m {
            Message::AggregateReply(a) => Some(a),
            _ => None,
        })
        .await
    }

    async fn abort_attempt(&self, r: Request<pb::AttemptRef>) -> Result<Response<pb::AttemptAborted>, Status> {
        self.unary(r, Message::AbortAttempt, |m| match m {
            Message::AttemptAborted(a) => Some(a),
            _ => None,
        })
        .await
    }

    async fn close_session(&self, r: Request<pb::SessionRef>) -> Result<Response<pb::SessionRef>, Status> {
        self.unary(r, Message::CloseSession, |m| match m {
            Message::SessionClosed(s) => Some(s),
            _ => None,
        })
        .await
    }

    async fn dkg_start(&self, r: Request<pb::DkgStart>) -> Result<Response<pb::DkgStartReply>, Status> {
        use pb::dkg_start_reply::Outcome;
        let caller = caller_of(&r);
        let reply = self.forward(&caller, Message::DkgStart(checked(r.into_inner())?)).await?;
        let outcome = dkg_outcome(
            reply,
            |m| match m {
                Message::DkgRound1(p) => Some(Outcome::Round1(p.to_pb())),
                _ => None,
            },
            Outcome::Blame,
        )?;
        Ok(Response::new(pb::DkgStartReply { outcome: Some(outcome) }))
    }

    async fn dkg_round2(&self, r: Request<pb::DkgRound2>) -> Result<Response<pb::DkgRound2Reply>, Status> {
        use pb::dkg_round2_reply::Outcome;
        let caller = caller_of(&r);
        let reply = self.forward(&caller, Message::DkgRound2(checked(r.into_inner())?)).await?;
        let outcome = dkg_outcome(
            reply,
            |m| match m {
                Message::DkgRound2Reply(e) => Some(Outcome::Envelopes(e.to_pb())),
                _ => None,
            },
            Outcome::Blame,
        )?;
        Ok(Response::new(pb::DkgRound2Reply { outcome: Some(outcome) }))
    }

    async fn dkg_finish(&self, r: Request<pb::DkgFinish>) -> Result<Response<pb::DkgFinishReply>, Status> {
        use pb::dkg_finish_reply::Outcome;
        let caller = caller_of(&r);
        let reply = self.forward(&caller, Message::DkgFinish(checked(r.into_inner())?)).await?;
        let outcome = dkg_outcome(
            reply,
            |m| match m {
                Message::DkgConfirm(c) => Some(Outcome::Confirmation(c.to_pb())),
                _ => None,
            },
            Outcome::Blame,
        )?;
        Ok(Response::new(pb::DkgFinishReply { outcome: Some(outcome) }))
    }

    async fn dkg_activate(&self, r: Request<pb::DkgActivate>) -> Result<Response<pb::DkgActivateReply>, Status> {
        use pb::dkg_activate_reply::Outcome;
        let caller = caller_of(&r);
        let reply = self.forward(&caller, Message::DkgActivate(checked(r.into_inner())?)).await?;
        let outcome = dkg_outcome(
            reply,
            |m| match m {
                Message::KeyInfo(k) => Some(Outcome::Key(k.to_pb())),
                _ => None,
            },
            Outcome::Blame,
        )?;
        Ok(Response::new(pb::DkgActivateReply { outcome: Some(outcome) }))
    }

    async fn dkg_abort(&self, r: Request<pb::DkgRef>) -> Result<Response<pb::DkgRef>, Status> {
        self.unary(r, Message::DkgAbort, |m| match m {
            Message::DkgAborted(d) => Some(d),
            _ => None,
        })
        .await
    }

    async fn dev_dealer_keygen(&self, r: Request<pb::DevDealerKeygen>) -> Result<Response<pb::KeyInfo>, Status> {
        self.unary(r, Message::DevDealerKeygen, |m| match m {
            Message::KeyInfo(k) => Some(k),
            _ => None,
        })
        .await
    }
}

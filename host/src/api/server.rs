//! The gRPC server: each RPC is checked ([`Proto::from_pb`]), forwarded to the enclave through
//! [`Host::forward`] like any local request, and its reply converted back.
//!
//! Invariant: the listener is bound only after its configuration is accepted: a non-loopback
//! address without TLS is refused with `tls_required` before any socket exists.

use super::convert::Proto;
use super::pb;
use super::tls::{self, TlsFiles};
use super::{status, MAX_MESSAGE_LEN};
use crate::proxy::Host;
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::protocol::*;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::{Request, Response, Status};

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// `[api]` of `node.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// `IP:PORT` (port 0 picks one). Loopback unless `tls` is set.
    pub listen: String,
    /// Mutual TLS: the node's certificate and key, and the pinned client certificates.
    pub tls: Option<TlsFiles>,
}

/// A bound, not yet serving, API listener.
#[derive(Debug)]
pub struct Bound {
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl ApiConfig {
    /// Checks everything short of binding: the address (`tls_required` for a non-loopback
    /// address without TLS) and the TLS files (`config_invalid`).
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
        Ok((addr, self.tls.as_ref().map(tls::server_config).transpose()?))
    }
}

/// Checks the configuration and binds the listener.
pub async fn bind(config: &ApiConfig) -> Result<Bound, Error> {
    let (addr, tls) = config.prepare()?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Error::new(ErrorCode::ConfigInvalid, format!("API listen address {addr}: {e}")))?;
    Ok(Bound { listener, tls })
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
        let service = pb::signer_server::SignerServer::new(SignerApi { host })
            .max_decoding_message_size(MAX_MESSAGE_LEN)
            .max_encoding_message_size(MAX_MESSAGE_LEN);
        let router = tonic::transport::Server::builder().tcp_nodelay(true).add_service(service);
        let done = match self.tls {
            None => {
                use tokio_stream::StreamExt;
                // Nagle off on every connection (the builder's setting covers only listeners it binds).
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(self.listener)
                    .map(|c| c.and_then(|s| s.set_nodelay(true).map(|()| s)));
                router.serve_with_incoming(incoming).await
            }
            Some(config) => router.serve_with_incoming(tls_incoming(self.listener, config)).await,
        };
        done.map_err(|e| Error::new(ErrorCode::Internal, format!("API server: {e}")))
    }
}

/// Accepted connections whose TLS handshake (pinned client certificate) succeeded.
fn tls_incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<TlsConnection>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("API accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            // Handshakes run beside the accept loop: a slow client delays only itself.
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(TlsConnection(stream))).await;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(%peer, code = %ErrorCode::PeerNotAuthorized, "TLS handshake refused: {e}")
                    }
                    Err(_) => tracing::warn!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// A server-side TLS connection as tonic's transport wants it.
#[derive(Debug)]
struct TlsConnection(tokio_rustls::server::TlsStream<TcpStream>);

impl tonic::transport::server::Connected for TlsConnection {
    type ConnectInfo = Option<SocketAddr>;
    fn connect_info(&self) -> Option<SocketAddr> {
        self.0.get_ref().0.peer_addr().ok()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// The `Signer` service of one node.
#[derive(Debug)]
struct SignerApi {
    host: Arc<Host>,
}

fn unexpected(kind: &str) -> Status {
    status(&Error::new(ErrorCode::UnexpectedMessage, format!("the enclave answered {kind}")))
}

impl SignerApi {
    /// Forwards one request; an enclave error becomes the status.
    async fn forward(&self, m: Message) -> Result<Message, Status> {
        match self.host.forward(m).await {
            Message::Error(e) => Err(status(&e)),
            reply => Ok(reply),
        }
    }

    /// The common shape: checked request in, one reply kind out.
    async fn unary<Q: Proto, A: Proto>(
        &self,
        request: Q::Pb,
        wrap: fn(Q) -> Message,
        unwrap: fn(Message) -> Option<A>,
    ) -> Result<Response<A::Pb>, Status> {
        let m = wrap(Q::from_pb(request).map_err(|e| status(&e))?);
        let reply = self.forward(m).await?;
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
    async fn health(&self, _: Request<pb::HealthRequest>) -> Result<Response<pb::HealthReply>, Status> {
        match self.forward(Message::Health).await? {
            Message::HealthReply(h) => Ok(Response::new(h.to_pb())),
            other => Err(unexpected(other.info().name)),
        }
    }

    async fn get_key(&self, r: Request<pb::KeyRef>) -> Result<Response<pb::KeyInfo>, Status> {
        self.unary(r.into_inner(), Message::GetKey, |m| match m {
            Message::KeyInfo(k) => Some(k),
            _ => None,
        })
        .await
    }

    async fn get_identity(&self, _: Request<pb::GetIdentityRequest>) -> Result<Response<pb::Identity>, Status> {
        match self.forward(Message::GetIdentity).await? {
            Message::Identity(i) => Ok(Response::new(i.to_pb())),
            other => Err(unexpected(other.info().name)),
        }
    }

    async fn open_session(&self, r: Request<pb::OpenSession>) -> Result<Response<pb::SessionOpened>, Status> {
        self.unary(r.into_inner(), Message::OpenSession, |m| match m {
            Message::SessionOpened(s) => Some(s),
            _ => None,
        })
        .await
    }

    async fn open_attempt(&self, r: Request<pb::OpenAttempt>) -> Result<Response<pb::AttemptRef>, Status> {
        self.unary(r.into_inner(), Message::OpenAttempt, |m| match m {
            Message::AttemptOpened(a) => Some(a),
            _ => None,
        })
        .await
    }

    async fn round1(&self, r: Request<pb::SeatRef>) -> Result<Response<pb::Round1Reply>, Status> {
        self.unary(r.into_inner(), Message::Round1, |m| match m {
            Message::Round1Reply(a) => Some(a),
            _ => None,
        })
        .await
    }

    async fn round2(&self, r: Request<pb::Round2>) -> Result<Response<pb::Round2Reply>, Status> {
        self.unary(r.into_inner(), Message::Round2, |m| match m {
            Message::Round2Reply(a) => Some(a),
            _ => None,
        })
        .await
    }

    async fn verify_share(&self, r: Request<pb::VerifyShare>) -> Result<Response<pb::ShareVerdictReply>, Status> {
        self.unary(r.into_inner(), Message::VerifyShare, |m| match m {
            Message::ShareVerdict(v) => Some(v),
            _ => None,
        })
        .await
    }

    async fn aggregate(&self, r: Request<pb::Aggregate>) -> Result<Response<pb::AggregateReply>, Status> {
        self.unary(r.into_inner(), Message::Aggregate, |m| match m {
            Message::AggregateReply(a) => Some(a),
            _ => None,
        })
        .await
    }

    async fn abort_attempt(&self, r: Request<pb::AttemptRef>) -> Result<Response<pb::AttemptAborted>, Status> {
        self.unary(r.into_inner(), Message::AbortAttempt, |m| match m {
            Message::AttemptAborted(a) => Some(a),
            _ => None,
        })
        .await
    }

    async fn close_session(&self, r: Request<pb::SessionRef>) -> Result<Response<pb::SessionRef>, Status> {
        self.unary(r.into_inner(), Message::CloseSession, |m| match m {
            Message::SessionClosed(s) => Some(s),
            _ => None,
        })
        .await
    }

    async fn dkg_start(&self, r: Request<pb::DkgStart>) -> Result<Response<pb::DkgStartReply>, Status> {
        use pb::dkg_start_reply::Outcome;
        let reply = self.forward(Message::DkgStart(checked(r.into_inner())?)).await?;
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
        let reply = self.forward(Message::DkgRound2(checked(r.into_inner())?)).await?;
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
        let reply = self.forward(Message::DkgFinish(checked(r.into_inner())?)).await?;
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
        let reply = self.forward(Message::DkgActivate(checked(r.into_inner())?)).await?;
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
        self.unary(r.into_inner(), Message::DkgAbort, |m| match m {
            Message::DkgAborted(d) => Some(d),
            _ => None,
        })
        .await
    }

    async fn dev_dealer_keygen(&self, r: Request<pb::DevDealerKeygen>) -> Result<Response<pb::KeyInfo>, Status> {
        self.unary(r.into_inner(), Message::DevDealerKeygen, |m| match m {
            Message::KeyInfo(k) => Some(k),
            _ => None,
        })
        .await
    }
}

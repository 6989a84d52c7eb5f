//! Accepted API connections: who the caller is, how many connections it may hold, and when an
//! idle one is closed.
//!
//! Invariants: a peer address holds at most `max_per_peer` connections and the node at most
//! `max_total` (the rest are closed on accept, before any TLS work); a connection with no bytes
//! read or written for `idle_timeout` is closed; a TLS handshake must finish within
//! [`HANDSHAKE_TIMEOUT`]. The caller identity is the SHA-256 of the client certificate (mutual
//! TLS) or the peer IP (plaintext, development only).

use frostgate_common::error::ErrorCode;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};

/// How long a client may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// `[api.limits]` of `node.toml`: connection and per-caller bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiLimits {
    /// Open connections, node-wide.
    pub max_connections: usize,
    /// Open connections from one peer address.
    pub max_connections_per_peer: usize,
    /// A connection idle (no bytes either way) this long is closed.
    pub idle_timeout_secs: u64,
    /// Requests one caller may have in flight at once (beyond: `too_many_in_flight`).
    pub max_in_flight_per_caller: usize,
    /// Sessions one caller may hold open (beyond: `quota_exceeded`).
    pub max_sessions_per_caller: usize,
    /// Attempts one caller may hold open.
    pub max_attempts_per_caller: usize,
    /// DKGs, refreshes and repairs one caller may have running.
    pub max_dkgs_per_caller: usize,
    /// Preprocessed commitments one caller may hold unused (`Preprocess` and replenishments).
    pub max_commitments_per_caller: usize,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            max_connections: 1024,
            max_connections_per_peer: 64,
            idle_timeout_secs: 300,
            max_in_flight_per_caller: 128,
            max_sessions_per_caller: 1024,
            max_attempts_per_caller: 4096,
            max_dkgs_per_caller: 4,
            max_commitments_per_caller: 2048,
        }
    }
}

/// Who is calling: stable for one client certificate (or one plaintext peer address).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallerId(pub String);

impl std::fmt::Display for CallerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Open connections per peer address.
#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_peer: HashMap<IpAddr, usize>,
}

/// A slot in the connection counts, released on drop.
#[derive(Debug)]
struct Slot {
    counts: Arc<Mutex<Counts>>,
    peer: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.by_peer.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                c.by_peer.remove(&self.peer);
            }
        }
    }
}

fn take_slot(counts: &Arc<Mutex<Counts>>, peer: IpAddr, limits: &ApiLimits) -> Option<Slot> {
    let mut c = counts.lock().unwrap_or_else(|p| p.into_inner());
    let mine = c.by_peer.get(&peer).copied().unwrap_or(0);
    if c.total >= limits.max_connections || mine >= limits.max_connections_per_peer {
        return None;
    }
    c.total += 1;
    *c.by_peer.entry(peer).or_insert(0) += 1;
    Some(Slot { counts: counts.clone(), peer })
}

/// A plain or TLS byte stream.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One accepted connection (plain or mutual TLS) with its caller identity and idle deadline.
pub struct ApiConnection {
    stream: Box<dyn Io>,
    caller: CallerId,
    idle_timeout: Duration,
    idle: Pin<Box<Sleep>>,
    _slot: Slot,
}

impl std::fmt::Debug for ApiConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConnection").field("caller", &self.caller).finish()
    }
}

impl tonic::transport::server::Connected for ApiConnection {
    type ConnectInfo = CallerId;
    fn connect_info(&self) -> CallerId {
        self.caller.clone()
    }
}

impl ApiConnection {
    fn touch(&mut self) {
        let deadline = Instant::now() + self.idle_timeout;
        self.idle.as_mut().reset(deadline);
    }

    /// `Ready(Err)` once the idle deadline passed.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.idle.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "idle connection"))),
            Poll::Pending => Poll::Pending,
        }
    }
}

use std::future::Future;

impl AsyncRead for ApiConnection {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.touch();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match self.poll_idle(cx) {
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                _ => Poll::Pending,
            },
            other => other,
        }
    }
}

impl AsyncWrite for ApiConnection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            if *n > 0 {
                self.touch();
            }
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

fn tls_caller(stream: &tokio_rustls::server::TlsStream<TcpStream>) -> Option<CallerId> {
    Some(certificate_caller(stream.get_ref().1.peer_certificates()?.first()?))
}

/// The caller a pinned client certificate (DER) identifies: `cert:` and its SHA-256 (hex).
pub fn certificate_caller(der: &[u8]) -> CallerId {
    use bitcoin::hashes::{sha256, Hash};
    CallerId(format!("cert:{}", hex::encode(sha256::Hash::hash(der).to_byte_array())))
}

/// Accepts connections within the limits; with `tls`, only those whose handshake (pinned client
/// certificate) succeeded. Handshakes run beside the accept loop: a slow client delays only itself.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: ApiLimits,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<ApiConnection>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let counts = Arc::new(Mutex::new(Counts::default()));
    let idle_timeout = Duration::from_secs(limits.idle_timeout_secs.max(1));
    tokio::spawn(async move {
        loop {
            let (tcp, peer): (TcpStream, SocketAddr) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("API accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Some(slot) = take_slot(&counts, peer.ip(), &limits) else {
                tracing::warn!(%peer, code = %ErrorCode::TooManyInFlight, "connection limit reached; closing");
                drop(tcp);
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            let idle = Box::pin(tokio::time::sleep(idle_timeout));
            tokio::spawn(async move {
                let (stream, caller): (Box<dyn Io>, _) = match acceptor {
                    None => (Box::new(tcp), CallerId(format!("plaintext:{}", peer.ip()))),
                    Some(acceptor) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => {
                            let Some(caller) = tls_caller(&s) else { return };
                            (Box::new(s), caller)
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(%peer, code = %ErrorCode::PeerNotAuthorized, "TLS handshake refused: {e}");
                            return;
                        }
                        Err(_) => {
                            tracing::warn!(%peer, "TLS handshake timed out");
                            return;
                        }
                    },
                };
                let conn = ApiConnection { stream, caller, idle_timeout, idle, _slot: slot };
                let _ = tx.send(Ok(conn)).await;
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

//! A connection to one signer node's network API (gRPC, mutual TLS when configured).
//!
//! Callers send typed boundary requests; each is sent as the RPC of the same name and the reply
//! checked back into its typed reply ([`Proto::from_pb`]), so the coordinator and the DKG relay
//! are the same whether a node is local or remote. An unreachable node is represented, not hidden: every
//! call to it fails `node_unavailable`.

use crate::api::convert::Proto;
use crate::api::rpc::{Client, NetworkRequest};
use crate::api::tls::{self, TlsFiles};
use crate::api::{error_from_status, MAX_MESSAGE_LEN};
use frostgate_common::bounded::SessionIds;
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::ids::{KeyId, ParticipantId, SessionId};
use frostgate_common::protocol::SignItems;
use frostgate_common::protocol::{
    CloseSessions, PreCommitment, PreprocessedShare, RequestOpen, SessionBinding, SignBatch, SignOutcome,
    SignPreprocessed,
};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

/// How long connecting (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One signer (cheap to clone: clones share the connection and what is held for the node).
#[derive(Debug, Clone)]
pub struct SignerClient {
    id: ParticipantId,
    client: Result<Client, Error>,
    held: Arc<Mutex<Held>>,
    /// Requests sent through this client and its clones.
    calls: Arc<std::sync::atomic::AtomicU64>,
    /// One-request signings waiting to go to the node in a batch.
    batcher: Arc<Mutex<Batcher>>,
}

/// At most this many batches to one node at once; signings arriving meanwhile wait and go
/// together in the next one (no timer: a signing alone is sent at once).
const MAX_BATCHES_IN_FLIGHT: usize = 4;

/// Most bytes of signing packages in one batch (the channel's frame limit is 1 MiB).
const MAX_BATCH_BYTES: usize = 512 * 1024;

type Waiting = (SignPreprocessed, tokio::sync::oneshot::Sender<Result<PreprocessedShare, Error>>);

/// One drain's place among the batches in flight, given back if the drain ends while it holds it.
struct DrainSlot<'a> {
    batcher: &'a Mutex<Batcher>,
    held: bool,
}

impl Drop for DrainSlot<'_> {
    fn drop(&mut self) {
        if self.held {
            let mut b = self.batcher.lock().unwrap_or_else(|p| p.into_inner());
            b.in_flight = b.in_flight.saturating_sub(1);
        }
    }
}

/// The signings queued for one node, and how many batches are on their way to it.
#[derive(Debug, Default)]
struct Batcher {
    queue: VecDeque<Waiting>,
    in_flight: usize,
}

/// Commitments a held entry is used within: a minute below the enclave's default nonce TTL, so
/// an entry the enclave already wiped is rarely sent (it would be refused, `commitment_unknown`).
const HELD_TTL: Duration = Duration::from_secs(frostgate_common::limits::NONCE_TTL_SECS - 60);

/// Most finished sessions kept for closing per node; older ones are left to the enclave's
/// session expiry.
const MAX_CLOSING: usize = 4096;

/// What the coordinator holds for one node: its preprocessed commitments by key (public; each
/// usable once), and finished sessions to close there with the next request.
#[derive(Debug, Default)]
struct Held {
    commitments: HashMap<KeyId, VecDeque<(Instant, PreCommitment)>>,
    closing: VecDeque<SessionId>,
}

impl SignerClient {
    /// Connects to a node's API at `IP:PORT` (with `tls`: mutual TLS, the node's certificate
    /// pinned); a failure is kept and reported on every call.
    pub async fn connect(id: ParticipantId, address: &str, tls: Option<&TlsFiles>) -> SignerClient {
        let client = connect(address, tls).await.map(|channel| {
            Client::new(channel).max_decoding_message_size(MAX_MESSAGE_LEN).max_encoding_message_size(MAX_MESSAGE_LEN)
        });
        let client = client
            .map_err(|e| Error::new(ErrorCode::NodeUnavailable, format!("node {id} at {address}: {}", e.message())));
        SignerClient { id, client, held: Arc::default(), calls: Arc::default(), batcher: Arc::default() }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes one held commitment of `key` (each is handed out once), skipping stale ones.
    pub fn take_commitment(&self, key: &KeyId) -> Option<PreCommitment> {
        let mut held = self.held();
        let queue = held.commitments.get_mut(key)?;
        while let Some((issued, c)) = queue.pop_front() {
            if issued.elapsed() < HELD_TTL {
                return Some(c);
            }
        }
        None
    }

    /// Keeps commitments the node issued for `key`.
    pub fn hold_commitments(&self, key: KeyId, fresh: impl IntoIterator<Item = PreCommitment>) {
        let now = Instant::now();
        self.held().commitments.entry(key).or_default().extend(fresh.into_iter().map(|c| (now, c)));
    }

    /// How many commitments of `key` are held.
    pub fn held_commitments(&self, key: &KeyId) -> usize {
        self.held().commitments.get(key).map_or(0, VecDeque::len)
    }

    /// Forgets every commitment held for `key` (the node no longer has them: it restarted, or
    /// they expired there).
    pub fn drop_commitments(&self, key: &KeyId) {
        self.held().commitments.remove(key);
    }

    /// Queues a finished session for closing with a later request to this node.
    pub fn close_later(&self, sessions: impl IntoIterator<Item = SessionId>) {
        let mut held = self.held();
        held.closing.extend(sessions);
        while held.closing.len() > MAX_CLOSING {
            held.closing.pop_front();
        }
    }

    /// How many finished sessions are queued for closing.
    pub fn closing_queued(&self) -> usize {
        self.held().closing.len()
    }

    /// Takes up to one request's worth of queued closings.
    pub fn take_closing(&self) -> SessionIds {
        let mut held = self.held();
        let n = held.closing.len().min(SessionIds::MAX_LEN);
        let batch: Vec<SessionId> = held.closing.drain(..n).collect();
        SessionIds::new(batch).unwrap_or_else(|_| unreachable!("at most the bound"))
    }

    /// Sends every queued closing now, batched (`CloseSessions`), e.g. before a coordinator
    /// exits. Best effort: a session not closed expires in the enclave.
    pub async fn flush_closing(&self, timeout: Duration) {
        loop {
            let batch = self.take_closing();
            if batch.as_inner().is_empty() || !self.reachable() {
                return;
            }
            if self.call(CloseSessions { sessions: batch }, timeout).await.is_err() {
                return;
            }
        }
    }

    /// The participant id.
    pub fn id(&self) -> ParticipantId {
        self.id
    }

    /// One-request signing, batched with the other signings to this node in flight: sent alone
    /// when nothing else waits, else in a `SignBatch` of up to 32 (PSBT signings always alone:
    /// their PSBTs are large). The reply is this signing's own outcome.
    pub async fn sign_preprocessed(&self, m: SignPreprocessed, timeout: Duration) -> Result<PreprocessedShare, Error> {
        let psbt = matches!(&m.binding, SessionBinding::Request(r) if matches!(r.open, RequestOpen::Psbt(_)));
        if psbt || matches!(m.binding, SessionBinding::Psbt(_)) {
            return self.call(m, timeout).await;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let start = {
            let mut b = self.batcher.lock().unwrap_or_else(|p| p.into_inner());
            b.queue.push_back((m, tx));
            let start = b.in_flight < MAX_BATCHES_IN_FLIGHT;
            if start {
                b.in_flight += 1;
            }
            start
        };
        if start {
            let me = self.clone();
            tokio::spawn(async move { me.drain(timeout).await });
        }
        // Queued behind at most a batch or two already on their way.
        match tokio::time::timeout(timeout * 2, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err(Error::new(ErrorCode::Internal, "the batch was dropped")),
            Err(_) => Err(Error::new(
                ErrorCode::RequestTimeout,
                format!("node {}: no reply within {:?} (queued behind other signings)", self.id, timeout * 2),
            )),
        }
    }

    /// Sends queued signings until none is left: one alone, several as a batch.
    async fn drain(&self, timeout: Duration) {
        // Its place among the batches in flight is given back under the same lock that saw the
        // queue empty (so no signing is left queued with no drain), or, if this ends otherwise
        // (a panic, a cancellation), when the slot drops, so a later signing starts a new drain.
        let mut slot = DrainSlot { batcher: &self.batcher, held: true };
        loop {
            let mut batch: Vec<Waiting> = {
                let mut b = self.batcher.lock().unwrap_or_else(|p| p.into_inner());
                if b.queue.is_empty() {
                    b.in_flight -= 1;
                    slot.held = false;
                    return;
                }
                // Signings whose caller gave up are not sent (their closings went back to the
                // queue); a batch stays well under the frame limit.
                b.queue.retain(|(_, tx)| !tx.is_closed());
                let (mut n, mut bytes) = (0, 0);
                for (m, _) in b.queue.iter().take(frostgate_common::limits::MAX_SIGN_BATCH) {
                    bytes += m.signing_package.as_inner().len() + 512;
                    if n > 0 && bytes > MAX_BATCH_BYTES {
                        break;
                    }
                    n += 1;
                }
                if n == 0 {
                    b.in_flight -= 1;
                    slot.held = false;
                    return;
                }
                b.queue.drain(..n).collect()
            };
            if batch.len() == 1 {
                let (m, tx) = batch.remove(0);
                let _ = tx.send(self.call(m, timeout).await);
                continue;
            }
            let (items, waiters): (Vec<SignPreprocessed>, Vec<_>) = batch.into_iter().unzip();
            let sent = match SignItems::new(items) {
                Ok(items) => self.call(SignBatch { items }, timeout).await,
                Err(e) => Err(Error::new(ErrorCode::Internal, e)),
            };
            match sent {
                Ok(reply) if reply.outcomes.as_inner().len() == waiters.len() => {
                    for (outcome, tx) in reply.outcomes.into_inner().into_iter().zip(waiters) {
                        let _ = tx.send(match outcome {
                            SignOutcome::Signed(share) => Ok(share),
                            SignOutcome::Refused(e) => Err(e),
                        });
                    }
                }
                Ok(reply) => {
                    let e = Error::new(
                        ErrorCode::MalformedMessage,
                        format!("{} outcomes for {} signings", reply.outcomes.as_inner().len(), waiters.len()),
                    );
                    waiters.into_iter().for_each(|tx| drop(tx.send(Err(e.clone()))));
                }
                Err(e) => waiters.into_iter().for_each(|tx| drop(tx.send(Err(e.clone())))),
            }
        }
    }

    /// Requests sent to the node so far (by this client and its clones).
    pub fn calls(&self) -> u64 {
        self.calls.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the node was reachable when connecting.
    pub fn reachable(&self) -> bool {
        self.client.is_ok()
    }

    /// One request with a deadline: its RPC, the reply checked ([`Proto::from_pb`]).
    pub async fn call<R>(&self, request: R, timeout: Duration) -> Result<R::Reply, Error>
    where
        R: NetworkRequest,
        R::Reply: Proto,
    {
        let client = match &self.client {
            Ok(c) => c.clone(),
            Err(e) => return Err(e.clone()),
        };
        self.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = self.id;
        let call = async move {
            let reply = R::send(client, request.to_pb()).await.map_err(|s| error_from_status(id, &s))?;
            R::Reply::from_pb(reply.into_inner())
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(reply) => reply,
            Err(_) => Err(Error::new(ErrorCode::RequestTimeout, format!("node {id}: no reply within {timeout:?}"))),
        }
    }
}

/// A channel to the node at `address`: plain (loopback) without `tls`, else mutual TLS with the
/// node's pinned certificate.
pub async fn connect(address: &str, tls: Option<&TlsFiles>) -> Result<Channel, Error> {
    // tonic's transport errors say "transport error"; the cause is further down the chain.
    let unavailable = |e: &dyn std::error::Error| {
        let mut text = e.to_string();
        let mut cause = e.source();
        while let Some(c) = cause {
            text.push_str(&format!(": {c}"));
            cause = c.source();
        }
        Error::new(ErrorCode::NodeUnavailable, text)
    };
    let endpoint = Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| Error::new(ErrorCode::ConfigInvalid, format!("node address {address:?}: {e}")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    let Some(files) = tls else {
        return endpoint.connect().await.map_err(|e| unavailable(&e));
    };
    let connector = tokio_rustls::TlsConnector::from(tls::client_config(files)?);
    let address = address.to_string();
    let connect = tower::service_fn(move |_: tonic::transport::Uri| {
        let (connector, address) = (connector.clone(), address.clone());
        async move {
            let tcp = tokio::net::TcpStream::connect(&address).await?;
            tcp.set_nodelay(true)?;
            // The pinned-certificate verifier ignores names; this one only fills the handshake.
            let name = rustls::pki_types::ServerName::try_from("frostgate-node")
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            let stream = connector.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    });
    endpoint.connect_with_connector(connect).await.map_err(|e| unavailable(&e))
}

//! The host in front of one enclave: it owns the host store, streams it to the enclave at start
//! (and again whenever the enclave reports `store_not_loaded`), serves the enclave's commits, and
//! forwards boundary requests from the network API and local clients (same Unix user only).
//!
//! Self-healing: when the enclave connection ends (the enclave died or was restarted),
//! [`Host::supervise`] reconnects with backoff and reloads the store; until then requests fail
//! `channel_closed` (retry class).

use crate::node::enclave::{EnclaveClient, REQUEST_TIMEOUT};
use crate::node::store::HostStore;
use frostgate_common::channel::{refuse, Channel, Handler};
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::protocol::{BatchSigned, Message, Side, SignOutcome};
use frostgate_common::transport::{Listener, Peer};
use std::sync::Arc;
use tokio::sync::Mutex;

/// A host in front of one enclave.
#[derive(Debug)]
pub struct Host {
    enclave: std::sync::RwLock<Arc<EnclaveClient>>,
    store: Arc<HostStore>,
    reload: Mutex<()>,
    reconnects: std::sync::atomic::AtomicU64,
}

/// Longest wait between two reconnection attempts.
const MAX_BACKOFF: std::time::Duration = std::time::Duration::from_secs(5);
/// How long [`Host::load_settled`] keeps loading while the enclave answers "load again".
const LOAD_SETTLE: std::time::Duration = std::time::Duration::from_secs(30);

impl Host {
    /// Wraps a connected enclave (connected with `store` as its commit target).
    pub fn new(enclave: EnclaveClient, store: Arc<HostStore>) -> Arc<Host> {
        Arc::new(Host {
            enclave: std::sync::RwLock::new(Arc::new(enclave)),
            store,
            reload: Mutex::new(()),
            reconnects: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The current enclave connection.
    fn enclave(&self) -> Arc<EnclaveClient> {
        self.enclave.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Times the host reconnected to its enclave.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Streams the store to the enclave (one load at a time).
    pub async fn load(&self) -> Result<frostgate_common::protocol::StoreStatus, Error> {
        let _one = self.reload.lock().await;
        self.enclave().load_store(&self.store, false).await
    }

    /// [`Self::load`], again while the enclave answers "load again" (`store_not_loaded`: a commit
    /// of the previous connection still winding down, or the anchor moved during the load), for
    /// up to [`LOAD_SETTLE`]. A verdict (tampered, rolled back) is returned at once.
    pub async fn load_settled(&self) -> Result<frostgate_common::protocol::StoreStatus, Error> {
        let deadline = std::time::Instant::now() + LOAD_SETTLE;
        let mut delay = std::time::Duration::from_millis(20);
        loop {
            match self.load().await {
                Err(e) if e.code() == ErrorCode::StoreNotLoaded && std::time::Instant::now() < deadline => {
                    tracing::debug!("store load: {}; loading again", e.message());
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(std::time::Duration::from_secs(1));
                }
                other => return other,
            }
        }
    }

    /// Keeps the enclave connection alive: whenever it ends, reconnects (backoff from 100 ms to
    /// 5 s) and reloads the store. Runs until dropped.
    pub async fn supervise(self: Arc<Self>) {
        loop {
            let current = self.enclave();
            current.closed().await;
            let address = current.address().clone();
            drop(current);
            tracing::warn!(code = %ErrorCode::EnclaveUnavailable, %address, "the enclave connection ended; reconnecting");
            let mut delay = std::time::Duration::from_millis(100);
            let client = loop {
                tokio::time::sleep(delay).await;
                match EnclaveClient::connect_with_store(address.clone(), Some(self.store.clone())).await {
                    Ok(client) => break client,
                    Err(e) => {
                        tracing::debug!(code = %e.code(), "enclave not reachable yet: {}", e.message());
                        delay = (delay * 2).min(MAX_BACKOFF);
                    }
                }
            };
            *self.enclave.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(client);
            self.reconnects.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            crate::node::metrics::global().enclave_reconnected();
            match self.load_settled().await {
                Ok(s) => tracing::info!(head = s.head_version, "reconnected to the enclave; store reloaded"),
                // The enclave names the fault in its health (e.g. store_rollback_detected).
                Err(e) => tracing::error!(code = %e.code(), "reconnected, but the store load failed: {}", e.message()),
            }
        }
    }

    /// Forwards one request; reloads the store if the enclave asks for it.
    pub async fn forward(self: &Arc<Self>, m: Message) -> Message {
        let kind = m.info().name;
        let started = std::time::Instant::now();
        let result = self.enclave().channel().call(m, Some(REQUEST_TIMEOUT)).await;
        crate::node::metrics::global().observe_request(kind, started.elapsed(), &result);
        let result = match result {
            Ok(Message::HealthReply(mut h)) => {
                crate::node::metrics::global().observe_enclave(&h);
                // What only the host knows about its enclave's life.
                h.host_reconnects = self.reconnects();
                h.enclave_restarts = crate::node::metrics::global().enclave_restarts();
                Ok(Message::HealthReply(h))
            }
            other => other,
        };
        match result {
            Ok(Message::Round2Reply(mut r)) if crate::node::enclave::fault("host_corrupt_shares") => {
                // DEVELOPMENT fault injection: this node returns invalid shares.
                r.signature_share = corrupted(r.signature_share);
                Message::Round2Reply(r)
            }
            Ok(Message::PreprocessedShare(mut r)) if crate::node::enclave::fault("host_corrupt_shares") => {
                r.signature_share = corrupted(r.signature_share);
                Message::PreprocessedShare(r)
            }
            Ok(Message::BatchSigned(r)) if crate::node::enclave::fault("host_corrupt_shares") => {
                let outcomes = r.outcomes.into_inner().into_iter().map(|o| match o {
                    SignOutcome::Signed(mut share) => {
                        share.signature_share = corrupted(share.signature_share);
                        SignOutcome::Signed(share)
                    }
                    refused => refused,
                });
                match frostgate_common::protocol::SignOutcomes::new(outcomes.collect::<Vec<_>>()) {
                    Ok(outcomes) => Message::BatchSigned(BatchSigned { outcomes }),
                    Err(e) => Message::Error(Error::new(ErrorCode::Internal, e)),
                }
            }
            Ok(Message::BatchSigned(r)) => {
                // A batch's items are refused one by one: the store signals count as for a request.
                let refused = r.outcomes.as_inner().iter().filter_map(|o| match o {
                    SignOutcome::Refused(e) => Some(e.code()),
                    SignOutcome::Signed(_) => None,
                });
                if refused.into_iter().any(needs_store) {
                    self.reload_store();
                }
                Message::BatchSigned(r)
            }
            Ok(reply) => reply,
            Err(e) => {
                if needs_store(e.code()) {
                    self.reload_store();
                }
                Message::Error(e)
            }
        }
    }

    /// Streams the store to the enclave again, in the background.
    fn reload_store(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            match me.load().await {
                Ok(s) => tracing::info!(head = s.head_version, "store reloaded"),
                Err(e) => tracing::warn!(code = %e.code(), "store reload failed: {}", e.message()),
            }
        });
    }

    /// Refreshes the enclave's counters in the metrics every `every` (until dropped).
    pub async fn poll_enclave(self: Arc<Self>, every: std::time::Duration) {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if let Ok(h) = self.enclave().health().await {
                crate::node::metrics::global().observe_enclave(&h);
            }
        }
    }

    /// Serves local clients (this process's user, or root: the operator of a two-user node)
    /// until the future is dropped.
    pub async fn serve(self: Arc<Self>, listener: Listener, allowed_uid: u32) {
        loop {
            let (reader, writer, peer) = listener.next().await;
            if !matches!(peer, Peer::Unix { uid, .. } if uid == allowed_uid || uid == 0) {
                tracing::warn!(?peer, code = %ErrorCode::PeerNotAuthorized, "refusing client");
                tokio::spawn(refuse(writer, Error::new(ErrorCode::PeerNotAuthorized, "not the host's user")));
                continue;
            }
            let me = self.clone();
            let handler: Handler = Arc::new(move |m: Message| {
                let me = me.clone();
                Box::pin(async move { me.forward(m).await })
            });
            // Clients speak to the host as they would to the enclave.
            let (_channel, _done): (Channel, _) = Channel::start(Side::Enclave, reader, writer, handler);
        }
    }
}

/// DEVELOPMENT fault injection: the share with its last bit flipped.
fn corrupted(share: frostgate_common::bounded::SignatureShareBytes) -> frostgate_common::bounded::SignatureShareBytes {
    let mut bytes = share.clone().into_inner();
    if let Some(last) = bytes.last_mut() {
        *last ^= 1;
    }
    frostgate_common::bounded::SignatureShareBytes::new(bytes).unwrap_or(share)
}

/// Not loaded, or a commit this host refused (after which the enclave waits for the store again):
/// the store must be streamed.
fn needs_store(code: ErrorCode) -> bool {
    matches!(code, ErrorCode::StoreNotLoaded | ErrorCode::StoreCommitFailed)
}

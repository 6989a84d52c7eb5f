//! `frostgate host serve`: the host process in front of one enclave. It owns the host store,
//! streams it to the enclave at start (and again whenever the enclave reports
//! `store_not_loaded`), serves the enclave's commits, and forwards boundary requests from local
//! clients (same Unix user only) to the enclave. The node issue puts the network API here.

use crate::enclave::{EnclaveClient, REQUEST_TIMEOUT};
use crate::store::HostStore;
use frostgate_common::channel::{refuse, Channel, Handler};
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::protocol::{Message, Side};
use frostgate_common::transport::{Listener, Peer};
use std::sync::Arc;
use tokio::sync::Mutex;

/// A host in front of one enclave.
#[derive(Debug)]
pub struct Host {
    enclave: EnclaveClient,
    store: Arc<HostStore>,
    reload: Mutex<()>,
}

impl Host {
    /// Wraps a connected enclave (connected with `store` as its commit target).
    pub fn new(enclave: EnclaveClient, store: Arc<HostStore>) -> Arc<Host> {
        Arc::new(Host { enclave, store, reload: Mutex::new(()) })
    }

    /// Streams the store to the enclave (one load at a time).
    pub async fn load(&self) -> Result<frostgate_common::protocol::StoreStatus, Error> {
        let _one = self.reload.lock().await;
        self.enclave.load_store(&self.store, false).await
    }

    /// Forwards one request; reloads the store if the enclave asks for it.
    pub async fn forward(self: &Arc<Self>, m: Message) -> Message {
        let kind = m.info().name;
        let started = std::time::Instant::now();
        let result = self.enclave.channel().call(m, Some(REQUEST_TIMEOUT)).await;
        crate::metrics::global().observe_request(kind, started.elapsed(), &result);
        if let Ok(Message::HealthReply(h)) = &result {
            crate::metrics::global().observe_enclave(h);
        }
        match result {
            Ok(Message::Round2Reply(mut r)) if crate::enclave::fault("host_corrupt_shares") => {
                // DEVELOPMENT fault injection: this node returns invalid shares.
                let mut share = r.signature_share.clone().into_inner();
                if let Some(last) = share.last_mut() {
                    *last ^= 1;
                }
                if let Ok(s) = frostgate_common::bounded::SignatureShareBytes::new(share) {
                    r.signature_share = s;
                }
                Message::Round2Reply(r)
            }
            Ok(reply) => reply,
            Err(e) => {
                if e.code() == ErrorCode::StoreNotLoaded {
                    let me = self.clone();
                    tokio::spawn(async move {
                        match me.load().await {
                            Ok(s) => tracing::info!(head = s.head_version, "store reloaded"),
                            Err(e) => tracing::warn!(code = %e.code(), "store reload failed: {}", e.message()),
                        }
                    });
                }
                Message::Error(e)
            }
        }
    }

    /// Refreshes the enclave's counters in the metrics every `every` (until dropped).
    pub async fn poll_enclave(self: Arc<Self>, every: std::time::Duration) {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if let Ok(h) = self.enclave.health().await {
                crate::metrics::global().observe_enclave(&h);
            }
        }
    }

    /// Serves local clients until the future is dropped.
    pub async fn serve(self: Arc<Self>, listener: Listener, allowed_uid: u32) {
        loop {
            let (reader, writer, peer) = listener.next().await;
            if !matches!(peer, Peer::Unix { uid, .. } if uid == allowed_uid) {
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

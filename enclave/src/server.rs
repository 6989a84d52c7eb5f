//! Accepts host connections and serves each on its own channel.
//!
//! Invariant: a connection whose peer is not the configured host (Unix uid, or vsock CID) gets
//! one `peer_not_authorized` error frame and is closed before any request is read.

use crate::service::{Connection, Service};
use frostgate_common::channel::{refuse, Channel, Handler};
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::protocol::{Message, Side};
use frostgate_common::transport::{Listener, Peer};
use std::sync::Arc;

/// Who may connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerPolicy {
    /// The Unix uids served on a Unix socket (the host's; a development cluster adds root).
    pub allowed_uids: Vec<u32>,
    /// The only CID served on vsock, if any.
    pub allowed_cid: Option<u32>,
}

impl PeerPolicy {
    fn check(&self, peer: Peer) -> Result<(), Error> {
        match peer {
            Peer::Unix { uid, .. } if self.allowed_uids.contains(&uid) => Ok(()),
            Peer::Unix { uid, .. } => Err(Error::new(
                ErrorCode::PeerNotAuthorized,
                format!("uid {uid} is not a configured host user {:?}", self.allowed_uids),
            )),
            Peer::Vsock { cid } if Some(cid) == self.allowed_cid => Ok(()),
            Peer::Vsock { cid } => {
                Err(Error::new(ErrorCode::PeerNotAuthorized, format!("vsock cid {cid} is not the configured host")))
            }
        }
    }
}

/// Serves connections until the future is dropped.
pub async fn serve(listener: Listener, policy: PeerPolicy, service: Arc<Service>) {
    loop {
        let (reader, writer, peer) = listener.next().await;
        if let Err(e) = policy.check(peer) {
            tracing::warn!(code = %e.code(), ?peer, "refusing connection: {}", e.message());
            tokio::spawn(refuse(writer, e));
            continue;
        }
        tracing::info!(?peer, "host connected");
        let connection = Arc::new(Connection::default());
        let (channel, done) = Channel::start_with(Side::Enclave, reader, writer, |channel| {
            // Recorded before the first frame is read: a store load always finds its channel.
            let _ = connection.channel.set(channel);
            let (service, connection) = (service.clone(), connection.clone());
            let handler: Handler = Arc::new(move |m: Message| {
                let (service, connection) = (service.clone(), connection.clone());
                Box::pin(async move { service.handle_on(m, &connection).await })
            });
            handler
        });
        let service = service.clone();
        tokio::spawn(async move {
            let _ = done.await;
            if let Some(store) = service.store() {
                store.detach(&channel);
            }
            tracing::info!(?peer, "host disconnected");
        });
    }
}

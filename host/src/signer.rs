//! A connection to one signer node's host (its boundary requests are forwarded to its enclave).
//! An unreachable node is represented, not hidden: every call to it fails `enclave_unavailable`.

use frostgate_common::channel::{refuse_all, Channel};
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::ids::ParticipantId;
use frostgate_common::protocol::{Message, Side};
use std::path::Path;
use std::time::Duration;

/// One signer.
#[derive(Debug)]
pub struct SignerClient {
    id: ParticipantId,
    channel: Result<Channel, Error>,
}

impl SignerClient {
    /// Connects to a node's host socket; a failure is kept and reported on every call.
    pub async fn connect(id: ParticipantId, socket: &Path) -> SignerClient {
        let channel = match tokio::net::UnixStream::connect(socket).await {
            Ok(s) => {
                let (r, w) = s.into_split();
                Ok(Channel::start(Side::Host, Box::new(r), Box::new(w), refuse_all()).0)
            }
            Err(e) => Err(Error::new(ErrorCode::EnclaveUnavailable, format!("node {id} at {}: {e}", socket.display()))),
        };
        SignerClient { id, channel }
    }

    /// The participant id.
    pub fn id(&self) -> ParticipantId {
        self.id
    }

    /// Whether the node was reachable when connecting.
    pub fn reachable(&self) -> bool {
        self.channel.is_ok()
    }

    /// One request with a deadline.
    pub async fn call(&self, m: Message, timeout: Duration) -> Result<Message, Error> {
        match &self.channel {
            Ok(c) => c.call(m, Some(timeout)).await,
            Err(e) => Err(e.clone()),
        }
    }
}

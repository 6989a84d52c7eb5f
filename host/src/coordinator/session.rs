//! One signing session object: a cluster's nodes, one key's agreed public material, and every
//! signing made through it, with their closings.
//!
//! Invariant: what a signing leaves open on a node (a finished session, queued for closing
//! with the node's next request) is closed by [`Signing::finish`]. There is no async drop: an
//! unfinished `Signing` dropped with closings queued sends them from a background task (best
//! effort; a session not closed expires in its enclave) and logs a warning, and the type is
//! `#[must_use]`. The same holds when `finish` could not send everything.

use super::roast::{self, Evidence, KeyMaterial, Settings, SignRequest, Signed};
use super::signer::SignerClient;
use frostgate_common::error::Error;
use frostgate_common::ids::{KeyId, ParticipantId};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// How long `finish` waits for each node's closings.
const FINISH_TIMEOUT: Duration = Duration::from_secs(2);

/// Signings of one key over one cluster. End it with [`Signing::finish`].
#[must_use = "a Signing's sessions are closed by `finish().await`"]
#[derive(Debug)]
pub struct Signing {
    signer: Signer,
}

/// A handle that signs through a [`Signing`] (cheap to clone, e.g. into concurrent tasks); the
/// closings stay the `Signing`'s to finish.
#[derive(Debug, Clone)]
pub struct Signer {
    nodes: Arc<BTreeMap<ParticipantId, Arc<SignerClient>>>,
    key: Arc<KeyMaterial>,
    settings: Settings,
}

impl Signing {
    /// Fetches `key`'s public material from `nodes` (the package `threshold` of them agree on).
    pub async fn open(
        nodes: &[Arc<SignerClient>],
        key: &KeyId,
        threshold: u16,
        settings: Settings,
    ) -> Result<Signing, Error> {
        let material = KeyMaterial::fetch(nodes, key, threshold, settings).await?;
        Ok(Signing::with_material(nodes, material, settings))
    }

    /// With key material fetched beforehand.
    pub fn with_material(nodes: &[Arc<SignerClient>], key: Arc<KeyMaterial>, settings: Settings) -> Signing {
        let nodes = Arc::new(nodes.iter().map(|n| (n.id(), n.clone())).collect());
        Signing { signer: Signer { nodes, key, settings } }
    }

    /// The key's agreed public material.
    pub fn material(&self) -> &Arc<KeyMaterial> {
        &self.signer.key
    }

    /// A handle for signing from other tasks.
    pub fn signer(&self) -> Signer {
        self.signer.clone()
    }

    /// Signs `request` (see [`Signer::sign`]).
    pub async fn sign(&self, request: SignRequest) -> Result<Signed, (Error, Vec<Evidence>)> {
        self.signer.sign(request).await
    }

    /// Sends every closing still queued on the nodes (batched `CloseSessions`), and ends.
    pub async fn finish(self) {
        flush(&self.signer.nodes).await;
    }
}

impl Signer {
    /// The key's agreed public material.
    pub fn material(&self) -> &Arc<KeyMaterial> {
        &self.key
    }

    /// Runs ROAST for `request` until a signature or until fewer than the key's threshold of
    /// signers remain.
    pub async fn sign(&self, request: SignRequest) -> Result<Signed, (Error, Vec<Evidence>)> {
        roast::sign(&self.nodes, request, self.settings, &self.key).await
    }
}

async fn flush(nodes: &BTreeMap<ParticipantId, Arc<SignerClient>>) {
    let mut flushes = tokio::task::JoinSet::new();
    for c in nodes.values() {
        let c = c.clone();
        flushes.spawn(async move { c.flush_closing(FINISH_TIMEOUT).await });
    }
    while flushes.join_next().await.is_some() {}
}

impl Drop for Signing {
    fn drop(&mut self) {
        // After `finish` nothing is queued, unless a flush failed or a `Signer` clone signed since.
        if self.signer.nodes.values().all(|c| c.closing_queued() == 0) {
            return;
        }
        tracing::warn!("a signing session ended with closings queued: they go in the background");
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let nodes = self.signer.nodes.clone();
            runtime.spawn(async move { flush(&nodes).await });
        }
    }
}

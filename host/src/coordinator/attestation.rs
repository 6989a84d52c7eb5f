//! A node's attestation as the coordinator and `frostgate status` check it: a fresh challenge,
//! the document verified against the node's pins in the cluster file (PCRs, root, debug mode),
//! the attested per-boot key certified by the node's identity key.
//!
//! Invariant: once a node has pins, a node without a provider fails (no downgrade).

use super::cluster::{AttestationPins, Cluster};
use super::signer::SignerClient;
use frostgate_attest::nitro::{self, Expected};
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::protocol::{Attest, AttestationProvider, GetIdentity};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// A document older than this at the coordinator's clock is refused (a second line: the
/// challenge is what makes it fresh).
const MAX_AGE_SECS: u64 = 300;

/// What a node's attestation showed.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Attested {
    /// No provider, and none pinned.
    None,
    /// A document whose chain and bindings verify, but no pins for this node: nothing says which
    /// image made it (shown, never trusted).
    Unpinned {
        /// The provider.
        provider: &'static str,
        /// The enclave's module id.
        module_id: String,
        /// PCRs 0, 1, 2 and 8 (hex), as the document reports them.
        pcrs: BTreeMap<u8, String>,
    },
    /// Verified: the provider, its module and its measurements.
    Verified {
        /// The provider.
        provider: &'static str,
        /// The enclave's module id.
        module_id: String,
        /// PCRs 0, 1, 2 and 8 (hex), as the document reports them.
        pcrs: BTreeMap<u8, String>,
        /// Whether a debug-mode enclave made it (allowed by the pins).
        debug_mode: bool,
    },
    /// Refused: the check that failed.
    Refused {
        /// `attestation_invalid`'s check, or why nothing could be checked.
        check: String,
        /// What it found.
        detail: String,
    },
}

fn refused(check: &str, detail: impl std::fmt::Display) -> Attested {
    Attested::Refused { check: check.into(), detail: detail.to_string() }
}

/// Asks `node` to attest itself and checks the answer against `pins`.
pub async fn check(node: &SignerClient, pins: Option<&AttestationPins>, timeout: Duration) -> Attested {
    let challenge: [u8; 32] = crate::random_bytes();
    let a = match node.call(Attest { challenge }, timeout).await {
        Ok(a) => a,
        Err(e) => return refused("unavailable", e),
    };
    if a.provider == AttestationProvider::None {
        return match pins {
            Some(_) => refused("provider", "the node has no attestation provider but attestation is pinned for it"),
            None => Attested::None,
        };
    }
    let root = match pins.and_then(|p| p.root.as_ref()) {
        None => nitro::aws_root(),
        Some(path) => match nitro::read_root(path) {
            Ok(der) => der,
            Err(e) => return refused("root", e),
        },
    };
    let pcrs = match pins.map(AttestationPins::pcrs).transpose() {
        Ok(p) => p.unwrap_or_default(),
        Err(e) => return refused("pcr", e.message()),
    };
    let pinned_identity = match pins.map(AttestationPins::identity).transpose() {
        Ok(k) => k,
        Err(e) => return refused("identity", e.message()),
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let expected = Expected {
        root,
        at: now,
        pcrs,
        nonce: Some(challenge.to_vec()),
        public_key: Some(a.boot_key.as_inner().clone()),
        allow_debug: pins.is_some_and(|p| p.allow_debug),
        max_age: Some((now, MAX_AGE_SECS)),
    };
    let doc = match nitro::verify(a.document.as_inner(), &expected) {
        Ok(d) => d,
        Err(r) => return refused(r.check.name(), r.detail),
    };
    let identity = match node.call(GetIdentity, timeout).await {
        Ok(k) => k.as_inner().clone(),
        Err(e) => return refused("unavailable", e),
    };
    // The certification is checked under the pinned key: another enclave of the same image
    // (another node, relayed by a hostile host) cannot answer for this one.
    let identity = match pinned_identity {
        Some(pinned) if pinned != identity => {
            return refused("identity", "the node reports another identity key than the pinned one")
        }
        Some(pinned) => pinned,
        None => identity,
    };
    if !frostgate_attest::certification_verifies(
        &identity,
        a.boot_key.as_inner(),
        &a.certification_r,
        &a.certification_s,
    ) {
        return refused("certification", "the attested key is not certified by the node's identity key");
    }
    let shown = doc.pcrs.iter().filter(|(i, _)| [0, 1, 2, 8].contains(*i)).map(|(i, v)| (*i, hex::encode(v))).collect();
    match pins {
        None => Attested::Unpinned { provider: a.provider.name(), module_id: doc.module_id.clone(), pcrs: shown },
        Some(_) => Attested::Verified {
            provider: a.provider.name(),
            module_id: doc.module_id.clone(),
            debug_mode: doc.debug_mode(),
            pcrs: shown,
        },
    }
}

impl Attested {
    /// The error a refusal stands for.
    pub fn error(&self) -> Option<Error> {
        match self {
            Attested::Refused { check, detail } => {
                Some(Error::new(ErrorCode::AttestationInvalid, format!("attestation check {check} failed: {detail}")))
            }
            _ => None,
        }
    }
}

/// Before a ceremony (DKG, refresh, repair): every node of `nodes` that the cluster file pins
/// must attest itself; the first refusal fails it, naming the node. Nodes without pins are not
/// asked (their enclaves are not attested).
pub async fn require_pinned(cluster: &Cluster, nodes: &[Arc<SignerClient>]) -> Result<(), Error> {
    for node in nodes {
        let Some(pins) = cluster.nodes.iter().find(|e| e.id == node.id().get()).and_then(|e| e.attestation.as_ref())
        else {
            continue;
        };
        if let Some(e) = check(node, Some(pins), Duration::from_secs(10)).await.error() {
            return Err(Error::new(e.code(), format!("node {}: {}", node.id(), e.message())));
        }
    }
    Ok(())
}

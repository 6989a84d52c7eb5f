//! A node's attestation as the coordinator and `frostgate status` check it: a fresh challenge,
//! the document verified against the node's pins in the cluster file (PCRs, root, debug mode),
//! the attested per-boot key certified by the node's identity key.
//!
//! Invariant: once a node has pins, a node without a provider fails (no downgrade).

use super::cluster::{AttestationPins, Cluster};
use super::signer::SignerClient;
use frostgate_attest::nitro;
use frostgate_attest::peer::{verify_attestation, Pins};
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::protocol::{Attest, AttestationProvider, GetIdentity};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

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

/// Asks `node` to attest itself and checks the answer against `pins`
/// ([`frostgate_attest::peer::verify_attestation`]; unpinned: the AWS root, no PCRs, the
/// identity key the node reports).
pub async fn check(node: &SignerClient, pins: Option<&AttestationPins>, timeout: Duration) -> Attested {
    let challenge: [u8; 32] = crate::random_bytes();
    let a = match node.call(Attest { challenge }, timeout).await {
        Ok(a) => a,
        Err(e) => return refused("unavailable", e),
    };
    if a.provider == AttestationProvider::None && pins.is_none() {
        return Attested::None;
    }
    let identity = match node.call(GetIdentity, timeout).await {
        Ok(k) => k.as_inner().clone(),
        Err(e) => return refused("unavailable", e),
    };
    let resolved = match pins {
        None => Ok(Pins {
            identity_key: identity.clone(),
            root: nitro::aws_root(),
            pcrs: Default::default(),
            allow_debug: false,
        }),
        Some(p) => p.resolve(),
    };
    let resolved = match resolved {
        Ok(r) => r,
        Err(e) => return refused("pins", e.message()),
    };
    // The certification is checked under the pinned key, and the node must report that key:
    // another enclave of the same image (another node, relayed by a hostile host) cannot answer
    // for this one.
    if pins.is_some() && a.provider != AttestationProvider::None && resolved.identity_key != identity {
        return refused("identity", "the node reports another identity key than the pinned one");
    }
    let doc = match verify_attestation(&a, &resolved, &challenge, frostgate_attest::peer::now()) {
        Ok(d) => d,
        Err(r) => return refused(r.check.name(), r.detail),
    };
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

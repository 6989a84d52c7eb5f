//! What to sign, how, and what a finished signing is.

use super::evidence::Evidence;
use frostgate_common::bounded::{DerivationSteps, PsbtBytes};
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::ids::KeyId;
use frostgate_common::ids::SessionId;
use frostgate_common::protocol::{
    Bip340Signature, OpenDerivedSession, OpenPsbtSession, OpenSession, RequestOpen, RequestSession, RequestTag,
    SessionBinding, TaprootMode,
};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// What to sign.
#[derive(Debug, Clone)]
pub struct SignRequest {
    /// The key.
    pub key: KeyId,
    /// The 32-byte message (on the PSBT path: the sighash this coordinator computed, which every
    /// enclave must compute identically).
    pub message: [u8; 32],
    /// The Taproot mode.
    pub mode: TaprootMode,
    /// The PSBT path: the PSBT and the input, bound by each enclave itself (`OpenPsbtSession`).
    pub psbt: Option<PsbtInput>,
    /// For a child of the key: its unhardened path from the group key (empty: the key itself).
    /// Each enclave derives the child itself; on the PSBT path it comes from `tap_key_origins`.
    pub path: Vec<u32>,
    /// For a signing service request: the request, which every enclave binds to what it signs;
    /// the session id is then the request's (`frostgate_public::request::session_id`).
    pub request: Option<RequestTag>,
}

impl SignRequest {
    /// The session: the request's own, or a fresh random one.
    pub fn session(&self) -> SessionId {
        match &self.request {
            Some(tag) => frostgate_public::request::session_id(tag, &self.key, self.psbt.as_ref().map(|p| p.input)),
            None => SessionId::from_bytes(crate::random_bytes()),
        }
    }
}

/// One input of a PSBT to sign.
#[derive(Debug, Clone)]
pub struct PsbtInput {
    /// BIP174 serialization.
    pub psbt: Arc<Vec<u8>>,
    /// The input.
    pub input: u32,
}

/// A finished signing.
#[derive(Debug, Clone, Serialize)]
pub struct Signed {
    /// The BIP340 signature, hex.
    pub signature: String,
    /// The same signature (for callers that put it somewhere, e.g. a PSBT).
    #[serde(skip)]
    pub bip340: Bip340Signature,
    /// The x-only key it verifies under, hex.
    pub output_key: String,
    /// The signers whose shares make up the signature.
    pub signers: Vec<u16>,
    /// Attempts started.
    pub attempts: u32,
    /// Every excluded signer, with evidence.
    pub excluded: Vec<Evidence>,
}

/// Coordinator settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Deadline for each call to a signer.
    pub signer_timeout: Duration,
    /// Sign with preprocessed commitments (one `SignPreprocessed` per signer per attempt, the
    /// next commitments in its reply, finished sessions closed with later requests); otherwise
    /// the interactive rounds (session, attempt, round 1, round 2 per signer, then closing).
    pub preprocessed: bool,
    /// With `preprocessed`: the signings in flight to one node go in batches (`SignBatch`).
    pub batch: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { signer_timeout: Duration::from_secs(10), preprocessed: true, batch: true }
    }
}

impl Settings {
    /// The defaults with this per-call deadline.
    pub fn with_timeout(signer_timeout: Duration) -> Settings {
        Settings { signer_timeout, ..Settings::default() }
    }
}

/// Checks a request as every node's request will be built from it (derivation path, PSBT size),
/// before any node is contacted: a request that cannot be sent fails here with its own error,
/// excludes nobody and costs no node anything (no attempt, no preprocessed commitment).
pub fn validate(request: &SignRequest) -> Result<(), Error> {
    if let Some(step) = request.path.iter().find(|s| **s >= 0x8000_0000) {
        return Err(Error::new(ErrorCode::DerivationInvalid, format!("hardened step {step} (only unhardened paths)")));
    }
    binding(SessionId::from_bytes([0; 16]), request).map(drop)
}

/// How each node binds the session: the digest, or the PSBT input (whose sighash the enclave
/// computes itself; the package's message is ours, so a different sighash is refused there).
pub(super) fn binding(session: SessionId, req: &SignRequest) -> Result<SessionBinding, Error> {
    let (key, message, mode) = (req.key, req.message, req.mode);
    let open = match &req.psbt {
        None if req.path.is_empty() => RequestOpen::Digest(OpenSession { session, key, message, mode }),
        None => {
            let path =
                DerivationSteps::new(req.path.clone()).map_err(|e| Error::new(ErrorCode::DerivationInvalid, e))?;
            RequestOpen::Derived(OpenDerivedSession { session, key, path, message, mode })
        }
        Some(p) => {
            let psbt = PsbtBytes::new(p.psbt.to_vec()).map_err(|e| Error::new(ErrorCode::PsbtInvalid, e))?;
            RequestOpen::Psbt(OpenPsbtSession { session, key, input: p.input, psbt })
        }
    };
    Ok(match (&req.request, open) {
        (Some(tag), open) => SessionBinding::Request(RequestSession { tag: tag.clone(), open }),
        (None, RequestOpen::Digest(o)) => SessionBinding::Digest(o),
        (None, RequestOpen::Derived(o)) => SessionBinding::Derived(o),
        (None, RequestOpen::Psbt(o)) => SessionBinding::Psbt(o),
    })
}

//! Verification of TEE attestation documents before an enclave identity is trusted.
//!
//! Today one kind: AWS Nitro Enclaves ([`nitro`]). A document is untrusted bytes until every
//! check of [`nitro::verify`] passed; each refusal names the one check that failed
//! ([`Check`]), as the error code `attestation_invalid`.
//!
//! Invariants: the validation time is a parameter (no hidden clock; a maximum age against the
//! caller's clock is a second, optional line); the trust anchor is the pinned root, never a
//! certificate the document brings; debug-mode documents (all-zero PCRs) are refused unless
//! allowed; nothing here holds a secret.

#![forbid(unsafe_code)]

pub mod nitro;
pub mod peer;

use frostgate_common::error::{Error, ErrorCode};

/// The check an attestation document failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// It is not a COSE_Sign1 with an ES384 header and a well-formed payload.
    Encoding,
    /// Its first `cabundle` certificate is not the pinned root (or the bundle is empty).
    Root,
    /// Its certificate does not chain to the pinned root, valid at the validation time.
    Chain,
    /// The COSE signature does not verify under its certificate's key.
    Signature,
    /// A pinned PCR differs (or is absent).
    Pcr,
    /// A debug-mode enclave (all-zero PCRs) and debug mode is not allowed.
    DebugMode,
    /// Its `nonce` is not the expected one.
    Nonce,
    /// Its `public_key` is not the expected one.
    PublicKey,
    /// Older than the allowed age at the verifier's clock.
    Age,
    /// The peer answered without a provider although it is pinned (no downgrade).
    Provider,
    /// The attested per-boot key is not certified by the pinned identity key.
    Certification,
}

impl Check {
    /// The stable name, as in refusals and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Check::Encoding => "encoding",
            Check::Root => "root",
            Check::Chain => "chain",
            Check::Signature => "signature",
            Check::Pcr => "pcr",
            Check::DebugMode => "debug_mode",
            Check::Nonce => "nonce",
            Check::PublicKey => "public_key",
            Check::Age => "age",
            Check::Provider => "provider",
            Check::Certification => "certification",
        }
    }
}

/// A refused document: the check, and what it found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The check that failed.
    pub check: Check,
    /// What it found (public data only).
    pub detail: String,
}

impl Refusal {
    pub(crate) fn new(check: Check, detail: impl std::fmt::Display) -> Refusal {
        Refusal { check, detail: detail.to_string() }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "attestation check {} failed: {}", self.check.name(), self.detail)
    }
}

impl From<Refusal> for Error {
    fn from(r: Refusal) -> Error {
        Error::new(ErrorCode::AttestationInvalid, r.to_string())
    }
}

/// Whether `(r, s)` is the identity key's ECDSA P-256 signature certifying `boot_key`
/// (`frostgate_common::protocol::Attestation::certified`).
pub fn certification_verifies(identity_key: &[u8], boot_key: &[u8], r: &[u8; 32], s: &[u8; 32]) -> bool {
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(r);
    sig[32..].copy_from_slice(s);
    let message = frostgate_common::protocol::Attestation::certified(boot_key);
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, identity_key)
        .verify(&message, &sig)
        .is_ok()
}

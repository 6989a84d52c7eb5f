//! `[audit]` of `enclave.toml`: how much of the audit trail the enclave keeps, and the auditor
//! whose acknowledged export is the only way a decision that released a share leaves it.
//!
//! Invariants:
//! - A `signed` record (a share left) is never dropped to make room: when `max_signed` of them
//!   are kept, the enclave refuses to release another share (`audit_trail_full`) until the
//!   pinned auditor acknowledges an export covering them.
//! - Approvals and refusals are bounded by `max_entries` apart from signed records (oldest
//!   refusal first, then oldest approval), so a flood of requests that sign nothing can neither
//!   push signed records out nor stop signing.
//! - An acknowledgement is a BIP340 signature by the pinned auditor key over SHA-256 of
//!   [`audit_ack_preimage`] of this enclave's identity and exactly the signed records kept up to
//!   its sequence number: a host cannot forge one, have one signed over records it made up, or
//!   replay one on another node; approvals and refusals evicted meanwhile do not invalidate it.

use bitcoin::secp256k1::{schnorr, Message, Secp256k1, XOnlyPublicKey};
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::protocol::{audit_ack_preimage, AuditEntry};
use serde::Deserialize;

/// Approvals and refusals kept by default.
pub const DEFAULT_MAX_ENTRIES: usize = 4096;
/// Signed records kept by default before signing waits for an acknowledged export.
pub const DEFAULT_MAX_SIGNED: usize = 16384;

/// `[audit]` as written by the operator.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Approvals and refusals kept (oldest refusal leaves first).
    pub max_entries: Option<usize>,
    /// Signed records kept; at the bound, signing is refused until an acknowledged export.
    pub max_signed: Option<usize>,
    /// The auditor's public key (x-only secp256k1, hex) that acknowledges exports.
    pub auditor_key: Option<String>,
}

/// The audit trail's rules in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditRules {
    /// Approvals and refusals kept.
    pub max_entries: usize,
    /// Signed records kept.
    pub max_signed: usize,
    /// Who acknowledges exports (none: signed records are never dropped).
    pub auditor: Option<XOnlyPublicKey>,
}

impl Default for AuditRules {
    fn default() -> Self {
        AuditRules { max_entries: DEFAULT_MAX_ENTRIES, max_signed: DEFAULT_MAX_SIGNED, auditor: None }
    }
}

fn config_err(msg: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::ConfigInvalid, format!("audit: {msg}"))
}

impl AuditRules {
    /// Validates `[audit]`.
    pub fn from_config(c: &AuditConfig) -> Result<AuditRules, Error> {
        let max_entries = c.max_entries.unwrap_or(DEFAULT_MAX_ENTRIES);
        let max_signed = c.max_signed.unwrap_or(DEFAULT_MAX_SIGNED);
        if max_entries == 0 || max_signed == 0 {
            return Err(config_err("max_entries and max_signed must be positive"));
        }
        let auditor = c
            .auditor_key
            .as_deref()
            .map(|hex_key| {
                let bytes = hex::decode(hex_key).map_err(|_| config_err("auditor_key is not hex"))?;
                XOnlyPublicKey::from_slice(&bytes).map_err(|e| config_err(format!("auditor_key: {e}")))
            })
            .transpose()?;
        Ok(AuditRules { max_entries, max_signed, auditor })
    }

    /// Checks an acknowledgement of the records `kept` (this enclave's, in sequence order) up to
    /// `through`.
    pub fn check_ack(
        &self,
        identity: &[u8],
        through: u64,
        kept: &[AuditEntry],
        signature: &[u8; 64],
    ) -> Result<(), Error> {
        let invalid = |why: &str| Error::new(ErrorCode::AuditAckInvalid, why.to_string());
        let auditor = self.auditor.ok_or_else(|| invalid("no [audit] auditor_key is configured"))?;
        let digest = ack_digest(identity, through, kept)?;
        let signature = schnorr::Signature::from_slice(signature).map_err(|_| invalid("malformed signature"))?;
        Secp256k1::verification_only().verify_schnorr(&signature, &Message::from_digest(digest), &auditor).map_err(
            |_| invalid("the signature does not verify under the pinned auditor key over the records kept here"),
        )
    }
}

/// SHA-256 of [`audit_ack_preimage`].
pub fn ack_digest(identity: &[u8], through: u64, kept: &[AuditEntry]) -> Result<[u8; 32], Error> {
    let preimage = audit_ack_preimage(identity, through, kept)?;
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, &preimage).as_ref());
    Ok(out)
}

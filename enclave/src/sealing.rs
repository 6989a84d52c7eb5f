//! Sealed blobs: secrets that must survive a restart, encrypted with AES-256-GCM inside the HSM
//! under the key-encryption key.
//!
//! Blob format (version 1): `version (1) | iv (12, random from the token's RNG) | ciphertext | tag (16)`.
//! Associated data binds the format version, what the blob holds, the group key id, the
//! participant id and the key epoch, so a blob moved to another key, seat or epoch fails.
//!
//! Invariants: plaintext exists only in `Zeroizing` memory; every unseal failure (truncated,
//! tampered, unknown version, wrong associated data, wrong token) is `unseal_failed`, with no
//! detail that would help an attacker tell the causes apart.

use crate::custody::token::hsm_err;
use crate::custody::Custody;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::ids::{KeyId, ParticipantId};
use zeroize::Zeroizing;

/// The sealed blob format version.
pub const BLOB_VERSION: u8 = 1;
const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;
const TAG_BITS: u64 = 128;
/// Largest plaintext accepted for sealing.
pub const MAX_PLAINTEXT: usize = 64 * 1024;
const AAD_DOMAIN: &[u8] = b"frostgate/sealed-blob";

/// What a sealed blob holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SealedKind {
    /// A FROST key package (the signing share of one participant seat).
    KeyShare = 1,
}

/// Everything the associated data binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealContext {
    /// What the blob holds.
    pub kind: SealedKind,
    /// The group key.
    pub key_id: KeyId,
    /// The participant seat.
    pub participant: ParticipantId,
    /// The key epoch (incremented when shares are refreshed or re-issued).
    pub epoch: u64,
}

impl SealContext {
    /// The associated data for this context and blob version.
    pub fn aad(&self, version: u8) -> Vec<u8> {
        let mut aad = Vec::with_capacity(AAD_DOMAIN.len() + 2 + 32 + 2 + 8);
        aad.extend_from_slice(AAD_DOMAIN);
        aad.push(version);
        aad.push(self.kind as u8);
        aad.extend_from_slice(self.key_id.as_bytes());
        aad.extend_from_slice(&self.participant.get().to_be_bytes());
        aad.extend_from_slice(&self.epoch.to_be_bytes());
        aad
    }
}

/// Seals `plaintext` under the token's key-encryption key.
pub fn seal(custody: &Custody, context: &SealContext, plaintext: &[u8]) -> Result<Vec<u8>, Error> {
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(Error::new(
            ErrorCode::Internal,
            format!("plaintext of {} bytes exceeds {MAX_PLAINTEXT}", plaintext.len()),
        ));
    }
    let aad = context.aad(BLOB_VERSION);
    custody.token().with_session(|s| {
        let mut iv = [0u8; IV_LEN];
        s.generate_random_slice(&mut iv).map_err(|e| hsm_err("C_GenerateRandom", e))?;
        let params = GcmParams::new(&mut iv, &aad, TAG_BITS.into()).map_err(|e| hsm_err("GCM parameters", e))?;
        let sealed = s
            .encrypt(&Mechanism::AesGcm(params), custody.keks().sealing, plaintext)
            .map_err(|e| hsm_err("C_Encrypt(AES-GCM)", e))?;
        let mut blob = Vec::with_capacity(1 + IV_LEN + sealed.len());
        blob.push(BLOB_VERSION);
        blob.extend_from_slice(&iv);
        blob.extend_from_slice(&sealed);
        Ok(blob)
    })
}

/// Unseals a blob for `context`. Any failure is `unseal_failed`.
pub fn unseal(custody: &Custody, context: &SealContext, blob: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
    let failed = || Error::new(ErrorCode::UnsealFailed, "sealed blob did not authenticate");
    if blob.len() < 1 + IV_LEN + TAG_LEN || blob[0] != BLOB_VERSION {
        return Err(failed());
    }
    let mut iv = [0u8; IV_LEN];
    iv.copy_from_slice(&blob[1..1 + IV_LEN]);
    let aad = context.aad(blob[0]);
    // During an incomplete key-encryption-key rotation a blob may be sealed under either key;
    // AES-GCM's tag tells which (a wrong key never authenticates).
    let keks = custody.keks();
    let mut result = Err(failed());
    for kek in keks.all() {
        result = custody.token().with_session(|s| {
            let params = GcmParams::new(&mut iv, &aad, TAG_BITS.into()).map_err(|_| failed())?;
            s.decrypt(&Mechanism::AesGcm(params), kek, &blob[1 + IV_LEN..]).map(Zeroizing::new).map_err(|e| {
                // SoftHSM reports a bad tag as CKR_GENERAL_ERROR; every failure here means the same.
                tracing::debug!(error = %e, "unseal failed");
                failed()
            })
        });
        if result.is_ok() {
            break;
        }
    }
    result
}

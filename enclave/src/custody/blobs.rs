//! Sealed blobs: secrets that must survive a restart, encrypted inside the HSM under the
//! key-encryption key. The version byte is the custody profile's ([`Profile::blob_version`]):
//! - 1 (`full`): `1 | iv (12) | AES-256-GCM ciphertext | tag (16)`, the associated data below.
//! - 2 (`cbc_hmac`), 3 (`aes_only`): encrypt-then-MAC, `v | kek id (8) | iv (16) | AES-256-CBC
//!   ciphertext of the PKCS#7-padded plaintext | tag (32)` with `tag = HMAC-SHA256(tag key, associated data | kek id | iv |
//!   ciphertext)`; the tag is checked (constant time) before the token is asked to decrypt.
//!
//! The associated data binds the version (so the profile), what the blob holds, the group key
//! id, the participant id and the key epoch, so a blob moved to another key, seat, epoch or
//! profile fails. IVs come from the token's RNG.
//!
//! Invariants: plaintext exists only in `Zeroizing` memory; every unseal failure (truncated,
//! tampered, another profile's version, wrong associated data, wrong token) is `unseal_failed`,
//! with no detail that would help an attacker tell the causes apart.

use super::objects::Kek;
use super::profile::{Profile, Rules};
use super::token::hsm_err;
use super::vault::Vault;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::ids::{KeyId, ParticipantId};
use zeroize::Zeroizing;

const IV_LEN: usize = 12;
const CBC_IV_LEN: usize = 16;
const KEK_ID_LEN: usize = 8;
const MAC_LEN: usize = 32;
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
    /// The enclave's identity private key (profiles whose token cannot hold it).
    IdentityKey = 2,
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

fn failed() -> Error {
    Error::new(ErrorCode::UnsealFailed, "sealed blob did not authenticate")
}

/// Seals `plaintext` under the sealing key-encryption key, in the custody profile's format.
pub fn seal(vault: &Vault, context: &SealContext, plaintext: &[u8]) -> Result<Vec<u8>, Error> {
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(Error::new(
            ErrorCode::Internal,
            format!("plaintext of {} bytes exceeds {MAX_PLAINTEXT}", plaintext.len()),
        ));
    }
    let version = vault.profile().blob_version();
    let aad = context.aad(version);
    let kek = vault.keks().sealing;
    if vault.profile() == Profile::Full {
        return vault.token().with_session(|s| {
            let mut iv = [0u8; IV_LEN];
            s.generate_random_slice(&mut iv).map_err(|e| hsm_err("C_GenerateRandom", e))?;
            let params = GcmParams::new(&mut iv, &aad, TAG_BITS.into()).map_err(|e| hsm_err("GCM parameters", e))?;
            let sealed = s
                .encrypt(&Mechanism::AesGcm(params), kek.handle, plaintext)
                .map_err(|e| hsm_err("C_Encrypt(AES-GCM)", e))?;
            let mut blob = Vec::with_capacity(1 + IV_LEN + sealed.len());
            blob.push(version);
            blob.extend_from_slice(&iv);
            blob.extend_from_slice(&sealed);
            Ok(blob)
        });
    }
    let tag_key = vault.tag_key().ok_or_else(|| Error::new(ErrorCode::Internal, "no tag key"))?;
    let (iv, ct) = cbc_encrypt(vault, kek, plaintext)?;
    let mut blob = Vec::with_capacity(1 + KEK_ID_LEN + CBC_IV_LEN + ct.len() + MAC_LEN);
    blob.push(version);
    blob.extend_from_slice(&kek.id);
    blob.extend_from_slice(&iv);
    blob.extend_from_slice(&ct);
    let tag = etm_tag(tag_key, &aad, &blob[1..]);
    blob.extend_from_slice(tag.as_ref());
    Ok(blob)
}

/// Unseals a blob for `context`. Any failure is `unseal_failed`.
pub fn unseal(vault: &Vault, context: &SealContext, blob: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
    let version = vault.profile().blob_version();
    if blob.first() != Some(&version) {
        return Err(failed());
    }
    let aad = context.aad(version);
    let keks = vault.keks();
    if vault.profile() == Profile::Full {
        if blob.len() < 1 + IV_LEN + TAG_LEN {
            return Err(failed());
        }
        let mut iv = [0u8; IV_LEN];
        iv.copy_from_slice(&blob[1..1 + IV_LEN]);
        // During an incomplete key-encryption-key rotation a blob may be sealed under either key;
        // AES-GCM's tag tells which (a wrong key never authenticates).
        let mut result = Err(failed());
        for kek in keks.all() {
            result = vault.token().with_session(|s| {
                let params = GcmParams::new(&mut iv, &aad, TAG_BITS.into()).map_err(|_| failed())?;
                s.decrypt(&Mechanism::AesGcm(params), kek.handle, &blob[1 + IV_LEN..]).map(Zeroizing::new).map_err(
                    |e| {
                        // SoftHSM reports a bad tag as CKR_GENERAL_ERROR; every failure here means the same.
                        tracing::debug!(error = %e, "unseal failed");
                        failed()
                    },
                )
            });
            if result.is_ok() {
                break;
            }
        }
        return result;
    }
    let body_len = blob.len().checked_sub(1 + KEK_ID_LEN + CBC_IV_LEN + MAC_LEN).ok_or_else(failed)?;
    if body_len == 0 || !body_len.is_multiple_of(CBC_IV_LEN) {
        return Err(failed());
    }
    let tag_key = vault.tag_key().ok_or_else(failed)?;
    let (body, tag) = blob.split_at(blob.len() - MAC_LEN);
    etm_verify(tag_key, &aad, &body[1..], tag)?;
    let kek_id = &body[1..1 + KEK_ID_LEN];
    let kek = keks.all().find(|k| k.id == kek_id).ok_or_else(failed)?;
    let iv = &body[1 + KEK_ID_LEN..1 + KEK_ID_LEN + CBC_IV_LEN];
    cbc_decrypt(vault, kek, iv, &body[1 + KEK_ID_LEN + CBC_IV_LEN..])
}

fn etm_key(tag_key: &[u8; 32]) -> ring::hmac::Key {
    ring::hmac::Key::new(ring::hmac::HMAC_SHA256, tag_key)
}

fn etm_tag(tag_key: &[u8; 32], aad: &[u8], header_iv_ct: &[u8]) -> ring::hmac::Tag {
    let mut ctx = ring::hmac::Context::with_key(&etm_key(tag_key));
    ctx.update(aad);
    ctx.update(header_iv_ct);
    ctx.sign()
}

fn etm_verify(tag_key: &[u8; 32], aad: &[u8], header_iv_ct: &[u8], tag: &[u8]) -> Result<(), Error> {
    let mut msg = Vec::with_capacity(aad.len() + header_iv_ct.len());
    msg.extend_from_slice(aad);
    msg.extend_from_slice(header_iv_ct);
    // Constant time (ring): no timing tells how much of a forged tag was right.
    ring::hmac::verify(&etm_key(tag_key), &msg, tag).map_err(|_| failed())
}

/// AES-256-CBC inside the token under `kek`, with a fresh IV from the token's RNG. The PKCS#7
/// padding is added here (tpm2-pkcs11's `CKM_AES_CBC_PAD` decrypt fails on its own length query),
/// so the token only ever sees whole blocks.
pub(crate) fn cbc_encrypt(vault: &Vault, kek: Kek, plaintext: &[u8]) -> Result<([u8; CBC_IV_LEN], Vec<u8>), Error> {
    let pad = CBC_IV_LEN - plaintext.len() % CBC_IV_LEN;
    let mut padded = Zeroizing::new(Vec::with_capacity(plaintext.len() + pad));
    padded.extend_from_slice(plaintext);
    padded.resize(plaintext.len() + pad, pad as u8);
    vault.token().with_session(|s| {
        let mut iv = [0u8; CBC_IV_LEN];
        s.generate_random_slice(&mut iv).map_err(|e| hsm_err("C_GenerateRandom", e))?;
        let ct =
            s.encrypt(&Mechanism::AesCbc(iv), kek.handle, &padded).map_err(|e| hsm_err("C_Encrypt(AES-CBC)", e))?;
        Ok((iv, ct))
    })
}

/// AES-256-CBC decryption inside the token, then the PKCS#7 padding removed; any failure is
/// `unseal_failed`. Callers authenticate the ciphertext first.
pub(crate) fn cbc_decrypt(vault: &Vault, kek: Kek, iv: &[u8], ct: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
    let iv: [u8; CBC_IV_LEN] = iv.try_into().map_err(|_| failed())?;
    if ct.is_empty() || !ct.len().is_multiple_of(CBC_IV_LEN) {
        return Err(failed());
    }
    let mut plain = vault.token().with_session(|s| {
        s.decrypt(&Mechanism::AesCbc(iv), kek.handle, ct).map(Zeroizing::new).map_err(|e| {
            tracing::debug!(error = %e, "unseal failed");
            failed()
        })
    })?;
    let pad = usize::from(*plain.last().ok_or_else(failed)?);
    if pad == 0
        || pad > CBC_IV_LEN
        || pad > plain.len()
        || !plain[plain.len() - pad..].iter().all(|&b| usize::from(b) == pad)
    {
        return Err(failed());
    }
    let len = plain.len() - pad;
    plain.truncate(len);
    Ok(plain)
}

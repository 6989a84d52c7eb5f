//! Enclave-to-enclave cryptography with the HSM identity key (P-256):
//! - pairwise keys: ECDH (`CKM_ECDH1_DERIVE`, inside the HSM) into a non-extractable generic
//!   secret, then HMAC-SHA256 (inside the HSM) over a context label; only the 32-byte output
//!   leaves the HSM, into wiped memory. Static-static ECDH authenticates both ends: only the
//!   sender and the recipient can compute the key.
//! - transcript signatures: ECDSA P-256 over SHA-256 inside the HSM; verified in software (ring).

use super::token::hsm_err;
use super::Custody;
use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use frostgate_common::error::{Error, ErrorCode};
use zeroize::Zeroizing;

/// Length of an uncompressed SEC1 P-256 point.
pub const IDENTITY_KEY_LEN: usize = 65;

/// Whether `key` looks like an uncompressed P-256 point (full validation happens in the HSM
/// and in ring when it is used).
pub fn well_formed(key: &[u8]) -> bool {
    key.len() == IDENTITY_KEY_LEN && key[0] == 0x04
}

impl Custody {
    /// A 32-byte key shared with the holder of `peer` (an identity public key), bound to
    /// `context`. Both ends compute the same value; nobody else can.
    pub fn identity_shared_key(&self, peer: &[u8], context: &[u8]) -> Result<Zeroizing<[u8; 32]>, Error> {
        if !well_formed(peer) {
            return Err(Error::new(
                ErrorCode::DkgConfigInvalid,
                "peer identity key is not an uncompressed P-256 point",
            ));
        }
        self.token().with_session(|s| {
            let params = Ecdh1DeriveParams::new(EcKdf::null(), peer);
            let template = [
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::GENERIC_SECRET),
                Attribute::ValueLen(32.into()),
                Attribute::Token(false),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Sign(true),
                Attribute::Verify(false),
                Attribute::Derive(false),
            ];
            let z = s
                .derive_key(&Mechanism::Ecdh1Derive(params), self.objects().identity_private, &template)
                .map_err(|e| hsm_err("C_DeriveKey(ECDH1)", e))?;
            let out = s.sign(&Mechanism::Sha256Hmac, z, context).map(Zeroizing::new);
            let _ = s.destroy_object(z);
            let out = out.map_err(|e| hsm_err("C_Sign(SHA256_HMAC)", e))?;
            let mut key = Zeroizing::new([0u8; 32]);
            if out.len() != 32 {
                return Err(Error::new(ErrorCode::HsmOperationFailed, "HMAC output is not 32 bytes"));
            }
            key.copy_from_slice(&out);
            Ok(key)
        })
    }

    /// ECDSA P-256 / SHA-256 signature (r, s) by the identity key over `message`.
    pub fn identity_sign(&self, message: &[u8]) -> Result<([u8; 32], [u8; 32]), Error> {
        let digest = ring::digest::digest(&ring::digest::SHA256, message);
        self.token().with_session(|s| {
            let sig = s
                .sign(&Mechanism::Ecdsa, self.objects().identity_private, digest.as_ref())
                .map_err(|e| hsm_err("C_Sign(ECDSA)", e))?;
            match (sig.get(..32), sig.get(32..64), sig.len()) {
                (Some(r), Some(s), 64) => {
                    let (mut rr, mut ss) = ([0u8; 32], [0u8; 32]);
                    rr.copy_from_slice(r);
                    ss.copy_from_slice(s);
                    Ok((rr, ss))
                }
                _ => Err(Error::new(ErrorCode::HsmOperationFailed, "ECDSA signature is not 64 bytes")),
            }
        })
    }
}

/// Verifies an identity signature (ECDSA P-256 / SHA-256) in software.
pub fn verify_identity_signature(public: &[u8], message: &[u8], r: &[u8; 32], s: &[u8; 32]) -> bool {
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(r);
    sig[32..].copy_from_slice(s);
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, public)
        .verify(message, &sig)
        .is_ok()
}

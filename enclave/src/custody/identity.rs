//! Enclave-to-enclave cryptography with the identity key (P-256), one of two kinds by profile:
//! - in the token (`full`): pairwise keys by ECDH (`CKM_ECDH1_DERIVE`) into a non-extractable
//!   generic secret, then HMAC-SHA256 over a context label, both inside the HSM; only the 32-byte
//!   output leaves it, into wiped memory. Signatures: ECDSA P-256 over SHA-256 inside the HSM.
//! - sealed (`cbc_hmac`, `aes_only`: the token has no P-256 or no ECDH): generated in the enclave,
//!   sealed like a share in the record `<prefix>-identity-sealed`, used in software (RustCrypto
//!   `p256`) from wiped memory.
//!
//! Both compute the same things (the ECDH x-coordinate, then HMAC-SHA256 over the context), so
//! enclaves of different profiles share pairwise keys. Static-static ECDH authenticates both ends:
//! only the sender and the recipient can compute the key. Verification is in software (ring).

use super::blobs::{seal as seal_in, unseal as unseal_in, SealContext, SealedKind};
use super::objects::Objects;
use super::records::{self, Record};
use super::token::hsm_err;
use super::vault::Vault;
use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::ids::{KeyId, ParticipantId};
use zeroize::Zeroizing;

/// Length of an uncompressed SEC1 P-256 point.
pub const IDENTITY_KEY_LEN: usize = 65;

/// Whether `key` looks like an uncompressed P-256 point (full validation happens in the HSM
/// and in ring when it is used).
pub fn well_formed(key: &[u8]) -> bool {
    key.len() == IDENTITY_KEY_LEN && key[0] == 0x04
}

/// The identity private key, by profile.
pub enum Identity {
    /// In the token.
    Token {
        /// The private key object.
        private: cryptoki::object::ObjectHandle,
        /// The public key (uncompressed SEC1).
        public_key: Vec<u8>,
    },
    /// Sealed on the token, in enclave memory after boot.
    Sealed {
        /// The private key (zeroized on drop by `p256`).
        secret: p256::SecretKey,
        /// The public key (uncompressed SEC1).
        public_key: Vec<u8>,
    },
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, key) = match self {
            Identity::Token { public_key, .. } => ("token", public_key),
            Identity::Sealed { public_key, .. } => ("sealed", public_key),
        };
        f.debug_struct("Identity").field("kind", &kind).field("public_key", &hex::encode(key)).finish_non_exhaustive()
    }
}

/// What the sealed identity's blob is bound to.
fn sealed_context() -> Result<SealContext, Error> {
    Ok(SealContext {
        kind: SealedKind::IdentityKey,
        key_id: KeyId::from_bytes([0; 32]),
        participant: ParticipantId::new(1).map_err(|e| Error::new(ErrorCode::Internal, e))?,
        epoch: 0,
    })
}

fn uncompressed(secret: &p256::SecretKey) -> Vec<u8> {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    secret.public_key().to_encoded_point(false).as_bytes().to_vec()
}

impl Identity {
    /// Boot: the token's key pair, or the sealed key from whichever record a present
    /// key-encryption key opens.
    pub(crate) fn load(vault: &Vault, objects: &Objects, prefix: &str) -> Result<Identity, Error> {
        if let Some((private, public)) = objects.identity {
            let public_key = vault.token().with_session(|s| super::objects::identity_public_key(s, public))?;
            return Ok(Identity::Token { private, public_key });
        }
        let found = vault.token().with_session(|s| records::read(s, prefix, Record::SealedIdentity))?;
        if found.is_empty() {
            return Err(Error::new(
                ErrorCode::HsmObjectMissing,
                format!("{} is not on the token", Record::SealedIdentity.label(prefix)),
            ));
        }
        let context = sealed_context()?;
        let mut last = Error::new(ErrorCode::UnsealFailed, "no sealed identity");
        for (_, blob) in &found {
            match unseal_in(vault, &context, blob).and_then(|plain| {
                p256::SecretKey::from_slice(&plain)
                    .map_err(|_| Error::new(ErrorCode::UnsealFailed, "the sealed identity is not a P-256 key"))
            }) {
                Ok(secret) => {
                    let public_key = uncompressed(&secret);
                    return Ok(Identity::Sealed { secret, public_key });
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The public key (uncompressed SEC1 P-256 point).
    pub fn public_key(&self) -> &[u8] {
        match self {
            Identity::Token { public_key, .. } | Identity::Sealed { public_key, .. } => public_key,
        }
    }
}

/// Whether `blob` is a sealed identity that opens under a present key-encryption key.
pub(crate) fn opens(vault: &Vault, blob: &[u8]) -> bool {
    sealed_context().and_then(|c| unseal_in(vault, &c, blob)).is_ok()
}

/// `token init`: a new identity key generated in the enclave, sealed as a record.
pub(crate) fn create_sealed(vault: &Vault, prefix: &str) -> Result<(), Error> {
    let secret = p256::SecretKey::random(&mut rand_core::OsRng);
    seal_record(vault, prefix, &secret)
}

fn seal_record(vault: &Vault, prefix: &str, secret: &p256::SecretKey) -> Result<(), Error> {
    let bytes = zeroize::Zeroizing::new(secret.to_bytes());
    let blob = seal_in(vault, &sealed_context()?, &bytes)?;
    vault.token().with_session(|s| records::create(s, prefix, Record::SealedIdentity, blob)).map(|_| ())
}

impl Identity {
    /// KEK rotation: seals the identity (if sealed at all) under the new sealing key too.
    pub(crate) fn reseal(&self, vault: &Vault, prefix: &str) -> Result<(), Error> {
        match self {
            Identity::Sealed { secret, .. } => seal_record(vault, prefix, secret),
            Identity::Token { .. } => Ok(()),
        }
    }

    /// A 32-byte key shared with the holder of `peer` (an identity public key), bound to
    /// `context`. Both ends compute the same value; nobody else can.
    pub fn shared_key(&self, vault: &Vault, peer: &[u8], context: &[u8]) -> Result<Zeroizing<[u8; 32]>, Error> {
        if !well_formed(peer) {
            return Err(Error::new(
                ErrorCode::DkgConfigInvalid,
                "peer identity key is not an uncompressed P-256 point",
            ));
        }
        let private = match self {
            Identity::Token { private, .. } => *private,
            Identity::Sealed { secret, .. } => return software_shared_key(secret, peer, context),
        };
        vault.token().with_session(|s| {
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
                .derive_key(&Mechanism::Ecdh1Derive(params), private, &template)
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
    pub fn sign(&self, vault: &Vault, message: &[u8]) -> Result<([u8; 32], [u8; 32]), Error> {
        let private = match self {
            Identity::Token { private, .. } => *private,
            Identity::Sealed { secret, .. } => {
                use p256::ecdsa::signature::Signer;
                let signature: p256::ecdsa::Signature = p256::ecdsa::SigningKey::from(secret).sign(message);
                let (r, s) = signature.split_bytes();
                return Ok((r.into(), s.into()));
            }
        };
        let digest = ring::digest::digest(&ring::digest::SHA256, message);
        vault.token().with_session(|s| {
            let sig = s.sign(&Mechanism::Ecdsa, private, digest.as_ref()).map_err(|e| hsm_err("C_Sign(ECDSA)", e))?;
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

/// ECDH in software: the shared point's x-coordinate (what `CKM_ECDH1_DERIVE` with a null KDF
/// yields), then HMAC-SHA256 over `context` under it.
fn software_shared_key(secret: &p256::SecretKey, peer: &[u8], context: &[u8]) -> Result<Zeroizing<[u8; 32]>, Error> {
    let peer = p256::PublicKey::from_sec1_bytes(peer)
        .map_err(|_| Error::new(ErrorCode::DkgConfigInvalid, "peer identity key is not a P-256 point"))?;
    let shared = p256::ecdh::diffie_hellman(secret.to_nonzero_scalar(), peer.as_affine());
    let z = Zeroizing::new(<[u8; 32]>::from(*shared.raw_secret_bytes()));
    let tag = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &z[..]), context);
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(tag.as_ref());
    Ok(key)
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

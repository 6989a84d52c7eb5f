//! The sealing view of custody: the logged-in token, the profile in force, the key-encryption
//! keys, and the secrets the profile keeps in enclave memory (root, blob tag key).
//!
//! Invariant: the memory secrets are wiped on drop and never printed (`Debug` redacts them).

use super::objects::Kek;
use super::profile::Profile;
use super::token::{self, Token};
use frostgate_common::error::{Error, ErrorCode};
use zeroize::Zeroizing;

/// What sealing needs: the token, the profile, the key-encryption keys and (profiles without
/// AES-GCM) the blob tag key.
#[derive(Debug)]
pub struct Vault {
    pub(crate) token: Token,
    pub(crate) profile: Profile,
    /// The key-encryption keys: the one that seals, and the other one of an incomplete rotation
    /// (blobs may be sealed under either; unsealing picks by the blob's key id or GCM's tag).
    pub(crate) keks: std::sync::RwLock<Keks>,
    pub(crate) memory: Memory,
}

/// Secrets a profile keeps in enclave memory (wiped on drop; never printed).
#[derive(Default)]
pub(crate) struct Memory {
    /// `aes_only`: the root, unsealed at boot.
    pub(crate) root: Option<Zeroizing<[u8; 32]>>,
    /// `cbc_hmac`, `aes_only`: the key of the blobs' encrypt-then-MAC tag.
    pub(crate) tag_key: Option<Zeroizing<[u8; 32]>>,
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memory")
            .field("root", &self.root.as_ref().map(|_| "<redacted>"))
            .field("tag_key", &self.tag_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The key-encryption keys in use.
#[derive(Debug, Clone, Copy)]
pub struct Keks {
    /// Seals new blobs.
    pub sealing: Kek,
    /// During an incomplete rotation, the other one.
    pub other: Option<Kek>,
}

impl Keks {
    /// Every key-encryption key, the sealing one first.
    pub fn all(&self) -> impl Iterator<Item = Kek> {
        std::iter::once(self.sealing).chain(self.other)
    }
}

/// HMAC label of the store-sealing key.
pub(crate) const STORE_KEY_LABEL: &[u8] = b"frostgate/store-sealing-key/v1";
/// HMAC label of the blob tag key.
pub(crate) const TAG_KEY_LABEL: &[u8] = b"frostgate/blob-tag-key/v1";

impl Vault {
    /// The token.
    pub fn token(&self) -> &Token {
        &self.token
    }

    /// The profile in force.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// The key-encryption keys in use.
    pub fn keks(&self) -> Keks {
        *self.keks.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The blob tag key (`cbc_hmac`, `aes_only`).
    pub(crate) fn tag_key(&self) -> Option<&[u8; 32]> {
        self.memory.tag_key.as_deref()
    }

    /// HMAC-SHA256 under the profile's root: in the token (`full`, `cbc_hmac`: the MAC root never
    /// leaves it) or in enclave memory (`aes_only`). The result lives in wiped memory.
    pub(crate) fn root_hmac(
        &self,
        mac_root: Option<cryptoki::object::ObjectHandle>,
        label: &[u8],
    ) -> Result<Zeroizing<[u8; 32]>, Error> {
        let mut key = Zeroizing::new([0u8; 32]);
        if let Some(root) = &self.memory.root {
            let tag = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &root[..]), label);
            key.copy_from_slice(tag.as_ref());
            return Ok(key);
        }
        let mac_root = mac_root.ok_or_else(|| Error::new(ErrorCode::Internal, "no MAC root under this profile"))?;
        self.token.with_session(|s| {
            use cryptoki::mechanism::Mechanism;
            let out = Zeroizing::new(
                s.sign(&Mechanism::Sha256Hmac, mac_root, label)
                    .map_err(|e| token::hsm_err("C_Sign(SHA256_HMAC)", e))?,
            );
            if out.len() != 32 {
                return Err(Error::new(ErrorCode::HsmOperationFailed, "HMAC output is not 32 bytes"));
            }
            key.copy_from_slice(&out);
            Ok(key)
        })
    }
}

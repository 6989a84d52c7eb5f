//! Key custody in the HSM, through PKCS#11.
//!
//! Invariants: key material this enclave relies on (key-encryption key, MAC root, identity
//! private key) is generated on the token and never leaves it; the enclave refuses to start
//! unless every object is present, unique and within its role's policy ([`objects::load`]).

pub mod config;
pub mod identity;
pub mod objects;
pub mod token;

use config::CustodyConfig;
use cryptoki::object::ObjectHandle;
use frostgate_common::error::Error;
use objects::{Labels, ObjectReport, Objects};
use token::Token;

/// A logged-in token whose objects passed the boot self-check.
#[derive(Debug)]
pub struct Custody {
    token: Token,
    objects: Objects,
    /// The key-encryption keys: the one that seals, and the other one of an incomplete rotation
    /// (blobs may be sealed under either; unsealing tries both).
    keks: std::sync::RwLock<Keks>,
    identity_public_key: Vec<u8>,
    label_prefix: String,
}

/// The key-encryption keys in use.
#[derive(Debug, Clone, Copy)]
pub struct Keks {
    /// Seals new blobs.
    pub sealing: ObjectHandle,
    /// During an incomplete rotation, the other one.
    pub other: Option<ObjectHandle>,
}

impl Keks {
    /// Every key-encryption key, the sealing one first.
    pub fn all(&self) -> impl Iterator<Item = ObjectHandle> {
        std::iter::once(self.sealing).chain(self.other)
    }
}

impl Custody {
    /// Boot: opens the token and checks every object. Fails closed with a typed error.
    pub fn open(config: &CustodyConfig) -> Result<Custody, Error> {
        let token = Token::open(config)?;
        let labels = Labels::new(&config.object_label_prefix);
        let loaded = token.with_session(|s| {
            let objects = objects::load(s, &labels)?;
            let key = objects::identity_public_key(s, &objects)?;
            Ok((objects, key))
        });
        match loaded {
            Ok((objects, identity_public_key)) => {
                if objects.kek_other.is_some() {
                    tracing::warn!(
                        "two key-encryption keys: a rotation is incomplete; run `frostgate token rotate-kek`"
                    );
                }
                Ok(Custody::new(token, objects, identity_public_key, &config.object_label_prefix))
            }
            Err(e) => {
                token.close();
                Err(e)
            }
        }
    }

    fn new(token: Token, objects: Objects, identity_public_key: Vec<u8>, prefix: &str) -> Custody {
        let keks = std::sync::RwLock::new(Keks { sealing: objects.kek, other: objects.kek_other });
        Custody { token, objects, keks, identity_public_key, label_prefix: prefix.to_string() }
    }

    /// `token init`: creates the objects (refusing if any exists), then runs `then` on the new
    /// custody (the store anchor at the empty head: `crate::store::anchor::init_token`). Returns
    /// the new identity public key.
    pub fn init_then(
        config: &CustodyConfig,
        then: impl FnOnce(&Custody) -> Result<(), Error>,
    ) -> Result<Vec<u8>, Error> {
        let token = Token::open(config)?;
        let labels = Labels::new(&config.object_label_prefix);
        let created = token.with_session(|s| {
            let objects = objects::init(s, &labels)?;
            let key = objects::identity_public_key(s, &objects)?;
            Ok((objects, key))
        });
        let (objects, identity_public_key) = match created {
            Ok(x) => x,
            Err(e) => {
                token.close();
                return Err(e);
            }
        };
        let custody = Custody::new(token, objects, identity_public_key, &config.object_label_prefix);
        let anchored = then(&custody);
        let key = custody.identity_public_key.clone();
        custody.close();
        anchored.map(|()| key)
    }

    /// `token inspect`: a report on every object, violations included; never fails on a weak
    /// object (the caller decides), only on an unusable token.
    pub fn inspect(config: &CustodyConfig) -> Result<Vec<ObjectReport>, Error> {
        let token = Token::open(config)?;
        let labels = Labels::new(&config.object_label_prefix);
        let result = token.with_session(|s| objects::inspect(s, &labels));
        token.close();
        result
    }

    /// The token.
    pub fn token(&self) -> &Token {
        &self.token
    }

    /// The checked object handles.
    pub fn objects(&self) -> &Objects {
        &self.objects
    }

    /// The key-encryption keys in use.
    pub fn keks(&self) -> Keks {
        *self.keks.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a rotation was begun and not finished (two key-encryption keys on the token).
    pub fn kek_rotation_in_progress(&self) -> bool {
        self.keks.read().unwrap_or_else(|p| p.into_inner()).other.is_some()
    }

    /// Rotation, step 1: unless a rotation is already incomplete, generates a new key-encryption
    /// key on the token and makes it the sealing one (the old one stays, for unsealing). Returns
    /// whether a key was created.
    pub fn begin_kek_rotation(&self) -> Result<bool, Error> {
        let mut keks = self.keks.write().unwrap_or_else(|p| p.into_inner());
        if keks.other.is_some() {
            return Ok(false);
        }
        let labels = Labels::new(&self.label_prefix);
        let new = self.token.with_session(|s| objects::create_kek(s, &labels, keks.sealing))?;
        *keks = Keks { sealing: new, other: Some(keks.sealing) };
        Ok(true)
    }

    /// Rotation, last step: destroys the other key-encryption key. Call only once every blob the
    /// enclave relies on is sealed under the sealing key, durable and anchored.
    pub fn finish_kek_rotation(&self) -> Result<(), Error> {
        let mut keks = self.keks.write().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = keks.other {
            self.token.with_session(|s| s.destroy_object(old).map_err(|e| token::hsm_err("C_DestroyObject", e)))?;
            keks.other = None;
        }
        Ok(())
    }

    /// The prefix of this enclave's object labels.
    pub fn label_prefix(&self) -> &str {
        &self.label_prefix
    }

    /// Derives the store-sealing key: HMAC-SHA256 computed inside the HSM with the MAC root key
    /// over a fixed label. The root never leaves the HSM; the result lives in wiped memory.
    pub fn derive_store_key(&self) -> Result<zeroize::Zeroizing<[u8; 32]>, Error> {
        use cryptoki::mechanism::Mechanism;
        self.token.with_session(|s| {
            let out = zeroize::Zeroizing::new(
                s.sign(&Mechanism::Sha256Hmac, self.objects.mac_root, b"frostgate/store-sealing-key/v1")
                    .map_err(|e| token::hsm_err("C_Sign(SHA256_HMAC)", e))?,
            );
            let mut key = zeroize::Zeroizing::new([0u8; 32]);
            if out.len() != 32 {
                return Err(Error::new(frostgate_common::ErrorCode::HsmOperationFailed, "HMAC output is not 32 bytes"));
            }
            key.copy_from_slice(&out);
            Ok(key)
        })
    }

    /// The identity public key (uncompressed SEC1 P-256 point).
    pub fn identity_public_key(&self) -> &[u8] {
        &self.identity_public_key
    }

    /// Closes the token's sessions (logging this application out).
    pub fn close(self) {
        self.token.close();
    }
}

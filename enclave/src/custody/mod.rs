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
use frostgate_common::error::Error;
use objects::{Labels, ObjectReport, Objects};
use token::Token;

/// A logged-in token whose objects passed the boot self-check.
#[derive(Debug)]
pub struct Custody {
    token: Token,
    objects: Objects,
    identity_public_key: Vec<u8>,
    label_prefix: String,
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
                Ok(Custody { token, objects, identity_public_key, label_prefix: config.object_label_prefix.clone() })
            }
            Err(e) => {
                token.close();
                Err(e)
            }
        }
    }

    /// `token init`: creates the objects (refusing to overwrite unless `danger_rotate`) and the
    /// store anchor at the empty head. Returns the new identity public key.
    pub fn init(config: &CustodyConfig, danger_rotate: bool) -> Result<Vec<u8>, Error> {
        let token = Token::open(config)?;
        let labels = Labels::new(&config.object_label_prefix);
        let created = token.with_session(|s| {
            let objects = objects::init(s, &labels, danger_rotate)?;
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
        let custody = Custody { token, objects, identity_public_key, label_prefix: config.object_label_prefix.clone() };
        // The store anchor starts at the empty head: from here on a missing anchor is an attack.
        let anchored = custody
            .derive_store_key()
            .map(crate::store::chain::StoreKey::new)
            .and_then(|key| crate::store::anchor::create_genesis(&custody, &key));
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

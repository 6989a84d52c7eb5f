//! The coordinator's one copy of the BIP341 tweak rule (the enclave has its own in
//! `enclave/src/keys.rs`; the host does not link the enclave): a key's public package tweaked for
//! a [`TaprootMode`], with its x-only output key, cached per mode.
//!
//! Invariant: the output key is computed here from the agreed public key package, never taken
//! from a node's reply.

use frost_secp256k1_tr::keys::{PublicKeyPackage, Tweak};
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::protocol::TaprootMode;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Most modes kept per key (a script-tree root per mode; the cache is cleared when full).
const MAX_CACHED_MODES: usize = 64;

/// A package tweaked for one mode, with its x-only output key.
#[derive(Debug)]
pub struct Tweaked {
    /// What shares and signatures verify against.
    pub public: PublicKeyPackage,
    /// The x-only key the BIP340 signature verifies under.
    pub output_key: [u8; 32],
}

/// (derivation path, mode); the empty path is the group key itself.
type CacheKey = (Vec<u32>, TaprootMode);

/// The tweaked packages of one key and its children, computed on first use.
#[derive(Debug, Default)]
pub struct TweakCache {
    cache: Mutex<HashMap<CacheKey, Arc<Tweaked>>>,
}

impl TweakCache {
    /// `public` (or its child at `path`, when not empty) tweaked for `mode`.
    pub fn get(&self, public: &PublicKeyPackage, path: &[u32], mode: &TaprootMode) -> Result<Arc<Tweaked>, Error> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() > MAX_CACHED_MODES {
            cache.clear();
        }
        if let Some(t) = cache.get(&(path.to_vec(), *mode)) {
            return Ok(t.clone());
        }
        let child;
        let public = if path.is_empty() {
            public
        } else {
            child = super::derivation::derive_public(public, path)?;
            &child
        };
        let public = tweaked(public, mode);
        let output_key = x_only(public.verifying_key())?;
        let t = Arc::new(Tweaked { public, output_key });
        cache.insert((path.to_vec(), *mode), t.clone());
        Ok(t)
    }
}

/// BIP341: no tweak, the key-path-only tweak (BIP86), or the tweak committing to a script tree.
fn tweaked(public: &PublicKeyPackage, mode: &TaprootMode) -> PublicKeyPackage {
    match mode {
        TaprootMode::Untweaked => public.clone(),
        TaprootMode::Bip86 => public.clone().tweak::<&[u8]>(None),
        TaprootMode::ScriptTree { merkle_root } => public.clone().tweak(Some(merkle_root.as_slice())),
    }
}

/// The x-only (BIP340) encoding of a verifying key.
pub fn x_only(key: &frost_secp256k1_tr::VerifyingKey) -> Result<[u8; 32], Error> {
    let sec1 = key.serialize().map_err(|e| Error::new(ErrorCode::InvalidEncoding, format!("verifying key: {e}")))?;
    sec1.get(1..33)
        .and_then(|x| <[u8; 32]>::try_from(x).ok())
        .ok_or_else(|| Error::new(ErrorCode::InvalidEncoding, "verifying key is not a 33-byte SEC1 point"))
}

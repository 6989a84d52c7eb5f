//! A key's public package tweaked for a [`TaprootMode`] by the shared rule
//! (`frostgate_public::taproot`, the enclave's too), with its x-only output key, cached per mode.
//!
//! Invariant: the output key is computed here from the agreed public key package, never taken
//! from a node's reply.

use frost_secp256k1_tr::keys::PublicKeyPackage;
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
            child = frostgate_public::derivation::derive(public, path)?.public;
            &child
        };
        let public = tweaked(public, mode);
        let output_key = x_only(public.verifying_key())?;
        let t = Arc::new(Tweaked { public, output_key });
        cache.insert((path.to_vec(), *mode), t.clone());
        Ok(t)
    }
}

use frostgate_public::taproot::tweaked;

/// The x-only (BIP340) encoding of a verifying key (from a node: a bad one is its encoding error).
pub fn x_only(key: &frost_secp256k1_tr::VerifyingKey) -> Result<[u8; 32], Error> {
    frostgate_public::taproot::x_only(key)
        .ok_or_else(|| Error::new(ErrorCode::InvalidEncoding, "verifying key is not a 33-byte SEC1 point"))
}

//! The BIP341 tweak rule as the enclave uses it (the rule itself is `frostgate_public::taproot`,
//! shared with the coordinator) and the cache of tweaked packages.
//!
//! The **output key** of a session is the internal key tweaked per BIP341 with no script tree
//! (`bip86`), with the session's merkle root (`script_tree`), or not at all (`untweaked`).
//! Tweaking costs a scalar multiplication per participant and every session, share check and
//! aggregate needs one, so tweaked packages (public data) are cached per (key, mode).

use frost_secp256k1_tr::keys::PublicKeyPackage;
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::ids::KeyId;
use frostgate_common::protocol::TaprootMode;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Most cached tweaked packages (script-tree roots vary per session; the cache is dropped when full).
const MAX_CACHED: usize = 256;

/// The public key package tweaked for a mode (the shared rule, `frostgate_public::taproot`).
pub use frostgate_public::taproot::tweaked;

/// The x-only output key for a mode.
pub fn output_key(public: &PublicKeyPackage, mode: &TaprootMode) -> Result<[u8; 32], Error> {
    x_only(tweaked(public, mode).verifying_key())
}

/// The x-only (BIP340) encoding of a verifying key.
pub fn x_only(key: &frost_secp256k1_tr::VerifyingKey) -> Result<[u8; 32], Error> {
    frostgate_public::taproot::x_only(key)
        .ok_or_else(|| Error::new(ErrorCode::Internal, "verifying key is not a 33-byte SEC1 point"))
}

/// Tweaked packages by (key, mode).
#[derive(Debug, Default)]
pub struct TweakCache {
    cache: Mutex<HashMap<(KeyId, u64, TaprootMode), Arc<PublicKeyPackage>>>,
}

impl TweakCache {
    /// `public` (the package of `key` at `epoch`: a refresh changes the verifying shares) tweaked
    /// for `mode`.
    pub fn get(&self, key: KeyId, epoch: u64, public: &PublicKeyPackage, mode: &TaprootMode) -> Arc<PublicKeyPackage> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = cache.get(&(key, epoch, *mode)) {
            return t.clone();
        }
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        let t = Arc::new(tweaked(public, mode));
        cache.insert((key, epoch, *mode), t.clone());
        t
    }
}

//! Unhardened BIP32 derivation of a group key inside the enclave (BIP328's convention: the group
//! key's compressed point with BIP328's chain code at depth 0). A child key is `P + d*G` for a
//! public scalar `d` (the sum of the path's `I_L`); every seat signs for it with `s_i + d`, and
//! every verifying share becomes `V_i + d*G` (the Lagrange coefficients sum to one).
//!
//! Invariants: the enclave derives `d` itself from the path (never a tweak or a child key from the
//! request); only unhardened steps, at most [`MAX_DEPTH`] of them; the child computed with FROST's
//! group arithmetic must equal rust-bitcoin's BIP32 child, or nothing is signed.

use crate::keys::frost_err;
use bitcoin::bip32::{ChainCode, ChildNumber, Fingerprint, Xpub};
use bitcoin::secp256k1::PublicKey;
use frost_core::{Field, Group};
use frost_secp256k1_tr::keys::{KeyPackage, PublicKeyPackage, SigningShare, VerifyingShare};
use frost_secp256k1_tr::{Secp256K1Group as G, Secp256K1ScalarField as F, VerifyingKey};
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::ids::KeyId;
use zeroize::Zeroizing;

/// The deepest path signed (a wallet uses 2: `<0|1>/i`).
pub const MAX_DEPTH: usize = frostgate_common::limits::MAX_DERIVATION_DEPTH;

/// A child of a group key.
#[derive(Debug, Clone)]
pub struct Derived {
    /// The unhardened path from the group key.
    pub path: Vec<u32>,
    /// `d`, the public scalar added to every share (big-endian).
    tweak: [u8; 32],
    /// The child's public key package (verifying key and shares shifted by `d*G`).
    pub public: PublicKeyPackage,
    /// The child's x-only key (its BIP341 internal key).
    pub key_id: KeyId,
}

fn invalid(why: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::DerivationInvalid, why.to_string())
}

fn root(public: &PublicKeyPackage) -> Result<Xpub, Error> {
    let point = public.verifying_key().serialize().map_err(|e| frost_err(ErrorCode::Internal, "group key", e))?;
    let public_key = PublicKey::from_slice(&point).map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
    Ok(Xpub {
        network: bitcoin::NetworkKind::Test,
        depth: 0,
        parent_fingerprint: Fingerprint::default(),
        child_number: ChildNumber::Normal { index: 0 },
        public_key,
        chain_code: ChainCode::from(frostgate_common::limits::BIP328_CHAIN_CODE),
    })
}

/// The BIP32 fingerprint of the group key's xpub (what `tap_key_origins` names).
pub fn fingerprint(public: &PublicKeyPackage) -> Result<[u8; 4], Error> {
    Ok(root(public)?.fingerprint().to_bytes())
}

/// `point + d*G`.
fn shift(point: &[u8], d: &<F as Field>::Scalar) -> Result<[u8; 33], Error> {
    let bytes: [u8; 33] = point.try_into().map_err(|_| Error::new(ErrorCode::Internal, "point length"))?;
    let p = G::deserialize(&bytes).map_err(|e| Error::new(ErrorCode::Internal, format!("point: {e}")))?;
    G::serialize(&(p + G::generator() * *d)).map_err(|e| Error::new(ErrorCode::Internal, format!("point: {e}")))
}

/// The child of `public` at `path`.
pub fn derive(public: &PublicKeyPackage, path: &[u32]) -> Result<Derived, Error> {
    if path.is_empty() || path.len() > MAX_DEPTH {
        return Err(invalid(format!("a path of {} steps (1..={MAX_DEPTH})", path.len())));
    }
    let mut xpub = root(public)?;
    let mut d = F::zero();
    let secp = bitcoin::secp256k1::Secp256k1::verification_only();
    for &i in path {
        let step = ChildNumber::from_normal_idx(i).map_err(|_| invalid(format!("step {i} is hardened")))?;
        let (t, _) = xpub.ckd_pub_tweak(step).map_err(|e| invalid(format!("step {i}: {e}")))?;
        let t = F::deserialize(&t.secret_bytes()).map_err(|e| invalid(format!("step {i}: {e}")))?;
        d += t;
        xpub = xpub.ckd_pub(&secp, step).map_err(|e| invalid(format!("step {i}: {e}")))?;
    }
    let vk = public.verifying_key().serialize().map_err(|e| frost_err(ErrorCode::Internal, "group key", e))?;
    let child = shift(&vk, &d)?;
    // FROST's arithmetic and rust-bitcoin's BIP32 must agree on the child.
    if child != xpub.public_key.serialize() {
        return Err(Error::new(ErrorCode::Internal, "derived key differs from BIP32's"));
    }
    let verifying_key =
        VerifyingKey::deserialize(&child).map_err(|e| frost_err(ErrorCode::Internal, "derived key", e))?;
    let mut shares = std::collections::BTreeMap::new();
    for (id, share) in public.verifying_shares() {
        let v = share.serialize().map_err(|e| frost_err(ErrorCode::Internal, "verifying share", e))?;
        let v = VerifyingShare::deserialize(&shift(&v, &d)?)
            .map_err(|e| frost_err(ErrorCode::Internal, "verifying share", e))?;
        shares.insert(*id, v);
    }
    let public = PublicKeyPackage::new(shares, verifying_key, public.min_signers());
    let key_id = KeyId::from_bytes(xpub.public_key.x_only_public_key().0.serialize());
    Ok(Derived { path: path.to_vec(), tweak: F::serialize(&d), public, key_id })
}

impl Derived {
    /// A seat's key package for the child: `s_i + d`, `V_i + d*G`, `P + d*G`. The result is as
    /// secret as the input and wiped on drop like it.
    pub fn key_package(&self, kp: &KeyPackage) -> Result<KeyPackage, Error> {
        let d = F::deserialize(&self.tweak).map_err(|e| Error::new(ErrorCode::Internal, format!("tweak: {e}")))?;
        // Every copy of the share (its encoding, the scalar, the sum) is wiped when dropped.
        let encoded = Zeroizing::new(kp.signing_share().serialize());
        let mut share = Zeroizing::new([0u8; 32]);
        if encoded.len() != 32 {
            return Err(Error::new(ErrorCode::Internal, "share length"));
        }
        share.copy_from_slice(&encoded);
        let s =
            Zeroizing::new(F::deserialize(&share).map_err(|e| Error::new(ErrorCode::Internal, format!("share: {e}")))?);
        let sum = Zeroizing::new(*s + d);
        let share = Zeroizing::new(F::serialize(&sum));
        let signing_share =
            SigningShare::deserialize(share.as_slice()).map_err(|e| frost_err(ErrorCode::Internal, "share", e))?;
        let vs = kp.verifying_share().serialize().map_err(|e| frost_err(ErrorCode::Internal, "verifying share", e))?;
        let verifying_share = VerifyingShare::deserialize(&shift(&vs, &d)?)
            .map_err(|e| frost_err(ErrorCode::Internal, "verifying share", e))?;
        Ok(KeyPackage::new(
            *kp.identifier(),
            signing_share,
            verifying_share,
            *self.public.verifying_key(),
            *kp.min_signers(),
        ))
    }
}

//! Unhardened BIP32 derivation of a group key (BIP328's convention: the group key's compressed
//! point with BIP328's chain code at depth 0). A child key is `P + d*G` for a public scalar `d`
//! (the sum of the path's `I_L`); every verifying share becomes `V_i + d*G` (the Lagrange
//! coefficients sum to one), and every seat signs for the child with `s_i + d` (the enclave's
//! business: `d` is returned, the share never passes here).
//!
//! Invariants: only unhardened steps, 1 to [`MAX_DEPTH`] of them; the child computed with FROST's
//! group arithmetic must equal rust-bitcoin's BIP32 child, or nothing is returned.

use bitcoin::bip32::{ChainCode, ChildNumber, Fingerprint, Xpub};
use bitcoin::secp256k1::{PublicKey, Secp256k1};
use frost_core::{Field, Group};
use frost_secp256k1_tr::keys::{PublicKeyPackage, VerifyingShare};
use frost_secp256k1_tr::{Secp256K1Group as G, Secp256K1ScalarField as F, VerifyingKey};
use frostgate_common::error::{Error, ErrorCode};

/// The deepest path derived (a wallet uses 2: `<0|1>/i`).
pub const MAX_DEPTH: usize = frostgate_common::limits::MAX_DERIVATION_DEPTH;

/// A child of a group key.
#[derive(Debug, Clone)]
pub struct Child {
    /// The child's public key package (verifying key and shares shifted by `d*G`).
    pub public: PublicKeyPackage,
    /// `d`, the public scalar added to every share (big-endian).
    pub tweak: [u8; 32],
    /// The child's x-only key (its BIP341 internal key).
    pub x_only: [u8; 32],
}

fn internal(e: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::Internal, format!("derivation: {e}"))
}

fn invalid(why: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::DerivationInvalid, why.to_string())
}

/// The xpub of a group key (33-byte compressed point) at depth 0 with BIP328's chain code.
pub fn root_xpub(group_key: &[u8], network: bitcoin::NetworkKind) -> Result<Xpub, Error> {
    let public_key = PublicKey::from_slice(group_key).map_err(|e| invalid(format!("group key: {e}")))?;
    Ok(Xpub {
        network,
        depth: 0,
        parent_fingerprint: Fingerprint::default(),
        child_number: ChildNumber::Normal { index: 0 },
        public_key,
        chain_code: ChainCode::from(frostgate_common::limits::BIP328_CHAIN_CODE),
    })
}

fn group_key(public: &PublicKeyPackage) -> Result<Vec<u8>, Error> {
    public.verifying_key().serialize().map_err(internal)
}

/// The BIP32 fingerprint of the group key's xpub (what `tap_key_origins` names).
pub fn fingerprint(public: &PublicKeyPackage) -> Result<[u8; 4], Error> {
    Ok(root_xpub(&group_key(public)?, bitcoin::NetworkKind::Test)?.fingerprint().to_bytes())
}

/// `point + d*G`.
fn shift(point: &[u8], d: &<F as Field>::Scalar) -> Result<[u8; 33], Error> {
    let bytes: [u8; 33] = point.try_into().map_err(|_| internal("point length"))?;
    let p = G::deserialize(&bytes).map_err(internal)?;
    G::serialize(&(p + G::generator() * *d)).map_err(internal)
}

/// The child of `public` at `path`.
pub fn derive(public: &PublicKeyPackage, path: &[u32]) -> Result<Child, Error> {
    if path.is_empty() || path.len() > MAX_DEPTH {
        return Err(invalid(format!("a path of {} steps (1..={MAX_DEPTH})", path.len())));
    }
    let vk = group_key(public)?;
    let mut xpub = root_xpub(&vk, bitcoin::NetworkKind::Test)?;
    let mut d = F::zero();
    let secp = Secp256k1::verification_only();
    for &i in path {
        let step = ChildNumber::from_normal_idx(i).map_err(|_| invalid(format!("step {i} is hardened")))?;
        let (t, _) = xpub.ckd_pub_tweak(step).map_err(|e| invalid(format!("step {i}: {e}")))?;
        d += F::deserialize(&t.secret_bytes()).map_err(|e| invalid(format!("step {i}: {e}")))?;
        xpub = xpub.ckd_pub(&secp, step).map_err(|e| invalid(format!("step {i}: {e}")))?;
    }
    let child = shift(&vk, &d)?;
    // FROST's arithmetic and rust-bitcoin's BIP32 must agree on the child.
    if child != xpub.public_key.serialize() {
        return Err(internal("FROST and BIP32 disagree on the child"));
    }
    let mut shares = std::collections::BTreeMap::new();
    for (id, share) in public.verifying_shares() {
        let v = share.serialize().map_err(internal)?;
        shares.insert(*id, VerifyingShare::deserialize(&shift(&v, &d)?).map_err(internal)?);
    }
    let verifying_key = VerifyingKey::deserialize(&child).map_err(internal)?;
    Ok(Child {
        public: PublicKeyPackage::new(shares, verifying_key, public.min_signers()),
        tweak: F::serialize(&d),
        x_only: xpub.public_key.x_only_public_key().0.serialize(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use frost_secp256k1_tr::keys::{generate_with_dealer, IdentifierList};

    fn group() -> PublicKeyPackage {
        let rng = rand_core::OsRng;
        generate_with_dealer(3, 2, IdentifierList::Default, rng).expect("dealer").1
    }

    #[test]
    fn a_child_is_bip32s_child_and_every_share_moves_by_the_same_tweak() {
        let public = group();
        let child = derive(&public, &[1, 7]).expect("child");
        let secp = Secp256k1::verification_only();
        let root = root_xpub(&group_key(&public).expect("key"), bitcoin::NetworkKind::Test).expect("xpub");
        let path = [ChildNumber::Normal { index: 1 }, ChildNumber::Normal { index: 7 }];
        let expected = root.derive_pub(&secp, &path).expect("bip32");
        assert_eq!(child.x_only, expected.public_key.x_only_public_key().0.serialize());
        assert_eq!(child.public.verifying_key().serialize().expect("key"), expected.public_key.serialize().to_vec());
        let d = F::deserialize(&child.tweak).expect("tweak");
        for (id, share) in public.verifying_shares() {
            let moved = shift(&share.serialize().expect("share"), &d).expect("shift");
            assert_eq!(child.public.verifying_shares()[id].serialize().expect("share"), moved.to_vec());
        }
        assert_eq!(child.public.min_signers(), public.min_signers());
    }

    #[test]
    fn hardened_empty_and_too_deep_paths_are_refused() {
        let public = group();
        let too_deep = vec![0u32; MAX_DEPTH + 1];
        for path in [&[0x8000_0000u32][..], &[], &too_deep] {
            let e = derive(&public, path).expect_err("refused");
            assert_eq!(e.code(), ErrorCode::DerivationInvalid, "{path:?}: {e}");
        }
    }
}

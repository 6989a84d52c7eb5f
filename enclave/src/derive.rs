//! Unhardened BIP32 derivation of a group key inside the enclave: the public part (the child
//! package and the public scalar `d`) is the shared rule `frostgate_public::derivation`; the seat's
//! signing share for the child, `s_i + d`, is made here, in wiped memory.
//!
//! Invariants: the enclave derives `d` itself from the path (never a tweak or a child key from the
//! request); only unhardened steps, at most [`MAX_DEPTH`] of them; the child computed with FROST's
//! group arithmetic must equal rust-bitcoin's BIP32 child, or nothing is signed.

use crate::keys::frost_err;
use frost_core::Field;
use frost_secp256k1_tr::keys::{KeyPackage, PublicKeyPackage, SigningShare};
use frost_secp256k1_tr::Secp256K1ScalarField as F;
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

/// The BIP32 fingerprint of the group key's xpub (what `tap_key_origins` names).
pub fn fingerprint(public: &PublicKeyPackage) -> Result<[u8; 4], Error> {
    frostgate_public::derivation::fingerprint(public)
}

/// The child of `public` at `path` (the shared rule, `frostgate_public::derivation`).
pub fn derive(public: &PublicKeyPackage, path: &[u32]) -> Result<Derived, Error> {
    let child = frostgate_public::derivation::derive(public, path)?;
    Ok(Derived {
        path: path.to_vec(),
        tweak: child.tweak,
        public: child.public,
        key_id: KeyId::from_bytes(child.x_only),
    })
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
        // `V_i + d*G`, as the shared derivation shifted it.
        let verifying_share = *self
            .public
            .verifying_shares()
            .get(kp.identifier())
            .ok_or_else(|| Error::new(ErrorCode::Internal, "no verifying share for this seat in the child"))?;
        Ok(KeyPackage::new(
            *kp.identifier(),
            signing_share,
            verifying_share,
            *self.public.verifying_key(),
            *kp.min_signers(),
        ))
    }
}

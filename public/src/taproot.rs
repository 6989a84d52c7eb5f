//! The BIP341 tweak rule. The **output key** of a session is the internal key tweaked with no
//! script tree (`bip86`), with the session's merkle root (`script_tree`), or not at all
//! (`untweaked`, plain BIP340).

use frost_secp256k1_tr::keys::{PublicKeyPackage, Tweak};
use frostgate_common::protocol::TaprootMode;

/// The public key package tweaked for a mode (what shares and signatures verify against).
pub fn tweaked(public: &PublicKeyPackage, mode: &TaprootMode) -> PublicKeyPackage {
    match mode {
        TaprootMode::Untweaked => public.clone(),
        TaprootMode::Bip86 => public.clone().tweak::<&[u8]>(None),
        TaprootMode::ScriptTree { merkle_root } => public.clone().tweak(Some(merkle_root.as_slice())),
    }
}

/// The x-only (BIP340) encoding of a verifying key; `None` if it does not serialize as a 33-byte
/// SEC1 point.
pub fn x_only(key: &frost_secp256k1_tr::VerifyingKey) -> Option<[u8; 32]> {
    let sec1 = key.serialize().ok()?;
    sec1.get(1..33).and_then(|x| <[u8; 32]>::try_from(x).ok())
}

/// The x-only output key of `public` for `mode`.
pub fn output_key(public: &PublicKeyPackage, mode: &TaprootMode) -> Option<[u8; 32]> {
    x_only(tweaked(public, mode).verifying_key())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::key::TapTweak;
    use frost_secp256k1_tr::keys::{generate_with_dealer, IdentifierList};

    #[test]
    fn the_output_key_is_rust_bitcoins_tap_tweak_for_every_mode() {
        let rng = rand_core::OsRng;
        let public = generate_with_dealer(3, 2, IdentifierList::Default, rng).expect("dealer").1;
        let internal = x_only(public.verifying_key()).expect("x-only");
        let secp = bitcoin::secp256k1::Secp256k1::verification_only();
        let key = bitcoin::secp256k1::XOnlyPublicKey::from_slice(&internal).expect("key");
        let root = bitcoin::TapNodeHash::from_slice(&[5; 32]).expect("root");
        use bitcoin::hashes::Hash;
        for (mode, merkle_root) in
            [(TaprootMode::Bip86, None), (TaprootMode::ScriptTree { merkle_root: [5; 32] }, Some(root))]
        {
            let (tweaked, _) = key.tap_tweak(&secp, merkle_root);
            assert_eq!(output_key(&public, &mode), Some(tweaked.to_x_only_public_key().serialize()), "{mode:?}");
        }
        assert_eq!(output_key(&public, &TaprootMode::Untweaked), Some(internal));
    }
}

//! The enclave's PSBT check (`frostgate_enclave::psbt::check`) in process: the output key and the
//! sighash against rust-bitcoin's own derivation, every malformed or foreign PSBT as a typed error,
//! and never a panic on mutated or random input (property tests).

use bitcoin::key::TapTweak;
use bitcoin::psbt::Psbt;
use bitcoin::secp256k1::{Secp256k1, XOnlyPublicKey};
use bitcoin::sighash::{Prevouts, SighashCache, TapSighashType};
use frost_secp256k1_tr as frost;
use frostgate_common::error::ErrorCode;
use frostgate_enclave::keys::KeyRecord;
use frostgate_enclave::psbt::check;
use frostgate_tests::psbt::{p2tr, random_address, spend};
use proptest::prelude::*;
use std::collections::BTreeMap;

fn key() -> KeyRecord {
    let (_, public) =
        frost::keys::generate_with_dealer(3, 2, frost::keys::IdentifierList::Default, frost::rand_core::OsRng)
            .expect("dealer");
    KeyRecord::new(public, BTreeMap::new()).expect("record")
}

fn output_key(k: &KeyRecord) -> [u8; 32] {
    frostgate_enclave::taproot::output_key(&k.public, &frostgate_common::protocol::TaprootMode::Bip86)
        .expect("output key")
}

fn valid(k: &KeyRecord) -> Psbt {
    let out = output_key(k);
    spend(
        k.key_id.as_bytes(),
        &out,
        &[70_000, 30_000],
        &[(random_address().script_pubkey(), 90_000), (p2tr(&out), 9_000)],
    )
}

fn code(r: Result<frostgate_enclave::psbt::Checked, frostgate_common::Error>) -> ErrorCode {
    r.expect_err("must be refused").code()
}

#[test]
fn output_key_sighash_and_spend_match_rust_bitcoin() {
    let k = key();
    let psbt = valid(&k);
    let checked = check(&psbt.serialize(), 1, &k).expect("valid");
    // BIP86 tweak by rust-bitcoin, independently of FROST's tweak.
    let secp = Secp256k1::new();
    let internal = XOnlyPublicKey::from_slice(k.key_id.as_bytes()).expect("x-only");
    let (tweaked, _) = internal.tap_tweak(&secp, None);
    assert_eq!(checked.output_key, tweaked.to_x_only_public_key().serialize());
    let utxos: Vec<_> = psbt.inputs.iter().map(|i| i.witness_utxo.clone().expect("utxo")).collect();
    let sighash = SighashCache::new(&psbt.unsigned_tx)
        .taproot_key_spend_signature_hash(1, &Prevouts::All(&utxos), TapSighashType::Default)
        .expect("sighash");
    assert_eq!(checked.sighash, *AsRef::<[u8; 32]>::as_ref(&sighash));
    assert_eq!((checked.spend.sats, checked.spend.fee), (90_000, 1_000), "change to the key is not spent");
}

#[test]
fn malformed_and_foreign_psbts_are_typed_errors() {
    let k = key();
    let good = valid(&k);
    let bytes = good.serialize();
    // Every truncation.
    for len in 0..bytes.len() {
        assert_eq!(code(check(&bytes[..len], 0, &k)), ErrorCode::PsbtInvalid, "prefix of {len} bytes");
    }
    assert_eq!(code(check(&bytes, 2, &k)), ErrorCode::PsbtInvalid, "no input 2");
    let mut p = good.clone();
    p.inputs[0].witness_utxo = None;
    assert_eq!(code(check(&p.serialize(), 1, &k)), ErrorCode::PsbtInvalid, "missing witness_utxo on another input");
    let mut p = good.clone();
    p.unsigned_tx.input[1].previous_output = p.unsigned_tx.input[0].previous_output;
    assert_eq!(code(check(&p.serialize(), 0, &k)), ErrorCode::PsbtInvalid, "duplicate inputs");
    let mut p = good.clone();
    p.inputs[0].tap_internal_key = Some(XOnlyPublicKey::from_slice(key().key_id.as_bytes()).expect("x"));
    assert_eq!(code(check(&p.serialize(), 0, &k)), ErrorCode::PsbtWrongKey, "another key's input");
    let mut p = good.clone();
    p.inputs[0].witness_utxo.as_mut().expect("utxo").script_pubkey = random_address().script_pubkey();
    assert_eq!(code(check(&p.serialize(), 0, &k)), ErrorCode::PsbtWrongKey, "utxo of another output key");
    let mut p = good.clone();
    p.inputs[0].tap_internal_key = None;
    assert_eq!(code(check(&p.serialize(), 0, &k)), ErrorCode::PsbtInvalid, "no tap_internal_key");
    let mut p = good.clone();
    p.unsigned_tx.output[0].value = bitcoin::Amount::from_sat(200_000);
    assert_eq!(code(check(&p.serialize(), 0, &k)), ErrorCode::PsbtInvalid, "outputs exceed inputs");
    let mut p = good.clone();
    p.inputs[0].sighash_type = Some(bitcoin::psbt::PsbtSighashType::from(TapSighashType::All));
    assert_eq!(code(check(&p.serialize(), 0, &k)), ErrorCode::PolicyViolation, "SIGHASH_ALL");
    assert_eq!(code(check(b"cHNidP8=", 0, &k)), ErrorCode::PsbtInvalid, "base64 is not the wire form");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn mutated_psbts_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8), index in 0u32..3) {
        let k = key();
        let mut bytes = valid(&k).serialize();
        for (at, x) in flips {
            let n = bytes.len();
            bytes[at % n] ^= x | 1;
        }
        let _ = check(&bytes, index, &k);
    }

    #[test]
    fn random_bytes_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let k = key();
        prop_assert!(check(&bytes, 0, &k).is_err());
    }
}

#[test]
fn derived_inputs_are_checked_against_the_enclaves_own_derivation() {
    use frostgate_tests::psbt::{child, mark_input, spend_children};
    let k = key();
    let group = k.public.verifying_key().serialize().expect("point");
    let xpub = frostgate_host::coordinator::derivation::xpub(&group, bitcoin::Network::Regtest).expect("xpub");
    let good = spend_children(&xpub, &[(&[0, 5], 50_000)], &[(random_address().script_pubkey(), 49_000)]);
    let checked = check(&good.serialize(), 0, &k).expect("a child's input");
    assert_eq!(checked.output_key, child(&xpub, &[0, 5]).1);
    assert_eq!(checked.derived.as_ref().map(|d| d.path.clone()), Some(vec![0, 5]));
    let (internal, _) = child(&xpub, &[0, 5]);
    let redo = |fp: bitcoin::bip32::Fingerprint, path: &str| {
        let mut p = good.clone();
        p.inputs[0].tap_key_origins.clear();
        let x = XOnlyPublicKey::from_slice(&internal).expect("x");
        p.inputs[0].tap_key_origins.insert(x, (Vec::new(), (fp, path.parse().expect("path"))));
        p
    };
    let fp = xpub.fingerprint();
    assert_eq!(code(check(&redo(fp, "m/0/7").serialize(), 0, &k)), ErrorCode::PsbtWrongKey, "a path to another key");
    assert_eq!(code(check(&redo(fp, "m/0'/5").serialize(), 0, &k)), ErrorCode::DerivationInvalid, "hardened");
    assert_eq!(code(check(&redo(fp, "m/0/1/2/3/4/5/6").serialize(), 0, &k)), ErrorCode::DerivationInvalid, "too deep");
    let other = bitcoin::bip32::Fingerprint::from([1, 2, 3, 4]);
    assert_eq!(code(check(&redo(other, "m/0/5").serialize(), 0, &k)), ErrorCode::PsbtWrongKey, "unknown fingerprint");
    let mut no_origin = good.clone();
    no_origin.inputs[0].tap_key_origins.clear();
    assert_eq!(code(check(&no_origin.serialize(), 0, &k)), ErrorCode::PsbtWrongKey, "no origin");
    let _ = mark_input;
}

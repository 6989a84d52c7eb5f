//! Real AWS Nitro Enclaves attestation documents (captured by Evervault, Apache-2.0; see
//! `tests/nitro/ORIGIN.md`), verified with the clock set to each document's time: a production
//! document is accepted with its published PCRs; a debug-mode one is refused unless allowed;
//! bytes flipped across the payload, the signature and the certificates, a reordered bundle, a
//! wrong root, an expired chain, a wrong nonce, public key or PCR are each refused, naming the
//! check.

use frostgate_attest::nitro::{self, Expected};
use frostgate_attest::Check;
use std::collections::BTreeMap;

const PRODUCTION: &[u8] = include_bytes!("nitro/production-2023-01-18.cose");
const DEBUG: &[u8] = include_bytes!("nitro/debug-mode.cose");
const DEBUG_B64: &[u8] = include_bytes!("nitro/debug-mode-2023-09.b64");

/// The production document's PCRs as Evervault published them with it.
const PCRS: [(u8, &str); 4] = [
    (0, "d265a83faa7b4fa0d73b82b6d06253e894445922937d0ee5a74fe4891da9817611a71e71b98e5329232902de3cf419af"),
    (1, "bcdf05fefccaa8e55bf2c8d6dee9e79bbff31e34bf28a99aa19e6b29c37ee80b214a414b7607236edf26fcb78654e63f"),
    (2, "e4f634d24ad83b7f6e49fe283bafdb220f6252fb4a278a858e19d15b7cd0f263b9168ed0bacefb4444266df9f9a77f24"),
    (8, "97c5395a83c0d6a04d53ff962663c714c178c24500bf97f78456ed3721d922cf3f940614da4bb90107c439bc4a1443ca"),
];

fn pins() -> BTreeMap<u8, Vec<u8>> {
    PCRS.iter().map(|(i, h)| (*i, hex::decode(h).expect("hex"))).collect()
}

/// Expectations at `doc`'s own time, AWS root, no pins.
fn at_its_time(doc: &[u8]) -> Expected {
    let (_, d) = nitro::decode(doc).expect("decodes");
    Expected {
        root: nitro::aws_root(),
        at: d.timestamp_ms / 1000,
        pcrs: BTreeMap::new(),
        nonce: None,
        public_key: None,
        allow_debug: false,
        max_age: None,
    }
}

fn refused(doc: &[u8], expected: &Expected) -> Check {
    match nitro::verify(doc, expected) {
        Err(r) => r.check,
        Ok(d) => panic!("verified, must be refused: {}", d.module_id),
    }
}

#[test]
fn the_embedded_root_is_the_one_aws_publishes() {
    let der = nitro::aws_root();
    let digest = ring::digest::digest(&ring::digest::SHA256, &der);
    assert_eq!(hex::encode(digest.as_ref()), nitro::AWS_ROOT_SHA256);
}

#[test]
fn a_production_document_verifies_at_its_time_with_its_published_pcrs() {
    let mut expected = at_its_time(PRODUCTION);
    expected.pcrs = pins();
    let doc = nitro::verify(PRODUCTION, &expected).unwrap_or_else(|r| panic!("{r}"));
    assert!(!doc.debug_mode());
    assert_eq!(doc.digest, "SHA384");
    assert!(doc.module_id.starts_with("i-0ec0e572c8263d8ff-enc"), "{}", doc.module_id);
    for (i, pcr) in pins() {
        assert_eq!(doc.pcrs[&i], pcr, "PCR{i}");
    }
    let subjects = doc.subjects();
    assert!(subjects.last().expect("root").contains("aws.nitro-enclaves"), "{subjects:?}");
    assert_eq!(subjects.len(), doc.cabundle.len() + 1);
}

#[test]
fn debug_mode_documents_are_refused_unless_allowed() {
    for doc in [DEBUG.to_vec(), nitro::read_document(DEBUG_B64)] {
        let mut expected = at_its_time(&doc);
        assert!(nitro::decode(&doc).expect("decodes").1.debug_mode());
        assert_eq!(refused(&doc, &expected), Check::DebugMode);
        expected.allow_debug = true;
        nitro::verify(&doc, &expected).unwrap_or_else(|r| panic!("{r}"));
    }
}

#[test]
fn a_document_is_read_as_raw_cose_or_base64() {
    use base64::Engine;
    let text = base64::engine::general_purpose::STANDARD.encode(PRODUCTION);
    assert_eq!(nitro::read_document(text.as_bytes()), PRODUCTION);
    assert_eq!(nitro::read_document(format!("{text}\n").as_bytes()), PRODUCTION);
    assert_eq!(nitro::read_document(PRODUCTION), PRODUCTION);
}

#[test]
fn a_wrong_pcr_nonce_or_public_key_is_refused() {
    let mut expected = at_its_time(PRODUCTION);
    expected.pcrs = pins();
    expected.pcrs.insert(2, vec![0x11; 48]);
    assert_eq!(refused(PRODUCTION, &expected), Check::Pcr);
    expected.pcrs = BTreeMap::from([(31, vec![0; 48])]);
    assert_eq!(refused(PRODUCTION, &expected), Check::Pcr, "an absent PCR");
    let mut expected = at_its_time(PRODUCTION);
    expected.nonce = Some(vec![1; 32]);
    assert_eq!(refused(PRODUCTION, &expected), Check::Nonce);
    let mut expected = at_its_time(PRODUCTION);
    expected.public_key = Some(vec![2; 65]);
    assert_eq!(refused(PRODUCTION, &expected), Check::PublicKey);
}

#[test]
fn a_wrong_root_or_todays_clock_is_refused() {
    let mut expected = at_its_time(PRODUCTION);
    expected.root = nitro::decode(PRODUCTION).expect("decodes").1.cabundle[1].clone();
    assert_eq!(refused(PRODUCTION, &expected), Check::Root);
    // The leaf certificate lived a few hours in January 2023.
    let mut expected = at_its_time(PRODUCTION);
    expected.at = 1_796_342_400; // 2026-12-04
    assert_eq!(refused(PRODUCTION, &expected), Check::Chain);
    expected.at = at_its_time(PRODUCTION).at - 3 * 86_400;
    assert_eq!(refused(PRODUCTION, &expected), Check::Chain, "before its certificate");
    // The age against the verifier's own clock is a second line.
    let mut expected = at_its_time(PRODUCTION);
    expected.max_age = Some((expected.at + 600, 300));
    assert_eq!(refused(PRODUCTION, &expected), Check::Age);
    expected.max_age = Some((expected.at + 60, 300));
    nitro::verify(PRODUCTION, &expected).expect("young enough");
    expected.max_age = Some((expected.at - 3600, 300));
    assert_eq!(refused(PRODUCTION, &expected), Check::Age, "dated an hour after the verifier's clock");
}

/// Re-encodes `doc` with its payload map changed by `f` (the signature then no longer matches).
fn with_payload(doc: &[u8], f: impl FnOnce(&mut Vec<(ciborium::Value, ciborium::Value)>)) -> Vec<u8> {
    use coset::CborSerializable;
    let mut sign1 = coset::CoseSign1::from_slice(doc).expect("cose");
    let value: ciborium::Value = ciborium::from_reader(sign1.payload.as_deref().expect("payload")).expect("cbor");
    let mut map = value.into_map().expect("map");
    f(&mut map);
    let mut payload = Vec::new();
    ciborium::into_writer(&ciborium::Value::Map(map), &mut payload).expect("cbor");
    sign1.payload = Some(payload);
    sign1.to_vec().expect("cose")
}

#[test]
fn a_reordered_bundle_is_refused_for_its_root() {
    let reversed = with_payload(PRODUCTION, |map| {
        for (k, v) in map.iter_mut() {
            if k.as_text() == Some("cabundle") {
                if let ciborium::Value::Array(a) = v {
                    a.reverse();
                }
            }
        }
    });
    assert_eq!(refused(&reversed, &at_its_time(PRODUCTION)), Check::Root);
    // The same bundle untouched but re-encoded verifies (the test's re-encoding is faithful).
    let same = with_payload(PRODUCTION, |_| {});
    nitro::verify(&same, &at_its_time(PRODUCTION)).unwrap_or_else(|r| panic!("{r}"));
}

#[test]
fn bytes_flipped_across_the_document_are_refused() {
    let expected = at_its_time(PRODUCTION);
    let mut checks: BTreeMap<&str, usize> = BTreeMap::new();
    // A spread sample of every region: header, payload (fields, PCRs, certificates), signature.
    let n = PRODUCTION.len();
    let positions: Vec<usize> = (0..n).step_by(7).chain(n - 96..n).collect();
    for i in positions {
        let mut doc = PRODUCTION.to_vec();
        doc[i] ^= 0x01;
        match nitro::verify(&doc, &expected) {
            Err(r) => *checks.entry(r.check.name()).or_default() += 1,
            Ok(d) => panic!("byte {i} of {n} flipped and the document still verifies: {}", d.module_id),
        }
    }
    // Every region was hit: the encoding, the chain, and the signature each refused some.
    for check in ["encoding", "chain", "signature"] {
        assert!(checks.get(check).is_some_and(|c| *c > 0), "{check} never refused: {checks:?}");
    }
}

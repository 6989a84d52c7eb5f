//! The fuzz targets' bodies: `cargo fuzz` runs them from `fuzz/` (nightly, libFuzzer), and
//! `tests/tests/fuzz_corpus.rs` replays the kept corpus and the seeds below on stable. Each
//! accepts any bytes and must never panic; where a decoder accepts an input, what it decoded
//! must survive a round trip.

use crate::rng::SplitMix;
use frostgate_common::bounded::RecordBody;
use frostgate_common::frame;
use frostgate_common::ids::{AttemptId, ParticipantId, SessionId};
use frostgate_common::protocol::{Health, Hello, Message, StoreRecord, TaprootMode};
use frostgate_enclave::keys::KeyRecord;
use frostgate_enclave::markers::{MemoryStore, Record};
use frostgate_enclave::rounds::{Engine, Limits};
use frostgate_enclave::store::chain::{check_against_anchor, Head, Loader, StoreKey};
use std::sync::{Arc, OnceLock};

/// A fuzz target: its name (the directory under `fuzz/corpus/`) and body, which tells whether
/// the input was accepted all the way (the seeds must be).
pub type Target = (&'static str, fn(&[u8]) -> bool);

/// Every target.
pub const TARGETS: &[Target] =
    &[("frame", frame), ("grpc", grpc), ("store", store), ("config", config), ("psbt", psbt)];

/// The channel's frame decoder and the boundary messages inside: the length prefix check, then
/// the body; a decoded frame re-encodes to a frame that decodes to the same value.
pub fn frame(data: &[u8]) -> bool {
    if let Some(prefix) = data.get(..4) {
        let _ = frame::check_length(prefix.try_into().expect("4 bytes"));
    }
    let Ok(f) = frame::decode_body(data.get(4..).unwrap_or_default()) else { return false };
    let bytes = frame::encode(&f).expect("a decoded frame encodes");
    assert_eq!(frame::decode_body(&bytes[4..]).expect("its encoding decodes"), f);
    true
}

/// The network API's decoding and checks: the first byte picks an RPC of the table, the rest is
/// its request message (protobuf); what passes converts back and passes again, unchanged.
pub fn grpc(data: &[u8]) -> bool {
    static ROWS: OnceLock<Vec<frostgate_host::api::rpc::RpcRow>> = OnceLock::new();
    let rows = ROWS.get_or_init(frostgate_host::api::rpc::rpcs);
    let Some((&which, bytes)) = data.split_first() else { return false };
    let row = rows[usize::from(which) % rows.len()];
    let Ok((first, again)) = (row.decode)(bytes) else { return false };
    assert_eq!(first, again, "{}: a checked request changed in a round trip", row.rpc);
    true
}

/// The MAC key of the store target (the real one is derived in the HSM).
const STORE_KEY: [u8; 32] = [7; 32];

/// The enclave's store loader and replay. Input: the anchored version, a flags byte (bit 0:
/// corrupt one record's MAC, chosen by bits 4..8; bits 1..4: chunk size - 1), then record bodies
/// (`u16` little-endian length, bytes), chained under a fixed key. Loaded in chunks, compared
/// with the anchor, and the verified records replayed into a fresh engine.
pub fn store(data: &[u8]) -> bool {
    let [anchor, flags, rest @ ..] = data else { return false };
    let mut bodies = Vec::new();
    let mut rest = rest;
    while let [lo, hi, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(tail.len());
        let Ok(body) = RecordBody::new(tail[..len].to_vec()) else { return false };
        bodies.push(body);
        rest = &tail[len..];
    }
    let key = StoreKey::new(zeroize::Zeroizing::new(STORE_KEY));
    let (mut records, _) = key.chain_bodies(Head::EMPTY, bodies);
    if flags & 1 == 1 && !records.is_empty() {
        let i = usize::from(flags >> 4) % records.len();
        records[i].mac[0] ^= 1;
    }
    let anchor = u64::from(*anchor);
    let anchored = Head {
        version: anchor,
        mac: usize::try_from(anchor)
            .ok()
            .and_then(|a| a.checked_sub(1))
            .and_then(|i| records.get(i))
            .map_or([0; 32], |r: &StoreRecord| r.mac),
    };
    let mut loader = Loader::for_anchor(anchor);
    for chunk in records.chunks(usize::from((flags >> 1) & 7) + 1) {
        if loader.push(&key, chunk).is_err() {
            return false;
        }
    }
    let Ok(verified) = loader.finish_with_successor() else { return false };
    let anchor_ok = check_against_anchor(verified.head, verified.successor_prev, anchored).is_ok();
    let engine = Engine::new(crate::token::shared_custody(), Arc::new(MemoryStore::new()), Limits::default());
    engine.replay(&verified.records).is_ok() && anchor_ok
}

/// The configuration files: `enclave.toml` (custody, group pins, policy) and `cluster.toml`; a
/// cluster file that parses writes back to one that parses.
pub fn config(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else { return false };
    let enclave = frostgate_enclave::config::EnclaveConfig::parse(text).is_ok();
    let Ok(c) = frostgate_host::coordinator::cluster::Cluster::parse(text) else { return enclave };
    let again = toml::to_string_pretty(&c).expect("a parsed cluster file serializes");
    frostgate_host::coordinator::cluster::Cluster::parse(&again).expect("its serialization parses");
    true
}

/// The enclave's PSBT check: the first byte picks the input index (0..4), the rest is the PSBT,
/// checked against a fixed key.
pub fn psbt(data: &[u8]) -> bool {
    let Some((&index, bytes)) = data.split_first() else { return false };
    frostgate_enclave::psbt::check(bytes, u32::from(index % 4), fixed_key()).is_ok()
}

/// A 2-of-3 key from a fixed seed, so corpus entries that spend it stay meaningful across runs.
pub fn fixed_key() -> &'static KeyRecord {
    static KEY: OnceLock<KeyRecord> = OnceLock::new();
    KEY.get_or_init(|| {
        let (_, public) = frost_secp256k1_tr::keys::generate_with_dealer(
            3,
            2,
            frost_secp256k1_tr::keys::IdentifierList::Default,
            SplitMix(0x66_7a_7a),
        )
        .expect("dealer");
        KeyRecord::new(public, Default::default()).expect("record")
    })
}

/// Inputs every target starts from (also replayed by the corpus test).
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    match target {
        "frame" => [
            Message::Health(Health),
            Message::Hello(Hello {
                protocol_version: 2,
                client: frostgate_common::bounded::Label::new("fuzz").expect("label"),
            }),
            Message::Error(frostgate_common::error::Error::new(
                frostgate_common::error::ErrorCode::MalformedMessage,
                "fuzz",
            )),
        ]
        .into_iter()
        .map(|message| frame::encode(&frame::Frame { request_id: 9, message }).expect("encode"))
        .collect(),
        // Every RPC with an empty message: accepted where the request has no required field
        // (`Health`), refused elsewhere.
        "grpc" => (0..frostgate_host::api::rpc::rpcs().len() as u8).map(|i| vec![i]).collect(),
        "store" => {
            let key = fixed_key();
            let seat = ParticipantId::new(1).expect("id");
            let records = [
                Record::KeyAdded {
                    key: key.key_id,
                    public_key_package: key.public.serialize().expect("package"),
                    seats: vec![(seat, 0, vec![1, 2, 3])],
                },
                Record::SessionBound {
                    session: SessionId::from_bytes([4; 16]),
                    key: key.key_id,
                    message: [5; 32],
                    mode: TaprootMode::Bip86,
                    opened_unix: 1_800_000_000,
                },
                Record::AttemptBound {
                    attempt: AttemptId::from_bytes([6; 16]),
                    session: SessionId::from_bytes([4; 16]),
                    signers: vec![seat, ParticipantId::new(2).expect("id")],
                },
                Record::NonceConsumed { attempt: AttemptId::from_bytes([6; 16]), seat },
            ];
            let mut input = vec![4u8, 0b110];
            for r in &records {
                let body = postcard::to_stdvec(r).expect("encode");
                input.extend_from_slice(&(body.len() as u16).to_le_bytes());
                input.extend_from_slice(&body);
            }
            vec![input]
        }
        "config" => vec![
            include_bytes!("../../fuzz/seeds/enclave.toml").to_vec(),
            include_bytes!("../../fuzz/seeds/cluster.toml").to_vec(),
        ],
        "psbt" => {
            let key = fixed_key();
            let output = frostgate_enclave::taproot::output_key(&key.public, &TaprootMode::Bip86).expect("output key");
            let internal = key.key_id.as_bytes();
            let to = crate::psbt::p2tr(&output);
            let psbt = crate::psbt::spend(internal, &output, &[50_000, 70_000], &[(to, 100_000)]);
            let mut input = vec![0u8];
            input.extend_from_slice(&psbt.serialize());
            vec![input]
        }
        _ => Vec::new(),
    }
}

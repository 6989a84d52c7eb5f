//! Test-only tool: prints `EPOCH HEX-SHARE` for a seat of a key, unsealed by the node's own token
//! from its stopped store, so tests can search files, logs and messages for the share. A process
//! of its own per node: SoftHSM reads its token directory once per process.
//!
//! Usage: `frostgate-test-unseal CONFIG DB KEY-HEX SEAT` (with the token's provider environment).
#![forbid(unsafe_code)]

use frostgate_common::ids::{KeyId, ParticipantId};
use std::str::FromStr;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [config, db, key, seat] = args.as_slice() else {
        panic!("usage: frostgate-test-unseal CONFIG DB KEY-HEX SEAT");
    };
    let key = KeyId::from_str(key).expect("key id");
    let seat = ParticipantId::new(seat.parse().expect("seat")).expect("seat");
    let config = frostgate_enclave::config::EnclaveConfig::load(std::path::Path::new(config))
        .expect("config")
        .custody
        .expect("custody");
    let custody = frostgate_enclave::custody::Custody::open(&config).expect("custody");
    let (public, seats) = frostgate_tests::dkg::stored_key(std::path::Path::new(db), key);
    let public = frost_secp256k1_tr::keys::PublicKeyPackage::deserialize(&public).expect("public key package");
    let seats =
        seats.into_iter().map(|(p, epoch, blob)| (p, frostgate_enclave::keys::SealedSeat { blob, epoch })).collect();
    let record = frostgate_enclave::keys::KeyRecord::new(public, seats).expect("record");
    let share = record.unseal(&custody, seat).expect("unseal").signing_share().serialize();
    println!("{} {}", record.epoch(), hex::encode(share));
}

//! The store's MAC chain, exhaustively: every byte of every field of every record, deletions,
//! reorders, and every relation between the chain head and the HSM anchor.

use frostgate_common::error::ErrorCode;
use frostgate_common::ids::{AttemptId, KeyId, ParticipantId, SessionId};
use frostgate_common::protocol::{StoreRecord, TaprootMode};
use frostgate_enclave::markers::Record;
use frostgate_enclave::store::chain::{check_against_anchor, Head, Loader, StoreKey};
use frostgate_tests::signing::random;

fn key() -> StoreKey {
    StoreKey::new(zeroize::Zeroizing::new(random()))
}

fn records() -> Vec<Record> {
    let attempt = AttemptId::from_bytes(random());
    let session = SessionId::from_bytes(random());
    let p = |n| ParticipantId::new(n).expect("p");
    vec![
        Record::KeyAdded {
            key: KeyId::from_bytes(random()),
            public_key_package: vec![7; 120],
            seats: vec![(p(1), 0, vec![9; 60])],
        },
        Record::SessionBound {
            session,
            key: KeyId::from_bytes(random()),
            message: random(),
            mode: TaprootMode::Bip86,
            opened_unix: 1,
        },
        Record::AttemptBound { attempt, session, signers: vec![p(1), p(2)] },
        Record::NonceConsumed { attempt, seat: p(1) },
        Record::AttemptCompleted { attempt, message: random(), mode: TaprootMode::Untweaked },
    ]
}

fn load(k: &StoreKey, chain: &[StoreRecord]) -> Result<(Head, Vec<Record>), ErrorCode> {
    let mut l = Loader::default();
    l.push(k, chain).map_err(|e| e.code())?;
    l.finish().map_err(|e| e.code())
}

#[test]
fn an_intact_chain_loads_and_round_trips_its_records() {
    let k = key();
    let rs = records();
    let (chain, head) = k.chain(Head::EMPTY, &rs).expect("seal");
    let (h, loaded) = load(&k, &chain).expect("loads");
    assert_eq!(h, head);
    assert_eq!(loaded, rs);
    // Loading in chunks gives the same result.
    let mut l = Loader::default();
    for c in chain.chunks(2) {
        l.push(&k, c).expect("chunk");
    }
    assert_eq!(l.finish().expect("finish").0, head);
}

#[test]
fn every_byte_of_every_field_of_every_record_is_authenticated() {
    let k = key();
    let (chain, _) = k.chain(Head::EMPTY, &records()).expect("seal");
    let mut checked = 0;
    for i in 0..chain.len() {
        for bit in [0x01u64, 0x80] {
            for byte in 0..8 {
                let mut c = chain.clone();
                c[i].version ^= bit << (8 * byte);
                assert_eq!(load(&k, &c).expect_err("version"), ErrorCode::StoreTampered);
                checked += 1;
            }
        }
        for j in 0..32 {
            let mut c = chain.clone();
            c[i].prev_mac[j] ^= 1;
            assert_eq!(load(&k, &c).expect_err("prev"), ErrorCode::StoreTampered);
            let mut c = chain.clone();
            c[i].mac[j] ^= 1;
            assert_eq!(load(&k, &c).expect_err("mac"), ErrorCode::StoreTampered);
            checked += 2;
        }
        for j in 0..chain[i].body.as_inner().len() {
            let mut c = chain.clone();
            let mut body = c[i].body.clone().into_inner();
            body[j] ^= 1;
            c[i].body = frostgate_common::bounded::RecordBody::new(body).expect("bound");
            assert_eq!(load(&k, &c).expect_err("body"), ErrorCode::StoreTampered);
            checked += 1;
        }
    }
    assert!(checked > 500, "{checked}");
}

#[test]
fn deleted_reordered_or_foreign_records_are_tampering() {
    let k = key();
    let (chain, _) = k.chain(Head::EMPTY, &records()).expect("seal");
    for i in 0..chain.len() - 1 {
        let mut c = chain.clone();
        c.remove(i);
        assert_eq!(load(&k, &c).expect_err("deleted"), ErrorCode::StoreTampered, "delete {i}");
        let mut c = chain.clone();
        c.swap(i, i + 1);
        assert_eq!(load(&k, &c).expect_err("swapped"), ErrorCode::StoreTampered, "swap {i}");
    }
    // A record sealed under another key (another enclave's store) does not verify.
    let (other, _) = key().chain(Head::EMPTY, &records()).expect("seal");
    assert_eq!(load(&k, &other).expect_err("foreign"), ErrorCode::StoreTampered);
    // A store may start at a complete snapshot, never at an arbitrary record.
    let (snap, _) = k
        .chain(
            Head { version: 10, mac: random() },
            &[
                Record::SnapshotBegin { id: 1 },
                Record::NonceConsumed {
                    attempt: AttemptId::from_bytes(random()),
                    seat: ParticipantId::new(1).expect("p"),
                },
                Record::SnapshotEnd { id: 1 },
            ],
        )
        .expect("seal");
    assert!(load(&k, &snap).is_ok());
    assert_eq!(load(&k, &snap[..2]).expect_err("incomplete snapshot"), ErrorCode::StoreTampered);
    assert_eq!(load(&k, &snap[1..]).expect_err("no snapshot"), ErrorCode::StoreTampered);
}

#[test]
fn the_head_must_equal_the_anchor_or_be_exactly_one_commit_ahead() {
    let k = key();
    let (chain, head) = k.chain(Head::EMPTY, &records()).expect("seal");
    let at = |n: usize| Head { version: chain[n - 1].version, mac: chain[n - 1].mac };
    let prev = |n: usize| Some(chain[n - 1].prev_mac);
    let n = chain.len();
    assert_eq!(check_against_anchor(head, prev(n), head), Ok(false));
    assert_eq!(check_against_anchor(head, prev(n), at(n - 1)), Ok(true), "one ahead: finish the anchor update");
    let code = |r: Result<bool, frostgate_common::Error>| r.expect_err("refused").code();
    assert_eq!(
        code(check_against_anchor(at(n - 1), prev(n - 1), head)),
        ErrorCode::StoreRollbackDetected,
        "last record deleted"
    );
    assert_eq!(code(check_against_anchor(at(2), prev(2), head)), ErrorCode::StoreRollbackDetected, "older copy");
    assert_eq!(code(check_against_anchor(Head::EMPTY, None, head)), ErrorCode::StoreRollbackDetected, "store deleted");
    // One interrupted commit may hold several records: ahead by two records, extending the anchor.
    assert_eq!(check_against_anchor(head, prev(n - 1), at(n - 2)), Ok(true), "multi-record commit");
    // Ahead of the anchor but not extending it: a fork.
    assert_eq!(
        code(check_against_anchor(head, Some(random()), at(n - 2))),
        ErrorCode::StoreTampered,
        "ahead, not extending"
    );
    assert_eq!(code(check_against_anchor(head, None, at(n - 2))), ErrorCode::StoreTampered, "ahead, successor missing");
    assert_eq!(
        code(check_against_anchor(head, prev(n), Head { version: head.version, mac: random() })),
        ErrorCode::StoreTampered,
        "fork"
    );
    assert_eq!(check_against_anchor(Head::EMPTY, None, Head::EMPTY), Ok(false), "fresh store");
}

#[test]
fn the_host_store_refuses_records_that_do_not_continue_its_chain() {
    let dir = tempfile::tempdir().expect("dir");
    let store = frostgate_host::node::store::HostStore::open(&dir.path().join("db")).expect("db");
    let k = key();
    let (chain, _) = k.chain(Head::EMPTY, &records()).expect("seal");
    // An empty store does not accept a chain's middle (the store was lost under a live enclave).
    let e = store.append(&chain[2..], None).expect_err("refused");
    assert_eq!(e.code(), ErrorCode::StoreCommitFailed);
    assert_eq!(store.stats().expect("stats").records, 0, "nothing half-written");
    store.append(&chain[..2], None).expect("start");
    // A gap, a repeat, or a fork is refused; the next record is accepted.
    assert_eq!(store.append(&chain[3..], None).expect_err("gap").code(), ErrorCode::StoreCommitFailed);
    assert_eq!(store.append(&chain[1..2], None).expect_err("repeat").code(), ErrorCode::StoreCommitFailed);
    let (fork, _) = k.chain(Head { version: 2, mac: random() }, &records()[..1]).expect("seal");
    assert_eq!(store.append(&fork, None).expect_err("fork").code(), ErrorCode::StoreCommitFailed);
    assert_eq!(store.append(&chain[2..], None).expect("continue"), chain.len() as u64);
    assert_eq!(store.records().expect("records"), chain);
}

#[test]
fn a_store_ahead_by_one_interrupted_multi_record_commit_loads() {
    let k = key();
    let rs = records();
    // Commit 1: two records, anchored. Commit 2: three records, committed but not anchored.
    let (first, anchored) = k.chain(Head::EMPTY, &rs[..2]).expect("seal");
    let (second, head) = k.chain(anchored, &rs[2..]).expect("seal");
    let chain: Vec<_> = first.iter().chain(second.iter()).cloned().collect();
    let mut l = Loader::for_anchor(anchored.version);
    l.push(&k, &chain).expect("verifies");
    let v = l.finish_with_successor().expect("finish");
    assert_eq!(v.head, head);
    assert_eq!(check_against_anchor(v.head, v.successor_prev, anchored), Ok(true));
    // A store that ends at the first commit while the anchor is at the second: rollback.
    let mut l = Loader::for_anchor(head.version);
    l.push(&k, &first).expect("verifies");
    let v = l.finish_with_successor().expect("finish");
    assert_eq!(
        check_against_anchor(v.head, v.successor_prev, head).expect_err("behind").code(),
        ErrorCode::StoreRollbackDetected
    );
}

/// A commit's last record is MACed as its end, so a verified store says whether it ends on a
/// commit boundary: a store cut inside a commit cannot pass for a whole one, and relabelling a
/// record as an end (or the reverse) breaks its MAC.
#[test]
fn a_store_says_whether_it_ends_on_a_commit_boundary() {
    let k = key();
    let ends = |chain: &[StoreRecord]| {
        let mut l = Loader::default();
        l.push(&k, chain).expect("verifies");
        l.finish_with_successor().expect("finish").ends_commit
    };
    let (first, head) = k.chain(Head::EMPTY, &records()).expect("seal");
    let (second, _) = k.chain(head, &records()[..3]).expect("seal");
    let both: Vec<StoreRecord> = first.iter().chain(&second).cloned().collect();
    assert!(ends(&first) && ends(&both), "whole commits");
    for cut in 1..first.len() {
        assert!(!ends(&first[..cut]), "cut after record {cut} of the first commit");
    }
    for cut in 1..second.len() {
        assert!(!ends(&both[..first.len() + cut]), "cut inside the second commit");
    }
    assert!(ends(&[]), "an empty store");
    // One record alone is a commit's whole (its own end).
    let (one, _) = k.chain(Head::EMPTY, &records()[..1]).expect("seal");
    assert!(ends(&one));
    // Whether a record ends its commit is inside its MAC: the same record at the same place,
    // once in the middle of a commit and once at its end, has two MACs, and neither passes as
    // the other.
    let rs = records();
    let (whole, _) = k.chain(Head::EMPTY, &rs).expect("seal");
    let (short, _) = k.chain(Head::EMPTY, &rs[..2]).expect("seal");
    assert_eq!((whole[0].mac, whole[1].prev_mac, &whole[1].body), (short[0].mac, short[1].prev_mac, &short[1].body));
    assert_ne!(whole[1].mac, short[1].mac);
    let mut middle_as_end = whole[..2].to_vec();
    middle_as_end[1].mac = short[1].mac;
    middle_as_end.push(whole[2].clone());
    let mut l = Loader::default();
    assert_eq!(l.push(&k, &middle_as_end).map_err(|e| e.code()), Err(ErrorCode::StoreTampered));
}

//! Per-layer costs: frame codec, HSM sealing (SoftHSM), record MAC, store commits (SQLite,
//! synchronous=FULL), and the engine's rounds. Run: `cargo bench -p frostgate-tests --bench layers`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use frostgate_common::frame::{self, Frame};
use frostgate_common::ids::{KeyId, ParticipantId};
use frostgate_common::protocol::*;
use frostgate_enclave::markers::{MemoryStore, Record};
use frostgate_enclave::rounds::{Engine, Limits};
use frostgate_enclave::sealing::{seal, unseal, SealContext, SealedKind};
use frostgate_enclave::service::Service;
use frostgate_enclave::store::chain::{Head, StoreKey};
use frostgate_host::node::store::HostStore;
use frostgate_tests::signing::*;
use frostgate_tests::token::TokenDir;
use std::sync::Arc;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

fn bench(c: &mut Criterion) {
    let dir = TokenDir::new();
    let token = dir.add_token("bench");
    token.export_env();
    let custody = Arc::new(token.open_custody());

    // Frame codec: a 2-of-3 round-2 request.
    let rt = rt();
    // Bounds far above what a benchmark run opens (every iteration opens a session).
    let limits = Limits { max_sessions: 1 << 22, max_attempts: 1 << 22, max_live_nonces: 1 << 22, ..Limits::default() };
    let service =
        Arc::new(Service::from_engine(Some(Engine::new(custody.clone(), Arc::new(MemoryStore::new()), limits))));
    let caller = Caller::Service(service.clone());
    let key = rt.block_on(dealer(&caller, 2, 3));
    let p = rt.block_on(prepare(&caller, key.key, &[pid(1), pid(2)], TaprootMode::Bip86));
    let request = Message::Round2(Round2 {
        attempt: p.attempt,
        seat: pid(1),
        mode: p.mode,
        signing_package: frostgate_common::bounded::SigningPackageBytes::new(p.package.clone()).expect("b"),
    });
    let encoded = frame::encode(&Frame { request_id: 7, message: request.clone() }).expect("encode");
    c.bench_function("frame/encode round2", |b| {
        b.iter(|| frame::encode(&Frame { request_id: 7, message: request.clone() }))
    });
    c.bench_function("frame/decode round2", |b| b.iter(|| frame::decode_body(&encoded[4..])));
    // What signing a derived key adds per session (each enclave derives the child's package; each
    // share adds d to the seat's key package), and what a PSBT session adds (parse, checks, sighash).
    let (_, public) = frost_secp256k1_tr::keys::generate_with_dealer(
        3,
        2,
        frost_secp256k1_tr::keys::IdentifierList::Default,
        frost_secp256k1_tr::rand_core::OsRng,
    )
    .expect("dealer");
    c.bench_function("derive/child package 0/5 of a 2-of-3 key", |b| {
        b.iter(|| frostgate_enclave::derive::derive(&public, &[0, 5]).expect("derive"))
    });
    let record = frostgate_enclave::keys::KeyRecord::new(public.clone(), Default::default()).expect("record");
    let out =
        frostgate_enclave::taproot::output_key(&public, &frostgate_common::protocol::TaprootMode::Bip86).expect("out");
    let psbt = frostgate_tests::psbt::spend(
        record.key_id.as_bytes(),
        &out,
        &[70_000, 30_000],
        &[(frostgate_tests::psbt::random_address().script_pubkey(), 99_000)],
    )
    .serialize();
    c.bench_function("psbt/check 2-input PSBT (parse, key checks, sighash)", |b| {
        b.iter(|| frostgate_enclave::psbt::check(&psbt, 0, &record).expect("check"))
    });

    // HSM sealing of a key-package-sized secret.
    let ctx =
        SealContext { kind: SealedKind::KeyShare, key_id: KeyId::from_bytes([1; 32]), participant: pid(1), epoch: 0 };
    let plain = vec![7u8; 200];
    let blob = seal(&custody, &ctx, &plain).expect("seal");
    c.bench_function("hsm/seal 200B (AES-GCM in SoftHSM)", |b| b.iter(|| seal(&custody, &ctx, &plain)));
    c.bench_function("hsm/unseal 200B", |b| b.iter(|| unseal(&custody, &ctx, &blob)));

    // The HSM anchor update paid once per commit (one slot's label rewritten in place).
    let mut anchored = Head::EMPTY;
    let anchor_key = StoreKey::new(custody.derive_store_key().expect("store key"));
    let cache = frostgate_enclave::store::anchor::Cache::default();
    c.bench_function("hsm/anchor update (a slot rewritten in place)", |b| {
        b.iter(|| {
            let next = Head { version: anchored.version + 1, mac: [9; 32] };
            let r = frostgate_enclave::store::anchor::update(&custody, &anchor_key, anchored, next, &cache);
            anchored = next;
            r
        })
    });

    // Record MAC (HMAC-SHA256, ring) of one consumed marker.
    let store_key = StoreKey::new(zeroize::Zeroizing::new([3u8; 32]));
    let record = vec![Record::NonceConsumed { attempt: p.attempt, seat: ParticipantId::new(1).expect("p") }];
    c.bench_function("store/chain+MAC 1 record", |b| b.iter(|| store_key.chain(Head::EMPTY, &record)));

    // Host store commits: one durable SQLite transaction per batch.
    for batch in [1usize, 8, 32, 128] {
        let db_dir = tempfile::tempdir().expect("dir");
        let store = HostStore::open(&db_dir.path().join("bench.db")).expect("db");
        let records: Vec<Record> = (0..batch).map(|_| record[0].clone()).collect();
        let mut head = Head::EMPTY;
        c.bench_function(&format!("store/commit batch of {batch} (synchronous=FULL)"), |b| {
            b.iter(|| {
                let (sealed, next) = store_key.chain(head, &records).expect("seal");
                store.append(&sealed, None).expect("append");
                head = next;
            })
        });
    }

    // Engine rounds, 2-of-3, in process (markers in memory).
    c.bench_function("engine/round1", |b| {
        b.iter_batched(
            || {
                rt.block_on(async {
                    let (s, _) = open_session(&caller, key.key, random(), TaprootMode::Bip86).await.expect("s");
                    open_attempt(&caller, s, &[pid(1), pid(2)]).await.expect("a")
                })
            },
            |attempt| rt.block_on(round1(&caller, attempt, pid(1))),
            BatchSize::SmallInput,
        )
    });
    c.bench_function("engine/round2", |b| {
        b.iter_batched(
            || rt.block_on(prepare(&caller, key.key, &[pid(1), pid(2)], TaprootMode::Bip86)),
            |p| rt.block_on(round2(&caller, p.attempt, pid(1), p.mode, &p.package)),
            BatchSize::SmallInput,
        )
    });
    c.bench_function("engine/aggregate", |b| {
        b.iter_batched(
            || {
                rt.block_on(async {
                    let p = prepare(&caller, key.key, &[pid(1), pid(2)], TaprootMode::Bip86).await;
                    let shares = sign_all(&caller, &p).await;
                    (p, shares)
                })
            },
            |(p, shares)| rt.block_on(aggregate(&caller, p.attempt, p.mode, &p.package, &shares)),
            BatchSize::SmallInput,
        )
    });
}

criterion_group! {
    name = layers;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_millis(300));
    targets = bench
}
criterion_main!(layers);

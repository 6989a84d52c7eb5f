//! The signing engine against a real SoftHSM token, through the boundary messages (in process).
//! Every signature is checked by libsecp256k1 and every output key by rust-bitcoin.

use frostgate_common::error::{ErrorCode, RecoveryClass};
use frostgate_common::ids::AttemptId;
use frostgate_common::protocol::*;
use frostgate_enclave::custody::Custody;
use frostgate_enclave::markers::{MarkerStore, MemoryStore, PersistError, PersistFuture, Record};
use frostgate_enclave::rounds::{Engine, Limits};
use frostgate_enclave::service::Service;
use frostgate_tests::signing::*;
use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn custody() -> Arc<Custody> {
    frostgate_tests::token::shared_custody()
}

fn engine_with(store: Arc<dyn MarkerStore>, limits: Limits) -> (Caller, Arc<Service>) {
    let service = Arc::new(Service::from_engine(Some(Engine::new(custody(), store, limits))));
    (Caller::Service(service.clone()), service)
}

fn caller() -> Caller {
    engine_with(Arc::new(MemoryStore::new()), Limits::default()).0
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

fn code<T: std::fmt::Debug>(r: Result<T, frostgate_common::Error>) -> ErrorCode {
    r.expect_err("expected an error").code()
}

fn signed(o: AggregateOutcome) -> (Bip340Signature, [u8; 32]) {
    match o {
        AggregateOutcome::Signed { signature, output_key } => (signature, output_key),
        other => panic!("not signed: {other:?}"),
    }
}

fn modes() -> Vec<TaprootMode> {
    vec![TaprootMode::Bip86, TaprootMode::ScriptTree { merkle_root: random() }, TaprootMode::Untweaked]
}

#[test]
fn t_of_n_in_every_taproot_mode_verifies_under_libsecp256k1_and_rust_bitcoin() {
    rt().block_on(async {
        let c = caller();
        for (t, n) in [(2u16, 3u16), (3, 5), (7, 10)] {
            let key = dealer(&c, t, n).await;
            assert_eq!(key.threshold, t);
            assert_eq!(key.seats.as_inner().len(), n as usize);
            assert_eq!(key.bip86_output_key, bitcoin_output_key(key.key.as_bytes(), &TaprootMode::Bip86));
            // Use the last t participants, so the signer set is not simply 1..=t.
            let signers: Vec<_> = ((n - t + 1)..=n).map(pid).collect();
            for mode in modes() {
                let p = prepare(&c, key.key, &signers, mode).await;
                assert_eq!(
                    p.output_key,
                    bitcoin_output_key(key.key.as_bytes(), &mode),
                    "{t}-of-{n} {mode:?}: output key"
                );
                let shares = sign_all(&c, &p).await;
                for (s, share) in &shares {
                    assert_eq!(
                        verify_share(&c, p.attempt, &p.package, *s, share).await.expect("verdict"),
                        ShareVerdict::Valid
                    );
                }
                let (sig, out) = signed(aggregate(&c, p.attempt, mode, &p.package, &shares).await.expect("aggregate"));
                assert_eq!(out, p.output_key);
                assert!(libsecp_verifies(&sig, &p.message, &out), "{t}-of-{n} {mode:?}: libsecp256k1 rejects");
                assert!(!libsecp_verifies(&sig, &random(), &out), "a signature must not verify another message");
            }
        }
    });
}

#[test]
fn dkg_origin_keys_use_the_same_internal_and_output_key_definitions() {
    // The DKG's part 3 applies the ciphersuite's key-only tweak to the group key; whatever key
    // results is the internal key, and output keys derive from it exactly as for dealer keys.
    use frost_secp256k1_tr::keys::dkg;
    let ids: Vec<_> = (1..=3u16).map(|i| frost_secp256k1_tr::Identifier::try_from(i).expect("id")).collect();
    let mut r1_secret = BTreeMap::new();
    let mut r1_public = BTreeMap::new();
    for id in &ids {
        let (s, p) = dkg::part1(*id, 3, 2, frost_secp256k1_tr::rand_core::OsRng).expect("part1");
        r1_secret.insert(*id, s);
        r1_public.insert(*id, p);
    }
    let mut r2_secret = BTreeMap::new();
    let mut r2_out: BTreeMap<_, BTreeMap<_, _>> = BTreeMap::new();
    for id in &ids {
        let others: BTreeMap<_, _> = r1_public.iter().filter(|(k, _)| *k != id).map(|(k, v)| (*k, v.clone())).collect();
        let (s, packages) = dkg::part2(r1_secret.remove(id).expect("secret"), &others).expect("part2");
        r2_secret.insert(*id, s);
        for (to, pkg) in packages {
            r2_out.entry(to).or_default().insert(*id, pkg);
        }
    }
    let id = ids[0];
    let others: BTreeMap<_, _> = r1_public.iter().filter(|(k, _)| **k != id).map(|(k, v)| (*k, v.clone())).collect();
    let (_kp, public) = dkg::part3(&r2_secret[&id], &others, &r2_out[&id]).expect("part3");
    let key = frostgate_enclave::keys::key_id_of(&public).expect("key id");
    for mode in modes() {
        assert_eq!(
            frostgate_enclave::taproot::output_key(&public, &mode).expect("output key"),
            bitcoin_output_key(key.as_bytes(), &mode),
            "{mode:?}"
        );
    }
}

#[test]
fn a_second_round2_for_a_consumed_nonce_is_rejected_whatever_its_package() {
    rt().block_on(async {
        let c = caller();
        let key = dealer(&c, 2, 3).await;
        let p = prepare(&c, key.key, &[pid(1), pid(2)], TaprootMode::Bip86).await;
        round2(&c, p.attempt, pid(1), p.mode, &p.package).await.expect("first share");
        // Same package again, and a different (even valid-looking) package: both refused.
        assert_eq!(code(round2(&c, p.attempt, pid(1), p.mode, &p.package).await), ErrorCode::NonceAlreadyConsumed);
        let other = package(&p.commitments, &random::<32>());
        let e = round2(&c, p.attempt, pid(1), p.mode, &other).await.expect_err("refused");
        assert_eq!(e.code(), ErrorCode::NonceAlreadyConsumed);
        assert_eq!(e.recovery_class(), RecoveryClass::NewAttempt);
        // Round 1 for a consumed seat does not hand out new nonces either.
        assert_eq!(code(round1(&c, p.attempt, pid(1)).await), ErrorCode::NonceAlreadyConsumed);
    });
}

#[test]
fn bad_packages_are_rejected_before_any_nonce_is_consumed() {
    rt().block_on(async {
        let c = caller();
        let key = dealer(&c, 2, 3).await;
        let p = prepare(&c, key.key, &[pid(1), pid(2)], TaprootMode::ScriptTree { merkle_root: random() }).await;
        let seat = pid(1);
        // A commitment from another attempt, to swap in for this seat's own.
        let q = prepare(&c, key.key, &[pid(1), pid(2)], p.mode).await;
        let mut swapped = p.commitments.clone();
        swapped.insert(seat, q.commitments[&seat].clone());
        let mut missing_own = p.commitments.clone();
        missing_own.remove(&seat);
        missing_own.insert(pid(3), round1(&c, q.attempt, pid(2)).await.expect("any commitment"));
        let mut extra = p.commitments.clone();
        extra.insert(pid(3), q.commitments[&pid(2)].clone());
        let mut missing_other = p.commitments.clone();
        missing_other.remove(&pid(2));
        let cases: Vec<(&str, Vec<u8>, TaprootMode, ErrorCode)> = vec![
            ("wrong message", package(&p.commitments, &random::<32>()), p.mode, ErrorCode::SigningPackageMismatch),
            ("swapped own commitment", package(&swapped, &p.message), p.mode, ErrorCode::SigningPackageMismatch),
            ("missing own commitment", package(&missing_own, &p.message), p.mode, ErrorCode::SigningPackageMismatch),
            ("extra signer", package(&extra, &p.message), p.mode, ErrorCode::SigningPackageMismatch),
            ("missing signer", package(&missing_other, &p.message), p.mode, ErrorCode::SigningPackageMismatch),
            (
                "different root",
                p.package.clone(),
                TaprootMode::ScriptTree { merkle_root: random() },
                ErrorCode::SigningPackageMismatch,
            ),
            ("bip86 instead of root", p.package.clone(), TaprootMode::Bip86, ErrorCode::SigningPackageMismatch),
            ("garbage package", vec![0xff; 40], p.mode, ErrorCode::InvalidEncoding),
        ];
        for (name, pkg, mode, expected) in cases {
            assert_eq!(code(round2(&c, p.attempt, seat, mode, &pkg).await), expected, "{name}");
            // Nothing consumed: round 1 still returns the same commitments.
            assert_eq!(round1(&c, p.attempt, seat).await.expect("still live"), p.commitments[&seat], "{name}");
        }
        // The correct package still signs, and the result aggregates into a valid signature.
        let shares = sign_all(&c, &p).await;
        let (sig, out) = signed(aggregate(&c, p.attempt, p.mode, &p.package, &shares).await.expect("aggregate"));
        assert!(libsecp_verifies(&sig, &p.message, &out));
    });
}

#[test]
fn sixty_four_racing_round2_or_aggregate_requests_give_exactly_one_success() {
    rt().block_on(async {
        let c = caller();
        let key = dealer(&c, 2, 3).await;
        let p = prepare(&c, key.key, &[pid(2), pid(3)], TaprootMode::Bip86).await;
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let (c, p) = (c.clone(), p.clone());
                tokio::spawn(async move { round2(&c, p.attempt, pid(2), p.mode, &p.package).await })
            })
            .collect();
        let mut ok = Vec::new();
        for t in tasks {
            match t.await.expect("join") {
                Ok(share) => ok.push(share),
                Err(e) => assert_eq!(e.code(), ErrorCode::NonceAlreadyConsumed),
            }
        }
        assert_eq!(ok.len(), 1, "exactly one share released");
        let mut shares = BTreeMap::from([(pid(2), ok.remove(0))]);
        shares.insert(pid(3), round2(&c, p.attempt, pid(3), p.mode, &p.package).await.expect("share"));
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let (c, p, shares) = (c.clone(), p.clone(), shares.clone());
                tokio::spawn(async move { aggregate(&c, p.attempt, p.mode, &p.package, &shares).await })
            })
            .collect();
        let mut signatures = Vec::new();
        for t in tasks {
            match t.await.expect("join") {
                Ok(o) => signatures.push(signed(o)),
                Err(e) => {
                    assert_eq!(e.code(), ErrorCode::AttemptCompleted);
                    assert_eq!(e.recovery_class(), RecoveryClass::NewAttempt);
                }
            }
        }
        assert_eq!(signatures.len(), 1, "exactly one aggregate");
        assert!(libsecp_verifies(&signatures[0].0, &p.message, &signatures[0].1));
    });
}

#[test]
fn ids_spelled_differently_hit_the_same_markers() {
    rt().block_on(async {
        let c = caller();
        let key = dealer(&c, 2, 3).await;
        let p = prepare(&c, key.key, &[pid(1), pid(3)], TaprootMode::Untweaked).await;
        let lower = p.attempt.to_string();
        let upper = AttemptId::from_str(&lower.to_uppercase()).expect("upper");
        let mixed: String =
            lower.chars().enumerate().map(|(i, ch)| if i % 2 == 0 { ch.to_ascii_uppercase() } else { ch }).collect();
        let mixed = AttemptId::from_str(&mixed).expect("mixed");
        assert_eq!(round1(&c, upper, pid(1)).await.expect("same nonce"), p.commitments[&pid(1)]);
        round2(&c, mixed, pid(1), p.mode, &p.package).await.expect("share");
        assert_eq!(code(round2(&c, upper, pid(1), p.mode, &p.package).await), ErrorCode::NonceAlreadyConsumed);
        let seat: frostgate_common::ids::ParticipantId = "0001".parse().expect("seat");
        assert_eq!(code(round2(&c, p.attempt, seat, p.mode, &p.package).await), ErrorCode::NonceAlreadyConsumed);
    });
}

#[test]
fn the_ttl_sweep_wipes_nonces_and_touches_neither_markers_nor_keys() {
    rt().block_on(async {
        let limits = Limits { nonce_ttl: Duration::from_secs(60), ..Limits::default() };
        let (c, service) = engine_with(Arc::new(MemoryStore::new()), limits);
        let engine = service.engine().expect("engine");
        let key = dealer(&c, 2, 3).await;
        let done = prepare(&c, key.key, &[pid(1), pid(2)], TaprootMode::Bip86).await;
        round2(&c, done.attempt, pid(1), done.mode, &done.package).await.expect("share");
        let p = prepare(&c, key.key, &[pid(1), pid(2)], TaprootMode::Bip86).await;
        let before = engine.counts();
        assert_eq!(before.live_nonces, 3);
        assert_eq!(engine.sweep(Instant::now()), 0, "nothing expired yet");
        assert_eq!(engine.sweep(Instant::now() + Duration::from_secs(61)), 3);
        let after = engine.counts();
        assert_eq!(after.live_nonces, 0);
        assert_eq!(
            (after.keys, after.consumed_markers, after.completed_markers),
            (before.keys, before.consumed_markers, before.completed_markers)
        );
        assert_eq!(code(round2(&c, p.attempt, pid(1), p.mode, &p.package).await), ErrorCode::NonceUnavailable);
        assert_eq!(
            code(round2(&c, done.attempt, pid(1), done.mode, &done.package).await),
            ErrorCode::NonceAlreadyConsumed
        );
        // The key still signs in a new attempt.
        let q = prepare(&c, key.key, &[pid(1), pid(2)], TaprootMode::Bip86).await;
        let shares = sign_all(&c, &q).await;
        let (sig, out) = signed(aggregate(&c, q.attempt, q.mode, &q.package, &shares).await.expect("aggregate"));
        assert!(libsecp_verifies(&sig, &q.message, &out));
    });
}

#[test]
fn a_corrupted_share_is_named_a_candidate_culprit_and_completion_is_final() {
    rt().block_on(async {
        let c = caller();
        let key = dealer(&c, 3, 5).await;
        let p = prepare(&c, key.key, &[pid(1), pid(3), pid(5)], TaprootMode::Bip86).await;
        let shares = sign_all(&c, &p).await;
        let mut bad = shares.clone();
        let s = bad.get_mut(&pid(3)).expect("share");
        let last = s.len() - 1;
        s[last] ^= 1;
        assert_eq!(
            verify_share(&c, p.attempt, &p.package, pid(3), &bad[&pid(3)]).await.expect("v"),
            ShareVerdict::Invalid
        );
        assert_eq!(
            verify_share(&c, p.attempt, &p.package, pid(1), &bad[&pid(1)]).await.expect("v"),
            ShareVerdict::Valid
        );
        assert_eq!(
            verify_share(&c, p.attempt, &p.package, pid(2), &bad[&pid(1)]).await.expect("v"),
            ShareVerdict::Indeterminate
        );
        match aggregate(&c, p.attempt, p.mode, &p.package, &bad).await.expect("outcome") {
            AggregateOutcome::InvalidShares { candidate_culprits } => {
                assert_eq!(candidate_culprits.as_inner(), &[pid(3)])
            }
            other => panic!("expected culprits, got {other:?}"),
        }
        // Garbage that does not decode is also a candidate culprit.
        let mut garbage = shares.clone();
        garbage.insert(pid(5), vec![0xff; 3]);
        match aggregate(&c, p.attempt, p.mode, &p.package, &garbage).await.expect("outcome") {
            AggregateOutcome::InvalidShares { candidate_culprits } => {
                assert_eq!(candidate_culprits.as_inner(), &[pid(5)])
            }
            other => panic!("expected culprits, got {other:?}"),
        }
        // Failed aggregations did not complete the attempt; the honest shares still do.
        let (sig, out) = signed(aggregate(&c, p.attempt, p.mode, &p.package, &shares).await.expect("aggregate"));
        assert!(libsecp_verifies(&sig, &p.message, &out));
        let e = aggregate(&c, p.attempt, p.mode, &p.package, &shares).await.expect_err("completed");
        assert_eq!((e.code(), e.recovery_class()), (ErrorCode::AttemptCompleted, RecoveryClass::NewAttempt));
        // A share set that does not match the attempt's signers is refused outright.
        let mut short = shares.clone();
        short.remove(&pid(5));
        let q = prepare(&c, key.key, &[pid(1), pid(3), pid(5)], TaprootMode::Bip86).await;
        assert_eq!(code(aggregate(&c, q.attempt, q.mode, &q.package, &short).await), ErrorCode::SigningPackageMismatch);
    });
}

/// A marker store whose next persists fail in a chosen way.
#[derive(Debug, Default)]
struct FaultyStore {
    inner: MemoryStore,
    next: Mutex<Vec<Option<PersistError>>>,
}

impl MarkerStore for FaultyStore {
    fn persist(&self, records: Vec<Record>) -> PersistFuture<'_> {
        let fault = self.next.lock().expect("lock").pop().flatten();
        match fault {
            Some(e) => Box::pin(async move { Err(e) }),
            None => self.inner.persist(records),
        }
    }

    fn persist_detached(&self, records: Vec<Record>) -> PersistFuture<'static> {
        self.inner.persist_detached(records)
    }
}

#[test]
fn persist_failures_roll_back_or_burn_the_nonce_and_never_release_two_shares() {
    rt().block_on(async {
        let store = Arc::new(FaultyStore::default());
        let (c, _service) = engine_with(store.clone(), Limits::default());
        let key = dealer(&c, 2, 3).await;
        let fail = |e: PersistError| store.next.lock().expect("lock").push(Some(e));
        let io = frostgate_common::Error::new(ErrorCode::ChannelIo, "injected");

        // Not written: rolled back, nonce stays live, the same request then succeeds.
        let p = prepare(&c, key.key, &[pid(1), pid(2)], TaprootMode::Bip86).await;
        fail(PersistError::NotWritten(io.clone()));
        let e = round2(&c, p.attempt, pid(1), p.mode, &p.package).await.expect_err("not written");
        assert_eq!((e.code(), e.recovery_class()), (ErrorCode::StoreCommitFailed, RecoveryClass::Retry));
        assert_eq!(round1(&c, p.attempt, pid(1)).await.expect("still live"), p.commitments[&pid(1)]);
        round2(&c, p.attempt, pid(1), p.mode, &p.package).await.expect("retry succeeds");
        let consumed =
            |s: &FaultyStore| s.inner.records().iter().filter(|r| matches!(r, Record::NonceConsumed { .. })).count();
        assert_eq!(consumed(&store), 1, "exactly one durable consumed marker");

        // Outcome unknown: marker kept, nonce wiped; the attempt can never produce that share.
        fail(PersistError::Unknown(io.clone()));
        let e = round2(&c, p.attempt, pid(2), p.mode, &p.package).await.expect_err("unknown");
        assert_eq!((e.code(), e.recovery_class()), (ErrorCode::StoreOutcomeUnknown, RecoveryClass::NewAttempt));
        assert_eq!(code(round2(&c, p.attempt, pid(2), p.mode, &p.package).await), ErrorCode::NonceAlreadyConsumed);
        assert_eq!(code(round1(&c, p.attempt, pid(2)).await), ErrorCode::NonceAlreadyConsumed);

        // Aggregation: not written -> retry allowed; unknown -> attempt completed for good.
        let q = prepare(&c, key.key, &[pid(1), pid(2)], TaprootMode::Bip86).await;
        let shares = sign_all(&c, &q).await;
        fail(PersistError::NotWritten(io.clone()));
        assert_eq!(code(aggregate(&c, q.attempt, q.mode, &q.package, &shares).await), ErrorCode::StoreCommitFailed);
        fail(PersistError::Unknown(io));
        assert_eq!(code(aggregate(&c, q.attempt, q.mode, &q.package, &shares).await), ErrorCode::StoreOutcomeUnknown);
        assert_eq!(code(aggregate(&c, q.attempt, q.mode, &q.package, &shares).await), ErrorCode::AttemptCompleted);
    });
}

#[test]
fn session_attempt_and_seat_errors_have_their_codes() {
    rt().block_on(async {
        let limits = Limits { max_sessions: 3, max_live_nonces: 2, ..Limits::default() };
        let (c, _s) = engine_with(Arc::new(MemoryStore::new()), limits);
        let key = dealer(&c, 2, 3).await;
        let unknown_key = frostgate_common::ids::KeyId::from_bytes(random());
        assert_eq!(code(open_session(&c, unknown_key, random(), TaprootMode::Bip86).await), ErrorCode::UnknownKey);
        let (session, _) = open_session(&c, key.key, [1; 32], TaprootMode::Bip86).await.expect("session");
        // Identical rebinding is accepted; any difference conflicts.
        let same = OpenSession { session, key: key.key, message: [1; 32], mode: TaprootMode::Bip86 };
        assert!(c.call(Message::OpenSession(same.clone())).await.is_ok());
        let conflict = OpenSession { message: [2; 32], ..same.clone() };
        assert_eq!(code(c.call(Message::OpenSession(conflict)).await), ErrorCode::SessionConflict);
        let conflict = OpenSession { mode: TaprootMode::Untweaked, ..same };
        assert_eq!(code(c.call(Message::OpenSession(conflict)).await), ErrorCode::SessionConflict);

        let unknown_session = frostgate_common::ids::SessionId::from_bytes(random());
        assert_eq!(code(open_attempt(&c, unknown_session, &[pid(1), pid(2)]).await), ErrorCode::UnknownSession);
        for bad in [vec![pid(2), pid(1)], vec![pid(1)], vec![pid(1), pid(1)], vec![pid(1), pid(4)], vec![]] {
            assert_eq!(code(open_attempt(&c, session, &bad).await), ErrorCode::SignerSetInvalid, "{bad:?}");
        }
        let attempt = open_attempt(&c, session, &[pid(1), pid(2)]).await.expect("attempt");
        let again = OpenAttempt {
            session,
            attempt,
            signers: frostgate_common::bounded::Signers::new(vec![pid(1), pid(3)]).expect("b"),
        };
        assert_eq!(code(c.call(Message::OpenAttempt(again)).await), ErrorCode::AttemptConflict);
        assert_eq!(code(round1(&c, attempt, pid(3)).await), ErrorCode::SeatNotHeld);
        assert_eq!(code(round1(&c, AttemptId::from_bytes(random()), pid(1)).await), ErrorCode::UnknownAttempt);
        assert_eq!(code(round2(&c, attempt, pid(1), TaprootMode::Bip86, &[1, 2, 3]).await), ErrorCode::InvalidEncoding);

        // Bounds: live nonces and sessions.
        round1(&c, attempt, pid(1)).await.expect("nonce 1");
        round1(&c, attempt, pid(2)).await.expect("nonce 2");
        let (s2, _) = open_session(&c, key.key, [3; 32], TaprootMode::Bip86).await.expect("session 2");
        let a2 = open_attempt(&c, s2, &[pid(1), pid(2)]).await.expect("attempt 2");
        let e = round1(&c, a2, pid(1)).await.expect_err("full");
        assert_eq!((e.code(), e.recovery_class()), (ErrorCode::RegistryFull, RecoveryClass::Retry));
        open_session(&c, key.key, [4; 32], TaprootMode::Bip86).await.expect("session 3");
        assert_eq!(code(open_session(&c, key.key, [5; 32], TaprootMode::Bip86).await), ErrorCode::RegistryFull);

        // Abort wipes the attempt's nonces; the attempt is gone.
        assert_eq!(c.request(AttemptRef { attempt }).await.expect("abort").wiped_count, 2);
        assert_eq!(code(round1(&c, attempt, pid(1)).await), ErrorCode::UnknownAttempt);
        round1(&c, a2, pid(1)).await.expect("room again after abort");
    });
}

#[test]
fn an_enclave_without_custody_refuses_signing_requests() {
    rt().block_on(async {
        let c = Caller::Service(Arc::new(Service::from_engine(None)));
        let e = c
            .call(Message::DevDealerKeygen(DevDealerKeygen { threshold: 2, participants: 3 }))
            .await
            .expect_err("refused");
        assert_eq!(e.code(), ErrorCode::CustodyNotConfigured);
    });
}

#[test]
fn no_share_byte_string_crosses_the_boundary_in_a_full_signing_flow() {
    rt().block_on(async {
        let service = Arc::new(Service::from_engine(Some(Engine::new(
            custody(),
            Arc::new(MemoryStore::new()),
            Limits::default(),
        ))));
        let frames = Arc::new(Mutex::new(Vec::new()));
        let c = Caller::Recording(service.clone(), frames.clone());
        let key = dealer(&c, 3, 5).await;
        for mode in modes() {
            let p = prepare(&c, key.key, &[pid(1), pid(2), pid(4)], mode).await;
            let shares = sign_all(&c, &p).await;
            for (s, share) in &shares {
                verify_share(&c, p.attempt, &p.package, *s, share).await.expect("verdict");
            }
            signed(aggregate(&c, p.attempt, mode, &p.package, &shares).await.expect("aggregate"));
        }
        let engine = service.engine().expect("engine");
        let record = engine.key(&key.key).expect("key");
        let frames = frames.lock().expect("lock");
        assert!(frames.len() > 40);
        for seat in record.seats.keys() {
            let package = record.unseal(engine.custody(), *seat).expect("unseal");
            let secret = package.signing_share().serialize();
            assert_eq!(secret.len(), 32);
            for f in frames.iter() {
                assert!(
                    !f.windows(secret.len()).any(|w| w == secret.as_slice()),
                    "seat {seat}'s share crossed the boundary"
                );
                // Nor its byte-reversed form (a little-endian scalar encoding).
                let rev: Vec<u8> = secret.iter().rev().copied().collect();
                assert!(!f.windows(rev.len()).any(|w| w == rev.as_slice()));
            }
        }
    });
}

/// The audit trail and the window charges are part of the engine's snapshot (what compaction
/// writes), so compaction keeps them; a replayed engine has the same audit trail and budget.
#[test]
fn compaction_keeps_the_audit_trail_and_the_window() {
    use frostgate_common::bounded::PsbtBytes;
    use frostgate_enclave::policy::{Policy, PolicyConfig};
    rt().block_on(async {
        let destination = frostgate_tests::psbt::random_address();
        let policy = frostgate_tests::psbt::window_policy(&destination, 150_000);
        let store = Arc::new(MemoryStore::new());
        let engine = Engine::new(custody(), store.clone(), Limits::default()).with_policy(policy.clone());
        let service = Arc::new(Service::from_engine(Some(engine)));
        let c = Caller::Service(service.clone());
        // The dealer is a development path; the policy does not restrict key creation.
        let key = dealer(&c, 2, 3).await;
        let out = key.bip86_output_key;
        let psbt = frostgate_tests::psbt::spend(
            key.key.as_bytes(),
            &out,
            &[70_000],
            &[(destination.script_pubkey(), 60_000), (frostgate_tests::psbt::p2tr(&out), 9_000)],
        );
        let (bound, sig, output_key) = sign_psbt_input(&c, key.key, &psbt, 0, &[pid(1), pid(2)]).await;
        assert!(libsecp_verifies(&sig, &bound.sighash, &output_key));
        let engine = service.engine().expect("engine");
        let trail = engine.audit_after(0, 100);
        let decisions: Vec<AuditDecision> = trail.iter().map(|e| e.decision).collect();
        assert_eq!(decisions, [AuditDecision::Approved, AuditDecision::Signed, AuditDecision::Signed]);
        // A policy rule of the PSBT check itself (the sighash type) is refused and audited too.
        let mut all =
            frostgate_tests::psbt::spend(key.key.as_bytes(), &out, &[20_000], &[(destination.script_pubkey(), 19_000)]);
        all.inputs[0].sighash_type = Some(bitcoin::psbt::PsbtSighashType::from(bitcoin::sighash::TapSighashType::All));
        let open = OpenPsbtSession {
            session: frostgate_common::ids::SessionId::from_bytes(random()),
            key: key.key,
            input: 0,
            psbt: frostgate_common::bounded::PsbtBytes::new(all.serialize()).expect("bound"),
        };
        assert_eq!(c.request(open).await.expect_err("SIGHASH_ALL").code(), ErrorCode::PolicyViolation);
        let last = engine.audit_after(0, 100).pop().expect("audited");
        assert_eq!(last.decision, AuditDecision::Refused);
        assert!(last.rule.as_inner().starts_with("sighash_type"), "{last:?}");
        let trail = engine.audit_after(0, 100);
        // The snapshot a compaction writes, replayed into a fresh engine.
        let snapshot = engine.snapshot().expect("snapshot");
        assert!(snapshot.iter().any(|r| matches!(r, Record::Charged { sats: 60_000, .. })));
        let fresh = Engine::new(custody(), Arc::new(MemoryStore::new()), Limits::default()).with_policy(policy);
        fresh.replay(&snapshot).expect("replay");
        assert_eq!(fresh.audit_after(0, 100), trail);
        assert_eq!(fresh.counts().sessions, 1);
        // Under another policy, the sessions it approved are dropped at load (not signable).
        let stricter: PolicyConfig = toml::from_str(&format!(
            "network = \"regtest\"\ndestinations = [\"{destination}\"]\nwindow_secs = 3600\nmax_sats_per_window = 1\n"
        ))
        .expect("policy");
        let other = Engine::new(custody(), Arc::new(MemoryStore::new()), Limits::default())
            .with_policy(Policy::from_config(&stricter).expect("valid"));
        other.replay(&snapshot).expect("replay");
        assert_eq!(other.counts().sessions, 0, "a session approved under another policy survived the load");
        // The window came back too: 40,000 left of this enclave's 100,000 (2-of-3 share of 150,000).
        let fresh = Arc::new(Service::from_engine(Some(fresh)));
        let c = Caller::Service(fresh);
        let again =
            frostgate_tests::psbt::spend(key.key.as_bytes(), &out, &[50_000], &[(destination.script_pubkey(), 45_000)]);
        let session = frostgate_common::ids::SessionId::from_bytes(random());
        let e = c
            .request(OpenPsbtSession {
                session,
                key: key.key,
                input: 0,
                psbt: PsbtBytes::new(again.serialize()).expect("bound"),
            })
            .await
            .expect_err("over the replayed window");
        assert_eq!(
            e.message(),
            "max_sats_per_window: 45000 requested, 40000 left of this enclave's 100000 (2-of-3 share of 150000)"
        );
    });
}

/// A round-2 commit reported "not written" keeps the window charge (never given back) and the next
/// share of the same transaction writes the `Charged` record itself, so no share leaves with its
/// charge unwritten (the review's attack: answer the charging commit "failed", let another share's
/// commit through).
#[test]
fn a_charge_whose_commit_failed_is_kept_and_written_with_the_next_share() {
    use frostgate_common::bounded::PsbtBytes;
    rt().block_on(async {
        let destination = frostgate_tests::psbt::random_address();
        let policy = frostgate_tests::psbt::window_policy(&destination, 150_000);
        let store = Arc::new(FaultyStore::default());
        let engine = Engine::new(custody(), store.clone(), Limits::default()).with_policy(policy);
        let c = Caller::Service(Arc::new(Service::from_engine(Some(engine))));
        let key = dealer(&c, 2, 3).await;
        let out = key.bip86_output_key;
        let spend = |sats: u64| {
            frostgate_tests::psbt::spend(
                key.key.as_bytes(),
                &out,
                &[sats + 1_000],
                &[(destination.script_pubkey(), sats)],
            )
        };
        let psbt = spend(60_000);
        let session = frostgate_common::ids::SessionId::from_bytes(random());
        let open =
            OpenPsbtSession { session, key: key.key, input: 0, psbt: PsbtBytes::new(psbt.serialize()).expect("b") };
        let bound = c.request(open).await.expect("approved");
        let attempt = open_attempt(&c, session, &[pid(1), pid(2)]).await.expect("attempt");
        let mut commitments = BTreeMap::new();
        for p in [pid(1), pid(2)] {
            commitments.insert(p, round1(&c, attempt, p).await.expect("round 1"));
        }
        let pkg = package(&commitments, &bound.sighash);
        // The first share's commit (which carries the charge) is answered "not written".
        let failed = frostgate_common::Error::new(ErrorCode::StoreCommitFailed, "injected");
        store.next.lock().expect("lock").push(Some(PersistError::NotWritten(failed)));
        let e = round2(&c, attempt, pid(1), TaprootMode::Bip86, &pkg).await.expect_err("not written");
        assert_eq!(e.code(), ErrorCode::StoreCommitFailed);
        assert!(!store.inner.records().iter().any(|r| matches!(r, Record::Charged { .. })));
        // The other seat's share: its own commit carries the charge.
        round2(&c, attempt, pid(2), TaprootMode::Bip86, &pkg).await.expect("share");
        let charged: Vec<_> =
            store.inner.records().into_iter().filter(|r| matches!(r, Record::Charged { sats: 60_000, .. })).collect();
        assert_eq!(charged.len(), 1, "the share left with its charge durable");
        // And the window holds it: 40,000 left.
        let session = frostgate_common::ids::SessionId::from_bytes(random());
        let psbt = spend(45_000);
        let open =
            OpenPsbtSession { session, key: key.key, input: 0, psbt: PsbtBytes::new(psbt.serialize()).expect("b") };
        let e = c.request(open).await.expect_err("over the window");
        assert_eq!(
            e.message(),
            "max_sats_per_window: 45000 requested, 40000 left of this enclave's 100000 (2-of-3 share of 150000)"
        );
    });
}

/// Derived keys signed in process for many paths, on an odd-y and an even-y group key: every
/// signature verifies (libsecp256k1) under the child's BIP86 output key that rust-bitcoin derives
/// independently, and odd-y children are among them.
#[test]
fn derived_children_of_odd_and_even_group_keys_sign_valid_signatures() {
    use frostgate_tests::psbt::{child, spend_children};
    rt().block_on(async {
        let c = caller();
        let mut parities = std::collections::BTreeSet::new();
        let mut odd_children = 0;
        while parities.len() < 2 {
            let key = dealer(&c, 2, 3).await;
            let public = frost_secp256k1_tr::keys::PublicKeyPackage::deserialize(key.public_key_package.as_inner())
                .expect("pkg");
            let group = public.verifying_key().serialize().expect("point");
            if !parities.insert(group[0]) {
                continue;
            }
            let xpub = frostgate_host::coordinator::derivation::xpub(&group, bitcoin::Network::Regtest).expect("xpub");
            for i in 0..6u32 {
                let path = [0, i];
                let (internal, output_key) = child(&xpub, &path);
                let point = xpub
                    .derive_pub(
                        &bitcoin::secp256k1::Secp256k1::new(),
                        &[
                            bitcoin::bip32::ChildNumber::from_normal_idx(0).expect("n"),
                            bitcoin::bip32::ChildNumber::from_normal_idx(i).expect("n"),
                        ],
                    )
                    .expect("derive");
                odd_children += usize::from(point.public_key.serialize()[0] == 3);
                let psbt =
                    spend_children(&xpub, &[(&path, 50_000)], &[(frostgate_tests::psbt::p2tr(&output_key), 49_000)]);
                let (bound, sig, out) = sign_psbt_input(&c, key.key, &psbt, 0, &[pid(1), pid(3)]).await;
                assert_eq!(bound.output_key, output_key, "0/{i}: the enclave's child output key");
                assert_eq!(out, output_key);
                assert!(libsecp_verifies(&sig, &bound.sighash, &output_key), "0/{i} of a {} group key", group[0]);
                let _ = internal;
            }
        }
        assert!(odd_children > 0, "no odd-y child was signed for");
    });
}

/// Signs input `input` of `psbt` in process with `signers` (each enclave seat here): the PSBT
/// session, one attempt, round 1, the package over the enclave's sighash, round 2, aggregation.
/// Returns the session binding, the signature and its output key.
async fn sign_psbt_input(
    c: &Caller,
    key: frostgate_common::ids::KeyId,
    psbt: &bitcoin::psbt::Psbt,
    input: u32,
    signers: &[frostgate_common::ids::ParticipantId],
) -> (PsbtSessionOpened, Bip340Signature, [u8; 32]) {
    let session = frostgate_common::ids::SessionId::from_bytes(random());
    let psbt = frostgate_common::bounded::PsbtBytes::new(psbt.serialize()).expect("bound");
    let bound = c.request(OpenPsbtSession { session, key, input, psbt }).await.expect("approved");
    let attempt = open_attempt(c, session, signers).await.expect("attempt");
    let mut commitments = BTreeMap::new();
    for p in signers {
        commitments.insert(*p, round1(c, attempt, *p).await.expect("round 1"));
    }
    let pkg = package(&commitments, &bound.sighash);
    let mut shares = BTreeMap::new();
    for p in signers {
        shares.insert(*p, round2(c, attempt, *p, TaprootMode::Bip86, &pkg).await.expect("share"));
    }
    let (sig, output_key) = signed(aggregate(c, attempt, TaprootMode::Bip86, &pkg, &shares).await.expect("aggregate"));
    (bound, sig, output_key)
}

/// A marker store whose persists wait until released.
#[derive(Debug)]
struct GatedStore {
    inner: MemoryStore,
    open: tokio::sync::Semaphore,
}

impl MarkerStore for GatedStore {
    fn persist(&self, records: Vec<Record>) -> PersistFuture<'_> {
        Box::pin(async move {
            self.open.acquire().await.expect("gate").forget();
            self.inner.persist(records).await
        })
    }

    fn persist_detached(&self, records: Vec<Record>) -> PersistFuture<'static> {
        self.inner.persist_detached(records)
    }
}

/// A consumed marker whose commit is still in flight is in a snapshot taken meanwhile: its
/// commit may already be acknowledged and precede the snapshot, whose compaction then deletes
/// its row (found by the commit protocol's model, `scripts/model/`).
#[test]
fn a_marker_whose_commit_is_in_flight_is_in_the_snapshot() {
    rt().block_on(async {
        let store = Arc::new(GatedStore { inner: MemoryStore::new(), open: tokio::sync::Semaphore::new(1_000) });
        let (c, service) = engine_with(store.clone(), Limits::default());
        let key = dealer(&c, 2, 3).await;
        let p = prepare(&c, key.key, &[pid(1), pid(2)], TaprootMode::Bip86).await;
        // Close the gate: round 2's persist waits.
        store.open.acquire_many(store.open.available_permits() as u32).await.expect("gate").forget();
        let pending = {
            let (c, attempt, package) = (c.clone(), p.attempt, p.package.clone());
            tokio::spawn(async move { round2(&c, attempt, pid(1), TaprootMode::Bip86, &package).await })
        };
        let engine = service.engine().expect("engine");
        let consumed = |snapshot: &[Record]| {
            snapshot.iter().any(
                |r| matches!(r, Record::NonceConsumed { attempt, seat } if *attempt == p.attempt && *seat == pid(1)),
            )
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !consumed(&engine.snapshot().expect("snapshot")) {
            assert!(Instant::now() < deadline, "the pending marker never appeared in a snapshot");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(!store.inner.records().iter().any(|r| matches!(r, Record::NonceConsumed { .. })), "still in flight");
        store.open.add_permits(1_000);
        pending.await.expect("task").expect("the share, once the marker is durable");
    });
}

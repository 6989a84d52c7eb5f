//! Preprocessed nonces: commitments issued ahead of use, one request per signer per signature.
//! The engine's rules (in process, real SoftHSM token): a commitment signs at most once whatever
//! packages name it, an expired or restarted one is refused with its code, one this enclave did
//! not issue is refused; and the coordinator (real nodes) notices a restarted enclave and signs.

use frostgate_common::bounded::{SessionIds, Signers, SigningPackageBytes};
use frostgate_common::error::{ErrorCode, RecoveryClass};
use frostgate_common::ids::{AttemptId, CommitmentId, KeyId, ParticipantId, SessionId};
use frostgate_common::protocol::*;
use frostgate_enclave::markers::MemoryStore;
use frostgate_enclave::rounds::{Engine, Limits};
use frostgate_enclave::service::Service;
use frostgate_tests::signing::*;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

fn service(limits: Limits) -> (Caller, Arc<Service>) {
    let engine = Engine::new(frostgate_tests::token::shared_custody(), Arc::new(MemoryStore::new()), limits);
    let service = Arc::new(Service::from_engine(Some(engine)));
    (Caller::Service(service.clone()), service)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

async fn preprocess(c: &Caller, key: KeyId, seat: ParticipantId, count: u16) -> Vec<PreCommitment> {
    let r = c.request(Preprocess { key, seat, count }).await.expect("preprocess");
    assert_eq!((r.key, r.seat, r.commitments.as_inner().len()), (key, seat, count as usize));
    r.commitments.into_inner()
}

/// A one-request signing of `message` by `seat` with `commitment`, in a package of `chosen`.
struct Request {
    session: SessionId,
    attempt: AttemptId,
    key: KeyId,
    message: [u8; 32],
    chosen: BTreeMap<ParticipantId, PreCommitment>,
}

impl Request {
    fn new(key: KeyId, chosen: BTreeMap<ParticipantId, PreCommitment>) -> Request {
        Request {
            session: SessionId::from_bytes(random()),
            attempt: AttemptId::from_bytes(random()),
            key,
            message: random(),
            chosen,
        }
    }

    fn package(&self) -> Vec<u8> {
        let commitments = self.chosen.iter().map(|(p, c)| (*p, c.commitments.as_inner().clone())).collect();
        package(&commitments, &self.message)
    }

    fn for_seat(&self, seat: ParticipantId, commitment: CommitmentId, package: Vec<u8>) -> SignPreprocessed {
        SignPreprocessed {
            binding: SessionBinding::Digest(OpenSession {
                session: self.session,
                key: self.key,
                message: self.message,
                mode: TaprootMode::Bip86,
            }),
            attempt: self.attempt,
            signers: Signers::new(self.chosen.keys().copied().collect::<Vec<_>>()).expect("bound"),
            seat,
            commitment,
            signing_package: SigningPackageBytes::new(package).expect("bound"),
            replenish: 1,
            close: SessionIds::new(vec![]).expect("bound"),
        }
    }

    fn seat(&self, seat: ParticipantId) -> SignPreprocessed {
        self.for_seat(seat, self.chosen[&seat].id, self.package())
    }
}

fn code<T: std::fmt::Debug>(r: Result<T, frostgate_common::Error>) -> ErrorCode {
    r.expect_err("expected a refusal").code()
}

#[test]
fn one_request_per_signer_signs_and_replenishes_and_the_signature_verifies() {
    rt().block_on(async {
        let (c, service) = service(Limits::default());
        let key = dealer(&c, 2, 3).await;
        let (p1, p3) = (pid(1), pid(3));
        let mut chosen = BTreeMap::new();
        chosen.insert(p1, preprocess(&c, key.key, p1, 3).await.remove(0));
        chosen.insert(p3, preprocess(&c, key.key, p3, 3).await.remove(0));
        assert_eq!(service.engine().expect("engine").counts().preprocessed, 6);
        let r = Request::new(key.key, chosen);
        let mut shares = BTreeMap::new();
        for seat in [p1, p3] {
            let reply = c.request(r.seat(seat)).await.expect("one-request signing");
            assert_eq!(reply.next.as_inner().len(), 1, "the reply carries the next commitment");
            shares.insert(seat, reply.signature_share.into_inner());
        }
        // 6 issued, 2 used, 2 replenished.
        assert_eq!(service.engine().expect("engine").counts().preprocessed, 6);
        match aggregate(&c, r.attempt, TaprootMode::Bip86, &r.package(), &shares).await.expect("aggregate") {
            AggregateOutcome::Signed { signature, output_key } => {
                assert_eq!(output_key, key.bip86_output_key);
                assert!(libsecp_verifies(&signature, &r.message, &output_key));
            }
            other => panic!("{other:?}"),
        }
        // Closing piggybacked on a later request removes the finished session.
        let sessions = service.engine().expect("engine").counts().sessions;
        let mut next = Request::new(
            key.key,
            BTreeMap::from([
                (p1, preprocess(&c, key.key, p1, 1).await.remove(0)),
                (p3, preprocess(&c, key.key, p3, 1).await.remove(0)),
            ]),
        );
        next.message = random();
        let mut m = next.seat(p1);
        m.close = SessionIds::new(vec![r.session]).expect("bound");
        c.request(m).await.expect("sign and close");
        assert_eq!(service.engine().expect("engine").counts().sessions, sessions, "one closed, one opened");
        let closed = c.request(CloseSessions { sessions: SessionIds::new(vec![next.session, r.session]).expect("b") });
        assert_eq!(closed.await.expect("close").closed, 1);
    });
}

#[test]
fn two_packages_for_one_commitment_release_one_share() {
    rt().block_on(async {
        let (c, _) = service(Limits::default());
        let key = dealer(&c, 2, 3).await;
        let (p1, p2, p3) = (pid(1), pid(2), pid(3));
        let mine = preprocess(&c, key.key, p1, 1).await.remove(0);
        let other2 = preprocess(&c, key.key, p2, 1).await.remove(0);
        let other3 = preprocess(&c, key.key, p3, 1).await.remove(0);
        let first = Request::new(key.key, BTreeMap::from([(p1, mine.clone()), (p2, other2)]));
        let second = Request::new(key.key, BTreeMap::from([(p1, mine.clone()), (p3, other3.clone())]));
        c.request(first.seat(p1)).await.expect("the first package is signed");
        // Another attempt, session and message naming the same commitment: it is gone.
        let e = c.request(second.seat(p1)).await.expect_err("second package");
        assert_eq!((e.code(), e.code().recovery_class()), (ErrorCode::CommitmentUnknown, RecoveryClass::NewAttempt));
        // The same attempt with another package: the seat's nonce is consumed.
        let mut other_message = Request::new(key.key, first.chosen.clone());
        (other_message.session, other_message.attempt) = (first.session, first.attempt);
        let m = first.for_seat(p1, mine.id, other_message.package());
        assert_eq!(code(c.request(m).await), ErrorCode::NonceAlreadyConsumed);
        // Concurrently, two packages for one fresh commitment: exactly one share.
        let fresh = preprocess(&c, key.key, p1, 1).await.remove(0);
        let a = Request::new(key.key, BTreeMap::from([(p1, fresh.clone()), (p3, other3.clone())]));
        let b = Request::new(key.key, BTreeMap::from([(p1, fresh), (p3, other3)]));
        let (ra, rb) = tokio::join!(c.request(a.seat(p1)), c.request(b.seat(p1)));
        assert_eq!([ra.is_ok(), rb.is_ok()].iter().filter(|ok| **ok).count(), 1, "{ra:?} {rb:?}");
    });
}

#[test]
fn commitments_not_issued_here_for_this_seat_or_expired_are_refused() {
    rt().block_on(async {
        let limits = Limits { nonce_ttl: Duration::from_millis(300), ..Limits::default() };
        let (c, svc) = service(limits);
        let (other, _) = service(Limits::default());
        let key = dealer(&c, 2, 3).await;
        let other_key = dealer(&other, 2, 3).await;
        let (p1, p2) = (pid(1), pid(2));
        let two = preprocess(&c, key.key, p2, 1).await.remove(0);
        let base = |one: PreCommitment| Request::new(key.key, BTreeMap::from([(p1, one), (p2, two.clone())]));
        // An id this enclave never issued.
        let made_up = PreCommitment { id: CommitmentId::from_bytes(random()), ..two.clone() };
        assert_eq!(code(c.request(base(made_up).seat(p1)).await), ErrorCode::CommitmentUnknown);
        // Refused before anything is bound: no session or attempt is left behind.
        let counts = svc.engine().expect("engine").counts();
        assert_eq!((counts.sessions, counts.attempts), (0, 0));
        // One issued by another enclave (for its own key).
        let foreign = preprocess(&other, other_key.key, p1, 1).await.remove(0);
        assert_eq!(code(c.request(base(foreign).seat(p1)).await), ErrorCode::CommitmentUnknown);
        // One issued here for another seat.
        let r = base(two.clone());
        assert_eq!(code(c.request(r.for_seat(p1, two.id, r.package())).await), ErrorCode::CommitmentUnknown);
        // A real id under commitments it was not issued with: the package is refused, and the
        // commitment is still usable afterwards with its own.
        let own = preprocess(&c, key.key, p1, 1).await.remove(0);
        let forged = PreCommitment { id: own.id, commitments: two.commitments.clone() };
        let r = base(forged);
        assert_eq!(code(c.request(r.seat(p1)).await), ErrorCode::SigningPackageMismatch);
        let r2 = Request { chosen: BTreeMap::from([(p1, own.clone()), (p2, two.clone())]), ..r };
        c.request(r2.for_seat(p1, own.id, r2.package())).await.expect("the same attempt with the issued commitments");
        // Expired: refused with its code (and wiped).
        let old = preprocess(&c, key.key, p1, 1).await.remove(0);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(code(c.request(base(old).seat(p1)).await), ErrorCode::CommitmentUnknown);
        // Bounds: at most 64 per request.
        let e = c.request(Preprocess { key: key.key, seat: p1, count: 65 }).await.expect_err("65");
        assert_eq!(e.code(), ErrorCode::MalformedMessage);
        assert_eq!(code(c.request(Preprocess { key: key.key, seat: pid(4), count: 1 }).await), ErrorCode::SeatNotHeld);
    });
}

#[test]
fn a_restarted_enclave_refuses_what_it_issued_before_and_the_coordinator_signs_on() {
    use frostgate_host::coordinator::{dkg_relay, Settings, SignRequest, Signing};
    let c = frostgate_tests::dev_cluster::DevCluster::start(&frostgate_tests::host_bin(), 3, 2, &["--dev-plaintext"]);
    let key = c.keygen();
    let key: KeyId = key["key"].as_str().expect("key").parse().expect("key id");
    let cluster =
        frostgate_host::coordinator::cluster::Cluster::load(std::path::Path::new(&c.file())).expect("cluster");
    rt().block_on(async {
        let nodes = dkg_relay::connect_all(&cluster).await;
        let signing = Signing::open(&nodes, &key, 2, Settings::default()).await.expect("key");
        let material = signing.material().clone();
        let request = || SignRequest {
            key,
            message: random(),
            mode: TaprootMode::Bip86,
            psbt: None,
            path: Vec::new(),
            request: None,
        };
        let signer = signing.signer();
        let sign = |r: SignRequest| {
            let signer = signer.clone();
            async move { signer.sign(r).await }
        };
        let calls = || nodes.iter().map(|n| n.calls()).sum::<u64>();
        let first = request();
        let s = sign(first.clone()).await.expect("first signing");
        assert!(libsecp_verifies(&s.bip340, &first.message, &material.output_key(&TaprootMode::Bip86).expect("k")));
        // With commitments held: one request per signer; the coordinator aggregates itself.
        let before = calls();
        let second = request();
        let s = sign(second.clone()).await.expect("second signing");
        assert_eq!(calls() - before, 2, "2 SignPreprocessed, no Aggregate");
        assert!(libsecp_verifies(&s.bip340, &second.message, &material.output_key(&TaprootMode::Bip86).expect("k")));
        let held = nodes[0].held_commitments(&key);
        assert!(held > 0);
        // Many signings in flight: their requests to each node go in batches (fewer calls than
        // one per signer per signing), and every signature verifies.
        let before = calls();
        let many: Vec<SignRequest> = (0..16).map(|_| request()).collect();
        let signed = futures_util::future::join_all(many.iter().cloned().map(sign)).await;
        for (r, s) in many.iter().zip(signed) {
            let s = s.unwrap_or_else(|(e, ev)| panic!("{e}: {ev:?}"));
            assert!(libsecp_verifies(&s.bip340, &r.message, &material.output_key(&TaprootMode::Bip86).expect("k")));
        }
        let used = calls() - before;
        assert!(used < 2 * 16, "{used} calls for 16 concurrent signings: nothing was batched");
        // The enclave of node 1 restarts (its node restarts it): what it issued is gone.
        c.kill_process(1, frostgate_tests::dev_cluster::Process::Enclave);
        c.up(&[]).expect("node 1's enclave up again");
        let stale = nodes[0].take_commitment(&key).expect("held");
        nodes[0].hold_commitments(key, [stale.clone()]);
        // Node 1 serves again (its host reconnected and reloaded the store).
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let h = nodes[0].call(Health, Duration::from_secs(2)).await;
            if matches!(h, Ok(HealthReply { state: ServiceState::Ready, .. })) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "node 1 not back: {h:?}\n{}", c.logs());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let third = request();
        let s = sign(third.clone()).await.unwrap_or_else(|(e, ev)| panic!("{e}: {ev:?}"));
        assert!(s.attempts >= 2, "the stale commitment failed an attempt: {s:?}");
        assert!(libsecp_verifies(&s.bip340, &third.message, &material.output_key(&TaprootMode::Bip86).expect("k")));
        assert!(s.excluded.iter().all(|e| e.signer != 1), "a restarted node is not blamed: {:?}", s.excluded);
        // The stale commitment is refused by the restarted enclave with its code.
        let r = Request::new(key, BTreeMap::from([(pid(1), stale.clone()), (pid(2), stale.clone())]));
        let e = nodes[0].call(r.seat(pid(1)), Duration::from_secs(10)).await.expect_err("stale");
        assert_eq!(e.code(), ErrorCode::CommitmentUnknown);
        signing.finish().await;
    });
}

/// The sighash of input 0 as rust-bitcoin computes it (every enclave must compute the same).
fn key_spend_sighash(psbt: &bitcoin::Psbt) -> [u8; 32] {
    use bitcoin::hashes::Hash;
    let prevouts: Vec<bitcoin::TxOut> =
        psbt.inputs.iter().map(|i| i.witness_utxo.clone().expect("witness utxo")).collect();
    bitcoin::sighash::SighashCache::new(&psbt.unsigned_tx)
        .taproot_key_spend_signature_hash(
            0,
            &bitcoin::sighash::Prevouts::All(&prevouts),
            bitcoin::sighash::TapSighashType::Default,
        )
        .expect("sighash")
        .to_byte_array()
}

#[test]
fn a_psbt_signed_in_one_request_per_signer_is_charged_and_audited_once_and_a_failed_one_not_at_all() {
    use frostgate_common::bounded::PsbtBytes;
    use frostgate_enclave::markers::Record;
    rt().block_on(async {
        let destination = frostgate_tests::psbt::random_address();
        let policy = frostgate_tests::psbt::window_policy(&destination, 100_000);
        let store = Arc::new(MemoryStore::new());
        let engine =
            Engine::new(frostgate_tests::token::shared_custody(), store.clone(), Limits::default()).with_policy(policy);
        let service = Arc::new(Service::from_engine(Some(engine)));
        let c = Caller::Service(service.clone());
        let key = dealer(&c, 2, 3).await;
        let out = key.bip86_output_key;
        let psbt = frostgate_tests::psbt::spend(
            key.key.as_bytes(),
            &out,
            &[70_000],
            &[(destination.script_pubkey(), 60_000), (frostgate_tests::psbt::p2tr(&out), 9_000)],
        );
        let sighash = key_spend_sighash(&psbt);
        let (p1, p2) = (pid(1), pid(2));
        let chosen = BTreeMap::from([
            (p1, preprocess(&c, key.key, p1, 1).await.remove(0)),
            (p2, preprocess(&c, key.key, p2, 1).await.remove(0)),
        ]);
        let mut r = Request::new(key.key, chosen);
        r.message = sighash;
        let binding = SessionBinding::Psbt(OpenPsbtSession {
            session: r.session,
            key: key.key,
            input: 0,
            psbt: PsbtBytes::new(psbt.serialize()).expect("bound"),
        });
        let engine = service.engine().expect("engine");
        // A package of another message: refused after the session is bound; nothing is audited
        // or written, and the commitment still signs the right package afterwards.
        let wrong = Request { message: random(), ..Request::new(key.key, r.chosen.clone()) };
        let mut m = r.for_seat(p1, r.chosen[&p1].id, wrong.package());
        m.binding = binding.clone();
        assert_eq!(code(c.request(m).await), ErrorCode::SigningPackageMismatch);
        assert!(engine.audit_after(0, 100).is_empty(), "{:?}", engine.audit_after(0, 100));
        assert!(!store.records().iter().any(|r| matches!(r, Record::Audit(_) | Record::Charged { .. })));
        let mut shares = BTreeMap::new();
        for seat in [p1, p2] {
            let mut m = r.seat(seat);
            m.binding = binding.clone();
            shares.insert(seat, c.request(m).await.expect("signed").signature_share.into_inner());
        }
        match aggregate(&c, r.attempt, TaprootMode::Bip86, &r.package(), &shares).await.expect("aggregate") {
            AggregateOutcome::Signed { signature, output_key } => {
                assert!(libsecp_verifies(&signature, &sighash, &output_key));
            }
            other => panic!("{other:?}"),
        }
        let decisions: Vec<AuditDecision> = engine.audit_after(0, 100).iter().map(|e| e.decision).collect();
        assert_eq!(decisions, [AuditDecision::Approved, AuditDecision::Signed, AuditDecision::Signed]);
        let written = store.records();
        let approvals =
            written.iter().filter(|r| matches!(r, Record::Audit(e) if e.decision == AuditDecision::Approved)).count();
        assert_eq!(approvals, 1, "the approval is written once, with the first marker");
        assert_eq!(written.iter().filter(|r| matches!(r, Record::Charged { sats: 60_000, .. })).count(), 1);
    });
}

#[test]
fn a_batch_serves_each_signing_as_alone_and_one_commitment_signs_once_in_it() {
    use frostgate_common::protocol::SignItems;
    rt().block_on(async {
        let (c, _) = service(Limits::default());
        let key = dealer(&c, 2, 3).await;
        let (p1, p3) = (pid(1), pid(3));
        let a = Request::new(
            key.key,
            BTreeMap::from([
                (p1, preprocess(&c, key.key, p1, 1).await.remove(0)),
                (p3, preprocess(&c, key.key, p3, 1).await.remove(0)),
            ]),
        );
        let made_up = PreCommitment { id: CommitmentId::from_bytes(random()), ..a.chosen[&p1].clone() };
        let b = Request::new(key.key, BTreeMap::from([(p1, made_up), (p3, a.chosen[&p3].clone())]));
        let items = SignItems::new(vec![a.seat(p1), a.seat(p3), b.seat(p1)]).expect("bound");
        let outcomes = c.request(SignBatch { items }).await.expect("batch").outcomes.into_inner();
        let mut shares = BTreeMap::new();
        for (seat, outcome) in [p1, p3].into_iter().zip(&outcomes) {
            match outcome {
                SignOutcome::Signed(s) => drop(shares.insert(seat, s.signature_share.clone().into_inner())),
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(&outcomes[2], SignOutcome::Refused(e) if e.code() == ErrorCode::CommitmentUnknown));
        match aggregate(&c, a.attempt, TaprootMode::Bip86, &a.package(), &shares).await.expect("aggregate") {
            AggregateOutcome::Signed { signature, output_key } => {
                assert!(libsecp_verifies(&signature, &a.message, &output_key))
            }
            other => panic!("{other:?}"),
        }
        // Two packages for one commitment in one batch: one share.
        let (one, other3) =
            (preprocess(&c, key.key, p1, 1).await.remove(0), preprocess(&c, key.key, p3, 1).await.remove(0));
        let x = Request::new(key.key, BTreeMap::from([(p1, one.clone()), (p3, other3.clone())]));
        let y = Request::new(key.key, BTreeMap::from([(p1, one), (p3, other3)]));
        let items = SignItems::new(vec![x.seat(p1), y.seat(p1)]).expect("bound");
        let outcomes = c.request(SignBatch { items }).await.expect("batch").outcomes.into_inner();
        let signed = outcomes.iter().filter(|o| matches!(o, SignOutcome::Signed(_))).count();
        assert_eq!(signed, 1, "{outcomes:?}");
    });
}

//! Signing service requests bound by the enclave (in process, real SoftHSM token): a request is
//! bound the first time one of its sessions opens, durably and before any share leaves, and
//! nothing else is signed under it: another digest, path, mode or transaction, a session id that
//! is not the request's, a request past its TTL. Bindings survive a restart (replay).

use frostgate_common::bounded::{PsbtBytes, RequestName, SessionIds, Signers, SigningPackageBytes};
use frostgate_common::error::ErrorCode;
use frostgate_common::ids::{AttemptId, KeyId, ParticipantId};
use frostgate_common::limits::REQUEST_TTL_SECS;
use frostgate_common::protocol::*;
use frostgate_enclave::markers::{MemoryStore, Record, RequestTarget};
use frostgate_enclave::rounds::{Engine, Limits};
use frostgate_enclave::service::Service;
use frostgate_public::request::session_id;
use frostgate_tests::signing::*;
use std::collections::BTreeMap;
use std::sync::Arc;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs()
}

fn tag(client: u8, request: &str) -> RequestTag {
    RequestTag {
        client: [client; 32],
        request: RequestName::new(request.to_string()).expect("bound"),
        accepted_unix: now(),
        attempt: 0,
    }
}

fn digest(tag: &RequestTag, key: KeyId, message: [u8; 32]) -> RequestSession {
    let session = session_id(tag, &key, None);
    RequestSession {
        tag: tag.clone(),
        open: RequestOpen::Digest(OpenSession { session, key, message, mode: TaprootMode::Bip86 }),
    }
}

fn code<T: std::fmt::Debug>(r: Result<T, frostgate_common::Error>) -> ErrorCode {
    r.expect_err("expected a refusal").code()
}

/// Signs `r` with seats 1 and 2 through `SignPreprocessed` (the service's path) and aggregates.
async fn sign(c: &Caller, r: &RequestSession, message: [u8; 32]) -> Result<AggregateOutcome, frostgate_common::Error> {
    let key = r.open.key();
    let (p1, p2) = (pid(1), pid(2));
    let mut chosen = BTreeMap::new();
    for p in [p1, p2] {
        chosen.insert(p, c.request(Preprocess { key, seat: p, count: 1 }).await?.commitments.into_inner().remove(0));
    }
    let commitments: BTreeMap<ParticipantId, Vec<u8>> =
        chosen.iter().map(|(p, c)| (*p, c.commitments.as_inner().clone())).collect();
    let pkg = package(&commitments, &message);
    let attempt = AttemptId::from_bytes(random());
    let mut shares = BTreeMap::new();
    for (seat, commitment) in &chosen {
        let m = SignPreprocessed {
            binding: SessionBinding::Request(r.clone()),
            attempt,
            signers: Signers::new(vec![p1, p2]).expect("bound"),
            seat: *seat,
            commitment: commitment.id,
            signing_package: SigningPackageBytes::new(pkg.clone()).expect("bound"),
            replenish: 0,
            close: SessionIds::new(vec![]).expect("bound"),
        };
        shares.insert(*seat, c.request(m).await?.signature_share.into_inner());
    }
    aggregate(c, attempt, TaprootMode::Bip86, &pkg, &shares).await
}

fn bound_records(store: &MemoryStore) -> Vec<(String, RequestTarget)> {
    store
        .records()
        .into_iter()
        .filter_map(|r| match r {
            Record::RequestBound { request, target, .. } => Some((request, target)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_request_signs_one_digest_and_refuses_anything_else_under_it_across_a_restart() {
    rt().block_on(async {
        let store = Arc::new(MemoryStore::new());
        let custody = frostgate_tests::token::shared_custody();
        let service =
            Arc::new(Service::from_engine(Some(Engine::new(custody.clone(), store.clone(), Limits::default()))));
        let c = Caller::Service(service.clone());
        let key = dealer(&c, 2, 3).await;
        let (t, m) = (tag(1, "pay-1"), random::<32>());
        let r = digest(&t, key.key, m);

        // Signed under the request (the preprocessed path binds it with the first share).
        match sign(&c, &r, m).await.expect("signed") {
            AggregateOutcome::Signed { signature, output_key } => {
                assert_eq!(output_key, key.bip86_output_key);
                assert!(libsecp_verifies(&signature, &m, &output_key));
            }
            other => panic!("{other:?}"),
        }
        let target = RequestTarget::Digest { path: vec![], mode: TaprootMode::Bip86, message: m };
        assert!(bound_records(&store).contains(&("pay-1".to_string(), target)), "the binding is durable");

        // The same request again (a retry, another instance): accepted; a takeover resumes.
        let opened = c.request(r.clone()).await;
        assert_eq!(opened.expect("same binding").output_key, key.bip86_output_key);
        let mut next_attempt = t.clone();
        next_attempt.attempt = 1;
        c.request(digest(&next_attempt, key.key, m)).await.expect("same target, attempt 1");

        // Anything else under it: another digest (even under another attempt's session), another
        // mode, another key's path, a session id that is not the request's.
        let other = random::<32>();
        assert_eq!(code(c.request(digest(&t, key.key, other)).await), ErrorCode::RequestConflict);
        assert_eq!(code(sign(&c, &digest(&next_attempt, key.key, other), other).await), ErrorCode::RequestConflict);
        let mut tweaked = digest(&t, key.key, m);
        if let RequestOpen::Digest(o) = &mut tweaked.open {
            o.mode = TaprootMode::Untweaked;
        }
        assert_eq!(code(c.request(tweaked).await), ErrorCode::RequestConflict);
        let derived = RequestSession {
            tag: t.clone(),
            open: RequestOpen::Derived(OpenDerivedSession {
                session: session_id(&t, &key.key, None),
                key: key.key,
                path: frostgate_common::bounded::DerivationSteps::new(vec![0, 1]).expect("bound"),
                message: m,
                mode: TaprootMode::Bip86,
            }),
        };
        assert_eq!(code(c.request(derived).await), ErrorCode::RequestConflict);
        let mut made_up = digest(&t, key.key, m);
        if let RequestOpen::Digest(o) = &mut made_up.open {
            o.session = frostgate_common::ids::SessionId::from_bytes(random());
        }
        assert_eq!(code(c.request(made_up).await), ErrorCode::RequestConflict);
        // The same request resubmitted (a lost request log: another acceptance time) is the same
        // request: its target signs, anything else does not.
        let mut later = t.clone();
        later.accepted_unix -= 1;
        c.request(digest(&later, key.key, m)).await.expect("the same request, accepted again");
        assert_eq!(code(c.request(digest(&later, key.key, other)).await), ErrorCode::RequestConflict);

        // Request ids are the client's own: another client's "pay-1" binds on its own.
        let theirs = tag(2, "pay-1");
        c.request(digest(&theirs, key.key, other)).await.expect("another client's request");

        // Too old or from the future: nothing is bound.
        let mut old = tag(1, "old");
        old.accepted_unix = now() - REQUEST_TTL_SECS;
        assert_eq!(code(c.request(digest(&old, key.key, m)).await), ErrorCode::RequestExpired);
        let mut future = tag(1, "future");
        future.accepted_unix = now() + 3600;
        assert_eq!(code(c.request(digest(&future, key.key, m)).await), ErrorCode::RequestExpired);
        assert!(!bound_records(&store).iter().any(|(r, _)| r == "old" || r == "future"));

        // A restart: the bindings come back from the store; the conflict is still refused.
        let restarted = Engine::new(custody, Arc::new(MemoryStore::new()), Limits::default());
        restarted.replay(&store.records()).expect("replay");
        let c2 = Caller::Service(Arc::new(Service::from_engine(Some(restarted))));
        assert_eq!(code(c2.request(digest(&t, key.key, other)).await), ErrorCode::RequestConflict);
        c2.request(digest(&t, key.key, m)).await.expect("the bound target");
    });
}

#[test]
fn a_request_whose_first_session_closed_before_its_first_share_is_still_audited_when_it_signs() {
    rt().block_on(async {
        // A configured policy (raw digests allowed): the audit trail is kept.
        let config: frostgate_enclave::policy::PolicyConfig =
            toml::from_str("network = \"regtest\"\nallow_raw_digest = true\n").expect("policy");
        let policy = frostgate_enclave::policy::Policy::from_config(&config).expect("valid");
        let store = Arc::new(MemoryStore::new());
        let engine = Engine::new(frostgate_tests::token::shared_custody(), store.clone(), Limits::default());
        let service = Arc::new(Service::from_engine(Some(engine.with_policy(policy))));
        let c = Caller::Service(service.clone());
        let key = dealer(&c, 2, 3).await;
        let (t, m) = (tag(3, "half-open"), random::<32>());
        let r = digest(&t, key.key, m);
        let RequestOpen::Digest(opened) = &r.open else { panic!() };

        // The first session binds the request with its first share's marker, but that share is
        // refused (its package signs another message) and the session is closed: no marker, so
        // its `Requested` entry was never written.
        let (p1, p2) = (pid(1), pid(2));
        let mut chosen = BTreeMap::new();
        for p in [p1, p2] {
            let pre = c.request(Preprocess { key: key.key, seat: p, count: 1 }).await.expect("preprocess");
            chosen.insert(p, pre.commitments.into_inner().remove(0));
        }
        let commitments: BTreeMap<ParticipantId, Vec<u8>> =
            chosen.iter().map(|(p, c)| (*p, c.commitments.as_inner().clone())).collect();
        let wrong = package(&commitments, &random::<32>());
        let refused = c
            .request(SignPreprocessed {
                binding: SessionBinding::Request(r.clone()),
                attempt: AttemptId::from_bytes(random()),
                signers: Signers::new(vec![p1, p2]).expect("bound"),
                seat: p1,
                commitment: chosen[&p1].id,
                signing_package: SigningPackageBytes::new(wrong).expect("bound"),
                replenish: 0,
                close: SessionIds::new(vec![]).expect("bound"),
            })
            .await;
        assert!(refused.is_err(), "{refused:?}");
        let closed = c.request(CloseSessions { sessions: SessionIds::new(vec![opened.session]).expect("bound") });
        assert_eq!(closed.await.expect("closed").closed, 1);

        // The request signs under a session of its own: its share leaves with a `Requested` entry.
        assert!(matches!(sign(&c, &r, m).await.expect("signed"), AggregateOutcome::Signed { .. }));
        let entries = service.engine().expect("engine").audit_after(0, 100);
        let rule = format!("{}/half-open", hex::encode([3u8; 32]));
        let requested = entries.iter().filter(|e| e.decision == AuditDecision::Requested).collect::<Vec<_>>();
        assert_eq!(requested.len(), 1, "{entries:?}");
        assert_eq!(requested[0].rule.as_inner(), &rule);
        assert!(store
            .records()
            .iter()
            .any(|r| matches!(r, Record::Audit(e) if e.decision == AuditDecision::Requested)));
    });
}

#[test]
fn the_request_registry_is_bounded() {
    rt().block_on(async {
        let limits = Limits { max_requests: 2, ..Limits::default() };
        let engine = Engine::new(frostgate_tests::token::shared_custody(), Arc::new(MemoryStore::new()), limits);
        let c = Caller::Service(Arc::new(Service::from_engine(Some(engine))));
        let key = dealer(&c, 2, 3).await;
        for id in ["a", "b"] {
            c.request(digest(&tag(1, id), key.key, random())).await.expect("room");
        }
        let full = c.request(digest(&tag(1, "c"), key.key, random())).await;
        assert_eq!(code(full), ErrorCode::RegistryFull);
        // A bound request still opens (it takes no new place).
        let again = c.request(digest(&tag(1, "a"), key.key, random())).await;
        assert_eq!(code(again), ErrorCode::RequestConflict, "bound to its first digest, not refused for room");
    });
}

#[test]
fn a_psbt_request_is_bound_to_its_transaction_charged_once_and_audited_with_client_and_id() {
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
        let spend = |sats| {
            frostgate_tests::psbt::spend(
                key.key.as_bytes(),
                &out,
                &[70_000],
                &[(destination.script_pubkey(), sats), (frostgate_tests::psbt::p2tr(&out), 1_000)],
            )
        };
        let (psbt, other) = (spend(60_000), spend(50_000));
        let t = tag(7, "withdrawal-42");
        let open = |p: &bitcoin::Psbt| RequestSession {
            tag: t.clone(),
            open: RequestOpen::Psbt(OpenPsbtSession {
                session: session_id(&t, &key.key, Some(0)),
                key: key.key,
                input: 0,
                psbt: PsbtBytes::new(p.serialize()).expect("bound"),
            }),
        };
        let opened = c.request(open(&psbt)).await.expect("bound");
        assert_eq!(c.request(open(&psbt)).await.expect("again").message, opened.message);
        assert_eq!(code(c.request(open(&other)).await), ErrorCode::RequestConflict, "another transaction");
        let txid = {
            use bitcoin::hashes::Hash;
            psbt.unsigned_tx.compute_txid().to_byte_array()
        };
        assert_eq!(bound_records(&store), vec![("withdrawal-42".to_string(), RequestTarget::Psbt { txid })]);
        let entries = service.engine().expect("engine").audit_after(0, 100);
        let requested: Vec<&AuditEntry> = entries.iter().filter(|e| e.decision == AuditDecision::Requested).collect();
        assert_eq!(requested.len(), 1, "{entries:?}");
        assert_eq!(requested[0].rule.as_inner(), &format!("{}/withdrawal-42", hex::encode([7u8; 32])));
        assert_eq!(requested[0].txid, Some(txid));
        // Approved once, refused nothing, charged nothing yet (no share left).
        assert_eq!(entries.iter().filter(|e| e.decision == AuditDecision::Approved).count(), 1);
        assert!(!store.records().iter().any(|r| matches!(r, Record::Charged { .. })));
    });
}

//! gRPC <-> boundary conversions: every network-facing type round-trips unchanged, and every
//! out-of-range or missing field is refused as `malformed_message` before reaching the enclave.

use frostgate_common::bounded::*;
use frostgate_common::error::ErrorCode;
use frostgate_common::ids::{AttemptId, DkgId, KeyId, ParticipantId, SessionId};
use frostgate_common::protocol::*;
use frostgate_host::api::convert::Proto;
use frostgate_host::api::pb;
use std::fmt::Debug;

fn p(i: u16) -> ParticipantId {
    ParticipantId::new(i).expect("id")
}

fn set(ids: &[u16]) -> Signers {
    Signers::new(ids.iter().map(|&i| p(i)).collect::<Vec<_>>()).expect("signers")
}

fn round_trip<T: Proto + PartialEq + Debug>(v: T) {
    let back = T::from_pb(v.to_pb()).unwrap_or_else(|e| panic!("{v:?}: {e}"));
    assert_eq!(back, v);
}

fn refused<T: Proto + Debug>(what: &str, p: T::Pb) {
    match T::from_pb(p) {
        Err(e) => assert_eq!(e.code(), ErrorCode::MalformedMessage, "{what}: {e}"),
        Ok(v) => panic!("{what}: accepted as {v:?}"),
    }
}

const ATTEMPT: AttemptId = AttemptId::from_bytes([7; 16]);
const DKG: DkgId = DkgId::from_bytes([9; 16]);

fn share(i: u16) -> SignerShare {
    SignerShare { signer: p(i), signature_share: SignatureShareBytes::new(vec![i as u8; 32]).expect("share") }
}

fn confirmation(i: u16) -> DkgConfirmation {
    DkgConfirmation {
        dkg: DKG,
        from: p(i),
        key: KeyId::from_bytes([3; 32]),
        transcript_hash: [4; 32],
        signature_r: [5; 32],
        signature_s: [6; 32],
    }
}

#[test]
fn every_network_type_round_trips() {
    for mode in [TaprootMode::Bip86, TaprootMode::Untweaked, TaprootMode::ScriptTree { merkle_root: [8; 32] }] {
        round_trip(mode);
        round_trip(Round2 {
            attempt: ATTEMPT,
            seat: p(2),
            mode,
            signing_package: SigningPackageBytes::new(vec![1, 2, 3]).expect("package"),
        });
    }
    let profiles = [None, Some(CustodyProfile::Full), Some(CustodyProfile::CbcHmac), Some(CustodyProfile::AesOnly)];
    for (state, custody_profile) in [ServiceState::Ready, ServiceState::Refusing(ErrorCode::StoreRollbackDetected)]
        .into_iter()
        .flat_map(|s| profiles.map(|p| (s, p)))
    {
        round_trip(HealthReply {
            custody_profile,
            open_sessions: 3,
            open_attempts: u64::MAX,
            hsm_calls: HsmCalls {
                decrypt: 1,
                encrypt: 2,
                sign: 3,
                derive: 4,
                random: 5,
                find: 6,
                attributes: 7,
                create: 8,
                destroy: 9,
                generate: u64::MAX,
            },
            state,
            uptime_seconds: 1,
            store_commits: 2,
            store_records: 3,
            hsm_operations: 4,
            hsm_micros: u64::MAX,
            dev_features: Label::new("dev-dealer".to_string()).expect("label"),
            host_reconnects: 7,
            enclave_restarts: 8,
            policy_hash: [9; 32],
        });
    }
    round_trip(IdentityKeyBytes::new(vec![4; 65]).expect("identity"));
    round_trip(KeyRef { key: KeyId::from_bytes([1; 32]) });
    round_trip(KeyInfo {
        key: KeyId::from_bytes([1; 32]),
        threshold: 2,
        participants: set(&[1, 2, 3]),
        seats: set(&[2]),
        bip86_output_key: [2; 32],
        public_key_package: PublicKeyPackageBytes::new(vec![5; 300]).expect("pkp"),
    });
    round_trip(OpenSession {
        session: SessionId::from_bytes([2; 16]),
        key: KeyId::from_bytes([1; 32]),
        message: [3; 32],
        mode: TaprootMode::Bip86,
    });
    round_trip(SessionOpened { session: SessionId::from_bytes([2; 16]), output_key: [9; 32] });
    round_trip(OpenAttempt { session: SessionId::from_bytes([2; 16]), attempt: ATTEMPT, signers: set(&[1, 100]) });
    round_trip(AttemptRef { attempt: ATTEMPT });
    round_trip(SeatRef { attempt: ATTEMPT, seat: p(100) });
    round_trip(Round1Reply {
        attempt: ATTEMPT,
        seat: p(1),
        commitments: CommitmentBytes::new(vec![1; 66]).expect("c"),
    });
    round_trip(Round2Reply {
        attempt: ATTEMPT,
        seat: p(1),
        signature_share: SignatureShareBytes::new(vec![1; 32]).expect("s"),
    });
    round_trip(VerifyShare {
        attempt: ATTEMPT,
        signing_package: SigningPackageBytes::new(vec![1; 10]).expect("p"),
        share: share(3),
    });
    for v in [ShareVerdict::Valid, ShareVerdict::Invalid, ShareVerdict::Indeterminate] {
        round_trip(v);
    }
    round_trip(Aggregate {
        attempt: ATTEMPT,
        mode: TaprootMode::Untweaked,
        signing_package: SigningPackageBytes::new(vec![1; 10]).expect("p"),
        shares: SignerShares::new(vec![share(1), share(2)]).expect("shares"),
    });
    round_trip(AggregateOutcome::Signed { signature: Bip340Signature { r: [1; 32], s: [2; 32] }, output_key: [3; 32] });
    round_trip(AggregateOutcome::InvalidShares { candidate_culprits: set(&[2, 5]) });
    round_trip(AttemptAborted { attempt: ATTEMPT, wiped_count: 3 });
    round_trip(SessionRef { session: SessionId::from_bytes([2; 16]) });
    round_trip(DevDealerKeygen { threshold: 2, participants: 3 });
    let participants = DkgParticipants::new(vec![
        DkgParticipant { id: p(1), identity_key: IdentityKeyBytes::new(vec![4; 65]).expect("k") },
        DkgParticipant { id: p(2), identity_key: IdentityKeyBytes::new(vec![5; 65]).expect("k") },
    ])
    .expect("participants");
    round_trip(DkgStart { dkg: DKG, threshold: 2, me: p(1), participants });
    let package = DkgRound1Package { dkg: DKG, from: p(2), package: DkgPackageBytes::new(vec![6; 100]).expect("p") };
    round_trip(package.clone());
    round_trip(DkgRound2 { dkg: DKG, round1: DkgRound1Packages::new(vec![package]).expect("r1") });
    round_trip(DkgBlame { dkg: DKG, code: ErrorCode::DkgDecryptFailed, culprit: p(3) });
    let envelope =
        DkgEnvelope { dkg: DKG, from: p(1), to: p(2), ciphertext: DkgCiphertext::new(vec![7; 90]).expect("c") };
    round_trip(DkgEnvelopes::new(vec![envelope.clone()]).expect("envelopes"));
    round_trip(DkgFinish { dkg: DKG, envelopes: DkgEnvelopes::new(vec![envelope]).expect("envelopes") });
    round_trip(confirmation(1));
    round_trip(DkgActivate {
        dkg: DKG,
        confirmations: DkgConfirmations::new(vec![confirmation(1), confirmation(2)]).expect("c"),
    });
    round_trip(DkgRef { dkg: DKG });
}

#[test]
fn malformed_fields_are_refused_before_the_enclave() {
    let seat = |attempt_id: Vec<u8>, seat: u32| pb::SeatRef { attempt_id, seat };
    refused::<SeatRef>("short attempt id", seat(vec![0; 15], 1));
    refused::<SeatRef>("long attempt id", seat(vec![0; 17], 1));
    refused::<SeatRef>("participant 0", seat(vec![0; 16], 0));
    refused::<SeatRef>("participant 101", seat(vec![0; 16], 101));
    refused::<SeatRef>("participant beyond u16", seat(vec![0; 16], 65_537));
    refused::<KeyRef>("short key id", pb::KeyRef { key_id: vec![1; 31] });
    refused::<OpenSession>(
        "no mode",
        pb::OpenSession { session_id: vec![0; 16], key_id: vec![0; 32], message: vec![0; 32], mode: None },
    );
    refused::<OpenSession>(
        "31-byte message",
        pb::OpenSession {
            session_id: vec![0; 16],
            key_id: vec![0; 32],
            message: vec![0; 31],
            mode: Some(TaprootMode::Bip86.to_pb()),
        },
    );
    refused::<TaprootMode>("empty mode", pb::TaprootMode { mode: None });
    refused::<TaprootMode>(
        "short merkle root",
        pb::TaprootMode { mode: Some(pb::taproot_mode::Mode::ScriptTreeMerkleRoot(vec![0; 31])) },
    );
    refused::<Round2>(
        "signing package over its bound",
        pb::Round2 {
            attempt_id: vec![0; 16],
            seat: 1,
            mode: Some(TaprootMode::Bip86.to_pb()),
            signing_package: vec![0; SigningPackageBytes::MAX_LEN + 1],
        },
    );
    refused::<OpenAttempt>(
        "more signers than participants can exist",
        pb::OpenAttempt { session_id: vec![0; 16], attempt_id: vec![0; 16], signers: (1..=101).collect() },
    );
    refused::<VerifyShare>(
        "no share",
        pb::VerifyShare { attempt_id: vec![0; 16], signing_package: vec![1], share: None },
    );
    refused::<ShareVerdict>("unspecified verdict", pb::ShareVerdictReply { verdict: 0 });
    refused::<ShareVerdict>("unknown verdict", pb::ShareVerdictReply { verdict: 99 });
    refused::<DkgBlame>("unknown code", pb::DkgBlame { dkg_id: vec![0; 16], code: "no_such_code".into(), culprit: 1 });
    refused::<HealthReply>("unknown refusal", pb::HealthReply { ready: false, ..Default::default() });
    refused::<AggregateOutcome>(
        "63-byte signature",
        pb::AggregateReply {
            outcome: Some(pb::aggregate_reply::Outcome::Signed(pb::aggregate_reply::Signed {
                signature: vec![0; 63],
                output_key: vec![0; 32],
            })),
        },
    );
    refused::<AggregateOutcome>("no outcome", pb::AggregateReply { outcome: None });
    refused::<DevDealerKeygen>("threshold beyond u16", pb::DevDealerKeygen { threshold: 70_000, participants: 3 });
    refused::<DkgEnvelope>(
        "ciphertext over its bound",
        pb::DkgEnvelope { dkg_id: vec![0; 16], from: 1, to: 2, ciphertext: vec![0; DkgCiphertext::MAX_LEN + 1] },
    );
}

#[test]
fn every_error_code_survives_the_status_and_a_foreign_status_is_node_unavailable() {
    use frostgate_common::error::Error;
    use frostgate_host::api::{error_from_status, status};
    for &code in ErrorCode::ALL {
        let s = status(&Error::new(code, "why"));
        assert_eq!(
            s.metadata().get("frostgate-recovery").and_then(|v| v.to_str().ok()),
            Some(code.recovery_class().as_str())
        );
        let back = error_from_status(1, &s);
        assert_eq!((back.code(), back.message()), (code, "why"));
    }
    let foreign = tonic::Status::unavailable("connection refused");
    assert_eq!(error_from_status(4, &foreign).code(), ErrorCode::NodeUnavailable);
    let forged = {
        let mut s = tonic::Status::internal("x");
        s.metadata_mut().insert("frostgate-error-code", tonic::metadata::MetadataValue::from_static("no_such_code"));
        s
    };
    assert_eq!(error_from_status(4, &forged).code(), ErrorCode::NodeUnavailable);
}

#[path = "../../common/tests/support/strategy.rs"]
mod strategy;

/// Every network row's request and reply types, from the table (`api::rpc::rpcs`), converted to
/// protobuf and back on messages generated for every kind (the strategies the frame round trips
/// use): each comes back equal, and every row's request and reply kinds were exercised.
#[test]
fn every_network_type_round_trips_through_protobuf() {
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let rows = frostgate_host::api::rpc::rpcs();
    let mut runner = TestRunner::new_with_rng(Config::default(), TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let messages = strategy::message();
    let mut covered = std::collections::BTreeSet::new();
    for _ in 0..4000 {
        let m = messages.new_tree(&mut runner).expect("a message").current();
        for row in &rows {
            if let Some(same) = (row.round_trip)(&m) {
                assert!(same, "{} ({}) does not survive protobuf: {m:?}", m.info().name, row.rpc);
                covered.insert(m.info().name);
            }
        }
    }
    for (index, kind) in KINDS.iter().enumerate() {
        if kind.request.is_some_and(|r| r.exposure == Exposure::Network) {
            assert!(covered.contains(kind.name), "request {} never generated", kind.name);
            for reply in Message::reply_names(index) {
                assert!(covered.contains(reply), "reply {reply} of {} never generated", kind.name);
            }
        }
    }
}

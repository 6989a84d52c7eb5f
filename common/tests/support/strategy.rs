//! Strategies for every boundary message (proptest), shared by the frame round trips
//! (`common/tests/frames.rs`) and the network conversions (`host/tests/api_convert.rs`), so both
//! cover every kind the table has.
#![allow(dead_code)]

use frostgate_common::bounded::*;
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::ids::*;
use frostgate_common::limits::{MAX_LABEL_LEN, MAX_TEXT_LEN};
use frostgate_common::protocol::*;
use proptest::prelude::*;

pub fn label() -> impl Strategy<Value = Label> {
    proptest::string::string_regex(&format!(".{{0,{}}}", MAX_LABEL_LEN / 4))
        .expect("regex")
        .prop_map(|s| Label::new(s).expect("within bound"))
}

pub fn code() -> impl Strategy<Value = ErrorCode> {
    proptest::sample::select(ErrorCode::ALL.to_vec())
}

pub fn bytes<const N: usize>() -> impl Strategy<Value = [u8; N]> {
    proptest::collection::vec(any::<u8>(), N).prop_map(|v| v.try_into().expect("len"))
}

pub fn pid() -> impl Strategy<Value = ParticipantId> {
    (1..=frostgate_common::limits::MAX_PARTICIPANTS).prop_map(|v| ParticipantId::new(v).expect("in range"))
}

pub fn signers() -> impl Strategy<Value = Signers> {
    proptest::collection::vec(pid(), 0..8).prop_map(|v| Signers::new(v).expect("bound"))
}

pub fn blob(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max.min(300))
}

pub fn mode() -> impl Strategy<Value = TaprootMode> {
    prop_oneof![
        Just(TaprootMode::Bip86),
        Just(TaprootMode::Untweaked),
        bytes::<32>().prop_map(|merkle_root| TaprootMode::ScriptTree { merkle_root })
    ]
}

pub fn attempt() -> impl Strategy<Value = AttemptId> {
    bytes::<16>().prop_map(AttemptId::from_bytes)
}

pub fn signer_share() -> impl Strategy<Value = SignerShare> {
    (pid(), blob(SignatureShareBytes::MAX_LEN))
        .prop_map(|(signer, b)| SignerShare { signer, signature_share: SignatureShareBytes::new(b).expect("bound") })
}

pub fn message() -> impl Strategy<Value = Message> {
    let base = prop_oneof![
        (code(), proptest::string::string_regex(&format!(".{{0,{}}}", MAX_TEXT_LEN / 4)).expect("regex"))
            .prop_map(|(c, m)| Message::Error(Error::new(c, m))),
        (any::<u16>(), label()).prop_map(|(v, client)| Message::Hello(Hello { protocol_version: v, client })),
        (any::<u16>(), label(), label(), label(), label()).prop_map(|(v, name, version, profile, dev_features)| {
            Message::HelloReply(HelloReply {
                protocol_version: v,
                build: BuildInfo { name, version, profile, dev_features },
            })
        }),
        Just(Message::Health(Health)),
        (
            prop_oneof![Just(ServiceState::Ready), code().prop_map(ServiceState::Refusing)],
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<(u64, u64)>(),
            (
                label(),
                any::<(u64, u64)>(),
                bytes::<32>(),
                proptest::option::of(proptest::sample::select(CustodyProfile::ALL.to_vec())),
                (any::<[u64; 10]>(), any::<(u64, u64)>()),
            )
        )
            .prop_map(
                |(
                    state,
                    uptime_seconds,
                    store_commits,
                    store_records,
                    (hsm_operations, hsm_micros),
                    (dev_features, (host_reconnects, enclave_restarts), policy_hash, custody_profile, (c, open)),
                )| {
                    Message::HealthReply(HealthReply {
                        state,
                        uptime_seconds,
                        store_commits,
                        store_records,
                        hsm_operations,
                        hsm_micros,
                        dev_features,
                        host_reconnects,
                        enclave_restarts,
                        policy_hash,
                        custody_profile,
                        hsm_calls: HsmCalls {
                            decrypt: c[0],
                            encrypt: c[1],
                            sign: c[2],
                            derive: c[3],
                            random: c[4],
                            find: c[5],
                            attributes: c[6],
                            create: c[7],
                            destroy: c[8],
                            generate: c[9],
                        },
                        open_sessions: open.0,
                        open_attempts: open.1,
                    })
                }
            ),
        any::<u64>().prop_map(|echo| Message::Ping(Ping { echo })),
        any::<u64>().prop_map(|echo| Message::Pong(Pong { echo })),
    ];
    let signing = prop_oneof![
        (bytes::<16>(), bytes::<32>(), bytes::<32>(), mode()).prop_map(|(s, k, message, mode)| Message::OpenSession(
            OpenSession { session: SessionId::from_bytes(s), key: KeyId::from_bytes(k), message, mode }
        )),
        (bytes::<16>(), bytes::<32>()).prop_map(|(s, output_key)| Message::SessionOpened(SessionOpened {
            session: SessionId::from_bytes(s),
            output_key
        })),
        (bytes::<16>(), attempt(), signers()).prop_map(|(s, attempt, signers)| Message::OpenAttempt(OpenAttempt {
            session: SessionId::from_bytes(s),
            attempt,
            signers
        })),
        attempt().prop_map(|attempt| Message::AttemptOpened(AttemptOpened { attempt })),
        (attempt(), pid()).prop_map(|(attempt, seat)| Message::Round1(SeatRef { attempt, seat })),
        (attempt(), pid(), blob(CommitmentBytes::MAX_LEN)).prop_map(|(attempt, seat, c)| Message::Round1Reply(
            Round1Reply { attempt, seat, commitments: CommitmentBytes::new(c).expect("bound") }
        )),
        (attempt(), pid(), mode(), blob(SigningPackageBytes::MAX_LEN)).prop_map(|(attempt, seat, mode, p)| {
            Message::Round2(Round2 {
                attempt,
                seat,
                mode,
                signing_package: SigningPackageBytes::new(p).expect("bound"),
            })
        }),
        (attempt(), pid(), blob(SignatureShareBytes::MAX_LEN)).prop_map(|(attempt, seat, b)| Message::Round2Reply(
            Round2Reply { attempt, seat, signature_share: SignatureShareBytes::new(b).expect("bound") }
        )),
        (attempt(), blob(SigningPackageBytes::MAX_LEN), signer_share()).prop_map(|(attempt, p, share)| {
            Message::VerifyShare(VerifyShare {
                attempt,
                signing_package: SigningPackageBytes::new(p).expect("bound"),
                share,
            })
        }),
        prop_oneof![Just(ShareVerdict::Valid), Just(ShareVerdict::Invalid), Just(ShareVerdict::Indeterminate)]
            .prop_map(Message::ShareVerdict),
        (attempt(), mode(), blob(SigningPackageBytes::MAX_LEN), proptest::collection::vec(signer_share(), 0..5))
            .prop_map(|(attempt, mode, p, shares)| Message::Aggregate(Aggregate {
                attempt,
                mode,
                signing_package: SigningPackageBytes::new(p).expect("bound"),
                shares: SignerShares::new(shares).expect("bound"),
            })),
        prop_oneof![
            (bytes::<32>(), bytes::<32>(), bytes::<32>()).prop_map(|(r, s, output_key)| AggregateOutcome::Signed {
                signature: Bip340Signature { r, s },
                output_key
            }),
            signers().prop_map(|candidate_culprits| AggregateOutcome::InvalidShares { candidate_culprits }),
        ]
        .prop_map(Message::AggregateReply),
        attempt().prop_map(|attempt| Message::AbortAttempt(AttemptRef { attempt })),
        (attempt(), any::<u16>())
            .prop_map(|(attempt, wiped_count)| Message::AttemptAborted(AttemptAborted { attempt, wiped_count })),
        (any::<u16>(), any::<u16>()).prop_map(|(threshold, participants)| Message::DevDealerKeygen(DevDealerKeygen {
            threshold,
            participants
        })),
        key_info().prop_map(Message::KeyInfo),
        bytes::<32>().prop_map(|k| Message::GetKey(KeyRef { key: KeyId::from_bytes(k) })),
    ];
    let store =
        prop_oneof![
            (proptest::collection::vec(sealed_record(), 0..4), proptest::option::of(any::<u64>())).prop_map(
                |(r, compact_before)| {
                    Message::PersistRecords(PersistRecords {
                        records: StoreRecords::new(r).expect("bound"),
                        compact_before,
                    })
                }
            ),
            any::<u64>().prop_map(|head_version| Message::PersistAck(PersistAck { head_version })),
            (any::<bool>(), any::<bool>(), any::<bool>(), proptest::collection::vec(sealed_record(), 0..4)).prop_map(
                |(first, last, verify_only, r)| Message::StoreLoad(StoreLoad {
                    first,
                    last,
                    verify_only,
                    records: StoreRecords::new(r).expect("bound")
                })
            ),
            (
                prop_oneof![Just(ServiceState::Ready), code().prop_map(ServiceState::Refusing)],
                any::<u64>(),
                any::<u64>(),
                any::<u64>()
            )
                .prop_map(|(state, records, head_version, anchor_version)| Message::StoreStatus(
                    StoreStatus { state, records, head_version, anchor_version }
                )),
        ];
    let dkg = prop_oneof![
        Just(Message::GetIdentity(GetIdentity)),
        identity().prop_map(Message::Identity),
        (dkg_id(), any::<u16>(), pid(), proptest::collection::vec(participant(), 0..4)).prop_map(
            |(dkg, threshold, me, p)| {
                Message::DkgStart(DkgStart {
                    dkg,
                    threshold,
                    me,
                    participants: DkgParticipants::new(p).expect("bound"),
                })
            }
        ),
        round1_package().prop_map(Message::DkgRound1),
        (dkg_id(), proptest::collection::vec(round1_package(), 0..3)).prop_map(|(dkg, r)| Message::DkgRound2(
            DkgRound2 { dkg, round1: DkgRound1Packages::new(r).expect("bound") }
        )),
        proptest::collection::vec(envelope(), 0..3)
            .prop_map(|e| Message::DkgRound2Reply(DkgEnvelopes::new(e).expect("bound"))),
        (dkg_id(), proptest::collection::vec(envelope(), 0..3)).prop_map(|(dkg, e)| Message::DkgFinish(DkgFinish {
            dkg,
            envelopes: DkgEnvelopes::new(e).expect("bound")
        })),
        confirmation().prop_map(Message::DkgConfirm),
        (dkg_id(), proptest::collection::vec(confirmation(), 0..3)).prop_map(|(dkg, c)| Message::DkgActivate(
            DkgActivate { dkg, confirmations: DkgConfirmations::new(c).expect("bound") }
        )),
        (dkg_id(), code(), pid()).prop_map(|(dkg, code, culprit)| Message::DkgBlame(DkgBlame { dkg, code, culprit })),
        dkg_id().prop_map(|dkg| Message::DkgAbort(DkgRef { dkg })),
        (dkg_id(), bytes::<32>(), pid(), proptest::collection::vec(participant(), 0..4)).prop_map(
            |(dkg, key, me, p)| {
                Message::RefreshStart(RefreshStart {
                    dkg,
                    key: KeyId::from_bytes(key),
                    me,
                    participants: DkgParticipants::new(p).expect("bound"),
                })
            }
        ),
        (dkg_id(), proptest::collection::vec(confirmation(), 0..3)).prop_map(|(dkg, c)| Message::RefreshActivate(
            RefreshActivate { dkg, confirmations: DkgConfirmations::new(c).expect("bound") }
        )),
        (key_info(), any::<u64>()).prop_map(|(key, epoch)| Message::KeyRefreshed(KeyRefreshed { key, epoch })),
        Just(Message::RotateSealingKey(RotateSealingKey)),
        bytes::<32>().prop_map(|k| Message::BackupSeat(BackupSeat { key: KeyId::from_bytes(k) })),
        seat_backup().prop_map(Message::SeatBackup),
        seat_backup().prop_map(|backup| Message::RestoreSeat(RestoreSeat { backup })),
        (dkg_id(), bytes::<32>(), pid(), identity(), pid(), signers()).prop_map(
            |(repair, key, seat, identity_key, me, helpers)| {
                Message::RepairStart(RepairStart {
                    repair,
                    key: KeyId::from_bytes(key),
                    seat,
                    identity_key,
                    me,
                    helpers,
                })
            }
        ),
        (dkg_id(), proptest::collection::vec(envelope(), 0..3)).prop_map(|(repair, e)| Message::RepairSigma(
            RepairSigma { repair, envelopes: DkgEnvelopes::new(e).expect("bound") }
        )),
        (
            dkg_id(),
            bytes::<32>(),
            pid(),
            blob(PublicKeyPackageBytes::MAX_LEN),
            proptest::collection::vec(envelope(), 0..3)
        )
            .prop_map(|(repair, key, seat, p, e)| Message::RepairFinish(RepairFinish {
                repair,
                key: KeyId::from_bytes(key),
                seat,
                public_key_package: PublicKeyPackageBytes::new(p).expect("bound"),
                envelopes: DkgEnvelopes::new(e).expect("bound"),
            })),
        (any::<u32>(), any::<u32>())
            .prop_map(|(keys, seats)| Message::SealingKeyRotated(SealingKeyRotated { keys, seats })),
        dkg_id().prop_map(|dkg| Message::DkgAborted(DkgAborted { dkg })),
        bytes::<16>().prop_map(|s| Message::CloseSession(SessionRef { session: SessionId::from_bytes(s) })),
        bytes::<16>().prop_map(|s| Message::SessionClosed(SessionClosed { session: SessionId::from_bytes(s) })),
    ];
    let session = || bytes::<16>().prop_map(SessionId::from_bytes);
    let entry = (
        any::<u64>(),
        session(),
        proptest::option::of(attempt()),
        proptest::option::of(pid()),
        bytes::<32>(),
        any::<bool>(),
    )
        .prop_map(|(seq, session, attempt, seat, key, raw_digest)| AuditEntry {
            seq,
            at_unix: seq / 2,
            decision: [
                AuditDecision::Approved,
                AuditDecision::Refused,
                AuditDecision::Signed,
                AuditDecision::KekRotated,
                AuditDecision::Requested,
            ][(seq % 5) as usize],
            rule: Text::new("max_sats_per_tx: 2 requested, 1 allowed").expect("bound"),
            session,
            attempt,
            seat,
            key: KeyId::from_bytes(key),
            txid: if raw_digest { None } else { Some(key) },
            input: if raw_digest { None } else { Some(1) },
            path: Label::new(if raw_digest { "" } else { "0/5" }).expect("bound"),
            raw_digest,
            outputs: AuditOutputs::new(vec![AuditOutput { to: Label::new("bcrt1q").expect("bound"), sats: seq }])
                .expect("bound"),
            fee_sats: seq % 1000,
            policy_hash: key,
        });
    let spending = prop_oneof![
        (session(), bytes::<32>(), any::<u32>(), blob(PsbtBytes::MAX_LEN)).prop_map(|(session, key, input, psbt)| {
            Message::OpenPsbtSession(OpenPsbtSession {
                session,
                key: KeyId::from_bytes(key),
                input,
                psbt: PsbtBytes::new(psbt).expect("bound"),
            })
        }),
        (session(), bytes::<32>(), bytes::<32>(), bytes::<32>()).prop_map(|(session, output_key, sighash, txid)| {
            Message::PsbtSessionOpened(PsbtSessionOpened { session, output_key, sighash, txid })
        }),
        Just(Message::GetPolicy(GetPolicy)),
        bytes::<32>().prop_map(|hash| Message::PolicyInfo(PolicyInfo {
            hash,
            text: PolicyText::new("frostgate/policy/v1\nunrestricted\n").expect("bound"),
        })),
        any::<u64>().prop_map(|after| Message::GetAudit(GetAudit { after })),
        (session(), bytes::<32>(), proptest::collection::vec(0u32..(1 << 31), 0..=6), bytes::<32>(), mode()).prop_map(
            |(session, key, path, message, mode)| Message::OpenDerivedSession(OpenDerivedSession {
                session,
                key: KeyId::from_bytes(key),
                path: DerivationSteps::new(path).expect("bound"),
                message,
                mode,
            })
        ),
        proptest::collection::vec(entry, 0..3)
            .prop_map(|v| Message::AuditLog(AuditLog { entries: AuditEntries::new(v).expect("bound") })),
    ];
    let commitment = || {
        (bytes::<16>(), blob(CommitmentBytes::MAX_LEN)).prop_map(|(id, c)| PreCommitment {
            id: CommitmentId::from_bytes(id),
            commitments: CommitmentBytes::new(c).expect("bound"),
        })
    };
    let commitments =
        move || proptest::collection::vec(commitment(), 0..3).prop_map(|v| PreCommitments::new(v).expect("bound"));
    let binding = prop_oneof![
        request_session().prop_map(SessionBinding::Request),
        (session(), bytes::<32>(), bytes::<32>(), mode()).prop_map(|(session, k, message, mode)| {
            SessionBinding::Digest(OpenSession { session, key: KeyId::from_bytes(k), message, mode })
        }),
        (session(), bytes::<32>(), bytes::<32>(), mode()).prop_map(|(session, k, message, mode)| {
            SessionBinding::Derived(OpenDerivedSession {
                session,
                key: KeyId::from_bytes(k),
                path: DerivationSteps::new(vec![0, 5]).expect("bound"),
                message,
                mode,
            })
        }),
        (session(), bytes::<32>(), any::<u32>(), blob(1024)).prop_map(|(session, k, input, psbt)| {
            SessionBinding::Psbt(OpenPsbtSession {
                session,
                key: KeyId::from_bytes(k),
                input,
                psbt: PsbtBytes::new(psbt).expect("bound"),
            })
        }),
    ];
    let preprocessing = prop_oneof![
        (bytes::<32>(), pid(), any::<u16>()).prop_map(|(k, seat, count)| Message::Preprocess(Preprocess {
            key: KeyId::from_bytes(k),
            seat,
            count
        })),
        (bytes::<32>(), pid(), commitments()).prop_map(|(k, seat, commitments)| Message::Preprocessed(Preprocessed {
            key: KeyId::from_bytes(k),
            seat,
            commitments
        })),
        (
            binding,
            attempt(),
            signers(),
            pid(),
            bytes::<16>(),
            blob(4096),
            any::<u16>(),
            proptest::collection::vec(session(), 0..3)
        )
            .prop_map(|(binding, attempt, signers, seat, c, p, replenish, close)| {
                Message::SignPreprocessed(SignPreprocessed {
                    binding,
                    attempt,
                    signers,
                    seat,
                    commitment: CommitmentId::from_bytes(c),
                    signing_package: SigningPackageBytes::new(p).expect("bound"),
                    replenish,
                    close: SessionIds::new(close).expect("bound"),
                })
            }),
        (attempt(), pid(), blob(SignatureShareBytes::MAX_LEN), commitments()).prop_map(|(attempt, seat, b, next)| {
            Message::PreprocessedShare(PreprocessedShare {
                attempt,
                seat,
                signature_share: SignatureShareBytes::new(b).expect("bound"),
                next,
            })
        }),
        proptest::collection::vec(session(), 0..3)
            .prop_map(|v| Message::CloseSessions(CloseSessions { sessions: SessionIds::new(v).expect("bound") })),
        any::<u32>().prop_map(|closed| Message::SessionsClosed(SessionsClosed { closed })),
        (attempt(), pid(), bytes::<16>(), bytes::<16>(), bytes::<16>()).prop_map(|(attempt, seat, s, c, o)| {
            let item = SignPreprocessed {
                binding: SessionBinding::Digest(OpenSession {
                    session: SessionId::from_bytes(s),
                    key: KeyId::from_bytes([7; 32]),
                    message: [9; 32],
                    mode: TaprootMode::Bip86,
                }),
                attempt,
                signers: Signers::new(vec![seat]).expect("bound"),
                seat,
                commitment: CommitmentId::from_bytes(c),
                signing_package: SigningPackageBytes::new(vec![1, 2, 3]).expect("bound"),
                replenish: 1,
                // Its own session (never closed by its own request) and another one.
                close: SessionIds::new(vec![SessionId::from_bytes(s), SessionId::from_bytes(o)]).expect("bound"),
            };
            Message::SignBatch(SignBatch { items: SignItems::new(vec![item.clone(), item]).expect("bound") })
        }),
        (attempt(), pid(), blob(SignatureShareBytes::MAX_LEN), code()).prop_map(|(attempt, seat, share, code)| {
            let signed = PreprocessedShare {
                attempt,
                seat,
                signature_share: SignatureShareBytes::new(share).expect("bound"),
                next: PreCommitments::new(vec![]).expect("bound"),
            };
            let outcomes = vec![SignOutcome::Signed(signed), SignOutcome::Refused(Error::new(code, "refused"))];
            Message::BatchSigned(BatchSigned { outcomes: SignOutcomes::new(outcomes).expect("bound") })
        }),
        (any::<u64>(), bytes::<32>(), bytes::<32>()).prop_map(|(through, r, s)| Message::AcknowledgeAudit(
            AcknowledgeAudit { through, signature: Bip340Signature { r, s } }
        )),
        (any::<u64>(), any::<u64>())
            .prop_map(|(through, dropped)| Message::AuditAcknowledged(AuditAcknowledged { through, dropped })),
        (bytes::<32>()).prop_map(|k| Message::RestoreChallenge(RestoreChallenge { key: KeyId::from_bytes(k) })),
        (bytes::<32>(), bytes::<32>()).prop_map(|(k, challenge)| Message::RestoreChallenged(RestoreChallenged {
            key: KeyId::from_bytes(k),
            challenge
        })),
        (bytes::<32>(), bytes::<32>())
            .prop_map(|(k, challenge)| Message::AttestEpoch(AttestEpoch { key: KeyId::from_bytes(k), challenge })),
        epoch_statement().prop_map(Message::EpochStatement),
        (seat_backup(), proptest::collection::vec(epoch_statement(), 0..3)).prop_map(|(backup, s)| {
            Message::RestoreAttested(RestoreAttested { backup, statements: EpochStatements::new(s).expect("bound") })
        }),
        (dkg_id(), bytes::<32>(), any::<u64>(), proptest::collection::vec(refresh_vote(), 0..3)).prop_map(
            |(dkg, k, epoch, v)| Message::RefreshCommit(RefreshCommit {
                dkg,
                key: KeyId::from_bytes(k),
                epoch,
                votes: RefreshVotes::new(v).expect("bound"),
            })
        ),
        (dkg_id(), bytes::<32>())
            .prop_map(|(dkg, k)| Message::GetRefreshVote(GetRefreshVote { dkg, key: KeyId::from_bytes(k) })),
        refresh_vote().prop_map(Message::RefreshVote),
        (dkg_id(), bytes::<32>(), proptest::collection::vec(refresh_vote(), 0..3)).prop_map(|(dkg, k, v)| {
            Message::RefreshAbandon(RefreshAbandon {
                dkg,
                key: KeyId::from_bytes(k),
                votes: RefreshVotes::new(v).expect("bound"),
            })
        }),
        (dkg_id(), any::<bool>())
            .prop_map(|(dkg, dropped)| Message::RefreshAbandoned(RefreshAbandoned { dkg, dropped })),
    ];
    let challenges = || {
        proptest::collection::vec(ceremony_challenged(), 0..4).prop_map(|c| CeremonyChallenges::new(c).expect("bound"))
    };
    let attestation = prop_oneof![
        bytes::<32>().prop_map(|challenge| Message::Attest(Attest { challenge })),
        attestation().prop_map(Message::Attestation),
        (dkg_id(), proptest::sample::select(CeremonyKind::ALL.to_vec()), pid())
            .prop_map(|(ceremony, kind, me)| { Message::CeremonyChallenge(CeremonyChallenge { ceremony, kind, me }) }),
        ceremony_challenged().prop_map(Message::CeremonyChallenged),
        (dkg_id(), challenges())
            .prop_map(|(ceremony, challenges)| Message::CeremonyAttest(CeremonyAttest { ceremony, challenges })),
        (dkg_id(), challenges(), proptest::collection::vec((pid(), attestation()), 0..3)).prop_map(
            |(ceremony, challenges, a)| {
                let attestations = a.into_iter().map(|(from, attestation)| PeerAttestation { from, attestation });
                Message::CeremonyPeers(CeremonyPeers {
                    ceremony,
                    challenges,
                    attestations: PeerAttestations::new(attestations.collect::<Vec<_>>()).expect("bound"),
                })
            }
        ),
        (dkg_id(), signers())
            .prop_map(|(ceremony, verified)| Message::CeremonyVerified(CeremonyVerified { ceremony, verified })),
    ];
    let requests = prop_oneof![
        request_session().prop_map(Message::OpenRequestSession),
        (session(), bytes::<32>(), bytes::<32>()).prop_map(|(session, output_key, message)| {
            Message::RequestSessionOpened(RequestSessionOpened { session, output_key, message })
        }),
    ];
    prop_oneof![base, signing, store, dkg, spending, preprocessing, attestation, requests]
}

pub fn request_session() -> impl Strategy<Value = RequestSession> {
    let session = || bytes::<16>().prop_map(SessionId::from_bytes);
    let tag = (bytes::<32>(), "[A-Za-z0-9._-]{1,64}", any::<u64>(), any::<u32>()).prop_map(
        |(client, request, accepted_unix, attempt)| RequestTag {
            client,
            request: RequestName::new(request).expect("bound"),
            accepted_unix,
            attempt,
        },
    );
    let open = prop_oneof![
        (session(), bytes::<32>(), bytes::<32>(), mode()).prop_map(|(session, k, message, mode)| {
            RequestOpen::Digest(OpenSession { session, key: KeyId::from_bytes(k), message, mode })
        }),
        (session(), bytes::<32>(), bytes::<32>(), mode()).prop_map(|(session, k, message, mode)| {
            RequestOpen::Derived(OpenDerivedSession {
                session,
                key: KeyId::from_bytes(k),
                path: DerivationSteps::new(vec![1, 7]).expect("bound"),
                message,
                mode,
            })
        }),
        (session(), bytes::<32>(), any::<u32>(), blob(1024)).prop_map(|(session, k, input, psbt)| {
            RequestOpen::Psbt(OpenPsbtSession {
                session,
                key: KeyId::from_bytes(k),
                input,
                psbt: PsbtBytes::new(psbt).expect("bound"),
            })
        }),
    ];
    (tag, open).prop_map(|(tag, open)| RequestSession { tag, open })
}

pub fn attestation() -> impl Strategy<Value = Attestation> {
    (
        proptest::sample::select(AttestationProvider::ALL.to_vec()),
        blob(4096),
        blob(BootKeyBytes::MAX_LEN),
        bytes::<32>(),
        bytes::<32>(),
    )
        .prop_map(|(provider, document, boot_key, certification_r, certification_s)| Attestation {
            provider,
            document: AttestationDocBytes::new(document).expect("bound"),
            boot_key: BootKeyBytes::new(boot_key).expect("bound"),
            certification_r,
            certification_s,
        })
}

pub fn ceremony_challenged() -> impl Strategy<Value = CeremonyChallenged> {
    (dkg_id(), pid(), bytes::<32>()).prop_map(|(ceremony, from, challenge)| CeremonyChallenged {
        ceremony,
        from,
        challenge,
    })
}

pub fn seat_backup() -> impl Strategy<Value = SeatBackup> {
    (bytes::<32>(), pid(), any::<u64>(), blob(1024), bytes::<32>(), bytes::<32>(), blob(1024)).prop_map(
        |(key, seat, epoch, p, recovery_public_key, ephemeral_public_key, c)| SeatBackup {
            key: KeyId::from_bytes(key),
            seat,
            epoch,
            public_key_package: PublicKeyPackageBytes::new(p).expect("bound"),
            recovery_public_key,
            ephemeral_public_key,
            ciphertext: DkgCiphertext::new(c).expect("bound"),
        },
    )
}

pub fn key_info() -> impl Strategy<Value = KeyInfo> {
    (bytes::<32>(), any::<u16>(), signers(), signers(), bytes::<32>(), blob(PublicKeyPackageBytes::MAX_LEN)).prop_map(
        |(k, threshold, participants, seats, bip86_output_key, p)| KeyInfo {
            key: KeyId::from_bytes(k),
            threshold,
            participants,
            seats,
            bip86_output_key,
            public_key_package: PublicKeyPackageBytes::new(p).expect("bound"),
        },
    )
}

pub fn dkg_id() -> impl Strategy<Value = DkgId> {
    bytes::<16>().prop_map(DkgId::from_bytes)
}

pub fn identity() -> impl Strategy<Value = IdentityKeyBytes> {
    proptest::collection::vec(any::<u8>(), 65).prop_map(|v| IdentityKeyBytes::new(v).expect("bound"))
}

pub fn participant() -> impl Strategy<Value = DkgParticipant> {
    (pid(), identity()).prop_map(|(id, identity_key)| DkgParticipant { id, identity_key })
}

pub fn round1_package() -> impl Strategy<Value = DkgRound1Package> {
    (dkg_id(), pid(), blob(DkgPackageBytes::MAX_LEN)).prop_map(|(dkg, from, b)| DkgRound1Package {
        dkg,
        from,
        package: DkgPackageBytes::new(b).expect("bound"),
    })
}

pub fn envelope() -> impl Strategy<Value = DkgEnvelope> {
    (dkg_id(), pid(), pid(), blob(DkgCiphertext::MAX_LEN)).prop_map(|(dkg, from, to, b)| DkgEnvelope {
        dkg,
        from,
        to,
        ciphertext: DkgCiphertext::new(b).expect("bound"),
    })
}

pub fn refresh_vote() -> impl Strategy<Value = RefreshVote> {
    (dkg_id(), bytes::<32>(), pid(), any::<bool>(), any::<u64>(), bytes::<32>(), bytes::<32>(), bytes::<32>()).prop_map(
        |(dkg, k, seat, prepared, epoch, package_hash, signature_r, signature_s)| RefreshVote {
            dkg,
            key: KeyId::from_bytes(k),
            seat,
            prepared,
            epoch,
            package_hash,
            signature_r,
            signature_s,
        },
    )
}

pub fn epoch_statement() -> impl Strategy<Value = EpochStatement> {
    (bytes::<32>(), pid(), any::<u64>(), bytes::<32>(), bytes::<32>(), bytes::<32>(), bytes::<32>()).prop_map(
        |(k, seat, epoch, package_hash, challenge, signature_r, signature_s)| EpochStatement {
            key: KeyId::from_bytes(k),
            seat,
            epoch,
            package_hash,
            challenge,
            signature_r,
            signature_s,
        },
    )
}

pub fn confirmation() -> impl Strategy<Value = DkgConfirmation> {
    (dkg_id(), pid(), bytes::<32>(), bytes::<32>(), bytes::<32>(), bytes::<32>()).prop_map(
        |(dkg, from, k, transcript_hash, signature_r, signature_s)| DkgConfirmation {
            dkg,
            from,
            key: KeyId::from_bytes(k),
            transcript_hash,
            signature_r,
            signature_s,
        },
    )
}

pub fn sealed_record() -> impl Strategy<Value = StoreRecord> {
    (any::<u64>(), bytes::<32>(), blob(RecordBody::MAX_LEN), bytes::<32>()).prop_map(|(version, prev_mac, b, mac)| {
        StoreRecord { version, prev_mac, body: RecordBody::new(b).expect("bound"), mac }
    })
}

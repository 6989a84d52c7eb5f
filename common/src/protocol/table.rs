//! The boundary table: every message that may cross the host/enclave channel, one row each.
//!
//! This is the single place the message set is written. Everything else is generated from it:
//! the [`Message`](super::Message) enum and [`KINDS`](super::KINDS) (by `define_boundary!` in
//! this crate), typed request/reply pairs ([`Request`](super::Request)), the serving traits and
//! their dispatch ([`EnclaveApi`](super::EnclaveApi), [`HostApi`](super::HostApi)),
//! `common/BOUNDARY.md`, and the host's gRPC server and client glue.
//!
//! A row: `kind Name(Payload) { request|reply, from: Host|Enclave|Both [, exposure: Channel|Network,
//! ready: Any|Custody|Ready|DevBuild, serve: method, reply: ReplyType, opens: [..], closes: [..]] }`.
//! - `kind` is the wire index (the variant index of `Message`): rows are only appended, never
//!   reordered or removed (`tests/frames.rs` freezes the bytes).
//! - `from` is who may send it; a request is served by the other side (`Both`: by either).
//! - `exposure`: `Channel` (host and enclave only) or `Network` (also an RPC of the gRPC API,
//!   `host/proto/frostgate/v1/signer.proto`, named like the row).
//! - `ready`: what the enclave must be before it serves the request (`Any`; `Custody`: an HSM
//!   is configured; `Ready`: custody and a verified store; `DevBuild`: a development build, then
//!   `Ready`).
//! - `serve`: the method of the serving trait; `reply`: its reply type (the payload of the reply
//!   row, or [`DkgOutcome`](super::DkgOutcome) of it for DKG steps, which may end in a blame).
//! - `opens`, `closes`: the enclave registries (`Session`, `Attempt`, `Dkg`, `Repair`,
//!   `Commitment`) the request opens entries in or closes entries of; mandatory, `[]` for none.
//!   The payload of a row that names any implements [`Registers`](super::Registers); the host's
//!   admission counts every opening against the caller's quota from these alone.
//!
//! Invariant: no payload carries a secret (`tests/hygiene.rs` checks every reachable name).

/// Passes the boundary table to `$callback!`. Payload types are resolved where the callback
/// expands, so it needs `frostgate_common::protocol::*` in scope.
#[macro_export]
macro_rules! boundary_table {
    ($callback:ident) => {
        $callback! {
            /// Reply to any request that failed, or to a frame that could not be read (request id 0
            /// when the frame's id could not be read).
            0 Error(Error) { reply, from: Both }
            /// Host -> enclave: opens the conversation and states the host's protocol version.
            1 Hello(Hello) {
                request, from: Host, exposure: Channel, ready: Any, serve: hello, reply: HelloReply,
                opens: [], closes: []
            }
            /// Enclave -> host: the enclave's protocol version and build.
            2 HelloReply(HelloReply) { reply, from: Enclave }
            /// Host -> enclave: is the enclave able to serve?
            3 Health(Health) {
                request, from: Host, exposure: Network, ready: Any, serve: health, reply: HealthReply,
                opens: [], closes: []
            }
            /// Enclave -> host: whether it serves, or the code of the error that makes it refuse.
            4 HealthReply(HealthReply) { reply, from: Enclave }
            /// Either side: liveness of the reverse path; the receiver echoes the value.
            5 Ping(Ping) {
                request, from: Both, exposure: Channel, ready: Any, serve: ping, reply: Pong,
                opens: [], closes: []
            }
            /// Reply to a ping with the same value.
            6 Pong(Pong) { reply, from: Both }
            /// Host -> enclave: bind a session id, once and for good, to a key, a 32-byte message
            /// and a Taproot mode. Repeating the identical binding is accepted.
            7 OpenSession(OpenSession) {
                request, from: Host, exposure: Network, ready: Ready, serve: open_session, reply: SessionOpened,
                opens: [Session], closes: []
            }
            /// Enclave -> host: the session is bound; the signature will verify under `output_key`.
            8 SessionOpened(SessionOpened) { reply, from: Enclave }
            /// Host -> enclave: bind an attempt id to a session and an exact signer set.
            9 OpenAttempt(OpenAttempt) {
                request, from: Host, exposure: Network, ready: Ready, serve: open_attempt, reply: AttemptOpened,
                opens: [Attempt], closes: []
            }
            /// Enclave -> host: the attempt is open.
            10 AttemptOpened(AttemptOpened) { reply, from: Enclave }
            /// Host -> enclave: round-1 commitments for one seat in one attempt (same answer until
            /// the nonce is consumed).
            11 Round1(SeatRef) {
                request, from: Host, exposure: Network, ready: Ready, serve: round1, reply: Round1Reply,
                opens: [], closes: []
            }
            /// Enclave -> host: the seat's public commitments.
            12 Round1Reply(Round1Reply) { reply, from: Enclave }
            /// Host -> enclave: sign the package with the seat's nonce (at most once per attempt
            /// and seat).
            13 Round2(Round2) {
                request, from: Host, exposure: Network, ready: Ready, serve: round2, reply: Round2Reply,
                opens: [], closes: []
            }
            /// Enclave -> host: the seat's signature share.
            14 Round2Reply(Round2Reply) { reply, from: Enclave }
            /// Host -> enclave: check one signer's share as it arrives.
            15 VerifyShare(VerifyShare) {
                request, from: Host, exposure: Network, ready: Ready, serve: verify_share, reply: ShareVerdict,
                opens: [], closes: []
            }
            /// Enclave -> host: valid, invalid or indeterminate.
            16 ShareVerdict(ShareVerdict) { reply, from: Enclave }
            /// Host -> enclave: aggregate the attempt's shares into the BIP340 signature.
            17 Aggregate(Aggregate) {
                request, from: Host, exposure: Network, ready: Ready, serve: aggregate, reply: AggregateOutcome,
                opens: [], closes: []
            }
            /// Enclave -> host: the signature, or the candidate culprits if shares were invalid.
            18 AggregateReply(AggregateOutcome) { reply, from: Enclave }
            /// Host -> enclave: abandon an attempt and wipe its live nonces.
            19 AbortAttempt(AttemptRef) {
                request, from: Host, exposure: Network, ready: Ready, serve: abort_attempt, reply: AttemptAborted,
                opens: [], closes: [Attempt]
            }
            /// Enclave -> host: the attempt is gone.
            20 AttemptAborted(AttemptAborted) { reply, from: Enclave }
            /// Host -> enclave, development builds only: create a key with a trusted dealer, every
            /// seat held by this enclave (shares sealed like any other). Refused otherwise.
            21 DevDealerKeygen(DevDealerKeygen) {
                request, from: Host, exposure: Network, ready: DevBuild, serve: dev_dealer_keygen, reply: KeyInfo,
                opens: [], closes: []
            }
            /// Enclave -> host: a key's public description.
            22 KeyInfo(KeyInfo) { reply, from: Enclave }
            /// Host -> enclave: describe a key this enclave holds.
            23 GetKey(KeyRef) {
                request, from: Host, exposure: Network, ready: Ready, serve: get_key, reply: KeyInfo,
                opens: [], closes: []
            }
            /// Enclave -> host: commit these chained records durably in one transaction, then
            /// acknowledge.
            24 PersistRecords(PersistRecords) {
                request, from: Enclave, exposure: Channel, ready: Any, serve: persist_records, reply: PersistAck,
                opens: [], closes: []
            }
            /// Host -> enclave: the records are durable; the store's head version.
            25 PersistAck(PersistAck) { reply, from: Host }
            /// Host -> enclave: one chunk of the host's store, in chain order (the first chunk of
            /// a load has `first`; the last has `last`).
            26 StoreLoad(StoreLoad) {
                request, from: Host, exposure: Channel, ready: Custody, serve: store_load, reply: StoreStatus,
                opens: [], closes: []
            }
            /// Enclave -> host: progress or the verdict of a load.
            27 StoreStatus(StoreStatus) { reply, from: Enclave }
            /// Host -> enclave: the enclave's identity public key.
            28 GetIdentity(GetIdentity) {
                request, from: Host, exposure: Network, ready: Ready, serve: get_identity, reply: IdentityKeyBytes,
                opens: [], closes: []
            }
            /// Enclave -> host: the identity public key.
            29 Identity(IdentityKeyBytes) { reply, from: Enclave }
            /// Host -> enclave: start a DKG (round 1) as one participant of a pinned group.
            30 DkgStart(DkgStart) {
                request, from: Host, exposure: Network, ready: Ready, serve: dkg_start,
                reply: DkgOutcome<DkgRound1Package>, opens: [Dkg], closes: [Dkg]
            }
            /// Enclave -> host: this participant's round-1 package.
            31 DkgRound1(DkgRound1Package) { reply, from: Enclave }
            /// Host -> enclave: everyone else's round-1 packages; answer with encrypted round-2
            /// packages.
            32 DkgRound2(DkgRound2) {
                request, from: Host, exposure: Network, ready: Ready, serve: dkg_round2,
                reply: DkgOutcome<DkgEnvelopes>,
                opens: [], closes: [Dkg]
            }
            /// Enclave -> host: round-2 packages, each encrypted to its recipient's identity key.
            33 DkgRound2Reply(DkgEnvelopes) { reply, from: Enclave }
            /// Host -> enclave: the round-2 packages addressed to this participant; answer with a
            /// signed confirmation of the transcript.
            34 DkgFinish(DkgFinish) {
                request, from: Host, exposure: Network, ready: Ready, serve: dkg_finish,
                reply: DkgOutcome<DkgConfirmation>, opens: [], closes: [Dkg]
            }
            /// Enclave -> host: this participant's transcript confirmation.
            35 DkgConfirm(DkgConfirmation) { reply, from: Enclave }
            /// Host -> enclave: every participant's confirmation; activate the key if all agree.
            36 DkgActivate(DkgActivate) {
                request, from: Host, exposure: Network, ready: Ready, serve: dkg_activate, reply: DkgOutcome<KeyInfo>,
                opens: [], closes: [Dkg]
            }
            /// Enclave -> host: a participant was identified as the cause of an abort.
            37 DkgBlame(DkgBlame) { reply, from: Enclave }
            /// Host -> enclave: abandon a DKG (its secrets are wiped).
            38 DkgAbort(DkgRef) {
                request, from: Host, exposure: Network, ready: Ready, serve: dkg_abort, reply: DkgAborted,
                opens: [], closes: [Dkg]
            }
            /// Enclave -> host: the DKG is gone.
            39 DkgAborted(DkgAborted) { reply, from: Enclave }
            /// Host -> enclave: the session is finished (its signature exists or it is abandoned):
            /// remove it with its attempts, nonces and markers. Idempotent.
            40 CloseSession(SessionRef) {
                request, from: Host, exposure: Network, ready: Ready, serve: close_session, reply: SessionClosed,
                opens: [], closes: [Session]
            }
            /// Enclave -> host: the session is gone.
            41 SessionClosed(SessionClosed) { reply, from: Enclave }
            /// Host -> enclave: bind a session to one input of a PSBT; the enclave checks the input
            /// spends this key, computes the BIP341 sighash itself and applies its policy.
            42 OpenPsbtSession(OpenPsbtSession) {
                request, from: Host, exposure: Network, ready: Ready, serve: open_psbt_session,
                reply: PsbtSessionOpened, opens: [Session], closes: []
            }
            /// Enclave -> host: the session is bound to this sighash of this transaction.
            43 PsbtSessionOpened(PsbtSessionOpened) { reply, from: Enclave }
            /// Host -> enclave: the policy in force.
            44 GetPolicy(GetPolicy) {
                request, from: Host, exposure: Network, ready: Any, serve: get_policy, reply: PolicyInfo,
                opens: [], closes: []
            }
            /// Enclave -> host: the policy's canonical hash and text.
            45 PolicyInfo(PolicyInfo) { reply, from: Enclave }
            /// Host -> enclave: audit records after a sequence number, verified by the enclave.
            46 GetAudit(GetAudit) {
                request, from: Host, exposure: Network, ready: Ready, serve: get_audit, reply: AuditLog,
                opens: [], closes: []
            }
            /// Enclave -> host: audit records in order.
            47 AuditLog(AuditLog) { reply, from: Enclave }
            /// Host -> enclave: like `OpenSession`, for the child of the key at an unhardened path
            /// (the raw-digest path; the enclave derives the child itself).
            48 OpenDerivedSession(OpenDerivedSession) {
                request, from: Host, exposure: Network, ready: Ready, serve: open_derived_session, reply: SessionOpened,
                opens: [Session], closes: []
            }
            /// Host -> enclave: start refreshing a held key's shares (same group key, next epoch) as
            /// one participant of a pinned group; `DkgRound2` and `DkgFinish` follow as for a DKG.
            49 RefreshStart(RefreshStart) {
                request, from: Host, exposure: Network, ready: Ready, serve: refresh_start,
                reply: DkgOutcome<DkgRound1Package>, opens: [Dkg], closes: [Dkg]
            }
            /// Host -> enclave: every participant's confirmation; if all agree, prepare the refreshed
            /// share beside the current one (phase 1: durable, not yet in force; `RefreshCommit`).
            50 RefreshActivate(RefreshActivate) {
                request, from: Host, exposure: Network, ready: Ready, serve: refresh_activate,
                reply: DkgOutcome<KeyRefreshed>, opens: [], closes: [Dkg]
            }
            /// Enclave -> host: the refreshed key and its new epoch.
            51 KeyRefreshed(KeyRefreshed) { reply, from: Enclave }
            /// Host -> enclave: rotate the HSM key-encryption key (reseal every held share, then
            /// destroy the old key). Local clients only.
            52 RotateSealingKey(RotateSealingKey) {
                request, from: Host, exposure: Channel, ready: Ready, serve: rotate_sealing_key,
                reply: SealingKeyRotated,
                opens: [], closes: []
            }
            /// Enclave -> host: the rotation is complete.
            53 SealingKeyRotated(SealingKeyRotated) { reply, from: Enclave }
            /// Host -> helper enclave: start repairing a lost seat; answer with the other helpers'
            /// deltas, encrypted to each.
            54 RepairStart(RepairStart) {
                request, from: Host, exposure: Network, ready: Ready, serve: repair_start,
                reply: DkgOutcome<DkgEnvelopes>,
                opens: [Repair], closes: [Repair]
            }
            /// Host -> helper enclave: the deltas addressed here; answer with the sigma encrypted to
            /// the new enclave.
            55 RepairSigma(RepairSigma) {
                request, from: Host, exposure: Network, ready: Ready, serve: repair_sigma,
                reply: DkgOutcome<DkgEnvelopes>,
                opens: [], closes: [Repair]
            }
            /// Host -> new enclave: the helpers' sigmas; rebuild, check and seal the seat's share.
            56 RepairFinish(RepairFinish) {
                request, from: Host, exposure: Network, ready: Ready, serve: repair_finish, reply: DkgOutcome<KeyInfo>,
                opens: [], closes: [Repair]
            }
            /// Host -> enclave: back up this enclave's seat of a key to the pinned recovery key.
            /// Local clients only.
            57 BackupSeat(BackupSeat) {
                request, from: Host, exposure: Channel, ready: Ready, serve: backup_seat, reply: SeatBackup,
                opens: [], closes: []
            }
            /// Enclave -> host: the seat's backup (ciphertext only).
            58 SeatBackup(SeatBackup) { reply, from: Enclave }
            /// Host -> enclave: restore a seat from its backup (the enclave reads the recovery
            /// private key itself). Local clients only. Refused since protocol version 3: a restore
            /// needs the peers' statements of the current epoch (`RestoreAttested`).
            59 RestoreSeat(RestoreSeat) {
                request, from: Host, exposure: Channel, ready: Ready, serve: restore_seat, reply: KeyInfo,
                opens: [], closes: []
            }
            /// Host -> enclave: commitments to fresh nonce pairs for one seat of a key, kept live
            /// in enclave memory (bounded, wiped after their TTL) until one signing uses them.
            60 Preprocess(Preprocess) {
                request, from: Host, exposure: Network, ready: Ready, serve: preprocess, reply: Preprocessed,
                opens: [Commitment], closes: []
            }
            /// Enclave -> host: the commitments and their ids.
            61 Preprocessed(Preprocessed) { reply, from: Enclave }
            /// Host -> enclave: bind session and attempt, sign the package with a preprocessed
            /// commitment (at most once, consumed durably before the share leaves), close finished
            /// sessions, and hand out the next commitments: one request per signer per signature.
            62 SignPreprocessed(SignPreprocessed) {
                request, from: Host, exposure: Network, ready: Ready, serve: sign_preprocessed,
                reply: PreprocessedShare,
                opens: [Session, Attempt, Commitment], closes: [Session, Commitment]
            }
            /// Enclave -> host: the seat's signature share and its next commitments.
            63 PreprocessedShare(PreprocessedShare) { reply, from: Enclave }
            /// Host -> enclave: close several finished sessions (as `CloseSession`). Idempotent.
            64 CloseSessions(CloseSessions) {
                request, from: Host, exposure: Network, ready: Ready, serve: close_sessions, reply: SessionsClosed,
                opens: [], closes: [Session]
            }
            /// Enclave -> host: how many were open.
            65 SessionsClosed(SessionsClosed) { reply, from: Enclave }
            /// Host -> enclave: several `SignPreprocessed` at once (the signings in flight to this
            /// node); each item is served exactly as alone, their markers share commits.
            66 SignBatch(SignBatch) {
                request, from: Host, exposure: Network, ready: Ready, serve: sign_batch, reply: BatchSigned,
                opens: [Session, Attempt, Commitment], closes: [Session, Commitment]
            }
            /// Enclave -> host: one outcome per item, in order.
            67 BatchSigned(BatchSigned) { reply, from: Enclave }
            /// Host -> enclave: the pinned auditor acknowledges an export of the audit trail; the
            /// records it covers may leave (the only way a signed decision leaves). Local clients
            /// only.
            68 AcknowledgeAudit(AcknowledgeAudit) {
                request, from: Host, exposure: Channel, ready: Ready, serve: acknowledge_audit,
                reply: AuditAcknowledged,
                opens: [], closes: []
            }
            /// Enclave -> host: the acknowledgement is durable.
            69 AuditAcknowledged(AuditAcknowledged) { reply, from: Enclave }
            /// Host -> enclave: put a refreshed key in force, with every participant's signed vote
            /// that it prepared it (phase 2; until then the key signs at its previous epoch).
            /// Idempotent.
            70 RefreshCommit(RefreshCommit) {
                request, from: Host, exposure: Network, ready: Ready, serve: refresh_commit, reply: KeyRefreshed,
                opens: [], closes: []
            }
            /// Host -> restoring enclave: a fresh challenge for the peers' epoch statements.
            /// Local clients only.
            71 RestoreChallenge(RestoreChallenge) {
                request, from: Host, exposure: Channel, ready: Ready, serve: restore_challenge,
                reply: RestoreChallenged,
                opens: [], closes: []
            }
            /// Enclave -> host: the challenge.
            72 RestoreChallenged(RestoreChallenged) { reply, from: Enclave }
            /// Host -> peer enclave: state (signed by the identity key) the epoch at which the key
            /// is held here, over the restoring enclave's challenge.
            73 AttestEpoch(AttestEpoch) {
                request, from: Host, exposure: Network, ready: Ready, serve: attest_epoch, reply: EpochStatement,
                opens: [], closes: []
            }
            /// Enclave -> host: the signed statement.
            74 EpochStatement(EpochStatement) { reply, from: Enclave }
            /// Host -> restoring enclave: restore a seat from its backup, with at least the key's
            /// threshold of peers' statements of the current epoch (a stale backup is refused).
            /// Local clients only.
            75 RestoreAttested(RestoreAttested) {
                request, from: Host, exposure: Channel, ready: Ready, serve: restore_attested, reply: KeyInfo,
                opens: [], closes: []
            }
            /// Host -> enclave: its signed vote on a refresh (prepared, or never).
            76 GetRefreshVote(GetRefreshVote) {
                request, from: Host, exposure: Network, ready: Ready, serve: get_refresh_vote, reply: RefreshVote,
                opens: [], closes: []
            }
            /// Enclave -> host: the vote.
            77 RefreshVote(RefreshVote) { reply, from: Enclave }
            /// Host -> enclave: drop a prepared refresh that a participant voted it never prepared.
            78 RefreshAbandon(RefreshAbandon) {
                request, from: Host, exposure: Network, ready: Ready, serve: refresh_abandon, reply: RefreshAbandoned,
                opens: [], closes: []
            }
            /// Enclave -> host: whether a prepared share was dropped.
            79 RefreshAbandoned(RefreshAbandoned) { reply, from: Enclave }
            /// Host -> enclave: attest this enclave over the caller's challenge (a TEE document
            /// over the per-boot key, which the identity key certifies).
            80 Attest(Attest) {
                request, from: Host, exposure: Network, ready: Ready, serve: attest, reply: Attestation,
                opens: [], closes: []
            }
            /// Enclave -> host: the attestation (empty without a provider).
            81 Attestation(Attestation) { reply, from: Enclave }
            /// Host -> enclave: draw this enclave's challenge for a ceremony about to start
            /// (counted with the ceremony it precedes).
            82 CeremonyChallenge(CeremonyChallenge) {
                request, from: Host, exposure: Network, ready: Ready, serve: ceremony_challenge, reply: CeremonyChallenged,
                opens: [Dkg, Repair], closes: []
            }
            /// Enclave -> host: the challenge.
            83 CeremonyChallenged(CeremonyChallenged) { reply, from: Enclave }
            /// Host -> enclave: attest this enclave over the ceremony and every participant's
            /// challenge.
            84 CeremonyAttest(CeremonyAttest) {
                request, from: Host, exposure: Network, ready: Ready, serve: ceremony_attest, reply: Attestation,
                opens: [], closes: []
            }
            /// Host -> enclave: the peers' attestations, checked against this enclave's `[group]`
            /// pins before any secret of the ceremony leaves it.
            85 CeremonyPeers(CeremonyPeers) {
                request, from: Host, exposure: Network, ready: Ready, serve: ceremony_peers,
                reply: DkgOutcome<CeremonyVerified>, opens: [], closes: []
            }
            /// Enclave -> host: the pinned peers verified.
            86 CeremonyVerified(CeremonyVerified) { reply, from: Enclave }
            /// Host -> enclave: open a session for a signing service request (as `OpenSession`,
            /// `OpenDerivedSession` or `OpenPsbtSession`); the request is bound, durably, to what
            /// it signs, and anything else under it is refused.
            87 OpenRequestSession(RequestSession) {
                request, from: Host, exposure: Network, ready: Ready, serve: open_request_session,
                reply: RequestSessionOpened, opens: [Session], closes: []
            }
            /// Enclave -> host: the session is bound.
            88 RequestSessionOpened(RequestSessionOpened) { reply, from: Enclave }
        }
    };
}

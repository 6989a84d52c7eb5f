//! The boundary message set: every message that may cross the host/enclave channel.
//!
//! Invariants: one enum, [`Message`]; each request sits beside its reply; variants are only
//! appended (the wire carries the variant index as the message kind); no variant carries a
//! secret. [`KINDS`] describes each kind's role and direction, and the checked-in boundary
//! manifest (`common/BOUNDARY.md`) pins all of it.

use crate::bounded::{
    CommitmentBytes, DkgCiphertext, DkgConfirmations, DkgEnvelopes, DkgPackageBytes, DkgParticipants,
    DkgRound1Packages, IdentityKeyBytes, Label, PublicKeyPackageBytes, RecordBody, SealedRecords, SignatureShareBytes,
    SignerShares, Signers, SigningPackageBytes,
};
use crate::error::{Error, ErrorCode};
use crate::ids::{AttemptId, DkgId, KeyId, ParticipantId, SessionId};
use serde::{Deserialize, Serialize};

/// The protocol version this build speaks. A frame with any other version is rejected.
pub const PROTOCOL_VERSION: u16 = 1;

/// Whether a message opens an exchange or answers one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Opens an exchange; the receiver answers with a reply carrying the same request id.
    Request,
    /// Answers the request with the same request id. Never answered itself.
    Reply,
}

/// Which side may send a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Only the host sends it.
    HostToEnclave,
    /// Only the enclave sends it.
    EnclaveToHost,
    /// Either side.
    Both,
}

/// One side of the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The host process.
    Host,
    /// The enclave process.
    Enclave,
}

impl Direction {
    /// Whether `sender` may send a message with this direction.
    pub fn allows_sender(self, sender: Side) -> bool {
        matches!(
            (self, sender),
            (Direction::Both, _) | (Direction::HostToEnclave, Side::Host) | (Direction::EnclaveToHost, Side::Enclave)
        )
    }
}

/// Static description of one message kind, indexed by the kind number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindInfo {
    /// The variant name.
    pub name: &'static str,
    /// Request or reply.
    pub role: Role,
    /// Who may send it.
    pub direction: Direction,
}

/// Every message crossing the channel. Append only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Reply to any request that failed, or to a frame that could not be read (request id 0
    /// when the frame's id could not be read).
    Error(Error),
    /// Host -> enclave: opens the conversation and states the host's protocol version.
    Hello(Hello),
    /// Enclave -> host: the enclave's protocol version and build.
    HelloReply(HelloReply),
    /// Host -> enclave: is the enclave able to serve?
    Health,
    /// Enclave -> host: whether it serves, or the code of the error that makes it refuse.
    HealthReply(HealthReply),
    /// Either side: liveness of the reverse path; the receiver echoes the value.
    Ping(Ping),
    /// Reply to [`Message::Ping`] with the same value.
    Pong(Ping),
    /// Host -> enclave: bind a session id, once and for good, to a key, a 32-byte message and
    /// a Taproot mode. Repeating the identical binding is accepted.
    OpenSession(OpenSession),
    /// Enclave -> host: the session is bound; the signature will verify under `output_key`.
    SessionOpened(SessionOpened),
    /// Host -> enclave: bind an attempt id to a session and an exact signer set.
    OpenAttempt(OpenAttempt),
    /// Enclave -> host: the attempt is open.
    AttemptOpened(AttemptRef),
    /// Host -> enclave: round-1 commitments for one seat in one attempt (same answer until the
    /// nonce is consumed).
    Round1(SeatRef),
    /// Enclave -> host: the seat's public commitments.
    Round1Reply(Round1Reply),
    /// Host -> enclave: sign the package with the seat's nonce (at most once per attempt and seat).
    Round2(Round2),
    /// Enclave -> host: the seat's signature share.
    Round2Reply(Round2Reply),
    /// Host -> enclave: check one signer's share as it arrives.
    VerifyShare(VerifyShare),
    /// Enclave -> host: valid, invalid or indeterminate.
    ShareVerdict(ShareVerdict),
    /// Host -> enclave: aggregate the attempt's shares into the BIP340 signature.
    Aggregate(Aggregate),
    /// Enclave -> host: the signature, or the candidate culprits if shares were invalid.
    AggregateReply(AggregateOutcome),
    /// Host -> enclave: abandon an attempt and wipe its live nonces.
    AbortAttempt(AttemptRef),
    /// Enclave -> host: the attempt is gone.
    AttemptAborted(AttemptAborted),
    /// Host -> enclave, development builds only: create a key with a trusted dealer, every seat
    /// held by this enclave (shares sealed like any other). Refused otherwise.
    DevDealerKeygen(DevDealerKeygen),
    /// Enclave -> host: a key's public description.
    KeyInfo(KeyInfo),
    /// Host -> enclave: describe a key this enclave holds.
    GetKey(KeyRef),
    /// Enclave -> host: commit these sealed records durably in one transaction, then acknowledge.
    PersistRecords(PersistRecords),
    /// Host -> enclave: the records are durable; the store's head version.
    PersistAck(PersistAck),
    /// Host -> enclave: one chunk of the host's store, in chain order (the first chunk of a load
    /// has `first`; the last has `last`).
    StoreLoad(StoreLoad),
    /// Enclave -> host: progress or the verdict of a load.
    StoreStatus(StoreStatus),
    /// Host -> enclave: the enclave's identity public key.
    GetIdentity,
    /// Enclave -> host: the identity public key.
    Identity(IdentityKeyBytes),
    /// Host -> enclave: start a DKG (round 1) as one participant of a pinned group.
    DkgStart(DkgStart),
    /// Enclave -> host: this participant's round-1 package.
    DkgRound1(DkgRound1Package),
    /// Host -> enclave: everyone else's round-1 packages; answer with encrypted round-2 packages.
    DkgRound2(DkgRound2),
    /// Enclave -> host: round-2 packages, each encrypted to its recipient's identity key.
    DkgRound2Reply(DkgEnvelopes),
    /// Host -> enclave: the round-2 packages addressed to this participant; answer with a signed
    /// confirmation of the transcript.
    DkgFinish(DkgFinish),
    /// Enclave -> host: this participant's transcript confirmation.
    DkgConfirm(DkgConfirmation),
    /// Host -> enclave: every participant's confirmation; activate the key if all agree.
    DkgActivate(DkgActivate),
    /// Enclave -> host: a participant was identified as the cause of an abort.
    DkgBlame(DkgBlame),
    /// Host -> enclave: abandon a DKG (its secrets are wiped).
    DkgAbort(DkgRef),
    /// Enclave -> host: the DKG is gone.
    DkgAborted(DkgRef),
    /// Host -> enclave: the session is finished (its signature exists or it is abandoned):
    /// remove it with its attempts, nonces and markers. Idempotent.
    CloseSession(SessionRef),
    /// Enclave -> host: the session is gone.
    SessionClosed(SessionRef),
}

/// Role and direction of every kind, in wire (variant index) order.
pub const KINDS: &[KindInfo] = &[
    KindInfo { name: "Error", role: Role::Reply, direction: Direction::Both },
    KindInfo { name: "Hello", role: Role::Request, direction: Direction::HostToEnclave },
    KindInfo { name: "HelloReply", role: Role::Reply, direction: Direction::EnclaveToHost },
    KindInfo { name: "Health", role: Role::Request, direction: Direction::HostToEnclave },
    KindInfo { name: "HealthReply", role: Role::Reply, direction: Direction::EnclaveToHost },
    KindInfo { name: "Ping", role: Role::Request, direction: Direction::Both },
    KindInfo { name: "Pong", role: Role::Reply, direction: Direction::Both },
    KindInfo { name: "OpenSession", role: Role::Request, direction: Direction::HostToEnclave },
    KindInfo { name: "SessionOpened", role: Role::Reply, direction: Direction::EnclaveToHost },
    KindInfo { name: "OpenAttempt", role: Role::Request, direction: Direction::HostToEnclave },
    KindInfo { name: "AttemptOpened", role: Role::Reply, direction: Direction::EnclaveToHost },
    KindInfo { name: "Round1", role: Role::Request, direction: Direction::HostToEnclave },
    KindInfo { name: "Round1Reply", role: Role::Reply, direction: Direction::EnclaveToHost },
    KindInfo { name: "Round2", role: Role::Request, direction: Direction::HostToEnclave },
    KindInfo { name: "Round2Reply", role: Role::Reply, direction: Direction::EnclaveToHost },
    KindInfo { name: "VerifyShare", role: Role::Request, direction: Direction::HostToEnclave },
    KindInfo { name: "ShareVerdict", role: Role::Reply, direction: Direction::EnclaveToHost },
    KindInfo { name: "Aggregate", role: Role::Request, direction: Direction::HostToEnclave },
    KindInfo { name: "AggregateReply", role: Role::Reply, direction: Direction::EnclaveToHost },
    KindInfo { name: "AbortAttempt", role: Role::Request, direction: Direction::HostToEnclave },
    KindInfo { name: "AttemptAborted", role: Role::Reply, direction: Direction::EnclaveToHost },
    KindInfo { name: "DevDealerKeygen", role: Role::Request, direction: Direction::HostToEnclave },
    KindInfo { name: "KeyInfo", role: Role::Reply, direction: Direction::EnclaveToHost },
    KindInfo { name: "GetKey", role: Role::Request, direction: Direction::HostToEnclave },
    KindInfo { name: "PersistRecords", role: Role::Request, direction: Direction::EnclaveToHost },
    KindInfo { name: "PersistAck", role: Role::Reply, direction: Direction::HostToEnclave },
    KindInfo { name: "StoreLoad", role: Role::Request, direction: Direction::HostToEnclave },
    KindInfo { name: "StoreStatus", role: Role::Reply, direction: Direction::EnclaveToHost },
    KindInfo { name: "GetIdentity", role: Role::Request, direction: Direction::HostToEnclave },
    KindInfo { name: "Identity", role: Role::Reply, direction: Direction::EnclaveToHost },
    KindInfo { name: "DkgStart", role: Role::Request, direction: Direction::HostToEnclave },
    KindInfo { name: "DkgRound1", role: Role::Reply, direction: Direction::EnclaveToHost },
    KindInfo { name: "DkgRound2", role: Role::Request, direction: Direction::HostToEnclave },
    KindInfo { name: "DkgRound2Reply", role: Role::Reply, direction: Direction::EnclaveToHost },
    KindInfo { name: "DkgFinish", role: Role::Request, direction: Direction::HostToEnclave },
    KindInfo { name: "DkgConfirm", role: Role::Reply, direction: Direction::EnclaveToHost },
    KindInfo { name: "DkgActivate", role: Role::Request, direction: Direction::HostToEnclave },
    KindInfo { name: "DkgBlame", role: Role::Reply, direction: Direction::EnclaveToHost },
    KindInfo { name: "DkgAbort", role: Role::Request, direction: Direction::HostToEnclave },
    KindInfo { name: "DkgAborted", role: Role::Reply, direction: Direction::EnclaveToHost },
    KindInfo { name: "CloseSession", role: Role::Request, direction: Direction::HostToEnclave },
    KindInfo { name: "SessionClosed", role: Role::Reply, direction: Direction::EnclaveToHost },
];

impl Message {
    /// The kind number (variant index) as it travels on the wire.
    pub fn kind(&self) -> usize {
        match self {
            Message::Error(_) => 0,
            Message::Hello(_) => 1,
            Message::HelloReply(_) => 2,
            Message::Health => 3,
            Message::HealthReply(_) => 4,
            Message::Ping(_) => 5,
            Message::Pong(_) => 6,
            Message::OpenSession(_) => 7,
            Message::SessionOpened(_) => 8,
            Message::OpenAttempt(_) => 9,
            Message::AttemptOpened(_) => 10,
            Message::Round1(_) => 11,
            Message::Round1Reply(_) => 12,
            Message::Round2(_) => 13,
            Message::Round2Reply(_) => 14,
            Message::VerifyShare(_) => 15,
            Message::ShareVerdict(_) => 16,
            Message::Aggregate(_) => 17,
            Message::AggregateReply(_) => 18,
            Message::AbortAttempt(_) => 19,
            Message::AttemptAborted(_) => 20,
            Message::DevDealerKeygen(_) => 21,
            Message::KeyInfo(_) => 22,
            Message::GetKey(_) => 23,
            Message::PersistRecords(_) => 24,
            Message::PersistAck(_) => 25,
            Message::StoreLoad(_) => 26,
            Message::StoreStatus(_) => 27,
            Message::GetIdentity => 28,
            Message::Identity(_) => 29,
            Message::DkgStart(_) => 30,
            Message::DkgRound1(_) => 31,
            Message::DkgRound2(_) => 32,
            Message::DkgRound2Reply(_) => 33,
            Message::DkgFinish(_) => 34,
            Message::DkgConfirm(_) => 35,
            Message::DkgActivate(_) => 36,
            Message::DkgBlame(_) => 37,
            Message::DkgAbort(_) => 38,
            Message::DkgAborted(_) => 39,
            Message::CloseSession(_) => 40,
            Message::SessionClosed(_) => 41,
        }
    }

    /// Static description of this message's kind.
    pub fn info(&self) -> &'static KindInfo {
        &KINDS[self.kind()]
    }

    /// Builds the error reply.
    pub fn error(code: ErrorCode, message: impl std::fmt::Display) -> Message {
        Message::Error(Error::new(code, message))
    }
}

/// Opening request from the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The protocol version the host speaks.
    pub protocol_version: u16,
    /// Free-form client name for the enclave's log (e.g. `frostgate 0.1.0`).
    pub client: Label,
}

/// The enclave's answer to [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloReply {
    /// The protocol version the enclave speaks.
    pub protocol_version: u16,
    /// The enclave's build.
    pub build: BuildInfo,
}

/// What binary is answering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildInfo {
    /// Package name.
    pub name: Label,
    /// Package version.
    pub version: Label,
    /// `debug` or `release`.
    pub profile: Label,
    /// Development features compiled in, comma-separated; empty in a production build.
    pub dev_features: Label,
}

/// The enclave's health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReply {
    /// Whether it serves signing requests.
    pub state: ServiceState,
    /// Seconds since the enclave process started.
    pub uptime_seconds: u64,
    /// Store commits (host transactions + anchor updates) since start.
    pub store_commits: u64,
    /// Records committed since start (more records than commits = group commit at work).
    pub store_records: u64,
    /// HSM operations (PKCS#11 work units) since start.
    pub hsm_operations: u64,
    /// Their total duration, microseconds.
    pub hsm_micros: u64,
    /// Development features compiled into the enclave, comma-separated; empty in production.
    pub dev_features: Label,
    /// Filled by the host in front of the enclave (the enclave sends 0): times the host
    /// reconnected to its enclave since the host started.
    pub host_reconnects: u64,
    /// Filled by the host of a one-user `frostgate node` (the enclave sends 0): times the node
    /// restarted its dead enclave child.
    pub enclave_restarts: u64,
}

/// Whether the enclave serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceState {
    /// Serving.
    Ready,
    /// Refusing to sign, with the code of the condition that makes it refuse.
    Refusing(ErrorCode),
}

/// A value to echo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    /// Echoed unchanged by the receiver.
    pub echo: u64,
}

/// How the signature's key is derived from the group's internal key (BIP341).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaprootMode {
    /// Key-path only output (BIP86): output key = internal key tweaked with no script tree.
    Bip86,
    /// Output key committing to a script tree with this 32-byte merkle root.
    ScriptTree {
        /// The script tree's merkle root.
        merkle_root: [u8; 32],
    },
    /// Plain BIP340 under the internal key itself, no tweak.
    Untweaked,
}

impl TaprootMode {
    /// The merkle root as the BIP341 tweak input: `None` for BIP86.
    pub fn merkle_root(&self) -> Option<&[u8; 32]> {
        match self {
            TaprootMode::ScriptTree { merkle_root } => Some(merkle_root),
            _ => None,
        }
    }
}

/// A BIP340 signature: 32-byte `r` (x coordinate) then 32-byte `s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bip340Signature {
    /// The nonce point's x coordinate.
    pub r: [u8; 32],
    /// The scalar.
    pub s: [u8; 32],
}

impl Bip340Signature {
    /// The 64-byte encoding.
    pub fn to_bytes(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(&self.r);
        out[32..].copy_from_slice(&self.s);
        out
    }
}

/// Opens a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenSession {
    /// The session id.
    pub session: SessionId,
    /// The group key.
    pub key: KeyId,
    /// The 32-byte message (a BIP341 sighash or any digest).
    pub message: [u8; 32],
    /// How the key is tweaked.
    pub mode: TaprootMode,
}

/// Reply to [`OpenSession`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionOpened {
    /// The session id.
    pub session: SessionId,
    /// The x-only key the final signature verifies under.
    pub output_key: [u8; 32],
}

/// Opens an attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenAttempt {
    /// The session.
    pub session: SessionId,
    /// The attempt id.
    pub attempt: AttemptId,
    /// Exactly the participants who sign in this attempt, ascending.
    pub signers: Signers,
}

/// Names an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRef {
    /// The attempt id.
    pub attempt: AttemptId,
}

/// Names one seat in one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatRef {
    /// The attempt id.
    pub attempt: AttemptId,
    /// The participant seat held by this enclave.
    pub seat: ParticipantId,
}

/// Reply to [`Message::Round1`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Round1Reply {
    /// The attempt id.
    pub attempt: AttemptId,
    /// The seat.
    pub seat: ParticipantId,
    /// The seat's public nonce commitments.
    pub commitments: CommitmentBytes,
}

/// Round-2 request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Round2 {
    /// The attempt id.
    pub attempt: AttemptId,
    /// The seat.
    pub seat: ParticipantId,
    /// The Taproot mode the coordinator believes is bound; must equal the session's.
    pub mode: TaprootMode,
    /// The signing package.
    pub signing_package: SigningPackageBytes,
}

/// Reply to [`Round2`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Round2Reply {
    /// The attempt id.
    pub attempt: AttemptId,
    /// The seat.
    pub seat: ParticipantId,
    /// The seat's signature share.
    pub signature_share: SignatureShareBytes,
}

/// One signer's signature share.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SignerShare {
    /// The signer.
    pub signer: ParticipantId,
    /// Its share.
    pub signature_share: SignatureShareBytes,
}

/// Checks one share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyShare {
    /// The attempt id.
    pub attempt: AttemptId,
    /// The signing package the share was made for.
    pub signing_package: SigningPackageBytes,
    /// The signer and its share.
    pub share: SignerShare,
}

/// Reply to [`VerifyShare`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShareVerdict {
    /// The share verifies against the signer's verifying share and this package.
    Valid,
    /// The share does not verify. The signer is a candidate culprit: a coordinator that altered
    /// other signers' commitments can also make an honest share fail.
    Invalid,
    /// The share could not be judged (it does not decode, or the signer is not in the package).
    Indeterminate,
}

/// Aggregation request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Aggregate {
    /// The attempt id.
    pub attempt: AttemptId,
    /// The Taproot mode the coordinator believes is bound; must equal the session's.
    pub mode: TaprootMode,
    /// The signing package.
    pub signing_package: SigningPackageBytes,
    /// One share per signer of the attempt.
    pub shares: SignerShares,
}

/// Reply to [`Aggregate`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AggregateOutcome {
    /// The BIP340 signature, verified by the enclave under the session's output key.
    Signed {
        /// The signature.
        signature: Bip340Signature,
        /// The x-only key it verifies under.
        output_key: [u8; 32],
    },
    /// Some shares did not verify; these signers are candidate culprits, not proven ones.
    InvalidShares {
        /// The signers whose shares failed.
        candidate_culprits: Signers,
    },
}

/// Reply to [`Message::AbortAttempt`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptAborted {
    /// The attempt id.
    pub attempt: AttemptId,
    /// How many live nonce pairs were wiped.
    pub wiped_count: u16,
}

/// Development-only dealer key generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevDealerKeygen {
    /// Signatures need this many participants.
    pub threshold: u16,
    /// Participants 1..=participants are created, all held here.
    pub participants: u16,
}

/// Names a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRef {
    /// The key id.
    pub key: KeyId,
}

/// A key's public description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// The key id: the group's x-only internal key (BIP341 "internal key").
    pub key: KeyId,
    /// Signatures need this many participants.
    pub threshold: u16,
    /// Every participant of the group.
    pub participants: Signers,
    /// The seats this enclave holds.
    pub seats: Signers,
    /// The BIP86 (key-path only) output key.
    pub bip86_output_key: [u8; 32],
    /// The public key package.
    pub public_key_package: PublicKeyPackageBytes,
}

/// One record of the host's sealed store. The body is public state; the MAC (HMAC-SHA256 under
/// a key derived in the HSM) covers the version, the previous record's MAC and the body.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SealedRecord {
    /// Position in the chain, from 1, without gaps.
    pub version: u64,
    /// The previous record's MAC (zeros before version 1).
    pub prev_mac: [u8; 32],
    /// The record (enclave-defined encoding of public state).
    pub body: RecordBody,
    /// The record's MAC.
    pub mac: [u8; 32],
}

/// Records to commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistRecords {
    /// Consecutive records continuing the host's chain.
    pub records: SealedRecords,
    /// If set, after committing, delete every record with a lower version (compaction: a
    /// complete snapshot starts at that version).
    pub compact_before: Option<u64>,
}

/// Acknowledges a durable commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistAck {
    /// The store's head version after the commit.
    pub head_version: u64,
}

/// A chunk of the host's store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreLoad {
    /// Starts a new load (discarding any partial one).
    pub first: bool,
    /// Ends the load: the enclave compares the chain head with its HSM anchor.
    pub last: bool,
    /// Check only: do not adopt the records or finish an interrupted anchor update.
    pub verify_only: bool,
    /// Records in chain order.
    pub records: SealedRecords,
}

/// The result of a load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStatus {
    /// Ready, or refusing with the code that explains why.
    pub state: ServiceState,
    /// Records verified so far in this load.
    pub records: u64,
    /// The chain head's version.
    pub head_version: u64,
    /// The HSM anchor's version (after finishing an interrupted update, if one was finished).
    pub anchor_version: u64,
}

/// One participant of a DKG, pinned by its enclave's identity key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DkgParticipant {
    /// The participant id (FROST identifier).
    pub id: ParticipantId,
    /// Its enclave's identity public key.
    pub identity_key: IdentityKeyBytes,
}

/// Starts a DKG.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DkgStart {
    /// The DKG id.
    pub dkg: DkgId,
    /// Signatures will need this many participants.
    pub threshold: u16,
    /// Which participant this enclave is.
    pub me: ParticipantId,
    /// Every participant, ascending by id.
    pub participants: DkgParticipants,
}

/// A round-1 package (public).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DkgRound1Package {
    /// The DKG id.
    pub dkg: DkgId,
    /// Its sender.
    pub from: ParticipantId,
    /// The package.
    pub package: DkgPackageBytes,
}

/// Round 2: everyone else's round-1 packages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DkgRound2 {
    /// The DKG id.
    pub dkg: DkgId,
    /// The other participants' round-1 packages.
    pub round1: DkgRound1Packages,
}

/// An encrypted round-2 package from one participant to another.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DkgEnvelope {
    /// The DKG id.
    pub dkg: DkgId,
    /// Sender.
    pub from: ParticipantId,
    /// Recipient.
    pub to: ParticipantId,
    /// Ciphertext (only the recipient's enclave can open it; the sender's identity authenticates it).
    pub ciphertext: DkgCiphertext,
}

/// Round 3: the envelopes addressed to this participant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DkgFinish {
    /// The DKG id.
    pub dkg: DkgId,
    /// One envelope from every other participant.
    pub envelopes: DkgEnvelopes,
}

/// A participant's signed view of the whole DKG transcript.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DkgConfirmation {
    /// The DKG id.
    pub dkg: DkgId,
    /// The confirming participant.
    pub from: ParticipantId,
    /// The resulting key id (x-only internal key).
    pub key: KeyId,
    /// SHA-256 of the transcript as this participant saw it.
    pub transcript_hash: [u8; 32],
    /// ECDSA P-256 signature (r) by the participant's identity key over the transcript.
    pub signature_r: [u8; 32],
    /// ECDSA P-256 signature (s).
    pub signature_s: [u8; 32],
}

/// Activation: every participant's confirmation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DkgActivate {
    /// The DKG id.
    pub dkg: DkgId,
    /// One confirmation per participant.
    pub confirmations: DkgConfirmations,
}

/// An abort attributed to a participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DkgBlame {
    /// The DKG id.
    pub dkg: DkgId,
    /// Why (`dkg_invalid_proof`, `dkg_decrypt_failed`, `dkg_invalid_share`).
    pub code: ErrorCode,
    /// The participant named as the cause (a candidate for `dkg_invalid_share`).
    pub culprit: ParticipantId,
}

/// Names a DKG.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DkgRef {
    /// The DKG id.
    pub dkg: DkgId,
}

/// Names a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRef {
    /// The session id.
    pub session: SessionId,
}

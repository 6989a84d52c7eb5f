//! The payloads of the boundary messages. Each type is the payload of exactly one message kind
//! (so a reply type names its message), and none carries a secret.

use super::Message;
use crate::bounded::{
    AttestationDocBytes, BootKeyBytes, CommitmentBytes, DerivationSteps, DkgCiphertext, DkgPackageBytes,
    IdentityKeyBytes, Label, PolicyText, PsbtBytes, PublicKeyPackageBytes, RecordBody, SessionIds, SignatureShareBytes,
    Signers, SigningPackageBytes, Text,
};
use crate::error::ErrorCode;
use crate::ids::{AttemptId, CommitmentId, DkgId, KeyId, ParticipantId, SessionId};
use crate::protocol::{
    AuditEntries, AuditOutputs, CeremonyChallenges, DkgConfirmations, DkgEnvelopes, DkgParticipants, DkgRound1Packages,
    PeerAttestations, PreCommitments, SignItems, SignOutcomes, SignerShares, StoreRecords,
};
use serde::{Deserialize, Serialize};

/// Asks for the enclave's health (no fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health;

/// Asks for the enclave's identity public key (no fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetIdentity;

/// The echo of a [`Ping`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    /// The ping's value.
    pub echo: u64,
}

/// Reply to [`super::OpenAttempt`]: the attempt is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptOpened {
    /// The attempt id.
    pub attempt: AttemptId,
}

/// Reply to a DKG abort: the DKG is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DkgAborted {
    /// The DKG id.
    pub dkg: DkgId,
}

/// Reply to a session close: the session is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionClosed {
    /// The session id.
    pub session: SessionId,
}

/// The reply of a DKG step: its result, or the blame that aborted the DKG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DkgOutcome<T> {
    /// The step's result.
    Done(T),
    /// A participant was named as the cause of the abort.
    Blame(DkgBlame),
}

impl<T: Into<Message>> From<DkgOutcome<T>> for Message {
    fn from(o: DkgOutcome<T>) -> Message {
        match o {
            DkgOutcome::Done(t) => t.into(),
            DkgOutcome::Blame(b) => Message::DkgBlame(b),
        }
    }
}

impl<T: super::FromMessage> super::FromMessage for DkgOutcome<T> {
    fn from_message(m: Message) -> Result<Self, Box<Message>> {
        match m {
            Message::DkgBlame(b) => Ok(DkgOutcome::Blame(b)),
            other => T::from_message(other).map(DkgOutcome::Done),
        }
    }
    fn names() -> Vec<&'static str> {
        let mut names = T::names();
        names.push("DkgBlame");
        names
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
    /// SHA-256 of the enclave's spending policy's canonical text (protocol version 2).
    pub policy_hash: [u8; 32],
    /// The custody profile in force; `None` without custody (protocol version 4).
    pub custody_profile: Option<CustodyProfile>,
    /// PKCS#11 operations that reached the token since start, by kind (protocol version 4).
    pub hsm_calls: HsmCalls,
    /// Sessions open in the enclave's registry now (protocol version 5): what coordinators left
    /// open (a finished coordinator leaves none) and what has not yet expired.
    pub open_sessions: u64,
    /// Attempts open in the enclave's registry now (protocol version 5).
    pub open_attempts: u64,
}

/// PKCS#11 operations by kind. One operation is one cryptoki session call: e.g. a decrypt is
/// `C_DecryptInit` + `C_Decrypt`, a find is `C_FindObjectsInit` + `C_FindObjects` +
/// `C_FindObjectsFinal`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HsmCalls {
    /// Decryptions (unsealing a share, a root or an identity).
    pub decrypt: u64,
    /// Encryptions (sealing).
    pub encrypt: u64,
    /// Signatures (HMAC, ECDSA).
    pub sign: u64,
    /// Key derivations (ECDH).
    pub derive: u64,
    /// Random numbers (IVs).
    pub random: u64,
    /// Object searches (anchor, records, keys).
    pub find: u64,
    /// Attribute reads and writes (`C_SetAttributeValue`: a store anchor slot rewritten in place).
    pub attributes: u64,
    /// Object creations (anchor, records).
    pub create: u64,
    /// Object destructions (anchor, derived secrets).
    pub destroy: u64,
    /// Key generations.
    pub generate: u64,
}

impl std::ops::AddAssign for HsmCalls {
    fn add_assign(&mut self, o: HsmCalls) {
        self.decrypt += o.decrypt;
        self.encrypt += o.encrypt;
        self.sign += o.sign;
        self.derive += o.derive;
        self.random += o.random;
        self.find += o.find;
        self.attributes += o.attributes;
        self.create += o.create;
        self.destroy += o.destroy;
        self.generate += o.generate;
    }
}

impl HsmCalls {
    /// Every operation, whatever its kind.
    pub fn total(&self) -> u64 {
        self.decrypt
            + self.encrypt
            + self.sign
            + self.derive
            + self.random
            + self.find
            + self.attributes
            + self.create
            + self.destroy
            + self.generate
    }
}

/// What an enclave's HSM keeps and uses itself, chosen at `token init` from the token's mechanisms
/// and never re-chosen (the enclave's `custody::profile` says what each needs and protects).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CustodyProfile {
    /// Every secret key in the token: AES-256-GCM sealing, HMAC root, P-256 identity with ECDH.
    Full,
    /// AES-256-CBC sealing in the token with an encrypt-then-MAC tag under a key the token derives
    /// from its HMAC root; the identity key is generated in the enclave and sealed.
    CbcHmac,
    /// One AES-256 key in the token; a sealed root in enclave memory derives the store and tag
    /// keys; the identity key is generated in the enclave and sealed.
    AesOnly,
}

impl CustodyProfile {
    /// Every profile, strongest first.
    pub const ALL: [CustodyProfile; 3] = [CustodyProfile::Full, CustodyProfile::CbcHmac, CustodyProfile::AesOnly];

    /// The stable name (configuration, JSON, status).
    pub fn name(self) -> &'static str {
        match self {
            CustodyProfile::Full => "full",
            CustodyProfile::CbcHmac => "cbc_hmac",
            CustodyProfile::AesOnly => "aes_only",
        }
    }

    /// The profile with this stable name.
    pub fn from_name(name: &str) -> Option<CustodyProfile> {
        CustodyProfile::ALL.into_iter().find(|p| p.name() == name)
    }
}

impl std::fmt::Display for CustodyProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
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
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

/// One record of the host store (MAC-chained, not encrypted). The body is public state; the MAC (HMAC-SHA256 under
/// a key derived in the HSM) covers the version, the previous record's MAC and the body.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StoreRecord {
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
    pub records: StoreRecords,
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
    pub records: StoreRecords,
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

/// Starts a share refresh of a key this enclave holds (round 1): the same group key, fresh shares
/// of the next epoch. The DKG steps `DkgRound2` and `DkgFinish` follow; `RefreshActivate` ends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshStart {
    /// The refresh's DKG id.
    pub dkg: DkgId,
    /// The key refreshed.
    pub key: KeyId,
    /// Which participant this enclave is.
    pub me: ParticipantId,
    /// The participants that refresh, ascending (at least the threshold). A participant of the
    /// key left out is removed: its share does not combine with the refreshed ones.
    pub participants: DkgParticipants,
}

/// Activation of a refresh: every participant's confirmation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshActivate {
    /// The refresh's DKG id.
    pub dkg: DkgId,
    /// One confirmation per participant.
    pub confirmations: DkgConfirmations,
}

/// Phase 2 of a refresh's activation: put the refreshed key in force, with every participant's
/// signed vote that it prepared this refresh. Idempotent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshCommit {
    /// The refresh (its DKG id): only the share this refresh prepared is put in force.
    pub dkg: DkgId,
    /// The key.
    pub key: KeyId,
    /// The epoch prepared.
    pub epoch: u64,
    /// A `prepared` vote of every participant of the refreshed key.
    pub votes: crate::protocol::RefreshVotes,
}

/// Asks an enclave for its signed vote on a refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetRefreshVote {
    /// The refresh (its DKG id).
    pub dkg: DkgId,
    /// The key.
    pub key: KeyId,
}

/// An enclave's vote on a refresh, signed by its identity key: `prepared` (the refresh's share
/// is durable here, beside the current one or already in force), or not (it never prepared this
/// refresh and, having voted so, never will: the refresh can never be committed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RefreshVote {
    /// The refresh.
    pub dkg: DkgId,
    /// The key.
    pub key: KeyId,
    /// The voter's seat.
    pub seat: ParticipantId,
    /// Whether it prepared the refresh.
    pub prepared: bool,
    /// The refreshed epoch (0 when not prepared).
    pub epoch: u64,
    /// SHA-256 of the refreshed public key package (zero when not prepared).
    pub package_hash: [u8; 32],
    /// ECDSA P-256 by the voter's identity key over [`RefreshVote::signed_message`].
    pub signature_r: [u8; 32],
    /// The signature's `s`.
    pub signature_s: [u8; 32],
}

impl RefreshVote {
    /// The bytes the identity key signs.
    pub fn signed_message(&self) -> Vec<u8> {
        let mut m = b"frostgate/refresh-vote/v1".to_vec();
        m.extend_from_slice(self.dkg.as_bytes());
        m.extend_from_slice(self.key.as_bytes());
        m.extend_from_slice(&self.seat.get().to_be_bytes());
        m.push(u8::from(self.prepared));
        m.extend_from_slice(&self.epoch.to_be_bytes());
        m.extend_from_slice(&self.package_hash);
        m
    }
}

/// Drop a prepared refresh that can never be committed: a participant's vote that it did not
/// prepare it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshAbandon {
    /// The refresh.
    pub dkg: DkgId,
    /// The key.
    pub key: KeyId,
    /// The votes (at least one `prepared: false` of a participant of the refresh).
    pub votes: crate::protocol::RefreshVotes,
}

/// Reply to [`RefreshAbandon`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshAbandoned {
    /// The refresh.
    pub dkg: DkgId,
    /// Whether a prepared share of it was dropped here.
    pub dropped: bool,
}

/// A refreshed key: its new public description and epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRefreshed {
    /// The key (same key id; new verifying shares).
    pub key: KeyInfo,
    /// The key epoch the shares now have.
    pub epoch: u64,
}

/// Repair, helper step 1: split this helper's part of lost seat `seat`'s share into deltas for
/// the helpers (the new enclave for the seat has `identity_key`, which must be pinned for it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairStart {
    /// The repair id.
    pub repair: DkgId,
    /// The key.
    pub key: KeyId,
    /// The seat being repaired.
    pub seat: ParticipantId,
    /// The identity key of the new enclave for the seat.
    pub identity_key: IdentityKeyBytes,
    /// Which helper this enclave is.
    pub me: ParticipantId,
    /// Every helper, ascending (at least the threshold; not the seat).
    pub helpers: Signers,
}

/// Repair, helper step 2: the deltas addressed to this helper; answer with its sigma for the
/// new enclave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairSigma {
    /// The repair id.
    pub repair: DkgId,
    /// One delta envelope from every other helper.
    pub envelopes: DkgEnvelopes,
}

/// Repair, new enclave: every helper's sigma and the key's public key package; rebuild, check
/// and seal the seat's share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairFinish {
    /// The repair id.
    pub repair: DkgId,
    /// The key.
    pub key: KeyId,
    /// The seat repaired (this enclave's).
    pub seat: ParticipantId,
    /// The key's public key package (each helper bound its hash into its sigma).
    pub public_key_package: PublicKeyPackageBytes,
    /// One sigma envelope per helper.
    pub envelopes: DkgEnvelopes,
}

/// Back up the seat this enclave holds of `key`, encrypted to the operator's recovery key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupSeat {
    /// The key.
    pub key: KeyId,
}

/// One seat's share encrypted to the operator's recovery public key (ECDH on secp256k1 with an
/// ephemeral key, AES-256-GCM), with the public record needed to restore it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatBackup {
    /// The key.
    pub key: KeyId,
    /// The seat.
    pub seat: ParticipantId,
    /// The key epoch of the share.
    pub epoch: u64,
    /// The key's public key package.
    pub public_key_package: PublicKeyPackageBytes,
    /// The recovery public key it is encrypted to (x-only, even y).
    pub recovery_public_key: [u8; 32],
    /// The ephemeral public key (x-only, even y).
    pub ephemeral_public_key: [u8; 32],
    /// `nonce (12) | AES-256-GCM ciphertext and tag`.
    pub ciphertext: DkgCiphertext,
}

/// Asks the restoring enclave for a fresh challenge; the peers' epoch statements must carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreChallenge {
    /// The key to restore.
    pub key: KeyId,
}

/// The challenge (random, single use, 5 minutes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreChallenged {
    /// The key.
    pub key: KeyId,
    /// What every statement must bind.
    pub challenge: [u8; 32],
}

/// Asks a peer enclave to state, signed by its identity key, the epoch at which it holds a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestEpoch {
    /// The key.
    pub key: KeyId,
    /// The restoring enclave's challenge.
    pub challenge: [u8; 32],
}

/// A peer's statement of the epoch and package at which it holds a key, over a restoring
/// enclave's challenge (so it cannot be replayed to another restore).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EpochStatement {
    /// The key.
    pub key: KeyId,
    /// The seat the stating enclave holds.
    pub seat: ParticipantId,
    /// The key's epoch there.
    pub epoch: u64,
    /// SHA-256 of the key's public key package there.
    pub package_hash: [u8; 32],
    /// The challenge.
    pub challenge: [u8; 32],
    /// ECDSA P-256 by the stating enclave's identity key over [`EpochStatement::signed_message`].
    pub signature_r: [u8; 32],
    /// The signature's `s`.
    pub signature_s: [u8; 32],
}

impl EpochStatement {
    /// The bytes the identity key signs.
    pub fn signed_message(&self) -> Vec<u8> {
        let mut m = b"frostgate/epoch-statement/v1".to_vec();
        m.extend_from_slice(self.key.as_bytes());
        m.extend_from_slice(&self.seat.get().to_be_bytes());
        m.extend_from_slice(&self.epoch.to_be_bytes());
        m.extend_from_slice(&self.package_hash);
        m.extend_from_slice(&self.challenge);
        m
    }
}

/// Restore a seat from its backup, with the current epoch stated by at least the key's
/// threshold of pinned peers over this enclave's challenge: a backup of an earlier epoch is
/// refused by the enclave itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreAttested {
    /// The backup.
    pub backup: SeatBackup,
    /// The peers' statements.
    pub statements: crate::protocol::EpochStatements,
}

/// Restore a seat from its backup into this (fresh) enclave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreSeat {
    /// The backup.
    pub backup: SeatBackup,
}

/// Rotates the enclave's HSM key-encryption key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotateSealingKey;

/// A completed key-encryption-key rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealingKeyRotated {
    /// Keys whose records were resealed.
    pub keys: u32,
    /// Seats resealed.
    pub seats: u32,
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

/// Binds a session to one input of a PSBT.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OpenPsbtSession {
    /// The session id.
    pub session: SessionId,
    /// The group key (the input's `tap_internal_key` must be it).
    pub key: KeyId,
    /// The input to sign.
    pub input: u32,
    /// The PSBT.
    pub psbt: PsbtBytes,
}

/// Reply to [`OpenPsbtSession`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PsbtSessionOpened {
    /// The session id.
    pub session: SessionId,
    /// The x-only key the signature will verify under.
    pub output_key: [u8; 32],
    /// The BIP341 sighash the enclave computed: the message every share signs.
    pub sighash: [u8; 32],
    /// The transaction id.
    pub txid: [u8; 32],
}

/// Asks for the policy in force (no fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetPolicy;

/// The policy in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyInfo {
    /// SHA-256 of `text`.
    pub hash: [u8; 32],
    /// The canonical text (every rule, one per line, fixed order).
    pub text: PolicyText,
}

/// Asks for audit records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetAudit {
    /// Only records with a higher sequence number.
    pub after: u64,
}

/// Audit records in sequence order (at most the bound; ask again after the last one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditLog {
    /// The records.
    pub entries: AuditEntries,
}

/// The auditor's acknowledgement of an export: every kept audit record with a sequence number up
/// to `through` may leave the trail. Local clients only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcknowledgeAudit {
    /// The last sequence number exported.
    pub through: u64,
    /// BIP340 signature by the pinned `[audit] auditor_key` over SHA-256 of
    /// [`audit_ack_preimage`] of exactly the signed records the enclave keeps up to `through`.
    pub signature: Bip340Signature,
}

/// The acknowledgement is durable; the records up to `through` left the trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditAcknowledged {
    /// The acknowledged sequence number.
    pub through: u64,
    /// Records dropped from the trail.
    pub dropped: u64,
}

/// The bytes an auditor's acknowledgement signs (hashed with SHA-256): a tag, the enclave's
/// identity public key (an acknowledgement serves one node), `through`, and each **signed**
/// record up to it in sequence order, length-prefixed in its wire encoding. Approvals and
/// refusals are left out: they may leave the trail to make room at any time, and the signature
/// must not depend on them. One definition for the enclave that checks and the tool that signs.
pub fn audit_ack_preimage(identity: &[u8], through: u64, entries: &[AuditEntry]) -> Result<Vec<u8>, crate::Error> {
    let mut out = b"frostgate/audit-ack/v2".to_vec();
    out.extend_from_slice(&(identity.len() as u64).to_be_bytes());
    out.extend_from_slice(identity);
    out.extend_from_slice(&through.to_be_bytes());
    for e in entries.iter().filter(|e| e.seq <= through && e.decision == AuditDecision::Signed) {
        let bytes = postcard::to_allocvec(e)
            .map_err(|err| crate::Error::new(crate::ErrorCode::Internal, format!("audit record: {err}")))?;
        out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
        out.extend_from_slice(&bytes);
    }
    Ok(out)
}

/// What the enclave decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AuditDecision {
    /// The session was bound: the policy allows it.
    Approved,
    /// Refused by the policy (the rule is named).
    Refused,
    /// A signature share left for it.
    Signed,
    /// The HSM key-encryption key was rotated (every share resealed; `rule` says how many). Not
    /// about a session: its session and key ids are zero.
    KekRotated,
    /// A signing service request was bound to this session's key and target (protocol 7):
    /// `rule` is `<client fingerprint hex>/<request id>`, the first session of the request.
    Requested,
}

/// One output named in an audit record.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AuditOutput {
    /// The address (the policy's network), or `script:<hex prefix>`.
    pub to: Label,
    /// Satoshis.
    pub sats: u64,
}

/// One decision of the enclave, kept as a record of the host store (MAC-chained, anchored).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Sequence number, from 1, without gaps.
    pub seq: u64,
    /// When (the enclave's clock, Unix seconds).
    pub at_unix: u64,
    /// The decision.
    pub decision: AuditDecision,
    /// For a refusal: the rule (e.g. `max_sats_per_window`) and the numbers.
    pub rule: Text,
    /// The session.
    pub session: SessionId,
    /// For a signature: the attempt.
    pub attempt: Option<AttemptId>,
    /// For a signature: the seat.
    pub seat: Option<ParticipantId>,
    /// The key.
    pub key: KeyId,
    /// The transaction id (PSBT path).
    pub txid: Option<[u8; 32]>,
    /// The input (PSBT path).
    pub input: Option<u32>,
    /// For a derived key: its unhardened path from the group key (`0/5`); empty otherwise.
    pub path: Label,
    /// Whether the message was a caller-supplied digest (the raw-digest path).
    pub raw_digest: bool,
    /// Outputs not returning to the key, with amounts.
    pub outputs: AuditOutputs,
    /// The transaction's fee.
    pub fee_sats: u64,
    /// The policy in force.
    pub policy_hash: [u8; 32],
}

/// Opens a session for the child of a key at an unhardened path (raw-digest path).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OpenDerivedSession {
    /// The session id.
    pub session: SessionId,
    /// The group key.
    pub key: KeyId,
    /// The path from the group key.
    pub path: DerivationSteps,
    /// The 32-byte message.
    pub message: [u8; 32],
    /// How the child key is tweaked.
    pub mode: TaprootMode,
}

/// Asks for commitments to fresh nonce pairs for one seat of a key, kept live in the enclave
/// until one signing uses them (preprocessing). At most [`crate::limits::MAX_PREPROCESS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preprocess {
    /// The group key.
    pub key: KeyId,
    /// The seat.
    pub seat: ParticipantId,
    /// How many commitments (1..=64).
    pub count: u16,
}

/// One preprocessed commitment: the public commitments and the id of the live pair behind them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PreCommitment {
    /// Names the enclave's live pair; usable once.
    pub id: CommitmentId,
    /// The public commitments (FROST `SigningCommitments`).
    pub commitments: CommitmentBytes,
}

/// Reply to [`Preprocess`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preprocessed {
    /// The group key.
    pub key: KeyId,
    /// The seat.
    pub seat: ParticipantId,
    /// The new commitments.
    pub commitments: PreCommitments,
}

/// How a one-request signing binds its session: as `OpenSession`, `OpenDerivedSession` or
/// `OpenPsbtSession` would (an identical repeat is accepted).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SessionBinding {
    /// A 32-byte digest under the key.
    Digest(OpenSession),
    /// A digest under a child of the key.
    Derived(OpenDerivedSession),
    /// One input of a PSBT (the enclave computes the sighash and applies its policy).
    Psbt(OpenPsbtSession),
    /// Any of the above for a signing service request (protocol 7): the enclave binds the request
    /// to what it signs, durably, and refuses anything else under it.
    Request(RequestSession),
}

impl SessionBinding {
    /// The session id.
    pub fn session(&self) -> SessionId {
        match self {
            SessionBinding::Digest(o) => o.session,
            SessionBinding::Derived(o) => o.session,
            SessionBinding::Psbt(o) => o.session,
            SessionBinding::Request(r) => r.open.session(),
        }
    }

    /// The group key.
    pub fn key(&self) -> KeyId {
        match self {
            SessionBinding::Digest(o) => o.key,
            SessionBinding::Derived(o) => o.key,
            SessionBinding::Psbt(o) => o.key,
            SessionBinding::Request(r) => r.open.key(),
        }
    }
}

/// The signing service request a session signs for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RequestTag {
    /// The client: SHA-256 of its pinned certificate (DER); zero for the development client.
    pub client: [u8; 32],
    /// The client's request id (1-64 characters of `[A-Za-z0-9._-]`).
    pub request: crate::bounded::RequestName,
    /// When the service accepted the request (Unix seconds).
    pub accepted_unix: u64,
    /// The service's attempt at the request (its claim's lease epoch): each claim signs under
    /// sessions of its own, so a late closing of an earlier claim's session never ends a later
    /// one; what every claim must match is the request's binding.
    pub attempt: u32,
}

/// A session bound to a signing service request: the session id must be the request's
/// (`frostgate_public::request::session_id`), and the enclave binds the request, the first time,
/// to the key, path, Taproot mode and digest, or to the key and the PSBT's txid.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RequestSession {
    /// The request.
    pub tag: RequestTag,
    /// The session.
    pub open: RequestOpen,
}

/// The session of a [`RequestSession`] (as [`SessionBinding`]'s first three cases).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RequestOpen {
    /// A 32-byte digest under the key.
    Digest(OpenSession),
    /// A digest under a child of the key.
    Derived(OpenDerivedSession),
    /// One input of a PSBT.
    Psbt(OpenPsbtSession),
}

impl RequestOpen {
    /// The session id.
    pub fn session(&self) -> SessionId {
        match self {
            RequestOpen::Digest(o) => o.session,
            RequestOpen::Derived(o) => o.session,
            RequestOpen::Psbt(o) => o.session,
        }
    }

    /// The group key.
    pub fn key(&self) -> KeyId {
        match self {
            RequestOpen::Digest(o) => o.key,
            RequestOpen::Derived(o) => o.key,
            RequestOpen::Psbt(o) => o.key,
        }
    }

    /// The PSBT input, `None` for a digest (the session id's `input`).
    pub fn input(&self) -> Option<u32> {
        match self {
            RequestOpen::Psbt(o) => Some(o.input),
            _ => None,
        }
    }
}

/// Reply to a [`RequestSession`] opened alone (interactive rounds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestSessionOpened {
    /// The session id.
    pub session: SessionId,
    /// The x-only key the signature will verify under.
    pub output_key: [u8; 32],
    /// The message every share signs (on the PSBT path: the sighash the enclave computed).
    pub message: [u8; 32],
}

/// One request per signer per signature: bind the session and the attempt, sign the package
/// with a preprocessed commitment (at most once), and hand out the next commitments.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SignPreprocessed {
    /// The session's binding.
    pub binding: SessionBinding,
    /// The attempt id.
    pub attempt: AttemptId,
    /// Exactly the attempt's signers, ascending.
    pub signers: Signers,
    /// The seat.
    pub seat: ParticipantId,
    /// The preprocessed commitment this seat signs with (its commitments must be the seat's in
    /// the package).
    pub commitment: CommitmentId,
    /// The signing package.
    pub signing_package: SigningPackageBytes,
    /// How many fresh commitments the reply should carry (0..=64).
    pub replenish: u16,
    /// Finished sessions to close first (piggybacked closing).
    pub close: SessionIds,
}

/// Reply to [`SignPreprocessed`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PreprocessedShare {
    /// The attempt id.
    pub attempt: AttemptId,
    /// The seat.
    pub seat: ParticipantId,
    /// The seat's signature share.
    pub signature_share: SignatureShareBytes,
    /// Fresh commitments for later signings (as many as asked for, room permitting).
    pub next: PreCommitments,
}

/// Closes finished sessions (as `CloseSession` does, several per request).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseSessions {
    /// The sessions.
    pub sessions: SessionIds,
}

/// Reply to [`CloseSessions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionsClosed {
    /// How many of them were open here.
    pub closed: u32,
}

/// Several one-request signings in one request (the signings in flight to one node), each
/// exactly as [`SignPreprocessed`] alone; their markers share commits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignBatch {
    /// The signings (1..=32).
    pub items: SignItems,
}

/// The outcome of one signing of a [`SignBatch`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SignOutcome {
    /// Signed: as the reply to `SignPreprocessed`.
    Signed(PreprocessedShare),
    /// Refused: the error `SignPreprocessed` would have answered.
    Refused(crate::error::Error),
}

/// Reply to [`SignBatch`]: one outcome per item, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchSigned {
    /// The outcomes.
    pub outcomes: SignOutcomes,
}

/// Asks the enclave to attest itself over the caller's fresh challenge (protocol version 5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attest {
    /// The verifier's challenge: the document's `nonce`.
    pub challenge: [u8; 32],
}

/// Which attestation provider an enclave runs with (`[attestation] provider`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttestationProvider {
    /// None: the enclave is an OS process; nothing attests it.
    None,
    /// The AWS Nitro Enclaves security module (`/dev/nsm`).
    Nitro,
    /// Development builds only: a software stand-in with its own test PKI.
    Software,
}

impl AttestationProvider {
    /// Every provider.
    pub const ALL: [AttestationProvider; 3] =
        [AttestationProvider::None, AttestationProvider::Nitro, AttestationProvider::Software];

    /// The stable name (configuration, JSON, status).
    pub fn name(self) -> &'static str {
        match self {
            AttestationProvider::None => "none",
            AttestationProvider::Nitro => "nitro",
            AttestationProvider::Software => "software",
        }
    }

    /// The provider with this stable name.
    pub fn from_name(name: &str) -> Option<AttestationProvider> {
        AttestationProvider::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// An enclave's attestation: a TEE document whose `nonce` is the challenge and whose
/// `public_key` is the enclave's per-boot key, and the identity key's signature certifying that
/// key ([`Attestation::certified`]), so the document speaks for the enclave that holds the HSM
/// identity, in the TEE. Without a provider every field is empty.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Attestation {
    /// The provider that made it.
    pub provider: AttestationProvider,
    /// The document (empty without a provider).
    pub document: AttestationDocBytes,
    /// The per-boot public key the document attests (empty without a provider).
    pub boot_key: BootKeyBytes,
    /// The identity key's ECDSA P-256 signature over [`Attestation::certified`]: `r`.
    pub certification_r: [u8; 32],
    /// Its `s`.
    pub certification_s: [u8; 32],
}

impl Attestation {
    /// What the identity key signs to certify a per-boot key.
    pub fn certified(boot_key: &[u8]) -> Vec<u8> {
        let mut m = b"frostgate/attestation/boot-key/v1".to_vec();
        m.extend_from_slice(boot_key);
        m
    }
}

/// The ceremony an attestation exchange precedes: its challenge is counted with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CeremonyKind {
    /// A DKG or a refresh (`DkgStart`, `RefreshStart`).
    Dkg,
    /// A repair (`RepairStart`, `RepairFinish`).
    Repair,
}

impl CeremonyKind {
    /// Every kind.
    pub const ALL: [CeremonyKind; 2] = [CeremonyKind::Dkg, CeremonyKind::Repair];

    /// The stable name.
    pub fn name(self) -> &'static str {
        match self {
            CeremonyKind::Dkg => "dkg",
            CeremonyKind::Repair => "repair",
        }
    }

    /// The kind named `name`.
    pub fn from_name(name: &str) -> Option<CeremonyKind> {
        CeremonyKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// A ceremony's attestation, step 1: this enclave draws a fresh challenge for the ceremony
/// `ceremony` (the DKG, refresh or repair id it precedes), as participant `me` (protocol
/// version 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CeremonyChallenge {
    /// The ceremony's id (the DKG, refresh or repair id).
    pub ceremony: DkgId,
    /// Which ceremony.
    pub kind: CeremonyKind,
    /// Which participant this enclave is in it.
    pub me: ParticipantId,
}

/// One participant's challenge for a ceremony.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CeremonyChallenged {
    /// The ceremony's id.
    pub ceremony: DkgId,
    /// The participant that drew it.
    pub from: ParticipantId,
    /// The challenge.
    pub challenge: [u8; 32],
}

/// Step 2: this enclave's attestation whose nonce binds the ceremony and every participant's
/// challenge (`frostgate_attest::peer::ceremony_binding`); refused unless this enclave's own
/// challenge is among them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CeremonyAttest {
    /// The ceremony's id.
    pub ceremony: DkgId,
    /// Every participant's challenge, ascending by participant.
    pub challenges: CeremonyChallenges,
}

/// A peer's attestation for a ceremony.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PeerAttestation {
    /// The peer.
    pub from: ParticipantId,
    /// Its attestation (step 2's answer).
    pub attestation: Attestation,
}

/// Step 3: the peers' attestations, checked against this enclave's own `[group]` pins. A peer
/// pinned there whose document does not verify is blamed (`attestation_invalid`); until every
/// pinned peer verified, the ceremony's secret-bearing steps (`DkgRound2`, `RepairStart`,
/// `RepairFinish`) are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CeremonyPeers {
    /// The ceremony's id.
    pub ceremony: DkgId,
    /// Every participant's challenge, ascending by participant (as in step 2).
    pub challenges: CeremonyChallenges,
    /// The attested peers' answers (peers without a provider may be left out).
    pub attestations: PeerAttestations,
}

/// Reply to [`CeremonyPeers`]: the peers whose attestation verified against this enclave's pins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CeremonyVerified {
    /// The ceremony's id.
    pub ceremony: DkgId,
    /// The pinned peers verified (an unpinned peer is not checked, and not listed).
    pub verified: Signers,
}

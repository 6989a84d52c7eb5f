//! Between the gRPC contract (`pb`) and the boundary protocol types.
//!
//! Invariant: a `pb` value becomes a protocol value only through [`Proto::from_pb`], which checks
//! every id, length bound and enum exactly as the boundary decoder does; a value that fails gives
//! `malformed_message` naming the field and never reaches the enclave. Regular messages are one
//! line each ([`proto_struct!`]) built on a per-field-type conversion ([`Field`]: ids, participant
//! ids, bounded bytes, lists, enums); only irregular types (oneofs, flattened states) are written
//! by hand. Both directions come from the same line, so a round trip is the identity (tested).

use super::pb;
use frostgate_common::bounded::*;
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::ids::{AttemptId, CommitmentId, DkgId, KeyId, ParticipantId, SessionId};
use frostgate_common::protocol::*;

/// A protocol type with a gRPC message counterpart.
pub trait Proto: Sized {
    /// The generated message.
    type Pb;
    /// To the wire.
    fn to_pb(&self) -> Self::Pb;
    /// From the wire, checked.
    fn from_pb(p: Self::Pb) -> Result<Self, Error>;
}

/// A protocol field type with its gRPC field type (`what` names the field in errors).
pub trait Field: Sized {
    /// The generated field's type.
    type Pb;
    /// To the wire.
    fn to_field(&self) -> Self::Pb;
    /// From the wire, checked.
    fn from_field(what: &str, p: Self::Pb) -> Result<Self, Error>;
}

fn malformed(what: &str, why: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::MalformedMessage, format!("{what}: {why}"))
}

fn required<T>(what: &str, v: Option<T>) -> Result<T, Error> {
    v.ok_or_else(|| malformed(what, "missing"))
}

impl<const N: usize> Field for [u8; N] {
    type Pb = Vec<u8>;
    fn to_field(&self) -> Vec<u8> {
        self.to_vec()
    }
    fn from_field(what: &str, p: Vec<u8>) -> Result<Self, Error> {
        p.as_slice().try_into().map_err(|_| malformed(what, format_args!("{} bytes, expected {N}", p.len())))
    }
}

/// Fixed-length ids: bytes of exactly their length.
macro_rules! id_fields {
    ($($ty:ty),*) => {$(
        impl Field for $ty {
            type Pb = Vec<u8>;
            fn to_field(&self) -> Vec<u8> {
                self.as_bytes().to_vec()
            }
            fn from_field(what: &str, p: Vec<u8>) -> Result<Self, Error> {
                Field::from_field(what, p).map(<$ty>::from_bytes)
            }
        }
    )*};
}
id_fields!(KeyId, SessionId, AttemptId, DkgId, CommitmentId);

/// Bounded byte strings and texts: their bound is checked on arrival.
macro_rules! bounded_fields {
    ($($ty:ty: $pb:ty),*) => {$(
        impl Field for $ty {
            type Pb = $pb;
            fn to_field(&self) -> $pb {
                self.as_inner().clone()
            }
            fn from_field(what: &str, p: $pb) -> Result<Self, Error> {
                <$ty>::new(p).map_err(|e| malformed(what, e))
            }
        }
    )*};
}
bounded_fields!(
    Text: String, PolicyText: String, PsbtBytes: Vec<u8>, DerivationSteps: Vec<u32>,
    Label: String, CommitmentBytes: Vec<u8>, SigningPackageBytes: Vec<u8>, SignatureShareBytes: Vec<u8>,
    PublicKeyPackageBytes: Vec<u8>, IdentityKeyBytes: Vec<u8>, DkgPackageBytes: Vec<u8>, DkgCiphertext: Vec<u8>,
    AttestationDocBytes: Vec<u8>, BootKeyBytes: Vec<u8>, RequestName: String
);

impl Field for CeremonyKind {
    type Pb = String;
    fn to_field(&self) -> String {
        self.name().to_string()
    }
    fn from_field(what: &str, p: String) -> Result<Self, Error> {
        CeremonyKind::from_name(&p)
            .ok_or_else(|| Error::new(ErrorCode::MalformedMessage, format!("{what}: unknown ceremony kind {p:?}")))
    }
}

impl Field for AttestationProvider {
    type Pb = String;
    fn to_field(&self) -> String {
        self.name().to_string()
    }
    fn from_field(what: &str, p: String) -> Result<Self, Error> {
        AttestationProvider::from_name(&p)
            .ok_or_else(|| Error::new(ErrorCode::MalformedMessage, format!("{what}: unknown provider {p:?}")))
    }
}

/// Bounded lists of messages: each element checked, then the count.
macro_rules! list_fields {
    ($($ty:ty: $elem:ty),*) => {$(
        impl Field for $ty {
            type Pb = Vec<<$elem as Proto>::Pb>;
            fn to_field(&self) -> Self::Pb {
                self.as_inner().iter().map(Proto::to_pb).collect()
            }
            fn from_field(what: &str, p: Self::Pb) -> Result<Self, Error> {
                let items = p.into_iter().map(<$elem>::from_pb).collect::<Result<Vec<_>, _>>()?;
                <$ty>::new(items).map_err(|e| malformed(what, e))
            }
        }
    )*};
}
list_fields!(
    CeremonyChallenges: CeremonyChallenged, PeerAttestations: PeerAttestation,
    SignerShares: SignerShare, DkgParticipants: DkgParticipant, DkgRound1Packages: DkgRound1Package,
    DkgEnvelopes: DkgEnvelope, DkgConfirmations: DkgConfirmation, AuditOutputs: AuditOutput,
    AuditEntries: AuditEntry, PreCommitments: PreCommitment, SignItems: SignPreprocessed,
    SignOutcomes: SignOutcome, RefreshVotes: RefreshVote
);

impl Field for SessionIds {
    type Pb = Vec<Vec<u8>>;
    fn to_field(&self) -> Vec<Vec<u8>> {
        self.as_inner().iter().map(Field::to_field).collect()
    }
    fn from_field(what: &str, p: Vec<Vec<u8>>) -> Result<Self, Error> {
        let ids = p.into_iter().map(|v| SessionId::from_field(what, v)).collect::<Result<Vec<_>, _>>()?;
        SessionIds::new(ids).map_err(|e| malformed(what, e))
    }
}

impl Field for ParticipantId {
    type Pb = u32;
    fn to_field(&self) -> u32 {
        u32::from(self.get())
    }
    fn from_field(what: &str, p: u32) -> Result<Self, Error> {
        let v = u16::try_from(p).map_err(|_| malformed(what, "participant id out of range"))?;
        ParticipantId::new(v).map_err(|e| malformed(what, e))
    }
}

impl Field for Signers {
    type Pb = Vec<u32>;
    fn to_field(&self) -> Vec<u32> {
        self.as_inner().iter().map(Field::to_field).collect()
    }
    fn from_field(what: &str, p: Vec<u32>) -> Result<Self, Error> {
        let ids = p.into_iter().map(|v| ParticipantId::from_field(what, v)).collect::<Result<Vec<_>, _>>()?;
        Signers::new(ids).map_err(|e| malformed(what, e))
    }
}

impl Field for u16 {
    type Pb = u32;
    fn to_field(&self) -> u32 {
        u32::from(*self)
    }
    fn from_field(what: &str, p: u32) -> Result<Self, Error> {
        u16::try_from(p).map_err(|_| malformed(what, "out of range"))
    }
}

impl Field for u64 {
    type Pb = u64;
    fn to_field(&self) -> u64 {
        *self
    }
    fn from_field(_: &str, p: u64) -> Result<Self, Error> {
        Ok(p)
    }
}

impl Field for bool {
    type Pb = bool;
    fn to_field(&self) -> bool {
        *self
    }
    fn from_field(_: &str, p: bool) -> Result<Self, Error> {
        Ok(p)
    }
}

impl Field for ErrorCode {
    type Pb = String;
    fn to_field(&self) -> String {
        self.code().to_string()
    }
    fn from_field(what: &str, p: String) -> Result<Self, Error> {
        ErrorCode::from_code(&p).ok_or_else(|| malformed(what, "unknown code"))
    }
}

/// Nested messages are optional in proto3; the boundary requires them.
macro_rules! nested_fields {
    ($($ty:ty),*) => {$(
        impl Field for $ty {
            type Pb = Option<<$ty as Proto>::Pb>;
            fn to_field(&self) -> Self::Pb {
                Some(self.to_pb())
            }
            fn from_field(what: &str, p: Self::Pb) -> Result<Self, Error> {
                <$ty>::from_pb(required(what, p)?)
            }
        }
    )*};
}
nested_fields!(TaprootMode, SignerShare, KeyInfo, SessionBinding, Attestation, RequestTag, RequestOpen);

/// A message whose fields map one to one: `Type => pb::Message { field: pb_field, .. }`.
macro_rules! proto_struct {
    ($($ty:ident => $pb:ident { $($field:ident: $pbfield:ident),* $(,)? })*) => {$(
        impl Proto for $ty {
            type Pb = pb::$pb;
            fn to_pb(&self) -> pb::$pb {
                pb::$pb { $($pbfield: Field::to_field(&self.$field)),* }
            }
            fn from_pb(_p: pb::$pb) -> Result<Self, Error> {
                Ok($ty { $($field: Field::from_field(stringify!($pbfield), _p.$pbfield)?),* })
            }
        }
    )*};
}

proto_struct! {
    HsmCalls => HsmCalls {
        decrypt: decrypt, encrypt: encrypt, sign: sign, derive: derive, random: random, find: find,
        attributes: attributes, create: create, destroy: destroy, generate: generate,
    }
    Health => HealthRequest {}
    GetIdentity => GetIdentityRequest {}
    Attest => AttestRequest { challenge: challenge }
    Attestation => Attestation {
        provider: provider, document: document, boot_key: boot_key,
        certification_r: certification_r, certification_s: certification_s,
    }
    CeremonyChallenge => CeremonyChallenge { ceremony: ceremony_id, kind: kind, me: me }
    CeremonyChallenged => CeremonyChallenged { ceremony: ceremony_id, from: from, challenge: challenge }
    CeremonyAttest => CeremonyAttest { ceremony: ceremony_id, challenges: challenges }
    PeerAttestation => PeerAttestation { from: from, attestation: attestation }
    CeremonyPeers => CeremonyPeers { ceremony: ceremony_id, challenges: challenges, attestations: attestations }
    CeremonyVerified => CeremonyVerified { ceremony: ceremony_id, verified: verified }
    KeyRef => KeyRef { key: key_id }
    KeyInfo => KeyInfo {
        key: key_id, threshold: threshold, participants: participants, seats: seats,
        bip86_output_key: bip86_output_key, public_key_package: public_key_package,
    }
    OpenSession => OpenSession { session: session_id, key: key_id, message: message, mode: mode }
    SessionOpened => SessionOpened { session: session_id, output_key: output_key }
    OpenAttempt => OpenAttempt { session: session_id, attempt: attempt_id, signers: signers }
    AttemptOpened => AttemptRef { attempt: attempt_id }
    AttemptRef => AttemptRef { attempt: attempt_id }
    SeatRef => SeatRef { attempt: attempt_id, seat: seat }
    Round1Reply => Round1Reply { attempt: attempt_id, seat: seat, commitments: commitments }
    Round2 => Round2 { attempt: attempt_id, seat: seat, mode: mode, signing_package: signing_package }
    Round2Reply => Round2Reply { attempt: attempt_id, seat: seat, signature_share: signature_share }
    SignerShare => SignerShare { signer: signer, signature_share: signature_share }
    VerifyShare => VerifyShare { attempt: attempt_id, signing_package: signing_package, share: share }
    Aggregate => Aggregate { attempt: attempt_id, mode: mode, signing_package: signing_package, shares: shares }
    AttemptAborted => AttemptAborted { attempt: attempt_id, wiped_count: wiped_count }
    SessionRef => SessionRef { session: session_id }
    SessionClosed => SessionRef { session: session_id }
    DevDealerKeygen => DevDealerKeygen { threshold: threshold, participants: participants }
    DkgParticipant => DkgParticipant { id: id, identity_key: identity_key }
    DkgStart => DkgStart { dkg: dkg_id, threshold: threshold, me: me, participants: participants }
    DkgRound1Package => DkgRound1Package { dkg: dkg_id, from: from, package: package }
    DkgBlame => DkgBlame { dkg: dkg_id, code: code, culprit: culprit }
    DkgRound2 => DkgRound2 { dkg: dkg_id, round1: round1 }
    DkgEnvelope => DkgEnvelope { dkg: dkg_id, from: from, to: to, ciphertext: ciphertext }
    DkgFinish => DkgFinish { dkg: dkg_id, envelopes: envelopes }
    DkgConfirmation => DkgConfirmation {
        dkg: dkg_id, from: from, key: key_id, transcript_hash: transcript_hash,
        signature_r: signature_r, signature_s: signature_s,
    }
    DkgActivate => DkgActivate { dkg: dkg_id, confirmations: confirmations }
    RefreshStart => RefreshStart { dkg: dkg_id, key: key_id, me: me, participants: participants }
    RefreshActivate => RefreshActivate { dkg: dkg_id, confirmations: confirmations }
    KeyRefreshed => KeyRefreshed { key: key, epoch: epoch }
    RefreshCommit => RefreshCommit { dkg: dkg_id, key: key_id, epoch: epoch, votes: votes }
    GetRefreshVote => GetRefreshVote { dkg: dkg_id, key: key_id }
    RefreshVote => RefreshVote {
        dkg: dkg_id, key: key_id, seat: seat, prepared: prepared, epoch: epoch, package_hash: package_hash,
        signature_r: signature_r, signature_s: signature_s,
    }
    RefreshAbandon => RefreshAbandon { dkg: dkg_id, key: key_id, votes: votes }
    RefreshAbandoned => RefreshAbandoned { dkg: dkg_id, dropped: dropped }
    AttestEpoch => AttestEpoch { key: key_id, challenge: challenge }
    EpochStatement => EpochStatement {
        key: key_id, seat: seat, epoch: epoch, package_hash: package_hash, challenge: challenge,
        signature_r: signature_r, signature_s: signature_s,
    }
    RepairStart => RepairStart {
        repair: repair_id, key: key_id, seat: seat, identity_key: identity_key, me: me, helpers: helpers,
    }
    RepairSigma => RepairSigma { repair: repair_id, envelopes: envelopes }
    RepairFinish => RepairFinish {
        repair: repair_id, key: key_id, seat: seat, public_key_package: public_key_package, envelopes: envelopes,
    }
    DkgRef => DkgRef { dkg: dkg_id }
    DkgAborted => DkgRef { dkg: dkg_id }
    OpenPsbtSession => OpenPsbtSession { session: session_id, key: key_id, input: input, psbt: psbt }
    Preprocess => Preprocess { key: key_id, seat: seat, count: count }
    PreCommitment => PreCommitment { id: commitment_id, commitments: commitments }
    Preprocessed => Preprocessed { key: key_id, seat: seat, commitments: commitments }
    SignPreprocessed => SignPreprocessed {
        binding: binding, attempt: attempt_id, signers: signers, seat: seat, commitment: commitment_id,
        signing_package: signing_package, replenish: replenish, close: close_session_ids,
    }
    PreprocessedShare => PreprocessedShare {
        attempt: attempt_id, seat: seat, signature_share: signature_share, next: next,
    }
    CloseSessions => CloseSessions { sessions: session_ids }
    SignBatch => SignBatch { items: items }
    BatchSigned => BatchSigned { outcomes: outcomes }
    SessionsClosed => SessionsClosed { closed: closed }
    PsbtSessionOpened => PsbtSessionOpened { session: session_id, output_key: output_key, sighash: sighash, txid: txid }
    RequestTag => RequestTag { client: client, request: request_id, accepted_unix: accepted_unix, attempt: attempt }
    RequestSession => RequestSession { tag: tag, open: open }
    RequestSessionOpened => RequestSessionOpened { session: session_id, output_key: output_key, message: message }
    GetPolicy => GetPolicyRequest {}
    PolicyInfo => PolicyInfo { hash: hash, text: text }
    GetAudit => GetAudit { after: after }
    OpenDerivedSession => OpenDerivedSession {
        session: session_id, key: key_id, path: path, message: message, mode: mode,
    }
    AuditOutput => AuditOutput { to: to, sats: sats }
    AuditLog => AuditLog { entries: entries }
}

impl Field for u32 {
    type Pb = u32;
    fn to_field(&self) -> u32 {
        *self
    }
    fn from_field(_: &str, p: u32) -> Result<Self, Error> {
        Ok(p)
    }
}

/// Optional fixed-length values travel as empty bytes when absent.
impl<const N: usize> Field for Option<[u8; N]> {
    type Pb = Vec<u8>;
    fn to_field(&self) -> Vec<u8> {
        self.map(|v| v.to_vec()).unwrap_or_default()
    }
    fn from_field(what: &str, p: Vec<u8>) -> Result<Self, Error> {
        if p.is_empty() {
            return Ok(None);
        }
        Field::from_field(what, p).map(Some)
    }
}

impl Proto for AuditEntry {
    type Pb = pb::AuditEntry;
    fn to_pb(&self) -> pb::AuditEntry {
        use pb::audit_entry::Decision;
        let decision = match self.decision {
            AuditDecision::Approved => Decision::Approved,
            AuditDecision::Refused => Decision::Refused,
            AuditDecision::Signed => Decision::Signed,
            AuditDecision::KekRotated => Decision::KekRotated,
            AuditDecision::Requested => Decision::Requested,
        };
        pb::AuditEntry {
            seq: self.seq,
            at_unix: self.at_unix,
            decision: decision as i32,
            rule: self.rule.to_field(),
            session_id: self.session.to_field(),
            attempt_id: self.attempt.map(|a| a.to_field()).unwrap_or_default(),
            seat: self.seat.map(|p| p.to_field()).unwrap_or(0),
            key_id: self.key.to_field(),
            txid: self.txid.to_field(),
            has_input: self.input.is_some(),
            input: self.input.unwrap_or(0),
            raw_digest: self.raw_digest,
            outputs: self.outputs.to_field(),
            fee_sats: self.fee_sats,
            policy_hash: self.policy_hash.to_field(),
            path: self.path.to_field(),
        }
    }
    fn from_pb(p: pb::AuditEntry) -> Result<Self, Error> {
        use pb::audit_entry::Decision;
        let decision = match Decision::try_from(p.decision) {
            Ok(Decision::Approved) => AuditDecision::Approved,
            Ok(Decision::Refused) => AuditDecision::Refused,
            Ok(Decision::Signed) => AuditDecision::Signed,
            Ok(Decision::KekRotated) => AuditDecision::KekRotated,
            Ok(Decision::Requested) => AuditDecision::Requested,
            _ => return Err(malformed("decision", "unknown value")),
        };
        Ok(AuditEntry {
            seq: p.seq,
            at_unix: p.at_unix,
            decision,
            rule: Field::from_field("rule", p.rule)?,
            session: Field::from_field("session_id", p.session_id)?,
            attempt: if p.attempt_id.is_empty() { None } else { Some(Field::from_field("attempt_id", p.attempt_id)?) },
            seat: if p.seat == 0 { None } else { Some(Field::from_field("seat", p.seat)?) },
            key: Field::from_field("key_id", p.key_id)?,
            txid: Field::from_field("txid", p.txid)?,
            input: p.has_input.then_some(p.input),
            raw_digest: p.raw_digest,
            outputs: Field::from_field("outputs", p.outputs)?,
            fee_sats: p.fee_sats,
            policy_hash: Field::from_field("policy_hash", p.policy_hash)?,
            path: Field::from_field("path", p.path)?,
        })
    }
}

impl Proto for IdentityKeyBytes {
    type Pb = pb::Identity;
    fn to_pb(&self) -> pb::Identity {
        pb::Identity { identity_key: self.to_field() }
    }
    fn from_pb(p: pb::Identity) -> Result<Self, Error> {
        Field::from_field("identity_key", p.identity_key)
    }
}

impl Proto for DkgEnvelopes {
    type Pb = pb::DkgEnvelopes;
    fn to_pb(&self) -> pb::DkgEnvelopes {
        pb::DkgEnvelopes { envelopes: self.to_field() }
    }
    fn from_pb(p: pb::DkgEnvelopes) -> Result<Self, Error> {
        Field::from_field("envelopes", p.envelopes)
    }
}

impl Proto for TaprootMode {
    type Pb = pb::TaprootMode;
    fn to_pb(&self) -> pb::TaprootMode {
        use pb::taproot_mode::Mode;
        let mode = match self {
            TaprootMode::Bip86 => Mode::Bip86(pb::Empty {}),
            TaprootMode::ScriptTree { merkle_root } => Mode::ScriptTreeMerkleRoot(merkle_root.to_vec()),
            TaprootMode::Untweaked => Mode::Untweaked(pb::Empty {}),
        };
        pb::TaprootMode { mode: Some(mode) }
    }
    fn from_pb(p: pb::TaprootMode) -> Result<Self, Error> {
        use pb::taproot_mode::Mode;
        Ok(match required("mode", p.mode)? {
            Mode::Bip86(_) => TaprootMode::Bip86,
            Mode::ScriptTreeMerkleRoot(r) => {
                TaprootMode::ScriptTree { merkle_root: Field::from_field("merkle_root", r)? }
            }
            Mode::Untweaked(_) => TaprootMode::Untweaked,
        })
    }
}

impl Proto for HealthReply {
    type Pb = pb::HealthReply;
    fn to_pb(&self) -> pb::HealthReply {
        let (ready, refusing_code) = match self.state {
            ServiceState::Ready => (true, String::new()),
            ServiceState::Refusing(code) => (false, code.to_field()),
        };
        pb::HealthReply {
            ready,
            refusing_code,
            uptime_seconds: self.uptime_seconds,
            store_commits: self.store_commits,
            store_records: self.store_records,
            hsm_operations: self.hsm_operations,
            hsm_micros: self.hsm_micros,
            enclave_dev_features: self.dev_features.to_field(),
            host_reconnects: self.host_reconnects,
            enclave_restarts: self.enclave_restarts,
            policy_hash: self.policy_hash.to_field(),
            custody_profile: self.custody_profile.map(|p| p.name().to_string()).unwrap_or_default(),
            hsm_calls: Some(self.hsm_calls.to_pb()),
            open_sessions: self.open_sessions,
            open_attempts: self.open_attempts,
        }
    }
    fn from_pb(p: pb::HealthReply) -> Result<Self, Error> {
        let state = if p.ready {
            ServiceState::Ready
        } else {
            ServiceState::Refusing(Field::from_field("refusing_code", p.refusing_code)?)
        };
        Ok(HealthReply {
            state,
            uptime_seconds: p.uptime_seconds,
            store_commits: p.store_commits,
            store_records: p.store_records,
            hsm_operations: p.hsm_operations,
            hsm_micros: p.hsm_micros,
            dev_features: Field::from_field("enclave_dev_features", p.enclave_dev_features)?,
            host_reconnects: p.host_reconnects,
            enclave_restarts: p.enclave_restarts,
            policy_hash: Field::from_field("policy_hash", p.policy_hash)?,
            custody_profile: match p.custody_profile.as_str() {
                "" => None,
                name => Some(frostgate_common::protocol::CustodyProfile::from_name(name).ok_or_else(|| {
                    Error::new(ErrorCode::MalformedMessage, format!("custody_profile: unknown profile {name:?}"))
                })?),
            },
            hsm_calls: p.hsm_calls.map(HsmCalls::from_pb).transpose()?.unwrap_or_default(),
            open_sessions: p.open_sessions,
            open_attempts: p.open_attempts,
        })
    }
}

impl Proto for ShareVerdict {
    type Pb = pb::ShareVerdictReply;
    fn to_pb(&self) -> pb::ShareVerdictReply {
        use pb::share_verdict_reply::Verdict;
        let verdict = match self {
            ShareVerdict::Valid => Verdict::Valid,
            ShareVerdict::Invalid => Verdict::Invalid,
            ShareVerdict::Indeterminate => Verdict::Indeterminate,
        };
        pb::ShareVerdictReply { verdict: verdict as i32 }
    }
    fn from_pb(p: pb::ShareVerdictReply) -> Result<Self, Error> {
        use pb::share_verdict_reply::Verdict;
        match Verdict::try_from(p.verdict) {
            Ok(Verdict::Valid) => Ok(ShareVerdict::Valid),
            Ok(Verdict::Invalid) => Ok(ShareVerdict::Invalid),
            Ok(Verdict::Indeterminate) => Ok(ShareVerdict::Indeterminate),
            _ => Err(malformed("verdict", "unknown value")),
        }
    }
}

impl Proto for SessionBinding {
    type Pb = pb::SessionBinding;
    fn to_pb(&self) -> pb::SessionBinding {
        use pb::session_binding::Binding;
        let binding = match self {
            SessionBinding::Digest(o) => Binding::Digest(o.to_pb()),
            SessionBinding::Derived(o) => Binding::Derived(o.to_pb()),
            SessionBinding::Psbt(o) => Binding::Psbt(o.to_pb()),
            SessionBinding::Request(r) => Binding::Request(r.to_pb()),
        };
        pb::SessionBinding { binding: Some(binding) }
    }
    fn from_pb(p: pb::SessionBinding) -> Result<Self, Error> {
        use pb::session_binding::Binding;
        Ok(match required("binding", p.binding)? {
            Binding::Digest(o) => SessionBinding::Digest(Proto::from_pb(o)?),
            Binding::Derived(o) => SessionBinding::Derived(Proto::from_pb(o)?),
            Binding::Psbt(o) => SessionBinding::Psbt(Proto::from_pb(o)?),
            Binding::Request(r) => SessionBinding::Request(Proto::from_pb(r)?),
        })
    }
}

impl Proto for RequestOpen {
    type Pb = pb::RequestOpen;
    fn to_pb(&self) -> pb::RequestOpen {
        use pb::request_open::Open;
        let open = match self {
            RequestOpen::Digest(o) => Open::Digest(o.to_pb()),
            RequestOpen::Derived(o) => Open::Derived(o.to_pb()),
            RequestOpen::Psbt(o) => Open::Psbt(o.to_pb()),
        };
        pb::RequestOpen { open: Some(open) }
    }
    fn from_pb(p: pb::RequestOpen) -> Result<Self, Error> {
        use pb::request_open::Open;
        Ok(match required("open", p.open)? {
            Open::Digest(o) => RequestOpen::Digest(Proto::from_pb(o)?),
            Open::Derived(o) => RequestOpen::Derived(Proto::from_pb(o)?),
            Open::Psbt(o) => RequestOpen::Psbt(Proto::from_pb(o)?),
        })
    }
}

impl Proto for SignOutcome {
    type Pb = pb::SignOutcome;
    fn to_pb(&self) -> pb::SignOutcome {
        use pb::sign_outcome::Outcome;
        let outcome = match self {
            SignOutcome::Signed(s) => Outcome::Signed(s.to_pb()),
            SignOutcome::Refused(e) => {
                Outcome::Refused(pb::Refusal { code: e.code().to_field(), message: e.message().to_string() })
            }
        };
        pb::SignOutcome { outcome: Some(outcome) }
    }
    fn from_pb(p: pb::SignOutcome) -> Result<Self, Error> {
        use pb::sign_outcome::Outcome;
        Ok(match required("outcome", p.outcome)? {
            Outcome::Signed(s) => SignOutcome::Signed(Proto::from_pb(s)?),
            Outcome::Refused(r) => SignOutcome::Refused(Error::new(ErrorCode::from_field("code", r.code)?, r.message)),
        })
    }
}

impl Proto for AggregateOutcome {
    type Pb = pb::AggregateReply;
    fn to_pb(&self) -> pb::AggregateReply {
        use pb::aggregate_reply::{InvalidShares, Outcome, Signed};
        let outcome = match self {
            AggregateOutcome::Signed { signature, output_key } => {
                Outcome::Signed(Signed { signature: signature.to_bytes().to_vec(), output_key: output_key.to_vec() })
            }
            AggregateOutcome::InvalidShares { candidate_culprits } => {
                Outcome::InvalidShares(InvalidShares { candidate_culprits: candidate_culprits.to_field() })
            }
        };
        pb::AggregateReply { outcome: Some(outcome) }
    }
    fn from_pb(p: pb::AggregateReply) -> Result<Self, Error> {
        use pb::aggregate_reply::Outcome;
        Ok(match required("outcome", p.outcome)? {
            Outcome::Signed(s) => {
                let sig: [u8; 64] = Field::from_field("signature", s.signature)?;
                let (r, rest) = sig.split_at(32);
                AggregateOutcome::Signed {
                    signature: Bip340Signature {
                        r: Field::from_field("signature", r.to_vec())?,
                        s: Field::from_field("signature", rest.to_vec())?,
                    },
                    output_key: Field::from_field("output_key", s.output_key)?,
                }
            }
            Outcome::InvalidShares(i) => AggregateOutcome::InvalidShares {
                candidate_culprits: Field::from_field("candidate_culprits", i.candidate_culprits)?,
            },
        })
    }
}

/// A DKG step's reply: a oneof of the step's result and a blame.
macro_rules! dkg_outcomes {
    ($($ty:ty => $pb:ident, $module:ident :: $done:ident;)*) => {$(
        impl Proto for DkgOutcome<$ty> {
            type Pb = pb::$pb;
            fn to_pb(&self) -> pb::$pb {
                use pb::$module::Outcome;
                let outcome = match self {
                    DkgOutcome::Done(t) => Outcome::$done(t.to_pb()),
                    DkgOutcome::Blame(b) => Outcome::Blame(b.to_pb()),
                };
                pb::$pb { outcome: Some(outcome) }
            }
            fn from_pb(p: pb::$pb) -> Result<Self, Error> {
                use pb::$module::Outcome;
                Ok(match required("outcome", p.outcome)? {
                    Outcome::$done(t) => DkgOutcome::Done(Proto::from_pb(t)?),
                    Outcome::Blame(b) => DkgOutcome::Blame(Proto::from_pb(b)?),
                })
            }
        }
    )*};
}

dkg_outcomes! {
    DkgRound1Package => DkgStartReply, dkg_start_reply::Round1;
    DkgEnvelopes => DkgRound2Reply, dkg_round2_reply::Envelopes;
    DkgConfirmation => DkgFinishReply, dkg_finish_reply::Confirmation;
    KeyInfo => DkgActivateReply, dkg_activate_reply::Key;
    KeyRefreshed => RefreshActivateReply, refresh_activate_reply::Refreshed;
    CeremonyVerified => CeremonyPeersReply, ceremony_peers_reply::Verified;
}

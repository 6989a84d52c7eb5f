//! Between the gRPC contract (`pb`) and the boundary protocol types.
//!
//! Invariant: a `pb` value becomes a protocol value only through [`Proto::from_pb`], which checks
//! every id, length bound and enum exactly as the boundary decoder does; a value that fails gives
//! `malformed_message` and never reaches the enclave. Both directions are one `impl` per type,
//! so a round trip is the identity (tested).

use super::pb;
use frostgate_common::bounded::*;
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::ids::{AttemptId, DkgId, KeyId, ParticipantId, SessionId};
use frostgate_common::protocol::*;

/// A protocol type with a gRPC counterpart.
pub trait Proto: Sized {
    /// The generated message.
    type Pb;
    /// To the wire.
    fn to_pb(&self) -> Self::Pb;
    /// From the wire, checked.
    fn from_pb(p: Self::Pb) -> Result<Self, Error>;
}

fn malformed(what: &str, why: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::MalformedMessage, format!("{what}: {why}"))
}

fn array<const N: usize>(what: &str, bytes: &[u8]) -> Result<[u8; N], Error> {
    bytes.try_into().map_err(|_| malformed(what, format_args!("{} bytes, expected {N}", bytes.len())))
}

fn participant(what: &str, v: u32) -> Result<ParticipantId, Error> {
    let v = u16::try_from(v).map_err(|_| malformed(what, "participant id out of range"))?;
    ParticipantId::new(v).map_err(|e| malformed(what, e))
}

fn signers(what: &str, v: &[u32]) -> Result<Signers, Error> {
    let ids = v.iter().map(|&p| participant(what, p)).collect::<Result<Vec<_>, _>>()?;
    Signers::new(ids).map_err(|e| malformed(what, e))
}

fn ids(s: &Signers) -> Vec<u32> {
    s.as_inner().iter().map(|p| u32::from(p.get())).collect()
}

fn small(what: &str, v: u32) -> Result<u16, Error> {
    u16::try_from(v).map_err(|_| malformed(what, "out of range"))
}

fn key(b: &[u8]) -> Result<KeyId, Error> {
    array("key_id", b).map(KeyId::from_bytes)
}

fn session(b: &[u8]) -> Result<SessionId, Error> {
    array("session_id", b).map(SessionId::from_bytes)
}

fn attempt(b: &[u8]) -> Result<AttemptId, Error> {
    array("attempt_id", b).map(AttemptId::from_bytes)
}

fn dkg(b: &[u8]) -> Result<DkgId, Error> {
    array("dkg_id", b).map(DkgId::from_bytes)
}

/// Builds a bounded value, or `malformed_message` naming the field.
macro_rules! bounded {
    ($ty:ty, $what:expr, $v:expr) => {
        <$ty>::new($v).map_err(|e| malformed($what, e))
    };
}

fn list<T: Proto>(v: Vec<T::Pb>) -> Result<Vec<T>, Error> {
    v.into_iter().map(T::from_pb).collect()
}

fn to_list<T: Proto>(v: &[T]) -> Vec<T::Pb> {
    v.iter().map(T::to_pb).collect()
}

fn required<T>(what: &str, v: Option<T>) -> Result<T, Error> {
    v.ok_or_else(|| malformed(what, "missing"))
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
            Mode::ScriptTreeMerkleRoot(r) => TaprootMode::ScriptTree { merkle_root: array("merkle_root", &r)? },
            Mode::Untweaked(_) => TaprootMode::Untweaked,
        })
    }
}

fn mode(p: Option<pb::TaprootMode>) -> Result<TaprootMode, Error> {
    TaprootMode::from_pb(required("mode", p)?)
}

impl Proto for HealthReply {
    type Pb = pb::HealthReply;
    fn to_pb(&self) -> pb::HealthReply {
        let (ready, refusing_code) = match self.state {
            ServiceState::Ready => (true, String::new()),
            ServiceState::Refusing(code) => (false, code.code().to_string()),
        };
        pb::HealthReply {
            ready,
            refusing_code,
            uptime_seconds: self.uptime_seconds,
            store_commits: self.store_commits,
            store_records: self.store_records,
            hsm_operations: self.hsm_operations,
            hsm_micros: self.hsm_micros,
            enclave_dev_features: self.dev_features.as_inner().to_string(),
            host_reconnects: self.host_reconnects,
            enclave_restarts: self.enclave_restarts,
        }
    }
    fn from_pb(p: pb::HealthReply) -> Result<Self, Error> {
        let state = if p.ready {
            ServiceState::Ready
        } else {
            ServiceState::Refusing(
                ErrorCode::from_code(&p.refusing_code).ok_or_else(|| malformed("refusing_code", "unknown code"))?,
            )
        };
        Ok(HealthReply {
            state,
            uptime_seconds: p.uptime_seconds,
            store_commits: p.store_commits,
            store_records: p.store_records,
            hsm_operations: p.hsm_operations,
            hsm_micros: p.hsm_micros,
            dev_features: Label::new(p.enclave_dev_features).map_err(|e| malformed("enclave_dev_features", e))?,
            host_reconnects: p.host_reconnects,
            enclave_restarts: p.enclave_restarts,
        })
    }
}

impl Proto for IdentityKeyBytes {
    type Pb = pb::Identity;
    fn to_pb(&self) -> pb::Identity {
        pb::Identity { identity_key: self.as_inner().clone() }
    }
    fn from_pb(p: pb::Identity) -> Result<Self, Error> {
        bounded!(IdentityKeyBytes, "identity_key", p.identity_key)
    }
}

impl Proto for KeyRef {
    type Pb = pb::KeyRef;
    fn to_pb(&self) -> pb::KeyRef {
        pb::KeyRef { key_id: self.key.as_bytes().to_vec() }
    }
    fn from_pb(p: pb::KeyRef) -> Result<Self, Error> {
        Ok(KeyRef { key: key(&p.key_id)? })
    }
}

impl Proto for KeyInfo {
    type Pb = pb::KeyInfo;
    fn to_pb(&self) -> pb::KeyInfo {
        pb::KeyInfo {
            key_id: self.key.as_bytes().to_vec(),
            threshold: u32::from(self.threshold),
            participants: ids(&self.participants),
            seats: ids(&self.seats),
            bip86_output_key: self.bip86_output_key.to_vec(),
            public_key_package: self.public_key_package.as_inner().clone(),
        }
    }
    fn from_pb(p: pb::KeyInfo) -> Result<Self, Error> {
        Ok(KeyInfo {
            key: key(&p.key_id)?,
            threshold: small("threshold", p.threshold)?,
            participants: signers("participants", &p.participants)?,
            seats: signers("seats", &p.seats)?,
            bip86_output_key: array("bip86_output_key", &p.bip86_output_key)?,
            public_key_package: bounded!(PublicKeyPackageBytes, "public_key_package", p.public_key_package)?,
        })
    }
}

impl Proto for OpenSession {
    type Pb = pb::OpenSession;
    fn to_pb(&self) -> pb::OpenSession {
        pb::OpenSession {
            session_id: self.session.as_bytes().to_vec(),
            key_id: self.key.as_bytes().to_vec(),
            message: self.message.to_vec(),
            mode: Some(self.mode.to_pb()),
        }
    }
    fn from_pb(p: pb::OpenSession) -> Result<Self, Error> {
        Ok(OpenSession {
            session: session(&p.session_id)?,
            key: key(&p.key_id)?,
            message: array("message", &p.message)?,
            mode: mode(p.mode)?,
        })
    }
}

impl Proto for SessionOpened {
    type Pb = pb::SessionOpened;
    fn to_pb(&self) -> pb::SessionOpened {
        pb::SessionOpened { session_id: self.session.as_bytes().to_vec(), output_key: self.output_key.to_vec() }
    }
    fn from_pb(p: pb::SessionOpened) -> Result<Self, Error> {
        Ok(SessionOpened { session: session(&p.session_id)?, output_key: array("output_key", &p.output_key)? })
    }
}

impl Proto for OpenAttempt {
    type Pb = pb::OpenAttempt;
    fn to_pb(&self) -> pb::OpenAttempt {
        pb::OpenAttempt {
            session_id: self.session.as_bytes().to_vec(),
            attempt_id: self.attempt.as_bytes().to_vec(),
            signers: ids(&self.signers),
        }
    }
    fn from_pb(p: pb::OpenAttempt) -> Result<Self, Error> {
        Ok(OpenAttempt {
            session: session(&p.session_id)?,
            attempt: attempt(&p.attempt_id)?,
            signers: signers("signers", &p.signers)?,
        })
    }
}

impl Proto for AttemptRef {
    type Pb = pb::AttemptRef;
    fn to_pb(&self) -> pb::AttemptRef {
        pb::AttemptRef { attempt_id: self.attempt.as_bytes().to_vec() }
    }
    fn from_pb(p: pb::AttemptRef) -> Result<Self, Error> {
        Ok(AttemptRef { attempt: attempt(&p.attempt_id)? })
    }
}

impl Proto for SeatRef {
    type Pb = pb::SeatRef;
    fn to_pb(&self) -> pb::SeatRef {
        pb::SeatRef { attempt_id: self.attempt.as_bytes().to_vec(), seat: u32::from(self.seat.get()) }
    }
    fn from_pb(p: pb::SeatRef) -> Result<Self, Error> {
        Ok(SeatRef { attempt: attempt(&p.attempt_id)?, seat: participant("seat", p.seat)? })
    }
}

impl Proto for Round1Reply {
    type Pb = pb::Round1Reply;
    fn to_pb(&self) -> pb::Round1Reply {
        pb::Round1Reply {
            attempt_id: self.attempt.as_bytes().to_vec(),
            seat: u32::from(self.seat.get()),
            commitments: self.commitments.as_inner().clone(),
        }
    }
    fn from_pb(p: pb::Round1Reply) -> Result<Self, Error> {
        Ok(Round1Reply {
            attempt: attempt(&p.attempt_id)?,
            seat: participant("seat", p.seat)?,
            commitments: bounded!(CommitmentBytes, "commitments", p.commitments)?,
        })
    }
}

impl Proto for Round2 {
    type Pb = pb::Round2;
    fn to_pb(&self) -> pb::Round2 {
        pb::Round2 {
            attempt_id: self.attempt.as_bytes().to_vec(),
            seat: u32::from(self.seat.get()),
            mode: Some(self.mode.to_pb()),
            signing_package: self.signing_package.as_inner().clone(),
        }
    }
    fn from_pb(p: pb::Round2) -> Result<Self, Error> {
        Ok(Round2 {
            attempt: attempt(&p.attempt_id)?,
            seat: participant("seat", p.seat)?,
            mode: mode(p.mode)?,
            signing_package: bounded!(SigningPackageBytes, "signing_package", p.signing_package)?,
        })
    }
}

impl Proto for Round2Reply {
    type Pb = pb::Round2Reply;
    fn to_pb(&self) -> pb::Round2Reply {
        pb::Round2Reply {
            attempt_id: self.attempt.as_bytes().to_vec(),
            seat: u32::from(self.seat.get()),
            signature_share: self.signature_share.as_inner().clone(),
        }
    }
    fn from_pb(p: pb::Round2Reply) -> Result<Self, Error> {
        Ok(Round2Reply {
            attempt: attempt(&p.attempt_id)?,
            seat: participant("seat", p.seat)?,
            signature_share: bounded!(SignatureShareBytes, "signature_share", p.signature_share)?,
        })
    }
}

impl Proto for SignerShare {
    type Pb = pb::SignerShare;
    fn to_pb(&self) -> pb::SignerShare {
        pb::SignerShare {
            signer: u32::from(self.signer.get()),
            signature_share: self.signature_share.as_inner().clone(),
        }
    }
    fn from_pb(p: pb::SignerShare) -> Result<Self, Error> {
        Ok(SignerShare {
            signer: participant("signer", p.signer)?,
            signature_share: bounded!(SignatureShareBytes, "signature_share", p.signature_share)?,
        })
    }
}

impl Proto for VerifyShare {
    type Pb = pb::VerifyShare;
    fn to_pb(&self) -> pb::VerifyShare {
        pb::VerifyShare {
            attempt_id: self.attempt.as_bytes().to_vec(),
            signing_package: self.signing_package.as_inner().clone(),
            share: Some(self.share.to_pb()),
        }
    }
    fn from_pb(p: pb::VerifyShare) -> Result<Self, Error> {
        Ok(VerifyShare {
            attempt: attempt(&p.attempt_id)?,
            signing_package: bounded!(SigningPackageBytes, "signing_package", p.signing_package)?,
            share: SignerShare::from_pb(required("share", p.share)?)?,
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

impl Proto for Aggregate {
    type Pb = pb::Aggregate;
    fn to_pb(&self) -> pb::Aggregate {
        pb::Aggregate {
            attempt_id: self.attempt.as_bytes().to_vec(),
            mode: Some(self.mode.to_pb()),
            signing_package: self.signing_package.as_inner().clone(),
            shares: to_list(self.shares.as_inner()),
        }
    }
    fn from_pb(p: pb::Aggregate) -> Result<Self, Error> {
        Ok(Aggregate {
            attempt: attempt(&p.attempt_id)?,
            mode: mode(p.mode)?,
            signing_package: bounded!(SigningPackageBytes, "signing_package", p.signing_package)?,
            shares: bounded!(SignerShares, "shares", list::<SignerShare>(p.shares)?)?,
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
                Outcome::InvalidShares(InvalidShares { candidate_culprits: ids(candidate_culprits) })
            }
        };
        pb::AggregateReply { outcome: Some(outcome) }
    }
    fn from_pb(p: pb::AggregateReply) -> Result<Self, Error> {
        use pb::aggregate_reply::Outcome;
        Ok(match required("outcome", p.outcome)? {
            Outcome::Signed(s) => {
                let sig: [u8; 64] = array("signature", &s.signature)?;
                let (r, rest) = sig.split_at(32);
                AggregateOutcome::Signed {
                    signature: Bip340Signature { r: array("signature", r)?, s: array("signature", rest)? },
                    output_key: array("output_key", &s.output_key)?,
                }
            }
            Outcome::InvalidShares(i) => AggregateOutcome::InvalidShares {
                candidate_culprits: signers("candidate_culprits", &i.candidate_culprits)?,
            },
        })
    }
}

impl Proto for AttemptAborted {
    type Pb = pb::AttemptAborted;
    fn to_pb(&self) -> pb::AttemptAborted {
        pb::AttemptAborted { attempt_id: self.attempt.as_bytes().to_vec(), wiped_count: u32::from(self.wiped_count) }
    }
    fn from_pb(p: pb::AttemptAborted) -> Result<Self, Error> {
        Ok(AttemptAborted { attempt: attempt(&p.attempt_id)?, wiped_count: small("wiped_count", p.wiped_count)? })
    }
}

impl Proto for SessionRef {
    type Pb = pb::SessionRef;
    fn to_pb(&self) -> pb::SessionRef {
        pb::SessionRef { session_id: self.session.as_bytes().to_vec() }
    }
    fn from_pb(p: pb::SessionRef) -> Result<Self, Error> {
        Ok(SessionRef { session: session(&p.session_id)? })
    }
}

impl Proto for DevDealerKeygen {
    type Pb = pb::DevDealerKeygen;
    fn to_pb(&self) -> pb::DevDealerKeygen {
        pb::DevDealerKeygen { threshold: u32::from(self.threshold), participants: u32::from(self.participants) }
    }
    fn from_pb(p: pb::DevDealerKeygen) -> Result<Self, Error> {
        Ok(DevDealerKeygen {
            threshold: small("threshold", p.threshold)?,
            participants: small("participants", p.participants)?,
        })
    }
}

impl Proto for DkgParticipant {
    type Pb = pb::DkgParticipant;
    fn to_pb(&self) -> pb::DkgParticipant {
        pb::DkgParticipant { id: u32::from(self.id.get()), identity_key: self.identity_key.as_inner().clone() }
    }
    fn from_pb(p: pb::DkgParticipant) -> Result<Self, Error> {
        Ok(DkgParticipant {
            id: participant("id", p.id)?,
            identity_key: bounded!(IdentityKeyBytes, "identity_key", p.identity_key)?,
        })
    }
}

impl Proto for DkgStart {
    type Pb = pb::DkgStart;
    fn to_pb(&self) -> pb::DkgStart {
        pb::DkgStart {
            dkg_id: self.dkg.as_bytes().to_vec(),
            threshold: u32::from(self.threshold),
            me: u32::from(self.me.get()),
            participants: to_list(self.participants.as_inner()),
        }
    }
    fn from_pb(p: pb::DkgStart) -> Result<Self, Error> {
        Ok(DkgStart {
            dkg: dkg(&p.dkg_id)?,
            threshold: small("threshold", p.threshold)?,
            me: participant("me", p.me)?,
            participants: bounded!(DkgParticipants, "participants", list::<DkgParticipant>(p.participants)?)?,
        })
    }
}

impl Proto for DkgRound1Package {
    type Pb = pb::DkgRound1Package;
    fn to_pb(&self) -> pb::DkgRound1Package {
        pb::DkgRound1Package {
            dkg_id: self.dkg.as_bytes().to_vec(),
            from: u32::from(self.from.get()),
            package: self.package.as_inner().clone(),
        }
    }
    fn from_pb(p: pb::DkgRound1Package) -> Result<Self, Error> {
        Ok(DkgRound1Package {
            dkg: dkg(&p.dkg_id)?,
            from: participant("from", p.from)?,
            package: bounded!(DkgPackageBytes, "package", p.package)?,
        })
    }
}

impl Proto for DkgBlame {
    type Pb = pb::DkgBlame;
    fn to_pb(&self) -> pb::DkgBlame {
        pb::DkgBlame {
            dkg_id: self.dkg.as_bytes().to_vec(),
            code: self.code.code().to_string(),
            culprit: u32::from(self.culprit.get()),
        }
    }
    fn from_pb(p: pb::DkgBlame) -> Result<Self, Error> {
        Ok(DkgBlame {
            dkg: dkg(&p.dkg_id)?,
            code: ErrorCode::from_code(&p.code).ok_or_else(|| malformed("code", "unknown code"))?,
            culprit: participant("culprit", p.culprit)?,
        })
    }
}

impl Proto for DkgRound2 {
    type Pb = pb::DkgRound2;
    fn to_pb(&self) -> pb::DkgRound2 {
        pb::DkgRound2 { dkg_id: self.dkg.as_bytes().to_vec(), round1: to_list(self.round1.as_inner()) }
    }
    fn from_pb(p: pb::DkgRound2) -> Result<Self, Error> {
        Ok(DkgRound2 {
            dkg: dkg(&p.dkg_id)?,
            round1: bounded!(DkgRound1Packages, "round1", list::<DkgRound1Package>(p.round1)?)?,
        })
    }
}

impl Proto for DkgEnvelope {
    type Pb = pb::DkgEnvelope;
    fn to_pb(&self) -> pb::DkgEnvelope {
        pb::DkgEnvelope {
            dkg_id: self.dkg.as_bytes().to_vec(),
            from: u32::from(self.from.get()),
            to: u32::from(self.to.get()),
            ciphertext: self.ciphertext.as_inner().clone(),
        }
    }
    fn from_pb(p: pb::DkgEnvelope) -> Result<Self, Error> {
        Ok(DkgEnvelope {
            dkg: dkg(&p.dkg_id)?,
            from: participant("from", p.from)?,
            to: participant("to", p.to)?,
            ciphertext: bounded!(DkgCiphertext, "ciphertext", p.ciphertext)?,
        })
    }
}

impl Proto for DkgEnvelopes {
    type Pb = pb::DkgEnvelopes;
    fn to_pb(&self) -> pb::DkgEnvelopes {
        pb::DkgEnvelopes { envelopes: to_list(self.as_inner()) }
    }
    fn from_pb(p: pb::DkgEnvelopes) -> Result<Self, Error> {
        bounded!(DkgEnvelopes, "envelopes", list::<DkgEnvelope>(p.envelopes)?)
    }
}

impl Proto for DkgFinish {
    type Pb = pb::DkgFinish;
    fn to_pb(&self) -> pb::DkgFinish {
        pb::DkgFinish { dkg_id: self.dkg.as_bytes().to_vec(), envelopes: to_list(self.envelopes.as_inner()) }
    }
    fn from_pb(p: pb::DkgFinish) -> Result<Self, Error> {
        Ok(DkgFinish {
            dkg: dkg(&p.dkg_id)?,
            envelopes: bounded!(DkgEnvelopes, "envelopes", list::<DkgEnvelope>(p.envelopes)?)?,
        })
    }
}

impl Proto for DkgConfirmation {
    type Pb = pb::DkgConfirmation;
    fn to_pb(&self) -> pb::DkgConfirmation {
        pb::DkgConfirmation {
            dkg_id: self.dkg.as_bytes().to_vec(),
            from: u32::from(self.from.get()),
            key_id: self.key.as_bytes().to_vec(),
            transcript_hash: self.transcript_hash.to_vec(),
            signature_r: self.signature_r.to_vec(),
            signature_s: self.signature_s.to_vec(),
        }
    }
    fn from_pb(p: pb::DkgConfirmation) -> Result<Self, Error> {
        Ok(DkgConfirmation {
            dkg: dkg(&p.dkg_id)?,
            from: participant("from", p.from)?,
            key: key(&p.key_id)?,
            transcript_hash: array("transcript_hash", &p.transcript_hash)?,
            signature_r: array("signature_r", &p.signature_r)?,
            signature_s: array("signature_s", &p.signature_s)?,
        })
    }
}

impl Proto for DkgActivate {
    type Pb = pb::DkgActivate;
    fn to_pb(&self) -> pb::DkgActivate {
        pb::DkgActivate { dkg_id: self.dkg.as_bytes().to_vec(), confirmations: to_list(self.confirmations.as_inner()) }
    }
    fn from_pb(p: pb::DkgActivate) -> Result<Self, Error> {
        Ok(DkgActivate {
            dkg: dkg(&p.dkg_id)?,
            confirmations: bounded!(DkgConfirmations, "confirmations", list::<DkgConfirmation>(p.confirmations)?)?,
        })
    }
}

impl Proto for DkgRef {
    type Pb = pb::DkgRef;
    fn to_pb(&self) -> pb::DkgRef {
        pb::DkgRef { dkg_id: self.dkg.as_bytes().to_vec() }
    }
    fn from_pb(p: pb::DkgRef) -> Result<Self, Error> {
        Ok(DkgRef { dkg: dkg(&p.dkg_id)? })
    }
}

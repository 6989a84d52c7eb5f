//! How an attempt gets its signers' commitments and shares: the interactive rounds, or
//! preprocessed commitments. The ROAST core is the same for both; only these answers differ.

use super::exchange::{Answer, Ask};
use frost_secp256k1_tr::round1::SigningCommitments;
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::ids::{CommitmentId, ParticipantId};
use std::sync::Arc;

/// One signer's round 1 as an attempt uses it.
#[derive(Debug, Clone)]
pub struct Round1 {
    /// Its commitments.
    pub commitments: SigningCommitments,
    /// The preprocessed commitment to sign with (preprocessed strategy only).
    pub commitment: Option<CommitmentId>,
    /// Whether the commitment was held from an earlier signing (its enclave may have lost it
    /// since: a restart, an expiry).
    pub held: bool,
}

/// An attempt strategy. Pure: it only says what to ask and how to read the answers.
pub trait Strategy: Send {
    /// The round-1 ask for every signer of an attempt with `signers`.
    fn round1(&self, signers: &[ParticipantId]) -> Ask;
    /// Reads a round-1 answer.
    fn commitments(&self, answer: Answer) -> Result<Round1, Error>;
    /// The round-2 ask for a signer whose round 1 was `r1`.
    fn round2(&self, r1: &Round1, signers: &[ParticipantId], package: Arc<Vec<u8>>) -> Ask;
    /// Whether a round-2 refusal means the signer's enclave lost what the coordinator held
    /// for it (it is then ready again, not excluded).
    fn forgives(&self, e: &Error, r1: &Round1) -> bool;
    /// Whether what the coordinator holds for a signer must be dropped after `e`.
    fn drops_held(&self, e: &Error) -> bool;
    /// Whether a finished session is closed at once (one call per node) or with later requests.
    fn closes_now(&self) -> bool;
}

fn decode(bytes: &[u8]) -> Result<SigningCommitments, Error> {
    SigningCommitments::deserialize(bytes)
        .map_err(|e| Error::new(ErrorCode::InvalidEncoding, format!("its commitments do not decode: {e}")))
}

fn unexpected(answer: &Answer) -> Error {
    Error::new(ErrorCode::MalformedMessage, format!("unexpected answer {answer:?}"))
}

/// Session, attempt, round 1 and round 2 per signer; the session closed at once when done.
#[derive(Debug, Clone, Copy)]
pub struct Interactive;

impl Strategy for Interactive {
    fn round1(&self, signers: &[ParticipantId]) -> Ask {
        Ask::Open { signers: signers.to_vec() }
    }

    fn commitments(&self, answer: Answer) -> Result<Round1, Error> {
        match answer {
            Answer::Commitments(bytes) => Ok(Round1 { commitments: decode(&bytes)?, commitment: None, held: false }),
            other => Err(unexpected(&other)),
        }
    }

    fn round2(&self, _: &Round1, _: &[ParticipantId], package: Arc<Vec<u8>>) -> Ask {
        Ask::Round2 { package }
    }

    fn forgives(&self, _: &Error, _: &Round1) -> bool {
        false
    }

    fn drops_held(&self, _: &Error) -> bool {
        false
    }

    fn closes_now(&self) -> bool {
        true
    }
}

/// A held (or freshly preprocessed) commitment per signer, then one `SignPreprocessed` each;
/// finished sessions are closed with later requests.
///
/// A signer whose held commitment its enclave no longer has (`commitment_unknown`: it restarted,
/// or the commitment expired) is not excluded: what is held for it is dropped and it is ready
/// again, to preprocess afresh. Refused after a fresh `Preprocess`, it is excluded like any error.
#[derive(Debug, Clone, Copy)]
pub struct Preprocessed;

impl Strategy for Preprocessed {
    fn round1(&self, _: &[ParticipantId]) -> Ask {
        Ask::Commitment
    }

    fn commitments(&self, answer: Answer) -> Result<Round1, Error> {
        match answer {
            Answer::Commitment { commitment, held } => Ok(Round1 {
                commitments: decode(commitment.commitments.as_inner())?,
                commitment: Some(commitment.id),
                held,
            }),
            other => Err(unexpected(&other)),
        }
    }

    fn round2(&self, r1: &Round1, signers: &[ParticipantId], package: Arc<Vec<u8>>) -> Ask {
        let commitment = r1.commitment.unwrap_or_else(|| CommitmentId::from_bytes([0; 16]));
        Ask::SignPreprocessed { commitment, signers: signers.to_vec(), package }
    }

    fn forgives(&self, e: &Error, r1: &Round1) -> bool {
        e.code() == ErrorCode::CommitmentUnknown && r1.held
    }

    fn drops_held(&self, e: &Error) -> bool {
        matches!(e.code(), ErrorCode::CommitmentUnknown | ErrorCode::InvalidEncoding)
    }

    fn closes_now(&self) -> bool {
        false
    }
}

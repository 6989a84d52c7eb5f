//! What the ROAST core and a driver exchange: the core's asks and actions, the signers' answers.

use frostgate_common::ids::{AttemptId, CommitmentId, ParticipantId};
use frostgate_common::protocol::PreCommitment;
use std::sync::Arc;

/// What the core asks one signer to do (the driver turns it into node calls).
#[derive(Debug, Clone)]
pub enum Ask {
    /// Interactive round 1: open the session and the attempt with `signers`, then the seat's
    /// commitments.
    Open { signers: Vec<ParticipantId> },
    /// Preprocessed round 1: a commitment held for the signer, or fresh ones (`Preprocess`).
    Commitment,
    /// Interactive round 2: the seat's share of `package`.
    Round2 { package: Arc<Vec<u8>> },
    /// Preprocessed round 2: bind the session and sign `package` with `commitment`.
    SignPreprocessed { commitment: CommitmentId, signers: Vec<ParticipantId>, package: Arc<Vec<u8>> },
    /// End a failed attempt on this signer (its nonces wiped); any answer frees the signer.
    Release,
    /// After policy refusals: open the session (the node's policy decides) and close it again,
    /// so the report names every node's decision.
    Probe,
}

/// A signer's answer to an [`Ask`] (an error is the other case of the event).
#[derive(Debug, Clone)]
pub enum Answer {
    /// Interactive round 1: the seat's encoded commitments.
    Commitments(Vec<u8>),
    /// Preprocessed round 1: the commitment, and whether it was held from before.
    Commitment { commitment: PreCommitment, held: bool },
    /// Round 2: the encoded signature share.
    Share(Vec<u8>),
    /// A release or a probe went through.
    Done,
}

/// What the driver must do.
#[derive(Debug, Clone)]
pub enum Action {
    /// Ask `signer`, within `attempt` (the probes: [`super::core::PROBE`]), and feed the answer back.
    Ask { attempt: AttemptId, signer: ParticipantId, ask: Ask },
    /// Forget what is held for `signer` (its enclave no longer has it).
    DropHeld(ParticipantId),
    /// The session is over on these signers: close it at once, or with their next requests.
    Close { signers: Vec<ParticipantId>, now: bool },
}

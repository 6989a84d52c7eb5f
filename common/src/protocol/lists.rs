//! Bounded lists of protocol types: their bound checked on decode, before the value exists
//! (the same rule as `crate::bounded`, whose scalar types these build on).

use crate::bounded::bounded_types;

bounded_types! {
    ALL_LIST_BOUNDS;
    /// Host store records, in chain order.
    StoreRecords: Vec<crate::protocol::StoreRecord>, 256, "host store records (count)";
    /// A DKG's participants.
    DkgParticipants: Vec<crate::protocol::DkgParticipant>, crate::limits::MAX_PARTICIPANTS as usize, "DKG participants (count)";
    /// Round-1 packages by participant.
    DkgRound1Packages: Vec<crate::protocol::DkgRound1Package>, crate::limits::MAX_PARTICIPANTS as usize, "DKG round-1 packages (count)";
    /// Encrypted round-2 packages.
    DkgEnvelopes: Vec<crate::protocol::DkgEnvelope>, crate::limits::MAX_PARTICIPANTS as usize, "DKG envelopes (count)";
    /// Transcript confirmations.
    DkgConfirmations: Vec<crate::protocol::DkgConfirmation>, crate::limits::MAX_PARTICIPANTS as usize, "DKG confirmations (count)";
    /// Participants' votes on a refresh.
    RefreshVotes: Vec<crate::protocol::RefreshVote>, crate::limits::MAX_PARTICIPANTS as usize, "refresh votes (count)";
    /// Peers' epoch statements for a restore.
    EpochStatements: Vec<crate::protocol::EpochStatement>, crate::limits::MAX_PARTICIPANTS as usize, "epoch statements (count)";
    /// The outputs named in one audit record.
    AuditOutputs: Vec<crate::protocol::AuditOutput>, 64, "audit record outputs (count)";
    /// Audit records in one reply.
    AuditEntries: Vec<crate::protocol::AuditEntry>, 128, "audit records (count)";
    /// Signature shares by signer.
    SignerShares: Vec<crate::protocol::SignerShare>, crate::limits::MAX_PARTICIPANTS as usize, "signature shares (count)";
    /// Preprocessed commitments in one reply.
    PreCommitments: Vec<crate::protocol::PreCommitment>, crate::limits::MAX_PREPROCESS, "preprocessed commitments (count)";
    /// One-request signings carried by one `SignBatch`.
    SignItems: Vec<crate::protocol::SignPreprocessed>, crate::limits::MAX_SIGN_BATCH, "one-request signings (count)";
    /// Their outcomes, in order.
    SignOutcomes: Vec<crate::protocol::SignOutcome>, crate::limits::MAX_SIGN_BATCH, "signing outcomes (count)";
    /// A ceremony's challenges, one per participant.
    CeremonyChallenges: Vec<crate::protocol::CeremonyChallenged>, crate::limits::MAX_PARTICIPANTS as usize, "ceremony challenges (count)";
    /// Peers' attestations for a ceremony: at most 48 documents of 16 KiB fit in one frame.
    PeerAttestations: Vec<crate::protocol::PeerAttestation>, 48, "peer attestations (count)";
}

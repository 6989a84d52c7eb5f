//! Length-bounded strings and byte strings for the boundary protocol.
//!
//! Invariant: a value of these types never exceeds its bound, whether built locally or decoded
//! from the wire; decode checks the bound before the value exists. Each type has its own serde
//! name, so the boundary manifest shows which bound applies to every field.

use serde::{Deserialize, Serialize};

/// One bounded type as listed in the boundary manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundDescription {
    /// The type's serde name, as it appears in the manifest.
    pub name: &'static str,
    /// Maximum length in bytes.
    pub max_len: usize,
    /// What the bytes are.
    pub meaning: &'static str,
}

/// Returned when a value exceeds its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLong {
    /// The bounded type's name.
    pub name: &'static str,
    /// Its bound.
    pub max_len: usize,
    /// The offered length.
    pub len: usize,
}

impl std::fmt::Display for TooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} is {} bytes, limit {}", self.name, self.len, self.max_len)
    }
}

macro_rules! bounded_types {
    ($($(#[$doc:meta])* $name:ident : $inner:ty, $max:expr, $meaning:expr;)*) => {
        $(
            $(#[$doc])*
            #[derive(Clone, PartialEq, Eq, Hash)]
            pub struct $name($inner);

            impl $name {
                /// The bound, in bytes.
                pub const MAX_LEN: usize = $max;
                /// This type's entry in the manifest's limits table.
                pub const DESCRIPTION: BoundDescription =
                    BoundDescription { name: stringify!($name), max_len: $max, meaning: $meaning };

                /// Builds the value, or says by how much it is too long.
                pub fn new(value: impl Into<$inner>) -> Result<Self, TooLong> {
                    let value = value.into();
                    if value.len() > $max {
                        return Err(TooLong { name: stringify!($name), max_len: $max, len: value.len() });
                    }
                    Ok(Self(value))
                }

                /// The contents.
                pub fn as_inner(&self) -> &$inner {
                    &self.0
                }

                /// Consumes the value.
                pub fn into_inner(self) -> $inner {
                    self.0
                }
            }

            impl std::fmt::Debug for $name {
                fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    write!(f, "{}({:?})", stringify!($name), self.0)
                }
            }

            impl Serialize for $name {
                fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                    s.serialize_newtype_struct(stringify!($name), &self.0)
                }
            }

            impl<'de> Deserialize<'de> for $name {
                fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                    struct V;
                    impl<'de> serde::de::Visitor<'de> for V {
                        type Value = $name;
                        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                            write!(f, "{} of at most {} bytes", stringify!($name), $max)
                        }
                        fn visit_newtype_struct<D: serde::Deserializer<'de>>(
                            self,
                            d: D,
                        ) -> Result<$name, D::Error> {
                            let inner = <$inner as Deserialize>::deserialize(d)?;
                            $name::new(inner).map_err(serde::de::Error::custom)
                        }
                    }
                    d.deserialize_newtype_struct(stringify!($name), V)
                }
            }
        )*
        /// Every bounded type, for the manifest's limits table.
        pub const ALL_BOUNDS: &[BoundDescription] = &[$($name::DESCRIPTION),*];
    };
}

bounded_types! {
    /// Short human-readable label: a build name, a client name.
    Label: String, crate::limits::MAX_LABEL_LEN, "UTF-8 label";
    /// Human-readable text: an error message. Never carries secret material.
    Text: String, crate::limits::MAX_TEXT_LEN, "UTF-8 text";
    /// A participant's round-1 commitments (FROST `SigningCommitments` encoding). Public.
    CommitmentBytes: Vec<u8>, 256, "FROST SigningCommitments (public nonce commitments)";
    /// A FROST `SigningPackage` encoding: the message and every signer's commitments. Public.
    SigningPackageBytes: Vec<u8>, 64 * 1024, "FROST SigningPackage";
    /// A FROST `SignatureShare` encoding: one signer's round-2 output. Public.
    SignatureShareBytes: Vec<u8>, 128, "FROST SignatureShare";
    /// A FROST `PublicKeyPackage` encoding: group key and verifying shares. Public.
    PublicKeyPackageBytes: Vec<u8>, 64 * 1024, "FROST PublicKeyPackage";
    /// A set of participants, ascending, no duplicates (checked by the enclave).
    Signers: Vec<crate::ids::ParticipantId>, crate::limits::MAX_PARTICIPANTS as usize, "participant ids (count)";
    /// A host store record's body (public state; authenticated, not encrypted).
    RecordBody: Vec<u8>, 256 * 1024, "host store record body";
    /// Host store records, in chain order.
    StoreRecords: Vec<crate::protocol::StoreRecord>, 256, "host store records (count)";
    /// An enclave's P-256 identity public key, uncompressed SEC1 (65 bytes; checked by the enclave).
    IdentityKeyBytes: Vec<u8>, 65, "P-256 identity public key (SEC1 uncompressed)";
    /// A FROST DKG round-1 package (commitment and proof of knowledge). Public.
    DkgPackageBytes: Vec<u8>, 16 * 1024, "FROST DKG round-1 package";
    /// An encrypted, authenticated DKG round-2 package (only the recipient enclave can open it).
    DkgCiphertext: Vec<u8>, 1024, "AES-256-GCM ciphertext of a FROST DKG round-2 package";
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
    /// Signature shares by signer.
    /// An unhardened derivation path (steps below 2^31).
    DerivationSteps: Vec<u32>, crate::limits::MAX_DERIVATION_DEPTH, "derivation path (steps)";
    /// A policy's canonical text.
    PolicyText: String, 16 * 1024, "spending policy canonical text";
    /// A PSBT (BIP174 binary serialization).
    PsbtBytes: Vec<u8>, 512 * 1024, "PSBT (BIP174 serialization)";
    /// The outputs named in one audit record.
    AuditOutputs: Vec<crate::protocol::AuditOutput>, 64, "audit record outputs (count)";
    /// Audit records in one reply.
    AuditEntries: Vec<crate::protocol::AuditEntry>, 128, "audit records (count)";
    SignerShares: Vec<crate::protocol::SignerShare>, crate::limits::MAX_PARTICIPANTS as usize, "signature shares (count)";
    /// Preprocessed commitments in one reply.
    PreCommitments: Vec<crate::protocol::PreCommitment>, crate::limits::MAX_PREPROCESS, "preprocessed commitments (count)";
    /// One-request signings carried by one `SignBatch`.
    SignItems: Vec<crate::protocol::SignPreprocessed>, crate::limits::MAX_SIGN_BATCH, "one-request signings (count)";
    /// Their outcomes, in order.
    SignOutcomes: Vec<crate::protocol::SignOutcome>, crate::limits::MAX_SIGN_BATCH, "signing outcomes (count)";
    /// Session ids (sessions to close in one request).
    SessionIds: Vec<crate::ids::SessionId>, crate::limits::MAX_CLOSE_BATCH, "session ids (count)";
}

//! Length-bounded strings and byte strings for the boundary protocol.
//!
//! Invariant: a value of these types never exceeds its bound, whether built locally or decoded
//! from the wire; decode checks the bound before the value exists. Each type has its own serde
//! name, so the boundary manifest shows which bound applies to every field.

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

/// Defines bounded types and `$all`, their table for the manifest. Used here and by
/// `protocol::lists` (the bounded lists of protocol types, kept there so that this module does
/// not depend on the protocol).
macro_rules! bounded_types {
    ($all:ident; $($(#[$doc:meta])* $name:ident : $inner:ty, $max:expr, $meaning:expr;)*) => {
        $(
            $(#[$doc])*
            #[derive(Clone, PartialEq, Eq, Hash)]
            pub struct $name($inner);

            impl $name {
                /// The bound, in bytes.
                pub const MAX_LEN: usize = $max;
                /// This type's entry in the manifest's limits table.
                pub const DESCRIPTION: $crate::bounded::BoundDescription =
                    $crate::bounded::BoundDescription { name: stringify!($name), max_len: $max, meaning: $meaning };

                /// Builds the value, or says by how much it is too long.
                pub fn new(value: impl Into<$inner>) -> Result<Self, $crate::bounded::TooLong> {
                    let value = value.into();
                    if value.len() > $max {
                        return Err($crate::bounded::TooLong { name: stringify!($name), max_len: $max, len: value.len() });
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

            impl ::serde::Serialize for $name {
                fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                    s.serialize_newtype_struct(stringify!($name), &self.0)
                }
            }

            impl<'de> ::serde::Deserialize<'de> for $name {
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
                            let inner = <$inner as ::serde::Deserialize>::deserialize(d)?;
                            $name::new(inner).map_err(serde::de::Error::custom)
                        }
                    }
                    d.deserialize_newtype_struct(stringify!($name), V)
                }
            }
        )*
        /// Every bounded type defined here, for the manifest's limits table.
        pub const $all: &[$crate::bounded::BoundDescription] = &[$($name::DESCRIPTION),*];
    };
}
pub(crate) use bounded_types;

bounded_types! {
    ALL_BOUNDS;
    /// Short human-readable label: a build name, a client name.
    Label: String, crate::limits::MAX_LABEL_LEN, "UTF-8 label";
    /// Human-readable text: an error message. Never carries secret material.
    Text: String, crate::limits::MAX_TEXT_LEN, "UTF-8 text";
    /// A signing service client's request id (its characters checked where it is used:
    /// [`crate::limits::request_id_valid`]).
    RequestName: String, crate::limits::MAX_REQUEST_ID_LEN, "request id";
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
    /// An enclave's P-256 identity public key, uncompressed SEC1 (65 bytes; checked by the enclave).
    IdentityKeyBytes: Vec<u8>, 65, "P-256 identity public key (SEC1 uncompressed)";
    /// A TEE attestation document (an AWS Nitro Enclaves COSE_Sign1). Public.
    AttestationDocBytes: Vec<u8>, 16 * 1024, "TEE attestation document";
    /// An enclave's per-boot attested public key, uncompressed SEC1 (P-256; lives only in the
    /// enclave's memory and dies with the process).
    BootKeyBytes: Vec<u8>, 65, "per-boot public key (SEC1 uncompressed)";
    /// A FROST DKG round-1 package (commitment and proof of knowledge). Public.
    DkgPackageBytes: Vec<u8>, 16 * 1024, "FROST DKG round-1 package";
    /// An encrypted, authenticated DKG round-2 package (only the recipient enclave can open it).
    DkgCiphertext: Vec<u8>, 1024, "AES-256-GCM ciphertext of a FROST DKG round-2 package";
    /// An unhardened derivation path (steps below 2^31).
    DerivationSteps: Vec<u32>, crate::limits::MAX_DERIVATION_DEPTH, "derivation path (steps)";
    /// A policy's canonical text.
    PolicyText: String, 16 * 1024, "spending policy canonical text";
    /// A PSBT (BIP174 binary serialization).
    PsbtBytes: Vec<u8>, 512 * 1024, "PSBT (BIP174 serialization)";
    /// Session ids (sessions to close in one request).
    SessionIds: Vec<crate::ids::SessionId>, crate::limits::MAX_CLOSE_BATCH, "session ids (count)";
}

//! Identifiers with exactly one canonical form each.
//!
//! Invariant: two spellings of one id parse to equal values. Byte ids travel as fixed-size byte
//! arrays (one encoding); their text form is lowercase hex, and parsing accepts either case, so a
//! re-cased retry can never name a different marker. Participant ids are decimal, leading zeros
//! are dropped, zero and values above [`MAX_PARTICIPANTS`] are rejected.

use crate::limits::MAX_PARTICIPANTS;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Why a textual id was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdParseError {
    /// Which kind of id.
    pub kind: &'static str,
    /// What was wrong.
    pub reason: &'static str,
}

impl fmt::Display for IdParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}: {}", self.kind, self.reason)
    }
}

impl std::error::Error for IdParseError {}

fn parse_hex<const N: usize>(kind: &'static str, s: &str) -> Result<[u8; N], IdParseError> {
    if s.len() != 2 * N {
        return Err(IdParseError { kind, reason: "wrong length" });
    }
    let mut out = [0u8; N];
    // `hex` accepts both cases; the canonical (Display) form is lowercase.
    hex::decode_to_slice(s, &mut out).map_err(|_| IdParseError { kind, reason: "not hex" })?;
    Ok(out)
}

macro_rules! byte_id {
    ($(#[$doc:meta])* $name:ident, $len:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name([u8; $len]);

        impl $name {
            /// Length in bytes.
            pub const LEN: usize = $len;

            /// Wraps raw bytes (binary ids have one encoding already).
            pub const fn from_bytes(bytes: [u8; $len]) -> Self {
                Self(bytes)
            }

            /// The raw bytes.
            pub const fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self)
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;
            fn from_str(s: &str) -> Result<Self, IdParseError> {
                parse_hex::<$len>(stringify!($name), s).map(Self)
            }
        }
    };
}

byte_id!(
    /// A group key: the x-only (BIP340) internal key of the group, 32 bytes.
    KeyId,
    32
);
byte_id!(
    /// A signing session: one message under one key with one Taproot mode. 16 bytes.
    SessionId,
    16
);
byte_id!(
    /// One ROAST attempt within a session: one exact signer set. 16 bytes.
    AttemptId,
    16
);
byte_id!(
    /// One distributed key generation run. 16 bytes.
    DkgId,
    16
);
byte_id!(
    /// One preprocessed commitment an enclave issued: names its live nonce pair inside the
    /// enclave (the pair itself never leaves). Random, 16 bytes.
    CommitmentId,
    16
);

/// A FROST participant identifier, 1..=[`MAX_PARTICIPANTS`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ParticipantId(u16);

impl ParticipantId {
    /// Validates the number.
    pub fn new(value: u16) -> Result<Self, IdParseError> {
        const KIND: &str = "ParticipantId";
        match value {
            0 => Err(IdParseError { kind: KIND, reason: "zero is not a participant" }),
            v if v > MAX_PARTICIPANTS => Err(IdParseError { kind: KIND, reason: "above the participant limit" }),
            v => Ok(Self(v)),
        }
    }

    /// The number.
    pub const fn get(self) -> u16 {
        self.0
    }
}

impl fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ParticipantId({})", self.0)
    }
}

impl FromStr for ParticipantId {
    type Err = IdParseError;
    fn from_str(s: &str) -> Result<Self, IdParseError> {
        const KIND: &str = "ParticipantId";
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(IdParseError { kind: KIND, reason: "not a decimal number" });
        }
        let digits = s.trim_start_matches('0');
        if digits.len() > 5 {
            return Err(IdParseError { kind: KIND, reason: "above the participant limit" });
        }
        let value: u32 = if digits.is_empty() {
            0
        } else {
            digits.parse().map_err(|_| IdParseError { kind: KIND, reason: "not a decimal number" })?
        };
        let value =
            u16::try_from(value).map_err(|_| IdParseError { kind: KIND, reason: "above the participant limit" })?;
        Self::new(value)
    }
}

impl Serialize for ParticipantId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_newtype_struct("ParticipantId", &self.0)
    }
}

impl<'de> Deserialize<'de> for ParticipantId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ParticipantId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a participant id in 1..={MAX_PARTICIPANTS}")
            }
            fn visit_newtype_struct<D: serde::Deserializer<'de>>(self, d: D) -> Result<ParticipantId, D::Error> {
                ParticipantId::new(u16::deserialize(d)?).map_err(serde::de::Error::custom)
            }
        }
        d.deserialize_newtype_struct("ParticipantId", V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_ids_have_one_canonical_form() {
        let lower = "00112233445566778899aabbccddeeff";
        let upper = "00112233445566778899AABBCCDDEEFF";
        let mixed = "00112233445566778899aAbBcCdDeEfF";
        let a: AttemptId = lower.parse().expect("lower");
        assert_eq!(a, upper.parse().expect("upper"));
        assert_eq!(a, mixed.parse().expect("mixed"));
        assert_eq!(a.to_string(), lower);
        assert_eq!(SessionId::from_str(upper).expect("upper").to_string(), lower);
    }

    #[test]
    fn hex_ids_reject_other_lengths_and_non_hex() {
        for bad in [
            "",
            "00",
            "0x00112233445566778899aabbccddeeff",
            " 00112233445566778899aabbccddeeff",
            "00112233445566778899aabbccddeefg",
        ] {
            assert!(AttemptId::from_str(bad).is_err(), "{bad:?} accepted");
        }
        assert!(KeyId::from_str(&"ab".repeat(31)).is_err());
        assert!(KeyId::from_str(&"AB".repeat(32)).is_ok());
    }

    #[test]
    fn participant_ids_canonicalize_and_bound() {
        assert_eq!(ParticipantId::from_str("007").expect("007"), ParticipantId::new(7).expect("7"));
        assert_eq!(ParticipantId::from_str("007").expect("007").to_string(), "7");
        assert_eq!(ParticipantId::from_str("100").expect("100").get(), 100);
        for bad in ["0", "000", "101", "65536", "99999999999", "-1", "+1", "1 ", "", "0x1", "１"] {
            assert!(ParticipantId::from_str(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn participant_id_decode_rejects_zero_and_out_of_range() {
        let zero = postcard::to_stdvec(&0u16).expect("encode");
        assert!(postcard::from_bytes::<ParticipantId>(&zero).is_err());
        let big = postcard::to_stdvec(&(MAX_PARTICIPANTS + 1)).expect("encode");
        assert!(postcard::from_bytes::<ParticipantId>(&big).is_err());
        let ok = postcard::to_stdvec(&ParticipantId::new(3).expect("3")).expect("encode");
        assert_eq!(postcard::from_bytes::<ParticipantId>(&ok).expect("decode").get(), 3);
    }
}

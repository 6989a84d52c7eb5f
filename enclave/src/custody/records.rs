//! Data objects this enclave keeps on its token besides keys: the recorded custody profile and,
//! under the profiles whose token cannot hold them, the sealed root and the sealed identity key.
//!
//! Invariants: every record is a private, non-modifiable token data object (reading it needs the
//! user PIN); a record that is public or malformed is a policy violation, never used. A sealed
//! record may exist twice only during a key-encryption-key rotation (one copy under each key).

use super::profile::Profile;
use super::token::{hsm_err, Hsm};
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use frostgate_common::error::{Error, ErrorCode};

/// A kind of record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// The custody profile chosen at `token init`.
    Profile,
    /// `aes_only`: the root, sealed under the key-encryption key.
    Root,
    /// `cbc_hmac`, `aes_only`: the identity private key, sealed like a share.
    SealedIdentity,
}

impl Record {
    /// The object label under `prefix`.
    pub fn label(self, prefix: &str) -> String {
        match self {
            Record::Profile => format!("{prefix}-profile"),
            Record::Root => format!("{prefix}-root"),
            Record::SealedIdentity => format!("{prefix}-identity-sealed"),
        }
    }

    /// How many copies may exist at once.
    fn most(self) -> usize {
        match self {
            Record::Profile => 1,
            Record::Root | Record::SealedIdentity => 2,
        }
    }
}

const PROFILE_PREFIX: &[u8] = b"frostgate/custody-profile/v1:";

/// Every copy of `record` (handle, value), each checked to be private.
pub fn read(s: &Hsm<'_>, prefix: &str, record: Record) -> Result<Vec<(ObjectHandle, Vec<u8>)>, Error> {
    let label = record.label(prefix);
    let handles = s
        .find_objects(&[Attribute::Class(ObjectClass::DATA), Attribute::Label(label.clone().into_bytes())])
        .map_err(|e| hsm_err("C_FindObjects(record)", e))?;
    if handles.len() > record.most() {
        return Err(Error::new(
            ErrorCode::HsmObjectPolicyViolation,
            format!("{} objects carry the label {label}; at most {} allowed", handles.len(), record.most()),
        ));
    }
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        let attrs = s
            .get_attributes(h, &[AttributeType::Private, AttributeType::Value])
            .map_err(|e| hsm_err("C_GetAttributeValue(record)", e))?;
        if !attrs.iter().any(|a| matches!(a, Attribute::Private(true))) {
            return Err(Error::new(ErrorCode::HsmObjectPolicyViolation, format!("{label} is not private")));
        }
        let value = attrs.into_iter().find_map(|a| if let Attribute::Value(v) = a { Some(v) } else { None });
        out.push((h, value.unwrap_or_default()));
    }
    Ok(out)
}

/// Creates a copy of `record` holding `value`.
pub fn create(s: &Hsm<'_>, prefix: &str, record: Record, value: Vec<u8>) -> Result<ObjectHandle, Error> {
    s.create_object(&[
        Attribute::Class(ObjectClass::DATA),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Modifiable(false),
        Attribute::Label(record.label(prefix).into_bytes()),
        Attribute::Application(b"frostgate".to_vec()),
        Attribute::Value(value),
    ])
    .map_err(|e| hsm_err("C_CreateObject(record)", e))
}

/// The recorded profile. A token without the record was initialized before profiles existed,
/// when every token ran `full`.
pub fn profile(s: &Hsm<'_>, prefix: &str) -> Result<Profile, Error> {
    let found = read(s, prefix, Record::Profile)?;
    let Some((_, value)) = found.first() else { return Ok(Profile::Full) };
    value
        .strip_prefix(PROFILE_PREFIX)
        .and_then(|name| std::str::from_utf8(name).ok())
        .and_then(Profile::from_name)
        .ok_or_else(|| {
            Error::new(ErrorCode::HsmObjectPolicyViolation, format!("{} is malformed", Record::Profile.label(prefix)))
        })
}

/// Records `profile` (at `token init`).
pub fn create_profile(s: &Hsm<'_>, prefix: &str, profile: Profile) -> Result<(), Error> {
    let mut value = PROFILE_PREFIX.to_vec();
    value.extend_from_slice(profile.name().as_bytes());
    create(s, prefix, Record::Profile, value).map(|_| ())
}

/// Every record object of this enclave (for `token init`'s "already there" check).
pub fn existing(s: &Hsm<'_>, prefix: &str) -> Result<Vec<String>, Error> {
    let mut names = Vec::new();
    for r in [Record::Profile, Record::Root, Record::SealedIdentity] {
        let label = r.label(prefix);
        let n = s
            .find_objects(&[Attribute::Class(ObjectClass::DATA), Attribute::Label(label.clone().into_bytes())])
            .map_err(|e| hsm_err("C_FindObjects(record)", e))?
            .len();
        if n > 0 {
            names.push(label);
        }
    }
    Ok(names)
}

//! The chain head anchored in the HSM: a private token data object `<prefix>-store-anchor`
//! holding `version (u64 BE) | mac (32) | tag (32)`, where
//! `tag = HMAC-SHA256(K_s, "frostgate/anchor/v1" | version | mac)` under the store key.
//!
//! Invariants:
//! - `token init` creates the anchor (the empty head); from then on the token always holds one.
//!   A missing anchor is `store_anchor_missing`, never "an empty store": otherwise deleting the
//!   object would let any older or truncated store "extend" it.
//! - Every anchor object must be private, well formed and carry a tag that verifies under this
//!   token's store key; anything else is `store_anchor_invalid` (a forged or transplanted object).
//! - SoftHSM cannot change a data object's value, so an update creates the new object and then
//!   destroys every older one; a reader takes the highest version and destroys nothing.
//! - The enclave is the token's only writer, so it remembers the anchor objects it made
//!   ([`Cache`]): an update is then one create and one destroy (two PKCS#11 operations) instead of
//!   a search and a read of every object first. Any failure forgets them (the next update searches
//!   again); boot and every load read and verify the token's objects as before.

use crate::custody::token::{hsm_err, Hsm};
use crate::custody::Custody;
use crate::store::chain::{Head, StoreKey};
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use frostgate_common::error::{Error, ErrorCode};

/// Bytes of an anchor object's value.
const VALUE_LEN: usize = 8 + 32 + 32;

/// The anchor object's label.
pub fn label(custody: &Custody) -> String {
    format!("{}-store-anchor", custody.label_prefix())
}

fn invalid(msg: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::StoreAnchorInvalid, msg)
}

fn find(s: &Hsm<'_>, label: &str, key: &StoreKey) -> Result<Vec<(ObjectHandle, Head)>, Error> {
    let handles = s
        .find_objects(&[Attribute::Class(ObjectClass::DATA), Attribute::Label(label.as_bytes().to_vec())])
        .map_err(|e| hsm_err("C_FindObjects(anchor)", e))?;
    let mut out = Vec::new();
    for h in handles {
        let attrs = s
            .get_attributes(h, &[AttributeType::Value, AttributeType::Private])
            .map_err(|e| hsm_err("C_GetAttributeValue(anchor)", e))?;
        let private = attrs.iter().any(|a| matches!(a, Attribute::Private(true)));
        if !private {
            return Err(invalid("an anchor object is not private (not created by this enclave)"));
        }
        let value = attrs.into_iter().find_map(|a| if let Attribute::Value(v) = a { Some(v) } else { None });
        let head = value
            .filter(|v| v.len() == VALUE_LEN)
            .and_then(|v| {
                let version = u64::from_be_bytes(v[..8].try_into().ok()?);
                let mac: [u8; 32] = v[8..40].try_into().ok()?;
                let tag: [u8; 32] = v[40..].try_into().ok()?;
                let head = Head { version, mac };
                key.verify_anchor_tag(head, &tag).then_some(head)
            })
            .ok_or_else(|| invalid("an anchor object is malformed or its tag does not verify under the store key"))?;
        out.push((h, head));
    }
    Ok(out)
}

/// Reads the anchor: the highest version. Fails closed when there is none. Read-only: a
/// superseded object left by an interrupted update is removed by the next [`update`], never here
/// (a reader racing an update must not destroy the object the update is about to replace).
pub fn read(custody: &Custody, key: &StoreKey) -> Result<Head, Error> {
    let label = label(custody);
    custody.token().with_session(|s| {
        let found = find(s, &label, key)?;
        found.into_iter().map(|(_, h)| h).max_by_key(|h| h.version).ok_or_else(|| {
            Error::new(
                ErrorCode::StoreAnchorMissing,
                format!("the HSM holds no {label} object; the store cannot be checked for rollback"),
            )
        })
    })
}

fn create(s: &Hsm<'_>, label: &str, key: &StoreKey, head: Head) -> Result<ObjectHandle, Error> {
    let mut value = Vec::with_capacity(VALUE_LEN);
    value.extend_from_slice(&head.version.to_be_bytes());
    value.extend_from_slice(&head.mac);
    value.extend_from_slice(&key.anchor_tag(head));
    s.create_object(&[
        Attribute::Class(ObjectClass::DATA),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Modifiable(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Application(b"frostgate".to_vec()),
        Attribute::Value(value),
    ])
    .map_err(|e| hsm_err("C_CreateObject(anchor)", e))
}

/// The anchor objects this enclave made and has not destroyed (`None`: unknown, search).
#[derive(Debug, Default)]
pub struct Cache(std::sync::Mutex<Option<Vec<ObjectHandle>>>);

/// Advances the anchor to `head`: create the new object, then destroy the old ones (those
/// `cache` remembers, or those a search finds).
pub fn update(custody: &Custody, key: &StoreKey, head: Head, cache: &Cache) -> Result<(), Error> {
    let label = label(custody);
    let mut known = cache.0.lock().unwrap_or_else(|p| p.into_inner());
    let remembered = known.take();
    let made = custody.token().with_session(|s| {
        let old = match remembered {
            Some(handles) => handles,
            None => find(s, &label, key)?.into_iter().map(|(h, _)| h).collect(),
        };
        let new = create(s, &label, key, head)?;
        for h in old {
            s.destroy_object(h).map_err(|e| hsm_err("C_DestroyObject(anchor)", e))?;
        }
        Ok(new)
    })?;
    *known = Some(vec![made]);
    Ok(())
}

/// `token init`: the token's objects, then the store anchor at the empty head (from here on a
/// missing anchor is an attack). Returns the new identity public key and the profile chosen.
pub fn init_token(
    config: &crate::custody::config::CustodyConfig,
) -> Result<(Vec<u8>, crate::custody::profile::Profile), Error> {
    Custody::init_then(config, |custody| {
        let key = StoreKey::new(custody.derive_store_key()?);
        create_genesis(custody, &key)
    })
}

/// `token init`: replaces any anchor object by the empty head's. Only for freshly created token
/// objects (a new MAC root makes every earlier record unverifiable anyway).
pub fn create_genesis(custody: &Custody, key: &StoreKey) -> Result<(), Error> {
    let label = label(custody);
    custody.token().with_session(|s| {
        let old = s
            .find_objects(&[Attribute::Class(ObjectClass::DATA), Attribute::Label(label.as_bytes().to_vec())])
            .map_err(|e| hsm_err("C_FindObjects(anchor)", e))?;
        for h in old {
            s.destroy_object(h).map_err(|e| hsm_err("C_DestroyObject(anchor)", e))?;
        }
        create(s, &label, key, Head::EMPTY).map(|_| ())
    })
}

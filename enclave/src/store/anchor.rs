//! The chain head anchored in the HSM: a private token data object `<prefix>-store-anchor`
//! holding `version (u64 BE) | mac (32)`.
//!
//! SoftHSM cannot change a data object's value, so an update creates the new object and then
//! destroys the old one; a reader takes the highest version and removes the rest (finishing an
//! update interrupted between the two steps).

use crate::custody::token::hsm_err;
use crate::custody::Custody;
use crate::store::chain::Head;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use frostgate_common::error::{Error, ErrorCode};

/// The anchor object's label.
pub fn label(custody: &Custody) -> String {
    format!("{}-store-anchor", custody.label_prefix())
}

fn find(s: &Session, label: &str) -> Result<Vec<(ObjectHandle, Head)>, Error> {
    let handles = s
        .find_objects(&[Attribute::Class(ObjectClass::DATA), Attribute::Label(label.as_bytes().to_vec())])
        .map_err(|e| hsm_err("C_FindObjects(anchor)", e))?;
    let mut out = Vec::new();
    for h in handles {
        let attrs =
            s.get_attributes(h, &[AttributeType::Value]).map_err(|e| hsm_err("C_GetAttributeValue(anchor)", e))?;
        let value = attrs.into_iter().find_map(|a| if let Attribute::Value(v) = a { Some(v) } else { None });
        let head = value
            .filter(|v| v.len() == 40)
            .map(|v| {
                let mut version = [0u8; 8];
                version.copy_from_slice(&v[..8]);
                let mut mac = [0u8; 32];
                mac.copy_from_slice(&v[8..]);
                Head { version: u64::from_be_bytes(version), mac }
            })
            .ok_or_else(|| Error::new(ErrorCode::StoreTampered, "the HSM anchor object is malformed"))?;
        out.push((h, head));
    }
    Ok(out)
}

/// Reads the anchor (the empty head if none exists), removing superseded objects.
pub fn read(custody: &Custody) -> Result<Head, Error> {
    let label = label(custody);
    custody.token().with_session(|s| {
        let mut found = find(s, &label)?;
        found.sort_by_key(|(_, h)| h.version);
        let Some(&(_, newest)) = found.last() else { return Ok(Head::EMPTY) };
        for (h, _) in &found[..found.len() - 1] {
            s.destroy_object(*h).map_err(|e| hsm_err("C_DestroyObject(anchor)", e))?;
        }
        Ok(newest)
    })
}

/// Advances the anchor to `head`: create the new object, then destroy the old ones.
pub fn update(custody: &Custody, head: Head) -> Result<(), Error> {
    let label = label(custody);
    custody.token().with_session(|s| {
        let old = find(s, &label)?;
        let mut value = head.version.to_be_bytes().to_vec();
        value.extend_from_slice(&head.mac);
        s.create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Modifiable(false),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Application(b"frostgate".to_vec()),
            Attribute::Value(value),
        ])
        .map_err(|e| hsm_err("C_CreateObject(anchor)", e))?;
        for (h, _) in old {
            s.destroy_object(h).map_err(|e| hsm_err("C_DestroyObject(anchor)", e))?;
        }
        Ok(())
    })
}

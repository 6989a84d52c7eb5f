//! The chain head anchored in the HSM.
//!
//! **Form.** Private token data objects ("slots") whose `CKA_APPLICATION` is
//! `<prefix>-store-anchor` and whose `CKA_LABEL` holds a head: `anchor/v1:` (a slot held alone)
//! or `anchor/v1/paired:` (a slot with a partner), then the hex of
//! `version (u64 BE) | mac (32) | tag (32)`, where
//! `tag = HMAC-SHA256(K_s, "frostgate/anchor/v1" or "frostgate/anchor/v1/paired" | version | mac)`
//! under the store key. The head is in the label because the label is the one attribute of a data
//! object PKCS#11 lets an application change (`C_SetAttributeValue`; SoftHSM refuses to change
//! `CKA_VALUE`): an update rewrites one slot in place, one PKCS#11 operation (SoftHSM 2.6:
//! 0.27 ms, against 3.2 ms to create an object and destroy the old one).
//!
//! Invariants:
//! - `token init` creates the anchor (the empty head); from then on the token always holds one.
//!   No anchor is `store_anchor_missing`, never "an empty store": otherwise deleting the objects
//!   would let any older or truncated store "extend" it.
//! - Every anchor object must be private and every head it holds must carry a tag that verifies
//!   under this token's store key; anything else is `store_anchor_invalid` (a forged or
//!   transplanted object). A reader takes the highest version and changes nothing.
//! - A paired slot's partner is paired too, and an update in place rewrites the slot whose
//!   partner holds the anchored head (the one the update replaces), never a slot it could not
//!   read. A crash can therefore tear only a slot being given a head whose share has not left (a
//!   share leaves after its update returns), while the store holds that whole commit already.
//! - So a reader passes over a slot it cannot read or parse (SoftHSM hides a torn object
//!   altogether), but a newest head that is paired and has no readable older slot beside it is
//!   [`Anchor::complete`] `false`: it is adopted only by a store that extends it by whole commits
//!   ([`Anchor::confirm`]). Deleting or damaging the newest slot therefore never lets a store
//!   behind it pass, nor one cut inside its commit: that needs a copy of an older head, as a
//!   single object did.
//! - Otherwise (fewer than two slots, an unreadable or unexpected slot, a first-form object, and
//!   always when a load finishes an interrupted update, whose store may end inside a commit) an
//!   update creates a paired slot holding the anchored head (unless one does), then the new
//!   head's paired slot, and only then destroys every other object: no moment of it leaves the
//!   anchor incomplete. A token that refuses the in-place write gets one slot held alone per
//!   update, created before the old are destroyed. First-form objects (label
//!   `<prefix>-store-anchor`, the head in `CKA_VALUE`, tagged as held alone) are read as anchors
//!   and destroyed by the next update.
//! - The enclave is the token's only writer, so it remembers its slots and their heads
//!   ([`Cache`]); any failure forgets them (the next update searches again); boot and every load
//!   read and verify the token's objects.

use crate::custody::token::{hsm_err, Hsm};
use crate::custody::Custody;
use crate::store::chain::{Head, StoreKey};
use cryptoki::error::RvError;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use frostgate_common::error::{Error, ErrorCode};

/// Bytes of a head with its tag.
const VALUE_LEN: usize = 8 + 32 + 32;

/// What the label of a slot held alone starts with.
const ALONE: &str = "anchor/v1:";
/// What the label of a slot with a partner starts with.
const PAIRED: &str = "anchor/v1/paired:";

/// The slots' `CKA_APPLICATION`, and the first form's label.
pub fn label(custody: &Custody) -> String {
    format!("{}-store-anchor", custody.label_prefix())
}

fn invalid(msg: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::StoreAnchorInvalid, msg)
}

/// `version | mac | tag`.
fn encode(key: &StoreKey, head: Head, paired: bool) -> Vec<u8> {
    let mut value = Vec::with_capacity(VALUE_LEN);
    value.extend_from_slice(&head.version.to_be_bytes());
    value.extend_from_slice(&head.mac);
    value.extend_from_slice(&key.anchor_tag(head, paired));
    value
}

/// A head with its tag: `Ok(None)` when it is not `VALUE_LEN` bytes, an error when its tag does
/// not verify.
fn decode(key: &StoreKey, v: &[u8], paired: bool) -> Result<Option<Head>, Error> {
    let Ok(v) = <[u8; VALUE_LEN]>::try_from(v) else { return Ok(None) };
    let (mut version, mut mac, mut tag) = ([0u8; 8], [0u8; 32], [0u8; 32]);
    version.copy_from_slice(&v[..8]);
    mac.copy_from_slice(&v[8..40]);
    tag.copy_from_slice(&v[40..]);
    let head = Head { version: u64::from_be_bytes(version), mac };
    if !key.verify_anchor_tag(head, paired, &tag) {
        return Err(invalid("an anchor's tag does not verify under the store key"));
    }
    Ok(Some(head))
}

/// The label of a slot holding `head`.
pub fn slot_label(key: &StoreKey, head: Head, paired: bool) -> Vec<u8> {
    let prefix = if paired { PAIRED } else { ALONE };
    format!("{prefix}{}", hex::encode(encode(key, head, paired))).into_bytes()
}

/// A slot's head: `Ok(None)` when the label is not a slot's (torn), an error when it is one
/// whose tag does not verify.
fn parse(key: &StoreKey, label: &[u8]) -> Result<Option<Slot>, Error> {
    for (prefix, paired) in [(PAIRED, true), (ALONE, false)] {
        if let Some(hex) = label.strip_prefix(prefix.as_bytes()) {
            let Ok(bytes) = hex::decode(hex) else { return Ok(None) };
            return Ok(decode(key, &bytes, paired)?.map(|head| Slot { head, paired }));
        }
    }
    Ok(None)
}

/// What a readable slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    head: Head,
    paired: bool,
}

/// The token's anchor objects.
#[derive(Debug, Clone, Default)]
struct Found {
    /// Slots and what each holds (`None`: unreadable or not a slot's label, e.g. torn by a crash).
    slots: Vec<(ObjectHandle, Option<Slot>)>,
    /// Objects of the first form and their heads.
    legacy: Vec<(ObjectHandle, Head)>,
}

impl Found {
    fn readable(&self) -> impl Iterator<Item = (ObjectHandle, Slot)> + '_ {
        self.slots.iter().filter_map(|(h, s)| s.map(|s| (*h, s)))
    }

    /// The highest head; complete when an object holding it is alone (or of the first form), or
    /// a readable slot holds an older head (its partner).
    fn anchor(&self) -> Option<Anchor> {
        let heads = self.readable().map(|(_, s)| (s.head, s.paired));
        let all: Vec<(Head, bool)> = heads.chain(self.legacy.iter().map(|(_, h)| (*h, false))).collect();
        let head = all.iter().map(|(h, _)| *h).max_by_key(|h| h.version)?;
        let alone = all.iter().any(|(h, paired)| h.version == head.version && !paired);
        let partner = self.readable().any(|(_, s)| s.head.version < head.version);
        Some(Anchor { head, complete: alone || partner })
    }
}

/// The anchor as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anchor {
    /// The highest head of every readable anchor object.
    pub head: Head,
    /// `false`: the head is a paired slot's and no readable older slot was found (its partner
    /// was deleted, damaged, or torn by a crash while being given a newer head).
    pub complete: bool,
}

impl Anchor {
    /// Whether a store may be adopted against this anchor: `extends_by_commits` when it is
    /// ahead of the anchor (see `chain::check_against_anchor`) and ends on a commit boundary. An
    /// incomplete anchor is adopted only by such a store, the one case a crash leaves.
    pub fn confirm(&self, extends_by_commits: bool) -> Result<(), Error> {
        if self.complete || extends_by_commits {
            return Ok(());
        }
        Err(invalid(format!(
            "the store anchor's newest slot is missing or unreadable and the store does not extend the other \
             (version {}) by whole commits: a store behind the missing slot cannot be told apart",
            self.head.version
        )))
    }
}

/// The data objects matching `which`, each checked to be private (else `store_anchor_invalid`:
/// not created by this enclave).
fn ours(s: &Hsm<'_>, which: Attribute) -> Result<Vec<ObjectHandle>, Error> {
    let found = s
        .find_objects(&[Attribute::Class(ObjectClass::DATA), which])
        .map_err(|e| hsm_err("C_FindObjects(anchor)", e))?;
    for &h in &found {
        let attrs =
            s.get_attributes(h, &[AttributeType::Private]).map_err(|e| hsm_err("C_GetAttributeValue(anchor)", e))?;
        if !attrs.iter().any(|a| matches!(a, Attribute::Private(true))) {
            return Err(invalid("an anchor object is not private (not created by this enclave)"));
        }
    }
    Ok(found)
}

fn find(s: &Hsm<'_>, label: &str, key: &StoreKey) -> Result<Found, Error> {
    let mut found = Found::default();
    for h in ours(s, Attribute::Application(label.as_bytes().to_vec()))? {
        let slot = match s.get_attributes(h, &[AttributeType::Label]) {
            Ok(attrs) => match attrs.into_iter().find_map(|a| if let Attribute::Label(l) = a { Some(l) } else { None })
            {
                Some(l) => parse(key, &l)?,
                None => None,
            },
            Err(e) => {
                tracing::warn!("an anchor slot cannot be read ({e}): passed over");
                None
            }
        };
        found.slots.push((h, slot));
    }
    for h in ours(s, Attribute::Label(label.as_bytes().to_vec()))? {
        let attrs =
            s.get_attributes(h, &[AttributeType::Value]).map_err(|e| hsm_err("C_GetAttributeValue(anchor)", e))?;
        let value = attrs.into_iter().find_map(|a| if let Attribute::Value(v) = a { Some(v) } else { None });
        let head = decode(key, value.as_deref().unwrap_or_default(), false)?
            .ok_or_else(|| invalid("an anchor object is malformed"))?;
        found.legacy.push((h, head));
    }
    Ok(found)
}

/// Reads the anchor: the highest version. Fails closed when there is none. Read-only: a
/// superseded object left by an interrupted update is removed by the next [`update`], never here
/// (a reader racing an update must not destroy the object the update is about to replace).
pub fn read(custody: &Custody, key: &StoreKey) -> Result<Anchor, Error> {
    let label = label(custody);
    custody.token().with_session(|s| {
        let found = find(s, &label, key)?;
        found.anchor().ok_or_else(|| {
            if found.slots.is_empty() {
                Error::new(
                    ErrorCode::StoreAnchorMissing,
                    format!("the HSM holds no {label} object; the store cannot be checked for rollback"),
                )
            } else {
                invalid(format!("no {label} object holds a readable head"))
            }
        })
    })
}

fn create(s: &Hsm<'_>, label: &str, key: &StoreKey, head: Head, paired: bool) -> Result<ObjectHandle, Error> {
    s.create_object(&[
        Attribute::Class(ObjectClass::DATA),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Modifiable(true),
        Attribute::Application(label.as_bytes().to_vec()),
        Attribute::Label(slot_label(key, head, paired)),
        // Unused (the head is in the label), but tpm2-pkcs11 creates no data object without one.
        Attribute::Value(b"frostgate store anchor slot".to_vec()),
    ])
    .map_err(|e| hsm_err("C_CreateObject(anchor)", e))
}

/// Whether the token writes a slot in place.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum InPlace {
    /// Not refused yet in this process.
    #[default]
    Allowed,
    /// It refused: every update creates and destroys.
    Refused,
}

/// What an update knows: the slots this enclave made (`None`: unknown, search) and whether the
/// token writes in place.
#[derive(Debug, Default)]
pub struct Cache(std::sync::Mutex<(Option<Found>, InPlace)>);

/// Whether `e` says the token will not change the label (as opposed to a failure of the token).
fn refuses_in_place(e: &cryptoki::error::Error) -> bool {
    matches!(
        e,
        cryptoki::error::Error::Pkcs11(
            RvError::AttributeReadOnly
                | RvError::ActionProhibited
                | RvError::AttributeTypeInvalid
                | RvError::AttributeValueInvalid
                | RvError::FunctionNotSupported
                | RvError::TemplateInconsistent,
            _
        )
    )
}

/// Of exactly two slots, the one to rewrite: the other is paired and holds `anchored`.
fn in_place_target(found: &Found, anchored: Head) -> Option<usize> {
    if !found.legacy.is_empty() || found.slots.len() != 2 {
        return None;
    }
    let holds = |i: usize| found.slots[i].1 == Some(Slot { head: anchored, paired: true });
    if holds(1) {
        Some(0)
    } else if holds(0) {
        Some(1)
    } else {
        None
    }
}

/// Advances the anchor from `anchored` (the head it holds now) to `head`, a commit's end the
/// store holds whole: in place when the slots allow it.
pub fn update(custody: &Custody, key: &StoreKey, anchored: Head, head: Head, cache: &Cache) -> Result<(), Error> {
    write(custody, key, anchored, head, cache, true)
}

/// Advances the anchor from `anchored` to the head of a store found ahead of it at a load, which
/// may end inside a commit (a host that died between a commit's chunks): never in place, so no
/// crash leaves the anchor incomplete (a store that does not end on a commit would not pass).
pub fn finish(custody: &Custody, key: &StoreKey, anchored: Head, head: Head, cache: &Cache) -> Result<(), Error> {
    write(custody, key, anchored, head, cache, false)
}

fn write(
    custody: &Custody,
    key: &StoreKey,
    anchored: Head,
    head: Head,
    cache: &Cache,
    rewrite: bool,
) -> Result<(), Error> {
    let label = label(custody);
    let mut guard = cache.0.lock().unwrap_or_else(|p| p.into_inner());
    let (remembered, mut in_place) = (guard.0.take(), guard.1);
    let result = custody.token().with_session(|s| {
        let mut found = match remembered {
            Some(found) => found,
            None => find(s, &label, key)?,
        };
        if rewrite && in_place == InPlace::Allowed {
            if let Some(target) = in_place_target(&found, anchored) {
                match s.update_attributes(found.slots[target].0, &[Attribute::Label(slot_label(key, head, true))]) {
                    Ok(()) => {
                        found.slots[target].1 = Some(Slot { head, paired: true });
                        return Ok(found);
                    }
                    Err(e) if refuses_in_place(&e) => {
                        tracing::info!("the token does not rewrite the anchor in place ({e}): create and destroy");
                        in_place = InPlace::Refused;
                    }
                    Err(e) => return Err(hsm_err("C_SetAttributeValue(anchor)", e)),
                }
            }
        }
        // Create first, destroy last: no moment leaves the anchor incomplete.
        let old: Vec<ObjectHandle> =
            found.slots.iter().map(|(h, _)| *h).chain(found.legacy.iter().map(|(h, _)| *h)).collect();
        let mut slots = Vec::with_capacity(2);
        if in_place == InPlace::Allowed {
            // The new head's partner: a paired slot holding the anchored head (made if none does).
            let partner = Slot { head: anchored, paired: true };
            let kept = match found.readable().find(|(_, slot)| *slot == partner) {
                Some((h, _)) => h,
                None => create(s, &label, key, anchored, true)?,
            };
            slots.push((kept, Some(partner)));
        }
        let paired = in_place == InPlace::Allowed;
        let new = create(s, &label, key, head, paired)?;
        slots.push((new, Some(Slot { head, paired })));
        for h in old.into_iter().filter(|h| slots.iter().all(|(k, _)| k != h)) {
            s.destroy_object(h).map_err(|e| hsm_err("C_DestroyObject(anchor)", e))?;
        }
        Ok(Found { slots, legacy: Vec::new() })
    });
    *guard = (result.as_ref().ok().cloned(), in_place);
    result.map(|_| ())
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

/// `token init`: replaces every anchor object (of either form) by one slot at the empty head.
/// Only for freshly created token objects (a new MAC root makes every earlier record
/// unverifiable anyway).
pub fn create_genesis(custody: &Custody, key: &StoreKey) -> Result<(), Error> {
    let label = label(custody);
    custody.token().with_session(|s| {
        for template in [Attribute::Application(label.as_bytes().to_vec()), Attribute::Label(label.as_bytes().to_vec())]
        {
            let old = s
                .find_objects(&[Attribute::Class(ObjectClass::DATA), template])
                .map_err(|e| hsm_err("C_FindObjects(anchor)", e))?;
            for h in old {
                s.destroy_object(h).map_err(|e| hsm_err("C_DestroyObject(anchor)", e))?;
            }
        }
        create(s, &label, key, Head::EMPTY, false).map(|_| ())
    })
}

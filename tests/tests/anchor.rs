//! The HSM anchor's two slots on a real token (SoftHSM; kryoptic through `scripts/kryoptic.sh`),
//! in process: an update rewrites the slot whose partner holds the anchored head (one
//! `C_SetAttributeValue`); a slot torn by a crash is passed over, but a newest head found without
//! its partner is adopted only by a store ahead of it; forged and public objects are refused; the
//! first form (the head in `CKA_VALUE`, one object per update) is read and migrated; a token that
//! refuses the in-place write gets create + destroy.

use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use frostgate_common::error::ErrorCode;
use frostgate_enclave::custody::Custody;
use frostgate_enclave::store::anchor::{self, Anchor, Cache};
use frostgate_enclave::store::chain::{Head, StoreKey};
use frostgate_tests::token::shared_custody;
use std::sync::{Arc, Mutex, MutexGuard};

/// The tests share one token (one PKCS#11 module per process) and its one anchor.
static TOKEN: Mutex<()> = Mutex::new(());

struct Fixture {
    custody: Arc<Custody>,
    key: StoreKey,
    _serial: MutexGuard<'static, ()>,
}

/// The shared token with its anchor reset to the empty head (as `token init` leaves it).
fn fixture() -> Fixture {
    let serial = TOKEN.lock().unwrap_or_else(|p| p.into_inner());
    let custody = shared_custody();
    let key = StoreKey::new(custody.derive_store_key().expect("store key"));
    anchor::create_genesis(&custody, &key).expect("genesis");
    Fixture { custody, key, _serial: serial }
}

fn head(version: u64) -> Head {
    Head { version, mac: [version as u8; 32] }
}

/// `version | mac | tag` of a head held alone (as the first form's value).
fn value(key: &StoreKey, h: Head) -> Vec<u8> {
    let mut v = h.version.to_be_bytes().to_vec();
    v.extend_from_slice(&h.mac);
    v.extend_from_slice(&key.anchor_tag(h, false));
    v
}

impl Fixture {
    fn label(&self) -> Vec<u8> {
        anchor::label(&self.custody).into_bytes()
    }

    /// The slots (objects found by their application), sorted.
    fn slots(&self) -> Vec<ObjectHandle> {
        let mut v = self
            .custody
            .token()
            .with_session(|s| {
                Ok(s.find_objects(&[Attribute::Class(ObjectClass::DATA), Attribute::Application(self.label())])
                    .expect("find"))
            })
            .expect("session");
        v.sort_by_key(|h| h.handle());
        v
    }

    /// Objects of the first form (found by their label).
    fn legacy(&self) -> usize {
        self.custody
            .token()
            .with_session(|s| {
                Ok(s.find_objects(&[Attribute::Class(ObjectClass::DATA), Attribute::Label(self.label())])
                    .expect("find")
                    .len())
            })
            .expect("session")
    }

    fn set_label(&self, h: ObjectHandle, label: Vec<u8>) {
        self.custody
            .token()
            .with_session(|s| {
                s.update_attributes(h, &[Attribute::Label(label)]).expect("set");
                Ok(())
            })
            .expect("session")
    }

    fn create(&self, template: Vec<Attribute>) -> ObjectHandle {
        self.custody.token().with_session(|s| Ok(s.create_object(&template).expect("create"))).expect("session")
    }

    fn slot_template(&self, label: Vec<u8>, private: bool, modifiable: bool) -> Vec<Attribute> {
        vec![
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(true),
            Attribute::Private(private),
            Attribute::Modifiable(modifiable),
            Attribute::Application(self.label()),
            Attribute::Label(label),
        ]
    }

    /// A paired slot's label.
    fn slot_label(&self, h: Head) -> Vec<u8> {
        anchor::slot_label(&self.key, h, true)
    }

    fn anchor(&self) -> Result<Anchor, ErrorCode> {
        anchor::read(&self.custody, &self.key).map_err(|e| e.code())
    }

    fn read(&self) -> Result<Head, ErrorCode> {
        self.anchor().map(|a| a.head)
    }

    /// From the anchored head `from` (the previous update's) to `to`.
    fn update(&self, from: Head, to: Head, cache: &Cache) {
        anchor::update(&self.custody, &self.key, from, to, cache).expect("update");
    }

    fn destroy(&self, h: ObjectHandle) {
        self.custody
            .token()
            .with_session(|s| {
                s.destroy_object(h).expect("destroy");
                Ok(())
            })
            .expect("session");
    }

    fn label_of(&self, h: ObjectHandle) -> Vec<u8> {
        self.custody
            .token()
            .with_session(|s| {
                let attrs = s.get_attributes(h, &[AttributeType::Label]).expect("label");
                Ok(attrs.into_iter().find_map(|a| if let Attribute::Label(l) = a { Some(l) } else { None }))
            })
            .expect("session")
            .expect("a label")
    }
}

#[test]
fn an_update_rewrites_the_slot_whose_partner_holds_the_anchored_head() {
    let f = fixture();
    assert_eq!(f.anchor(), Ok(Anchor { head: Head::EMPTY, complete: true }), "token init anchors the empty head");
    assert_eq!(f.slots().len(), 1);
    let cache = Cache::default();
    f.update(head(0), head(1), &cache);
    let slots = f.slots();
    assert_eq!(slots.len(), 2, "the first update adds the partner");
    for v in 2..=9 {
        f.update(head(v - 1), head(v), &cache);
        assert_eq!(f.anchor(), Ok(Anchor { head: head(v), complete: true }));
        assert_eq!(f.slots(), slots, "version {v} written in place: the same two objects");
        // The slot written holds v, its partner v - 1: a torn write leaves v - 1 readable.
        let labels: Vec<Vec<u8>> = slots.iter().map(|h| f.label_of(*h)).collect();
        assert!(labels.contains(&f.slot_label(head(v))) && labels.contains(&f.slot_label(head(v - 1))), "v {v}");
    }
    // A restarted enclave (a new cache) searches, and rewrites the slot holding 8, not 9.
    let holding_9 = *slots.iter().find(|h| f.label_of(**h) == f.slot_label(head(9))).expect("9");
    let cache = Cache::default();
    f.update(head(9), head(10), &cache);
    assert_eq!((f.read(), f.slots()), (Ok(head(10)), slots.clone()));
    assert_eq!(f.label_of(holding_9), f.slot_label(head(9)));
    assert_eq!(f.legacy(), 0);
    // An update told of an anchored head no slot holds rewrites neither: it creates that head's
    // paired slot and the new head's, then destroys both.
    let cache = Cache::default();
    f.update(head(7), head(11), &cache);
    let after = f.slots();
    assert_eq!((f.anchor(), after.len()), (Ok(Anchor { head: head(11), complete: true }), 2));
    assert!(after.iter().all(|h| !slots.contains(h)));
}

/// The genesis slot (held alone) never becomes the partner of a paired head: the first update
/// makes a paired copy of the anchored head, so deleting the newest slot leaves an incomplete
/// anchor, not a complete older one.
#[test]
fn a_slot_held_alone_never_partners_a_paired_one() {
    let f = fixture();
    let genesis = f.slots();
    let cache = Cache::default();
    f.update(head(0), head(1), &cache);
    let slots = f.slots();
    assert_eq!(slots.len(), 2);
    assert!(slots.iter().all(|h| !genesis.contains(h)), "the genesis slot is destroyed");
    let labels: Vec<Vec<u8>> = slots.iter().map(|h| f.label_of(*h)).collect();
    assert!(labels.contains(&f.slot_label(Head::EMPTY)) && labels.contains(&f.slot_label(head(1))), "both paired");
    let newest = *slots.iter().find(|h| f.label_of(**h) == f.slot_label(head(1))).expect("1");
    f.destroy(newest);
    let left = f.anchor().expect("anchor");
    assert_eq!(left, Anchor { head: Head::EMPTY, complete: false });
    assert_eq!(left.confirm(false).map_err(|e| e.code()), Err(ErrorCode::StoreAnchorInvalid));
    assert_eq!(left.confirm(true).map_err(|e| e.code()), Ok(()));
}

#[test]
fn a_torn_slot_is_passed_over_and_rewritten_but_a_forged_one_is_refused() {
    let f = fixture();
    let cache = Cache::default();
    for v in 1..=4 {
        f.update(head(v - 1), head(v), &cache);
    }
    let slots = f.slots();
    let older = *slots.iter().find(|h| f.label_of(**h) == f.slot_label(head(3))).expect("the slot holding 3");
    let newer = *slots.iter().find(|h| **h != older).expect("the other");

    // A crash tore the write of 5 into the older slot: 4 is still the anchor, but without its
    // partner: only a store ahead of 4 (the one holding 5, committed before the write) is adopted.
    f.set_label(older, b"anchor/v1/paired:5a5a".to_vec());
    let torn = f.anchor().expect("anchor");
    assert_eq!(torn, Anchor { head: head(4), complete: false });
    assert_eq!(torn.confirm(true).map_err(|e| e.code()), Ok(()));
    assert_eq!(torn.confirm(false).map_err(|e| e.code()), Err(ErrorCode::StoreAnchorInvalid));
    // After a restart the next update (finishing 5) writes into the torn slot.
    let cache = Cache::default();
    f.update(head(4), head(5), &cache);
    assert_eq!((f.anchor(), f.slots()), (Ok(Anchor { head: head(5), complete: true }), slots.clone()));
    assert_eq!(f.label_of(older), f.slot_label(head(5)));

    // Both slots unreadable: nothing to check the store against.
    f.set_label(older, b"garbage".to_vec());
    f.set_label(newer, Vec::new());
    assert_eq!(f.read(), Err(ErrorCode::StoreAnchorInvalid));

    // A well-formed slot whose tag was not made with this token's store key: refused, even next
    // to a valid one. So is a paired head relabelled as one held alone (the tag covers which).
    f.set_label(newer, f.slot_label(head(4)));
    let mut forged = anchor::slot_label(&f.key, head(9), true);
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'0' { b'1' } else { b'0' };
    f.set_label(older, forged);
    assert_eq!(f.read(), Err(ErrorCode::StoreAnchorInvalid), "forged tag");
    let relabelled = String::from_utf8(f.slot_label(head(5))).expect("ascii").replace("/paired:", ":");
    f.set_label(older, relabelled.into_bytes());
    assert_eq!(f.read(), Err(ErrorCode::StoreAnchorInvalid), "paired head presented as alone");
    f.set_label(older, f.slot_label(head(5)));
    assert_eq!(f.anchor(), Ok(Anchor { head: head(5), complete: true }));

    // A public object with the slots' application, even holding a genuine head: refused.
    let public = f.create(f.slot_template(f.slot_label(head(5)), false, true));
    assert_eq!(f.read(), Err(ErrorCode::StoreAnchorInvalid), "public slot");
    f.destroy(public);
    assert_eq!(f.read(), Ok(head(5)));

    // The newest slot deleted (with the PIN): its partner's head, incomplete, so a store rolled
    // back by one commit to the partner's head, or cut inside that commit, is refused.
    f.destroy(older);
    let partner = f.anchor().expect("anchor");
    assert_eq!(partner, Anchor { head: head(4), complete: false });
    assert_eq!(partner.confirm(false).map_err(|e| e.code()), Err(ErrorCode::StoreAnchorInvalid));
    // A copy of the partner is no partner: only an older head completes a paired one.
    let copy = f.create(f.slot_template(f.slot_label(head(4)), true, true));
    assert_eq!(f.anchor(), Ok(Anchor { head: head(4), complete: false }));
    f.destroy(copy);

    // Every slot deleted: missing, never "an empty store".
    f.destroy(newer);
    assert_eq!(f.read(), Err(ErrorCode::StoreAnchorMissing));
}

#[test]
fn an_anchor_of_the_first_form_is_read_then_replaced_by_slots() {
    let f = fixture();
    // A token anchored by an earlier frostgate: one object, the head in its value.
    for h in f.slots() {
        f.destroy(h);
    }
    f.create(vec![
        Attribute::Class(ObjectClass::DATA),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Modifiable(false),
        Attribute::Label(f.label()),
        Attribute::Application(b"frostgate".to_vec()),
        Attribute::Value(value(&f.key, head(7))),
    ]);
    assert_eq!(f.anchor(), Ok(Anchor { head: head(7), complete: true }));
    let cache = Cache::default();
    f.update(head(7), head(8), &cache);
    let slots = f.slots();
    assert_eq!((f.anchor(), f.legacy(), slots.len()), (Ok(Anchor { head: head(8), complete: true }), 0, 2), "migrated");
    f.update(head(8), head(9), &cache);
    f.update(head(9), head(10), &cache);
    assert_eq!((f.read(), f.slots()), (Ok(head(10)), slots), "then in place");

    // A first-form object with a forged value is refused like a forged slot.
    let mut forged = value(&f.key, head(11));
    forged[0] ^= 1;
    f.create(vec![
        Attribute::Class(ObjectClass::DATA),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Label(f.label()),
        Attribute::Value(forged),
    ]);
    assert_eq!(f.read(), Err(ErrorCode::StoreAnchorInvalid));
}

#[test]
fn a_token_that_refuses_the_in_place_write_gets_create_and_destroy() {
    let f = fixture();
    for h in f.slots() {
        f.destroy(h);
    }
    // Two slots the token will not modify (as a token that keeps labels fixed would answer).
    let fixed: Vec<ObjectHandle> =
        [head(1), head(2)].into_iter().map(|h| f.create(f.slot_template(f.slot_label(h), true, false))).collect();
    assert_eq!(f.anchor(), Ok(Anchor { head: head(2), complete: true }));
    let cache = Cache::default();
    f.update(head(2), head(3), &cache);
    let after = f.slots();
    assert_eq!(
        (f.anchor(), after.len()),
        (Ok(Anchor { head: head(3), complete: true }), 1),
        "refused in place: one new object, held alone, the rest destroyed"
    );
    assert!(!fixed.contains(&after[0]));
    f.update(head(3), head(4), &cache);
    let next = f.slots();
    assert_eq!((f.anchor(), next.len()), (Ok(Anchor { head: head(4), complete: true }), 1));
    assert_ne!(next, after, "each update creates and destroys");
}

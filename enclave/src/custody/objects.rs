//! This enclave's objects on the token, their templates, and the policy every one must meet.
//!
//! Invariant: the same [`expectations`] table drives the templates' security flags at creation and
//! the check at boot and in `token inspect`, so what is created is exactly what is enforced.
//! Every flag is set explicitly (SoftHSM's defaults are permissive).

use super::profile::{Profile, Rules};
use super::token::{hsm_err, Hsm};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use frostgate_common::error::{Error, ErrorCode};
use serde::Serialize;

/// DER of the P-256 curve OID (1.2.840.10045.3.1.7), the identity key's curve.
pub const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// What an object is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// AES-256 key-encryption key: seals key shares (encrypt + decrypt only).
    Kek,
    /// Generic-secret MAC root: the store-sealing key is derived from it (sign + verify only).
    MacRoot,
    /// Private half of the P-256 identity key pair (sign + ECDH derive only).
    IdentityPrivate,
    /// Public half of the identity key pair (verify only).
    IdentityPublic,
}

/// Every role, in report order.
pub const ROLES: [Role; 4] = [Role::Kek, Role::MacRoot, Role::IdentityPrivate, Role::IdentityPublic];

/// The key objects a profile keeps on the token, in report order.
pub fn roles(profile: Profile) -> &'static [Role] {
    match profile {
        Profile::Full => &ROLES,
        Profile::CbcHmac => &ROLES[..2],
        Profile::AesOnly => &ROLES[..1],
    }
}

/// Object labels derived from the configured prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labels {
    prefix: String,
}

impl Labels {
    /// Labels under `prefix`.
    pub fn new(prefix: &str) -> Self {
        Labels { prefix: prefix.to_string() }
    }

    /// The label of the object with this role.
    pub fn of(&self, role: Role) -> String {
        match role {
            Role::Kek => format!("{}-kek", self.prefix),
            Role::MacRoot => format!("{}-mac-root", self.prefix),
            Role::IdentityPrivate | Role::IdentityPublic => format!("{}-identity", self.prefix),
        }
    }
}

fn class_of(role: Role) -> ObjectClass {
    match role {
        Role::Kek | Role::MacRoot => ObjectClass::SECRET_KEY,
        Role::IdentityPrivate => ObjectClass::PRIVATE_KEY,
        Role::IdentityPublic => ObjectClass::PUBLIC_KEY,
    }
}

/// The boolean attributes an object with this role must have, with their required values.
pub fn expectations(role: Role) -> Vec<(AttributeType, bool)> {
    use AttributeType as A;
    let protected = [
        (A::Token, true),
        (A::Private, true),
        (A::Sensitive, true),
        (A::AlwaysSensitive, true),
        (A::Extractable, false),
        (A::NeverExtractable, true),
        (A::Modifiable, false),
        (A::Copyable, false),
    ];
    let mut v: Vec<(AttributeType, bool)> = match role {
        Role::IdentityPublic => vec![(A::Token, true), (A::Modifiable, false)],
        _ => protected.to_vec(),
    };
    v.extend(match role {
        Role::Kek => [
            (A::Encrypt, true),
            (A::Decrypt, true),
            (A::Sign, false),
            (A::Verify, false),
            (A::Wrap, false),
            (A::Unwrap, false),
            (A::Derive, false),
        ]
        .as_slice(),
        Role::MacRoot => [
            (A::Sign, true),
            (A::Verify, true),
            (A::Encrypt, false),
            (A::Decrypt, false),
            (A::Wrap, false),
            (A::Unwrap, false),
            (A::Derive, false),
        ]
        .as_slice(),
        Role::IdentityPrivate => {
            [(A::Sign, true), (A::Derive, true), (A::Decrypt, false), (A::Unwrap, false), (A::SignRecover, false)]
                .as_slice()
        }
        Role::IdentityPublic => {
            [(A::Verify, true), (A::Encrypt, false), (A::Wrap, false), (A::VerifyRecover, false), (A::Derive, false)]
                .as_slice()
        }
    });
    v
}

fn bool_attr(t: AttributeType, value: bool) -> Option<Attribute> {
    use AttributeType as A;
    Some(match t {
        A::Token => Attribute::Token(value),
        A::Private => Attribute::Private(value),
        A::Sensitive => Attribute::Sensitive(value),
        A::Extractable => Attribute::Extractable(value),
        A::Modifiable => Attribute::Modifiable(value),
        A::Copyable => Attribute::Copyable(value),
        A::Encrypt => Attribute::Encrypt(value),
        A::Decrypt => Attribute::Decrypt(value),
        A::Sign => Attribute::Sign(value),
        A::Verify => Attribute::Verify(value),
        A::Wrap => Attribute::Wrap(value),
        A::Unwrap => Attribute::Unwrap(value),
        A::Derive => Attribute::Derive(value),
        A::SignRecover => Attribute::SignRecover(value),
        A::VerifyRecover => Attribute::VerifyRecover(value),
        // Set by the token itself, never in a template.
        _ => return None,
    })
}

fn template(role: Role, labels: &Labels, id: &[u8]) -> Vec<Attribute> {
    let mut t = vec![
        Attribute::Class(class_of(role)),
        Attribute::Label(labels.of(role).into_bytes()),
        Attribute::Id(id.to_vec()),
    ];
    t.extend(expectations(role).into_iter().filter_map(|(a, v)| bool_attr(a, v)));
    match role {
        Role::Kek => t.extend([Attribute::KeyType(KeyType::AES), Attribute::ValueLen(32.into())]),
        Role::MacRoot => t.extend([Attribute::KeyType(KeyType::GENERIC_SECRET), Attribute::ValueLen(32.into())]),
        Role::IdentityPrivate => t.push(Attribute::KeyType(KeyType::EC)),
        Role::IdentityPublic => t.extend([Attribute::KeyType(KeyType::EC), Attribute::EcParams(P256_PARAMS.to_vec())]),
    }
    t
}

/// Handles of this enclave's key objects, each checked against its policy.
#[derive(Debug, Clone, Copy)]
pub struct Objects {
    /// Key-encryption key (of two, during an incomplete rotation: the one with the greater
    /// `CKA_ID`, so every boot picks the same).
    pub kek: Kek,
    /// The other key-encryption key of an incomplete rotation.
    pub kek_other: Option<Kek>,
    /// MAC root key (`full`, `cbc_hmac`).
    pub mac_root: Option<ObjectHandle>,
    /// Identity key pair (private, public) (`full`).
    pub identity: Option<(ObjectHandle, ObjectHandle)>,
}

/// A key-encryption key and the short id that names it in the blobs sealed under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kek {
    /// The object.
    pub handle: ObjectHandle,
    /// The first 8 bytes of SHA-256 of its `CKA_ID`.
    pub id: [u8; 8],
}

/// What `token inspect` shows about one object.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectReport {
    /// The object's role.
    pub role: Role,
    /// Its label.
    pub label: String,
    /// How many objects carry this label and class (exactly 1 is required).
    pub count: usize,
    /// Attribute name -> value as read from the token (`null` if unreadable).
    pub attributes: Vec<(String, Option<String>)>,
    /// Every way the object breaks its role's policy.
    pub violations: Vec<String>,
}

fn find(session: &Hsm<'_>, role: Role, labels: &Labels) -> Result<Vec<ObjectHandle>, Error> {
    let t = [Attribute::Class(class_of(role)), Attribute::Label(labels.of(role).into_bytes())];
    session.find_objects(&t).map_err(|e| hsm_err("C_FindObjects", e))
}

/// Reads one object's attributes and checks them against its role.
fn check(
    session: &Hsm<'_>,
    role: Role,
    labels: &Labels,
    handle: ObjectHandle,
    count: usize,
) -> Result<ObjectReport, Error> {
    let expected = expectations(role);
    let mut types: Vec<AttributeType> = expected.iter().map(|(t, _)| *t).collect();
    types.extend([AttributeType::KeyType, AttributeType::ValueLen, AttributeType::EcParams]);
    let mut attributes = Vec::new();
    let mut violations = Vec::new();
    let mut read = Vec::new();
    for t in &types {
        // One attribute per call: a token that does not know one attribute must not hide the others.
        let got =
            session.get_attributes(handle, std::slice::from_ref(t)).map_err(|e| hsm_err("C_GetAttributeValue", e))?;
        read.extend(got);
    }
    for (t, want) in &expected {
        let got = read.iter().find_map(|a| bool_value(a, *t));
        attributes.push((format!("{t}"), got.map(|b| b.to_string())));
        match got {
            Some(v) if v == *want => {}
            Some(v) => violations.push(format!("{t} is {v}, must be {want}")),
            // A token before PKCS#11 2.40 has no CKA_COPYABLE: a copy it makes keeps the key
            // sensitive and never extractable (C_CopyObject cannot weaken either).
            None if *t == AttributeType::Copyable => {}
            None => violations.push(format!("{t} is unreadable, must be {want}")),
        }
    }
    let key_type = read.iter().find_map(|a| if let Attribute::KeyType(k) = a { Some(*k) } else { None });
    let value_len = read.iter().find_map(|a| if let Attribute::ValueLen(l) = a { Some(u64::from(*l)) } else { None });
    let ec_params = read.iter().find_map(|a| if let Attribute::EcParams(p) = a { Some(p.clone()) } else { None });
    attributes.push(("CKA_KEY_TYPE".into(), key_type.map(|k| format!("{k}"))));
    match role {
        Role::Kek => {
            attributes.push(("CKA_VALUE_LEN".into(), value_len.map(|l| l.to_string())));
            if key_type != Some(KeyType::AES) || value_len != Some(32) {
                violations.push(format!("must be an AES-256 key (type {key_type:?}, length {value_len:?})"));
            }
        }
        Role::MacRoot => {
            attributes.push(("CKA_VALUE_LEN".into(), value_len.map(|l| l.to_string())));
            if key_type != Some(KeyType::GENERIC_SECRET) || value_len.is_none_or(|l| l < 32) {
                violations.push(format!(
                    "must be a generic secret of at least 32 bytes (type {key_type:?}, length {value_len:?})"
                ));
            }
        }
        Role::IdentityPrivate | Role::IdentityPublic => {
            attributes.push(("CKA_EC_PARAMS".into(), ec_params.as_deref().map(hex::encode)));
            if key_type != Some(KeyType::EC) || ec_params.as_deref().is_some_and(|p| p != P256_PARAMS) {
                violations.push("must be a P-256 EC key".to_string());
            }
        }
    }
    // Two key-encryption keys exist only while a rotation is incomplete (`rotate-kek` finishes it).
    let allowed = if role == Role::Kek { 2 } else { 1 };
    if count == 0 || count > allowed {
        let which = if allowed == 1 { "exactly one is allowed" } else { "one, or two during a rotation" };
        violations.push(format!("{count} objects carry this label; {which}"));
    }
    Ok(ObjectReport { role, label: labels.of(role), count, attributes, violations })
}

fn bool_value(a: &Attribute, t: AttributeType) -> Option<bool> {
    use Attribute as B;
    let (at, v) = match a {
        B::Token(v) => (AttributeType::Token, v),
        B::Private(v) => (AttributeType::Private, v),
        B::Sensitive(v) => (AttributeType::Sensitive, v),
        B::AlwaysSensitive(v) => (AttributeType::AlwaysSensitive, v),
        B::Extractable(v) => (AttributeType::Extractable, v),
        B::NeverExtractable(v) => (AttributeType::NeverExtractable, v),
        B::Modifiable(v) => (AttributeType::Modifiable, v),
        B::Copyable(v) => (AttributeType::Copyable, v),
        B::Encrypt(v) => (AttributeType::Encrypt, v),
        B::Decrypt(v) => (AttributeType::Decrypt, v),
        B::Sign(v) => (AttributeType::Sign, v),
        B::Verify(v) => (AttributeType::Verify, v),
        B::Wrap(v) => (AttributeType::Wrap, v),
        B::Unwrap(v) => (AttributeType::Unwrap, v),
        B::Derive(v) => (AttributeType::Derive, v),
        B::SignRecover(v) => (AttributeType::SignRecover, v),
        B::VerifyRecover(v) => (AttributeType::VerifyRecover, v),
        _ => return None,
    };
    (at == t).then_some(*v)
}

/// Reports on every role's object (missing objects get a report with `count == 0`).
pub fn inspect(session: &Hsm<'_>, labels: &Labels, profile: Profile) -> Result<Vec<ObjectReport>, Error> {
    roles(profile)
        .iter()
        .map(|&role| {
            let found = find(session, role, labels)?;
            match found.first() {
                Some(&h) => check(session, role, labels, h, found.len()),
                None => Ok(ObjectReport {
                    role,
                    label: labels.of(role),
                    count: 0,
                    attributes: Vec::new(),
                    violations: vec!["missing".into()],
                }),
            }
        })
        .collect()
}

/// Boot self-check: every object present, unique and within its policy.
pub fn load(session: &Hsm<'_>, labels: &Labels, profile: Profile) -> Result<Objects, Error> {
    let mut handles = Vec::new();
    let mut kek_other = None;
    for &role in roles(profile) {
        let mut found = find(session, role, labels)?;
        if role == Role::Kek && found.len() == 2 {
            // The newer is the one with the greater id, compared as a number (a longer id is
            // greater: a generated id that carried over gained a byte).
            found.sort_by_cached_key(|h| {
                let id = object_id(session, *h).unwrap_or_default();
                std::cmp::Reverse((id.len(), id))
            });
            if object_id(session, found[0])? == object_id(session, found[1])? {
                return Err(Error::new(
                    ErrorCode::HsmObjectPolicyViolation,
                    format!(
                        "two key-encryption keys {} carry the same id, so which one seals cannot be told; remove the \
                         one made for the rotation and make it again with an id that sorts after the current one",
                        labels.of(Role::Kek)
                    ),
                ));
            }
            let report = check(session, role, labels, found[1], found.len())?;
            if !report.violations.is_empty() {
                return Err(Error::new(
                    ErrorCode::HsmObjectPolicyViolation,
                    format!("{} (second Kek): {}", report.label, report.violations.join("; ")),
                ));
            }
            kek_other = Some(kek(session, found[1])?);
        }
        let Some(&h) = found.first() else {
            return Err(Error::new(
                ErrorCode::HsmObjectMissing,
                format!("{} ({role:?}) is not on the token", labels.of(role)),
            ));
        };
        let report = check(session, role, labels, h, found.len())?;
        if !report.violations.is_empty() {
            return Err(Error::new(
                ErrorCode::HsmObjectPolicyViolation,
                format!("{} ({role:?}): {}", report.label, report.violations.join("; ")),
            ));
        }
        handles.push(h);
    }
    Ok(Objects {
        kek: kek(session, handles[0])?,
        kek_other,
        mac_root: handles.get(1).copied(),
        identity: handles.get(2).copied().zip(handles.get(3).copied()),
    })
}

fn kek(session: &Hsm<'_>, handle: ObjectHandle) -> Result<Kek, Error> {
    let digest = ring::digest::digest(&ring::digest::SHA256, &object_id(session, handle)?);
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest.as_ref()[..8]);
    Ok(Kek { handle, id })
}

fn object_id(session: &Hsm<'_>, h: ObjectHandle) -> Result<Vec<u8>, Error> {
    let attrs = session.get_attributes(h, &[AttributeType::Id]).map_err(|e| hsm_err("C_GetAttributeValue", e))?;
    Ok(attrs.into_iter().find_map(|a| if let Attribute::Id(id) = a { Some(id) } else { None }).unwrap_or_default())
}

/// Generates a key-encryption key (AES-256, on the token, never extractable) to replace
/// `previous`: its `CKA_ID` is the previous one's plus one (as a big-endian number), so the newer
/// of two keys is always the one with the greater id, whichever boot looks.
pub fn create_kek(session: &Hsm<'_>, labels: &Labels, previous: ObjectHandle) -> Result<Kek, Error> {
    let previous_id = object_id(session, previous)?;
    let mut id = previous_id.clone();
    if id.is_empty() {
        id = vec![0];
    }
    let mut carry = true;
    for b in id.iter_mut().rev() {
        if !carry {
            break;
        }
        (*b, carry) = b.overflowing_add(1);
    }
    if carry {
        id.insert(0, 1);
    }
    let handle = generate_kek(session, labels, &id, Purpose::Rotation(previous_id))?;
    kek(session, handle)
}

/// Runs `make` on the template, and again without `CKA_COPYABLE` if the token does not know that
/// attribute (PKCS#11 2.40; openCryptoki 3.8 refuses it as CKR_ATTRIBUTE_TYPE_INVALID).
fn with_template<T>(
    template: Vec<Attribute>,
    make: impl Fn(&[Attribute]) -> Result<T, cryptoki::error::Error>,
) -> Result<T, cryptoki::error::Error> {
    use cryptoki::error::{Error as CkError, RvError};
    match make(&template) {
        Err(CkError::Pkcs11(RvError::AttributeTypeInvalid, _)) => {
            let without: Vec<Attribute> =
                template.into_iter().filter(|a| !matches!(a, Attribute::Copyable(_))).collect();
            make(&without)
        }
        other => other,
    }
}

/// Why a key-encryption key is being generated (what to tell an operator whose token cannot).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Purpose {
    Init,
    /// Rotating away from the key with this `CKA_ID`.
    Rotation(Vec<u8>),
}

/// A `CKA_ID` that sorts after `id` (the newer of two key-encryption keys is the one with the
/// greater id), as a token tool's `--id` argument: tpm2-pkcs11's `tpm2_ptool` stores the string's
/// bytes, so a printable id gets one more character.
fn next_id_argument(id: &[u8]) -> String {
    match std::str::from_utf8(id) {
        Ok(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic()) => format!("{s}1"),
        _ => format!("<an id greater than hex {}>", hex::encode(id)),
    }
}

fn generate_kek(session: &Hsm<'_>, labels: &Labels, id: &[u8], purpose: Purpose) -> Result<ObjectHandle, Error> {
    use cryptoki::error::{Error as CkError, RvError};
    match with_template(template(Role::Kek, labels, id), |t| session.generate_key(&Mechanism::AesKeyGen, t)) {
        Ok(h) => Ok(h),
        // tpm2-pkcs11 lists CKM_AES_KEY_GEN but implements no C_GenerateKey.
        Err(CkError::Pkcs11(
            rv @ (RvError::FunctionNotSupported | RvError::MechanismInvalid | RvError::TemplateInconsistent),
            _,
        )) => Err(Error::new(
            ErrorCode::HsmMechanismMissing,
            match purpose {
                Purpose::Init => format!(
                    "the token cannot generate an AES-256 key through PKCS#11 (C_GenerateKey: {rv:?}); create {label} \
                     with the token's own tool (sensitive, never extractable, usage encrypt+decrypt only), e.g. for \
                     a TPM: `tpm2_ptool addkey --algorithm=aes256 --label=<token label> --key-label={label} \
                     --userpin=<user PIN>`; then run `token init` again, which adopts it",
                    label = labels.of(Role::Kek)
                ),
                Purpose::Rotation(previous) => format!(
                    "the token cannot generate an AES-256 key through PKCS#11 (C_GenerateKey: {rv:?}); nothing \
                     changed. Make the next key-encryption key with the token's own tool, under the same label \
                     and an id that sorts after the current one (sensitive, never extractable, encrypt+decrypt \
                     only), e.g. for a TPM: `tpm2_ptool addkey --algorithm=aes256 --label=<token label> \
                     --key-label={label} --id={next} --userpin=<user PIN>`; restart the node, which then seals \
                     under the new key after checking it like its own, and run `frostgate token rotate-kek` \
                     again to reseal every share and destroy the old key",
                    label = labels.of(Role::Kek),
                    next = next_id_argument(&previous),
                ),
            },
        )),
        Err(e) => Err(hsm_err("C_GenerateKey(AES)", e)),
    }
}

/// `token init`'s first step: refuses if any of this enclave's objects exists (replacing them would
/// make every blob sealed under the key-encryption key unreadable; `rotate-kek` replaces that key
/// safely), except a lone key-encryption key the operator made with the token's own tool, which is
/// adopted (checked like one made here). Returns whether there is one to adopt.
pub fn check_init(session: &Hsm<'_>, labels: &Labels, records: Vec<String>) -> Result<bool, Error> {
    let existing = all(session, labels)?;
    let adopt = records.is_empty() && matches!(existing.as_slice(), [(Role::Kek, _)]);
    if !existing.is_empty() && !adopt || !records.is_empty() {
        let mut names: Vec<String> = existing.iter().map(|(r, _)| labels.of(*r)).collect();
        names.extend(records);
        names.dedup();
        return Err(Error::new(
            ErrorCode::HsmObjectsExist,
            format!(
                "already on the token: {}; to replace the key-encryption key of a node that holds keys run \
                 `frostgate token rotate-kek`; to start over, use a new token",
                names.join(", ")
            ),
        ));
    }
    Ok(adopt)
}

/// Every key object carrying one of this enclave's labels.
pub fn all(session: &Hsm<'_>, labels: &Labels) -> Result<Vec<(Role, ObjectHandle)>, Error> {
    let mut existing = Vec::new();
    for role in ROLES {
        for h in find(session, role, labels)? {
            existing.push((role, h));
        }
    }
    Ok(existing)
}

/// Creates this enclave's key objects for `profile` (after [`check_init`]), adopting the
/// operator's key-encryption key if `adopt`.
pub fn init(session: &Hsm<'_>, labels: &Labels, profile: Profile, adopt: bool) -> Result<Objects, Error> {
    let mut id = [0u8; 16];
    session.generate_random_slice(&mut id).map_err(|e| hsm_err("C_GenerateRandom", e))?;
    if adopt {
        tracing::info!(label = %labels.of(Role::Kek), "adopting the key-encryption key made with the token's tool");
    } else {
        generate_kek(session, labels, &id, Purpose::Init)?;
    }
    if profile.mac_root_in_token() {
        with_template(template(Role::MacRoot, labels, &id), |t| {
            session.generate_key(&Mechanism::GenericSecretKeyGen, t)
        })
        .map_err(|e| hsm_err("C_GenerateKey(GENERIC_SECRET)", e))?;
    }
    if profile.identity_in_token() {
        session
            .generate_key_pair(
                &Mechanism::EccKeyPairGen,
                &template(Role::IdentityPublic, labels, &id),
                &template(Role::IdentityPrivate, labels, &id),
            )
            .map_err(|e| hsm_err("C_GenerateKeyPair(EC P-256)", e))?;
    }
    load(session, labels, profile)
}

/// The identity public key as an uncompressed SEC1 point (65 bytes).
pub fn identity_public_key(session: &Hsm<'_>, public: ObjectHandle) -> Result<Vec<u8>, Error> {
    let attrs =
        session.get_attributes(public, &[AttributeType::EcPoint]).map_err(|e| hsm_err("C_GetAttributeValue", e))?;
    let der = attrs
        .into_iter()
        .find_map(|a| if let Attribute::EcPoint(p) = a { Some(p) } else { None })
        .ok_or_else(|| Error::new(ErrorCode::HsmObjectPolicyViolation, "identity public key has no CKA_EC_POINT"))?;
    // CKA_EC_POINT is a DER OCTET STRING (0x04, len 0x41, then the 65-byte point); some tokens
    // return the raw point.
    match der.as_slice() {
        [0x04, 0x41, point @ ..] if point.len() == 65 && point[0] == 0x04 => Ok(point.to_vec()),
        point if point.len() == 65 && point[0] == 0x04 => Ok(point.to_vec()),
        _ => Err(Error::new(
            ErrorCode::HsmObjectPolicyViolation,
            "identity public key is not an uncompressed P-256 point",
        )),
    }
}

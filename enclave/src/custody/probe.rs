//! `token probe`: what a token offers and the custody profile frostgate would run on it, without
//! changing the token. Without a PIN it reads the mechanism list only; with one it also tries, on
//! session objects that vanish with the session, what the mechanism list cannot tell (whether
//! `C_GenerateKey` works at all, whether a private data object can be created).

use super::profile::{Capabilities, Profile};
use super::token::{self, hsm_err};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::slot::Slot;
use frostgate_common::error::{Error, ErrorCode};
use secrecy::SecretString;
use serde::Serialize;
use std::path::Path;

/// Which slot to probe.
#[derive(Debug, Clone)]
pub enum Selector {
    /// The slot with this id.
    Slot(u64),
    /// The one token with this label.
    Label(String),
    /// The only slot with a token.
    Only,
}

/// One profile and what the token lacks for it.
#[derive(Debug, Clone, Serialize)]
pub struct ProfileFit {
    /// The profile.
    pub profile: Profile,
    /// Mechanisms it needs that the token does not offer (empty: supported).
    pub missing: Vec<String>,
}

/// One check made with the PIN.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectCheck {
    /// What was tried.
    pub check: &'static str,
    /// Whether it worked.
    pub ok: bool,
    /// The token's answer when it did not.
    pub detail: Option<String>,
}

/// The probe's result.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The slot id.
    pub slot: u64,
    /// The token's label, manufacturer and model.
    pub token_label: String,
    /// Manufacturer.
    pub manufacturer: String,
    /// Model.
    pub model: String,
    /// Every mechanism the token lists.
    pub mechanisms: Vec<String>,
    /// The profile `token init` would choose; `None`: the token is below every profile.
    pub profile: Option<Profile>,
    /// Every profile, strongest first, with what is missing for it.
    pub profiles: Vec<ProfileFit>,
    /// With a PIN: the object checks.
    pub object_checks: Option<Vec<ObjectCheck>>,
}

fn find(pkcs11: &cryptoki::context::Pkcs11, selector: &Selector) -> Result<Slot, Error> {
    match selector {
        Selector::Label(label) => token::find_slot(pkcs11, label),
        Selector::Slot(id) => pkcs11
            .get_slots_with_token()
            .map_err(|e| hsm_err("C_GetSlotList", e))?
            .into_iter()
            .find(|s| s.id() == *id)
            .ok_or_else(|| Error::new(ErrorCode::HsmTokenNotFound, format!("no token in slot {id}"))),
        Selector::Only => {
            let slots = pkcs11.get_slots_with_token().map_err(|e| hsm_err("C_GetSlotList", e))?;
            match slots.as_slice() {
                [one] => Ok(*one),
                _ => Err(Error::new(
                    ErrorCode::HsmTokenNotFound,
                    format!("{} slots hold a token: name one with --slot or --token-label", slots.len()),
                )),
            }
        }
    }
}

/// Probes the token. Changes nothing on it.
pub fn probe(module: &Path, selector: &Selector, pin: Option<SecretString>) -> Result<Report, Error> {
    let pkcs11 = token::module(module)?;
    let slot = find(&pkcs11, selector)?;
    let info = pkcs11.get_token_info(slot).map_err(|e| hsm_err("C_GetTokenInfo", e))?;
    let caps = Capabilities::read(&pkcs11, slot)?;
    let profiles: Vec<ProfileFit> = Profile::ALL
        .into_iter()
        .map(|p| ProfileFit { profile: p, missing: caps.missing(p).iter().map(|n| n.to_string()).collect() })
        .collect();
    let object_checks = match pin {
        Some(pin) => Some(object_checks(&pkcs11, slot, &pin)?),
        None => None,
    };
    Ok(Report {
        slot: slot.id(),
        token_label: info.label().trim_end().to_string(),
        manufacturer: info.manufacturer_id().trim_end().to_string(),
        model: info.model().trim_end().to_string(),
        mechanisms: caps.mechanisms().iter().map(|(m, _)| m.to_string()).collect(),
        profile: caps.best().ok(),
        profiles,
        object_checks,
    })
}

fn object_checks(
    pkcs11: &cryptoki::context::Pkcs11,
    slot: Slot,
    pin: &SecretString,
) -> Result<Vec<ObjectCheck>, Error> {
    let session = pkcs11.open_rw_session(slot).map_err(|e| hsm_err("C_OpenSession", e))?;
    match session.login(UserType::User, Some(pin)) {
        Ok(()) | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => return Err(hsm_err("C_Login", e)),
    }
    let secret = |kt: KeyType, len: u64| {
        vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(kt),
            Attribute::ValueLen(len.into()),
            Attribute::Token(false),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
        ]
    };
    let mut checks = Vec::new();
    let mut record = |check: &'static str, r: Result<cryptoki::object::ObjectHandle, cryptoki::error::Error>| {
        let (ok, detail) = match r {
            Ok(h) => {
                let _ = session.destroy_object(h);
                (true, None)
            }
            Err(e) => (false, Some(e.to_string())),
        };
        checks.push(ObjectCheck { check, ok, detail });
    };
    let mut aes = secret(KeyType::AES, 32);
    aes.extend([Attribute::Encrypt(true), Attribute::Decrypt(true)]);
    record(
        "C_GenerateKey(AES-256), else the key is made with the token's own tool",
        session.generate_key(&Mechanism::AesKeyGen, &aes),
    );
    let mut mac = secret(KeyType::GENERIC_SECRET, 32);
    mac.extend([Attribute::Sign(true), Attribute::Verify(true)]);
    record(
        "C_GenerateKey(GENERIC_SECRET), for cbc_hmac and full",
        session.generate_key(&Mechanism::GenericSecretKeyGen, &mac),
    );
    let data = session.create_object(&[
        Attribute::Class(ObjectClass::DATA),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Modifiable(true),
        Attribute::Label(b"frostgate-probe".to_vec()),
        Attribute::Value(vec![0; 72]),
    ]);
    // The store anchor's update: its slot's label rewritten in place (else create + destroy).
    let relabelled = data.as_ref().ok().map(|h| session.update_attributes(*h, &[Attribute::Label(vec![b'a'; 154])]));
    record("C_CreateObject(private data object), for the store anchor and sealed records", data);
    checks.push(ObjectCheck {
        check: "C_SetAttributeValue(a data object's label), the store anchor updated in place (else create + destroy)",
        ok: matches!(relabelled, Some(Ok(()))),
        detail: match relabelled {
            Some(Ok(())) => None,
            Some(Err(e)) => Some(e.to_string()),
            None => Some("no data object to try it on".into()),
        },
    });
    let _ = session.logout();
    Ok(checks)
}

/// One line per profile: "full: supported" or "cbc_hmac: missing A, B".
pub fn describe(report: &Report) -> String {
    let mut s = format!(
        "slot {}: token {:?} ({} {})\nprofile: {}\n",
        report.slot,
        report.token_label,
        report.manufacturer,
        report.model,
        report.profile.map_or("none (below every profile)".to_string(), |p| p.to_string())
    );
    for fit in &report.profiles {
        if fit.missing.is_empty() {
            s.push_str(&format!("  {:<9} supported\n", fit.profile.name()));
        } else {
            s.push_str(&format!("  {:<9} missing {}\n", fit.profile.name(), fit.missing.join(", ")));
        }
    }
    if let Some(checks) = &report.object_checks {
        for c in checks {
            s.push_str(&format!(
                "  [{}] {}{}\n",
                if c.ok { "ok" } else { "no" },
                c.check,
                c.detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default()
            ));
        }
    }
    s.push_str(&format!("mechanisms: {}\n", report.mechanisms.join(", ")));
    s
}

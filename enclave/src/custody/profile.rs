//! Custody profiles: which secrets the token keeps and uses itself and which the enclave keeps in
//! its locked memory, chosen once at `token init` from what the token can do, recorded (a token
//! data object, the sealed blobs' version byte, `[custody] profile`) and never re-chosen at boot.
//!
//! | profile    | token holds and uses                         | enclave memory holds (after boot)       |
//! |------------|----------------------------------------------|-----------------------------------------|
//! | `full`     | AES-GCM key-encryption key, HMAC root, P-256 identity (ECDSA, ECDH) | store key           |
//! | `cbc_hmac` | AES-CBC key-encryption key, HMAC root        | store key, blob tag key, identity key   |
//! | `aes_only` | AES-CBC key-encryption key                   | root (sealed on the token), its derived keys, identity key |
//!
//! Under every profile a share is decrypted only by the token: whoever dumps the enclave's memory
//! outside a signing gets no share, but under `cbc_hmac` and `aes_only` gets the identity key and
//! the tag key (it can then forge a blob's tag, never read a blob).
//!
//! Invariant: [`Profile::needs`] is the one list of mechanisms per profile; the probe, the choice
//! at init and the refusal that names what is missing all read it.

use cryptoki::context::Pkcs11;
use cryptoki::mechanism::{MechanismInfo, MechanismType};
use cryptoki::slot::Slot;
use frostgate_common::error::{Error, ErrorCode};

/// A custody profile, strongest first (the boundary's type: `HealthReply` carries it).
pub use frostgate_common::protocol::CustodyProfile as Profile;

/// What a mechanism must be usable for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// `C_Encrypt` and `C_Decrypt`.
    EncryptDecrypt,
    /// `C_Sign`.
    Sign,
    /// `C_DeriveKey`.
    Derive,
    /// `C_GenerateKey`.
    Generate,
    /// `C_GenerateKeyPair`.
    GenerateKeyPair,
}

impl Usage {
    fn allowed_by(self, info: &MechanismInfo) -> bool {
        match self {
            Usage::EncryptDecrypt => info.encrypt() && info.decrypt(),
            Usage::Sign => info.sign(),
            Usage::Derive => info.derive(),
            Usage::Generate => info.generate(),
            Usage::GenerateKeyPair => info.generate_key_pair(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Usage::EncryptDecrypt => "encrypt+decrypt",
            Usage::Sign => "sign",
            Usage::Derive => "derive",
            Usage::Generate => "generate",
            Usage::GenerateKeyPair => "generate key pair",
        }
    }
}

/// One mechanism a profile needs, for one usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    /// The mechanism.
    pub mechanism: MechanismType,
    /// What it must be usable for.
    pub usage: Usage,
}

impl std::fmt::Display for Need {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.mechanism, self.usage.name())
    }
}

const fn need(mechanism: MechanismType, usage: Usage) -> Need {
    Need { mechanism, usage }
}

const FULL: &[Need] = &[
    need(MechanismType::AES_GCM, Usage::EncryptDecrypt),
    need(MechanismType::GENERIC_SECRET_KEY_GEN, Usage::Generate),
    need(MechanismType::SHA256_HMAC, Usage::Sign),
    need(MechanismType::ECC_KEY_PAIR_GEN, Usage::GenerateKeyPair),
    need(MechanismType::ECDSA, Usage::Sign),
    need(MechanismType::ECDH1_DERIVE, Usage::Derive),
];
const CBC_HMAC: &[Need] = &[
    need(MechanismType::AES_CBC, Usage::EncryptDecrypt),
    need(MechanismType::GENERIC_SECRET_KEY_GEN, Usage::Generate),
    need(MechanismType::SHA256_HMAC, Usage::Sign),
];
const AES_ONLY: &[Need] = &[need(MechanismType::AES_CBC, Usage::EncryptDecrypt)];

/// What each profile needs from the token and keeps where.
pub trait Rules {
    /// The mechanisms this profile needs from the token, besides an AES-256 key-encryption key
    /// (generated with `CKM_AES_KEY_GEN` where the token can, else made with the token's own tool).
    fn needs(self) -> &'static [Need];
    /// The version byte of the blobs sealed under this profile (a blob of another profile is
    /// refused, never tried).
    fn blob_version(self) -> u8;
    /// Whether the identity key pair lives in the token (else it is sealed and used in software).
    fn identity_in_token(self) -> bool;
    /// Whether the token holds an HMAC root (else a sealed root lives in enclave memory).
    fn mac_root_in_token(self) -> bool;
}

impl Rules for Profile {
    fn needs(self) -> &'static [Need] {
        match self {
            Profile::Full => FULL,
            Profile::CbcHmac => CBC_HMAC,
            Profile::AesOnly => AES_ONLY,
        }
    }

    fn blob_version(self) -> u8 {
        match self {
            Profile::Full => 1,
            Profile::CbcHmac => 2,
            Profile::AesOnly => 3,
        }
    }

    fn identity_in_token(self) -> bool {
        self == Profile::Full
    }

    fn mac_root_in_token(self) -> bool {
        self != Profile::AesOnly
    }
}

/// The mechanisms a token offers, with their flags.
#[derive(Debug, Clone, Default)]
pub struct Capabilities {
    mechanisms: Vec<(MechanismType, MechanismInfo)>,
}

impl Capabilities {
    /// Reads the slot's mechanism list (no login needed).
    pub fn read(pkcs11: &Pkcs11, slot: Slot) -> Result<Capabilities, Error> {
        let list = pkcs11.get_mechanism_list(slot).map_err(|e| super::token::hsm_err("C_GetMechanismList", e))?;
        let mut mechanisms = Vec::with_capacity(list.len());
        for m in list {
            // A token may list a mechanism it then cannot describe: count it as absent.
            if let Ok(info) = pkcs11.get_mechanism_info(slot, m) {
                mechanisms.push((m, info));
            }
        }
        Ok(Capabilities { mechanisms })
    }

    /// The mechanisms `token` offers.
    pub fn of(token: &super::token::Token) -> Result<Capabilities, Error> {
        let (pkcs11, slot) = token.slot();
        Capabilities::read(pkcs11, slot)
    }

    /// Capabilities from a list (tests).
    pub fn from_list(mechanisms: Vec<(MechanismType, MechanismInfo)>) -> Capabilities {
        Capabilities { mechanisms }
    }

    /// Every mechanism with its flags, in the token's order.
    pub fn mechanisms(&self) -> &[(MechanismType, MechanismInfo)] {
        &self.mechanisms
    }

    /// Whether the token offers `n`.
    pub fn has(&self, n: &Need) -> bool {
        self.mechanisms.iter().any(|(m, info)| *m == n.mechanism && n.usage.allowed_by(info))
    }

    /// What `profile` needs that the token does not offer.
    pub fn missing(&self, profile: Profile) -> Vec<Need> {
        profile.needs().iter().filter(|n| !self.has(n)).copied().collect()
    }

    /// The strongest profile the token supports; else `hsm_mechanism_missing` naming every
    /// mechanism the weakest profile lacks.
    pub fn best(&self) -> Result<Profile, Error> {
        Profile::ALL.into_iter().find(|p| self.missing(*p).is_empty()).ok_or_else(|| {
            let weakest = Profile::AesOnly;
            Error::new(
                ErrorCode::HsmMechanismMissing,
                format!(
                    "the token supports no custody profile; even {weakest} needs {}",
                    names(&self.missing(weakest))
                ),
            )
        })
    }

    /// `profile` if the token supports it; else `hsm_mechanism_missing` naming what it lacks.
    pub fn require(&self, profile: Profile) -> Result<Profile, Error> {
        let missing = self.missing(profile);
        if missing.is_empty() {
            return Ok(profile);
        }
        Err(Error::new(
            ErrorCode::HsmMechanismMissing,
            format!("custody profile {profile} needs {}, which the token does not offer", names(&missing)),
        ))
    }
}

/// "A, B and C" of the needs' names.
pub fn names(needs: &[Need]) -> String {
    needs.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptoki::mechanism::MechanismInfo;

    fn caps(list: &[(MechanismType, Usage)]) -> Capabilities {
        Capabilities::from_list(
            list.iter()
                .map(|(m, u)| {
                    let flags = match u {
                        Usage::EncryptDecrypt => cryptoki_sys::CKF_ENCRYPT | cryptoki_sys::CKF_DECRYPT,
                        Usage::Sign => cryptoki_sys::CKF_SIGN,
                        Usage::Derive => cryptoki_sys::CKF_DERIVE,
                        Usage::Generate => cryptoki_sys::CKF_GENERATE,
                        Usage::GenerateKeyPair => cryptoki_sys::CKF_GENERATE_KEY_PAIR,
                    };
                    (
                        *m,
                        MechanismInfo::from(cryptoki_sys::CK_MECHANISM_INFO {
                            ulMinKeySize: 0,
                            ulMaxKeySize: 0,
                            flags,
                        }),
                    )
                })
                .collect(),
        )
    }

    fn list(needs: &[Need]) -> Vec<(MechanismType, Usage)> {
        needs.iter().map(|n| (n.mechanism, n.usage)).collect()
    }

    #[test]
    fn the_strongest_supported_profile_is_chosen() {
        let mut all = list(FULL);
        all.extend(list(CBC_HMAC));
        assert_eq!(caps(&all).best().expect("full"), Profile::Full);
        // openCryptoki's soft token: no EC, no GCM.
        let ock = caps(&list(CBC_HMAC));
        assert_eq!(ock.best().expect("cbc"), Profile::CbcHmac);
        assert_eq!(ock.require(Profile::AesOnly).expect("weaker is fine"), Profile::AesOnly);
        let e = ock.require(Profile::Full).expect_err("no GCM");
        assert_eq!(e.code(), ErrorCode::HsmMechanismMissing);
        assert!(e.message().contains("CKM_AES_GCM") && e.message().contains("CKM_ECDH1_DERIVE"), "{e}");
        // A TPM through tpm2-pkcs11: AES-CBC and HMAC listed, but no generic-secret keygen.
        let tpm = caps(&[(MechanismType::AES_CBC, Usage::EncryptDecrypt), (MechanismType::SHA256_HMAC, Usage::Sign)]);
        assert_eq!(tpm.best().expect("aes"), Profile::AesOnly);
    }

    #[test]
    fn a_mechanism_listed_without_its_usage_does_not_count() {
        // GCM that only encrypts is no sealing mechanism.
        let mut l = list(FULL);
        l[0].1 = Usage::Sign;
        l.extend(list(CBC_HMAC));
        assert_eq!(caps(&l).best().expect("cbc"), Profile::CbcHmac);
    }

    #[test]
    fn a_token_below_every_profile_is_refused_naming_what_it_lacks() {
        let e = caps(&[(MechanismType::ECDSA, Usage::Sign)]).best().expect_err("nothing");
        assert_eq!(e.code(), ErrorCode::HsmMechanismMissing);
        assert_eq!(e.code().recovery_class().as_str(), "operator");
        assert!(e.message().contains("CKM_AES_CBC (encrypt+decrypt)"), "{e}");
    }

    #[test]
    fn names_and_blob_versions_are_stable_and_distinct() {
        let named: Vec<_> = Profile::ALL.iter().map(|p| (p.name(), p.blob_version())).collect();
        assert_eq!(named, [("full", 1), ("cbc_hmac", 2), ("aes_only", 3)]);
        for p in Profile::ALL {
            assert_eq!(Profile::from_name(p.name()), Some(p));
        }
        assert_eq!(Profile::from_name("FULL"), None);
    }
}

//! This enclave's TEE attestation (`[attestation]` in enclave.toml): a per-boot key that lives
//! only in this process's memory, certified by the HSM identity key, and a provider's document
//! over it and a verifier's challenge.
//!
//! Invariants: the per-boot key is made at start and never leaves memory (no `Debug`, never
//! persisted; a restart makes another); a document always binds the verifier's challenge as its
//! nonce and the per-boot key as its public key, so it speaks for this boot of code in the TEE,
//! not for whoever can use the identity key elsewhere; `provider = "software"` exists only in
//! development builds (feature `dev-attestation`).

mod ceremony;
mod nitro;
#[cfg(feature = "dev-attestation")]
mod software;

pub use ceremony::{Ceremonies, MAX_CEREMONIES};

use crate::custody::Custody;
use frostgate_common::bounded::{AttestationDocBytes, BootKeyBytes};
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::protocol::{Attestation, AttestationProvider};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// `[attestation]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestationConfig {
    /// `none`, `nitro`, or (development builds) `software`.
    pub provider: String,
    /// `software` only: the document-signing certificate (DER, P-384 key).
    #[serde(default)]
    pub certificate: Option<PathBuf>,
    /// `software` only: its private key (PKCS#8 DER). A test PKI's, never a real one.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// `software` only: the bundle, root first (DER files).
    #[serde(default)]
    pub bundle: Vec<PathBuf>,
    /// `software` only: the PCRs it reports (index -> 48-byte hex).
    #[serde(default)]
    pub pcrs: BTreeMap<u8, String>,
}

/// What makes documents: the NSM device, or the development stand-in.
pub trait Provider: Send + Sync {
    /// Which one.
    fn kind(&self) -> AttestationProvider;
    /// A document whose `public_key` is `public_key` and whose `nonce` is `nonce`.
    fn document(&self, public_key: &[u8], nonce: &[u8]) -> Result<Vec<u8>, Error>;
}

/// The attestor of this boot: its provider and per-boot key.
pub struct Attestor {
    provider: Box<dyn Provider>,
    /// Only the public half is ever read out.
    _boot_secret: p256::SecretKey,
    boot_public: Vec<u8>,
    /// The identity key's certification of the per-boot key, made once (one HSM signature per
    /// boot, not per request).
    certification: std::sync::OnceLock<([u8; 32], [u8; 32])>,
}

impl std::fmt::Debug for Attestor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attestor").field("provider", &self.provider.kind()).finish_non_exhaustive()
    }
}

fn config_err(msg: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::ConfigInvalid, format!("attestation: {msg}"))
}

impl Attestor {
    /// The attestor `config` asks for; `None` without a provider.
    pub fn from_config(config: Option<&AttestationConfig>) -> Result<Option<Attestor>, Error> {
        let Some(c) = config else { return Ok(None) };
        let kind = AttestationProvider::from_name(&c.provider)
            .ok_or_else(|| config_err(format!("unknown provider {:?} (none, nitro, software)", c.provider)))?;
        let software_fields = c.certificate.is_some() || c.key.is_some() || !c.bundle.is_empty() || !c.pcrs.is_empty();
        if kind != AttestationProvider::Software && software_fields {
            return Err(config_err(format!(
                "certificate, key, bundle and pcrs belong to provider \"software\", not {:?} (a real provider's PCRs are measured, not configured)",
                c.provider
            )));
        }
        let provider: Box<dyn Provider> = match kind {
            AttestationProvider::None => return Ok(None),
            AttestationProvider::Nitro => Box::new(nitro::Nsm::open()?),
            AttestationProvider::Software => software(c)?,
        };
        let secret = p256::SecretKey::random(&mut rand_core::OsRng);
        let boot_public = p256::EncodedPoint::from(secret.public_key()).as_bytes().to_vec();
        Ok(Some(Attestor { provider, _boot_secret: secret, boot_public, certification: std::sync::OnceLock::new() }))
    }

    /// The provider.
    pub fn kind(&self) -> AttestationProvider {
        self.provider.kind()
    }

    /// This boot's attestation over `challenge`, its per-boot key certified by the identity key.
    pub fn attest(&self, custody: &Custody, challenge: &[u8; 32]) -> Result<Attestation, Error> {
        let document = self.provider.document(&self.boot_public, challenge)?;
        let (certification_r, certification_s) = match self.certification.get() {
            Some(c) => *c,
            None => {
                let c = custody.identity_sign(&Attestation::certified(&self.boot_public))?;
                *self.certification.get_or_init(|| c)
            }
        };
        Ok(Attestation {
            provider: self.kind(),
            document: AttestationDocBytes::new(document).map_err(|e| Error::new(ErrorCode::Internal, e))?,
            boot_key: BootKeyBytes::new(self.boot_public.clone()).map_err(|e| Error::new(ErrorCode::Internal, e))?,
            certification_r,
            certification_s,
        })
    }
}

/// The answer of an enclave without a provider: every field empty.
pub fn unattested() -> Attestation {
    Attestation {
        provider: AttestationProvider::None,
        document: AttestationDocBytes::new(Vec::new()).unwrap_or_else(|_| unreachable!("empty is in bounds")),
        boot_key: BootKeyBytes::new(Vec::new()).unwrap_or_else(|_| unreachable!("empty is in bounds")),
        certification_r: [0; 32],
        certification_s: [0; 32],
    }
}

#[cfg(feature = "dev-attestation")]
fn software(c: &AttestationConfig) -> Result<Box<dyn Provider>, Error> {
    Ok(Box::new(software::Software::from_config(c)?))
}

#[cfg(not(feature = "dev-attestation"))]
fn software(_: &AttestationConfig) -> Result<Box<dyn Provider>, Error> {
    Err(Error::new(
        ErrorCode::DevFeatureDisabled,
        "attestation provider \"software\" exists only in development builds (feature dev-attestation)",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_real_providers_config_refuses_the_software_fields_and_names_them() {
        let c = AttestationConfig {
            provider: "nitro".into(),
            certificate: None,
            key: None,
            bundle: Vec::new(),
            pcrs: BTreeMap::from([(0, "00".repeat(48))]),
        };
        let e = Attestor::from_config(Some(&c)).expect_err("pcrs with nitro");
        assert_eq!(e.code(), ErrorCode::ConfigInvalid);
        assert!(e.message().contains("software"), "{e}");
        let none = AttestationConfig { provider: "none".into(), pcrs: BTreeMap::new(), ..c.clone() };
        assert!(Attestor::from_config(Some(&none)).expect("none").is_none());
        let unknown = AttestationConfig { provider: "sgx".into(), ..none };
        assert_eq!(Attestor::from_config(Some(&unknown)).expect_err("unknown").code(), ErrorCode::ConfigInvalid);
    }
}

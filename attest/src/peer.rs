//! A peer enclave's attestation checked against its pins: the one check the coordinator, `frostgate
//! status` and every enclave of a ceremony run.
//!
//! A peer's answer ([`Attestation`]) passes only when its document verifies ([`nitro::verify`])
//! with the pins' root, PCRs and debug setting, the expected nonce and the answer's per-boot key,
//! and that per-boot key is certified by the pinned identity key (so the document speaks for the
//! enclave that holds that identity, not for another of the same image). In a ceremony (DKG,
//! refresh, repair) the nonce is [`ceremony_binding`]: every participant's fresh challenge, so
//! each verifier's own challenge makes the document fresh to it.
//!
//! Invariant: pinned means mandatory: a peer answering without a provider is refused
//! ([`Check::Provider`]); there is no downgrade.

use crate::nitro::{self, Document, Expected};
use crate::{Check, Refusal};
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::protocol::{Attestation, AttestationProvider};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A document older than this at the verifier's clock is refused (a second line: the challenge
/// is what makes it fresh).
pub const MAX_AGE_SECS: u64 = 300;

/// An enclave's pinned measurements, as configured (the cluster file's `[nodes.attestation]`,
/// an enclave's `[group]` participant's `attestation`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasurementPins {
    /// The trusted root (PEM); default: the AWS Nitro Enclaves root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<PathBuf>,
    /// PCRs that must be equal, index (as a string key in TOML) -> 48-byte hex. PCR0 (the
    /// image) is required.
    #[serde(default)]
    pub pcrs: BTreeMap<String, String>,
    /// Whether a debug-mode enclave (all-zero PCRs) passes.
    #[serde(default)]
    pub allow_debug: bool,
}

fn config_err(m: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::ConfigInvalid, format!("attestation pins: {m}"))
}

impl MeasurementPins {
    /// The pinned PCRs, checked: PCR0 at least, each index once, 48 bytes each.
    pub fn pcrs(&self) -> Result<BTreeMap<u8, Vec<u8>>, Error> {
        let mut out = BTreeMap::new();
        for (i, v) in &self.pcrs {
            let index: u8 = i.parse().map_err(|_| config_err(format!("PCR index {i:?}")))?;
            let value = hex::decode(v).map_err(|e| config_err(format!("PCR{index}: {e}")))?;
            if value.len() != nitro::PCR_LEN {
                return Err(config_err(format!("PCR{index}: {} bytes, a PCR has {}", value.len(), nitro::PCR_LEN)));
            }
            if out.insert(index, value).is_some() {
                return Err(config_err(format!("PCR{index} is pinned twice")));
            }
        }
        if !out.contains_key(&0) {
            return Err(config_err("PCR0 (the enclave image) must be pinned: without it any image would pass"));
        }
        Ok(out)
    }

    /// The pins of the enclave whose identity key is `identity_key`, read and checked (the
    /// root file too).
    pub fn resolve(&self, identity_key: Vec<u8>) -> Result<Pins, Error> {
        let root = match &self.root {
            None => nitro::aws_root(),
            Some(path) => nitro::read_root(path).map_err(config_err)?,
        };
        Ok(Pins { identity_key, root, pcrs: self.pcrs()?, allow_debug: self.allow_debug })
    }
}

/// Pins, read and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pins {
    /// The identity key (SEC1 uncompressed) that must certify the attested per-boot key.
    pub identity_key: Vec<u8>,
    /// The trusted root (DER).
    pub root: Vec<u8>,
    /// PCRs that must be equal.
    pub pcrs: BTreeMap<u8, Vec<u8>>,
    /// Whether a debug-mode document passes.
    pub allow_debug: bool,
}

/// Checks a peer's attestation against `pins`, with `nonce` expected and `now` (seconds since
/// the Unix epoch) as both the chain's validation time and the age check's clock.
pub fn verify_attestation(a: &Attestation, pins: &Pins, nonce: &[u8], now: u64) -> Result<Document, Refusal> {
    if a.provider == AttestationProvider::None {
        return Err(Refusal::new(Check::Provider, "no attestation provider, but attestation is pinned for it"));
    }
    let expected = Expected {
        root: pins.root.clone(),
        at: now,
        pcrs: pins.pcrs.clone(),
        nonce: Some(nonce.to_vec()),
        public_key: Some(a.boot_key.as_inner().clone()),
        allow_debug: pins.allow_debug,
        max_age: Some((now, MAX_AGE_SECS)),
    };
    let doc = nitro::verify(a.document.as_inner(), &expected)?;
    if !crate::certification_verifies(&pins.identity_key, a.boot_key.as_inner(), &a.certification_r, &a.certification_s)
    {
        return Err(Refusal::new(Check::Certification, "the attested key is not certified by the pinned identity key"));
    }
    Ok(doc)
}

/// The nonce every document of a ceremony binds: SHA-256 over a domain, the ceremony id and
/// every participant's challenge (ascending by participant; the caller gives them so).
pub fn ceremony_binding(ceremony: &[u8], challenges: &[(u16, [u8; 32])]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"frostgate/ceremony-attestation/v1");
    ctx.update(&(ceremony.len() as u64).to_be_bytes());
    ctx.update(ceremony);
    for (participant, challenge) in challenges {
        ctx.update(&participant.to_be_bytes());
        ctx.update(challenge);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The seconds since the Unix epoch at this machine's clock (the verifier's own clock).
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binding_changes_with_every_input() {
        let id = [1u8; 32];
        let base = ceremony_binding(&id, &[(1, [2; 32]), (2, [3; 32])]);
        assert_ne!(base, ceremony_binding(&[9; 32], &[(1, [2; 32]), (2, [3; 32])]));
        assert_ne!(base, ceremony_binding(&id, &[(1, [2; 32]), (2, [4; 32])]));
        assert_ne!(base, ceremony_binding(&id, &[(1, [2; 32]), (3, [3; 32])]));
        assert_ne!(base, ceremony_binding(&id, &[(1, [2; 32])]));
        assert_eq!(base, ceremony_binding(&id, &[(1, [2; 32]), (2, [3; 32])]));
    }

    #[test]
    fn pins_need_pcr0_and_well_formed_values() {
        let pcr = "ab".repeat(48);
        let ok = MeasurementPins { pcrs: BTreeMap::from([("0".into(), pcr.clone())]), ..Default::default() };
        assert_eq!(ok.pcrs().expect("pcr0").len(), 1);
        let no_pcr0 = MeasurementPins { pcrs: BTreeMap::from([("1".into(), pcr.clone())]), ..Default::default() };
        assert!(no_pcr0.pcrs().expect_err("no pcr0").message().contains("PCR0"));
        let short = MeasurementPins { pcrs: BTreeMap::from([("0".into(), "ab".into())]), ..Default::default() };
        assert!(short.pcrs().expect_err("short").message().contains("48"));
        let unattested = Attestation {
            provider: AttestationProvider::None,
            document: frostgate_common::bounded::AttestationDocBytes::new(Vec::new()).expect("empty"),
            boot_key: frostgate_common::bounded::BootKeyBytes::new(Vec::new()).expect("empty"),
            certification_r: [0; 32],
            certification_s: [0; 32],
        };
        let pins = ok.resolve(vec![4; 65]).expect("pins");
        assert_eq!(verify_attestation(&unattested, &pins, &[0; 32], now()).expect_err("none").check, Check::Provider);
    }
}

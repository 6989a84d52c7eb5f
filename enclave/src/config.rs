//! The enclave's configuration file (`enclave.toml`): operator-controlled, never from the host
//! or the network. One section per concern: `[custody]` (the HSM: [`CustodyConfig`]) and
//! `[group]` (the pinned identities a DKG may run with).
//!
//! Invariant: unknown keys are refused (`deny_unknown_fields`); every section is validated before
//! the enclave starts (`config_invalid`).

use crate::custody::config::{config_err, CustodyConfig};
use frostgate_common::error::Error;
use serde::Deserialize;
use std::path::Path;

/// The enclave's configuration file (TOML).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnclaveConfig {
    /// HSM custody. Without it the enclave holds no keys and refuses to sign.
    pub custody: Option<CustodyConfig>,
    /// The signing group's pinned identities. A DKG runs only among exactly these participants
    /// with exactly these identity keys; without it the enclave refuses every DKG.
    pub group: Option<GroupConfig>,
    /// The spending policy (`crate::policy`). Without it the enclave is unrestricted
    /// (development): raw digests are signed and nothing is limited.
    pub policy: Option<crate::policy::PolicyConfig>,
    /// The operator's recovery key (`crate::backup`): seat backups are encrypted to it.
    pub recovery: Option<crate::backup::RecoveryConfig>,
    /// The audit trail's bounds and auditor (`crate::audit`); defaults without it.
    pub audit: Option<crate::audit::AuditConfig>,
    /// TEE attestation (`crate::attestation`); without it the enclave is not attested.
    pub attestation: Option<crate::attestation::AttestationConfig>,
}

/// `[group]`: the participants this enclave may run a DKG with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// Every participant, with its enclave's identity public key (SEC1 uncompressed, hex).
    pub participants: Vec<PinnedParticipant>,
    /// Whether a refresh may remove seats down to the threshold (n = t: no spare seat, so one
    /// lost node loses the key). Off unless the operator sets it; the enclave refuses such a
    /// refresh whatever the coordinator asks.
    #[serde(default)]
    pub allow_removal_to_threshold: bool,
}

/// One pinned participant.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinnedParticipant {
    /// Participant id.
    pub id: u16,
    /// Identity public key, hex (65 bytes, starting 04).
    pub identity_key: String,
    /// Its enclave's pinned measurements (PCR0 at least; the root, debug mode): once set, this
    /// enclave runs no DKG, refresh or repair with it before its attestation verified
    /// (`crate::attestation::ceremony`).
    #[serde(default)]
    pub attestation: Option<frostgate_attest::peer::MeasurementPins>,
}

impl GroupConfig {
    /// The pins as (participant, key bytes), validated.
    pub fn pins(&self) -> Result<std::collections::BTreeMap<frostgate_common::ids::ParticipantId, Vec<u8>>, Error> {
        let mut out = std::collections::BTreeMap::new();
        for p in &self.participants {
            let id = frostgate_common::ids::ParticipantId::new(p.id).map_err(|e| config_err(format!("group: {e}")))?;
            let key = hex::decode(&p.identity_key)
                .map_err(|_| config_err(format!("group: participant {id}: identity_key is not hex")))?;
            if key.len() != 65 || key[0] != 4 {
                return Err(config_err(format!(
                    "group: participant {id}: identity_key is not an uncompressed P-256 point"
                )));
            }
            if out.insert(id, key).is_some() {
                return Err(config_err(format!("group: participant {id} is listed twice")));
            }
        }
        Ok(out)
    }

    /// The participants pinned with `attestation`, their pins read and checked.
    pub fn attestation_pins(
        &self,
    ) -> Result<std::collections::BTreeMap<frostgate_common::ids::ParticipantId, frostgate_attest::peer::Pins>, Error>
    {
        let keys = self.pins()?;
        let mut out = std::collections::BTreeMap::new();
        for (p, (id, key)) in self.participants.iter().filter_map(|p| {
            let id = frostgate_common::ids::ParticipantId::new(p.id).ok()?;
            Some((p, (id, keys.get(&id)?.clone())))
        }) {
            if let Some(m) = &p.attestation {
                let pins =
                    m.resolve(key).map_err(|e| config_err(format!("group: participant {id}: {}", e.message())))?;
                out.insert(id, pins);
            }
        }
        Ok(out)
    }
}

impl EnclaveConfig {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| config_err(format!("reading {}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| config_err(format!("{}: {}", path.display(), e.message())))
    }

    /// Parses and validates configuration text.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let config: EnclaveConfig = toml::from_str(text).map_err(|e| config_err(e.message()))?;
        if let Some(c) = &config.custody {
            c.validate()?;
        }
        if let Some(g) = &config.group {
            g.attestation_pins()?;
        }
        if let Some(p) = &config.policy {
            crate::policy::Policy::from_config(p)?;
        }
        if let Some(a) = &config.audit {
            crate::audit::AuditRules::from_config(a)?;
        }
        Ok(config)
    }
}

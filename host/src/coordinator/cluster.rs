//! The cluster file: the nodes of one signing group as the CLI and the coordinator see them.

use crate::api::tls::TlsFiles;
use frostgate_attest::peer::{MeasurementPins, Pins};
use frostgate_common::error::{Error, ErrorCode};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// `cluster.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// Signatures need this many nodes.
    pub threshold: u16,
    /// The coordinator's TLS identity (certificate and key), for nodes that require mutual TLS.
    pub tls: Option<ClientIdentity>,
    /// The nodes, by participant id.
    pub nodes: Vec<NodeEntry>,
}

/// A client's own TLS certificate and key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientIdentity {
    /// Certificate (PEM); each node pins it.
    pub cert: PathBuf,
    /// Private key (PEM, PKCS#8).
    pub key: PathBuf,
}

/// One node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    /// Participant id.
    pub id: u16,
    /// The node's directory (logs, pid files).
    pub dir: PathBuf,
    /// The node's network API, `IP:PORT`, as clients reach it.
    pub api: String,
    /// Where the node binds its API (default: `api`), e.g. `0.0.0.0:PORT` with TLS.
    pub api_listen: Option<String>,
    /// The node's TLS certificate (PEM), pinned: set = the node requires mutual TLS.
    pub server_cert: Option<PathBuf>,
    /// The enclave's socket.
    pub enclave_socket: PathBuf,
    /// The host store.
    pub db: PathBuf,
    /// The enclave configuration.
    pub enclave_config: PathBuf,
    /// The SoftHSM configuration of the node's token (development clusters).
    pub softhsm_conf: Option<PathBuf>,
    /// The kind of the node's development token when not SoftHSM (`kryoptic`, `tpm2`,
    /// `opencryptoki`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Two users (development clusters made by root): the enclave's user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enclave_user: Option<String>,
    /// Two users: the host's user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_user: Option<String>,
    /// Attestation pins: once set, the node must attest itself with these measurements
    /// (`provider = "none"` then fails: no downgrade).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<AttestationPins>,
}

/// A node's pinned attestation.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestationPins {
    /// The node's enclave identity key (SEC1 uncompressed, hex): the attested per-boot key must
    /// be certified by this key, and the node must report it (so another enclave of the same
    /// image cannot answer for this node).
    pub identity_key: String,
    /// The trusted root (PEM); default: the AWS Nitro Enclaves root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<PathBuf>,
    /// PCRs that must be equal, index (as a string key in TOML) -> 48-byte hex.
    #[serde(default)]
    pub pcrs: std::collections::BTreeMap<String, String>,
    /// Whether a debug-mode enclave (all-zero PCRs) passes.
    #[serde(default)]
    pub allow_debug: bool,
}

impl AttestationPins {
    /// The measurements alone (the schema an enclave's `[group]` pins share).
    pub fn measurements(&self) -> MeasurementPins {
        MeasurementPins { root: self.root.clone(), pcrs: self.pcrs.clone(), allow_debug: self.allow_debug }
    }

    /// The pins read and checked (PCR0 at least; the root file read).
    pub fn resolve(&self) -> Result<Pins, Error> {
        self.measurements().resolve(self.identity()?)
    }

    /// The pinned PCRs, checked: PCR0 (the image) at least, each index once.
    pub fn pcrs(&self) -> Result<std::collections::BTreeMap<u8, Vec<u8>>, Error> {
        self.measurements().pcrs()
    }

    /// The pinned identity key, checked.
    pub fn identity(&self) -> Result<Vec<u8>, Error> {
        match hex::decode(&self.identity_key) {
            Ok(k) if k.len() == 65 && k[0] == 4 => Ok(k),
            _ => Err(Error::new(
                ErrorCode::ConfigInvalid,
                "attestation pins: identity_key is not an uncompressed P-256 point (hex)",
            )),
        }
    }
}

impl Cluster {
    /// Reads and checks a cluster file.
    pub fn load(path: &Path) -> Result<Cluster, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::new(ErrorCode::ConfigInvalid, format!("reading {}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| Error::new(e.code(), format!("{}: {}", path.display(), e.message())))
    }

    /// Parses and checks the text of a cluster file.
    pub fn parse(text: &str) -> Result<Cluster, Error> {
        let c: Cluster = toml::from_str(text).map_err(|e| Error::new(ErrorCode::ConfigInvalid, e.message()))?;
        let n = c.nodes.len() as u16;
        if c.threshold < 2 || c.threshold > n || c.nodes.iter().enumerate().any(|(i, node)| node.id != i as u16 + 1) {
            return Err(Error::new(ErrorCode::ConfigInvalid, "a t-of-n cluster with nodes 1..=n in order"));
        }
        if c.tls.is_none() && c.nodes.iter().any(|n| n.server_cert.is_some()) {
            return Err(Error::new(
                ErrorCode::ConfigInvalid,
                "nodes with server_cert need the coordinator's [tls] identity",
            ));
        }
        Ok(c)
    }

    /// How a client of this cluster speaks TLS to `node`: `None` = plain (loopback).
    pub fn tls_for(&self, node: &NodeEntry) -> Option<TlsFiles> {
        let (server_cert, me) = (node.server_cert.as_ref()?, self.tls.as_ref()?);
        Some(TlsFiles { cert: me.cert.clone(), key: me.key.clone(), peers: vec![server_cert.clone()] })
    }

    /// Writes the cluster file.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let text = toml::to_string_pretty(self).map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
        std::fs::write(path, text)
            .map_err(|e| Error::new(ErrorCode::ConfigInvalid, format!("writing {}: {e}", path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pins(pcrs: &[(&str, &str)]) -> AttestationPins {
        AttestationPins {
            identity_key: format!("04{}", "11".repeat(64)),
            pcrs: pcrs.iter().map(|(i, v)| (i.to_string(), v.to_string())).collect(),
            ..AttestationPins::default()
        }
    }

    #[test]
    fn attestation_pins_need_pcr0_once_each_and_a_well_formed_identity() {
        let pcr = "ab".repeat(48);
        assert_eq!(pins(&[("0", &pcr), ("8", &pcr)]).pcrs().expect("valid").len(), 2);
        let e = pins(&[("8", &pcr)]).pcrs().expect_err("no PCR0");
        assert!(e.message().contains("PCR0"), "{e}");
        let e = pins(&[("0", &pcr), ("00", &pcr)]).pcrs().expect_err("twice");
        assert!(e.message().contains("twice"), "{e}");
        assert!(pins(&[("0", "abcd")]).pcrs().is_err(), "a short PCR");
        assert_eq!(pins(&[]).identity().expect("identity").len(), 65);
        let bad = AttestationPins { identity_key: "02".repeat(33), ..pins(&[]) };
        assert_eq!(bad.identity().expect_err("compressed").code(), ErrorCode::ConfigInvalid);
    }
}

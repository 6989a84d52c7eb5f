//! `frostgate keygen | sign | verify | pubkey | status`: operations on a cluster.

use super::out;
use bitcoin::key::TweakedPublicKey;
use bitcoin::secp256k1::XOnlyPublicKey;
use clap::{Args, ValueEnum};
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::ids::KeyId;
use frostgate_common::protocol::{Bip340Signature, Health, ServiceState, TaprootMode};
use frostgate_host::coordinator::cluster::Cluster;
use frostgate_host::coordinator::dkg_relay;
use frostgate_host::coordinator::{self, Settings, SignRequest};
use serde::Serialize;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Bitcoin networks for addresses.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Network {
    /// Mainnet.
    Bitcoin,
    /// Testnet.
    Testnet,
    /// Signet.
    Signet,
    /// Regtest.
    Regtest,
}

impl From<Network> for bitcoin::Network {
    fn from(n: Network) -> Self {
        match n {
            Network::Bitcoin => bitcoin::Network::Bitcoin,
            Network::Testnet => bitcoin::Network::Testnet,
            Network::Signet => bitcoin::Network::Signet,
            Network::Regtest => bitcoin::Network::Regtest,
        }
    }
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// The cluster file.
    #[arg(long)]
    cluster: PathBuf,
    /// Network for the printed address.
    #[arg(long, value_enum, default_value = "regtest")]
    network: Network,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// The cluster file.
    #[arg(long)]
    cluster: PathBuf,
    /// The key id (x-only internal key, hex).
    #[arg(long)]
    key: String,
    /// The 32-byte message (e.g. a BIP341 sighash), hex.
    #[arg(long)]
    message: String,
    /// Sign for a script-tree output with this merkle root (hex); default: BIP86 key-path output.
    #[arg(long, conflicts_with = "untweaked")]
    merkle_root: Option<String>,
    /// Plain BIP340 under the internal key (no Taproot tweak).
    #[arg(long)]
    untweaked: bool,
    /// Sign for the key's child at this unhardened path (e.g. `0/5`, as `frostgate address` prints).
    #[arg(long)]
    path: Option<String>,
    /// Per-signer deadline, milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The x-only key the signature must verify under (hex).
    #[arg(long)]
    output_key: String,
    /// The 32-byte message, hex.
    #[arg(long)]
    message: String,
    /// The 64-byte BIP340 signature, hex.
    #[arg(long)]
    signature: String,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct PubkeyArgs {
    /// The cluster file.
    #[arg(long)]
    cluster: PathBuf,
    /// The key id.
    #[arg(long)]
    key: String,
    /// Network for the printed address.
    #[arg(long, value_enum, default_value = "regtest")]
    network: Network,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The cluster file.
    #[arg(long)]
    cluster: PathBuf,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

fn hex32(what: &str, s: &str) -> Result<[u8; 32], Error> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out)
        .map_err(|_| Error::new(ErrorCode::ConfigInvalid, format!("{what} must be 32 bytes of hex")))?;
    Ok(out)
}

fn address(output_key: &[u8; 32], network: Network) -> Result<String, Error> {
    let key = XOnlyPublicKey::from_slice(output_key).map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
    Ok(bitcoin::Address::p2tr_tweaked(TweakedPublicKey::dangerous_assume_tweaked(key), bitcoin::Network::from(network))
        .to_string())
}

/// What `keygen` and `pubkey` print.
#[derive(Debug, Serialize)]
struct KeyRow {
    key: String,
    internal_key: String,
    output_key: String,
    address: String,
    threshold: u16,
    participants: Vec<u16>,
}

impl KeyRow {
    fn new(
        key: &KeyId,
        output_key: &[u8; 32],
        threshold: u16,
        participants: Vec<u16>,
        network: Network,
    ) -> Result<Self, Error> {
        Ok(KeyRow {
            key: key.to_string(),
            internal_key: key.to_string(),
            output_key: hex::encode(output_key),
            address: address(output_key, network)?,
            threshold,
            participants,
        })
    }

    fn print(&self, json: bool) {
        if json {
            out(&format!("{}\n", serde_json::json!(self)));
        } else {
            out(&format!(
                "key id (internal key): {}\noutput key (BIP86):   {}\naddress:              {}\nthreshold:            {}-of-{}\n",
                self.key,
                self.output_key,
                self.address,
                self.threshold,
                self.participants.len(),
            ));
        }
    }
}

pub async fn keygen(a: KeygenArgs) -> Result<(), Error> {
    let cluster = Cluster::load(&a.cluster)?;
    let nodes = dkg_relay::connect_all(&cluster).await;
    frostgate_host::coordinator::attestation::require_pinned(&cluster, &nodes).await?;
    let key = dkg_relay::run(&nodes, cluster.threshold).await?;
    let participants = key.participants.as_inner().iter().map(|p| p.get()).collect();
    KeyRow::new(&key.key, &key.bip86_output_key, key.threshold, participants, a.network)?.print(a.json);
    Ok(())
}

pub async fn pubkey(a: PubkeyArgs) -> Result<(), Error> {
    let cluster = Cluster::load(&a.cluster)?;
    let key = KeyId::from_str(&a.key).map_err(|e| Error::new(ErrorCode::ConfigInvalid, e))?;
    let nodes = dkg_relay::connect_all(&cluster).await;
    // The package `threshold` nodes agree on, never one node's word; the output key is ours.
    let material = coordinator::KeyMaterial::fetch(&nodes, &key, cluster.threshold, Settings::default()).await?;
    for ev in material.disagreeing() {
        tracing::warn!(signer = ev.signer, reason = %ev.reason, "node disagrees about the key's public package");
    }
    let output_key = material.output_key(&TaprootMode::Bip86)?;
    KeyRow::new(&key, &output_key, material.threshold(), material.participants(), a.network)?.print(a.json);
    Ok(())
}

pub async fn sign(a: SignArgs) -> Result<(), Error> {
    let cluster = Cluster::load(&a.cluster)?;
    let key = KeyId::from_str(&a.key).map_err(|e| Error::new(ErrorCode::ConfigInvalid, e))?;
    let message = hex32("--message", &a.message)?;
    let mode = match (&a.merkle_root, a.untweaked) {
        (Some(root), _) => TaprootMode::ScriptTree { merkle_root: hex32("--merkle-root", root)? },
        (None, true) => TaprootMode::Untweaked,
        (None, false) => TaprootMode::Bip86,
    };
    let nodes = dkg_relay::connect_all(&cluster).await;
    let settings = Settings::with_timeout(Duration::from_millis(a.timeout_ms));
    let path = match &a.path {
        None => Vec::new(),
        Some(p) => p
            .split('/')
            .map(|s| s.parse::<u32>().ok().filter(|i| *i < 1 << 31))
            .collect::<Option<Vec<u32>>>()
            .ok_or_else(|| {
            Error::new(ErrorCode::ConfigInvalid, format!("--path {p:?}: unhardened steps like 0/5"))
        })?,
    };
    let request = SignRequest { key, message, mode, psbt: None, path, request: None };
    let signing = coordinator::Signing::open(&nodes, &key, cluster.threshold, settings).await?;
    let signed = signing.sign(request).await;
    signing.finish().await;
    match signed {
        Ok(s) => {
            if a.json {
                out(&format!(
                    "{}\n",
                    serde_json::to_value(&s).map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?
                ));
            } else {
                let mut t = format!(
                    "signature:  {}\noutput key: {}\nsigners:    {:?} ({} attempt(s))\n",
                    s.signature, s.output_key, s.signers, s.attempts
                );
                for e in &s.excluded {
                    t.push_str(&format!(
                        "excluded:   node {} ({} at {}{})\n",
                        e.signer,
                        e.reason,
                        e.step,
                        e.code.as_ref().map(|c| format!(", {c}")).unwrap_or_default()
                    ));
                }
                out(&t);
            }
            Ok(())
        }
        Err((e, excluded)) => {
            for ev in excluded {
                tracing::warn!(signer = ev.signer, reason = %ev.reason, step = %ev.step, "excluded");
            }
            Err(e)
        }
    }
}

pub fn verify(a: VerifyArgs) -> Result<(), Error> {
    let key = hex32("--output-key", &a.output_key)?;
    let message = hex32("--message", &a.message)?;
    let mut sig = [0u8; 64];
    hex::decode_to_slice(&a.signature, &mut sig)
        .map_err(|_| Error::new(ErrorCode::ConfigInvalid, "--signature must be 64 bytes of hex"))?;
    let (r, s) = sig.split_at(32);
    let signature = Bip340Signature { r: r.try_into().unwrap_or([0; 32]), s: s.try_into().unwrap_or([0; 32]) };
    let valid = coordinator::libsecp_verifies(&signature, &message, &key);
    if a.json {
        out(&format!("{}\n", serde_json::json!({"valid": valid, "verifier": "libsecp256k1"})));
    } else {
        out(&format!("{} (libsecp256k1 BIP340)\n", if valid { "valid" } else { "INVALID" }));
    }
    if valid {
        Ok(())
    } else {
        Err(Error::new(ErrorCode::SigningFailed, "the signature does not verify"))
    }
}

/// A node's state as `status` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum NodeState {
    /// Serving.
    Ready,
    /// Answering, and refusing to sign (with the code).
    Refusing,
    /// Neither its host nor its enclave answered.
    Down,
}

/// Who answered for a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Via {
    /// Its host (the network API).
    Host,
    /// Its enclave directly, the host being down.
    Enclave,
}

/// The stable code string of an error code, for the JSON edge.
fn code_name<S: serde::Serializer>(code: &Option<ErrorCode>, s: S) -> Result<S::Ok, S::Error> {
    match code {
        Some(c) => s.serialize_str(c.code()),
        None => s.serialize_none(),
    }
}

/// One node's line of `status`: typed; strings only at the edge (JSON, text).
#[derive(Debug, Serialize)]
struct StatusRow {
    node: u16,
    state: NodeState,
    #[serde(skip_serializing_if = "Option::is_none")]
    via: Option<Via>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "code_name")]
    code: Option<ErrorCode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    recovery_class: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dev_features: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uptime_seconds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    host_reconnects: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    enclave_restarts: Option<u64>,
    /// SHA-256 of the enclave's spending policy (hex).
    #[serde(skip_serializing_if = "Option::is_none")]
    policy_hash: Option<String>,
    /// The custody profile in force (`full`, `cbc_hmac`, `aes_only`).
    #[serde(skip_serializing_if = "Option::is_none")]
    custody_profile: Option<frostgate_common::protocol::CustodyProfile>,
    /// Sessions open in the enclave now.
    #[serde(skip_serializing_if = "Option::is_none")]
    open_sessions: Option<u64>,
    /// Its TEE attestation, checked against the cluster file's pins.
    #[serde(skip_serializing_if = "Option::is_none")]
    attestation: Option<frostgate_host::coordinator::attestation::Attested>,
}

impl StatusRow {
    fn health(node: u16, via: Via, h: &frostgate_common::protocol::HealthReply) -> Self {
        let (state, code) = match h.state {
            ServiceState::Ready => (NodeState::Ready, None),
            ServiceState::Refusing(code) => (NodeState::Refusing, Some(code)),
        };
        StatusRow {
            node,
            state,
            via: Some(via),
            code,
            recovery_class: code.map(|c| c.recovery_class().as_str()),
            dev_features: Some(h.dev_features.as_inner().clone()),
            uptime_seconds: Some(h.uptime_seconds),
            host_reconnects: Some(h.host_reconnects),
            enclave_restarts: Some(h.enclave_restarts),
            policy_hash: Some(hex::encode(h.policy_hash)),
            custody_profile: h.custody_profile,
            open_sessions: Some(h.open_sessions),
            attestation: None,
        }
    }

    fn down(node: u16, e: &Error) -> Self {
        StatusRow {
            node,
            state: NodeState::Down,
            via: None,
            code: Some(e.code()),
            recovery_class: Some(e.recovery_class().as_str()),
            dev_features: None,
            uptime_seconds: None,
            host_reconnects: None,
            enclave_restarts: None,
            policy_hash: None,
            custody_profile: None,
            open_sessions: None,
            attestation: None,
        }
    }

    fn text(&self) -> String {
        let code = self.code.map(|c| format!(" ({})", c.code())).unwrap_or_default();
        let restarts = match (self.enclave_restarts.unwrap_or(0), self.host_reconnects.unwrap_or(0)) {
            (0, 0) => String::new(),
            (restarts, reconnects) => format!(" [enclave restarted {restarts}x, reconnected {reconnects}x]"),
        };
        let dev = match self.dev_features.as_deref() {
            Some(f) if !f.is_empty() => format!(" [DEVELOPMENT BUILD: {f}]"),
            _ => String::new(),
        };
        let policy =
            self.policy_hash.as_deref().map(|h| format!(" policy {}", &h[..16.min(h.len())])).unwrap_or_default();
        let custody = self.custody_profile.map(|p| format!(" custody {p}")).unwrap_or_default();
        let sessions = self.open_sessions.map(|n| format!(" sessions {n}")).unwrap_or_default();
        use frostgate_host::coordinator::attestation::Attested;
        let attested = match &self.attestation {
            None | Some(Attested::None) => String::new(),
            Some(Attested::Verified { provider, pcrs, .. }) => {
                let pcr0 = pcrs.get(&0).map(|p| &p[..16.min(p.len())]).unwrap_or("-");
                format!(" attested {provider} pcr0 {pcr0}")
            }
            Some(Attested::Unpinned { provider, pcrs, .. }) => {
                let pcr0 = pcrs.get(&0).map(|p| &p[..16.min(p.len())]).unwrap_or("-");
                format!(" {provider} document, NOT PINNED (pcr0 {pcr0})")
            }
            Some(Attested::Refused { check, detail }) => format!(" ATTESTATION REFUSED ({check}: {detail})"),
        };
        let state = match self.state {
            NodeState::Ready => "ready",
            NodeState::Refusing => "refusing",
            NodeState::Down => "down",
        };
        format!("node {}: {state}{code}{custody}{sessions}{attested}{policy}{restarts}{dev}\n", self.node)
    }
}

pub async fn status(a: StatusArgs) -> Result<(), Error> {
    let cluster = Cluster::load(&a.cluster)?;
    let clients = dkg_relay::connect_all(&cluster).await;
    let mut rows = Vec::new();
    for (n, entry) in clients.iter().zip(&cluster.nodes) {
        let row = match n.call(Health, Duration::from_secs(5)).await {
            Ok(h) => {
                let mut row = StatusRow::health(n.id().get(), Via::Host, &h);
                let pins = entry.attestation.as_ref();
                row.attestation =
                    Some(frostgate_host::coordinator::attestation::check(n, pins, Duration::from_secs(5)).await);
                row
            }
            // The host is down: its enclave may still run and know why (e.g. the host's store
            // failed verification and the enclave refuses with store_rollback_detected).
            Err(host_err) => {
                let enclave = frostgate_common::transport::Address::Unix(entry.enclave_socket.clone());
                match frostgate_host::node::enclave::EnclaveClient::connect(enclave).await {
                    Ok(client) => match client.health().await {
                        Ok(h) => {
                            let mut row = StatusRow::health(n.id().get(), Via::Enclave, &h);
                            // Pinned, but not checked (the host is down): not attested.
                            if entry.attestation.is_some() {
                                row.attestation = Some(frostgate_host::coordinator::attestation::Attested::Refused {
                                    check: "unchecked".into(),
                                    detail: "the node's host is down: its attestation could not be checked".into(),
                                });
                            }
                            row
                        }
                        Err(e) => StatusRow::down(n.id().get(), &e),
                    },
                    Err(_) => StatusRow::down(n.id().get(), &host_err),
                }
            }
        };
        rows.push(row);
    }
    if a.json {
        out(&format!("{}\n", serde_json::json!({"nodes": rows})));
    } else {
        out(&rows.iter().map(StatusRow::text).collect::<String>());
    }
    // A node refused for its attestation fails the command (after everything was shown).
    match rows.iter().find_map(|r| r.attestation.as_ref().and_then(|a| a.error())) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

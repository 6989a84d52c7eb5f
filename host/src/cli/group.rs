//! `frostgate keygen | sign | verify | pubkey | status`: operations on a cluster.

use super::out;
use bitcoin::key::TweakedPublicKey;
use bitcoin::secp256k1::XOnlyPublicKey;
use clap::{Args, ValueEnum};
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::ids::KeyId;
use frostgate_common::protocol::{Bip340Signature, Health, KeyInfo, ServiceState, TaprootMode};
use frostgate_host::cluster::Cluster;
use frostgate_host::coordinator::{self, Settings, SignRequest};
use frostgate_host::dkg_relay;
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

fn describe(k: &KeyInfo, network: Network) -> Result<serde_json::Value, Error> {
    Ok(serde_json::json!({
        "key": k.key.to_string(),
        "internal_key": k.key.to_string(),
        "output_key": hex::encode(k.bip86_output_key),
        "address": address(&k.bip86_output_key, network)?,
        "threshold": k.threshold,
        "participants": k.participants.as_inner().iter().map(|p| p.get()).collect::<Vec<_>>(),
    }))
}

fn print_key(v: &serde_json::Value, json: bool) {
    if json {
        out(&format!("{v}\n"));
    } else {
        out(&format!(
            "key id (internal key): {}\noutput key (BIP86):   {}\naddress:              {}\nthreshold:            {}-of-{}\n",
            v["key"].as_str().unwrap_or(""),
            v["output_key"].as_str().unwrap_or(""),
            v["address"].as_str().unwrap_or(""),
            v["threshold"],
            v["participants"].as_array().map(Vec::len).unwrap_or(0),
        ));
    }
}

pub async fn keygen(a: KeygenArgs) -> Result<(), Error> {
    let cluster = Cluster::load(&a.cluster)?;
    let nodes = dkg_relay::connect_all(&cluster).await;
    let key = dkg_relay::run(&nodes, cluster.threshold).await?;
    print_key(&describe(&key, a.network)?, a.json);
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
    let v = serde_json::json!({
        "key": key.to_string(),
        "internal_key": key.to_string(),
        "output_key": hex::encode(output_key),
        "address": address(&output_key, a.network)?,
        "threshold": material.threshold(),
        "participants": material.participants(),
    });
    print_key(&v, a.json);
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
    let settings = Settings { signer_timeout: Duration::from_millis(a.timeout_ms) };
    match coordinator::sign(nodes, SignRequest { key, message, mode }, cluster.threshold, settings).await {
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

fn health_row(node: u16, via: &str, h: &frostgate_common::protocol::HealthReply) -> serde_json::Value {
    let mut row = match &h.state {
        ServiceState::Ready => serde_json::json!({"node": node, "state": "ready", "via": via}),
        ServiceState::Refusing(code) => serde_json::json!({"node": node, "state": "refusing", "via": via,
            "code": code.code(), "recovery_class": code.recovery_class().as_str()}),
    };
    row["dev_features"] = h.dev_features.as_inner().as_str().into();
    row["uptime_seconds"] = h.uptime_seconds.into();
    row["host_reconnects"] = h.host_reconnects.into();
    row["enclave_restarts"] = h.enclave_restarts.into();
    row
}

pub async fn status(a: StatusArgs) -> Result<(), Error> {
    let cluster = Cluster::load(&a.cluster)?;
    let clients = dkg_relay::connect_all(&cluster).await;
    let mut rows = Vec::new();
    for (n, entry) in clients.iter().zip(&cluster.nodes) {
        let row = match n.call(Health, Duration::from_secs(5)).await {
            Ok(h) => health_row(n.id().get(), "host", &h),
            // The host is down: its enclave may still run and know why (e.g. the host's store
            // failed verification and the enclave refuses with store_rollback_detected).
            Err(host_err) => {
                let enclave = frostgate_common::transport::Address::Unix(entry.enclave_socket.clone());
                match frostgate_host::enclave::EnclaveClient::connect(enclave).await {
                    Ok(client) => match client.health().await {
                        Ok(h) => health_row(n.id().get(), "enclave", &h),
                        Err(e) => serde_json::json!({"node": n.id().get(), "state": "down", "code": e.code().code(),
                            "recovery_class": e.recovery_class().as_str()}),
                    },
                    Err(_) => serde_json::json!({"node": n.id().get(), "state": "down", "code": host_err.code().code(),
                        "recovery_class": host_err.recovery_class().as_str()}),
                }
            }
        };
        rows.push(row);
    }
    if a.json {
        out(&format!("{}\n", serde_json::json!({"nodes": rows})));
    } else {
        let mut t = String::new();
        for r in &rows {
            t.push_str(&format!(
                "node {}: {}{}{}{}\n",
                r["node"],
                r["state"].as_str().unwrap_or(""),
                r["code"].as_str().map(|c| format!(" ({c})")).unwrap_or_default(),
                match (r["enclave_restarts"].as_u64(), r["host_reconnects"].as_u64()) {
                    (Some(0) | None, Some(0) | None) => String::new(),
                    (restarts, reconnects) => format!(
                        " [enclave restarted {}x, reconnected {}x]",
                        restarts.unwrap_or(0),
                        reconnects.unwrap_or(0)
                    ),
                },
                r["dev_features"]
                    .as_str()
                    .filter(|f| !f.is_empty())
                    .map(|f| format!(" [DEVELOPMENT BUILD: {f}]"))
                    .unwrap_or_default()
            ));
        }
        out(&t);
    }
    Ok(())
}

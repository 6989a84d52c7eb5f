//! `frostgate sign-psbt | audit | policy`: spending under the enclaves' policies.

use super::out;
use bitcoin::hashes::Hash;
use clap::Args;
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::ids::KeyId;
use frostgate_common::protocol::{AuditDecision, AuditEntry, GetAudit};
use frostgate_host::coordinator::cluster::Cluster;
use frostgate_host::coordinator::{self, dkg_relay, psbt, Settings};
use serde::Serialize;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct SignPsbtArgs {
    /// The cluster file.
    #[arg(long)]
    cluster: PathBuf,
    /// The key id (x-only internal key, hex).
    #[arg(long)]
    key: String,
    /// The PSBT: base64 (as Bitcoin Core writes it) or binary.
    #[arg(long)]
    psbt: PathBuf,
    /// Write the signed PSBT (base64) here instead of stdout (a new file; never through a link).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Overwrite an existing `--out` file.
    #[arg(long)]
    force: bool,
    /// Also finalize: final witnesses and the raw transaction.
    #[arg(long)]
    finalize: bool,
    /// Per-signer deadline, milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Print one JSON object: `{"psbt": .., "tx": .., "txid": .., "inputs": [..]}`.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The cluster file.
    #[arg(long)]
    cluster: PathBuf,
    /// The node (participant id).
    #[arg(long)]
    node: u16,
    /// Print one JSON object per line.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct SignedPsbt {
    psbt: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    tx: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    txid: Option<String>,
    /// The inputs signed.
    inputs: Vec<usize>,
}

fn io(what: &str, e: std::io::Error) -> Error {
    Error::new(ErrorCode::ConfigInvalid, format!("{what}: {e}"))
}

pub async fn sign_psbt(a: SignPsbtArgs) -> Result<(), Error> {
    let cluster = Cluster::load(&a.cluster)?;
    let key = KeyId::from_str(&a.key).map_err(|e| Error::new(ErrorCode::ConfigInvalid, e))?;
    if let Some(path) = &a.out {
        super::output::check_new(path, a.force)?;
    }
    let bytes = std::fs::read(&a.psbt).map_err(|e| io(&a.psbt.display().to_string(), e))?;
    let mut signed = psbt::parse(&bytes)?;
    let nodes = dkg_relay::connect_all(&cluster).await;
    let settings = Settings::with_timeout(Duration::from_millis(a.timeout_ms));
    let material = coordinator::KeyMaterial::fetch(&nodes, &key, cluster.threshold, settings).await?;
    let requests = psbt::requests(&signed, &key, &material.group_key()?)?;
    let mut inputs = Vec::new();
    let requests_len = requests.len();
    for (n, request) in requests {
        let result = coordinator::sign_with(nodes.clone(), request, settings, material.clone()).await;
        if result.is_err() || inputs.len() + 1 == requests_len {
            coordinator::flush_closing(&nodes).await;
        }
        match result {
            Ok(s) => {
                psbt::fill(&mut signed, n, &s.bip340)?;
                inputs.push(n);
            }
            Err((e, excluded)) => {
                for ev in excluded {
                    tracing::warn!(signer = ev.signer, reason = %ev.reason, step = %ev.step,
                        code = ev.code.as_deref().unwrap_or(""), "{}", ev.message.as_deref().unwrap_or("excluded"));
                }
                return Err(Error::new(e.code(), format!("input {n}: {}", e.message())));
            }
        }
    }
    let (tx, txid) = if a.finalize {
        let tx = psbt::finalize(&mut signed)?;
        (Some(bitcoin::consensus::encode::serialize_hex(&tx)), Some(tx.compute_txid().to_string()))
    } else {
        (None, None)
    };
    let result = SignedPsbt { psbt: signed.to_string(), tx, txid, inputs };
    if let Some(path) = &a.out {
        super::output::write_new(path, format!("{}\n", result.psbt).as_bytes(), a.force)?;
    }
    if a.json {
        out(&format!("{}\n", serde_json::json!(result)));
    } else {
        let mut t = String::new();
        if a.out.is_none() {
            t.push_str(&format!("{}\n", result.psbt));
        }
        if let (Some(tx), Some(txid)) = (&result.tx, &result.txid) {
            t.push_str(&format!("txid: {txid}\ntx:   {tx}\n"));
        }
        out(&t);
    }
    Ok(())
}

/// One audit record as printed.
#[derive(Debug, Serialize)]
struct AuditRow {
    seq: u64,
    at_unix: u64,
    decision: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    rule: String,
    session: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempt: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seat: Option<u16>,
    key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    txid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    input: Option<u32>,
    #[serde(skip_serializing_if = "String::is_empty")]
    path: String,
    raw_digest: bool,
    outputs: Vec<(String, u64)>,
    fee_sats: u64,
    policy_hash: String,
}

impl AuditRow {
    fn new(e: &AuditEntry) -> Self {
        AuditRow {
            seq: e.seq,
            at_unix: e.at_unix,
            decision: match e.decision {
                AuditDecision::Approved => "approved",
                AuditDecision::Refused => "refused",
                AuditDecision::Signed => "signed",
            },
            rule: e.rule.as_inner().clone(),
            session: e.session.to_string(),
            attempt: e.attempt.map(|a| a.to_string()),
            seat: e.seat.map(|p| p.get()),
            key: e.key.to_string(),
            // Displayed like Bitcoin Core does (reversed byte order).
            txid: e.txid.map(|t| bitcoin::Txid::from_byte_array(t).to_string()),
            input: e.input,
            path: e.path.as_inner().clone(),
            raw_digest: e.raw_digest,
            outputs: e.outputs.as_inner().iter().map(|o| (o.to.as_inner().clone(), o.sats)).collect(),
            fee_sats: e.fee_sats,
            policy_hash: hex::encode(e.policy_hash),
        }
    }

    fn text(&self) -> String {
        let what = match (&self.txid, self.raw_digest) {
            (Some(txid), _) => format!("tx {txid} input {}", self.input.unwrap_or(0)),
            (None, true) => "raw digest".to_string(),
            (None, false) => format!("session {}", self.session),
        };
        let outputs: Vec<String> = self.outputs.iter().map(|(to, sats)| format!("{sats} sats to {to}")).collect();
        format!(
            "#{} {} {}{}{}{}\n",
            self.seq,
            self.decision,
            what,
            if outputs.is_empty() {
                String::new()
            } else {
                format!(" ({}, fee {})", outputs.join(", "), self.fee_sats)
            },
            if self.rule.is_empty() { String::new() } else { format!(": {}", self.rule) },
            self.seat.map(|s| format!(" [seat {s}]")).unwrap_or_default(),
        )
    }
}

pub async fn audit(a: AuditArgs) -> Result<(), Error> {
    let cluster = Cluster::load(&a.cluster)?;
    let nodes = dkg_relay::connect_all(&cluster).await;
    let node = nodes
        .iter()
        .find(|n| n.id().get() == a.node)
        .ok_or_else(|| Error::new(ErrorCode::ConfigInvalid, format!("node {} is not in the cluster", a.node)))?;
    let mut after = 0;
    let mut text = String::new();
    loop {
        let log = node.call(GetAudit { after }, Duration::from_secs(10)).await?;
        let entries = log.entries.into_inner();
        let Some(last) = entries.last() else { break };
        after = last.seq;
        for e in &entries {
            let row = AuditRow::new(e);
            if a.json {
                text.push_str(&format!("{}\n", serde_json::json!(row)));
            } else {
                text.push_str(&row.text());
            }
        }
    }
    out(&text);
    Ok(())
}

//! `frostgate audit`: a node's audit trail (every policy decision, verified by its enclave), its
//! export, and the auditor's acknowledgement that lets exported records leave the trail.
//!
//! An acknowledgement is the auditor's BIP340 signature over SHA-256 of
//! `audit_ack_preimage` (one definition, in `frostgate-common`) of the exported records, each in
//! its wire encoding: the enclave checks it over the records it keeps, so neither a host nor a
//! forged export can make a record leave.

use super::out;
use bitcoin::hashes::Hash;
use clap::{Args, Subcommand};
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::protocol::{
    audit_ack_preimage, AcknowledgeAudit, AuditDecision, AuditEntry, Bip340Signature, GetAudit,
};
use frostgate_host::coordinator::cluster::Cluster;
use frostgate_host::coordinator::dkg_relay;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: Option<AuditCommand>,
    #[command(flatten)]
    print: PrintArgs,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Write every record a node keeps, in its wire encoding, for the auditor (JSON lines; the
    /// last line names the records' digest).
    Export(ExportArgs),
    /// As the auditor: sign an export's digest and send it; the records it covers leave the
    /// node's trail (the only way a signed decision leaves it).
    Acknowledge(AcknowledgeArgs),
    /// Generate an auditor key pair (private key to a new file; the public key, for
    /// `[audit] auditor_key`, printed).
    AuditorKey(AuditorKeyArgs),
}

#[derive(Debug, Args)]
struct PrintArgs {
    /// The cluster file.
    #[arg(long, required = true)]
    cluster: Option<PathBuf>,
    /// The node (participant id).
    #[arg(long, required = true)]
    node: Option<u16>,
    /// Print one JSON object per line.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ExportArgs {
    /// The node's local socket (`host.sock` in a dev cluster).
    #[arg(long)]
    connect: String,
    /// The export file (new; never through a link).
    #[arg(long)]
    out: PathBuf,
    /// Overwrite an existing `--out` file.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
struct AcknowledgeArgs {
    /// The node's local socket.
    #[arg(long)]
    connect: String,
    /// The export written by `frostgate audit export`.
    #[arg(long)]
    export: PathBuf,
    /// The auditor's private key file (hex, 32 bytes).
    #[arg(long)]
    auditor_key: PathBuf,
}

#[derive(Debug, Args)]
struct AuditorKeyArgs {
    /// Where to write the private key (a new file, mode 0600).
    #[arg(long)]
    private_key_out: PathBuf,
}

/// An audit decision as printed (the wire's `AuditDecision`, named at the edge).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Decision {
    Approved,
    Refused,
    Signed,
    KekRotated,
    Requested,
}

impl From<AuditDecision> for Decision {
    fn from(d: AuditDecision) -> Self {
        match d {
            AuditDecision::Approved => Decision::Approved,
            AuditDecision::Refused => Decision::Refused,
            AuditDecision::Signed => Decision::Signed,
            AuditDecision::KekRotated => Decision::KekRotated,
            AuditDecision::Requested => Decision::Requested,
        }
    }
}

/// One audit record as printed: typed; the wire's "" for "no rule" and "no path" become `None`.
#[derive(Debug, Serialize)]
struct AuditRow {
    seq: u64,
    at_unix: u64,
    decision: Decision,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<String>,
    /// For a `requested` record: the signing service client (its certificate's SHA-256, hex;
    /// zeros for the development client) and its request id.
    #[serde(skip_serializing_if = "Option::is_none")]
    client: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    raw_digest: bool,
    outputs: Vec<(String, u64)>,
    fee_sats: u64,
    policy_hash: String,
}

impl AuditRow {
    fn new(e: &AuditEntry) -> Self {
        let rule = e.rule.as_inner();
        // A `requested` record's rule is `<client hex>/<request id>`.
        let request = (e.decision == AuditDecision::Requested).then(|| rule.split_once('/')).flatten();
        AuditRow {
            seq: e.seq,
            at_unix: e.at_unix,
            decision: e.decision.into(),
            rule: Some(rule.clone()).filter(|r| !r.is_empty() && request.is_none()),
            client: request.map(|(c, _)| c.to_string()),
            request_id: request.map(|(_, r)| r.to_string()),
            session: e.session.to_string(),
            attempt: e.attempt.map(|a| a.to_string()),
            seat: e.seat.map(|p| p.get()),
            key: e.key.to_string(),
            // Displayed like Bitcoin Core does (reversed byte order).
            txid: e.txid.map(|t| bitcoin::Txid::from_byte_array(t).to_string()),
            input: e.input,
            path: Some(e.path.as_inner().clone()).filter(|p| !p.is_empty()),
            raw_digest: e.raw_digest,
            outputs: e.outputs.as_inner().iter().map(|o| (o.to.as_inner().clone(), o.sats)).collect(),
            fee_sats: e.fee_sats,
            policy_hash: hex::encode(e.policy_hash),
        }
    }

    fn text(&self) -> String {
        let what = match (&self.txid, self.raw_digest) {
            _ if self.decision == Decision::KekRotated => "HSM sealing key".to_string(),
            (Some(txid), _) => format!("tx {txid} input {}", self.input.unwrap_or(0)),
            (None, true) => "raw digest".to_string(),
            (None, false) => format!("session {}", self.session),
        };
        let outputs: Vec<String> = self.outputs.iter().map(|(to, sats)| format!("{sats} sats to {to}")).collect();
        let decision = match self.decision {
            Decision::Approved => "approved",
            Decision::Refused => "refused",
            Decision::Signed => "signed",
            Decision::KekRotated => "kek_rotated",
            Decision::Requested => "requested",
        };
        let request = match (&self.request_id, &self.client) {
            (Some(id), Some(client)) => format!(": request {id} of client {client}"),
            _ => String::new(),
        };
        format!(
            "#{} {} {}{}{}{}{}\n",
            self.seq,
            decision,
            what,
            request,
            if outputs.is_empty() {
                String::new()
            } else {
                format!(" ({}, fee {})", outputs.join(", "), self.fee_sats)
            },
            self.rule.as_deref().map(|r| format!(": {r}")).unwrap_or_default(),
            self.seat.map(|s| format!(" [seat {s}]")).unwrap_or_default(),
        )
    }
}

fn io(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::ConfigInvalid, format!("{what}: {e}"))
}

pub async fn run(a: AuditArgs) -> Result<(), Error> {
    match a.command {
        None => print(a.print).await,
        Some(AuditCommand::Export(e)) => export(e).await,
        Some(AuditCommand::Acknowledge(k)) => acknowledge(k).await,
        Some(AuditCommand::AuditorKey(k)) => auditor_key(k),
    }
}

/// Every record after `after`, paging through the enclave's replies.
async fn fetch_all(
    mut call: impl FnMut(u64) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<AuditEntry>, Error>>>>,
) -> Result<Vec<AuditEntry>, Error> {
    let (mut after, mut all) = (0, Vec::new());
    loop {
        let entries = call(after).await?;
        let Some(last) = entries.last() else { return Ok(all) };
        after = last.seq;
        all.extend(entries);
    }
}

async fn print(a: PrintArgs) -> Result<(), Error> {
    let (Some(cluster), Some(node)) = (a.cluster, a.node) else {
        return Err(Error::new(ErrorCode::ConfigInvalid, "pass --cluster FILE --node N"));
    };
    let cluster = Cluster::load(&cluster)?;
    let nodes = dkg_relay::connect_all(&cluster).await;
    let client = nodes
        .into_iter()
        .find(|n| n.id().get() == node)
        .ok_or_else(|| Error::new(ErrorCode::ConfigInvalid, format!("node {node} is not in the cluster")))?;
    let entries = fetch_all(|after| {
        let c = client.clone();
        Box::pin(async move { Ok(c.call(GetAudit { after }, Duration::from_secs(10)).await?.entries.into_inner()) })
    })
    .await?;
    let mut text = String::new();
    for e in &entries {
        let row = AuditRow::new(e);
        if a.json {
            text.push_str(&format!("{}\n", serde_json::json!(row)));
        } else {
            text.push_str(&row.text());
        }
    }
    out(&text);
    Ok(())
}

/// The last line of an export.
#[derive(Debug, Serialize, serde::Deserialize)]
struct ExportEnd {
    /// The node's enclave identity public key (hex): an acknowledgement serves that node only.
    identity: String,
    through: u64,
    records: usize,
    digest: String,
}

fn digest(identity: &[u8], through: u64, entries: &[AuditEntry]) -> Result<[u8; 32], Error> {
    Ok(bitcoin::hashes::sha256::Hash::hash(&audit_ack_preimage(identity, through, entries)?).to_byte_array())
}

async fn export(a: ExportArgs) -> Result<(), Error> {
    super::output::check_new(&a.out, a.force)?;
    let node = std::sync::Arc::new(super::lifecycle::local(&a.connect).await?);
    let entries = fetch_all(|after| {
        let n = node.clone();
        Box::pin(async move {
            Ok(n.channel().request(GetAudit { after }, Some(Duration::from_secs(30))).await?.entries.into_inner())
        })
    })
    .await?;
    let through = entries.last().map(|e| e.seq).unwrap_or(0);
    let identity = node
        .channel()
        .request(frostgate_common::protocol::GetIdentity, Some(Duration::from_secs(30)))
        .await?
        .into_inner();
    let mut text = String::new();
    for e in &entries {
        let mut row = serde_json::to_value(AuditRow::new(e)).map_err(|e| Error::new(ErrorCode::Internal, e))?;
        let wire = postcard::to_allocvec(e).map_err(|e| Error::new(ErrorCode::Internal, e))?;
        row["wire"] = serde_json::Value::String(hex::encode(wire));
        text.push_str(&format!("{row}\n"));
    }
    let end = ExportEnd {
        identity: hex::encode(&identity),
        through,
        records: entries.len(),
        digest: hex::encode(digest(&identity, through, &entries)?),
    };
    text.push_str(&format!("{}\n", serde_json::json!(end)));
    super::output::write_new(&a.out, text.as_bytes(), a.force)?;
    let signed = entries.iter().filter(|e| e.decision == AuditDecision::Signed).count();
    out(&format!("{} records through #{through} ({signed} signed) exported to {}\n", entries.len(), a.out.display()));
    Ok(())
}

/// The records of an export, re-read from their wire encodings, and its end line (checked).
fn read_export(path: &std::path::Path) -> Result<(Vec<AuditEntry>, ExportEnd), Error> {
    let text = std::fs::read_to_string(path).map_err(|e| io(&path.display().to_string(), e))?;
    let mut lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let end: ExportEnd =
        serde_json::from_str(lines.pop().unwrap_or_default()).map_err(|e| io("export: last line", e))?;
    let mut entries = Vec::new();
    for line in lines {
        let row: serde_json::Value = serde_json::from_str(line).map_err(|e| io("export line", e))?;
        let wire = hex::decode(row["wire"].as_str().unwrap_or_default()).map_err(|e| io("export: wire", e))?;
        let entry: AuditEntry = postcard::from_bytes(&wire).map_err(|e| io("export: wire", e))?;
        // What the auditor reads is what is signed: the row must be the record's own rendering.
        let mut expected =
            serde_json::to_value(AuditRow::new(&entry)).map_err(|e| Error::new(ErrorCode::Internal, e))?;
        expected["wire"] = row["wire"].clone();
        if expected != row {
            return Err(io("export", format!("record #{} does not match its wire encoding", entry.seq)));
        }
        entries.push(entry);
    }
    let identity = hex::decode(&end.identity).map_err(|e| io("export: identity", e))?;
    if entries.len() != end.records || hex::encode(digest(&identity, end.through, &entries)?) != end.digest {
        return Err(io("export", "its records do not match its last line (altered or cut)"));
    }
    Ok((entries, end))
}

async fn acknowledge(a: AcknowledgeArgs) -> Result<(), Error> {
    use bitcoin::secp256k1::{Keypair, Message, Secp256k1, SecretKey};
    let (entries, end) = read_export(&a.export)?;
    let raw = std::fs::read_to_string(&a.auditor_key).map_err(|e| io(&a.auditor_key.display().to_string(), e))?;
    let secret = hex::decode(raw.trim())
        .ok()
        .and_then(|b| SecretKey::from_slice(&b).ok())
        .ok_or_else(|| io(&a.auditor_key.display().to_string(), "not a hex secp256k1 private key"))?;
    let secp = Secp256k1::new();
    let keypair = Keypair::from_secret_key(&secp, &secret);
    let identity = hex::decode(&end.identity).map_err(|e| io("export: identity", e))?;
    let msg = Message::from_digest(digest(&identity, end.through, &entries)?);
    let sig = secp.sign_schnorr_no_aux_rand(&msg, &keypair).serialize();
    let mut r = [0u8; 32];
    let mut s = [0u8; 32];
    r.copy_from_slice(&sig[..32]);
    s.copy_from_slice(&sig[32..]);
    let node = super::lifecycle::local(&a.connect).await?;
    let ack = AcknowledgeAudit { through: end.through, signature: Bip340Signature { r, s } };
    let done = node.channel().request(ack, Some(Duration::from_secs(30))).await?;
    out(&format!("acknowledged through #{}: {} records left the trail\n", done.through, done.dropped));
    Ok(())
}

fn auditor_key(a: AuditorKeyArgs) -> Result<(), Error> {
    use bitcoin::secp256k1::{Keypair, Secp256k1, SecretKey};
    let secret = loop {
        if let Ok(k) = SecretKey::from_slice(&frostgate_host::random_bytes::<32>()) {
            break k;
        }
    };
    let secp = Secp256k1::new();
    let (public, _) = Keypair::from_secret_key(&secp, &secret).x_only_public_key();
    super::output::write_new(
        &a.private_key_out,
        format!("{}\n", hex::encode(secret.secret_bytes())).as_bytes(),
        false,
    )?;
    out(&format!("{}\n", hex::encode(public.serialize())));
    Ok(())
}

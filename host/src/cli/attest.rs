//! `frostgate attest verify`: checks an AWS Nitro Enclaves attestation document against the
//! pinned root and the operator's expectations; exit 0 only when every one holds.

use clap::{Args, Subcommand};
use frostgate_attest::nitro::{self, Expected};
use frostgate_common::error::{Error, ErrorCode};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum AttestCommand {
    /// Verify a Nitro attestation document: its encoding, the chain to the root at the given
    /// time, the COSE signature, debug mode, and each given PCR, nonce and public key. Prints
    /// what it holds; exits 0 only when every check passes.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The document: raw COSE bytes, or their base64.
    #[arg(long)]
    doc: PathBuf,
    /// The trusted root certificate (PEM); default: the AWS Nitro Enclaves root G1.
    #[arg(long)]
    root: Option<PathBuf>,
    /// Validate the chain at this time (seconds since the Unix epoch); default: now.
    #[arg(long)]
    at: Option<u64>,
    /// A PCR that must be equal, `INDEX=HEX` (repeatable).
    #[arg(long = "pcr", value_parser = parse_pcr)]
    pcrs: Vec<(u8, Vec<u8>)>,
    /// The nonce the document must carry (hex).
    #[arg(long)]
    nonce: Option<String>,
    /// The public key the document must attest (hex).
    #[arg(long)]
    public_key: Option<String>,
    /// Accept a debug-mode enclave's document (all-zero PCRs).
    #[arg(long)]
    allow_debug: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

fn parse_pcr(s: &str) -> Result<(u8, Vec<u8>), String> {
    let (index, value) = s.split_once('=').ok_or("INDEX=HEX")?;
    let index: u8 = index.parse().map_err(|e| format!("PCR index {index:?}: {e}"))?;
    let value = hex::decode(value).map_err(|e| format!("PCR{index}: {e}"))?;
    if value.len() != nitro::PCR_LEN {
        return Err(format!("PCR{index}: {} bytes, a PCR has {}", value.len(), nitro::PCR_LEN));
    }
    Ok((index, value))
}

fn config(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::ConfigInvalid, format!("{what}: {e}"))
}

pub fn run(c: AttestCommand) -> Result<(), Error> {
    match c {
        AttestCommand::Verify(a) => verify(a),
    }
}

fn verify(a: VerifyArgs) -> Result<(), Error> {
    let raw = std::fs::read(&a.doc).map_err(|e| config(&a.doc.display().to_string(), e))?;
    let doc = nitro::read_document(&raw);
    let root = match &a.root {
        None => nitro::aws_root(),
        Some(path) => nitro::read_root(path).map_err(|e| config("--root", e))?,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?
        .as_secs();
    let hex_arg =
        |what: &str, v: &Option<String>| v.as_deref().map(hex::decode).transpose().map_err(|e| config(what, e));
    let expected = Expected {
        root,
        at: a.at.unwrap_or(now),
        pcrs: a.pcrs.into_iter().collect::<BTreeMap<_, _>>(),
        nonce: hex_arg("--nonce", &a.nonce)?,
        public_key: hex_arg("--public-key", &a.public_key)?,
        allow_debug: a.allow_debug,
        max_age: None,
    };
    if expected.pcrs.is_empty() {
        tracing::warn!("no --pcr given: any enclave image passes");
    }
    if expected.nonce.is_none() {
        tracing::warn!("no --nonce given: a replayed document passes until its certificate expires");
    }
    // What the document says is printed either way; only a full verification exits 0.
    let decoded = nitro::decode(&doc).map(|(_, d)| d);
    let verdict = nitro::verify(&doc, &expected);
    let report = |d: &nitro::Document| {
        serde_json::json!({
            "document": d,
            "debug_mode": d.debug_mode(),
            "chain": d.subjects(),
            "validated_at": expected.at,
        })
    };
    let mut json = decoded.as_ref().map(report).unwrap_or_else(|_| serde_json::json!({}));
    json["verified"] = serde_json::json!(verdict.is_ok());
    if let Err(r) = &verdict {
        json["failed_check"] = serde_json::json!(r.check.name());
        json["detail"] = serde_json::json!(r.detail);
    }
    if a.json {
        super::out(&format!("{json}\n"));
    } else if let Ok(d) = &decoded {
        let mut t = format!("module_id: {}\ntimestamp: {} ms\ndigest:    {}\n", d.module_id, d.timestamp_ms, d.digest);
        for (i, p) in &d.pcrs {
            t.push_str(&format!("pcr{i:<2}     {}\n", hex::encode(p)));
        }
        let opt = |v: &Option<Vec<u8>>| v.as_ref().map(hex::encode).unwrap_or_else(|| "-".into());
        t.push_str(&format!(
            "public_key: {}\nuser_data:  {}\nnonce:      {}\n",
            opt(&d.public_key),
            opt(&d.user_data),
            opt(&d.nonce)
        ));
        for (n, s) in d.subjects().iter().enumerate() {
            t.push_str(&format!("chain[{n}]:  {s}\n"));
        }
        t.push_str(if verdict.is_ok() { "verified\n" } else { "NOT verified\n" });
        super::out(&t);
    }
    verdict.map(drop).map_err(Error::from)
}

//! `frostgate sign-psbt`: spending under the enclaves' policies.

use super::out;
use clap::Args;
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::ids::KeyId;
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
    let signing = coordinator::Signing::open(&nodes, &key, cluster.threshold, settings).await?;
    let result = psbt::sign_inputs(&signing.signer(), &mut signed, &key, None).await;
    signing.finish().await;
    let inputs = match result {
        Ok(done) => done.inputs,
        Err((e, excluded)) => {
            for ev in excluded {
                tracing::warn!(signer = ev.signer, reason = %ev.reason, step = %ev.step,
                    code = ev.code.map(|c| c.code()).unwrap_or(""), "{}", ev.message.as_deref().unwrap_or("excluded"));
            }
            return Err(e);
        }
    };
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

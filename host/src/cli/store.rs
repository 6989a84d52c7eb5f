//! `frostgate store verify|stats`.

use super::out;
use clap::{Args, Subcommand};
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::transport::Address;
use frostgate_host::node::enclave::{default_enclave_bin, EnclaveClient};
use frostgate_host::node::store::HostStore;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Have the enclave verify the store's MAC chain and compare its head with the HSM anchor.
    Verify(VerifyArgs),
    /// Row counts and sizes of the store (no enclave needed).
    Stats(StatsArgs),
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The host store.
    #[arg(long, env = "FROSTGATE_DB")]
    db: PathBuf,
    /// A running enclave to verify with (it adopts nothing).
    #[arg(long, conflicts_with = "spawn")]
    connect: Option<String>,
    /// Start an enclave for the check (the node's enclave must be stopped: one process per token).
    #[arg(long, requires = "config")]
    spawn: bool,
    /// Enclave configuration for `--spawn`.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// The host store.
    #[arg(long, env = "FROSTGATE_DB")]
    db: PathBuf,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub async fn run(cmd: StoreCommand) -> Result<(), Error> {
    match cmd {
        StoreCommand::Stats(a) => {
            let s = HostStore::open_existing(&a.db)?.stats()?;
            if a.json {
                out(&format!(
                    "{}\n",
                    serde_json::json!({"records": s.records, "first_version": s.first_version, "head_version": s.head_version, "file_bytes": s.file_bytes})
                ));
            } else {
                out(&format!(
                    "records:       {}\nfirst version: {}\nhead version:  {}\nfile bytes:    {}\n",
                    s.records, s.first_version, s.head_version, s.file_bytes
                ));
            }
            Ok(())
        }
        StoreCommand::Verify(a) => {
            let store = HostStore::open_existing(&a.db)?;
            let _dir;
            let client = match (&a.connect, &a.config) {
                (Some(addr), _) => EnclaveClient::connect(addr.parse::<Address>()?).await?,
                (None, Some(config)) if a.spawn => {
                    let dir =
                        tempfile::tempdir().map_err(|e| Error::new(ErrorCode::EnclaveUnavailable, e.to_string()))?;
                    let c = EnclaveClient::spawn(
                        &default_enclave_bin(),
                        dir.path(),
                        &["--config".into(), config.display().to_string()],
                    )
                    .await?;
                    _dir = dir;
                    c
                }
                _ => {
                    return Err(Error::new(ErrorCode::ConfigInvalid, "pass --connect ADDRESS or --spawn --config FILE"))
                }
            };
            let status = client.load_store(&store, true).await?;
            if a.json {
                out(&format!(
                    "{}\n",
                    serde_json::json!({"verified": true, "records": status.records, "head_version": status.head_version, "anchor_version": status.anchor_version})
                ));
            } else {
                out(&format!(
                    "store verified: {} records, head {}, HSM anchor {}\n",
                    status.records, status.head_version, status.anchor_version
                ));
            }
            Ok(())
        }
    }
}

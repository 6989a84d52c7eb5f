//! `frostgate token ...`: runs `frostgate-enclave token ...`. The PIN is read by the enclave
//! binary only; this process passes the configuration path and never sees it.

use clap::{Args, Subcommand};
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::protocol::RotateSealingKey;
use frostgate_common::transport::Address;
use frostgate_host::node::enclave::{default_enclave_bin, EnclaveClient};
use std::path::PathBuf;
use std::process::{Command, ExitCode};

/// Resealing takes one HSM decrypt and encrypt per seat, then one commit.
const ROTATE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create this enclave's key-encryption key, MAC root key and identity key pair on its token.
    Init(TokenArgs),
    /// Print every object and its protections; exit non-zero on any violation.
    Inspect(TokenArgs),
    /// Rotate a running node's key-encryption key: a new key on the token, every share resealed
    /// under it (durable and anchored), then the old key destroyed. Rerun after any failure.
    RotateKek(RotateArgs),
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    /// The node's local socket (`frostgate host serve --listen`, `host.sock` in a dev cluster).
    #[arg(long)]
    connect: String,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The enclave configuration (TOML) with a `[custody]` section.
    #[arg(long, env = "FROSTGATE_ENCLAVE_CONFIG")]
    config: PathBuf,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// The enclave binary (default: next to this executable).
    #[arg(long)]
    enclave_bin: Option<PathBuf>,
}

pub async fn run(cmd: TokenCommand) -> Result<ExitCode, Error> {
    let (verb, args) = match cmd {
        TokenCommand::Init(a) => ("init", a),
        TokenCommand::Inspect(a) => ("inspect", a),
        TokenCommand::RotateKek(a) => return rotate(a).await,
    };
    let bin = args.enclave_bin.clone().unwrap_or_else(default_enclave_bin);
    let mut c = Command::new(&bin);
    c.args(["token", verb, "--config"]).arg(&args.config);
    if args.json {
        c.arg("--json");
    }
    let status =
        c.status().map_err(|e| Error::new(ErrorCode::EnclaveUnavailable, format!("running {}: {e}", bin.display())))?;
    Ok(ExitCode::from(status.code().and_then(|c| u8::try_from(c).ok()).unwrap_or(1)))
}

async fn rotate(a: RotateArgs) -> Result<ExitCode, Error> {
    let node = EnclaveClient::connect(a.connect.parse::<Address>()?).await?;
    let done = node.channel().request(RotateSealingKey, Some(ROTATE_TIMEOUT)).await?;
    if a.json {
        super::out(&format!("{}\n", serde_json::json!({ "keys": done.keys, "seats": done.seats })));
    } else {
        super::out(&format!(
            "key-encryption key rotated: {} seats of {} keys resealed; the old key is destroyed\n",
            done.seats, done.keys
        ));
    }
    Ok(ExitCode::SUCCESS)
}

//! `frostgate token ...`: runs `frostgate-enclave token ...`. The PIN is read by the enclave
//! binary only; this process passes the configuration path and never sees it.

use clap::{Args, Subcommand};
use frostgate_common::error::{Error, ErrorCode};
use frostgate_host::node::enclave::default_enclave_bin;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create this enclave's key-encryption key, MAC root key and identity key pair on its token.
    Init(TokenArgs),
    /// Print every object and its protections; exit non-zero on any violation.
    Inspect(TokenArgs),
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The enclave configuration (TOML) with a `[custody]` section.
    #[arg(long, env = "FROSTGATE_ENCLAVE_CONFIG")]
    config: PathBuf,
    /// `init` only: destroy and recreate existing objects (sealed blobs become unreadable).
    #[arg(long)]
    danger_rotate: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// The enclave binary (default: next to this executable).
    #[arg(long)]
    enclave_bin: Option<PathBuf>,
}

pub fn run(cmd: TokenCommand) -> Result<ExitCode, Error> {
    let (verb, args) = match cmd {
        TokenCommand::Init(a) => ("init", a),
        TokenCommand::Inspect(a) => ("inspect", a),
    };
    let bin = args.enclave_bin.clone().unwrap_or_else(default_enclave_bin);
    let mut c = Command::new(&bin);
    c.args(["token", verb, "--config"]).arg(&args.config);
    if args.danger_rotate {
        c.arg("--danger-rotate");
    }
    if args.json {
        c.arg("--json");
    }
    let status =
        c.status().map_err(|e| Error::new(ErrorCode::EnclaveUnavailable, format!("running {}: {e}", bin.display())))?;
    Ok(ExitCode::from(status.code().and_then(|c| u8::try_from(c).ok()).unwrap_or(1)))
}

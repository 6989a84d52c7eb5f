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
    /// Create this enclave's objects on its token, under the strongest custody profile the token
    /// supports (or `[custody] profile`).
    Init(TokenArgs),
    /// Show a token's mechanisms, the custody profile frostgate would use on it and what the
    /// stronger profiles lack; changes nothing on the token.
    Probe(ProbeArgs),
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
pub struct ProbeArgs {
    /// Path of the PKCS#11 module.
    #[arg(long)]
    module: PathBuf,
    /// The slot id (default: the only slot with a token).
    #[arg(long, conflicts_with = "token_label")]
    slot: Option<u64>,
    /// The token's label.
    #[arg(long)]
    token_label: Option<String>,
    /// A file holding the user PIN (read by the enclave binary): also try key generation and a
    /// private data object, on session objects that vanish.
    #[arg(long)]
    pin_file: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// The enclave binary (default: next to this executable).
    #[arg(long)]
    enclave_bin: Option<PathBuf>,
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
        TokenCommand::Probe(a) => {
            let mut c = Command::new(a.enclave_bin.clone().unwrap_or_else(default_enclave_bin));
            c.args(["token", "probe", "--module"]).arg(&a.module);
            if let Some(slot) = a.slot {
                c.arg("--slot").arg(slot.to_string());
            }
            if let Some(label) = &a.token_label {
                c.args(["--token-label", label]);
            }
            if let Some(pin) = &a.pin_file {
                c.arg("--pin-file").arg(pin);
            }
            if a.json {
                c.arg("--json");
            }
            return status_of(c);
        }
    };
    let bin = args.enclave_bin.clone().unwrap_or_else(default_enclave_bin);
    let mut c = Command::new(&bin);
    c.args(["token", verb, "--config"]).arg(&args.config);
    if args.json {
        c.arg("--json");
    }
    status_of(c)
}

/// Runs the enclave binary and passes its exit status on.
fn status_of(mut c: Command) -> Result<ExitCode, Error> {
    let bin = c.get_program().to_owned();
    let status = c.status().map_err(|e| {
        Error::new(ErrorCode::EnclaveUnavailable, format!("running {}: {e}", std::path::Path::new(&bin).display()))
    })?;
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

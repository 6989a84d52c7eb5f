//! `frostgate enclave ...`: status of an enclave, and the boundary manifest.

use super::out;
use clap::{Args, Subcommand};
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::protocol::ServiceState;
use frostgate_common::transport::Address;
use frostgate_host::node::enclave::{default_enclave_bin, EnclaveClient};
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum EnclaveCommand {
    /// Connect to an enclave (or start one) and print its version and health.
    Status(StatusArgs),
    /// Print the boundary manifest: every message that crosses the host/enclave channel.
    Protocol,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Address of a running enclave (`unix:/path`, a bare path, or `vsock:CID:PORT`).
    #[arg(long, env = "FROSTGATE_ENCLAVE", conflicts_with = "spawn")]
    connect: Option<String>,
    /// Start an enclave as a child process for the duration of the command.
    #[arg(long)]
    spawn: bool,
    /// The enclave binary to start with `--spawn` (default: next to this executable).
    #[arg(long)]
    enclave_bin: Option<PathBuf>,
    /// With `--spawn`: the enclave configuration (TOML) for the child enclave.
    #[arg(long, requires = "spawn")]
    config: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub async fn run(cmd: EnclaveCommand) -> Result<(), Error> {
    match cmd {
        EnclaveCommand::Protocol => {
            let manifest = frostgate_common::manifest::render().map_err(|e| Error::new(ErrorCode::Internal, e))?;
            out(&manifest);
            Ok(())
        }
        EnclaveCommand::Status(args) => status(args).await,
    }
}

async fn status(args: StatusArgs) -> Result<(), Error> {
    let _socket_dir;
    let client = match (&args.connect, args.spawn) {
        (Some(addr), _) => EnclaveClient::connect(addr.parse::<Address>()?).await?,
        (None, true) => {
            let dir = tempfile::Builder::new()
                .prefix("frostgate-enclave-")
                .tempdir()
                .map_err(|e| Error::new(ErrorCode::EnclaveUnavailable, format!("creating socket dir: {e}")))?;
            let bin = args.enclave_bin.clone().unwrap_or_else(default_enclave_bin);
            let extra: Vec<String> = match &args.config {
                Some(c) => vec!["--config".into(), c.display().to_string()],
                None => Vec::new(),
            };
            let client = EnclaveClient::spawn(&bin, dir.path(), &extra).await?;
            _socket_dir = dir;
            client
        }
        (None, false) => {
            return Err(Error::new(
                ErrorCode::ConfigInvalid,
                "pass --connect ADDRESS (or FROSTGATE_ENCLAVE) or --spawn",
            ));
        }
    };
    let health = client.health().await?;
    let hello = client.hello();
    let (state, refusal) = match health.state {
        ServiceState::Ready => ("ready", None),
        ServiceState::Refusing(code) => ("refusing", Some(code)),
    };
    if args.json {
        let v = serde_json::json!({
            "address": client.address().to_string(),
            "protocol_version": hello.protocol_version,
            "build": {
                "name": hello.build.name.as_inner(),
                "version": hello.build.version.as_inner(),
                "profile": hello.build.profile.as_inner(),
                "dev_features": hello.build.dev_features.as_inner(),
            },
            "state": state,
            "refusal_code": refusal.map(|c| c.code()),
            "refusal_recovery_class": refusal.map(|c| c.recovery_class().as_str()),
            "uptime_seconds": health.uptime_seconds,
            "custody_profile": health.custody_profile.map(|p| p.name()),
            "hsm_calls": health.hsm_calls,
        });
        out(&format!("{v}\n"));
    } else {
        let mut s = format!(
            "enclave:  {}\nprotocol: {}\nbuild:    {} {} ({}; dev features: {})\nstate:    {state}\n",
            client.address(),
            hello.protocol_version,
            hello.build.name.as_inner(),
            hello.build.version.as_inner(),
            hello.build.profile.as_inner(),
            Some(hello.build.dev_features.as_inner().as_str()).filter(|f| !f.is_empty()).unwrap_or("none"),
        );
        if let Some(code) = refusal {
            s.push_str(&format!("refusal:  {code} (recovery: {})\n", code.recovery_class()));
        }
        s.push_str(&format!(
            "custody:  {}\n",
            health.custody_profile.map_or("none (no [custody]: refuses to sign)", |p| p.name())
        ));
        s.push_str(&format!("uptime:   {} s\n", health.uptime_seconds));
        out(&s);
    }
    Ok(())
}

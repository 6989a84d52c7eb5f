//! The CLI tree; one module per subcommand group.

mod attest;
mod audit;
mod bench;
mod dev;
mod dev_attestation;
mod dev_psbt;
mod dev_tokens;
mod dev_tokens_ock;
mod enclave;
mod group;
mod host;
mod lifecycle;
mod node;
mod output;
mod pid_file;
mod request;
mod spend;
mod store;
mod token;
mod wallet;

use clap::{Parser, Subcommand, ValueEnum};
use frostgate_common::Error;
use std::io::Write;
use std::process::ExitCode;

/// frostgate: a threshold signing enclave for Bitcoin Taproot.
#[derive(Debug, Parser)]
#[command(name = "frostgate", version)]
pub struct Cli {
    /// Log format (logs go to stderr).
    #[arg(long, global = true, value_enum, default_value = "human", env = "FROSTGATE_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Talk to an enclave process.
    #[command(subcommand)]
    Enclave(enclave::EnclaveCommand),
    /// Manage the enclave's HSM token objects (runs `frostgate-enclave token ...`).
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Run the host process in front of an enclave.
    #[command(subcommand)]
    Host(host::HostCommand),
    /// Inspect the host store.
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// Development tooling (local clusters on SoftHSM).
    #[command(subcommand)]
    Dev(dev::DevCommand),
    /// Run a DKG across a cluster; print the key id, output key and address.
    Keygen(group::KeygenArgs),
    /// Refresh a key's shares across a cluster (same key, next epoch); `--remove N` drops a seat.
    Refresh(lifecycle::RefreshArgs),
    /// Repair a lost seat onto a fresh node: threshold helpers rebuild its share in its enclave.
    Repair(lifecycle::RepairArgs),
    /// Back up a node's seat of a key, encrypted to the operator's recovery key.
    Backup(lifecycle::BackupArgs),
    /// Restore a seat from its backup into a fresh node (its enclave reads the recovery key).
    Restore(lifecycle::RestoreArgs),
    /// Generate an operator recovery key pair (private key to a file, public key printed).
    RecoveryKey(lifecycle::RecoveryKeyArgs),
    /// Sign a 32-byte message with ROAST across a cluster.
    Sign(group::SignArgs),
    /// Sign every input of a PSBT that a key can sign (each enclave checks it against its policy).
    SignPsbt(spend::SignPsbtArgs),
    /// Print a node's audit trail (every policy decision), verified by its enclave; export it and
    /// acknowledge exports as the auditor.
    Audit(audit::AuditArgs),
    /// The group key as a BIP32 xpub (BIP328) and its `tr(XPUB/<0;1>/*)` descriptor.
    Xpub(wallet::XpubArgs),
    /// The address at `<0|1>/INDEX` of a key's descriptor.
    Address(wallet::AddressArgs),
    /// Verify a BIP340 signature with libsecp256k1.
    Verify(group::VerifyArgs),
    /// Print a key's internal key, output key and address.
    Pubkey(group::PubkeyArgs),
    /// Each node's health, including why an enclave refuses to sign.
    Status(group::StatusArgs),
    /// Load test a fresh local cluster and compare with pure in-process FROST.
    Bench(bench::BenchArgs),
    /// The signing service for applications: a JSON API over a durable request log.
    Serve(request::ServeArgs),
    /// Submit, show, list and cancel requests of a signing service.
    #[command(subcommand)]
    Request(request::RequestCommand),
    /// TEE attestation documents (AWS Nitro Enclaves).
    #[command(subcommand)]
    Attest(attest::AttestCommand),
    /// Run one signer node (its enclave as a child, or a running one, and the host).
    Node {
        /// The node configuration (TOML).
        #[arg(long, env = "FROSTGATE_NODE_CONFIG")]
        config: std::path::PathBuf,
        /// Which part to run (`host`: started by a two-user node for its host child).
        #[arg(long, value_enum, default_value = "node", hide = true)]
        role: node::Role,
    },
}

/// Installs the global subscriber. `RUST_LOG` overrides the default level (`warn` for the CLI).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Enclave(c) => enclave::run(c).await.map(|()| ExitCode::SUCCESS),
        Command::Token(c) => token::run(c).await,
        Command::Host(c) => host::run(c).await.map(|()| ExitCode::SUCCESS),
        Command::Store(c) => store::run(c).await.map(|()| ExitCode::SUCCESS),
        Command::Dev(c) => dev::run(c).map(|()| ExitCode::SUCCESS),
        Command::Keygen(a) => group::keygen(a).await.map(|()| ExitCode::SUCCESS),
        Command::Refresh(a) => lifecycle::refresh(a).await.map(|()| ExitCode::SUCCESS),
        Command::Repair(a) => lifecycle::repair(a).await.map(|()| ExitCode::SUCCESS),
        Command::Backup(a) => lifecycle::backup(a).await.map(|()| ExitCode::SUCCESS),
        Command::Restore(a) => lifecycle::restore(a).await.map(|()| ExitCode::SUCCESS),
        Command::RecoveryKey(a) => lifecycle::recovery_key(a).map(|()| ExitCode::SUCCESS),
        Command::Sign(a) => group::sign(a).await.map(|()| ExitCode::SUCCESS),
        Command::Serve(a) => request::serve(a).await.map(|()| ExitCode::SUCCESS),
        Command::Request(c) => request::run(c).await.map(|()| ExitCode::SUCCESS),
        Command::Verify(a) => group::verify(a).map(|()| ExitCode::SUCCESS),
        Command::SignPsbt(a) => spend::sign_psbt(a).await.map(|()| ExitCode::SUCCESS),
        Command::Audit(a) => audit::run(a).await.map(|()| ExitCode::SUCCESS),
        Command::Xpub(a) => wallet::xpub(a).await.map(|()| ExitCode::SUCCESS),
        Command::Address(a) => wallet::address(a).await.map(|()| ExitCode::SUCCESS),
        Command::Pubkey(a) => group::pubkey(a).await.map(|()| ExitCode::SUCCESS),
        Command::Status(a) => group::status(a).await.map(|()| ExitCode::SUCCESS),
        Command::Bench(a) => bench::run(a).await.map(|()| ExitCode::SUCCESS),
        Command::Attest(c) => attest::run(c).map(|()| ExitCode::SUCCESS),
        Command::Node { config, role } => node::run(&config, role).await.map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => report_error(&e),
    }
}

/// Prints an error with its code and recovery class to stderr; the exit status is the class's
/// ([`frostgate_common::exit`]).
fn report_error(e: &Error) -> ExitCode {
    let mut err = std::io::stderr();
    let _ = writeln!(err, "error: {} (recovery: {}): {}", e.code(), e.recovery_class(), e.message());
    ExitCode::from(frostgate_common::exit::status_for(e))
}

/// Writes to stdout, ignoring a closed pipe.
fn out(text: &str) {
    let mut o = std::io::stdout();
    let _ = o.write_all(text.as_bytes());
    let _ = o.flush();
}

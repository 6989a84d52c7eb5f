//! `frostgate-enclave`: listens for the host, serves until SIGTERM or SIGINT.
#![forbid(unsafe_code)]

use clap::Parser;
use frostgate_common::transport::{Address, Listener};
use frostgate_enclave::logging::{self, LogFormat};
use frostgate_enclave::server::{self, PeerPolicy};
use frostgate_enclave::service::Service;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

/// The frostgate enclave process.
#[derive(Debug, Parser)]
#[command(name = "frostgate-enclave", version)]
struct Args {
    /// Where to listen: a Unix socket path (`unix:/path` or a bare path) or `vsock:CID:PORT`.
    #[arg(long, env = "FROSTGATE_ENCLAVE_LISTEN")]
    listen: String,
    /// The only Unix uid allowed to connect. Defaults to this process's own uid.
    #[arg(long, env = "FROSTGATE_ENCLAVE_ALLOWED_UID")]
    allowed_uid: Option<u32>,
    /// The only vsock CID allowed to connect (vsock transport only).
    #[arg(long, env = "FROSTGATE_ENCLAVE_ALLOWED_CID")]
    allowed_cid: Option<u32>,
    /// Log format.
    #[arg(
        long,
        value_enum,
        default_value = "human",
        env = "FROSTGATE_LOG_FORMAT"
    )]
    log_format: LogFormat,
}

fn main() -> ExitCode {
    let args = Args::parse();
    logging::init(args.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    let address: Address = match args.listen.parse() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(code = %e.code(), "{e}");
            return ExitCode::from(2);
        }
    };
    let listener = match Listener::bind(&address) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(code = %e.code(), %address, "{e}");
            return ExitCode::FAILURE;
        }
    };
    let allowed_uid = match args.allowed_uid.or_else(own_uid) {
        Some(uid) => uid,
        None => {
            // Fail closed: never guess which user to serve.
            tracing::error!(code = %frostgate_common::ErrorCode::ConfigInvalid, "cannot determine this process's uid; pass --allowed-uid");
            return ExitCode::FAILURE;
        }
    };
    let policy = PeerPolicy {
        allowed_uid,
        allowed_cid: args.allowed_cid,
    };
    tracing::info!(%address, allowed_uid, "enclave listening");
    // Readiness line for supervisors: the only thing this process writes to stdout.
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "READY {address}");
    let _ = stdout.flush();

    let service = Arc::new(Service::new());
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install the SIGTERM handler");
            return ExitCode::FAILURE;
        }
    };
    tokio::select! {
        _ = server::serve(listener, policy, service) => {}
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
    }
    #[allow(irrefutable_let_patterns)] // refutable with the `vsock` feature
    if let Address::Unix(path) = &address {
        let _ = std::fs::remove_file(path);
    }
    tracing::info!("enclave stopped");
    ExitCode::SUCCESS
}

/// This process's uid, read from `/proc/self` metadata (no unsafe call needed).
fn own_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid()).ok()
}

//! `frostgate-enclave`: serves the host (`serve`), or manages this enclave's token objects
//! (`token init`, `token inspect`). The PIN is read only by this binary.
#![forbid(unsafe_code)]

use clap::{Args, Parser, Subcommand};
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::transport::{Address, Listener};
use frostgate_enclave::config::EnclaveConfig;
use frostgate_enclave::custody::Custody;
use frostgate_enclave::logging::{self, LogFormat};
use frostgate_enclave::rounds::Limits;
use frostgate_enclave::server::{self, PeerPolicy};
use frostgate_enclave::service::{Service, StoreMode};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// The frostgate enclave process.
#[derive(Debug, Parser)]
#[command(name = "frostgate-enclave", version = frostgate_enclave::VERSION)]
struct Cli {
    /// Log format (logs go to stderr).
    #[arg(long, global = true, value_enum, default_value = "human", env = "FROSTGATE_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the host on one channel until SIGTERM or SIGINT.
    Serve(ServeArgs),
    /// Manage this enclave's objects on its HSM token.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Generate an operator recovery key pair: the private key to a new file (mode 0600), the
    /// public key (for `[recovery] public_key`) printed.
    RecoveryKey(RecoveryKeyArgs),
}

#[derive(Debug, Args)]
struct RecoveryKeyArgs {
    /// The file to create for the private key (hex). Keep it offline; give it to an enclave only
    /// to restore.
    #[arg(long)]
    private_key_out: PathBuf,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Where to listen: a Unix socket path (`unix:/path` or a bare path) or `vsock:CID:PORT`.
    #[arg(long, env = "FROSTGATE_ENCLAVE_LISTEN")]
    listen: String,
    /// Enclave configuration (TOML). Without `[custody]` the enclave holds no keys and refuses
    /// to sign (health: `custody_not_configured`).
    #[arg(long, env = "FROSTGATE_ENCLAVE_CONFIG")]
    config: Option<PathBuf>,
    /// A Unix uid allowed to connect (repeat for several). Defaults to this process's own uid.
    #[arg(long)]
    allowed_uid: Vec<u32>,
    /// The only vsock CID allowed to connect (vsock transport only).
    #[arg(long, env = "FROSTGATE_ENCLAVE_ALLOWED_CID")]
    allowed_cid: Option<u32>,
    /// Live nonces older than this are wiped.
    #[arg(long, default_value_t = frostgate_common::limits::NONCE_TTL_SECS, env = "FROSTGATE_ENCLAVE_NONCE_TTL_SECS")]
    nonce_ttl_secs: u64,
    /// Sessions older than this are removed with their attempts and markers.
    #[arg(long, default_value_t = frostgate_common::limits::SESSION_TTL_SECS, env = "FROSTGATE_ENCLAVE_SESSION_TTL_SECS")]
    session_ttl_secs: u64,
    /// A DKG not finished within this long is dropped with its secrets.
    #[arg(long, default_value_t = frostgate_common::limits::DKG_TTL_SECS, env = "FROSTGATE_ENCLAVE_DKG_TTL_SECS")]
    dkg_ttl_secs: u64,
    /// Least time between two completed HSM key-encryption-key rotations (the host's local
    /// socket can ask for one at any time; an unfinished rotation is always finished).
    #[arg(long, default_value_t = 3600, env = "FROSTGATE_ENCLAVE_KEK_ROTATION_INTERVAL_SECS")]
    kek_rotation_interval_secs: u64,
    /// How often the expiry sweep (and compaction check) runs.
    #[arg(long, default_value_t = 10, env = "FROSTGATE_ENCLAVE_SWEEP_INTERVAL_SECS")]
    sweep_interval_secs: u64,
    /// Write a snapshot and drop older store records after this many records.
    #[arg(long, default_value_t = 10_000, env = "FROSTGATE_ENCLAVE_COMPACT_AFTER_RECORDS")]
    compact_after_records: u64,
    /// Started as root: become this user before anything else (two-user deployments).
    #[arg(long, env = "FROSTGATE_ENCLAVE_USER")]
    user: Option<String>,
    /// Shut down when the parent process exits (set by `frostgate node` for its child, so an
    /// enclave never outlives a node that was killed).
    #[arg(long)]
    exit_with_parent: bool,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create this enclave's objects on the token, under the strongest custody profile it
    /// supports (or `[custody] profile`).
    Init(TokenArgs),
    /// Show a token's mechanisms and the custody profile frostgate would use; changes nothing.
    Probe(ProbeArgs),
    /// Print every object and its protections; exit non-zero on any violation.
    Inspect(TokenArgs),
}

#[derive(Debug, Args)]
struct ProbeArgs {
    /// Path of the PKCS#11 module.
    #[arg(long, default_value = frostgate_enclave::custody::config::DEFAULT_MODULE)]
    module: PathBuf,
    /// The slot id (default: the only slot with a token).
    #[arg(long, conflicts_with = "token_label")]
    slot: Option<u64>,
    /// The token's label.
    #[arg(long)]
    token_label: Option<String>,
    /// A file holding the user PIN: also try key generation and a private data object on
    /// session objects (nothing stays on the token).
    #[arg(long)]
    pin_file: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct TokenArgs {
    /// Enclave configuration (TOML) with a `[custody]` section.
    #[arg(long, env = "FROSTGATE_ENCLAVE_CONFIG")]
    config: PathBuf,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    // Before any configuration, PIN or key is read: drop root (if asked), then harden (a uid
    // change resets the dumpable flag, so hardening comes after).
    let user = match &cli.command {
        Command::Serve(args) => args.user.clone(),
        Command::Token(_) | Command::RecoveryKey(_) => None,
    };
    let dropped = match user {
        Some(u) => {
            frostgate_common::privileges::drop_to(&u).map(|a| tracing::info!(user = %a.name, uid = a.uid, "running as"))
        }
        None => Ok(()),
    };
    let result = match dropped.and_then(|()| frostgate_enclave::hardening::harden()) {
        Ok(h) => {
            tracing::debug!(memory_locked = h.memory_locked, "process hardened (not dumpable, no core)");
            run(cli.command)
        }
        Err(e) => Err(e),
    };
    frostgate_enclave::custody::token::finalize_module();
    match result {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(code = %e.code(), recovery = %e.recovery_class(), "{}", e.message());
            let _ =
                writeln!(std::io::stderr(), "error: {} (recovery: {}): {}", e.code(), e.recovery_class(), e.message());
            ExitCode::from(frostgate_common::exit::status_for(&e))
        }
    }
}

fn run(command: Command) -> Result<ExitCode, Error> {
    match command {
        Command::Serve(args) => match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
            Ok(rt) => rt.block_on(serve(args)),
            Err(e) => Err(Error::new(ErrorCode::Internal, format!("cannot start the runtime: {e}"))),
        },
        Command::Token(TokenCommand::Init(args)) => token_init(args),
        Command::Token(TokenCommand::Inspect(args)) => token_inspect(args),
        Command::Token(TokenCommand::Probe(args)) => token_probe(args),
        Command::RecoveryKey(args) => {
            let public = frostgate_enclave::backup::generate_recovery_key(&args.private_key_out)?;
            out(&format!(
                "recovery public key: {public}\n(pin it as [recovery] public_key in every enclave.toml; the private key is in {})\n",
                args.private_key_out.display()
            ));
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn custody_config(path: &std::path::Path) -> Result<frostgate_enclave::custody::config::CustodyConfig, Error> {
    let custody = EnclaveConfig::load(path)?
        .custody
        .ok_or_else(|| Error::new(ErrorCode::ConfigInvalid, format!("{}: no [custody] section", path.display())))?;
    frostgate_enclave::hardening::check_custody_files(&custody)?;
    Ok(custody)
}

fn out(text: &str) {
    let mut o = std::io::stdout();
    let _ = o.write_all(text.as_bytes());
    let _ = o.flush();
}

fn token_init(args: TokenArgs) -> Result<ExitCode, Error> {
    let config = custody_config(&args.config)?;
    let (key, profile) = frostgate_enclave::store::anchor::init_token(&config)?;
    tracing::info!(token = %config.token_label, %profile, "token objects created");
    // Recorded in enclave.toml too: boot then refuses a token under any other profile.
    if config.profile.is_none() {
        let recorded = std::fs::read_to_string(&args.config)
            .ok()
            .and_then(|text| frostgate_enclave::custody::config::with_profile(&text, profile))
            .map(|text| std::fs::write(&args.config, text));
        if !matches!(recorded, Some(Ok(()))) {
            tracing::warn!(%profile, "could not record the profile in the configuration; add `profile = \"{profile}\"` to [custody]");
        }
    }
    if args.json {
        out(&format!(
            "{}\n",
            serde_json::json!({ "token": config.token_label, "profile": profile, "identity_public_key": hex::encode(&key) })
        ));
    } else {
        out(&format!(
            "token {:?}: objects created\ncustody profile: {profile}\nidentity public key: {}\n",
            config.token_label,
            hex::encode(&key)
        ));
    }
    Ok(ExitCode::SUCCESS)
}

fn token_probe(args: ProbeArgs) -> Result<ExitCode, Error> {
    use frostgate_enclave::custody::probe::{self, Selector};
    let selector = match (args.slot, args.token_label) {
        (Some(slot), _) => Selector::Slot(slot),
        (None, Some(label)) => Selector::Label(label),
        (None, None) => Selector::Only,
    };
    let pin = args.pin_file.map(|f| frostgate_enclave::custody::config::PinSource::File(f).read()).transpose()?;
    let report = probe::probe(&args.module, &selector, pin)?;
    if args.json {
        out(&format!("{}\n", serde_json::to_string(&report).map_err(|e| Error::new(ErrorCode::Internal, e))?));
    } else {
        out(&probe::describe(&report));
    }
    if report.profile.is_none() {
        return Err(Error::new(ErrorCode::HsmMechanismMissing, "the token supports no custody profile (see above)"));
    }
    Ok(ExitCode::SUCCESS)
}

fn token_inspect(args: TokenArgs) -> Result<ExitCode, Error> {
    let config = custody_config(&args.config)?;
    let (profile, reports) = Custody::inspect(&config)?;
    let ok = reports.iter().all(|r| r.violations.is_empty());
    if args.json {
        out(&format!(
            "{}\n",
            serde_json::json!({ "token": config.token_label, "profile": profile, "ok": ok, "objects": reports })
        ));
    } else {
        let mut s = format!("token {:?}\ncustody profile: {profile}\n", config.token_label);
        for r in &reports {
            s.push_str(&format!(
                "\n{} ({:?}): {}\n",
                r.label,
                r.role,
                if r.violations.is_empty() { "ok" } else { "VIOLATION" }
            ));
            for (name, value) in &r.attributes {
                s.push_str(&format!("  {name:<22} {}\n", value.as_deref().unwrap_or("unreadable")));
            }
            for v in &r.violations {
                s.push_str(&format!("  ! {v}\n"));
            }
        }
        out(&s);
    }
    if ok {
        Ok(ExitCode::SUCCESS)
    } else {
        let bad: Vec<_> = reports.iter().filter(|r| !r.violations.is_empty()).map(|r| r.label.as_str()).collect();
        let missing = reports.iter().any(|r| r.count == 0);
        let code = if missing { ErrorCode::HsmObjectMissing } else { ErrorCode::HsmObjectPolicyViolation };
        Err(Error::new(code, format!("objects failing their policy: {}", bad.join(", "))))
    }
}

async fn serve(args: ServeArgs) -> Result<ExitCode, Error> {
    let address: Address = args.listen.parse()?;
    let config = match &args.config {
        Some(path) => Some(EnclaveConfig::load(path)?),
        None => None,
    };
    let group = config.as_ref().and_then(|c| c.group.as_ref()).map(|g| g.pins()).transpose()?;
    let ceremony_pins =
        config.as_ref().and_then(|c| c.group.as_ref()).map(|g| g.attestation_pins()).transpose()?.unwrap_or_default();
    if !ceremony_pins.is_empty() {
        let pinned: Vec<u16> = ceremony_pins.keys().map(|p| p.get()).collect();
        tracing::info!(?pinned, "ceremonies run only with these participants attested as pinned");
        let unpinned: Vec<u16> =
            group.iter().flat_map(|g| g.keys()).filter(|p| !ceremony_pins.contains_key(p)).map(|p| p.get()).collect();
        if !unpinned.is_empty() {
            tracing::warn!(
                ?unpinned,
                "these [group] participants have no attestation pins: ceremonies with them are unattested"
            );
        }
    }
    let removal_to_threshold =
        config.as_ref().and_then(|c| c.group.as_ref()).is_some_and(|g| g.allow_removal_to_threshold);
    let recovery = config
        .as_ref()
        .and_then(|c| c.recovery.as_ref())
        .map(frostgate_enclave::backup::Recovery::from_config)
        .transpose()?;
    let spending = match config.as_ref().and_then(|c| c.policy.as_ref()) {
        Some(p) => frostgate_enclave::policy::Policy::from_config(p)?,
        None => frostgate_enclave::policy::Policy::unrestricted(),
    };
    if spending.is_unrestricted() {
        tracing::warn!("no [policy] configured: this enclave signs raw digests and any transaction (development)");
    }
    tracing::info!(policy = %hex::encode(spending.hash()), "spending policy");
    let audit = match config.as_ref().and_then(|c| c.audit.as_ref()) {
        Some(a) => frostgate_enclave::audit::AuditRules::from_config(a)?,
        None => frostgate_enclave::audit::AuditRules::default(),
    };
    let attestor =
        frostgate_enclave::attestation::Attestor::from_config(config.as_ref().and_then(|c| c.attestation.as_ref()))?;
    if let Some(a) = &attestor {
        tracing::info!(provider = a.kind().name(), "attestation: a per-boot key made, documents over it on request");
    }
    let custody = config.and_then(|c| c.custody);
    // Boot self-check before listening: a bad token or weak object stops the process here.
    let custody = match custody {
        Some(c) => {
            frostgate_enclave::hardening::check_custody_files(&c)?;
            let custody = Custody::open(&c)?;
            tracing::info!(token = %c.token_label, identity = %hex::encode(custody.identity_public_key()), "custody ready");
            Some(custody)
        }
        None => {
            tracing::warn!(code = %ErrorCode::CustodyNotConfigured, "no [custody] configured: this enclave refuses to sign");
            None
        }
    };
    let own = own_uid();
    let allowed_uids = match (args.allowed_uid.is_empty(), own) {
        (false, _) => args.allowed_uid.clone(),
        (true, Some(uid)) => vec![uid],
        // Fail closed: never guess which user to serve.
        (true, None) => {
            return Err(Error::new(ErrorCode::ConfigInvalid, "cannot determine this process's uid; pass --allowed-uid"))
        }
    };
    // Serving another user (two users): that user must be able to connect; the peer-credential
    // check on every connection stays the authority.
    let mode = if own.is_some_and(|o| allowed_uids == [o]) { 0o600 } else { 0o666 };
    let listener = Listener::bind_mode(&address, mode)?;
    tracing::info!(%address, ?allowed_uids, "enclave listening");
    let policy = PeerPolicy { allowed_uids, allowed_cid: args.allowed_cid };
    // Readiness line for supervisors: the only thing `serve` writes to stdout.
    out(&format!("READY {address}\n"));

    let mode = StoreMode::Host;
    let limits = Limits {
        kek_rotation_interval: Duration::from_secs(args.kek_rotation_interval_secs),
        nonce_ttl: Duration::from_secs(args.nonce_ttl_secs),
        session_ttl: Duration::from_secs(args.session_ttl_secs),
        dkg_ttl: Duration::from_secs(args.dkg_ttl_secs),
        ..Limits::default()
    };
    let service = Arc::new(
        Service::new(custody, group, mode, limits, args.compact_after_records.max(1))?
            .with_policy(spending)
            .with_audit(audit)
            .allowing_removal_to_threshold(removal_to_threshold)
            .with_recovery(recovery)
            .with_attestor(attestor)
            .with_ceremony_pins(ceremony_pins, Duration::from_secs(args.dkg_ttl_secs)),
    );
    // Expiry sweep and compaction.
    let maintainer = service.clone();
    let interval = Duration::from_secs(args.sweep_interval_secs.max(1));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            maintainer.maintain().await;
        }
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::new(ErrorCode::Internal, format!("cannot install the SIGTERM handler: {e}")))?;
    tokio::select! {
        _ = server::serve(listener, policy, service.clone()) => {}
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        _ = frostgate_common::parent::exited(args.exit_with_parent) => tracing::warn!("the parent process exited: shutting down"),
    }
    #[allow(irrefutable_let_patterns)] // refutable with the `vsock` feature
    if let Address::Unix(path) = &address {
        let _ = std::fs::remove_file(path);
    }
    drop(service);
    tracing::info!("enclave stopped");
    Ok(ExitCode::SUCCESS)
}

/// This process's effective uid (not from `/proc/self`: a non-dumpable process's `/proc` files
/// belong to root).
fn own_uid() -> Option<u32> {
    Some(nix::unistd::geteuid().as_raw())
}

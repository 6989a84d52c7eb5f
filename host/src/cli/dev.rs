//! `frostgate dev cluster init|up|down`: a local development cluster on fresh tokens (SoftHSM by
//! default; kryoptic, a TPM 2.0 or openCryptoki with `--token`, see `dev_tokens`).

use super::dev_tokens::{self, TokenKind};
use super::out;
use super::output::write_private;
use super::pid_file::{alive, running};
use clap::{Args, Subcommand};
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::privileges::{account, Account};
use frostgate_host::coordinator::cluster::{ClientIdentity, Cluster, NodeEntry};
use frostgate_host::node::enclave::default_enclave_bin;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// A local cluster of nodes (development only).
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// The BIP341 key-path sighash of a synthetic transaction spending a P2TR output (demo input).
    Sighash(SighashArgs),
    /// A PSBT spending a made-up output of a group key (demo input for `sign-psbt`).
    Psbt(super::dev_psbt::PsbtArgs),
    /// A regtest P2TR address derived from a seed (demo recipients).
    Address(super::dev_psbt::AddressArgs),
}

#[derive(Debug, Args)]
pub struct SighashArgs {
    /// The P2TR output key being spent (x-only, hex).
    #[arg(long)]
    output_key: String,
    /// The amount of the spent output, satoshis.
    #[arg(long, default_value_t = 100_000)]
    amount: u64,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Create fresh tokens (one per node, SoftHSM unless `--token`), their objects, node configs
    /// and cluster.toml.
    Init(InitArgs),
    /// Start every node (enclave + host) in the background.
    Up(DirArgs),
    /// Stop every node.
    Down(DirArgs),
    /// Give node N a fresh token and an empty store (as after losing both) and pin its new
    /// identity in every node's `[group]` (node N is stopped; restart the others so they read the
    /// new pins). Then `frostgate repair` rebuilds its seats.
    ReplaceNode(NodeArgs),
    /// The environment node N's token needs (for `pkcs11-tool` or `token inspect` on it), as
    /// `VAR=value` lines or one JSON object.
    Env(NodeArgs),
}

/// One node of a cluster.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The cluster directory.
    #[arg(long)]
    dir: PathBuf,
    /// The node.
    #[arg(long)]
    node: u16,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The cluster directory (created; must not already hold a cluster).
    #[arg(long)]
    dir: PathBuf,
    /// Number of nodes.
    #[arg(long)]
    nodes: u16,
    /// Signing threshold.
    #[arg(long)]
    threshold: u16,
    /// Mutual TLS on every node's API (the default; kept so older scripts keep working): a
    /// self-signed certificate per node and one for the coordinator (under DIR/tls), each pinned
    /// by the other side.
    #[arg(long, conflicts_with = "dev_plaintext")]
    tls: bool,
    /// DEVELOPMENT ONLY: plaintext gRPC on loopback instead of mutual TLS (any local user can
    /// then call the nodes and sign).
    #[arg(long)]
    dev_plaintext: bool,
    /// The IP the nodes' APIs bind (clients still connect over loopback). A non-loopback address
    /// needs TLS, or the nodes refuse to start (`tls_required`).
    #[arg(long, default_value = "127.0.0.1")]
    api_bind: std::net::IpAddr,
    /// A TOML file whose `[policy]` table (and `[audit]`, if any) is written into every node's
    /// enclave.toml; without it
    /// the enclaves are unrestricted (raw digests allowed), as before.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Let every enclave refresh a key down to n = t (`[group] allow_removal_to_threshold`):
    /// `refresh --remove` that leaves no spare seat is refused by the enclaves otherwise.
    #[arg(long)]
    allow_removal_to_threshold: bool,
    /// Every node's token kind: softhsm, kryoptic (FROSTGATE_KRYOPTIC_MODULE), tpm2 (one swtpm per
    /// node) or opencryptoki (root: a soft-token slot per node).
    #[arg(long, value_enum, default_value = "softhsm")]
    token: TokenKind,
    /// DEVELOPMENT ONLY: every enclave attests itself with the software stand-in for the Nitro
    /// security module (a test PKI made here under DIR/attestation, development PCRs), and the
    /// cluster file pins them; `frostgate status` verifies each node's document.
    #[arg(long, value_enum, default_value = "none")]
    attestation: DevAttestation,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    #[arg(skip)]
    quiet: bool,
}

#[derive(Debug, Args)]
pub struct DirArgs {
    /// The cluster directory.
    #[arg(long)]
    dir: PathBuf,
    /// Only this node (e.g. to start each node in its own network namespace with `ip netns exec`).
    #[arg(long)]
    node: Option<u16>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    #[arg(skip)]
    quiet: bool,
}

fn io(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::ConfigInvalid, format!("{what}: {e}"))
}

pub fn run(cmd: DevCommand) -> Result<(), Error> {
    let c = match cmd {
        DevCommand::Cluster(c) => c,
        DevCommand::Sighash(a) => return sighash(a),
        DevCommand::Psbt(a) => return super::dev_psbt::run(a),
        DevCommand::Address(a) => return super::dev_psbt::address(a),
    };
    match c {
        ClusterCommand::Init(a) => init(a),
        ClusterCommand::Up(a) => up(a),
        ClusterCommand::Down(a) => down(a),
        ClusterCommand::ReplaceNode(a) => replace_node(a),
        ClusterCommand::Env(a) => token_env(a),
    }
}

/// The cluster directory (absolute) and node `a.node`'s entry in its cluster file.
fn node_entry(a: &NodeArgs) -> Result<(PathBuf, NodeEntry), Error> {
    let dir = std::path::absolute(&a.dir).map_err(|e| io("cluster dir", e))?;
    let cluster = Cluster::load(&dir.join("cluster.toml"))?;
    let n = cluster
        .nodes
        .into_iter()
        .find(|n| n.id == a.node)
        .ok_or_else(|| Error::new(ErrorCode::ConfigInvalid, format!("--node {}: no such node", a.node)))?;
    Ok((dir, n))
}

fn token_env(a: NodeArgs) -> Result<(), Error> {
    let (_, n) = node_entry(&a)?;
    let kind = TokenKind::from_name(n.token.as_deref())?;
    let env = dev_tokens::env(kind, &n.dir.join("enclave"));
    if a.json {
        let map: serde_json::Map<String, serde_json::Value> =
            env.iter().map(|(k, v)| (k.to_string(), serde_json::Value::String(v.display().to_string()))).collect();
        out(&format!("{}\n", serde_json::Value::Object(map)));
    } else {
        out(&env.iter().map(|(k, v)| format!("{k}={}\n", v.display())).collect::<String>());
    }
    Ok(())
}

fn replace_node(a: NodeArgs) -> Result<(), Error> {
    let (dir, n) = node_entry(&a)?;
    let cluster = Cluster::load(&dir.join("cluster.toml"))?;
    down(DirArgs { dir: dir.clone(), node: Some(a.node), json: false, quiet: true })?;
    let old = std::fs::read_to_string(&n.enclave_config).map_err(|e| io("enclave config", e))?;
    // Everything after the token's own tables stays: the attestation provider (same image, same
    // test PKI) and the group.
    let tail = old
        .find("\n[attestation]")
        .or_else(|| old.find("\n[group]"))
        .map(|at| old[at..].to_string())
        .unwrap_or_default();
    let marker = format!("{{ id = {}, identity_key = \"", a.node);
    let old_identity = tail
        .find(&marker)
        .and_then(|at| tail[at + marker.len()..].split('"').next())
        .ok_or_else(|| io("enclave config", "no [group] entry for this node"))?
        .to_string();
    let ed = n.dir.join("enclave");
    let kind = TokenKind::from_name(n.token.as_deref())?;
    dev_tokens::stop(kind, &ed);
    let _ = std::fs::remove_dir_all(ed.join("tpm"));
    std::fs::remove_dir_all(ed.join("tokens")).map_err(|e| io("token dir", e))?;
    std::fs::create_dir_all(ed.join("tokens")).map_err(|e| io("token dir", e))?;
    std::fs::set_permissions(ed.join("tokens"), std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .map_err(|e| io("token dir permissions", e))?;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", n.db.display()));
    }
    // Created afresh (by this user; handed to the enclave's user below), with a new PIN.
    let _ = std::fs::remove_file(ed.join("pin"));
    let (config, identity) = new_token(&ed, a.node, kind, &dir)?;
    let mut text = std::fs::read_to_string(&config).map_err(|e| io("enclave config", e))?;
    text.push_str(&tail.replace(&old_identity, &identity));
    std::fs::write(&config, text).map_err(|e| io("enclave config", e))?;
    // The cluster file's attestation pins name the new identity too.
    let file = dir.join("cluster.toml");
    let text = std::fs::read_to_string(&file).map_err(|e| io("cluster file", e))?;
    std::fs::write(&file, text.replace(&old_identity, &identity)).map_err(|e| io("cluster file", e))?;
    for other in cluster.nodes.iter().filter(|o| o.id != a.node) {
        let text = std::fs::read_to_string(&other.enclave_config).map_err(|e| io("enclave config", e))?;
        std::fs::write(&other.enclave_config, text.replace(&old_identity, &identity))
            .map_err(|e| io("enclave config", e))?;
    }
    if let (Some(enclave), Some(host)) = (&n.enclave_user, &n.host_user) {
        chown_r(&ed, &account(enclave)?)?;
        chown_r(&n.dir.join("host"), &account(host)?)?;
    }
    if a.json {
        out(&format!("{}\n", serde_json::json!({ "node": a.node, "identity_key": identity })));
    } else {
        out(&format!("node {} has a fresh token (identity {identity}); its store is empty\n", a.node));
    }
    Ok(())
}

/// Creates a development cluster (tokens, objects, configs, cluster.toml) in `dir`.
/// `dev cluster init --attestation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DevAttestation {
    /// No attestation (an OS process, as before).
    None,
    /// The software stand-in for the Nitro security module (development builds).
    Software,
}

pub fn create_cluster(
    dir: &Path,
    nodes: u16,
    threshold: u16,
    tls: bool,
    policy: Option<PathBuf>,
    token: TokenKind,
) -> Result<PathBuf, Error> {
    init(InitArgs {
        dir: dir.to_path_buf(),
        nodes,
        threshold,
        tls,
        dev_plaintext: !tls,
        api_bind: std::net::Ipv4Addr::LOCALHOST.into(),
        policy,
        allow_removal_to_threshold: false,
        token,
        attestation: DevAttestation::None,
        json: false,
        quiet: true,
    })?;
    Ok(dir.join("cluster.toml"))
}

/// Starts every node of the cluster in `dir`.
pub fn start_cluster(dir: &Path) -> Result<(), Error> {
    up(DirArgs { dir: dir.to_path_buf(), node: None, json: false, quiet: true })
}

/// Stops every node of the cluster in `dir`.
pub fn stop_cluster(dir: &Path) -> Result<(), Error> {
    down(DirArgs { dir: dir.to_path_buf(), node: None, json: false, quiet: true })
}

fn init(a: InitArgs) -> Result<(), Error> {
    if a.threshold < 2 || a.threshold > a.nodes || a.nodes > frostgate_common::limits::MAX_PARTICIPANTS {
        return Err(Error::new(
            ErrorCode::ConfigInvalid,
            format!("{}-of-{} is not a valid cluster", a.threshold, a.nodes),
        ));
    }
    let dir = std::path::absolute(&a.dir).map_err(|e| io("cluster dir", e))?;
    if dir.join("cluster.toml").exists() {
        return Err(Error::new(ErrorCode::ConfigInvalid, format!("{} already holds a cluster", dir.display())));
    }
    // Keys, configs and ownership are written into the directory: only into one of our own.
    match std::fs::symlink_metadata(&dir) {
        Ok(m) if m.file_type().is_symlink() || !m.is_dir() => {
            return Err(Error::new(ErrorCode::ConfigInvalid, format!("{} is not a directory", dir.display())))
        }
        Ok(_) => {
            let mut entries = std::fs::read_dir(&dir).map_err(|e| io("cluster dir", e))?;
            if entries.next().is_some() {
                return Err(Error::new(
                    ErrorCode::ConfigInvalid,
                    format!("{} is not empty: a cluster is created in a new or empty directory", dir.display()),
                ));
            }
        }
        Err(_) => std::fs::create_dir_all(&dir).map_err(|e| io("cluster dir", e))?,
    }
    let mut nodes = Vec::new();
    let mut ports = Vec::new();
    let mut pins = Vec::new();
    let pki = match a.attestation {
        DevAttestation::None => None,
        DevAttestation::Software => Some(super::dev_attestation::Pki::create(&dir.join("attestation"))?),
    };
    let pcrs = super::dev_attestation::dev_pcrs();
    let tls = if !a.dev_plaintext {
        std::fs::create_dir_all(dir.join("tls")).map_err(|e| io("tls dir", e))?;
        Some(certificate(&dir.join("tls"), "coordinator")?)
    } else {
        None
    };
    // Run as root: every node's enclave and host run as two users (created here if missing).
    let users = if nix::unistd::geteuid().is_root() { Some(dev_users()?) } else { None };
    if users.is_some() {
        traversable_by_others(&dir)?;
    }
    for id in 1..=a.nodes {
        let nd = dir.join(format!("node{id}"));
        // node{id}/enclave: token, PIN, configs (the enclave's user alone); node{id}/host: the
        // store and the TLS key (the host's user alone); node{id}/run: the enclave's socket.
        let (ed, hd, rd) = (nd.join("enclave"), nd.join("host"), nd.join("run"));
        for (d, mode) in [(ed.join("tokens"), 0o700), (ed.clone(), 0o700), (hd.clone(), 0o700), (rd.clone(), 0o755)] {
            std::fs::create_dir_all(&d).map_err(|e| io("node dir", e))?;
            // The enclave refuses a token directory other users can reach.
            std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .map_err(|e| io("node dir permissions", e))?;
        }
        let port = free_port(&ports)?;
        ports.push(port);
        let (config, identity) = new_token(&ed, id, a.token, &dir)?;
        // Attested: every enclave runs ceremonies only with peers attested as pinned.
        let attested = pki.as_ref().map(|p| format!(", {}", p.group_pins(&pcrs))).unwrap_or_default();
        pins.push(format!("  {{ id = {id}, identity_key = \"{identity}\"{attested} }},\n"));
        nodes.push(NodeEntry {
            id,
            dir: nd.clone(),
            api: format!("127.0.0.1:{port}"),
            api_listen: (!a.api_bind.is_loopback()).then(|| std::net::SocketAddr::new(a.api_bind, port).to_string()),
            server_cert: if !a.dev_plaintext { Some(certificate(&hd, "tls")?.cert) } else { None },
            enclave_socket: rd.join("enclave.sock"),
            db: hd.join("host.db"),
            enclave_config: config.clone(),
            softhsm_conf: (a.token == TokenKind::Softhsm).then(|| ed.join("softhsm2.conf")),
            token: (a.token != TokenKind::Softhsm).then(|| a.token.name().to_string()),
            enclave_user: users.as_ref().map(|u| u.0.name.clone()),
            host_user: users.as_ref().map(|u| u.1.name.clone()),
            attestation: pki.as_ref().map(|p| p.pins(&pcrs, &identity)),
        });
        if let Some(pki) = &pki {
            let table = pki.enclave_table(&ed.join("attestation"), &pcrs)?;
            let mut f = std::fs::OpenOptions::new().append(true).open(&config).map_err(|e| io("enclave config", e))?;
            std::io::Write::write_all(&mut f, table.as_bytes()).map_err(|e| io("enclave config", e))?;
        }
    }
    // Every enclave pins the whole group: a DKG runs only among exactly these identity keys.
    let mut group = format!("\n[group]\nparticipants = [\n{}]\n", pins.concat());
    if a.allow_removal_to_threshold {
        group.push_str("allow_removal_to_threshold = true\n");
    }
    if let Some(file) = &a.policy {
        group.push_str(&policy_table(file)?);
    }
    for n in &nodes {
        let mut f =
            std::fs::OpenOptions::new().append(true).open(&n.enclave_config).map_err(|e| io("enclave config", e))?;
        std::io::Write::write_all(&mut f, group.as_bytes()).map_err(|e| io("enclave config", e))?;
    }
    if let Some((enclave, host)) = &users {
        if a.token == TokenKind::Opencryptoki {
            super::dev_tokens_ock::admit(&enclave.name)?;
        }
        for n in &nodes {
            chown_r(&n.dir.join("enclave"), enclave)?;
            chown_r(&n.dir.join("run"), enclave)?;
            chown_r(&n.dir.join("host"), host)?;
        }
    }
    let cluster = Cluster { threshold: a.threshold, tls, nodes };
    cluster.save(&dir.join("cluster.toml"))?;
    if a.quiet {
        return Ok(());
    }
    if a.json {
        out(&format!(
            "{}\n",
            serde_json::json!({"cluster": dir.join("cluster.toml"), "nodes": a.nodes, "threshold": a.threshold})
        ));
    } else {
        out(&format!("cluster {}-of-{} created: {}\n", a.threshold, a.nodes, dir.join("cluster.toml").display()));
    }
    Ok(())
}

/// A fresh token of `kind` for node `id` in `ed` (its files, `pin`, an `enclave.toml` with its
/// `[custody]`, the profile `token init` chose recorded there), its objects created:
/// (enclave config, identity public key hex).
fn new_token(ed: &Path, id: u16, kind: TokenKind, cluster: &Path) -> Result<(PathBuf, String), Error> {
    let pin_file = ed.join("pin");
    let made = dev_tokens::make(kind, ed, id, &pin_file, cluster)?;
    let config = ed.join("enclave.toml");
    std::fs::write(&config, &made.custody).map_err(|e| io("enclave config", e))?;
    dev_tokens::start(kind, ed, None)?;
    let o = Command::new(default_enclave_bin())
        .args(["token", "init", "--json", "--config"])
        .arg(&config)
        .envs(dev_tokens::env(kind, ed))
        .output()
        .map_err(|e| io("frostgate-enclave", e));
    dev_tokens::stop(kind, ed);
    let o = o?;
    if !o.status.success() {
        return Err(Error::new(
            ErrorCode::HsmOperationFailed,
            format!("token init: {}", String::from_utf8_lossy(&o.stderr)),
        ));
    }
    let init: serde_json::Value = serde_json::from_slice(&o.stdout).map_err(|e| io("token init output", e))?;
    let identity = init["identity_public_key"].as_str().ok_or_else(|| io("token init output", "no identity key"))?;
    let profile = init["profile"].as_str().ok_or_else(|| io("token init output", "no profile"))?;
    // `token init` recorded the profile in the configuration; boot checks the token against it.
    let text = std::fs::read_to_string(&config).map_err(|e| io("enclave config", e))?;
    if !text.contains(&format!("profile = \"{profile}\"")) {
        return Err(io("enclave config", format!("token init did not record profile {profile}")));
    }
    Ok((config, identity.to_string()))
}

/// The development cluster's two users (enclave, host), created if missing (root only).
const DEV_ENCLAVE_USER: &str = "frostgate-dev-enclave";
const DEV_HOST_USER: &str = "frostgate-dev-host";

fn dev_users() -> Result<(Account, Account), Error> {
    // Concurrent `useradd`s can clobber each other's entries: one creator at a time.
    // Root only, in a root-owned directory (not a world-writable one an attacker could plant a
    // link in).
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open("/run/frostgate-dev-users.lock")
        .map_err(|e| io("users lock", e))?;
    lock.lock().map_err(|e| io("users lock", e))?;
    let ensure = |name: &str| -> Result<Account, Error> {
        if let Ok(a) = account(name) {
            return Ok(a);
        }
        let o = Command::new("useradd")
            .args(["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name])
            .output()
            .map_err(|e| io("useradd", e))?;
        // Another `dev cluster init` may have created it meanwhile.
        account(name).map_err(|_| io(&format!("useradd {name}"), String::from_utf8_lossy(&o.stderr)))
    };
    Ok((ensure(DEV_ENCLAVE_USER)?, ensure(DEV_HOST_USER)?))
}

/// The users of a two-user cluster must reach the node directories: every existing ancestor of
/// `dir` must be searchable by others (`o+x`).
fn traversable_by_others(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    for ancestor in dir.ancestors().skip(1) {
        let Ok(meta) = std::fs::metadata(ancestor) else { continue };
        if meta.permissions().mode() & 0o001 == 0 {
            return Err(Error::new(
                ErrorCode::ConfigInvalid,
                format!(
                    "{} is not searchable by other users (chmod o+x it): a two-user cluster's enclave and host \
                     users must reach {}",
                    ancestor.display(),
                    dir.display()
                ),
            ));
        }
    }
    Ok(())
}

/// `chown -R` to `who` (and its group), never following a symbolic link, children before their
/// directory (so nothing is handed over while root still walks it).
fn chown_r(path: &Path, who: &Account) -> Result<(), Error> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| io("stat", e))?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).map_err(|e| io("read dir", e))?.flatten() {
            chown_r(&entry.path(), who)?;
        }
    }
    std::os::unix::fs::lchown(path, Some(who.uid), Some(who.gid)).map_err(|e| io("chown", e))
}

/// A free port for a node's API, chosen below the kernel's ephemeral range: a port is chosen at
/// `init` and bound at `up`, and a port from the ephemeral range could meanwhile become the local
/// port of any outgoing connection (many run in parallel in the test suite). Random, so clusters
/// made at the same time rarely pick the same one; checked bindable now, and none of the
/// cluster's other nodes' (`taken`), which are not bound yet either.
fn free_port(taken: &[u16]) -> Result<u16, Error> {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next().and_then(|p| p.parse::<u16>().ok()))
        .unwrap_or(32768);
    let (from, to) = (low.saturating_sub(12_000).max(1024), low.saturating_sub(1).max(1025));
    for _ in 0..64 {
        let r = u16::from_be_bytes(frostgate_host::random_bytes::<2>());
        let port = from + r % (to - from);
        if !taken.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    // Then one the kernel gives, none of the taken either.
    for _ in 0..64 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| io("free port", e))?;
        let port = l.local_addr().map_err(|e| io("free port", e))?.port();
        if !taken.contains(&port) {
            return Ok(port);
        }
    }
    Err(Error::new(ErrorCode::ConfigInvalid, "no free loopback port for a node"))
}

/// A self-signed certificate `DIR/NAME.crt` and its key `DIR/NAME.key` (mode 0600).
fn certificate(dir: &Path, name: &str) -> Result<ClientIdentity, Error> {
    let (cert, key) = frostgate_host::api::tls::generate(&format!("frostgate-{name}"))?;
    let id = ClientIdentity { cert: dir.join(format!("{name}.crt")), key: dir.join(format!("{name}.key")) };
    std::fs::write(&id.cert, cert).map_err(|e| io("certificate", e))?;
    write_private(&id.key, &key)?;
    Ok(id)
}

/// Starts a daemon in its own process group and waits (bounded) for its `READY` line.
fn start_daemon(
    bin: &Path,
    args: &[String],
    env: &[(&str, PathBuf)],
    log: &Path,
    pid_file: &Path,
) -> Result<(), Error> {
    // Readable by whoever started the cluster only (the daemon writes through this descriptor).
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(log)
        .map_err(|e| io("log", e))?;
    // Measurements only (`scripts/instructions.sh`): every daemon under a wrapper such as
    // `valgrind --tool=callgrind`.
    let mut cmd = match wrapper() {
        Some(wrap) => {
            let mut c = Command::new(&wrap[0]);
            c.args(&wrap[1..]).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.args(args).stderr(stderr).process_group(0);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let (child, _) = frostgate_host::supervisor::spawn_ready(&mut cmd, frostgate_host::supervisor::READY_TIMEOUT)
        .map_err(|why| {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            let tail: String =
                tail.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
            Error::new(ErrorCode::EnclaveUnavailable, format!("{} did not start ({why}):\n{tail}", bin.display()))
        })?;
    std::fs::write(pid_file, child.id().to_string()).map_err(|e| io("pid file", e))
}

/// The `[policy]` table of `file` (and its `[audit]`, if any), re-serialized.
fn policy_table(file: &Path) -> Result<String, Error> {
    let text = std::fs::read_to_string(file).map_err(|e| io("policy file", e))?;
    let value: toml::Table =
        toml::from_str(&text).map_err(|e| Error::new(ErrorCode::ConfigInvalid, format!("{}: {e}", file.display())))?;
    let policy = value
        .get("policy")
        .and_then(|p| p.as_table())
        .ok_or_else(|| Error::new(ErrorCode::ConfigInvalid, format!("{}: no [policy] table", file.display())))?;
    let mut out = toml::Table::new();
    out.insert("policy".into(), toml::Value::Table(policy.clone()));
    // The audit trail's bounds and auditor travel with the policy.
    if let Some(audit) = value.get("audit") {
        out.insert("audit".into(), audit.clone());
    }
    let rendered = toml::to_string(&out).map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
    Ok(format!("\n{rendered}"))
}

fn up(a: DirArgs) -> Result<(), Error> {
    let cluster = Cluster::load(&a.dir.join("cluster.toml"))?;
    let enclave_bin = default_enclave_bin();
    let host_bin = std::env::current_exe().map_err(|e| io("current exe", e))?;
    // Start every node that can start; report the others together (one bad node must not keep
    // the rest of the cluster down).
    let mut failed = Vec::new();
    for n in cluster.nodes.iter().filter(|n| a.node.is_none_or(|only| n.id == only)) {
        if let Err(e) = start_node(&cluster, n, &enclave_bin, &host_bin) {
            failed.push(format!("node {}: {}", n.id, e.message()));
        }
    }
    if !failed.is_empty() {
        return Err(Error::new(ErrorCode::EnclaveUnavailable, format!("not started: {}", failed.join("; "))));
    }
    report(&a, "up", cluster.nodes.iter().filter(|n| a.node.is_none_or(|only| n.id == only)).count());
    Ok(())
}

fn start_node(cluster: &Cluster, n: &NodeEntry, enclave_bin: &Path, host_bin: &Path) -> Result<(), Error> {
    let mut env: Vec<(&str, PathBuf)> = vec![("FROSTGATE_DEV_FAULT_FILE", n.dir.join("fault"))];
    let kind = TokenKind::from_name(n.token.as_deref())?;
    let ed = n.dir.join("enclave");
    match &n.softhsm_conf {
        Some(conf) => env.push(("SOFTHSM2_CONF", conf.clone())),
        None => env.extend(dev_tokens::env(kind, &ed)),
    }
    if alive(&n.dir.join("enclave.pid")).is_none() {
        let user = n.enclave_user.as_deref().map(account).transpose()?;
        dev_tokens::start(kind, &ed, user.as_ref())?;
        let args = vec![
            "serve".into(),
            "--listen".into(),
            n.enclave_socket.display().to_string(),
            "--config".into(),
            n.enclave_config.display().to_string(),
        ];
        let mut args = args;
        if let (Some(enclave), Some(host)) = (&n.enclave_user, &n.host_user) {
            // The enclave drops to its user and serves the host's (and root, for `status`).
            let host_uid = account(host)?.uid;
            args.extend(["--user".into(), enclave.clone(), "--allowed-uid".into(), host_uid.to_string()]);
            args.extend(["--allowed-uid".into(), "0".into()]);
        }
        start_daemon(enclave_bin, &args, &env, &n.dir.join("enclave.log"), &n.dir.join("enclave.pid"))?;
    }
    if alive(&n.dir.join("host.pid")).is_none() {
        let mut args = vec![
            "host".into(),
            "serve".into(),
            "--db".into(),
            n.db.display().to_string(),
            "--enclave".into(),
            n.enclave_socket.display().to_string(),
            "--api-listen".into(),
            n.api_listen.clone().unwrap_or_else(|| n.api.clone()),
            // Local clients (the operator's `token rotate-kek`, `backup`, `restore`).
            "--listen".into(),
            format!("unix:{}", n.dir.join("host").join("host.sock").display()),
        ];
        if n.server_cert.is_none() {
            args.push("--dev-plaintext-api".into());
        }
        if let Some(host) = &n.host_user {
            args.extend(["--user".into(), host.clone()]);
        }
        if let (Some(cert), Some(client)) = (&n.server_cert, &cluster.tls) {
            let key = cert.with_extension("key");
            for (flag, path) in [("--tls-cert", cert), ("--tls-key", &key), ("--tls-client-cert", &client.cert)] {
                args.extend([flag.to_string(), path.display().to_string()]);
            }
        }
        start_daemon(host_bin, &args, &env, &n.dir.join("host.log"), &n.dir.join("host.pid"))?;
    }
    Ok(())
}

/// `N nodes up|down`, or `{"up|down": N}` with `--json`; nothing when called as a library.
fn report(a: &DirArgs, verb: &str, nodes: usize) {
    if a.quiet {
        return;
    }
    if a.json {
        out(&format!("{}\n", serde_json::json!({ verb: nodes })));
    } else {
        out(&format!("{nodes} nodes {verb}\n"));
    }
}

/// `FROSTGATE_DEV_WRAP`: a command (split on whitespace) that dev clusters start daemons under.
fn wrapper() -> Option<Vec<String>> {
    let words: Vec<String> = std::env::var("FROSTGATE_DEV_WRAP").ok()?.split_whitespace().map(String::from).collect();
    (!words.is_empty()).then_some(words)
}

/// Whether `pid` is a daemon `start_node` started for the node in `node_dir`: its command line
/// is `... serve ...` with an argument under `node_dir` (its socket or its store). A pid file
/// naming any other process (stale, reused, or written by someone else) is not acted on.
fn is_node_daemon(pid: i32, node_dir: &Path) -> bool {
    let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let args: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
    let prefix = format!("{}/", node_dir.display());
    let under = args.iter().any(|a| a.starts_with(prefix.as_bytes()));
    let serves = args.iter().any(|a| *a == b"serve");
    let frostgate = args.iter().any(|a| {
        let name = a.rsplit(|b| *b == b'/').next().unwrap_or(a);
        name == b"frostgate" || name == b"frostgate-enclave"
    });
    under && serves && frostgate
}

fn stop(pid_file: &Path) {
    let Some(raw) = alive(pid_file) else {
        let _ = std::fs::remove_file(pid_file);
        return;
    };
    let node_dir = pid_file.parent().unwrap_or(Path::new("/"));
    if !is_node_daemon(raw, node_dir) {
        tracing::warn!(pid = raw, file = %pid_file.display(), "pid file names a process that is not this node's daemon; left alone");
        let _ = std::fs::remove_file(pid_file);
        return;
    }
    let pid = nix::unistd::Pid::from_raw(raw);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    // A wrapped daemon (valgrind) takes longer to exit and writes its profile on the way out.
    let grace = if wrapper().is_some() { 120 } else { 10 };
    let deadline = Instant::now() + Duration::from_secs(grace);
    while Instant::now() < deadline && running(raw) {
        std::thread::sleep(Duration::from_millis(20));
    }
    if running(raw) {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    }
    let _ = std::fs::remove_file(pid_file);
}

/// Stops every node: those the cluster file names, and every `DIR/*/` holding pid files (so an
/// edited or broken cluster file never leaves processes running).
fn down(mut a: DirArgs) -> Result<(), Error> {
    a.dir = std::path::absolute(&a.dir).map_err(|e| io("cluster dir", e))?;
    let mut dirs: Vec<PathBuf> = match Cluster::load(&a.dir.join("cluster.toml")) {
        Ok(cluster) => {
            cluster.nodes.into_iter().filter(|n| a.node.is_none_or(|only| n.id == only)).map(|n| n.dir).collect()
        }
        Err(e) => {
            tracing::warn!(code = %e.code(), "cluster file unreadable; stopping by pid files: {}", e.message());
            Vec::new()
        }
    };
    if let Ok(entries) = std::fs::read_dir(&a.dir) {
        for entry in entries.flatten() {
            let d = entry.path();
            let stray = a.node.is_none() && (d.join("host.pid").exists() || d.join("enclave.pid").exists());
            if stray && !dirs.contains(&d) {
                dirs.push(d);
            }
        }
    }
    for d in &dirs {
        stop(&d.join("host.pid"));
        stop(&d.join("enclave.pid"));
        // The token's daemons (tpm2), whatever the kind recorded: stopping by pid file is a no-op
        // where there are none.
        dev_tokens::stop(TokenKind::Tpm2, &d.join("enclave"));
    }
    report(&a, "down", dirs.len());
    Ok(())
}

/// A one-input, one-output transaction spending `amount` from the P2TR output, and its
/// SIGHASH_DEFAULT key-path sighash (BIP341), computed by rust-bitcoin.
fn sighash(a: SighashArgs) -> Result<(), Error> {
    use bitcoin::hashes::Hash;
    use bitcoin::key::TweakedPublicKey;
    use bitcoin::sighash::{Prevouts, SighashCache, TapSighashType};
    use bitcoin::{
        absolute, transaction, Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid, Witness,
    };
    let mut key = [0u8; 32];
    hex::decode_to_slice(&a.output_key, &mut key)
        .map_err(|_| Error::new(ErrorCode::ConfigInvalid, "--output-key: 32 bytes of hex"))?;
    let key = bitcoin::secp256k1::XOnlyPublicKey::from_slice(&key)
        .map_err(|e| Error::new(ErrorCode::ConfigInvalid, e.to_string()))?;
    let script = ScriptBuf::new_p2tr_tweaked(TweakedPublicKey::dangerous_assume_tweaked(key));
    let prevout = TxOut { value: Amount::from_sat(a.amount), script_pubkey: script.clone() };
    let tx = Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint {
                txid: Txid::from_byte_array(bitcoin::hashes::sha256::Hash::hash(b"frostgate demo").to_byte_array()),
                vout: 0,
            },
            script_sig: ScriptBuf::new(),
            sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
            witness: Witness::new(),
        }],
        output: vec![TxOut { value: Amount::from_sat(a.amount.saturating_sub(1_000)), script_pubkey: script }],
    };
    let sighash = SighashCache::new(&tx)
        .taproot_key_spend_signature_hash(0, &Prevouts::All(&[prevout]), TapSighashType::Default)
        .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
    out(&format!("{}\n", hex::encode(sighash.to_byte_array())));
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_nodes_port_is_none_the_cluster_has_taken() {
        // Every port of the range below the ephemeral one taken: the pick falls back to a port
        // the kernel gives (never one of the taken).
        let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|t| t.split_whitespace().next().and_then(|p| p.parse().ok()))
            .unwrap_or(32768);
        let taken: Vec<u16> = (low.saturating_sub(12_000)..low).collect();
        for _ in 0..4 {
            let port = super::free_port(&taken).expect("port");
            assert!(!taken.contains(&port), "{port}");
        }
        let one = super::free_port(&[]).expect("port");
        assert!(one < low, "{one}: from below the ephemeral range");
    }
}

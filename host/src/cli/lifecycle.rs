//! `frostgate refresh | repair | backup | restore | recovery-key`: operations that keep a key
//! alive across its operators' changes.

use super::out;
use clap::Args;
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::ids::KeyId;
use frostgate_common::protocol::{Health, ServiceState};
use frostgate_host::coordinator::cluster::Cluster;
use frostgate_host::coordinator::dkg_relay;
use serde::Serialize;
use std::path::PathBuf;
use std::str::FromStr;

#[derive(Debug, Args)]
pub struct RefreshArgs {
    /// The cluster file.
    #[arg(long)]
    cluster: PathBuf,
    /// The key id (x-only internal key, hex).
    #[arg(long)]
    key: String,
    /// Remove this participant: the others refresh without it and its share stops combining
    /// with theirs. Repeat to remove several (at least the threshold must remain).
    #[arg(long)]
    remove: Vec<u16>,
    /// Only end an earlier refresh (its DKG id, as its error named): committed on every node if
    /// every node prepared it, else abandoned everywhere. Idempotent. With `--remove`, name the
    /// same removed nodes as that refresh did.
    #[arg(long)]
    resolve: Option<String>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// What `refresh` prints.
#[derive(Debug, Serialize)]
struct RefreshRow {
    key: String,
    epoch: u64,
    threshold: u16,
    participants: Vec<u16>,
    removed: Vec<u16>,
}

pub async fn refresh(a: RefreshArgs) -> Result<(), Error> {
    let cluster = Cluster::load(&a.cluster)?;
    let key = KeyId::from_str(&a.key).map_err(|e| Error::new(ErrorCode::ConfigInvalid, e))?;
    if let Some(unknown) = a.remove.iter().find(|r| !cluster.nodes.iter().any(|n| n.id == **r)) {
        return Err(Error::new(ErrorCode::ConfigInvalid, format!("--remove {unknown}: no such node in the cluster")));
    }
    let nodes: Vec<_> =
        dkg_relay::connect_all(&cluster).await.into_iter().filter(|n| !a.remove.contains(&n.id().get())).collect();
    frostgate_host::coordinator::attestation::require_pinned(&cluster, &nodes).await?;
    let refreshed = match &a.resolve {
        None => dkg_relay::refresh(&nodes, key).await?,
        Some(d) => {
            let dkg = frostgate_common::ids::DkgId::from_str(d)
                .map_err(|_| Error::new(ErrorCode::ConfigInvalid, format!("--resolve {d:?}: a DKG id (hex)")))?;
            dkg_relay::resolve(&nodes, dkg, key).await?
        }
    };
    let row = RefreshRow {
        key: refreshed.key.key.to_string(),
        epoch: refreshed.epoch,
        threshold: refreshed.key.threshold,
        participants: refreshed.key.participants.as_inner().iter().map(|p| p.get()).collect(),
        removed: a.remove.clone(),
    };
    if a.json {
        out(&format!("{}\n", serde_json::json!(row)));
    } else {
        out(&format!(
            "key id:       {}\nepoch:        {}\nthreshold:    {}-of-{}\nparticipants: {:?}\nremoved:      {:?}\n",
            row.key,
            row.epoch,
            row.threshold,
            row.participants.len(),
            row.participants,
            row.removed,
        ));
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct RepairArgs {
    /// The cluster file (node SEAT is the fresh node that receives the seat).
    #[arg(long)]
    cluster: PathBuf,
    /// The key id (x-only internal key, hex).
    #[arg(long)]
    key: String,
    /// The seat to repair: a node of the cluster, its enclave fresh (new token, empty store) and
    /// pinned for the seat in every helper's `[group]`.
    #[arg(long)]
    seat: u16,
    /// The helpers (default: the first threshold nodes that are ready).
    #[arg(long, value_delimiter = ',')]
    helpers: Vec<u16>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub async fn repair(a: RepairArgs) -> Result<(), Error> {
    let cluster = Cluster::load(&a.cluster)?;
    let key = KeyId::from_str(&a.key).map_err(|e| Error::new(ErrorCode::ConfigInvalid, e))?;
    let nodes = dkg_relay::connect_all(&cluster).await;
    frostgate_host::coordinator::attestation::require_pinned(&cluster, &nodes).await?;
    let new = nodes.iter().find(|n| n.id().get() == a.seat).ok_or_else(|| {
        Error::new(ErrorCode::ConfigInvalid, format!("--seat {}: no such node in the cluster", a.seat))
    })?;
    let mut helpers = Vec::new();
    for n in nodes.iter().filter(|n| n.id().get() != a.seat) {
        let chosen = if a.helpers.is_empty() {
            helpers.len() < cluster.threshold as usize
                && n.call(Health, std::time::Duration::from_secs(5)).await.is_ok_and(|h| h.state == ServiceState::Ready)
        } else {
            a.helpers.contains(&n.id().get())
        };
        if chosen {
            helpers.push(n.clone());
        }
    }
    let repaired = dkg_relay::repair(&helpers, new, key).await?;
    let row = serde_json::json!({
        "key": repaired.key.to_string(),
        "seat": a.seat,
        "helpers": helpers.iter().map(|h| h.id().get()).collect::<Vec<_>>(),
        "threshold": repaired.threshold,
    });
    if a.json {
        out(&format!("{row}\n"));
    } else {
        out(&format!(
            "key id:  {}\nseat:    {} (repaired, checked against its verifying share)\nhelpers: {}\n",
            row["key"].as_str().unwrap_or_default(),
            a.seat,
            row["helpers"],
        ));
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The node's local socket (`host.sock` in a dev cluster).
    #[arg(long)]
    connect: String,
    /// The key id (x-only internal key, hex).
    #[arg(long)]
    key: String,
    /// Where to write the backup (JSON; the share inside is encrypted to the recovery key): a new
    /// file, never through a link.
    #[arg(long)]
    out: PathBuf,
    /// Overwrite an existing `--out` file.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The (fresh) node's local socket; its enclave reads the recovery private key itself.
    #[arg(long)]
    connect: String,
    /// The backup file written by `frostgate backup`.
    #[arg(long)]
    file: PathBuf,
    /// The cluster: its other nodes state the key's current epoch to the restoring enclave,
    /// which refuses a backup of an earlier epoch (`backup_stale`).
    #[arg(long)]
    cluster: PathBuf,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct RecoveryKeyArgs {
    /// Where to write the new recovery private key (hex; mode 0600). Keep it offline; give it
    /// to an enclave only to restore.
    #[arg(long)]
    private_key_out: PathBuf,
}

/// The backup file: `SeatBackup` with hex fields.
#[derive(Debug, Serialize, serde::Deserialize)]
struct BackupFile {
    format: String,
    key: String,
    seat: u16,
    epoch: u64,
    public_key_package: String,
    recovery_public_key: String,
    ephemeral_public_key: String,
    ciphertext: String,
}

const BACKUP_FORMAT: &str = "frostgate-seat-backup/v1";

pub(super) async fn local(connect: &str) -> Result<frostgate_host::node::enclave::EnclaveClient, Error> {
    frostgate_host::node::enclave::EnclaveClient::connect(connect.parse::<frostgate_common::transport::Address>()?)
        .await
}

pub async fn backup(a: BackupArgs) -> Result<(), Error> {
    let key = KeyId::from_str(&a.key).map_err(|e| Error::new(ErrorCode::ConfigInvalid, e))?;
    super::output::check_new(&a.out, a.force)?;
    let node = local(&a.connect).await?;
    let b = node.channel().request(frostgate_common::protocol::BackupSeat { key }, Some(TIMEOUT)).await?;
    let file = BackupFile {
        format: BACKUP_FORMAT.into(),
        key: b.key.to_string(),
        seat: b.seat.get(),
        epoch: b.epoch,
        public_key_package: hex::encode(b.public_key_package.as_inner()),
        recovery_public_key: hex::encode(b.recovery_public_key),
        ephemeral_public_key: hex::encode(b.ephemeral_public_key),
        ciphertext: hex::encode(b.ciphertext.as_inner()),
    };
    let text = serde_json::to_string_pretty(&file).map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
    super::output::write_new(&a.out, (text + "\n").as_bytes(), a.force)?;
    out(&format!("seat {} of key {} (epoch {}) backed up to {}\n", file.seat, file.key, file.epoch, a.out.display()));
    Ok(())
}

fn parse_backup(path: &std::path::Path) -> Result<frostgate_common::protocol::SeatBackup, Error> {
    let bad = |m: String| Error::new(ErrorCode::BackupInvalid, format!("{}: {m}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let f: BackupFile = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if f.format != BACKUP_FORMAT {
        return Err(bad(format!("format {:?}, expected {BACKUP_FORMAT}", f.format)));
    }
    let bytes = |s: &str| hex::decode(s).map_err(|e| bad(e.to_string()));
    let b32 =
        |s: &str| -> Result<[u8; 32], Error> { bytes(s)?.try_into().map_err(|_| bad("a key is not 32 bytes".into())) };
    Ok(frostgate_common::protocol::SeatBackup {
        key: KeyId::from_str(&f.key).map_err(|e| bad(e.to_string()))?,
        seat: frostgate_common::ids::ParticipantId::new(f.seat).map_err(|e| bad(e.to_string()))?,
        epoch: f.epoch,
        public_key_package: frostgate_common::bounded::PublicKeyPackageBytes::new(bytes(&f.public_key_package)?)
            .map_err(|e| bad(e.to_string()))?,
        recovery_public_key: b32(&f.recovery_public_key)?,
        ephemeral_public_key: b32(&f.ephemeral_public_key)?,
        ciphertext: frostgate_common::bounded::DkgCiphertext::new(bytes(&f.ciphertext)?)
            .map_err(|e| bad(e.to_string()))?,
    })
}

/// Restores a seat: the restoring enclave draws a challenge, every other node of the cluster
/// states (signed by its enclave's identity key) the epoch at which it holds the key over that
/// challenge, and the restoring enclave checks the statements itself (`backup_stale` for a
/// backup of an earlier epoch). The CLI only carries them.
pub async fn restore(a: RestoreArgs) -> Result<(), Error> {
    use frostgate_common::protocol::{AttestEpoch, RestoreAttested, RestoreChallenge};
    let backup = parse_backup(&a.file)?;
    let cluster = Cluster::load(&a.cluster)?;
    let seat = backup.seat;
    let node = local(&a.connect).await?;
    let challenge = node.channel().request(RestoreChallenge { key: backup.key }, Some(TIMEOUT)).await?;
    let mut statements = Vec::new();
    for peer in dkg_relay::connect_all(&cluster).await.iter().filter(|n| n.id() != seat) {
        match peer.call(AttestEpoch { key: backup.key, challenge: challenge.challenge }, TIMEOUT).await {
            Ok(s) => statements.push(s),
            Err(e) => tracing::warn!(node = %peer.id(), code = %e.code(), "no epoch statement: {}", e.message()),
        }
    }
    let statements = frostgate_common::protocol::EpochStatements::new(statements)
        .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
    let info = node.channel().request(RestoreAttested { backup, statements }, Some(TIMEOUT)).await?;
    let row = serde_json::json!({ "key": info.key.to_string(), "seat": seat.get(), "threshold": info.threshold });
    if a.json {
        out(&format!("{row}\n"));
    } else {
        out(&format!("seat {} of key {} restored (checked against its verifying share)\n", seat, info.key));
    }
    Ok(())
}

pub fn recovery_key(a: RecoveryKeyArgs) -> Result<(), Error> {
    // Generated by the enclave binary: this process never holds a secret.
    let bin = frostgate_host::node::enclave::default_enclave_bin();
    let status = std::process::Command::new(&bin)
        .arg("recovery-key")
        .arg("--private-key-out")
        .arg(&a.private_key_out)
        .status()
        .map_err(|e| Error::new(ErrorCode::EnclaveUnavailable, format!("running {}: {e}", bin.display())))?;
    match status.success() {
        true => Ok(()),
        false => Err(Error::new(ErrorCode::ConfigInvalid, "the recovery key was not generated (see above)")),
    }
}

const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

//! `frostgate refresh | repair`: operations that keep a key alive across its operators' changes.

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
    let refreshed = dkg_relay::refresh(&nodes, key).await?;
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

//! `frostgate xpub | address`: watch a group key from ordinary wallets (BIP32/BIP328 xpub,
//! `tr(XPUB/<0;1>/*)` descriptor, addresses at `<0|1>/i`), from the package `t` nodes agree on.

use super::group::Network;
use super::out;
use clap::Args;
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::ids::KeyId;
use frostgate_host::coordinator::cluster::Cluster;
use frostgate_host::coordinator::{derivation, dkg_relay, KeyMaterial, Settings};
use serde::Serialize;
use std::path::PathBuf;
use std::str::FromStr;

#[derive(Debug, Args)]
pub struct XpubArgs {
    /// The cluster file.
    #[arg(long)]
    cluster: PathBuf,
    /// The key id (x-only internal key, hex).
    #[arg(long)]
    key: String,
    /// Network of the xpub (`tpub` for everything but bitcoin).
    #[arg(long, value_enum, default_value = "regtest")]
    network: Network,
    /// Print one JSON object: `{"xpub", "descriptor", "fingerprint"}`.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct AddressArgs {
    /// The cluster file.
    #[arg(long)]
    cluster: PathBuf,
    /// The key id (x-only internal key, hex).
    #[arg(long)]
    key: String,
    /// The address index.
    #[arg(long)]
    index: u32,
    /// The change branch (`1/i`) instead of receive (`0/i`).
    #[arg(long)]
    change: bool,
    /// Network of the address.
    #[arg(long, value_enum, default_value = "regtest")]
    network: Network,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct XpubRow {
    xpub: String,
    descriptor: String,
    fingerprint: String,
}

#[derive(Debug, Serialize)]
struct AddressRow {
    address: String,
    path: String,
    /// The child's x-only internal key (hex).
    internal_key: String,
}

async fn group_xpub(cluster: &std::path::Path, key: &str, network: Network) -> Result<bitcoin::bip32::Xpub, Error> {
    let cluster = Cluster::load(cluster)?;
    let key = KeyId::from_str(key).map_err(|e| Error::new(ErrorCode::ConfigInvalid, e))?;
    let nodes = dkg_relay::connect_all(&cluster).await;
    let material = KeyMaterial::fetch(&nodes, &key, cluster.threshold, Settings::default()).await?;
    derivation::xpub(&material.group_key()?, bitcoin::Network::from(network))
}

pub async fn xpub(a: XpubArgs) -> Result<(), Error> {
    let xpub = group_xpub(&a.cluster, &a.key, a.network).await?;
    let row = XpubRow {
        xpub: xpub.to_string(),
        descriptor: derivation::descriptor(&xpub),
        fingerprint: xpub.fingerprint().to_string(),
    };
    if a.json {
        out(&format!("{}\n", serde_json::json!(row)));
    } else {
        out(&format!("xpub:        {}\ndescriptor:  {}\nfingerprint: {}\n", row.xpub, row.descriptor, row.fingerprint));
    }
    Ok(())
}

pub async fn address(a: AddressArgs) -> Result<(), Error> {
    let xpub = group_xpub(&a.cluster, &a.key, a.network).await?;
    let child = derivation::child(&xpub, a.change, a.index)?;
    let row = AddressRow {
        address: derivation::address(&xpub, a.change, a.index, bitcoin::Network::from(a.network))?.to_string(),
        path: format!("{}/{}", u8::from(a.change), a.index),
        internal_key: hex::encode(child.public_key.x_only_public_key().0.serialize()),
    };
    if a.json {
        out(&format!("{}\n", serde_json::json!(row)));
    } else {
        out(&format!("{}\n", row.address));
    }
    Ok(())
}

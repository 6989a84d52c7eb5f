//! `frostgate serve` (the signing service) and `frostgate request` (its client).

use super::out;
use clap::{Args, Subcommand};
use frostgate_common::error::{Error, ErrorCode};
use frostgate_host::api::tls::TlsFiles;
use frostgate_host::service::client::ServiceClient;
use frostgate_host::service::config::ServiceConfig;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The service configuration (TOML: `[tls]`, `[[clients]]`, `[limits]`, and defaults for
    /// the flags below, which override it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The cluster file.
    #[arg(long)]
    cluster: Option<PathBuf>,
    /// The request log: `sqlite:PATH`.
    #[arg(long)]
    store: Option<String>,
    /// The JSON API's address (port 0 picks one; the `READY` line names it).
    #[arg(long)]
    http_listen: Option<SocketAddr>,
    /// The gRPC API's address (`service.proto`; the `READY` line names it).
    #[arg(long)]
    grpc_listen: Option<SocketAddr>,
    /// Prometheus metrics at /metrics (loopback only).
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// DEVELOPMENT ONLY: plaintext HTTP on loopback; every caller is the one development client,
    /// allowed every key.
    #[arg(long)]
    dev_plaintext: bool,
}

pub async fn serve(a: ServeArgs) -> Result<(), Error> {
    let config = match &a.config {
        Some(path) => ServiceConfig::load(path)?,
        None => ServiceConfig::default(),
    };
    let missing =
        |what: &str| Error::new(ErrorCode::ConfigInvalid, format!("{what}: give the flag or set it in --config"));
    let options = frostgate_host::service::ServeOptions {
        cluster: a.cluster.clone().or_else(|| config.cluster.clone()).ok_or_else(|| missing("--cluster"))?,
        store: a.store.clone().or_else(|| config.store.url.clone()).ok_or_else(|| missing("--store"))?,
        http_listen: a
            .http_listen
            .or(config.http.as_ref().map(|h| h.listen))
            .ok_or_else(|| missing("--http-listen"))?,
        grpc_listen: a.grpc_listen.or(config.grpc.as_ref().map(|g| g.listen)),
        metrics_listen: a.metrics_listen.or(config.metrics.as_ref().map(|m| m.listen)).map(|a| a.to_string()),
        dev_plaintext: a.dev_plaintext,
        config,
    };
    frostgate_host::service::serve(options).await
}

/// How to reach the service.
#[derive(Debug, Args)]
pub struct ServiceArgs {
    /// The service: `http://HOST:PORT` (development) or `https://HOST:PORT`.
    #[arg(long)]
    service: String,
    /// This client's certificate (PEM), for https.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// Its key (PEM).
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// The service's certificate (PEM), pinned.
    #[arg(long)]
    server_cert: Option<PathBuf>,
    /// Print the JSON answer.
    #[arg(long)]
    json: bool,
}

impl ServiceArgs {
    fn client(&self) -> Result<ServiceClient, Error> {
        let tls = match (&self.cert, &self.key_file, &self.server_cert) {
            (Some(cert), Some(key), Some(server)) => {
                Some(TlsFiles { cert: cert.clone(), key: key.clone(), peers: vec![server.clone()] })
            }
            (None, None, None) => None,
            _ => return Err(Error::new(ErrorCode::ConfigInvalid, "--cert, --key-file and --server-cert go together")),
        };
        ServiceClient::new(&self.service, tls.as_ref())
    }
}

#[derive(Debug, Subcommand)]
pub enum RequestCommand {
    /// Submit a sign request (idempotent by its id).
    Submit {
        #[command(flatten)]
        service: ServiceArgs,
        /// Your id for the request (1-64 of [A-Za-z0-9._-]).
        #[arg(long)]
        request_id: String,
        /// The key id (hex).
        #[arg(long)]
        key: String,
        /// A 32-byte digest (hex) to sign...
        #[arg(long, conflicts_with = "psbt")]
        digest: Option<String>,
        /// ...under this script tree's merkle root (hex)...
        #[arg(long, requires = "digest")]
        merkle_root: Option<String>,
        /// ...or untweaked (plain BIP340 under the key)...
        #[arg(long, requires = "digest")]
        untweaked: bool,
        /// ...for this child of the key (`0/5`).
        #[arg(long, requires = "digest")]
        path: Option<String>,
        /// Or a PSBT file (base64): every input of the key.
        #[arg(long)]
        psbt: Option<PathBuf>,
        /// Wait this many seconds (at most 60) for a final state.
        #[arg(long, default_value_t = 0)]
        wait: u64,
    },
    /// Show a request (optionally waiting for its final state).
    Get {
        #[command(flatten)]
        service: ServiceArgs,
        /// The request id.
        #[arg(long)]
        request_id: String,
        /// Wait this many seconds (at most 60) for a final state.
        #[arg(long, default_value_t = 0)]
        wait: u64,
    },
    /// List your requests.
    List {
        #[command(flatten)]
        service: ServiceArgs,
        /// Only this state.
        #[arg(long)]
        state: Option<String>,
        /// Only this key.
        #[arg(long)]
        key: Option<String>,
        /// The previous page's `next_page_token`.
        #[arg(long)]
        page_token: Option<String>,
        /// At most this many.
        #[arg(long)]
        page_size: Option<usize>,
    },
    /// Cancel a request (only before any signing request reached a node).
    Cancel {
        #[command(flatten)]
        service: ServiceArgs,
        /// The request id.
        #[arg(long)]
        request_id: String,
    },
}

fn show(service: &ServiceArgs, v: &serde_json::Value) {
    if service.json {
        out(&format!("{v}\n"));
        return;
    }
    let mut t =
        format!("request {}: {}\n", v["request_id"].as_str().unwrap_or("?"), v["state"].as_str().unwrap_or("?"));
    for field in ["signature", "output_key", "txid", "tx", "psbt"] {
        if let Some(s) = v[field].as_str() {
            t.push_str(&format!("{field}: {s}\n"));
        }
    }
    if let Some(e) = v.get("error").filter(|e| !e.is_null()) {
        t.push_str(&format!("error: {} ({}): {}\n", e["code"], e["recovery"], e["message"]));
    }
    out(&t);
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| {
            v.as_ref().map(|v| {
                format!(
                    "{k}={}",
                    v.replace(|c: char| !c.is_ascii_alphanumeric() && c != '_' && c != '-' && c != '.', "")
                )
            })
        })
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

pub async fn run(c: RequestCommand) -> Result<(), Error> {
    match c {
        RequestCommand::Submit { service, request_id, key, digest, merkle_root, untweaked, path, psbt, wait } => {
            let mut body = serde_json::json!({ "request_id": request_id, "key": key });
            match (digest, psbt) {
                (Some(d), None) => {
                    body["digest"] = d.into();
                    if let Some(r) = merkle_root {
                        body["merkle_root"] = r.into();
                    }
                    if untweaked {
                        body["untweaked"] = true.into();
                    }
                    if let Some(p) = path {
                        body["path"] = p.into();
                    }
                }
                (None, Some(file)) => {
                    let text = std::fs::read_to_string(&file)
                        .map_err(|e| Error::new(ErrorCode::ConfigInvalid, format!("{}: {e}", file.display())))?;
                    body["psbt"] = text.trim().into();
                }
                _ => return Err(Error::new(ErrorCode::RequestInvalid, "exactly one of --digest and --psbt")),
            }
            let client = service.client()?;
            let path = format!("/v1/sign-requests?wait_seconds={}", wait.min(60));
            let v = client.json("POST", &path, Some(&body)).await?;
            show(&service, &v);
        }
        RequestCommand::Get { service, request_id, wait } => {
            frostgate_host::service::request::check_request_id(&request_id)?;
            let path = format!("/v1/sign-requests/{request_id}?wait_seconds={}", wait.min(60));
            let v = service.client()?.json("GET", &path, None).await?;
            show(&service, &v);
        }
        RequestCommand::List { service, state, key, page_token, page_size } => {
            let q = query(&[
                ("state", state),
                ("key", key),
                ("page_token", page_token),
                ("page_size", page_size.map(|n| n.to_string())),
            ]);
            let v = service.client()?.json("GET", &format!("/v1/sign-requests{q}"), None).await?;
            if service.json {
                out(&format!("{v}\n"));
            } else {
                let mut t = String::new();
                for r in v["requests"].as_array().into_iter().flatten() {
                    t.push_str(&format!(
                        "{}  {}  {}\n",
                        r["request_id"].as_str().unwrap_or("?"),
                        r["state"].as_str().unwrap_or("?"),
                        r["kind"].as_str().unwrap_or("?")
                    ));
                }
                if let Some(next) = v["next_page_token"].as_str() {
                    t.push_str(&format!("next page: --page-token {next}\n"));
                }
                out(&t);
            }
        }
        RequestCommand::Cancel { service, request_id } => {
            frostgate_host::service::request::check_request_id(&request_id)?;
            let v = service.client()?.json("POST", &format!("/v1/sign-requests/{request_id}:cancel"), None).await?;
            show(&service, &v);
        }
    }
    Ok(())
}

//! `service.toml`: the signing service's configuration (flags of `frostgate serve` override it).
//!
//! Invariants: unknown keys are refused; without `--dev-plaintext` the API is mutual TLS and
//! every client is a pinned certificate with the keys and request kinds it may use; plaintext
//! listens on loopback only.

use super::request::Kind;
use crate::api::connection::CallerId;
use frostgate_common::error::{Error, ErrorCode};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

fn config_err(m: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::ConfigInvalid, format!("service config: {m}"))
}

/// The file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// The cluster file.
    pub cluster: Option<PathBuf>,
    /// The request log.
    #[serde(default)]
    pub store: StoreConfig,
    /// The JSON-over-HTTPS listener.
    pub http: Option<Listen>,
    /// The gRPC listener.
    pub grpc: Option<Listen>,
    /// The metrics listener (loopback only).
    pub metrics: Option<Listen>,
    /// The service's TLS identity (its certificate and key, PEM).
    pub tls: Option<ServerTls>,
    /// The clients.
    #[serde(default)]
    pub clients: Vec<ClientConfig>,
    /// Bounds.
    #[serde(default)]
    pub limits: ServiceLimits,
}

/// `[store]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite:PATH` (the default: `requests.db` beside the config), or `postgres://...`.
    pub url: Option<String>,
    /// PostgreSQL over TLS: the certificate authority (PEM) that signed the server's certificate.
    /// With it the connection requires TLS and verifies the server's certificate and name
    /// against it alone; without it, plaintext (loopback or a private network only).
    pub ca: Option<PathBuf>,
}

/// A listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// Its address.
    pub listen: SocketAddr,
}

/// `[tls]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTls {
    /// The service's certificate (PEM).
    pub cert: PathBuf,
    /// Its key (PEM, PKCS#8).
    pub key: PathBuf,
}

/// `[[clients]]`: one application.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Its name (logs, audit).
    pub name: String,
    /// Its certificate (PEM): pinned, the whole trust decision.
    pub certificate: PathBuf,
    /// The keys (hex) it may use; `"*"` for every key.
    pub keys: Vec<String>,
    /// The request kinds it may submit (`digest`, `psbt`); default both.
    #[serde(default)]
    pub kinds: Option<Vec<String>>,
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceLimits {
    /// Requests one client may have pending or running.
    pub max_open_per_client: usize,
    /// Calls one client may have served at once, over all its connections and streams (each
    /// until answered, a long poll while it waits, a watch while it lasts).
    pub max_calls_per_client: usize,
    /// The largest request body, bytes.
    pub max_body_bytes: usize,
    /// Signings at once.
    pub workers: usize,
    /// A claim's lease, seconds (a dead instance's requests are taken over after it).
    pub lease_secs: u64,
    /// The per-signer deadline, milliseconds.
    pub signer_timeout_ms: u64,
}

impl ServiceLimits {
    /// Refuses bounds that cannot serve (zero) or would overflow a lease's deadline.
    pub fn check(&self) -> Result<(), Error> {
        let bad = |m: &str| Err(config_err(format!("[limits] {m}")));
        if [self.max_open_per_client, self.max_calls_per_client, self.workers, self.max_body_bytes].contains(&0) {
            return bad("max_open_per_client, max_calls_per_client, workers and max_body_bytes must be at least 1");
        }
        if !(1..=86_400).contains(&self.lease_secs) {
            return bad("lease_secs must be 1-86400");
        }
        if !(1..=600_000).contains(&self.signer_timeout_ms) {
            return bad("signer_timeout_ms must be 1-600000");
        }
        Ok(())
    }
}

impl Default for ServiceLimits {
    fn default() -> Self {
        ServiceLimits {
            max_open_per_client: 256,
            max_calls_per_client: 256,
            max_body_bytes: 256 * 1024,
            workers: 32,
            lease_secs: 30,
            signer_timeout_ms: 10_000,
        }
    }
}

/// A client as requests see it: who, and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// The identity the log stores (`cert:` and the certificate's fingerprint, or `dev`).
    pub id: String,
    /// Its configured name.
    pub name: String,
    /// Its keys (lower-case hex); `None`: every key.
    pub keys: Option<Vec<String>>,
    /// Its kinds.
    pub kinds: Vec<Kind>,
}

impl Client {
    /// The one client of `--dev-plaintext`: every key, every kind.
    pub fn development() -> Client {
        Client { id: "dev".into(), name: "development".into(), keys: None, kinds: vec![Kind::Digest, Kind::Psbt] }
    }

    /// Whether it may submit `kind` for `key`; `client_not_authorized` names what it may not.
    pub fn authorize(&self, key: &str, kind: Kind) -> Result<(), Error> {
        let key = key.to_ascii_lowercase();
        if !self.kinds.contains(&kind) {
            return Err(Error::new(
                ErrorCode::ClientNotAuthorized,
                format!("client {} may not submit {} requests", self.name, kind.name()),
            ));
        }
        if self.keys.as_ref().is_some_and(|keys| !keys.contains(&key)) {
            return Err(Error::new(
                ErrorCode::ClientNotAuthorized,
                format!("client {} may not use key {key}", self.name),
            ));
        }
        Ok(())
    }
}

impl ServiceConfig {
    /// Reads and checks a file.
    pub fn load(path: &Path) -> Result<ServiceConfig, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| config_err(format!("{}: {e}", path.display())))?;
        let c: ServiceConfig =
            toml::from_str(&text).map_err(|e| config_err(format!("{}: {}", path.display(), e.message())))?;
        c.clients()?;
        c.limits.check()?;
        Ok(c)
    }

    /// The clients, by the identity their certificate gives a connection.
    pub fn clients(&self) -> Result<Vec<(CallerId, Client)>, Error> {
        let mut out: Vec<(CallerId, Client)> = Vec::new();
        for c in &self.clients {
            let der = rustls::pki_types::CertificateDer::from_pem_file(&c.certificate)
                .map_err(|e| config_err(format!("client {}: {}: {e}", c.name, c.certificate.display())))?;
            let caller = crate::api::connection::certificate_caller(&der);
            if out.iter().any(|(id, _)| *id == caller) {
                return Err(config_err(format!("client {}: its certificate is pinned twice", c.name)));
            }
            let keys = match c.keys.as_slice() {
                [all] if all == "*" => None,
                keys => {
                    for k in keys {
                        if k.len() != 64 || hex::decode(k).is_err() {
                            return Err(config_err(format!("client {}: key {k:?} is not a key id (64 hex)", c.name)));
                        }
                    }
                    Some(keys.iter().map(|k| k.to_ascii_lowercase()).collect())
                }
            };
            let kinds = match &c.kinds {
                None => vec![Kind::Digest, Kind::Psbt],
                Some(names) => names
                    .iter()
                    .map(|n| Kind::from_name(n).ok_or_else(|| config_err(format!("client {}: kind {n:?}", c.name))))
                    .collect::<Result<_, _>>()?,
            };
            let client = Client { id: caller.0.clone(), name: c.name.clone(), keys, kinds };
            out.push((caller, client));
        }
        Ok(out)
    }
}

use rustls::pki_types::pem::PemObject;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_refused_another_key_or_kind_by_name() {
        let c = Client {
            id: "cert:00".into(),
            name: "wallet".into(),
            keys: Some(vec!["ab".repeat(32)]),
            kinds: vec![Kind::Digest],
        };
        c.authorize(&"AB".repeat(32), Kind::Digest).expect("its key, any case");
        let e = c.authorize(&"cd".repeat(32), Kind::Digest).expect_err("another key");
        assert_eq!(e.code(), ErrorCode::ClientNotAuthorized);
        assert!(e.message().contains("wallet"), "{e}");
        assert_eq!(c.authorize(&"ab".repeat(32), Kind::Psbt).expect_err("psbt").code(), ErrorCode::ClientNotAuthorized);
        Client::development().authorize(&"cd".repeat(32), Kind::Psbt).expect("development: everything");
    }

    #[test]
    fn limits_that_cannot_serve_are_refused() {
        ServiceLimits::default().check().expect("defaults");
        for bad in [
            ServiceLimits { workers: 0, ..ServiceLimits::default() },
            ServiceLimits { max_open_per_client: 0, ..ServiceLimits::default() },
            ServiceLimits { lease_secs: u64::MAX, ..ServiceLimits::default() },
            ServiceLimits { signer_timeout_ms: 0, ..ServiceLimits::default() },
        ] {
            assert_eq!(bad.check().expect_err("refused").code(), ErrorCode::ConfigInvalid, "{bad:?}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<ServiceConfig>("[store]\nurl = \"sqlite:x\"\nnope = 1\n").is_err());
        assert!(toml::from_str::<ServiceConfig>("[limits]\nworkers = 4\n").is_ok());
    }
}

//! The host's side of the channel: connect to a running enclave, or start one as a child.
//!
//! Invariant: a child enclave started here ([`EnclaveClient::spawn`]) is stopped when its
//! [`EnclaveClient`] is dropped (see [`crate::supervisor`]).

use crate::node::store::HostStore;
use frostgate_common::bounded::Label;
use frostgate_common::channel::{Channel, Handler};
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::protocol::StoreRecords;
use frostgate_common::protocol::{
    serve_host, Health, HealthReply, Hello, HelloReply, HostApi, Message, PersistAck, PersistRecords, Ping, Pong, Side,
    StoreLoad, StoreStatus, PROTOCOL_VERSION,
};
use frostgate_common::transport::{self, Address};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Default deadline for one request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Answers the enclave's requests to the host: pings, and commits to the host's store.
pub fn host_handler(store: Option<Arc<HostStore>>) -> Handler {
    let served = Arc::new(Served { store });
    Arc::new(move |m: Message| {
        let served = served.clone();
        Box::pin(async move { serve_host(&*served, m).await })
    })
}

/// What the host serves to its enclave.
struct Served {
    store: Option<Arc<HostStore>>,
}

impl HostApi for Served {
    async fn ping(&self, p: Ping) -> Result<Pong, Error> {
        Ok(Pong { echo: p.echo })
    }

    /// Commits the enclave's records, then acknowledges. A failed transaction is reported as
    /// `store_commit_failed` (known not written).
    async fn persist_records(&self, p: PersistRecords) -> Result<PersistAck, Error> {
        let Some(store) = self.store.clone() else {
            return Err(Error::new(ErrorCode::UnexpectedMessage, "PersistRecords is not served by this host"));
        };
        if fault("host_before_commit") {
            tracing::warn!("DEVELOPMENT fault injection: refusing the commit");
            return Err(Error::new(ErrorCode::StoreCommitFailed, "DEVELOPMENT fault injection: commit refused"));
        }
        let records = p.records.as_inner().len();
        let started = std::time::Instant::now();
        let result = tokio::task::spawn_blocking(move || store.append(p.records.as_inner(), p.compact_before)).await;
        crate::node::metrics::global().observe_commit(started.elapsed(), records);
        match result {
            Ok(Ok(head_version)) => {
                if fault("host_after_commit_before_ack") {
                    tracing::error!("DEVELOPMENT fault injection: aborting after commit, before ack");
                    std::process::abort();
                }
                Ok(PersistAck { head_version })
            }
            Ok(Err(e)) => Err(e),
            Err(e) => Err(Error::new(ErrorCode::StoreCommitFailed, format!("commit task failed: {e}"))),
        }
    }
}

/// Whether the development fault `point` is armed (never, without the feature).
pub(crate) fn fault(point: &str) -> bool {
    frostgate_common::faults::armed(cfg!(feature = "dev-fault-injection"), point)
}

/// Most records per `StoreLoad` chunk.
const LOAD_CHUNK: usize = 256;

/// A connected enclave.
#[derive(Debug)]
pub struct EnclaveClient {
    channel: Channel,
    address: Address,
    hello: HelloReply,
    child: Option<crate::supervisor::ChildProcess>,
    /// Becomes `true` when the connection has ended.
    closed: tokio::sync::watch::Receiver<bool>,
}

impl EnclaveClient {
    /// Connects to a running enclave and says hello.
    pub async fn connect(address: Address) -> Result<Self, Error> {
        Self::connect_with_store(address, None).await
    }

    /// Connects, says hello, and serves the enclave's commits from `store`. Call
    /// [`Self::load_store`] to stream the store to the enclave.
    pub async fn connect_with_store(address: Address, store: Option<Arc<HostStore>>) -> Result<Self, Error> {
        let (r, w) = transport::connect(&address).await?;
        let (channel, done) = Channel::start(Side::Host, r, w, host_handler(store));
        let (ended, closed) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let _ = done.await;
            let _ = ended.send(true);
        });
        let client = Label::new(format!("frostgate {}", env!("CARGO_PKG_VERSION")))
            .map_err(|e| Error::new(ErrorCode::Internal, e))?;
        let hello =
            channel.request(Hello { protocol_version: PROTOCOL_VERSION, client }, Some(REQUEST_TIMEOUT)).await?;
        Ok(EnclaveClient { channel, address, hello, child: None, closed })
    }

    /// Resolves once the connection has ended (the enclave died, restarted or hung up).
    pub async fn closed(&self) {
        let mut rx = self.closed.clone();
        while !*rx.borrow_and_update() {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Starts `enclave_bin` listening on a socket in `socket_dir`, waits for its readiness line,
    /// then connects.
    pub async fn spawn(enclave_bin: &Path, socket_dir: &Path, extra_args: &[String]) -> Result<Self, Error> {
        let socket = socket_dir.join("enclave.sock");
        let spec = crate::supervisor::ChildSpec {
            name: "enclave",
            bin: enclave_bin.to_path_buf(),
            args: crate::supervisor::enclave_args(&socket, extra_args),
        };
        let child = spec.start()?;
        let mut client = Self::connect(Address::Unix(socket)).await?;
        client.child = Some(child);
        Ok(client)
    }

    /// The enclave's hello.
    pub fn hello(&self) -> &HelloReply {
        &self.hello
    }

    /// Where the enclave listens.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The raw channel (for callers that build their own requests).
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Streams every record of `store` to the enclave, which verifies the chain against its
    /// HSM anchor; with `verify_only` the enclave adopts nothing.
    pub async fn load_store(&self, store: &HostStore, verify_only: bool) -> Result<StoreStatus, Error> {
        // From the read to the verdict on the last chunk, no commit lands (a commit in flight
        // meanwhile makes the enclave answer "load again").
        let _commits_held = store.hold_commits().await;
        let records = store.records()?;
        let chunks: Vec<&[frostgate_common::protocol::StoreRecord]> =
            if records.is_empty() { vec![&[]] } else { records.chunks(LOAD_CHUNK).collect() };
        let n = chunks.len();
        let mut status = None;
        for (i, chunk) in chunks.into_iter().enumerate() {
            let load = StoreLoad {
                first: i == 0,
                last: i + 1 == n,
                verify_only,
                records: StoreRecords::new(chunk.to_vec()).map_err(|e| Error::new(ErrorCode::Internal, e))?,
            };
            status = Some(self.channel.request(load, Some(REQUEST_TIMEOUT)).await?);
        }
        status.ok_or_else(|| Error::new(ErrorCode::Internal, "no store status"))
    }

    /// Asks for the enclave's health.
    pub async fn health(&self) -> Result<HealthReply, Error> {
        self.channel.request(Health, Some(REQUEST_TIMEOUT)).await
    }

    /// Round trip of a ping.
    pub async fn ping(&self, echo: u64) -> Result<u64, Error> {
        Ok(self.channel.request(Ping { echo }, Some(REQUEST_TIMEOUT)).await?.echo)
    }
}

/// The `frostgate-enclave` binary next to the running executable, if there is one.
pub fn default_enclave_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("frostgate-enclave")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("frostgate-enclave"))
}

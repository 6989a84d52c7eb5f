//! Answers the host's requests. One `Service` per enclave process, shared by all connections.
//! Every request is answered with its reply or a typed error; nothing here panics on input.

use crate::custody::Custody;
use crate::markers::{MarkerStore, MemoryStore};
use crate::rounds::{Engine, Limits};
use crate::store::SealedStore;
use frostgate_common::bounded::{Label, PublicKeyPackageBytes, Signers};
use frostgate_common::channel::Channel;
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::protocol::*;
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Instant;

/// Where markers are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreMode {
    /// The host's sealed store (production): signing waits until the host streamed it.
    Host,
    /// Markers in enclave memory only, lost at restart: for in-process tests and tools, never
    /// selectable from the `frostgate-enclave` command line.
    Memory,
}

/// Per-connection context: the connection's own channel (a store load makes it the store's
/// channel).
#[derive(Debug, Default)]
pub struct Connection {
    /// Set once the channel is started.
    pub channel: OnceLock<Channel>,
}

/// The enclave's request handler.
#[derive(Debug)]
pub struct Service {
    started: Instant,
    build: BuildInfo,
    engine: Option<Engine>,
    store: Option<SealedStore>,
    dkgs: crate::dkg::Dkgs,
}

fn label(s: &str) -> Label {
    // Build strings are compile-time constants far below the label bound.
    Label::new(s.chars().take(Label::MAX_LEN).collect::<String>())
        .unwrap_or_else(|_| unreachable!("truncated to bound"))
}

impl Service {
    /// A new service. Without custody it answers but refuses to sign; without a pinned group it
    /// refuses every DKG.
    pub fn new(
        custody: Option<Custody>,
        group: Option<std::collections::BTreeMap<frostgate_common::ids::ParticipantId, Vec<u8>>>,
        mode: StoreMode,
        limits: Limits,
        compact_after: u64,
    ) -> Result<Self, Error> {
        let mut service = Self::from_engine(None);
        service.dkgs = crate::dkg::Dkgs::new(group, limits.dkg_ttl);
        if let Some(custody) = custody {
            let custody = Arc::new(custody);
            let markers: Arc<dyn MarkerStore> = match mode {
                StoreMode::Host => {
                    let store = SealedStore::open(custody.clone(), compact_after)?;
                    service.store = Some(store.clone());
                    Arc::new(store)
                }
                StoreMode::Memory => Arc::new(MemoryStore::new()),
            };
            service.engine = Some(Engine::new(custody, markers, limits));
        }
        Ok(service)
    }

    /// A service over an already built engine (tests build engines with their own limits and
    /// marker stores).
    pub fn from_engine(engine: Option<Engine>) -> Self {
        let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
        Service {
            started: Instant::now(),
            build: BuildInfo {
                name: label(env!("CARGO_PKG_NAME")),
                version: label(env!("CARGO_PKG_VERSION")),
                profile: label(profile),
                dev_features: label(crate::DEV_FEATURES),
            },
            engine,
            store: None,
            dkgs: crate::dkg::Dkgs::default(),
        }
    }

    /// Periodic maintenance: the expiry sweep, then compaction when due.
    pub async fn maintain(&self) {
        let dropped = self.dkgs.expire(Instant::now());
        if dropped > 0 {
            tracing::info!(dropped, "unfinished DKGs expired");
        }
        let Some(engine) = &self.engine else { return };
        let wiped = engine.sweep_and_record(Instant::now()).await;
        if wiped > 0 {
            tracing::info!(wiped, "expired nonces wiped");
        }
        if let Some(store) = self.store.as_ref().filter(|s| s.needs_compaction()) {
            match engine.snapshot() {
                Ok(state) => match store.compact(state).await {
                    Ok(()) => tracing::info!(head = store.stats().head_version, "store compacted"),
                    Err(e) => tracing::warn!(error = ?e, "compaction failed"),
                },
                Err(e) => tracing::warn!(code = %e.code(), "snapshot failed: {}", e.message()),
            }
        }
    }

    /// The sealed store, when markers go to the host.
    pub fn store(&self) -> Option<&SealedStore> {
        self.store.as_ref()
    }

    /// Whether the enclave can sign, or the code that says why not.
    pub fn state(&self) -> ServiceState {
        match &self.engine {
            Some(engine) => match engine.ready() {
                Ok(()) => ServiceState::Ready,
                Err(e) => ServiceState::Refusing(e.code()),
            },
            None => ServiceState::Refusing(ErrorCode::CustodyNotConfigured),
        }
    }

    /// Answers one request on a connection (store loads adopt that connection).
    pub async fn handle_on(&self, request: Message, connection: &Connection) -> Message {
        match request {
            Message::StoreLoad(load) => self.store_load(load, connection).unwrap_or_else(|e| {
                tracing::warn!(code = %e.code(), "store load refused: {}", e.message());
                Message::Error(e)
            }),
            other => self.handle(other).await,
        }
    }

    fn store_load(&self, load: StoreLoad, connection: &Connection) -> Result<Message, Error> {
        let (Some(engine), Some(store)) = (&self.engine, &self.store) else {
            return Err(Error::new(ErrorCode::UnexpectedMessage, "this enclave does not use a host store"));
        };
        let progress = store.load_chunk(&load)?;
        let records = progress.records;
        let mut head_version = 0;
        if let Some(crate::store::Loaded { head, records: replay }) = progress.done {
            head_version = head.version;
            if !load.verify_only {
                let channel = connection
                    .channel
                    .get()
                    .cloned()
                    .ok_or_else(|| Error::new(ErrorCode::Internal, "connection without a channel"))?;
                engine.replay(&replay)?;
                store.adopt(channel, head);
                tracing::info!(records, head = head.version, "host store loaded and verified");
            }
        }
        Ok(Message::StoreStatus(StoreStatus {
            state: self.state(),
            records,
            head_version,
            anchor_version: store.anchor_version(),
        }))
    }

    /// The signing engine, if custody is configured.
    pub fn engine(&self) -> Option<&Engine> {
        self.engine.as_ref()
    }

    /// Closes the HSM sessions.
    pub fn shutdown(self) {
        if let Some(engine) = self.engine {
            drop(engine);
        }
    }

    /// Answers one request. Never panics on any input.
    pub async fn handle(&self, request: Message) -> Message {
        match request {
            Message::Hello(hello) => {
                if hello.protocol_version != PROTOCOL_VERSION {
                    return Message::error(
                        ErrorCode::UnsupportedProtocolVersion,
                        format!("host speaks {}, enclave speaks {PROTOCOL_VERSION}", hello.protocol_version),
                    );
                }
                tracing::info!(client = %hello.client.as_inner(), "hello");
                Message::HelloReply(HelloReply { protocol_version: PROTOCOL_VERSION, build: self.build.clone() })
            }
            Message::Health => Message::HealthReply(HealthReply {
                state: self.state(),
                uptime_seconds: self.started.elapsed().as_secs(),
                store_commits: self.store.as_ref().map(|s| s.stats().commits).unwrap_or(0),
                store_records: self.store.as_ref().map(|s| s.stats().records).unwrap_or(0),
                hsm_operations: crate::custody::token::hsm_counters().0,
                hsm_micros: crate::custody::token::hsm_counters().1,
                dev_features: label(crate::DEV_FEATURES),
                host_reconnects: 0,
                enclave_restarts: 0,
            }),
            Message::Ping(p) => Message::Pong(p),
            // Refused by the build itself, whatever the enclave's state.
            #[cfg(not(feature = "dev-dealer"))]
            Message::DevDealerKeygen(_) => {
                Message::error(ErrorCode::DevFeatureDisabled, "this enclave was built without the dev-dealer feature")
            }
            other => {
                let kind = other.info().name;
                let result = match &self.engine {
                    Some(engine) => match engine.ready() {
                        Ok(()) => signing(engine, &self.dkgs, other).await,
                        Err(e) => Err(e),
                    },
                    None => {
                        Err(Error::new(ErrorCode::CustodyNotConfigured, "this enclave has no HSM custody configured"))
                    }
                };
                result.unwrap_or_else(|e| {
                    tracing::info!(kind, code = %e.code(), "request refused: {}", e.message());
                    Message::Error(e)
                })
            }
        }
    }
}

async fn signing(engine: &Engine, dkgs: &crate::dkg::Dkgs, request: Message) -> Result<Message, Error> {
    use crate::dkg::DkgError;
    let dkg_reply = |dkg: frostgate_common::ids::DkgId, r: Result<Message, DkgError>| match r {
        Ok(m) => Ok(m),
        Err(DkgError::Error(e)) => Err(e),
        Err(DkgError::Blame(code, culprit)) => {
            tracing::warn!(%dkg, code = %code, %culprit, "DKG aborted");
            Ok(Message::DkgBlame(DkgBlame { dkg, code, culprit }))
        }
    };
    Ok(match request {
        Message::GetIdentity => Message::Identity(
            frostgate_common::bounded::IdentityKeyBytes::new(engine.custody().identity_public_key().to_vec())
                .map_err(|e| Error::new(ErrorCode::Internal, e))?,
        ),
        Message::DkgStart(r) => dkg_reply(r.dkg, dkgs.start(engine, &r).map(Message::DkgRound1))?,
        Message::DkgRound2(r) => {
            dkg_reply(r.dkg, dkgs.round2(engine, r.dkg, r.round1.as_inner()).map(Message::DkgRound2Reply))?
        }
        Message::DkgFinish(r) => {
            dkg_reply(r.dkg, dkgs.finish(engine, r.dkg, r.envelopes.as_inner()).map(Message::DkgConfirm))?
        }
        Message::DkgActivate(r) => {
            let activated = match dkgs.activate(engine, r.dkg, r.confirmations.as_inner()).await {
                Ok(record) => {
                    tracing::info!(dkg = %r.dkg, key = %record.key_id, "DKG key activated");
                    key_info(engine, &record).map(Message::KeyInfo).map_err(DkgError::Error)
                }
                Err(e) => Err(e),
            };
            dkg_reply(r.dkg, activated)?
        }
        Message::DkgAbort(r) => {
            if !dkgs.abort(r.dkg) {
                return Err(Error::new(ErrorCode::DkgUnknown, format!("DKG {}", r.dkg)));
            }
            Message::DkgAborted(r)
        }
        Message::OpenSession(r) => {
            let output_key = engine.open_session(r.session, r.key, r.message, r.mode).await?;
            Message::SessionOpened(SessionOpened { session: r.session, output_key })
        }
        Message::OpenAttempt(r) => {
            engine.open_attempt(r.session, r.attempt, r.signers.as_inner()).await?;
            Message::AttemptOpened(AttemptRef { attempt: r.attempt })
        }
        Message::Round1(r) => {
            let commitments = engine.round1(r.attempt, r.seat)?;
            Message::Round1Reply(Round1Reply { attempt: r.attempt, seat: r.seat, commitments })
        }
        Message::Round2(r) => {
            let signature_share = engine.round2(r.attempt, r.seat, r.mode, r.signing_package.as_inner()).await?;
            Message::Round2Reply(Round2Reply { attempt: r.attempt, seat: r.seat, signature_share })
        }
        Message::VerifyShare(r) => {
            Message::ShareVerdict(engine.verify_share(r.attempt, r.signing_package.as_inner(), &r.share)?)
        }
        Message::Aggregate(r) => Message::AggregateReply(
            engine.aggregate(r.attempt, r.mode, r.signing_package.as_inner(), r.shares.as_inner()).await?,
        ),
        Message::CloseSession(r) => {
            engine.close_session(r.session);
            Message::SessionClosed(r)
        }
        Message::AbortAttempt(r) => {
            Message::AttemptAborted(AttemptAborted { attempt: r.attempt, wiped_count: engine.abort(r.attempt)? })
        }
        Message::GetKey(r) => Message::KeyInfo(key_info(engine, &*engine.key(&r.key)?)?),
        // Without the feature, `handle` refuses this before the engine is reached.
        #[cfg(feature = "dev-dealer")]
        Message::DevDealerKeygen(r) => dev_dealer(engine, r).await?,
        other => {
            return Err(Error::new(
                ErrorCode::UnexpectedMessage,
                format!("{} is not served by the enclave", other.info().name),
            ));
        }
    })
}

#[cfg(feature = "dev-dealer")]
async fn dev_dealer(engine: &Engine, r: DevDealerKeygen) -> Result<Message, Error> {
    let record = crate::keys::dev_dealer(engine.custody(), r.threshold, r.participants)?;
    let info = key_info(engine, &record)?;
    tracing::warn!(key = %record.key_id, "DEVELOPMENT dealer key created: not for production funds");
    engine.add_key(record).await?;
    Ok(Message::KeyInfo(info))
}

fn key_info(_engine: &Engine, record: &crate::keys::KeyRecord) -> Result<KeyInfo, Error> {
    let internal = |e| Error::new(ErrorCode::Internal, e);
    let bytes =
        record.public.serialize().map_err(|e| crate::keys::frost_err(ErrorCode::Internal, "public key package", e))?;
    Ok(KeyInfo {
        key: record.key_id,
        threshold: record.threshold,
        participants: Signers::new(record.participants.keys().copied().collect::<Vec<_>>()).map_err(internal)?,
        seats: Signers::new(record.seats.keys().copied().collect::<Vec<_>>()).map_err(internal)?,
        bip86_output_key: crate::keys::output_key(&record.public, &TaprootMode::Bip86)?,
        public_key_package: PublicKeyPackageBytes::new(bytes).map_err(internal)?,
    })
}

#[cfg(all(test, not(feature = "dev-dealer")))]
mod tests {
    use super::*;

    /// Only compiled without the `dev-dealer` feature: `scripts/test.sh` runs
    /// `cargo test -p frostgate-enclave --lib` for this.
    #[tokio::test]
    async fn a_build_without_the_dev_dealer_refuses_it_with_its_code() {
        let service = Service::from_engine(None);
        let reply = service.handle(Message::DevDealerKeygen(DevDealerKeygen { threshold: 2, participants: 3 })).await;
        match reply {
            Message::Error(e) => assert_eq!(e.code(), ErrorCode::DevFeatureDisabled),
            other => panic!("{other:?}"),
        }
    }
}

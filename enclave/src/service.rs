//! Answers the host's requests. One `Service` per enclave process, shared by all connections.
//! Every request is answered with its reply or a typed error; nothing here panics on input.

use crate::custody::Custody;
use crate::dkg::DkgError;
use crate::markers::{MarkerStore, MemoryStore};
use crate::rounds::{Engine, Limits};
use crate::store::ChainedStore;
use frostgate_common::bounded::{Label, PublicKeyPackageBytes, Signers};
use frostgate_common::channel::Channel;
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::ids::DkgId;
use frostgate_common::protocol::*;
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Instant;

/// Where markers are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreMode {
    /// The host store (production): signing waits until the host streamed it.
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
    store: Option<ChainedStore>,
    dkgs: crate::dkg::Dkgs,
    repairs: crate::repair::Repairs,
    recovery: Option<crate::backup::Recovery>,
    policy: Arc<crate::policy::Policy>,
    /// Challenges drawn for restores (peers' epoch statements bind them).
    challenges: crate::epoch_statements::Challenges,
    /// This boot's attestor (`[attestation]`), if any.
    attestor: Option<crate::attestation::Attestor>,
    /// Ceremonies' challenges and the peers verified in them (`[group]` attestation pins).
    ceremonies: crate::attestation::Ceremonies,
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
        service.repairs = crate::repair::Repairs::new(limits.dkg_ttl);
        if let Some(custody) = custody {
            let custody = Arc::new(custody);
            let markers: Arc<dyn MarkerStore> = match mode {
                StoreMode::Host => {
                    let store = ChainedStore::open(custody.clone(), compact_after)?;
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
            repairs: crate::repair::Repairs::default(),
            recovery: None,
            policy: Arc::new(crate::policy::Policy::unrestricted()),
            challenges: crate::epoch_statements::Challenges::default(),
            attestor: None,
            ceremonies: crate::attestation::Ceremonies::default(),
        }
    }

    /// The same service attesting itself with `attestor` (before it serves).
    pub fn with_attestor(mut self, attestor: Option<crate::attestation::Attestor>) -> Self {
        self.attestor = attestor;
        self
    }

    /// The same service checking the peers' attestations against `pins` (`[group]`; before it
    /// serves).
    pub fn with_ceremony_pins(
        mut self,
        pins: std::collections::BTreeMap<frostgate_common::ids::ParticipantId, frostgate_attest::peer::Pins>,
        ttl: std::time::Duration,
    ) -> Self {
        self.ceremonies = crate::attestation::Ceremonies::new(pins, ttl);
        self
    }

    /// The same service with the operator's recovery key (before it serves).
    pub fn with_recovery(mut self, recovery: Option<crate::backup::Recovery>) -> Self {
        self.recovery = recovery;
        self
    }

    /// The same service allowing (or not) refreshes that remove seats down to the threshold
    /// (`[group] allow_removal_to_threshold`; before it serves).
    pub fn allowing_removal_to_threshold(mut self, allow: bool) -> Self {
        self.dkgs = self.dkgs.allowing_removal_to_threshold(allow);
        self
    }

    /// The same service keeping its audit trail as `rules` say (before it serves).
    pub fn with_audit(mut self, rules: crate::audit::AuditRules) -> Self {
        self.engine = self.engine.map(|e| e.with_audit(rules));
        self
    }

    /// The same service under the operator's spending `policy` (before it serves).
    pub fn with_policy(mut self, policy: crate::policy::Policy) -> Self {
        self.engine = self.engine.map(|e| e.with_policy(policy.clone()));
        self.policy = Arc::new(policy);
        self
    }

    /// Ends ceremony `id` of `kind` here: its DKG or repair and its attestation challenge.
    fn end_ceremony(&self, kind: CeremonyKind, id: DkgId) {
        match kind {
            CeremonyKind::Dkg => drop(self.dkgs.abort(id)),
            CeremonyKind::Repair => drop(self.repairs.abort(id)),
        }
        self.ceremonies.end(id, kind);
    }

    /// Periodic maintenance: the expiry sweep, then compaction when due.
    pub async fn maintain(&self) {
        let dropped = self.dkgs.expire(Instant::now())
            + self.repairs.expire(Instant::now())
            + self.ceremonies.expire(Instant::now());
        if dropped > 0 {
            tracing::info!(dropped, "unfinished DKGs and repairs expired");
        }
        let Some(engine) = &self.engine else { return };
        let wiped = engine.sweep_and_record(Instant::now()).await;
        if wiped > 0 {
            tracing::info!(wiped, "expired nonces wiped");
        }
        if self.store.as_ref().is_some_and(|s| s.needs_compaction()) {
            // Deferred to the next tick while a key change is in progress.
            if let Some(held) = engine.try_hold_key_changes() {
                self.compact(engine, held).await;
            }
        }
    }

    /// Compacts the host store now (a snapshot of the engine's state; earlier records deleted).
    /// `held` keeps key changes off while the snapshot is taken and queued: every key record
    /// committed before it is then installed, so the snapshot has it.
    async fn compact(&self, engine: &Engine, held: tokio::sync::MutexGuard<'_, ()>) {
        let Some(store) = self.store.as_ref() else { return };
        let queued = engine.snapshot_then(|state| store.compact(state));
        drop(held);
        match queued {
            Ok(committed) => match committed.await {
                Ok(()) => tracing::info!(head = store.stats().head_version, "store compacted"),
                Err(e) => tracing::warn!(error = ?e, "compaction failed"),
            },
            Err(e) => tracing::warn!(code = %e.code(), "snapshot failed: {}", e.message()),
        }
    }

    /// The host store, when markers go to the host.
    pub fn store(&self) -> Option<&ChainedStore> {
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
        self.serve(request, Some(connection)).await
    }

    /// Answers one request. Never panics on any input.
    pub async fn handle(&self, request: Message) -> Message {
        self.serve(request, None).await
    }

    async fn serve(&self, request: Message, connection: Option<&Connection>) -> Message {
        let kind = request.info().name;
        let reply = serve_enclave(&Served { service: self, connection }, request).await;
        if let Message::Error(e) = &reply {
            tracing::info!(kind, code = %e.code(), "request refused: {}", e.message());
        }
        reply
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
}

/// One request being served, with the connection it came on (for store loads).
struct Served<'a> {
    service: &'a Service,
    connection: Option<&'a Connection>,
}

impl Served<'_> {
    fn engine(&self) -> Result<&Engine, Error> {
        self.service
            .engine
            .as_ref()
            .ok_or_else(|| Error::new(ErrorCode::CustodyNotConfigured, "this enclave has no HSM custody configured"))
    }

    /// A ceremony step's reply; a blame is logged and answered as such, and ends the ceremony
    /// here (its DKG or repair and its attestation challenge), as the host's admission counts it.
    fn dkg_step<T>(&self, kind: CeremonyKind, id: DkgId, r: Result<T, DkgError>) -> Result<DkgOutcome<T>, Error> {
        let outcome = Self::outcome(id, r);
        if matches!(outcome, Ok(DkgOutcome::Blame(_))) {
            self.service.end_ceremony(kind, id);
        }
        outcome
    }

    fn outcome<T>(dkg: DkgId, r: Result<T, DkgError>) -> Result<DkgOutcome<T>, Error> {
        match r {
            Ok(t) => Ok(DkgOutcome::Done(t)),
            Err(DkgError::Error(e)) => Err(e),
            Err(DkgError::Blame(code, culprit)) => {
                tracing::warn!(%dkg, code = %code, %culprit, "DKG aborted");
                Ok(DkgOutcome::Blame(DkgBlame { dkg, code, culprit }))
            }
        }
    }
}

impl EnclaveApi for Served<'_> {
    fn admit(&self, readiness: Readiness) -> Result<(), Error> {
        match readiness {
            Readiness::Any => Ok(()),
            Readiness::Custody => self.engine().map(|_| ()),
            Readiness::Ready => self.engine()?.ready(),
            // Refused by the build itself, whatever the enclave's state.
            Readiness::DevBuild if !cfg!(feature = "dev-dealer") => {
                Err(Error::new(ErrorCode::DevFeatureDisabled, "this enclave was built without the dev-dealer feature"))
            }
            Readiness::DevBuild => self.engine()?.ready(),
        }
    }

    async fn hello(&self, hello: Hello) -> Result<HelloReply, Error> {
        if hello.protocol_version != PROTOCOL_VERSION {
            return Err(Error::new(
                ErrorCode::UnsupportedProtocolVersion,
                format!("host speaks {}, enclave speaks {PROTOCOL_VERSION}", hello.protocol_version),
            ));
        }
        tracing::info!(client = %hello.client.as_inner(), "hello");
        Ok(HelloReply { protocol_version: PROTOCOL_VERSION, build: self.service.build.clone() })
    }

    async fn health(&self, _: Health) -> Result<HealthReply, Error> {
        let store = self.service.store.as_ref().map(|s| s.stats());
        let (hsm_operations, hsm_micros) = crate::custody::token::hsm_counters();
        let counts = self.engine().ok().map(|e| e.counts());
        Ok(HealthReply {
            state: self.service.state(),
            uptime_seconds: self.service.started.elapsed().as_secs(),
            store_commits: store.as_ref().map(|s| s.commits).unwrap_or(0),
            store_records: store.as_ref().map(|s| s.records).unwrap_or(0),
            hsm_operations,
            hsm_micros,
            dev_features: label(crate::DEV_FEATURES),
            host_reconnects: 0,
            enclave_restarts: 0,
            policy_hash: self.service.policy.hash(),
            custody_profile: self.engine().ok().map(|e| e.custody().profile()),
            hsm_calls: crate::custody::token::call_counts(),
            open_sessions: counts.map_or(0, |c| c.sessions as u64),
            open_attempts: counts.map_or(0, |c| c.attempts as u64),
        })
    }

    async fn ping(&self, p: Ping) -> Result<Pong, Error> {
        Ok(Pong { echo: p.echo })
    }

    async fn open_session(&self, r: OpenSession) -> Result<SessionOpened, Error> {
        let output_key = self.engine()?.open_session(r.session, r.key, r.message, r.mode).await?;
        Ok(SessionOpened { session: r.session, output_key })
    }

    async fn open_attempt(&self, r: OpenAttempt) -> Result<AttemptOpened, Error> {
        self.engine()?.open_attempt(r.session, r.attempt, r.signers.as_inner()).await?;
        Ok(AttemptOpened { attempt: r.attempt })
    }

    async fn round1(&self, r: SeatRef) -> Result<Round1Reply, Error> {
        let commitments = self.engine()?.round1(r.attempt, r.seat)?;
        Ok(Round1Reply { attempt: r.attempt, seat: r.seat, commitments })
    }

    async fn round2(&self, r: Round2) -> Result<Round2Reply, Error> {
        let signature_share = self.engine()?.round2(r.attempt, r.seat, r.mode, r.signing_package.as_inner()).await?;
        Ok(Round2Reply { attempt: r.attempt, seat: r.seat, signature_share })
    }

    async fn verify_share(&self, r: VerifyShare) -> Result<ShareVerdict, Error> {
        self.engine()?.verify_share(r.attempt, r.signing_package.as_inner(), &r.share)
    }

    async fn aggregate(&self, r: Aggregate) -> Result<AggregateOutcome, Error> {
        self.engine()?.aggregate(r.attempt, r.mode, r.signing_package.as_inner(), r.shares.as_inner()).await
    }

    async fn abort_attempt(&self, r: AttemptRef) -> Result<AttemptAborted, Error> {
        Ok(AttemptAborted { attempt: r.attempt, wiped_count: self.engine()?.abort(r.attempt)? })
    }

    async fn dev_dealer_keygen(&self, r: DevDealerKeygen) -> Result<KeyInfo, Error> {
        dev_dealer(self.engine()?, r).await
    }

    async fn get_key(&self, r: KeyRef) -> Result<KeyInfo, Error> {
        let engine = self.engine()?;
        key_info(&*engine.key(&r.key)?)
    }

    async fn store_load(&self, load: StoreLoad) -> Result<StoreStatus, Error> {
        let (Ok(engine), Some(store)) = (self.engine(), &self.service.store) else {
            return Err(Error::new(ErrorCode::UnexpectedMessage, "this enclave does not use a host store"));
        };
        let progress = store.load_chunk(&load)?;
        let records = progress.records;
        let mut head_version = 0;
        if let Some(loaded) = progress.done {
            head_version = loaded.head.version;
            if !load.verify_only {
                let channel = self
                    .connection
                    .and_then(|c| c.channel.get().cloned())
                    .ok_or_else(|| Error::new(ErrorCode::Internal, "connection without a channel"))?;
                engine.replay(&loaded.records)?;
                store.adopt(channel, &loaded);
                tracing::info!(records, head = head_version, "host store loaded and verified");
            }
        } else if load.last {
            head_version = store.stats().head_version;
        }
        Ok(StoreStatus { state: self.service.state(), records, head_version, anchor_version: store.anchor_version() })
    }

    async fn get_identity(&self, _: GetIdentity) -> Result<IdentityKeyBytes, Error> {
        IdentityKeyBytes::new(self.engine()?.custody().identity_public_key().to_vec())
            .map_err(|e| Error::new(ErrorCode::Internal, e))
    }

    async fn attest(&self, r: Attest) -> Result<Attestation, Error> {
        match &self.service.attestor {
            Some(a) => a.attest(self.engine()?.custody(), &r.challenge),
            None => Ok(crate::attestation::unattested()),
        }
    }

    async fn ceremony_challenge(&self, r: CeremonyChallenge) -> Result<CeremonyChallenged, Error> {
        let identity = self.engine()?.custody().identity_public_key();
        // This enclave answers only as the participant its own [group] pins to its identity.
        if self.service.dkgs.pins().and_then(|p| p.get(&r.me)).map(Vec::as_slice) != Some(identity) {
            return Err(Error::new(
                ErrorCode::DkgConfigInvalid,
                format!("participant {} is not pinned to this enclave's identity key in its [group]", r.me),
            ));
        }
        self.service.ceremonies.challenge(&r)
    }

    async fn ceremony_attest(&self, r: CeremonyAttest) -> Result<Attestation, Error> {
        let nonce = self.service.ceremonies.binding(r.ceremony, r.challenges.as_inner())?;
        match &self.service.attestor {
            Some(a) => a.attest(self.engine()?.custody(), &nonce),
            None => Ok(crate::attestation::unattested()),
        }
    }

    async fn ceremony_peers(&self, r: CeremonyPeers) -> Result<DkgOutcome<CeremonyVerified>, Error> {
        // A refusal leaves the ceremony to its abort (which the host counts).
        Self::outcome(r.ceremony, self.service.ceremonies.verify_peers(&r, frostgate_attest::peer::now()))
    }

    async fn dkg_start(&self, r: DkgStart) -> Result<DkgOutcome<DkgRound1Package>, Error> {
        self.dkg_step(CeremonyKind::Dkg, r.dkg, self.service.dkgs.start(self.engine()?, &r))
    }

    async fn dkg_round2(&self, r: DkgRound2) -> Result<DkgOutcome<DkgEnvelopes>, Error> {
        let (service, engine) = (self.service, self.engine()?);
        // Round 2 sends every peer its secret share: only to peers attested as pinned.
        let peers = r.round1.as_inner().iter().map(|p| p.from);
        if let Err(e) = service.ceremonies.require(r.dkg, CeremonyKind::Dkg, peers) {
            return self.dkg_step(CeremonyKind::Dkg, r.dkg, Err(e));
        }
        self.dkg_step(CeremonyKind::Dkg, r.dkg, service.dkgs.round2(engine, r.dkg, r.round1.as_inner()))
    }

    async fn dkg_finish(&self, r: DkgFinish) -> Result<DkgOutcome<DkgConfirmation>, Error> {
        self.dkg_step(CeremonyKind::Dkg, r.dkg, self.service.dkgs.finish(self.engine()?, r.dkg, r.envelopes.as_inner()))
    }

    async fn dkg_activate(&self, r: DkgActivate) -> Result<DkgOutcome<KeyInfo>, Error> {
        let engine = self.engine()?;
        let activated = match self.service.dkgs.activate(engine, r.dkg, r.confirmations.as_inner()).await {
            Ok(record) => {
                tracing::info!(dkg = %r.dkg, key = %record.key_id, "DKG key activated");
                key_info(&record).map_err(DkgError::Error)
            }
            Err(e) => Err(e),
        };
        if activated.is_ok() {
            // Its end: the attestation's challenge and verified peers go too.
            self.service.ceremonies.end(r.dkg, CeremonyKind::Dkg);
        }
        self.dkg_step(CeremonyKind::Dkg, r.dkg, activated)
    }

    async fn refresh_start(&self, r: RefreshStart) -> Result<DkgOutcome<DkgRound1Package>, Error> {
        self.dkg_step(CeremonyKind::Dkg, r.dkg, self.service.dkgs.start_refresh(self.engine()?, &r))
    }

    async fn refresh_activate(&self, r: RefreshActivate) -> Result<DkgOutcome<KeyRefreshed>, Error> {
        let engine = self.engine()?;
        let activated = match self.service.dkgs.activate_refresh(engine, r.dkg, r.confirmations.as_inner()).await {
            Ok(record) => {
                tracing::info!(dkg = %r.dkg, key = %record.key_id, epoch = record.epoch(), "refreshed shares prepared");
                key_info(&record).map(|key| KeyRefreshed { key, epoch: record.epoch() }).map_err(DkgError::Error)
            }
            Err(e) => Err(e),
        };
        if activated.is_ok() {
            // Its end: the attestation's challenge and verified peers go too.
            self.service.ceremonies.end(r.dkg, CeremonyKind::Dkg);
        }
        self.dkg_step(CeremonyKind::Dkg, r.dkg, activated)
    }

    async fn refresh_commit(&self, r: RefreshCommit) -> Result<KeyRefreshed, Error> {
        let engine = self.engine()?;
        let before = engine.key(&r.key)?.epoch();
        let pins = self.service.dkgs.pins();
        let record = engine.commit_key(pins, r.dkg, &r.key, r.epoch, r.votes.as_inner()).await?;
        if before != record.epoch() {
            tracing::info!(key = %record.key_id, epoch = record.epoch(), "refreshed shares in force");
            // The previous epoch's sealed share leaves the host store with the records before
            // the snapshot.
            self.service.compact(engine, engine.hold_key_changes().await).await;
        }
        Ok(KeyRefreshed { key: key_info(&record)?, epoch: record.epoch() })
    }

    async fn rotate_sealing_key(&self, _: RotateSealingKey) -> Result<SealingKeyRotated, Error> {
        let engine = self.engine()?;
        let (keys, seats) = engine.rotate_kek().await?;
        // Records with blobs under the destroyed key leave the host store.
        self.service.compact(engine, engine.hold_key_changes().await).await;
        Ok(SealingKeyRotated { keys: keys as u32, seats: seats as u32 })
    }

    async fn repair_start(&self, r: RepairStart) -> Result<DkgOutcome<DkgEnvelopes>, Error> {
        let (service, engine) = (self.service, self.engine()?);
        // The deltas leave with this step's answer (to the other helpers), the sigma later (to
        // the new seat): every pinned one of them attested first.
        let peers = r.helpers.as_inner().iter().copied().chain([r.seat]).filter(|p| *p != r.me);
        if let Err(e) = service.ceremonies.require(r.repair, CeremonyKind::Repair, peers) {
            return self.dkg_step(CeremonyKind::Repair, r.repair, Err(e));
        }
        self.dkg_step(CeremonyKind::Repair, r.repair, service.repairs.start(engine, service.dkgs.pins(), &r))
    }

    async fn repair_sigma(&self, r: RepairSigma) -> Result<DkgOutcome<DkgEnvelopes>, Error> {
        let (service, engine) = (self.service, self.engine()?);
        // A helper's repair ends with its sigma, whatever it answers (as the host counts it).
        let sigma = service.repairs.sigma(engine, service.dkgs.pins(), &r);
        service.ceremonies.end(r.repair, CeremonyKind::Repair);
        self.dkg_step(CeremonyKind::Repair, r.repair, sigma)
    }

    async fn repair_finish(&self, r: RepairFinish) -> Result<DkgOutcome<KeyInfo>, Error> {
        let engine = self.engine()?;
        // The seat's share is taken only from helpers attested as pinned.
        let helpers = r.envelopes.as_inner().iter().map(|e| e.from);
        if let Err(e) = self.service.ceremonies.require(r.repair, CeremonyKind::Repair, helpers) {
            return self.dkg_step(CeremonyKind::Repair, r.repair, Err(e));
        }
        let repaired = match crate::repair::Repairs::finish(engine, self.service.dkgs.pins(), &r).await {
            Ok(record) => {
                tracing::info!(repair = %r.repair, key = %record.key_id, seat = %r.seat, "seat repaired");
                key_info(&record).map_err(DkgError::Error)
            }
            Err(e) => Err(e),
        };
        if repaired.is_ok() {
            // Its end: the attestation's challenge and verified peers go too.
            self.service.ceremonies.end(r.repair, CeremonyKind::Repair);
        }
        self.dkg_step(CeremonyKind::Repair, r.repair, repaired)
    }

    async fn backup_seat(&self, r: BackupSeat) -> Result<SeatBackup, Error> {
        let backup = crate::backup::backup(self.engine()?, self.service.recovery.as_ref(), r.key)?;
        tracing::info!(key = %r.key, seat = %backup.seat, epoch = backup.epoch, "seat backed up to the recovery key");
        Ok(backup)
    }

    async fn restore_seat(&self, r: RestoreSeat) -> Result<KeyInfo, Error> {
        Err(Error::new(
            ErrorCode::BackupInvalid,
            format!(
                "a restore of key {} needs the current epoch stated by its pinned peers (RestoreAttested: \
                 `frostgate restore --cluster FILE`)",
                r.backup.key
            ),
        ))
    }

    async fn get_refresh_vote(&self, r: GetRefreshVote) -> Result<RefreshVote, Error> {
        // Its DKG, if still here, can never be prepared after a "never" vote: dropped with it.
        let vote = self.engine()?.refresh_vote(r.dkg, r.key).await?;
        if !vote.prepared {
            self.service.dkgs.abort(r.dkg);
        }
        Ok(vote)
    }

    async fn refresh_abandon(&self, r: RefreshAbandon) -> Result<RefreshAbandoned, Error> {
        self.service.dkgs.abort(r.dkg);
        let engine = self.engine()?;
        let dropped = engine.abandon_prepared(self.service.dkgs.pins(), r.dkg, &r.key, r.votes.as_inner()).await?;
        Ok(RefreshAbandoned { dkg: r.dkg, dropped })
    }

    async fn restore_challenge(&self, r: RestoreChallenge) -> Result<RestoreChallenged, Error> {
        self.engine()?;
        Ok(RestoreChallenged { key: r.key, challenge: self.service.challenges.draw(r.key)? })
    }

    async fn attest_epoch(&self, r: AttestEpoch) -> Result<EpochStatement, Error> {
        crate::epoch_statements::state(self.engine()?, r.key, r.challenge)
    }

    async fn restore_attested(&self, r: RestoreAttested) -> Result<KeyInfo, Error> {
        let (service, engine) = (self.service, self.engine()?);
        let challenge = service.challenges.take(&r.backup.key)?;
        let record = crate::backup::restore(
            engine,
            service.recovery.as_ref(),
            service.dkgs.pins(),
            &r.backup,
            r.statements.as_inner(),
            challenge,
        )
        .await?;
        tracing::warn!(key = %record.key_id, seat = %r.backup.seat, "seat restored from a backup; policy windows closed for one window");
        key_info(&record)
    }

    async fn dkg_abort(&self, r: DkgRef) -> Result<DkgAborted, Error> {
        // A DKG aborted before it started still ends its attestation challenge (counted as it).
        let challenged = self.service.ceremonies.end(r.dkg, CeremonyKind::Dkg);
        if !self.service.dkgs.abort(r.dkg) && !challenged {
            return Err(Error::new(ErrorCode::DkgUnknown, format!("DKG {}", r.dkg)));
        }
        Ok(DkgAborted { dkg: r.dkg })
    }

    async fn open_psbt_session(&self, r: OpenPsbtSession) -> Result<PsbtSessionOpened, Error> {
        self.engine()?.open_psbt_session(r.session, r.key, r.input, r.psbt.as_inner()).await
    }

    async fn open_request_session(&self, r: RequestSession) -> Result<RequestSessionOpened, Error> {
        self.engine()?.open_request_session(&r).await
    }

    async fn get_policy(&self, _: GetPolicy) -> Result<PolicyInfo, Error> {
        let p = &self.service.policy;
        let text = frostgate_common::bounded::PolicyText::new(p.text().to_string())
            .map_err(|e| Error::new(ErrorCode::Internal, format!("policy text: {e}")))?;
        Ok(PolicyInfo { hash: p.hash(), text })
    }

    async fn get_audit(&self, r: GetAudit) -> Result<AuditLog, Error> {
        let entries = self.engine()?.audit_after(r.after, frostgate_common::protocol::AuditEntries::MAX_LEN);
        Ok(AuditLog {
            entries: frostgate_common::protocol::AuditEntries::new(entries)
                .map_err(|e| Error::new(ErrorCode::Internal, e))?,
        })
    }

    async fn acknowledge_audit(&self, r: AcknowledgeAudit) -> Result<AuditAcknowledged, Error> {
        self.engine()?.acknowledge_audit(r.through, &r.signature.to_bytes()).await
    }

    async fn open_derived_session(&self, r: OpenDerivedSession) -> Result<SessionOpened, Error> {
        let output_key = self.engine()?.open_session_at(r.session, r.key, r.path.as_inner(), r.message, r.mode).await?;
        Ok(SessionOpened { session: r.session, output_key })
    }

    async fn close_session(&self, r: SessionRef) -> Result<SessionClosed, Error> {
        self.engine()?.close_session(r.session);
        Ok(SessionClosed { session: r.session })
    }

    async fn preprocess(&self, r: Preprocess) -> Result<Preprocessed, Error> {
        let issued = self.engine()?.preprocess(r.key, r.seat, r.count)?;
        Ok(Preprocessed { key: r.key, seat: r.seat, commitments: pre_commitments(issued)? })
    }

    async fn sign_preprocessed(&self, r: SignPreprocessed) -> Result<PreprocessedShare, Error> {
        let engine = self.engine()?;
        engine.close_sessions(r.close.as_inner());
        engine.check_commitment(&r.binding.key(), r.seat, r.attempt, r.commitment)?;
        engine.bind_for_signing(&r.binding, r.attempt, r.signers.as_inner()).await?;
        let (signature_share, next) = engine
            .sign_preprocessed(r.attempt, r.seat, r.commitment, r.signing_package.as_inner(), r.replenish)
            .await?;
        Ok(PreprocessedShare { attempt: r.attempt, seat: r.seat, signature_share, next: pre_commitments(next)? })
    }

    async fn sign_batch(&self, r: SignBatch) -> Result<BatchSigned, Error> {
        self.engine()?;
        // Concurrently, so the items' markers share the store's group commits; each item is
        // served (and refused) exactly as alone.
        let signed = futures_util::future::join_all(r.items.into_inner().into_iter().map(|item| async move {
            match self.sign_preprocessed(item).await {
                Ok(share) => SignOutcome::Signed(share),
                Err(e) => SignOutcome::Refused(e),
            }
        }))
        .await;
        Ok(BatchSigned {
            outcomes: frostgate_common::protocol::SignOutcomes::new(signed)
                .map_err(|e| Error::new(ErrorCode::Internal, e))?,
        })
    }

    async fn close_sessions(&self, r: CloseSessions) -> Result<SessionsClosed, Error> {
        Ok(SessionsClosed { closed: self.engine()?.close_sessions(r.sessions.as_inner()) })
    }
}

fn pre_commitments(list: Vec<PreCommitment>) -> Result<frostgate_common::protocol::PreCommitments, Error> {
    frostgate_common::protocol::PreCommitments::new(list).map_err(|e| Error::new(ErrorCode::Internal, e))
}

#[cfg(feature = "dev-dealer")]
async fn dev_dealer(engine: &Engine, r: DevDealerKeygen) -> Result<KeyInfo, Error> {
    let record = crate::keys::dev_dealer(engine.custody(), r.threshold, r.participants)?;
    let info = key_info(&record)?;
    tracing::warn!(key = %record.key_id, "DEVELOPMENT dealer key created: not for production funds");
    engine.add_key(record).await?;
    Ok(info)
}

/// Never reached: `admit` refuses `DevBuild` requests in a build without the feature.
#[cfg(not(feature = "dev-dealer"))]
async fn dev_dealer(_: &Engine, _: DevDealerKeygen) -> Result<KeyInfo, Error> {
    Err(Error::new(ErrorCode::DevFeatureDisabled, "this enclave was built without the dev-dealer feature"))
}

fn key_info(record: &crate::keys::KeyRecord) -> Result<KeyInfo, Error> {
    let internal = |e| Error::new(ErrorCode::Internal, e);
    let bytes =
        record.public.serialize().map_err(|e| crate::keys::frost_err(ErrorCode::Internal, "public key package", e))?;
    Ok(KeyInfo {
        key: record.key_id,
        threshold: record.threshold,
        participants: Signers::new(record.participants.keys().copied().collect::<Vec<_>>()).map_err(internal)?,
        seats: Signers::new(record.seats.keys().copied().collect::<Vec<_>>()).map_err(internal)?,
        bip86_output_key: crate::taproot::output_key(&record.public, &TaprootMode::Bip86)?,
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
        let reply = service.handle(DevDealerKeygen { threshold: 2, participants: 3 }.into()).await;
        match reply {
            Message::Error(e) => assert_eq!(e.code(), ErrorCode::DevFeatureDisabled),
            other => panic!("{other:?}"),
        }
    }
}

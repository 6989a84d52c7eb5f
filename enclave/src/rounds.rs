//! The signing engine: sessions, attempts, round 1, round 2, share verification, aggregation.
//!
//! Invariants:
//! - A nonce pair lives only in this process's memory ([`LiveNonce`]), is never cloned or
//!   serialized, is consumed by value, and is wiped on drop (`SigningNonces` is `ZeroizeOnDrop`).
//! - Round 2 verifies the signing package against the session and attempt *before* anything is
//!   consumed; then check-and-set of the consumed marker happens under the one state lock; the
//!   share is computed and released only after the marker is durable.
//! - A consumed marker is never removed while its attempt is known, so no second share is ever
//!   released for a nonce, whatever package a later request carries. Markers go with their
//!   attempt (abort, close, expiry): by then every nonce of the attempt is consumed or wiped.
//! - No share or signature leaves before the session and attempt bindings it depends on are
//!   durable: bindings not yet known durable are committed with the marker.
//! - Aggregation uses the enclave's own public key package (never one from the request), records
//!   the completed marker durably before the signature leaves, and reports invalid shares only
//!   as candidate culprits.
//! - Every registry is bounded ([`Limits`]); see `ARCHITECTURE.md` for the expiry rules.

use crate::custody::Custody;
use crate::keys::{self, frost_err, identifier, KeyRecord};
use crate::markers::{MarkerStore, PersistError, Record};
use frost_core::CheaterDetection;
use frost_secp256k1_tr::round1::{self, SigningCommitments, SigningNonces};
use frost_secp256k1_tr::round2::{self, SignatureShare};
use frost_secp256k1_tr::{Identifier, SigningPackage};
use frostgate_common::bounded::{CommitmentBytes, SignatureShareBytes, Signers};
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::ids::{AttemptId, KeyId, ParticipantId, SessionId};
use frostgate_common::protocol::{AggregateOutcome, Bip340Signature, ShareVerdict, SignerShare, TaprootMode};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Bounds on the engine's registries.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open sessions.
    pub max_sessions: usize,
    /// Open attempts.
    pub max_attempts: usize,
    /// Live nonce pairs.
    pub max_live_nonces: usize,
    /// A live nonce pair older than this is wiped by the sweep.
    pub nonce_ttl: Duration,
    /// A session older than this is removed by the sweep with its attempts, nonces and markers.
    pub session_ttl: Duration,
    /// A DKG not finished within this long is dropped with its secrets.
    pub dkg_ttl: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_sessions: 4096,
            max_attempts: 16384,
            max_live_nonces: 16384,
            nonce_ttl: Duration::from_secs(300),
            session_ttl: Duration::from_secs(3600),
            dkg_ttl: crate::dkg::DEFAULT_DKG_TTL,
        }
    }
}

#[derive(Debug)]
struct Session {
    key: KeyId,
    message: [u8; 32],
    mode: TaprootMode,
    output_key: [u8; 32],
    created: Instant,
    opened_unix: u64,
    /// Whether the `SessionBound` record is durable (replayed, or its commit succeeded).
    durable: BindingState,
}

impl Session {
    fn record(&self, session: SessionId) -> Record {
        Record::SessionBound {
            session,
            key: self.key,
            message: self.message,
            mode: self.mode,
            opened_unix: self.opened_unix,
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Maps a failed persist of a binding (not a nonce) to the caller's error.
fn persist_err(e: PersistError) -> Error {
    match e {
        PersistError::NotWritten(e) if e.code() == ErrorCode::StoreNotLoaded => e,
        PersistError::NotWritten(e) => err(ErrorCode::StoreCommitFailed, format!("not written: {e}")),
        PersistError::Unknown(e) => err(ErrorCode::StoreCommitFailed, format!("outcome unknown: {e}")),
    }
}

#[derive(Debug)]
struct Attempt {
    session: SessionId,
    signers: BTreeSet<ParticipantId>,
    /// Whether the `AttemptBound` record is durable.
    durable: BindingState,
}

impl Attempt {
    fn record(&self, attempt: AttemptId) -> Record {
        Record::AttemptBound { attempt, session: self.session, signers: self.signers.iter().copied().collect() }
    }
}

/// A nonce pair with the commitments issued for it. Never cloned, never serialized.
struct LiveNonce {
    nonces: SigningNonces,
    commitments: Vec<u8>,
    created: Instant,
}

impl std::fmt::Debug for LiveNonce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LiveNonce(..)")
    }
}

/// Marker lifecycle: `Pending` while its persist is in flight (already blocks a second use),
/// `Kept` once durable or of unknown durability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    Pending,
    Kept,
}

type Seat = (AttemptId, ParticipantId);

#[derive(Debug, Default)]
struct State {
    keys: HashMap<KeyId, Arc<KeyRecord>>,
    sessions: HashMap<SessionId, Session>,
    attempts: HashMap<AttemptId, Attempt>,
    nonces: HashMap<Seat, LiveNonce>,
    consumed: HashMap<Seat, Marker>,
    completed: HashMap<AttemptId, Marker>,
}

/// Counts for health and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Keys held.
    pub keys: usize,
    /// Open sessions.
    pub sessions: usize,
    /// Open attempts.
    pub attempts: usize,
    /// Live nonce pairs.
    pub live_nonces: usize,
    /// Consumed-nonce markers.
    pub consumed_markers: usize,
    /// Completed-attempt markers.
    pub completed_markers: usize,
}

/// The signing engine.
#[derive(Debug)]
pub struct Engine {
    custody: Arc<Custody>,
    store: Arc<dyn MarkerStore>,
    limits: Limits,
    state: Mutex<State>,
    /// Tweaked public key packages by (key, mode): tweaking costs a scalar multiplication per
    /// participant, and every session, share check and aggregate needs one. Public data.
    tweaked: Mutex<HashMap<(KeyId, TaprootMode), Arc<frost_secp256k1_tr::keys::PublicKeyPackage>>>,
}

/// Most cached tweaked packages (script-tree roots vary per session; the cache is dropped when full).
const TWEAK_CACHE: usize = 256;

fn err(code: ErrorCode, msg: impl std::fmt::Display) -> Error {
    Error::new(code, msg)
}

fn decode_package(bytes: &[u8]) -> Result<SigningPackage, Error> {
    SigningPackage::deserialize(bytes).map_err(|e| frost_err(ErrorCode::InvalidEncoding, "signing package", e))
}

/// Where a session or attempt binding's background commit stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Binding {
    /// Its commit is in flight.
    Queued,
    /// Durable.
    Durable,
    /// Its commit failed (or never ran): it must go with the next marker.
    Failed,
}

/// A binding's state, shared by the registry and its background commit.
type BindingState = Arc<tokio::sync::watch::Sender<Binding>>;

fn binding(state: Binding) -> BindingState {
    Arc::new(tokio::sync::watch::Sender::new(state))
}

/// Seat context copied out of the state for work done without the lock.
struct Bound {
    key: Arc<KeyRecord>,
    message: [u8; 32],
    mode: TaprootMode,
    output_key: [u8; 32],
    signers: BTreeSet<ParticipantId>,
    /// The session and attempt bindings not yet known durable, with their states.
    undurable: Vec<(Record, BindingState)>,
}

impl Bound {
    /// `records` preceded by every binding whose background commit did not make it durable
    /// (waiting for a commit in flight to resolve), so nothing leaves before its bindings are
    /// durable, and a binding is written twice only after its own commit failed.
    async fn with_bindings(&self, records: Vec<Record>) -> Vec<Record> {
        let mut out = Vec::new();
        for (record, state) in &self.undurable {
            let mut rx = state.subscribe();
            let settled = rx.wait_for(|b| *b != Binding::Queued).await.map(|b| *b).ok();
            if settled != Some(Binding::Durable) {
                out.push(record.clone());
            }
        }
        out.extend(records);
        out
    }

    /// After a durable commit of [`Self::with_bindings`]: the bindings are durable too.
    fn bindings_durable(&self) {
        for (_, state) in &self.undurable {
            state.send_replace(Binding::Durable);
        }
    }
}

impl Engine {
    /// An engine over a custody token and a marker store.
    pub fn new(custody: Arc<Custody>, store: Arc<dyn MarkerStore>, limits: Limits) -> Self {
        Engine { custody, store, limits, state: Mutex::new(State::default()), tweaked: Mutex::new(HashMap::new()) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied marker: every mutation is a
        // single map operation. Keep serving from the map as it is.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The key's public package tweaked for `mode` (cached).
    fn tweaked(&self, key: &KeyRecord, mode: &TaprootMode) -> Arc<frost_secp256k1_tr::keys::PublicKeyPackage> {
        let mut cache = self.tweaked.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = cache.get(&(key.key_id, *mode)) {
            return t.clone();
        }
        if cache.len() >= TWEAK_CACHE {
            cache.clear();
        }
        let t = Arc::new(keys::tweaked(&key.public, mode));
        cache.insert((key.key_id, *mode), t.clone());
        t
    }

    /// Registry sizes.
    pub fn counts(&self) -> Counts {
        let s = self.lock();
        Counts {
            keys: s.keys.len(),
            sessions: s.sessions.len(),
            attempts: s.attempts.len(),
            live_nonces: s.nonces.len(),
            consumed_markers: s.consumed.len(),
            completed_markers: s.completed.len(),
        }
    }

    /// Adds a key (from DKG or the dev dealer) once it is durable in the store.
    pub async fn add_key(&self, record: KeyRecord) -> Result<(), Error> {
        if self.lock().keys.contains_key(&record.key_id) {
            return Err(err(ErrorCode::Internal, format!("key {} already held", record.key_id)));
        }
        let stored = key_record(&record)?;
        self.store.persist(vec![stored]).await.map_err(persist_err)?;
        self.lock().keys.insert(record.key_id, Arc::new(record));
        Ok(())
    }

    /// Whether the marker store takes records (signing is refused otherwise).
    pub fn ready(&self) -> Result<(), Error> {
        self.store.ready()
    }

    /// Applies verified store records (at load). Idempotent; never removes live nonces of
    /// attempts that still exist, and only adds markers (a marker known in memory stays).
    pub fn replay(&self, records: &[Record]) -> Result<(), Error> {
        let now = Instant::now();
        let unix = unix_now();
        let mut s = self.lock();
        for r in records {
            match r {
                Record::KeyAdded { key, public_key_package, seats } => {
                    let public = frost_secp256k1_tr::keys::PublicKeyPackage::deserialize(public_key_package)
                        .map_err(|e| frost_err(ErrorCode::StoreTampered, "stored public key package", e))?;
                    let seats = seats
                        .iter()
                        .map(|(p, epoch, blob)| (*p, keys::SealedSeat { blob: blob.clone(), epoch: *epoch }))
                        .collect();
                    let record = KeyRecord::new(public, seats)?;
                    if record.key_id != *key {
                        return Err(err(
                            ErrorCode::StoreTampered,
                            "stored key id does not match its public key package",
                        ));
                    }
                    s.keys.insert(*key, Arc::new(record));
                }
                Record::SessionBound { session, key, message, mode, opened_unix } => {
                    let record = s
                        .keys
                        .get(key)
                        .cloned()
                        .ok_or_else(|| err(ErrorCode::StoreTampered, "session of an unknown key"))?;
                    let output_key = keys::output_key(&record.public, mode)?;
                    let age = Duration::from_secs(unix.saturating_sub(*opened_unix));
                    let created = now.checked_sub(age).unwrap_or(now);
                    s.sessions.insert(
                        *session,
                        Session {
                            key: *key,
                            message: *message,
                            mode: *mode,
                            output_key,
                            created,
                            opened_unix: *opened_unix,
                            durable: binding(Binding::Durable),
                        },
                    );
                }
                Record::AttemptBound { attempt, session, signers } => {
                    s.attempts.insert(
                        *attempt,
                        Attempt {
                            session: *session,
                            signers: signers.iter().copied().collect(),
                            durable: binding(Binding::Durable),
                        },
                    );
                }
                Record::NonceConsumed { attempt, seat } => {
                    s.consumed.insert((*attempt, *seat), Marker::Kept);
                    drop(s.nonces.remove(&(*attempt, *seat)));
                }
                Record::AttemptCompleted { attempt, .. } => {
                    s.completed.insert(*attempt, Marker::Kept);
                }
                Record::SessionExpired { session } => Self::remove_sessions(&mut s, &BTreeSet::from([*session])),
                Record::SnapshotBegin { .. } | Record::SnapshotEnd { .. } => {}
            }
        }
        // Markers live only as long as their attempt (see `abort`).
        Self::drop_orphan_markers(&mut s);
        if s.sessions.len() > self.limits.max_sessions || s.attempts.len() > self.limits.max_attempts {
            self.sweep_locked(&mut s, now);
            if s.sessions.len() > self.limits.max_sessions || s.attempts.len() > self.limits.max_attempts {
                return Err(err(ErrorCode::RegistryFull, "the stored state exceeds the engine's bounds"));
            }
        }
        Ok(())
    }

    /// The whole durable state as records (a snapshot for compaction).
    pub fn snapshot(&self) -> Result<Vec<Record>, Error> {
        let s = self.lock();
        let mut out = Vec::new();
        for k in s.keys.values() {
            out.push(key_record(k)?);
        }
        for (id, sess) in &s.sessions {
            out.push(sess.record(*id));
        }
        for (id, a) in &s.attempts {
            out.push(a.record(*id));
        }
        for ((attempt, seat), m) in &s.consumed {
            if *m == Marker::Kept && s.attempts.contains_key(attempt) {
                out.push(Record::NonceConsumed { attempt: *attempt, seat: *seat });
            }
        }
        for (attempt, m) in &s.completed {
            if *m == Marker::Kept {
                if let Some(a) = s.attempts.get(attempt) {
                    if let Some(sess) = s.sessions.get(&a.session) {
                        out.push(Record::AttemptCompleted {
                            attempt: *attempt,
                            message: sess.message,
                            mode: sess.mode,
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    /// A key held here.
    pub fn key(&self, key: &KeyId) -> Result<Arc<KeyRecord>, Error> {
        self.lock().keys.get(key).cloned().ok_or_else(|| err(ErrorCode::UnknownKey, format!("key {key}")))
    }

    /// The custody token.
    pub fn custody(&self) -> &Custody {
        &self.custody
    }

    /// Binds a session, durably. An identical repeat is accepted; any difference is a conflict.
    pub async fn open_session(
        &self,
        id: SessionId,
        key: KeyId,
        message: [u8; 32],
        mode: TaprootMode,
    ) -> Result<[u8; 32], Error> {
        let record = self.key(&key)?;
        let output_key = keys::x_only(self.tweaked(&record, &mode).verifying_key())?;
        let now = Instant::now();
        let opened_unix = unix_now();
        let durable = {
            let mut s = self.lock();
            if let Some(existing) = s.sessions.get(&id) {
                if existing.key == key && existing.message == message && existing.mode == mode {
                    return Ok(existing.output_key);
                }
                return Err(err(
                    ErrorCode::SessionConflict,
                    format!("session {id} is bound to another key, message or mode"),
                ));
            }
            if s.sessions.len() >= self.limits.max_sessions {
                self.sweep_locked(&mut s, now);
                if s.sessions.len() >= self.limits.max_sessions {
                    return Err(err(ErrorCode::RegistryFull, format!("{} open sessions", s.sessions.len())));
                }
            }
            let durable = binding(Binding::Queued);
            let session =
                Session { key, message, mode, output_key, created: now, opened_unix, durable: durable.clone() };
            s.sessions.insert(id, session);
            durable
        };
        // Not awaited; if this commit fails, the binding goes again with the first marker of
        // the session (`Bound::with_bindings`), so no share leaves before it is durable.
        self.persist_binding(Record::SessionBound { session: id, key, message, mode, opened_unix }, durable);
        Ok(output_key)
    }

    /// Binds an attempt to a session and an exact, ascending signer set, durably.
    pub async fn open_attempt(
        &self,
        session: SessionId,
        attempt: AttemptId,
        signers: &[ParticipantId],
    ) -> Result<(), Error> {
        {
            let mut s = self.lock();
            let sess =
                s.sessions.get(&session).ok_or_else(|| err(ErrorCode::UnknownSession, format!("session {session}")))?;
            let key = s.keys.get(&sess.key).ok_or_else(|| err(ErrorCode::UnknownKey, format!("key {}", sess.key)))?;
            if !signers.windows(2).all(|w| w[0] < w[1]) {
                return Err(err(ErrorCode::SignerSetInvalid, "signers must be strictly ascending"));
            }
            if signers.len() < key.threshold as usize {
                return Err(err(
                    ErrorCode::SignerSetInvalid,
                    format!("{} signers, threshold {}", signers.len(), key.threshold),
                ));
            }
            if let Some(p) = signers.iter().find(|p| !key.participants.contains_key(p)) {
                return Err(err(ErrorCode::SignerSetInvalid, format!("participant {p} is not in the group")));
            }
            let set: BTreeSet<ParticipantId> = signers.iter().copied().collect();
            if let Some(existing) = s.attempts.get(&attempt) {
                if existing.session == session && existing.signers == set {
                    return Ok(());
                }
                return Err(err(
                    ErrorCode::AttemptConflict,
                    format!("attempt {attempt} is bound to another session or signer set"),
                ));
            }
            if s.attempts.len() >= self.limits.max_attempts {
                self.sweep_locked(&mut s, Instant::now());
                if s.attempts.len() >= self.limits.max_attempts {
                    return Err(err(ErrorCode::RegistryFull, format!("{} open attempts", s.attempts.len())));
                }
            }
            let durable = binding(Binding::Queued);
            s.attempts.insert(attempt, Attempt { session, signers: set, durable: durable.clone() });
            drop(s);
            // Not awaited, as for sessions.
            self.persist_binding(Record::AttemptBound { attempt, session, signers: signers.to_vec() }, durable);
        }
        Ok(())
    }

    /// Queues a binding record now (in order with later records, e.g. its session's closing)
    /// and records the commit's outcome in `state` in the background.
    fn persist_binding(&self, record: Record, state: BindingState) {
        let queued = self.store.persist_detached(vec![record]);
        let outcome = state.clone();
        let commit = async move {
            match queued.await {
                Ok(()) => outcome.send_replace(Binding::Durable),
                Err(e) => {
                    tracing::warn!(error = ?e, "binding not committed; it goes with the next marker");
                    outcome.send_replace(Binding::Failed)
                }
            };
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn(commit)),
            Err(_) => {
                tracing::warn!("no runtime: the binding goes with the next marker");
                state.send_replace(Binding::Failed);
            }
        }
    }

    /// Copies what a seat's work needs out of the state, checking the seat is held and signs.
    fn bound(s: &State, attempt: &AttemptId, seat: Option<ParticipantId>) -> Result<Bound, Error> {
        let a = s.attempts.get(attempt).ok_or_else(|| err(ErrorCode::UnknownAttempt, format!("attempt {attempt}")))?;
        let sess = s
            .sessions
            .get(&a.session)
            .ok_or_else(|| err(ErrorCode::UnknownSession, format!("session {}", a.session)))?;
        let key = s.keys.get(&sess.key).ok_or_else(|| err(ErrorCode::UnknownKey, format!("key {}", sess.key)))?.clone();
        if let Some(seat) = seat {
            if !a.signers.contains(&seat) || !key.seats.contains_key(&seat) {
                return Err(err(
                    ErrorCode::SeatNotHeld,
                    format!("seat {seat} is not held here or not in attempt {attempt}"),
                ));
            }
        }
        let mut undurable = Vec::new();
        if *sess.durable.borrow() != Binding::Durable {
            undurable.push((sess.record(a.session), sess.durable.clone()));
        }
        if *a.durable.borrow() != Binding::Durable {
            undurable.push((a.record(*attempt), a.durable.clone()));
        }
        Ok(Bound {
            key,
            message: sess.message,
            mode: sess.mode,
            output_key: sess.output_key,
            signers: a.signers.clone(),
            undurable,
        })
    }

    /// Round 1: the seat's commitments, the same ones until the nonce is consumed.
    pub fn round1(&self, attempt: AttemptId, seat: ParticipantId) -> Result<CommitmentBytes, Error> {
        let key = {
            let s = self.lock();
            let b = Self::bound(&s, &attempt, Some(seat))?;
            if s.consumed.contains_key(&(attempt, seat)) {
                return Err(err(ErrorCode::NonceAlreadyConsumed, format!("seat {seat} in attempt {attempt}")));
            }
            if let Some(live) = s.nonces.get(&(attempt, seat)) {
                return commitment_bytes(live.commitments.clone());
            }
            b.key
        };
        // Fresh nonces from the OS CSPRNG, hedged with the share (FROST's `commit`). The key
        // package is unsealed without holding the state lock and wiped when it drops.
        let package = key.unseal(&self.custody, seat)?;
        let (nonces, commitments) = round1::commit(package.signing_share(), &mut rand_core::OsRng);
        drop(package);
        let commitments = commitments.serialize().map_err(|e| frost_err(ErrorCode::Internal, "commitments", e))?;
        let now = Instant::now();
        let mut s = self.lock();
        // Re-check under the lock: the attempt may have been aborted or used meanwhile.
        Self::bound(&s, &attempt, Some(seat))?;
        if s.consumed.contains_key(&(attempt, seat)) {
            return Err(err(ErrorCode::NonceAlreadyConsumed, format!("seat {seat} in attempt {attempt}")));
        }
        if let Some(live) = s.nonces.get(&(attempt, seat)) {
            // A concurrent round 1 won; ours is dropped (wiped) unused.
            return commitment_bytes(live.commitments.clone());
        }
        if s.nonces.len() >= self.limits.max_live_nonces {
            self.sweep_locked(&mut s, now);
            if s.nonces.len() >= self.limits.max_live_nonces {
                return Err(err(ErrorCode::RegistryFull, format!("{} live nonces", s.nonces.len())));
            }
        }
        s.nonces.insert((attempt, seat), LiveNonce { nonces, commitments: commitments.clone(), created: now });
        commitment_bytes(commitments)
    }

    /// Checks a package against the bound session and attempt. Consumes nothing.
    fn check_package(b: &Bound, package: &SigningPackage, mode: &TaprootMode) -> Result<(), Error> {
        if *mode != b.mode {
            return Err(err(
                ErrorCode::SigningPackageMismatch,
                "the request's Taproot mode differs from the session's",
            ));
        }
        if package.message().as_slice() != b.message {
            return Err(err(ErrorCode::SigningPackageMismatch, "the package's message differs from the session's"));
        }
        let expected: BTreeSet<Identifier> = b.signers.iter().map(|p| identifier(*p)).collect::<Result<_, _>>()?;
        let got: BTreeSet<Identifier> = package.signing_commitments().keys().copied().collect();
        if got != expected {
            return Err(err(
                ErrorCode::SigningPackageMismatch,
                format!("the package has {} signers; the attempt has exactly {}", got.len(), expected.len()),
            ));
        }
        Ok(())
    }

    /// Round 2: verify, consume durably, then sign and release.
    pub async fn round2(
        &self,
        attempt: AttemptId,
        seat: ParticipantId,
        mode: TaprootMode,
        package_bytes: &[u8],
    ) -> Result<SignatureShareBytes, Error> {
        let package = decode_package(package_bytes)?;
        let marker = (attempt, seat);
        let bound = {
            let mut s = self.lock();
            let b = Self::bound(&s, &attempt, Some(seat))?;
            if s.consumed.contains_key(&marker) {
                return Err(err(ErrorCode::NonceAlreadyConsumed, format!("seat {seat} in attempt {attempt}")));
            }
            let live = s
                .nonces
                .get(&marker)
                .ok_or_else(|| err(ErrorCode::NonceUnavailable, format!("seat {seat} in attempt {attempt}")))?;
            Self::check_package(&b, &package, &mode)?;
            let own = package
                .signing_commitments()
                .get(&identifier(seat)?)
                .map(SigningCommitments::serialize)
                .transpose()
                .map_err(|e| frost_err(ErrorCode::InvalidEncoding, "own commitment", e))?;
            if own.as_deref() != Some(live.commitments.as_slice()) {
                return Err(err(
                    ErrorCode::SigningPackageMismatch,
                    "this seat's commitment is not the one issued in round 1",
                ));
            }
            // Check-and-set under the one lock: from here on no other request can use this nonce.
            s.consumed.insert(marker, Marker::Pending);
            b
        };
        let records = bound.with_bindings(vec![Record::NonceConsumed { attempt, seat }]).await;
        let persisted = self.store.persist(records).await;
        let live = {
            let mut s = self.lock();
            match persisted {
                Ok(()) => {
                    bound.bindings_durable();
                    Self::settle(&mut s, marker);
                    s.nonces.remove(&marker)
                }
                Err(PersistError::NotWritten(e)) => {
                    s.consumed.remove(&marker);
                    return Err(err(
                        ErrorCode::StoreCommitFailed,
                        format!("consumed marker not written ({e}); nonce kept"),
                    ));
                }
                Err(PersistError::Unknown(e)) => {
                    Self::settle(&mut s, marker);
                    drop(s.nonces.remove(&marker));
                    return Err(err(
                        ErrorCode::StoreOutcomeUnknown,
                        format!("consumed marker outcome unknown ({e}); nonce wiped"),
                    ));
                }
            }
        };
        let live =
            live.ok_or_else(|| err(ErrorCode::NonceUnavailable, "the nonce was wiped before it could be used"))?;
        let key_package = bound.key.unseal(&self.custody, seat)?;
        let share = sign(&package, live, &key_package, &mode)?;
        SignatureShareBytes::new(share.serialize()).map_err(|e| err(ErrorCode::Internal, e))
    }

    /// Checks one share as it arrives.
    pub fn verify_share(
        &self,
        attempt: AttemptId,
        package_bytes: &[u8],
        share: &SignerShare,
    ) -> Result<ShareVerdict, Error> {
        let package = decode_package(package_bytes)?;
        let b = Self::bound(&self.lock(), &attempt, None)?;
        let mode = b.mode;
        Self::check_package(&b, &package, &mode)?;
        if !b.signers.contains(&share.signer) {
            return Ok(ShareVerdict::Indeterminate);
        }
        let Ok(sig_share) = SignatureShare::deserialize(share.signature_share.as_inner()) else {
            return Ok(ShareVerdict::Invalid);
        };
        let tweaked = self.tweaked(&b.key, &b.mode);
        let id = identifier(share.signer)?;
        let Some(verifying_share) = tweaked.verifying_shares().get(&id) else {
            return Ok(ShareVerdict::Indeterminate);
        };
        Ok(
            match frost_core::verify_signature_share(id, verifying_share, &sig_share, &package, tweaked.verifying_key())
            {
                Ok(()) => ShareVerdict::Valid,
                Err(_) => ShareVerdict::Invalid,
            },
        )
    }

    /// Aggregates the attempt's shares; records completion durably before releasing.
    pub async fn aggregate(
        &self,
        attempt: AttemptId,
        mode: TaprootMode,
        package_bytes: &[u8],
        shares: &[SignerShare],
    ) -> Result<AggregateOutcome, Error> {
        let package = decode_package(package_bytes)?;
        let bound = {
            let mut s = self.lock();
            let b = Self::bound(&s, &attempt, None)?;
            if s.completed.contains_key(&attempt) {
                return Err(err(
                    ErrorCode::AttemptCompleted,
                    format!("attempt {attempt} already signed; open a new attempt"),
                ));
            }
            Self::check_package(&b, &package, &mode)?;
            let given: BTreeSet<ParticipantId> = shares.iter().map(|s| s.signer).collect();
            if given.len() != shares.len() || given != b.signers {
                return Err(err(
                    ErrorCode::SigningPackageMismatch,
                    "exactly one share per signer of the attempt is required",
                ));
            }
            s.completed.insert(attempt, Marker::Pending);
            b
        };
        let result = self.aggregate_unlocked(&bound, &package, shares);
        let signature = match result {
            Ok(AggregateOutcome::Signed { signature, .. }) => signature,
            other => {
                self.lock().completed.remove(&attempt);
                return other;
            }
        };
        let record = Record::AttemptCompleted { attempt, message: bound.message, mode: bound.mode };
        let records = bound.with_bindings(vec![record]).await;
        let persisted = self.store.persist(records).await;
        let mut s = self.lock();
        let keep = |s: &mut State| {
            // An attempt aborted or closed meanwhile takes its markers with it.
            if s.attempts.contains_key(&attempt) {
                s.completed.insert(attempt, Marker::Kept);
            } else {
                s.completed.remove(&attempt);
            }
        };
        match persisted {
            Ok(()) => {
                bound.bindings_durable();
                keep(&mut s);
                Ok(AggregateOutcome::Signed { signature, output_key: bound.output_key })
            }
            Err(PersistError::NotWritten(e)) => {
                s.completed.remove(&attempt);
                Err(err(ErrorCode::StoreCommitFailed, format!("completed marker not written ({e})")))
            }
            Err(PersistError::Unknown(e)) => {
                keep(&mut s);
                Err(err(ErrorCode::StoreOutcomeUnknown, format!("completed marker outcome unknown ({e})")))
            }
        }
    }

    fn aggregate_unlocked(
        &self,
        b: &Bound,
        package: &SigningPackage,
        shares: &[SignerShare],
    ) -> Result<AggregateOutcome, Error> {
        let mut map = BTreeMap::new();
        let mut undecodable = Vec::new();
        for share in shares {
            match SignatureShare::deserialize(share.signature_share.as_inner()) {
                Ok(s) => {
                    map.insert(identifier(share.signer)?, s);
                }
                Err(_) => undecodable.push(share.signer),
            }
        }
        if !undecodable.is_empty() {
            return culprits(undecodable);
        }
        // The enclave's own key package, tweaked for the session: never one from the request.
        let tweaked = self.tweaked(&b.key, &b.mode);
        // Fast path without per-share checks; the result is verified (by FROST and again below),
        // so a bad share cannot slip through. Only if it fails are all shares checked, to name
        // every culprit (O(t) per share).
        let result = match frost_core::aggregate_custom(package, &map, &tweaked, CheaterDetection::Disabled) {
            Ok(signature) => Ok(signature),
            Err(_) => frost_core::aggregate_custom(package, &map, &tweaked, CheaterDetection::AllCheaters),
        };
        match result {
            Ok(signature) => {
                tweaked
                    .verifying_key()
                    .verify(&b.message, &signature)
                    .map_err(|e| frost_err(ErrorCode::SigningFailed, "self-verification", e))?;
                let bytes = signature.serialize().map_err(|e| frost_err(ErrorCode::Internal, "signature", e))?;
                let (r, s) = (bytes.get(..32), bytes.get(32..));
                match (r.and_then(|r| r.try_into().ok()), s.and_then(|s| s.try_into().ok()), bytes.len()) {
                    (Some(r), Some(s), 64) => {
                        Ok(AggregateOutcome::Signed { signature: Bip340Signature { r, s }, output_key: b.output_key })
                    }
                    _ => Err(err(ErrorCode::Internal, format!("signature encoding is {} bytes, not 64", bytes.len()))),
                }
            }
            Err(frost_core::Error::InvalidSignatureShare { culprits: ids }) => {
                let by_id: BTreeMap<Identifier, ParticipantId> =
                    b.key.participants.iter().map(|(p, i)| (*i, *p)).collect();
                culprits(ids.iter().filter_map(|i| by_id.get(i).copied()).collect())
            }
            Err(e) => Err(frost_err(ErrorCode::SigningFailed, "aggregate", e)),
        }
    }

    /// Closes a session (its signature exists, or it is abandoned): removes it with its attempts,
    /// live nonces (wiped) and markers, and records the closing. Idempotent. Safe for the same
    /// reason expiry is: the nonces are gone, so no old package can ever be signed again.
    pub fn close_session(&self, session: SessionId) {
        let known = {
            let mut s = self.lock();
            let known = s.sessions.contains_key(&session);
            Self::remove_sessions(&mut s, &BTreeSet::from([session]));
            known
        };
        if known {
            // Queued in order after the session's binding; its outcome is not awaited.
            drop(self.store.persist_detached(vec![Record::SessionExpired { session }]));
        }
    }

    /// Abandons an attempt: it is forgotten with its live nonces (wiped) and its settled
    /// markers. Safe for the reason closing is: a consumed nonce was taken by value and no longer
    /// exists, and the aborted attempt's other nonces are wiped here, so no nonce of this attempt
    /// can ever sign again; an attempt re-opened under the same id gets fresh nonces. Markers whose
    /// persist is in flight stay until it resolves (then [`Self::settle`] drops them).
    pub fn abort(&self, attempt: AttemptId) -> Result<u16, Error> {
        let mut s = self.lock();
        if s.attempts.remove(&attempt).is_none() {
            return Err(err(ErrorCode::UnknownAttempt, format!("attempt {attempt}")));
        }
        let before = s.nonces.len();
        s.nonces.retain(|(a, _), _| *a != attempt);
        let wiped = before - s.nonces.len();
        Self::drop_orphan_markers(&mut s);
        Ok(u16::try_from(wiped).unwrap_or(u16::MAX))
    }

    /// A consumed marker whose persist resolved: kept while its attempt exists, dropped with an
    /// attempt that was aborted or closed meanwhile.
    fn settle(s: &mut State, marker: Seat) {
        if s.attempts.contains_key(&marker.0) {
            s.consumed.insert(marker, Marker::Kept);
        } else {
            s.consumed.remove(&marker);
        }
    }

    /// Removes settled markers of attempts no longer known.
    fn drop_orphan_markers(s: &mut State) {
        let State { attempts, consumed, completed, .. } = s;
        consumed.retain(|(a, _), m| *m == Marker::Pending || attempts.contains_key(a));
        completed.retain(|a, m| *m == Marker::Pending || attempts.contains_key(a));
    }

    /// Expiry sweep: wipes nonces older than the nonce TTL (markers and keys untouched), and
    /// removes sessions older than the session TTL with their attempts, nonces and markers.
    /// Returns the number of nonces wiped.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut s = self.lock();
        self.sweep_locked(&mut s, now)
    }

    /// The sweep, then durably records the sessions it expired (best effort: a session whose
    /// expiry record is lost expires again after a reload, from its stored opening time).
    pub async fn sweep_and_record(&self, now: Instant) -> usize {
        let (wiped, expired) = {
            let mut s = self.lock();
            let before: BTreeSet<SessionId> = s.sessions.keys().copied().collect();
            let wiped = self.sweep_locked(&mut s, now);
            let expired: Vec<SessionId> = before.into_iter().filter(|id| !s.sessions.contains_key(id)).collect();
            (wiped, expired)
        };
        if !expired.is_empty() {
            let records = expired.into_iter().map(|session| Record::SessionExpired { session }).collect();
            if let Err(e) = self.store.persist(records).await {
                tracing::warn!(error = ?e, "session expiry not recorded");
            }
        }
        wiped
    }

    fn remove_sessions(s: &mut State, expired: &BTreeSet<SessionId>) {
        let gone: BTreeSet<AttemptId> =
            s.attempts.iter().filter(|(_, a)| expired.contains(&a.session)).map(|(id, _)| *id).collect();
        s.sessions.retain(|id, _| !expired.contains(id));
        s.attempts.retain(|id, _| !gone.contains(id));
        s.nonces.retain(|(a, _), _| !gone.contains(a));
        // Markers of pending persists stay until their persist resolves.
        s.consumed.retain(|(a, _), m| !gone.contains(a) || *m == Marker::Pending);
        s.completed.retain(|a, m| !gone.contains(a) || *m == Marker::Pending);
    }

    fn sweep_locked(&self, s: &mut State, now: Instant) -> usize {
        let before = s.nonces.len();
        let ttl = self.limits.nonce_ttl;
        s.nonces.retain(|_, n| now.saturating_duration_since(n.created) < ttl);
        let expired: BTreeSet<SessionId> = s
            .sessions
            .iter()
            .filter(|(_, sess)| now.saturating_duration_since(sess.created) >= self.limits.session_ttl)
            .map(|(id, _)| *id)
            .collect();
        if !expired.is_empty() {
            Self::remove_sessions(s, &expired);
        }
        before - s.nonces.len()
    }
}

fn key_record(k: &KeyRecord) -> Result<Record, Error> {
    Ok(Record::KeyAdded {
        key: k.key_id,
        public_key_package: k
            .public
            .serialize()
            .map_err(|e| frost_err(ErrorCode::Internal, "public key package", e))?,
        seats: k.seats.iter().map(|(p, s)| (*p, s.epoch, s.blob.clone())).collect(),
    })
}

fn culprits(mut list: Vec<ParticipantId>) -> Result<AggregateOutcome, Error> {
    list.sort();
    list.dedup();
    Ok(AggregateOutcome::InvalidShares {
        candidate_culprits: Signers::new(list).map_err(|e| err(ErrorCode::Internal, e))?,
    })
}

fn commitment_bytes(bytes: Vec<u8>) -> Result<CommitmentBytes, Error> {
    CommitmentBytes::new(bytes).map_err(|e| err(ErrorCode::Internal, e))
}

/// Signs with a nonce pair taken by value: it is dropped (wiped) when this returns.
fn sign(
    package: &SigningPackage,
    live: LiveNonce,
    key_package: &frost_secp256k1_tr::keys::KeyPackage,
    mode: &TaprootMode,
) -> Result<SignatureShare, Error> {
    let LiveNonce { nonces, .. } = live;
    let result = match mode {
        TaprootMode::Untweaked => round2::sign(package, &nonces, key_package),
        TaprootMode::Bip86 => round2::sign_with_tweak(package, &nonces, key_package, None),
        TaprootMode::ScriptTree { merkle_root } => {
            round2::sign_with_tweak(package, &nonces, key_package, Some(merkle_root))
        }
    };
    drop(nonces);
    result.map_err(|e| frost_err(ErrorCode::SigningFailed, "round 2", e))
}

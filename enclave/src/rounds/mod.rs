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
use crate::taproot::TweakCache;
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

mod audit;
mod expiry;
mod key_changes;
mod preprocess;
mod refresh_votes;
mod replay;
mod requests;
mod signing;
mod spending;

use crate::policy::Policy;
use spending::{Charge, Charged};

/// Bounds on the engine's registries.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open sessions.
    pub max_sessions: usize,
    /// Open attempts.
    pub max_attempts: usize,
    /// Live nonce pairs (bound to attempts and preprocessed together).
    pub max_live_nonces: usize,
    /// Of those, preprocessed pairs not yet used (so round 1 keeps room whatever is preprocessed).
    pub max_preprocessed: usize,
    /// Signing service requests bound (each for `REQUEST_TTL_SECS` after its acceptance).
    pub max_requests: usize,
    /// A live nonce pair older than this is wiped by the sweep.
    pub nonce_ttl: Duration,
    /// A session older than this is removed by the sweep with its attempts, nonces and markers.
    pub session_ttl: Duration,
    /// A DKG not finished within this long is dropped with its secrets.
    pub dkg_ttl: Duration,
    /// Least time between two completed key-encryption-key rotations (a host can ask for one at
    /// any time through its local socket; an unfinished rotation is always finished).
    pub kek_rotation_interval: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_sessions: 4096,
            max_attempts: 16384,
            max_live_nonces: 16384,
            max_preprocessed: 8192,
            max_requests: 65536,
            nonce_ttl: Duration::from_secs(frostgate_common::limits::NONCE_TTL_SECS),
            session_ttl: Duration::from_secs(frostgate_common::limits::SESSION_TTL_SECS),
            dkg_ttl: Duration::from_secs(frostgate_common::limits::DKG_TTL_SECS),
            kek_rotation_interval: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug)]
struct Session {
    key: KeyId,
    /// The key epoch it was opened under; after a refresh it is refused (`key_epoch_changed`).
    epoch: u64,
    message: [u8; 32],
    mode: TaprootMode,
    output_key: [u8; 32],
    created: Instant,
    opened_unix: u64,
    /// Whether the `SessionBound` record is durable (replayed, or its commit succeeded).
    durable: BindingState,
    /// What its first share charges to the policy window (none without window limits).
    charge: Option<Charge>,
    /// For a derived key: the child (path, tweak, public package), derived by the enclave.
    derived: Option<Arc<crate::derive::Derived>>,
    /// Records written with the binding when it goes with the first marker instead of a commit
    /// of its own ([`Write::WithFirstMarker`]): its approval's audit record.
    deferred: Vec<Record>,
    /// For a signing service request's session: the request's binding (`RequestBound`), written
    /// with the session's.
    request: Option<Record>,
}

/// When a binding (session or attempt) is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Write {
    /// Now, in a commit of its own (awaited for PSBT sessions, in the background otherwise).
    Now,
    /// With the first marker that depends on it, in that marker's commit (one commit per
    /// signer per signature on the preprocessed path). Nothing leaves before that commit.
    WithFirstMarker,
}

impl Session {
    /// The records that bind it: the binding, and for a derived key its path.
    fn records(&self, session: SessionId) -> Vec<Record> {
        let mut out = vec![self.record(session)];
        if let Some(d) = &self.derived {
            out.push(Record::SessionPath { session, path: d.path.clone() });
        }
        out.extend(self.request.clone());
        out
    }

    fn record(&self, session: SessionId) -> Record {
        let (key, message, mode, opened_unix) = (self.key, self.message, self.mode, self.opened_unix);
        match self.charge {
            None => Record::SessionBound { session, key, message, mode, opened_unix },
            Some(c) => Record::SessionCharged {
                session,
                key,
                message,
                mode,
                opened_unix,
                charge_id: c.id,
                sats: c.sats,
                policy_hash: c.policy,
            },
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
    /// The id it was issued under, when preprocessed.
    preprocessed: Option<frostgate_common::ids::CommitmentId>,
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
    /// Preprocessed pairs not yet adopted by an attempt (they count as live nonces).
    pool: HashMap<frostgate_common::ids::CommitmentId, preprocess::Pooled>,
    consumed: HashMap<Seat, Marker>,
    completed: HashMap<AttemptId, Marker>,
    /// Policy window charges by charge id.
    charges: HashMap<[u8; 32], Charged>,
    /// The latest charge time known (the window clock never goes below it).
    clock_high: u64,
    /// The audit trail as kept (bounded by `[audit]`).
    audit: audit::Trail,
    /// When the last key-encryption-key rotation completed (Unix seconds; 0: never).
    kek_rotated_unix: u64,
    /// Refreshed keys prepared (durable) and not yet committed, by key: the next epoch of a key
    /// in `keys`, which keeps signing at its own epoch until the commit.
    prepared: HashMap<KeyId, (frostgate_common::ids::DkgId, Arc<KeyRecord>)>,
    /// The refresh that put each key's current epoch in force (answers a repeated commit).
    committed_by: HashMap<KeyId, frostgate_common::ids::DkgId>,
    /// Refreshes this enclave voted it never prepared: never prepared after that (memory only: a
    /// restart loses every DKG, so none of them can be prepared afterwards either).
    abandoned: std::collections::HashSet<frostgate_common::ids::DkgId>,
    /// Signing service requests and what each is bound to.
    requests: HashMap<requests::RequestKey, requests::RequestBound>,
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
    /// Live nonce pairs bound to an attempt.
    pub live_nonces: usize,
    /// Preprocessed nonce pairs not yet used.
    pub preprocessed: usize,
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
    /// Tweaked public key packages by (key, mode).
    tweaked: TweakCache,
    /// The operator's spending policy.
    policy: Arc<Policy>,
    /// The audit trail's bounds and auditor.
    audit_rules: crate::audit::AuditRules,
    /// Held across a key's persist and its installation, so key changes apply in store order.
    key_change: tokio::sync::Mutex<()>,
}

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
    /// Its commit failed, or never ran (`Write::WithFirstMarker`): it goes with the next marker.
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
    /// The session, and what its first share charges.
    session: SessionId,
    charge: Option<Charge>,
    /// For a derived key: the child.
    derived: Option<Arc<crate::derive::Derived>>,
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
        Engine {
            custody,
            store,
            limits,
            state: Mutex::new(State::default()),
            tweaked: TweakCache::default(),
            policy: Arc::new(Policy::unrestricted()),
            audit_rules: crate::audit::AuditRules::default(),
            key_change: tokio::sync::Mutex::new(()),
        }
    }

    /// The same engine under `policy` (before it serves).
    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = Arc::new(policy);
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied marker: every mutation is a
        // single map operation. Keep serving from the map as it is.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The key's public package tweaked for `mode` (cached).
    fn tweaked(&self, key: &KeyRecord, mode: &TaprootMode) -> Arc<frost_secp256k1_tr::keys::PublicKeyPackage> {
        self.tweaked.get(key.key_id, key.epoch(), &key.public, mode)
    }

    /// Makes room for one more session (a sweep when full), or `registry_full`.
    fn room_for_session(&self, s: &mut State, now: Instant) -> Result<(), Error> {
        if s.sessions.len() >= self.limits.max_sessions {
            self.sweep_locked(s, now);
            if s.sessions.len() >= self.limits.max_sessions {
                return Err(err(ErrorCode::RegistryFull, format!("{} open sessions", s.sessions.len())));
            }
        }
        Ok(())
    }

    /// The bound session's (possibly derived) public package tweaked for its mode.
    fn tweaked_bound(&self, b: &Bound) -> Arc<frost_secp256k1_tr::keys::PublicKeyPackage> {
        match &b.derived {
            Some(d) => self.tweaked.get(d.key_id, b.key.epoch(), &d.public, &b.mode),
            None => self.tweaked(&b.key, &b.mode),
        }
    }

    /// Registry sizes.
    pub fn counts(&self) -> Counts {
        let s = self.lock();
        Counts {
            keys: s.keys.len(),
            sessions: s.sessions.len(),
            attempts: s.attempts.len(),
            live_nonces: s.nonces.len(),
            preprocessed: s.pool.len(),
            consumed_markers: s.consumed.len(),
            completed_markers: s.completed.len(),
        }
    }

    /// Whether the marker store takes records (signing is refused otherwise).
    pub fn ready(&self) -> Result<(), Error> {
        self.store.ready()
    }

    /// A key held here.
    pub fn key(&self, key: &KeyId) -> Result<Arc<KeyRecord>, Error> {
        self.lock().keys.get(key).cloned().ok_or_else(|| err(ErrorCode::UnknownKey, format!("key {key}")))
    }

    /// The custody token.
    pub fn custody(&self) -> &Custody {
        &self.custody
    }
}

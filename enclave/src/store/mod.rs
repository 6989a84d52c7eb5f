//! The host store, seen from the enclave: records are chained here (MAC chain under a
//! key derived in the HSM), committed by the host, and the chain head is anchored in the HSM.
//!
//! Invariants:
//! - [`ChainedStore::persist`] returns `Ok` only after the host acknowledged a durable commit AND
//!   the HSM anchor was advanced to the new head; only then may the caller release anything.
//! - Group commit: records that arrive while a commit is in flight share the next commit and the
//!   next anchor update.
//! - Outcome known-not-written: `NotWritten`, the head is unchanged. Outcome unknown (no ack,
//!   anchor failure): `Unknown`, and the store stops taking records (`store_not_loaded`) until the
//!   host streams its store again, which re-establishes the true head.
//! - A load adopts the host's records only if the whole chain verifies and its head equals the
//!   anchor or is exactly one commit ahead (then the anchor update is finished).

pub mod anchor;
pub mod chain;
pub mod faults;

use crate::custody::Custody;
use crate::markers::{MarkerStore, PersistError, PersistFuture, Record};
use chain::{Head, Loader, StoreKey};
use frostgate_common::channel::Channel;
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::protocol::StoreRecords;
use frostgate_common::protocol::{PersistRecords, StoreLoad, StoreRecord};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::oneshot;

/// How long the enclave waits for the host's acknowledgement.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// Most records in one `PersistRecords` message.
const CHUNK_RECORDS: usize = 256;
/// Most body bytes in one `PersistRecords` message (well under the frame limit).
const CHUNK_BYTES: usize = 512 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the host's store (at boot, or after an unknown commit outcome).
    NotLoaded,
    /// Verified and anchored; taking records.
    Ready,
    /// The last load failed verification (tampered, rolled back): refuse until a good load.
    Failed(ErrorCode),
}

struct Pending {
    records: Vec<Record>,
    /// A snapshot: committed alone, and records before it are deleted with its last chunk.
    snapshot: bool,
    done: oneshot::Sender<Result<(), PersistError>>,
}

struct Inner {
    phase: Phase,
    head: Head,
    anchor: Head,
    channel: Option<Channel>,
    queue: Vec<Pending>,
    committing: bool,
    /// The load that may become live.
    loader: Option<Loader>,
    /// A verify-only load (`store verify`): its own loader, so it cannot disturb a live load.
    verify_loader: Option<Loader>,
    commits: u64,
    committed_records: u64,
    since_snapshot: u64,
    last_snapshot: u64,
    compact_after: u64,
    next_snapshot_id: u64,
    /// Completed (non-verify) loads so far.
    generation: u64,
}

struct Shared {
    custody: Arc<Custody>,
    key: StoreKey,
    anchors: anchor::Cache,
    inner: Mutex<Inner>,
}

/// Commit counters, for measurements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitStats {
    /// Host commits (anchor updates) so far.
    pub commits: u64,
    /// Records committed so far.
    pub records: u64,
    /// The chain head's version.
    pub head_version: u64,
}

/// A completely verified load: its head and its records (empty for a verify-only load).
#[derive(Debug)]
pub struct Loaded {
    /// The verified head.
    pub head: Head,
    /// The records to replay.
    pub records: Vec<Record>,
    /// Which completed load this is ([`ChainedStore::adopt`] takes only the latest).
    pub generation: u64,
}

/// The result of one load chunk: records verified so far, and the load once complete.
#[derive(Debug)]
pub struct LoadProgress {
    /// Records verified so far.
    pub records: u64,
    /// Set on the last chunk of a successful load.
    pub done: Option<Loaded>,
}

/// The enclave's view of the host store.
#[derive(Clone)]
pub struct ChainedStore {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ChainedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChainedStore(..)")
    }
}

fn lock(s: &Shared) -> MutexGuard<'_, Inner> {
    s.inner.lock().unwrap_or_else(|p| p.into_inner())
}

impl ChainedStore {
    /// Derives the store key in the HSM and reads the anchor. The store starts not loaded.
    /// A snapshot compacts the store once `compact_after` records accumulated since the last.
    pub fn open(custody: Arc<Custody>, compact_after: u64) -> Result<Self, Error> {
        let key = StoreKey::new(custody.derive_store_key()?);
        // A missing or invalid anchor does not stop the process: the enclave answers and names
        // the fault (health, status) while refusing every load and every signature.
        let (anchor, phase) = match anchor::read(&custody, &key) {
            Ok(anchor) => (anchor.head, Phase::NotLoaded),
            Err(e) if matches!(e.code(), ErrorCode::StoreAnchorMissing | ErrorCode::StoreAnchorInvalid) => {
                tracing::error!(code = %e.code(), "{}", e.message());
                (Head::EMPTY, Phase::Failed(e.code()))
            }
            Err(e) => return Err(e),
        };
        let inner = Inner {
            phase,
            head: anchor,
            anchor,
            channel: None,
            queue: Vec::new(),
            committing: false,
            loader: None,
            verify_loader: None,
            commits: 0,
            committed_records: 0,
            since_snapshot: 0,
            last_snapshot: 0,
            compact_after,
            next_snapshot_id: 0,
            generation: 0,
        };
        Ok(ChainedStore {
            shared: Arc::new(Shared { custody, key, anchors: anchor::Cache::default(), inner: Mutex::new(inner) }),
        })
    }

    /// Commit counters.
    pub fn stats(&self) -> CommitStats {
        let i = lock(&self.shared);
        CommitStats { commits: i.commits, records: i.committed_records, head_version: i.head.version }
    }

    /// The anchored head's version.
    pub fn anchor_version(&self) -> u64 {
        lock(&self.shared).anchor.version
    }

    /// Takes one chunk of a load. On the last chunk of a successful load returns the verified
    /// records (for the engine to replay) and the head; the caller then calls [`Self::adopt`].
    pub fn load_chunk(&self, load: &StoreLoad) -> Result<LoadProgress, Error> {
        let mut i = lock(&self.shared);
        if let Phase::Failed(code) = i.phase {
            if matches!(code, ErrorCode::StoreAnchorMissing | ErrorCode::StoreAnchorInvalid) {
                // Re-read: an operator may have restored the token's anchor.
                match anchor::read(&self.shared.custody, &self.shared.key) {
                    Ok(anchor) => {
                        i.anchor = anchor.head;
                        i.head = anchor.head;
                        i.phase = Phase::NotLoaded;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        if !load.verify_only && i.phase == Phase::Ready {
            // Live: the store's connection carries its commits and this process's state is
            // authoritative. A stream now (a reload the host queued while the store was not
            // loaded) may have been read before a commit that has since been anchored, which
            // would look exactly like a rollback: it is neither judged nor adopted.
            i.loader = None;
            return Ok(LoadProgress { records: 0, done: None });
        }
        let slot = if load.verify_only { &mut i.verify_loader } else { &mut i.loader };
        if load.first {
            // The HSM's word, not memory's: an anchor update whose old object could not be
            // destroyed leaves the HSM ahead of this process's copy.
            let anchor = anchor::read(&self.shared.custody, &self.shared.key)?;
            *slot = Some(Loader::for_anchor(anchor.head.version));
        }
        let fail = |i: &mut Inner, e: Error| {
            if load.verify_only {
                i.verify_loader = None;
            } else {
                i.loader = None;
                i.phase = Phase::Failed(e.code());
            }
            e
        };
        let Some(loader) = slot.as_mut() else {
            return Err(Error::new(ErrorCode::UnexpectedMessage, "a store load must start with `first`"));
        };
        if let Err(e) = loader.push(&self.shared.key, load.records.as_inner()) {
            return Err(fail(&mut i, e));
        }
        let count = loader.count();
        if !load.last {
            return Ok(LoadProgress { records: count, done: None });
        }
        let Some(loader) = slot.take() else { return Ok(LoadProgress { records: count, done: None }) };
        let started_at = loader.anchor_version();
        let chain::Verified { head, records, successor_prev, ends_commit } = match loader.finish_with_successor() {
            Ok(x) => x,
            Err(e) => return Err(fail(&mut i, e)),
        };
        // Re-read the anchor: it is the HSM's word, not this process's memory.
        let anchor = match anchor::read(&self.shared.custody, &self.shared.key) {
            Ok(anchor) => anchor,
            Err(e) if matches!(e.code(), ErrorCode::StoreAnchorMissing | ErrorCode::StoreAnchorInvalid) => {
                return Err(fail(&mut i, e))
            }
            Err(e) => return Err(e),
        };
        if Some(anchor.head.version) != started_at {
            // A commit finished while the host streamed: its records may have been read before
            // the commit, so the stream may end behind the anchor without any rollback, and the
            // loader tracked the successor of a stale version. Not a verdict: load again.
            return Err(Error::new(ErrorCode::StoreNotLoaded, "the HSM anchor moved during the load; load again"));
        }
        let ahead = match chain::check_against_anchor(head, successor_prev, anchor.head) {
            Ok(ahead) => ahead,
            Err(e) => return Err(fail(&mut i, e)),
        };
        if let Err(e) = anchor.confirm(ahead && ends_commit) {
            return Err(fail(&mut i, e));
        }
        if load.verify_only {
            return Ok(LoadProgress {
                records: count,
                done: Some(Loaded { head, records: Vec::new(), generation: 0 }),
            });
        }
        if i.committing {
            return Err(Error::new(ErrorCode::StoreNotLoaded, "a commit is in flight; load again"));
        }
        // Take no records until `adopt` installs the loaded head and its channel.
        i.phase = Phase::NotLoaded;
        if ahead {
            anchor::finish(&self.shared.custody, &self.shared.key, anchor.head, head, &self.shared.anchors)?;
            tracing::info!(version = head.version, "finished an interrupted anchor update");
        }
        i.anchor = head;
        i.head = head;
        i.since_snapshot = count;
        i.generation += 1;
        let generation = i.generation;
        Ok(LoadProgress { records: count, done: Some(Loaded { head, records, generation }) })
    }

    /// Whether to compact: the records written since the last snapshot are at least the
    /// threshold and at least the last snapshot's size. So the store holds at most about twice
    /// the live state plus the threshold, and a large state does not compact on every sweep.
    pub fn needs_compaction(&self) -> bool {
        let i = lock(&self.shared);
        i.phase == Phase::Ready && i.since_snapshot >= i.compact_after.max(i.last_snapshot)
    }

    /// Queues `state` (the engine's whole durable state) as a snapshot and returns the wait for
    /// it; once its end is durable the host deletes every older record, and boot replays only
    /// the snapshot and what follows. Call while the engine's lock is held
    /// (`Engine::snapshot_then`): every record submitted after the state was taken is then
    /// queued after the snapshot, so its compaction cannot delete it.
    pub fn compact(&self, state: Vec<Record>) -> PersistFuture<'static> {
        let id = {
            let mut i = lock(&self.shared);
            i.next_snapshot_id += 1;
            i.head.version.wrapping_mul(1 << 16).wrapping_add(i.next_snapshot_id)
        };
        let mut records = Vec::with_capacity(state.len() + 2);
        records.push(Record::SnapshotBegin { id });
        records.extend(state);
        records.push(Record::SnapshotEnd { id });
        let submitted = self.submit(records, true);
        Box::pin(async move {
            submitted?
                .await
                .unwrap_or_else(|_| Err(PersistError::Unknown(Error::new(ErrorCode::Internal, "committer stopped"))))
        })
    }

    /// Makes a loaded store live on `channel` (the connection that streamed it), unless another
    /// load completed since this one (`generation`) or the store went live meanwhile (then this
    /// load's head may be older than the live one, and adopting it would fork the chain), or the
    /// connection has already ended.
    pub fn adopt(&self, channel: Channel, loaded: &Loaded) {
        let mut i = lock(&self.shared);
        if loaded.generation != i.generation || i.phase != Phase::NotLoaded || i.head != loaded.head {
            tracing::info!(head = loaded.head.version, "a superseded store load was not adopted");
            return;
        }
        // A connection that ended before this (its `detach` found another channel, or none)
        // would carry no commit: stay not loaded for the next connection's load.
        if channel.is_closed() {
            tracing::info!(head = loaded.head.version, "the store's connection ended before it was adopted");
            return;
        }
        i.channel = Some(channel);
        i.phase = Phase::Ready;
    }

    /// The connection that carried the store ended: take no records until the next load.
    pub fn detach(&self, channel: &Channel) {
        let mut i = lock(&self.shared);
        if i.channel.as_ref().is_some_and(|c| c.same_connection(channel)) {
            i.channel = None;
            if i.phase == Phase::Ready {
                i.phase = Phase::NotLoaded;
            }
            tracing::warn!(code = %ErrorCode::StoreNotLoaded, "the store's connection closed; waiting for a reload");
        }
    }

    fn fail_all(batch: Vec<Pending>, e: &PersistError) {
        for p in batch {
            let _ = p.done.send(Err(e.clone()));
        }
    }

    async fn commit_loop(shared: Arc<Shared>) {
        loop {
            let (batch, head, channel) = {
                let mut i = lock(&shared);
                if i.queue.is_empty() {
                    i.committing = false;
                    return;
                }
                // A snapshot is committed alone, so nothing interleaves with it.
                let take = if i.queue[0].snapshot {
                    1
                } else {
                    i.queue.iter().position(|p| p.snapshot).unwrap_or(i.queue.len())
                };
                let batch: Vec<Pending> = i.queue.drain(..take).collect();
                if i.phase != Phase::Ready {
                    drop(i);
                    Self::fail_all(batch, &PersistError::NotWritten(not_loaded()));
                    continue;
                }
                (batch, i.head, i.channel.clone())
            };
            let records: Vec<Record> = batch.iter().flat_map(|p| p.records.iter().cloned()).collect();
            let n = records.len() as u64;
            let snapshot = batch.first().is_some_and(|p| p.snapshot);
            match Self::commit(&shared, head, channel, &records, snapshot).await {
                Ok(new_head) => {
                    {
                        let mut i = lock(&shared);
                        i.head = new_head;
                        i.anchor = new_head;
                        i.commits += 1;
                        i.committed_records += n;
                        if snapshot {
                            i.since_snapshot = 0;
                            i.last_snapshot = n;
                        } else {
                            i.since_snapshot += n;
                        }
                    }
                    for p in batch {
                        let _ = p.done.send(Ok(()));
                    }
                }
                Err(e) => {
                    let refused_by_host =
                        matches!(&e, PersistError::NotWritten(e) if e.code() == ErrorCode::StoreCommitFailed);
                    if matches!(e, PersistError::Unknown(_)) || refused_by_host {
                        // The true head is unknown, or the host's store does not continue this
                        // head (e.g. a commit of a previous connection landed after this one's
                        // load): take nothing more until the host reloads, which re-establishes it.
                        lock(&shared).phase = Phase::NotLoaded;
                        tracing::warn!(code = %ErrorCode::StoreNotLoaded, "commit not acknowledged; waiting for a store reload");
                    }
                    Self::fail_all(batch, &e);
                }
            }
        }
    }

    async fn commit(
        shared: &Shared,
        head: Head,
        channel: Option<Channel>,
        records: &[Record],
        snapshot: bool,
    ) -> Result<Head, PersistError> {
        let (chained, new_head) = shared.key.chain(head, records).map_err(PersistError::NotWritten)?;
        let channel = channel.ok_or_else(|| PersistError::NotWritten(not_loaded()))?;
        let snapshot_start = chained.first().map(|r| r.version).filter(|_| snapshot);
        let chunks = chunks(chained);
        let count = chunks.len();
        for (index, chunk) in chunks.into_iter().enumerate() {
            let last = chunk.last().map(|r| r.version).unwrap_or(head.version);
            let records =
                StoreRecords::new(chunk).map_err(|e| PersistError::NotWritten(Error::new(ErrorCode::Internal, e)))?;
            // Older records go only in the transaction that makes the snapshot's end durable.
            let compact_before = if index + 1 == count { snapshot_start } else { None };
            let reply = channel.request(PersistRecords { records, compact_before }, Some(ACK_TIMEOUT)).await;
            match reply {
                Ok(ack) if ack.head_version == last => {}
                Ok(ack) => {
                    return Err(PersistError::Unknown(Error::new(
                        ErrorCode::UnexpectedMessage,
                        format!("host acknowledged head {} to a commit ending at {last}", ack.head_version),
                    )))
                }
                // The host says the transaction did not commit; nothing of this batch is durable
                // only if this was its first chunk.
                Err(e) if e.code() == ErrorCode::StoreCommitFailed && index == 0 => {
                    return Err(PersistError::NotWritten(e))
                }
                Err(e) => return Err(PersistError::Unknown(e)),
            }
        }
        faults::crash_point(faults::AFTER_ACK_BEFORE_ANCHOR);
        // `head` is the anchored head: a commit starts only after the previous one is anchored.
        anchor::update(&shared.custody, &shared.key, head, new_head, &shared.anchors).map_err(PersistError::Unknown)?;
        faults::crash_point(faults::AFTER_ANCHOR_BEFORE_RELEASE);
        Ok(new_head)
    }
}

fn not_loaded() -> Error {
    Error::new(ErrorCode::StoreNotLoaded, "the host's store is not loaded")
}

fn chunks(chained: Vec<StoreRecord>) -> Vec<Vec<StoreRecord>> {
    let mut out: Vec<Vec<StoreRecord>> = vec![Vec::new()];
    let mut bytes = 0;
    for r in chained {
        let len = r.body.as_inner().len() + 80;
        let cur = out.last_mut().map(|c| c.len()).unwrap_or(0);
        if cur > 0 && (cur >= CHUNK_RECORDS || bytes + len > CHUNK_BYTES) {
            out.push(Vec::new());
            bytes = 0;
        }
        bytes += len;
        if let Some(c) = out.last_mut() {
            c.push(r);
        }
    }
    out
}

impl ChainedStore {
    /// Queues records synchronously (FIFO with every other record) and returns the wait for
    /// their commit.
    fn submit(
        &self,
        records: Vec<Record>,
        snapshot: bool,
    ) -> Result<oneshot::Receiver<Result<(), PersistError>>, PersistError> {
        let shared = self.shared.clone();
        let (done, rx) = oneshot::channel();
        let lead = {
            let mut i = lock(&shared);
            if i.phase != Phase::Ready {
                return Err(PersistError::NotWritten(not_loaded()));
            }
            i.queue.push(Pending { records, snapshot, done });
            !std::mem::replace(&mut i.committing, true)
        };
        if lead {
            tokio::spawn(Self::commit_loop(shared));
        }
        Ok(rx)
    }

    async fn enqueue(&self, records: Vec<Record>, snapshot: bool) -> Result<(), PersistError> {
        let rx = self.submit(records, snapshot)?;
        rx.await.unwrap_or_else(|_| Err(PersistError::Unknown(Error::new(ErrorCode::Internal, "committer stopped"))))
    }
}

impl MarkerStore for ChainedStore {
    fn persist(&self, records: Vec<Record>) -> PersistFuture<'_> {
        Box::pin(self.enqueue(records, false))
    }

    fn persist_detached(&self, records: Vec<Record>) -> PersistFuture<'static> {
        // Queued now, so in order with every record submitted after this returns.
        match self.submit(records, false) {
            Ok(rx) => Box::pin(async move {
                rx.await.unwrap_or_else(|_| {
                    Err(PersistError::Unknown(Error::new(ErrorCode::Internal, "committer stopped")))
                })
            }),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    fn ready(&self) -> Result<(), Error> {
        match lock(&self.shared).phase {
            Phase::Ready => Ok(()),
            Phase::NotLoaded => Err(not_loaded()),
            Phase::Failed(code) => Err(Error::new(code, "the host's store failed verification; signing is refused")),
        }
    }
}

//! The service's workers: claim a request from the log, sign it through the cluster with the
//! coordinator (one [`Signing`] per key, kept open), and store its outcome.
//!
//! Invariants: every change to a request is made under its claim's lease epoch (a worker that
//! lost its claim writes nothing); `first_sent` is durable before the first signing request
//! leaves for a node; a request whose key material cannot be fetched (the cluster unreachable)
//! goes back to `pending` untouched, to be claimed again.

use super::changes::{Change, Changes};
use super::log::{ClaimAtAccept, Record};
use super::request::{ErrorView, NodeRefusal, Outcome, State, Target};
use super::store::RequestLog;
use crate::coordinator::signer::SignerClient;
use crate::coordinator::{psbt, Evidence, Reason, Settings, Signer, Signing};
use frostgate_common::error::{Error, ErrorCode, RecoveryClass};
use frostgate_common::ids::KeyId;
use frostgate_common::limits::REQUEST_TTL_SECS;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};

/// The workers' shared state.
pub struct Workers {
    /// The request log (every change to a request).
    pub log: RequestLog,
    nodes: Vec<Arc<SignerClient>>,
    threshold: u16,
    settings: Settings,
    owner: String,
    lease: Duration,
    /// One signing per key, opened once (outside the map's lock: a key whose nodes are slow
    /// delays only its own requests).
    signings: std::sync::Mutex<HashMap<KeyId, Arc<tokio::sync::OnceCell<Signing>>>>,
    /// Woken when a request is accepted.
    pub wake: Notify,
    /// The changes made here, announced per request (each wait hears its own).
    pub changes: Arc<Changes>,
    slots: Arc<Semaphore>,
    /// The requests a worker here runs, by (client, request id): their log position.
    running: std::sync::Mutex<HashMap<(String, String), i64>>,
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers").field("owner", &self.owner).finish_non_exhaustive()
    }
}

impl Workers {
    /// Workers over `log` and the cluster's `nodes`, at most `concurrency` signings at once,
    /// each claim leased for `lease` (renewed while it runs).
    pub fn new(
        log: RequestLog,
        nodes: Vec<Arc<SignerClient>>,
        threshold: u16,
        settings: Settings,
        concurrency: usize,
        lease: Duration,
    ) -> Arc<Workers> {
        let owner = hex::encode(crate::random_bytes::<8>());
        Arc::new(Workers {
            log,
            nodes,
            threshold,
            settings,
            owner,
            lease,
            signings: std::sync::Mutex::new(HashMap::new()),
            wake: Notify::new(),
            changes: Arc::default(),
            slots: Arc::new(Semaphore::new(concurrency.max(1))),
            running: std::sync::Mutex::new(HashMap::new()),
        })
    }

    fn lease_ms(&self) -> i64 {
        self.lease.as_millis() as i64
    }

    /// `record`'s request changed (read it back to see how).
    pub fn touched(&self, record: &Record) {
        let key = (record.client.clone(), record.submission.request_id.clone());
        self.changes.announce(&key, Change { stored: None });
    }

    /// Claims and runs requests until the process ends: as many at once as there are free
    /// slots, in one transaction; each runs once it has a slot (never more signings at once
    /// than slots).
    pub async fn run(self: Arc<Self>) {
        loop {
            // Claims as many as there are free slots, holding none while the claim commits (an
            // acceptance meanwhile finds them free and claims its request itself).
            match self.slots.clone().acquire_owned().await {
                Ok(free) => drop(free),
                Err(_) => return,
            }
            let (owner, lease, n) = (self.owner.clone(), self.lease_ms(), self.slots.available_permits().max(1));
            // Keys whose material is held: their requests are sent at once, marked by the claim.
            let ready: std::collections::HashSet<String> =
                self.signings().iter().filter(|(_, c)| c.initialized()).map(|(k, _)| k.to_string()).collect();
            match self.log.claim(&owner, lease, n, ready).await {
                Ok(claimed) => {
                    let all = claimed.len() == n;
                    for (record, takeover) in claimed {
                        if takeover {
                            tracing::warn!(seq = record.seq, "a request's lease expired: taken over");
                            super::metrics::global().takeover();
                        }
                        // Each takes the next free slot, ahead of later acceptances (the semaphore
                        // serves waiters first), before anything is claimed again; one that
                        // waited renews its claim first (a lost claim is not signed).
                        let permit = match self.slots.clone().try_acquire_owned() {
                            Ok(p) => p,
                            Err(_) => {
                                let Ok(p) = self.slots.clone().acquire_owned().await else { return };
                                match self.log.renew(record.seq, record.lease_epoch, lease).await {
                                    Ok(true) => {}
                                    Ok(false) => continue,
                                    Err(e) => {
                                        tracing::warn!(seq = record.seq, code = %e.code(), "claim not renewed: {}", e.message())
                                    }
                                }
                                p
                            }
                        };
                        self.start(record, permit);
                    }
                    if !all {
                        // Woken by a new request, or polled (a lease that expired elsewhere).
                        let _ = tokio::time::timeout(Duration::from_secs(1), self.wake.notified()).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(code = %e.code(), "request log: {}", e.message());
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// A free worker slot and the claim it makes at acceptance (`None`: every worker is busy).
    pub fn free_slot(&self, key: &str) -> Option<(tokio::sync::OwnedSemaphorePermit, ClaimAtAccept)> {
        let permit = self.slots.clone().try_acquire_owned().ok()?;
        let ready =
            key.parse::<KeyId>().ok().and_then(|k| self.signings().get(&k).map(|c| c.initialized())).unwrap_or(false);
        Some((permit, ClaimAtAccept { owner: self.owner.clone(), lease_ms: self.lease_ms(), ready }))
    }

    /// Runs a claimed request on the slot `permit`: in the running set from now (a wait that
    /// finds it there hears its outcome), announced as started.
    pub fn start(self: &Arc<Self>, record: Record, permit: tokio::sync::OwnedSemaphorePermit) {
        let running = Running::enter(self.clone(), &record);
        self.touched(&record);
        let me = self.clone();
        tokio::spawn(async move { me.run_one(record, permit, running).await });
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), i64>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a worker here runs `client`'s request `request_id`: it is then not final before
    /// that worker announces a change of it, and the announcement reaches every subscription
    /// made before this answer (the worker leaves this set first).
    pub fn running_here(&self, client: &str, request_id: &str) -> bool {
        self.running().contains_key(&(client.to_string(), request_id.to_string()))
    }

    fn signings(&self) -> std::sync::MutexGuard<'_, HashMap<KeyId, Arc<tokio::sync::OnceCell<Signing>>>> {
        self.signings.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The signer of `key`, opening its signing (the key's agreed material) once.
    async fn signer(&self, key: KeyId) -> Result<Signer, Error> {
        let cell = self.signings().entry(key).or_default().clone();
        let signing = cell.get_or_try_init(|| Signing::open(&self.nodes, &key, self.threshold, self.settings)).await?;
        Ok(signing.signer())
    }

    /// Sends every signing's queued closings (at shutdown; a signing still in use by a request
    /// sends them from its drop).
    pub async fn finish(&self) {
        let cells: Vec<_> = self.signings().drain().map(|(_, c)| c).collect();
        for cell in cells {
            if let Some(signing) = Arc::try_unwrap(cell).ok().and_then(tokio::sync::OnceCell::into_inner) {
                signing.finish().await;
            }
        }
    }

    /// Puts a claimed request back to `pending` (to be claimed again), then waits a moment.
    async fn back_to_pending(&self, record: &Record) {
        let (seq, epoch) = (record.seq, record.lease_epoch);
        let back = self.log.finish(seq, epoch, State::Pending, Outcome::default()).await;
        if let Err(e) = back {
            tracing::warn!(seq, code = %e.code(), "request log: {}", e.message());
        }
        self.touched(record);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    /// Signs `record` on the worker slot `permit`, then announces its change. The slot is free
    /// again before the announcement (the client that hears it and submits its next request
    /// finds the slot free), and the request has left the running set.
    async fn run_one(self: &Arc<Self>, record: Record, permit: tokio::sync::OwnedSemaphorePermit, running: Running) {
        let stored = self.run_claimed(&record).await;
        let key = running.key.clone();
        drop(running);
        drop(permit);
        // Waits answer with the record as stored, without reading it back.
        self.changes.announce(&key, Change { stored: stored.map(Arc::new) });
    }

    /// Signs a claimed request and stores its outcome: the record as stored when final.
    async fn run_claimed(self: &Arc<Self>, record: &Record) -> Option<Record> {
        let (seq, epoch) = (record.seq, record.lease_epoch);
        let (state, outcome) = match self.sign(record).await {
            Step::Done(State::Failed, outcome) if retrying(record, &outcome) => {
                let e = outcome.error.as_ref().map(|e| e.message.clone()).unwrap_or_default();
                tracing::warn!(seq, "signers unreachable: request back to pending, retried: {e}");
                self.back_to_pending(record).await;
                return None;
            }
            Step::NotSent(e) => {
                tracing::warn!(seq, code = %e.code(), "request back to pending: {}", e.message());
                self.back_to_pending(record).await;
                return None;
            }
            Step::Lost => return None,
            Step::Done(state, outcome) => (state, *outcome),
        };
        // Retried while the claim may hold (the epoch fences every try): an outcome lost to a
        // failed write would be signed again after a takeover.
        for attempt in 1..=OUTCOME_TRIES {
            match self.log.finish(seq, epoch, state, outcome.clone()).await {
                Ok(Some(stored)) => {
                    let now =
                        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
                    let seconds = (now as f64 - record.created_ms as f64) / 1000.0;
                    super::metrics::global().finished(record.submission.kind(), state, seconds);
                    return Some(stored);
                }
                // After a failed try, the write may have committed before its answer was lost.
                Ok(None) if attempt > 1 => {
                    let now = self.log.get(&record.client, &record.submission.request_id).await;
                    return now.ok().flatten().filter(|r| r.lease_epoch == epoch && r.state == state);
                }
                Ok(None) => {
                    tracing::warn!(seq, "request taken over before its outcome was stored");
                    return None;
                }
                Err(e) => {
                    tracing::warn!(seq, attempt, code = %e.code(), "request outcome not stored: {}", e.message());
                    tokio::time::sleep(Duration::from_millis(500 * attempt as u64)).await;
                }
            }
        }
        None
    }

    async fn sign(self: &Arc<Self>, record: &Record) -> Step {
        let body = match record.submission.validate() {
            Ok(b) => b,
            Err(e) => return Step::failed(&e),
        };
        // The enclaves refuse a request past its TTL; one that could expire while it is signed
        // (a PSBT's inputs one after another) is not started.
        if age_ms(record) > (REQUEST_TTL_SECS - START_MARGIN_SECS) as i64 * 1000 {
            let e = Error::new(
                ErrorCode::RequestExpired,
                format!("accepted more than {} s ago: submit a new request", REQUEST_TTL_SECS - START_MARGIN_SECS),
            );
            return Step::failed(&e);
        }
        let signer = match self.signer(body.key).await {
            Ok(s) => s,
            Err(e) if e.recovery_class() == RecoveryClass::Retry && young(record) => return Step::NotSent(e),
            Err(e) => return Step::failed(&e),
        };
        let (seq, epoch, lease) = (record.seq, record.lease_epoch, self.lease_ms());
        if !record.first_sent {
            match self.log.mark_sent(seq, epoch, lease).await {
                Ok(true) => {}
                Ok(false) => return Step::Lost,
                Err(e) => return Step::NotSent(e),
            }
        }
        // The lease is renewed while the signing runs, and only while it runs (the guard stops
        // it however the signing ends); a write error is retried, a lost claim ends it.
        let _renewal = {
            let (log, every) = (self.log.clone(), self.lease / 3);
            AbortOnDrop(tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    match log.renew(seq, epoch, lease).await {
                        Ok(true) | Err(_) => {}
                        Ok(false) => return,
                    }
                }
            }))
        };
        let (client, id) = (&record.client, &record.submission.request_id);
        let tag = match super::request::request_tag(client, id, record.created_ms, record.lease_epoch) {
            Ok(t) => t,
            Err(e) => return Step::failed(&e),
        };
        let step = match body.target {
            Target::Digest { .. } => {
                let Some(request) = body.digest_request(&tag) else { return Step::failed(&internal()) };
                match signer.sign(request).await {
                    Ok(s) => Step::Done(
                        State::Signed,
                        Box::new(Outcome {
                            signature: Some(s.signature),
                            output_key: Some(s.output_key),
                            signers: s.signers,
                            attempts: s.attempts,
                            ..Outcome::default()
                        }),
                    ),
                    Err((e, evidence)) => Step::refused_or_failed(&e, &evidence),
                }
            }
            Target::Psbt(mut signed) => match psbt::sign_inputs(&signer, &mut signed, &body.key, Some(&tag)).await {
                Ok(done) => {
                    // Finalized when every input is signed (inputs of other keys leave it partial).
                    let mut finalized = (*signed).clone();
                    let tx = psbt::finalize(&mut finalized).ok();
                    Step::Done(
                        State::Signed,
                        Box::new(Outcome {
                            psbt: Some(signed.to_string()),
                            tx: tx.as_ref().map(bitcoin::consensus::encode::serialize_hex),
                            txid: tx.as_ref().map(|t| t.compute_txid().to_string()),
                            inputs: done.inputs,
                            signers: done.signers,
                            attempts: done.attempts,
                            ..Outcome::default()
                        }),
                    )
                }
                Err((e, evidence)) => Step::refused_or_failed(&e, &evidence),
            },
        };
        step
    }
}

/// Stops a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How long after its acceptance a request whose signers were unreachable is still retried.
pub const RETRY_FOR: Duration = Duration::from_secs(600);

/// Whether a failed signing is retried: every signer was unreachable or silent (no refusal, no
/// invalid share: nothing to blame), and the request is younger than [`RETRY_FOR`]. It stays
/// not cancellable (a signing request may have reached a node).
fn retrying(record: &Record, outcome: &Outcome) -> bool {
    let code = outcome.error.as_ref().map(|e| e.code.as_str());
    let transient = matches!(code, Some("signing_failed" | "node_unavailable"))
        && outcome.refusals.is_empty()
        && outcome.unreachable_only;
    transient && young(record)
}

/// A request is started only this long before its TTL ends (see `sign`).
const START_MARGIN_SECS: u64 = 120;

/// How long ago `record` was accepted, ms.
fn age_ms(record: &Record) -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    now.saturating_sub(record.created_ms)
}

/// Whether `record` was accepted less than [`RETRY_FOR`] ago.
fn young(record: &Record) -> bool {
    age_ms(record) < RETRY_FOR.as_millis() as i64
}

fn internal() -> Error {
    Error::new(ErrorCode::Internal, "a digest request without its digest")
}

/// What a claimed request came to.
enum Step {
    /// Nothing was sent (the cluster unreachable): back to pending.
    NotSent(Error),
    /// The claim was lost (cancelled, or taken over): nothing to store.
    Lost,
    /// Final.
    Done(State, Box<Outcome>),
}

impl Step {
    fn failed(e: &Error) -> Step {
        Step::Done(State::Failed, Box::new(Outcome { error: Some(ErrorView::from(e)), ..Outcome::default() }))
    }

    /// A policy refusal by the nodes is `refused` with each node's reason; anything else `failed`.
    fn refused_or_failed(e: &Error, evidence: &[Evidence]) -> Step {
        let refusals: Vec<NodeRefusal> = evidence
            .iter()
            .filter(|ev| ev.reason == Reason::PolicyRefused)
            .map(|ev| NodeRefusal { node: ev.signer, reason: ev.message.clone().unwrap_or_default() })
            .collect();
        let state = match e.code() == ErrorCode::PolicyViolation || !refusals.is_empty() {
            true => State::Refused,
            false => State::Failed,
        };
        let unreachable_only = !evidence.is_empty()
            && evidence.iter().all(|ev| matches!(ev.reason, Reason::Unreachable | Reason::Timeout));
        let outcome = Outcome { error: Some(ErrorView::from(e)), refusals, unreachable_only, ..Outcome::default() };
        Step::Done(state, Box::new(outcome))
    }
}

/// How many times a worker tries to store an outcome.
const OUTCOME_TRIES: u32 = 4;

/// A request in the running set while this lives (left on any exit, a panic too).
struct Running {
    workers: Arc<Workers>,
    key: (String, String),
}

impl Running {
    fn enter(workers: Arc<Workers>, record: &Record) -> Self {
        let key = (record.client.clone(), record.submission.request_id.clone());
        workers.running().insert(key.clone(), record.seq);
        Running { workers, key }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.workers.running().remove(&self.key);
    }
}

//! Group commit on PostgreSQL: the submits, and the outcome writes, that arrive while a group of
//! their kind is being committed go out together next, each group as one statement and one
//! commit (one round trip and one fsync for many requests, as the SQLite log's writer does).
//!
//! Invariants: every write in a group is what it is alone: a submit runs `frostgate_submit`
//! (its client's lock, lookup, count, insert), an outcome is fenced by its own claim's
//! `lease_epoch`; a request is in at most one place of a group (a second write of it waits for
//! the next group); submits take their clients' locks in key order, so groups of several
//! instances cannot wait on each other in a circle (a deadlock PostgreSQL still detected would
//! fail its group: `store_unavailable`, nothing written); every caller is answered only after
//! the commit that holds its write, or with the error that failed the whole group. One group of
//! each kind is in flight per instance (measured: two in flight took more of the server's CPU
//! per request and were no faster).

use super::log::{unavailable, Record, Submitted};
use super::pg_rows::{chain, columns, existing_or_conflict_at, now_ms, record, record_at, timed, NewRow};
use super::request::State;
use deadpool_postgres::Pool;
use frostgate_common::error::{Error, ErrorCode};
use std::collections::HashSet;
use tokio::sync::{mpsc, oneshot};

/// One kind of write committed in groups.
pub(super) trait GroupWrite: Send + 'static {
    /// One caller's write.
    type Job: Send + 'static;
    /// What the caller hears once it is committed.
    type Answer: Send + 'static;
    /// What makes two writes the same request's (and orders a group).
    type Key: Ord + std::hash::Hash + Send;
    /// Most writes in one group.
    const MAX: usize;
    /// The job's key.
    fn key(job: &Self::Job) -> Self::Key;
    /// Writes the group (ordered by key) in one commit: an answer per job, in order; `Err`
    /// when nothing of it was committed (after the commit, an error is its row's alone).
    fn write(
        pool: &Pool,
        group: &[Self::Job],
    ) -> impl std::future::Future<Output = Result<Vec<Result<Self::Answer, Error>>, Error>> + Send;
}

type Waiting<W> = (<W as GroupWrite>::Job, oneshot::Sender<Result<<W as GroupWrite>::Answer, Error>>);

/// The writer of one kind of write for one instance (cheap to clone; its task ends with the
/// last clone).
pub(super) struct Grouped<W: GroupWrite> {
    jobs: mpsc::Sender<Waiting<W>>,
}

impl<W: GroupWrite> Clone for Grouped<W> {
    fn clone(&self) -> Self {
        Grouped { jobs: self.jobs.clone() }
    }
}

impl<W: GroupWrite> std::fmt::Debug for Grouped<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grouped").finish_non_exhaustive()
    }
}

/// Most submits in one group: one group in flight per instance, so at most this many of an
/// instance's submits are uncommitted at once (`postgres.rs`' lock-free margin counts on it).
pub(super) const MAX_SUBMITS: usize = 16;

/// Most writes of one kind waiting for their group: beyond, a write is refused at once
/// (`store_unavailable`) rather than queued behind writes that could not finish in time.
const QUEUED: usize = 4096;

/// The group writers' connections: one each.
pub(super) const CONNECTIONS: usize = 2;

/// Starts an instance's group writers on `pool` (of [`CONNECTIONS`]), on a thread and runtime of
/// their own: their round trips to the server never wait behind the tasks of the service's
/// runtime (signature checks, the API); the thread ends with the writers' last handle.
pub(super) fn start(pool: Pool) -> Result<(Grouped<Submits>, Grouped<Outcomes>), Error> {
    let (submits, submit_queue) = mpsc::channel(QUEUED);
    let (outcomes, outcome_queue) = mpsc::channel(QUEUED);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::new(ErrorCode::Internal, format!("request log runtime: {e}")))?;
    std::thread::Builder::new()
        .name("request-log-groups".into())
        .spawn(move || {
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                runtime.block_on(async move {
                    tokio::join!(run::<Submits>(pool.clone(), submit_queue), run::<Outcomes>(pool, outcome_queue));
                })
            }));
            if ran.is_err() {
                // Fail closed: an instance that accepts requests but can store nothing is
                // worse than one its supervisor restarts.
                tracing::error!("the request log's group writer panicked: stopping the service");
                std::process::abort();
            }
        })
        .map_err(|e| Error::new(ErrorCode::Internal, format!("request log writer: {e}")))?;
    Ok((Grouped { jobs: submits }, Grouped { jobs: outcomes }))
}

impl<W: GroupWrite> Grouped<W> {
    /// `job`, in the next group; answered once that group is committed (or failed).
    pub(super) async fn write(&self, job: W::Job) -> Result<W::Answer, Error> {
        let stopped = || unavailable("the request log's group writer stopped");
        let (answer, answered) = oneshot::channel();
        self.jobs.try_send((job, answer)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                unavailable(format!("the request log is overloaded: {QUEUED} writes are waiting"))
            }
            mpsc::error::TrySendError::Closed(_) => stopped(),
        })?;
        answered.await.map_err(|_| stopped())?
    }
}

/// Takes what has arrived (up to `W::MAX`, one write per request), commits it, answers; repeats.
async fn run<W: GroupWrite>(pool: Pool, mut queue: mpsc::Receiver<Waiting<W>>) {
    let mut waiting: Vec<Waiting<W>> = Vec::new();
    loop {
        if waiting.is_empty() {
            match queue.recv().await {
                Some(job) => waiting.push(job),
                None => return,
            }
        }
        while waiting.len() < W::MAX * 4 {
            match queue.try_recv() {
                Ok(job) => waiting.push(job),
                Err(_) => break,
            }
        }
        let (mut group, mut later, mut keys) = (Vec::new(), Vec::new(), HashSet::new());
        // A write whose caller gave up (its operation timed out) is not made.
        for job in waiting.drain(..).filter(|(_, answer)| !answer.is_closed()) {
            if group.len() < W::MAX && keys.insert(W::key(&job.0)) {
                group.push(job);
            } else {
                later.push(job);
            }
        }
        waiting = later;
        group.sort_by_key(|(job, _)| W::key(job));
        let (jobs, answers): (Vec<W::Job>, Vec<_>) = group.into_iter().unzip();
        let written = timed(W::write(&pool, &jobs)).await;
        let written = match written {
            Ok(each) if each.len() != answers.len() => {
                Err(Error::new(ErrorCode::Internal, "request log: a group answered another number of rows"))
            }
            other => other,
        };
        if let Err(e) = &written {
            tracing::warn!(code = %e.code(), "request log group not committed: {}", e.message());
        }
        match written {
            Ok(each) => {
                for (answer, r) in answers.into_iter().zip(each) {
                    let _ = answer.send(r);
                }
            }
            Err(e) => {
                for answer in answers {
                    let _ = answer.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Submits far from their clients' bounds (`frostgate_submit`, migration V2, for each).
pub(super) struct Submits;

/// A submit's answer: `None` when its client is near its bound (nothing written: the caller
/// submits under the client's exclusive lock instead).
pub(super) type SubmitAnswer = Option<Submitted>;

/// One submit: the row, the client's bound and the margin the function keeps from it.
pub(super) struct SubmitJob {
    pub(super) row: std::sync::Arc<NewRow>,
    pub(super) max_open: i64,
    pub(super) margin: i64,
}

/// Each row of the arrays through `frostgate_submit`, in order (a volatile function: each call
/// sees the rows the calls before it wrote).
const SUBMIT_GROUP: &str = "SELECT a.i, f.* FROM unnest($1::TEXT[], $2::TEXT[], $3::BYTEA[], $4::TEXT[], $5::TEXT[],
         $6::TEXT[], $7::BIGINT[], $8::TEXT[], $9::BIGINT[], $10::BOOLEAN[], $11::BOOLEAN[], $12::BIGINT[],
         $13::BIGINT[]) WITH ORDINALITY
       AS a(client, request_id, hash, body, key, kind, now, owner, until, ready, claiming, max_open, margin, i),
     LATERAL frostgate_submit(a.client, a.request_id, a.hash, a.body, a.key, a.kind, a.now, a.owner, a.until,
         a.ready, a.claiming, a.max_open, a.margin) AS f
     ORDER BY a.i";

impl GroupWrite for Submits {
    type Job = SubmitJob;
    type Answer = SubmitAnswer;
    type Key = (String, String);
    const MAX: usize = MAX_SUBMITS;

    fn key(job: &SubmitJob) -> (String, String) {
        (job.row.client.clone(), job.row.request_id.clone())
    }

    async fn write(pool: &Pool, group: &[SubmitJob]) -> Result<Vec<Result<SubmitAnswer, Error>>, Error> {
        let column = |f: fn(&SubmitJob) -> &str| group.iter().map(f).collect::<Vec<&str>>();
        let (clients, ids) = (column(|j| &j.row.client), column(|j| &j.row.request_id));
        let (bodies, keys, kinds, owners) =
            (column(|j| &j.row.body), column(|j| &j.row.key), column(|j| j.row.kind), column(|j| &j.row.owner));
        let hashes: Vec<&[u8]> = group.iter().map(|j| j.row.hash.as_slice()).collect();
        let number = |f: fn(&SubmitJob) -> i64| group.iter().map(f).collect::<Vec<i64>>();
        let (nows, untils) = (number(|j| j.row.now), number(|j| j.row.until));
        let (maxes, margins) = (number(|j| j.max_open), number(|j| j.margin));
        let flag = |f: fn(&SubmitJob) -> bool| group.iter().map(f).collect::<Vec<bool>>();
        let (ready, claiming) = (flag(|j| j.row.ready), flag(|j| j.row.claiming));
        let c = pool.get().await.map_err(|e| unavailable(chain(&e)))?;
        let statement = c.prepare_cached(SUBMIT_GROUP).await.map_err(unavailable)?;
        let rows = c
            .query(
                &statement,
                &[
                    &clients, &ids, &hashes, &bodies, &keys, &kinds, &nows, &owners, &untils, &ready, &claiming,
                    &maxes, &margins,
                ],
            )
            .await
            .map_err(unavailable)?;
        // Committed: whatever fails from here is the error of its row alone.
        let mut answers: Vec<Option<Result<SubmitAnswer, Error>>> = group.iter().map(|_| None).collect();
        for row in &rows {
            let Some((slot, job)) = row
                .try_get::<_, i64>(0)
                .ok()
                .and_then(|i| usize::try_from(i - 1).ok())
                .and_then(|i| answers.get_mut(i).zip(group.get(i)))
            else {
                continue;
            };
            *slot = Some(match row.try_get::<_, String>(1).map_err(unavailable).as_deref() {
                Ok("accepted") => record_at(row, 2).map(|r| Some(Submitted::Accepted(r))),
                Ok("existing") => existing_or_conflict_at(row, 2, &job.row.hash, &job.row.request_id).map(Some),
                Ok(_) => Ok(None),
                Err(e) => Err(e.clone()),
            });
        }
        Ok(answers
            .into_iter()
            .map(|a| a.unwrap_or_else(|| Err(unavailable("request log: the submit's answer was lost"))))
            .collect())
    }
}

/// Outcomes: a request's final state (or back to pending) under its claim.
pub(super) struct Outcomes;

/// One outcome: `None` puts the request back to pending without one.
pub(super) struct OutcomeJob {
    pub(super) seq: i64,
    pub(super) epoch: i64,
    pub(super) state: State,
    pub(super) outcome: Option<String>,
}

/// Every row of the group whose claim still holds takes its state and outcome; the rows written
/// come back.
const FINISH_GROUP: &str = concat!(
    "UPDATE sign_requests SET state = u.u_state, outcome = u.u_outcome, updated_ms = $5,
         lease_owner = NULL, lease_until_ms = 0
     FROM unnest($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[]) AS u(u_seq, u_epoch, u_state, u_outcome)
     WHERE seq = u.u_seq AND lease_epoch = u.u_epoch AND state = 'running' RETURNING ",
    columns!()
);

impl GroupWrite for Outcomes {
    type Job = OutcomeJob;
    /// The record as stored, or `None` if the claim was lost.
    type Answer = Option<Record>;
    type Key = i64;
    const MAX: usize = 256;

    fn key(job: &OutcomeJob) -> i64 {
        job.seq
    }

    async fn write(pool: &Pool, group: &[OutcomeJob]) -> Result<Vec<Result<Option<Record>, Error>>, Error> {
        let seqs: Vec<i64> = group.iter().map(|j| j.seq).collect();
        let epochs: Vec<i64> = group.iter().map(|j| j.epoch).collect();
        let states: Vec<&str> = group.iter().map(|j| j.state.name()).collect();
        let outcomes: Vec<Option<&str>> = group.iter().map(|j| j.outcome.as_deref()).collect();
        let c = pool.get().await.map_err(|e| unavailable(chain(&e)))?;
        let statement = c.prepare_cached(FINISH_GROUP).await.map_err(unavailable)?;
        let rows = c.query(&statement, &[&seqs, &epochs, &states, &outcomes, &now_ms()]).await.map_err(unavailable)?;
        // Committed: a row that does not decode is the error of its request alone.
        let mut written = std::collections::HashMap::with_capacity(rows.len());
        for row in &rows {
            if let Ok(seq) = row.try_get::<_, i64>(0) {
                written.insert(seq, record(row));
            }
        }
        Ok(group.iter().map(|j| written.remove(&j.seq).transpose()).collect())
    }
}

//! Group commit on PostgreSQL: the submits and the outcome writes that arrive while a group is
//! being committed (and, when many are writing, some that arrive just after:
//! [`super::pacing`]) go out together next, each kind as one statement, both in one transaction
//! sent at once (one round trip and one fsync for many requests, as the SQLite log's writer
//! does).
//!
//! Invariants: every write in a group is what it is alone: a submit runs `frostgate_submit`
//! (its client's lock, lookup, count, insert), an outcome is fenced by its own claim's
//! `lease_epoch`; a request is in at most one place of a group (a second write of it waits for
//! the next group); submits take their clients' locks in key order, so groups of several
//! instances cannot wait on each other in a circle (a deadlock PostgreSQL still detected would
//! fail its group: `store_unavailable`, nothing written); every caller is answered only after
//! the commit that holds its write, or with the error that failed its part (a statement the
//! server refuses fails its kind's part alone: the other kind's, rolled back with it, is written
//! again on its own). One group is in flight per instance
//! (measured: two in flight took more of the server's CPU per request and were no faster; one
//! commit for both kinds takes less than one for each).

use super::log::{unavailable, Record, Submitted};
use super::pacing::{Pacing, Wait};
use super::pg_rows::{chain, columns, existing_or_conflict_at, now_ms, record, record_at, timed, NewRow};
use super::request::State;
use deadpool_postgres::{GenericClient, Pool};
use frostgate_common::error::{Error, ErrorCode};
use std::collections::HashSet;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Statement};

/// One kind of write committed in groups.
pub(super) trait GroupWrite: Send + 'static {
    /// One caller's write.
    type Job: Send + Sync + 'static;
    /// What the caller hears once it is committed.
    type Answer: Send + 'static;
    /// What makes two writes the same request's (and orders a group).
    type Key: Ord + std::hash::Hash + Send;
    /// Most writes in one group.
    const MAX: usize;
    /// The group's statement, over one array per column.
    const SQL: &'static str;
    /// The job's key.
    fn key(job: &Self::Job) -> Self::Key;
    /// The statement's parameters for `group` (ordered by key).
    fn params(group: &[Self::Job]) -> Vec<Box<dyn ToSql + Sync + Send + '_>>;
    /// An answer per job, in order, from the rows the committed statement returned (an error
    /// here is its row's alone).
    fn answers(rows: &[Row], group: &[Self::Job]) -> Vec<Result<Self::Answer, Error>>;
}

type Waiting<W> = (<W as GroupWrite>::Job, oneshot::Sender<Result<<W as GroupWrite>::Answer, Error>>);

/// The writer of one kind of write for one instance (cheap to clone; the writers' task ends
/// with the last clone of both kinds).
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

/// Most submits in one group: with at most [`GROUP_SLOTS`] groups uncommitted at once, at most
/// `GROUP_SLOTS * MAX_SUBMITS` lock-free submits are (`postgres.rs`' margin counts on it).
pub(super) const MAX_SUBMITS: usize = 16;

/// Most writes of one kind waiting for their group: beyond, a write is refused at once
/// (`store_unavailable`) rather than queued behind writes that could not finish in time.
const QUEUED: usize = 4096;

/// The group writer's connections (one in use at a time; a spare while one is re-made).
pub(super) const CONNECTIONS: usize = 2;

/// Starts an instance's group writer on `pool` (of [`CONNECTIONS`]), on a thread and runtime of
/// its own: its round trips to the server never wait behind the tasks of the service's runtime
/// (signature checks, the API); the thread ends with the writers' last handle.
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
                runtime.block_on(run(pool, Queue::new(submit_queue), Queue::new(outcome_queue)))
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

/// One kind's writes waiting for a group.
struct Queue<W: GroupWrite> {
    queue: mpsc::Receiver<Waiting<W>>,
    waiting: Vec<Waiting<W>>,
    closed: bool,
}

/// One kind's part of a group: its jobs (ordered by key) and their callers.
struct Part<W: GroupWrite> {
    jobs: Vec<W::Job>,
    answers: Vec<oneshot::Sender<Result<W::Answer, Error>>>,
}

impl<W: GroupWrite> Queue<W> {
    fn new(queue: mpsc::Receiver<Waiting<W>>) -> Self {
        Queue { queue, waiting: Vec::new(), closed: false }
    }

    /// A write received, or `None`: every handle of this kind is gone.
    fn received(&mut self, job: Option<Waiting<W>>) {
        match job {
            Some(job) => self.waiting.push(job),
            None => self.closed = true,
        }
    }

    /// Whether this kind can take more writes now (its handles live, within its look-ahead).
    fn takes_more(&self) -> bool {
        !self.closed && self.waiting.len() < Self::LOOK_AHEAD
    }

    /// How many of the writes waiting could join the next group, at most.
    fn ready(&self) -> usize {
        self.waiting.len().min(W::MAX)
    }

    /// Most writes taken ahead of their group.
    const LOOK_AHEAD: usize = W::MAX * 4;

    /// Takes what has arrived (a bounded look ahead).
    fn arrived(&mut self) {
        while self.waiting.len() < Self::LOOK_AHEAD {
            match self.queue.try_recv() {
                Ok(job) => self.waiting.push(job),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.closed = true;
                    break;
                }
            }
        }
    }

    /// The next part: up to `W::MAX` writes, one per request (a second write of a request
    /// waits for the next group); a write whose caller gave up (its operation timed out) is
    /// not made.
    fn part(&mut self) -> Part<W> {
        let (mut group, mut later, mut keys) = (Vec::new(), Vec::new(), HashSet::new());
        for job in self.waiting.drain(..).filter(|(_, answer)| !answer.is_closed()) {
            if group.len() < W::MAX && keys.insert(W::key(&job.0)) {
                group.push(job);
            } else {
                later.push(job);
            }
        }
        self.waiting = later;
        group.sort_by_key(|(job, _)| W::key(job));
        let (jobs, answers) = group.into_iter().unzip();
        Part { jobs, answers }
    }
}

impl<W: GroupWrite> Part<W> {
    /// Answers every caller: its row's answer, or the error that failed its part.
    fn answer(self, written: Result<Vec<Result<W::Answer, Error>>, Error>) {
        let written = match written {
            Ok(each) if each.len() != self.answers.len() => {
                Err(Error::new(ErrorCode::Internal, "request log: a group answered another number of rows"))
            }
            other => other,
        };
        match written {
            Ok(each) => {
                for (answer, r) in self.answers.into_iter().zip(each) {
                    let _ = answer.send(r);
                }
            }
            Err(e) => {
                for answer in self.answers {
                    let _ = answer.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Takes what has arrived of both kinds and, while `wait` says to wait for more, what arrives
/// after (each kind within its look-ahead bound; no wait once neither kind can take more).
async fn gather<A: GroupWrite, B: GroupWrite>(a: &mut Queue<A>, b: &mut Queue<B>, wait: Wait) {
    let began = tokio::time::Instant::now();
    a.arrived();
    b.arrived();
    while wait.more(a.ready() + b.ready(), began.elapsed()) && (a.takes_more() || b.takes_more()) {
        tokio::select! {
            job = a.queue.recv(), if a.takes_more() => a.received(job),
            job = b.queue.recv(), if b.takes_more() => b.received(job),
            () = tokio::time::sleep_until(began + wait.window) => break,
        }
    }
}

/// Takes what has arrived of both kinds, commits it as one group, answers; repeats until both
/// kinds' handles are gone.
async fn run(pool: Pool, mut submits: Queue<Submits>, mut outcomes: Queue<Outcomes>) {
    let mut pacing = Pacing::default();
    loop {
        if submits.waiting.is_empty() && outcomes.waiting.is_empty() {
            // Waits for either kind; a kind whose handles are all gone is waited for no more.
            tokio::select! {
                job = submits.queue.recv(), if !submits.closed => submits.received(job),
                job = outcomes.queue.recv(), if !outcomes.closed => outcomes.received(job),
                else => return,
            }
            continue;
        }
        // Many writing: the group waits a moment for more (one commit for them all).
        gather(&mut submits, &mut outcomes, pacing.wait()).await;
        let (s, o) = (submits.part(), outcomes.part());
        if s.jobs.is_empty() && o.jobs.is_empty() {
            // Every caller waiting gave up: nothing to write.
            continue;
        }
        pacing.committed(s.jobs.len() + o.jobs.len());
        let (s_rows, o_rows) = match timed(write(&pool, &s.jobs, &o.jobs)).await {
            Ok(rows) => rows,
            Err(e) => (Err(e.clone()), Err(e)),
        };
        for e in [s_rows.as_ref().err(), o_rows.as_ref().err()].into_iter().flatten() {
            tracing::warn!(code = %e.code(), "request log group not committed: {}", e.message());
        }
        let s_written = s_rows.map(|rows| Submits::answers(&rows, &s.jobs));
        let o_written = o_rows.map(|rows| Outcomes::answers(&rows, &o.jobs));
        s.answer(s_written);
        o.answer(o_written);
    }
}

/// A part's rows as committed, or the error that failed it (nothing of it committed, or, for a
/// lost connection, not known).
type Rows = Result<Vec<Row>, Error>;

/// The parameters as the client takes them.
fn refs<'a>(params: &'a [Box<dyn ToSql + Sync + Send + '_>]) -> Vec<&'a (dyn ToSql + Sync)> {
    params.iter().map(|b| b.as_ref() as &(dyn ToSql + Sync)).collect()
}

/// One statement on its own (committed as it ends).
async fn query(c: &deadpool_postgres::Object, statement: &Statement, params: &[&(dyn ToSql + Sync)]) -> Rows {
    c.query(statement, params).await.map_err(unavailable)
}

/// A statement the server refused itself (not one it skipped because the transaction had
/// already failed).
fn failed_here(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|d| *d.code() != SqlState::IN_FAILED_SQL_TRANSACTION)
}

/// Writes a group: each kind's part as one statement; a part alone commits as its statement,
/// both together in one transaction whose four messages leave at once (one round trip, one
/// commit). A part whose statement the server refused fails alone: the other, rolled back with
/// it or never run, is written again on its own. `Err` when neither part could be written.
async fn write(pool: &Pool, s: &[SubmitJob], o: &[OutcomeJob]) -> Result<(Rows, Rows), Error> {
    let c = pool.get().await.map_err(|e| unavailable(chain(&e)))?;
    let (s_params, o_params) = (Submits::params(s), Outcomes::params(o));
    let (s_refs, o_refs) = (refs(&s_params), refs(&o_params));
    let none = || Ok(Vec::new());
    match (s.is_empty(), o.is_empty()) {
        (true, true) => Ok((none(), none())),
        (false, true) => {
            let statement = c.prepare_cached(Submits::SQL).await.map_err(unavailable)?;
            Ok((query(&c, &statement, &s_refs).await, none()))
        }
        (true, false) => {
            let statement = c.prepare_cached(Outcomes::SQL).await.map_err(unavailable)?;
            Ok((none(), query(&c, &statement, &o_refs).await))
        }
        (false, false) => {
            let (s_statement, o_statement) = (
                c.prepare_cached(Submits::SQL).await.map_err(unavailable)?,
                c.prepare_cached(Outcomes::SQL).await.map_err(unavailable)?,
            );
            // Polled in this order, each sends its message at its first poll: all four are
            // queued before any answer is read. A failed statement aborts the transaction, and
            // COMMIT then rolls it back: committed only when all four succeeded.
            let (begin, s_rows, o_rows, commit) = tokio::join!(
                biased;
                c.batch_execute("BEGIN"),
                c.query(&s_statement, &s_refs),
                c.query(&o_statement, &o_refs),
                c.batch_execute("COMMIT"),
            );
            match (begin, s_rows, o_rows, commit) {
                (Ok(()), Ok(s_rows), Ok(o_rows), Ok(())) => Ok((Ok(s_rows), Ok(o_rows))),
                // The submits refused; the outcomes never ran.
                (Ok(()), Err(e), Err(_), Ok(())) if failed_here(&e) => {
                    Ok((Err(unavailable(e)), query(&c, &o_statement, &o_refs).await))
                }
                // The outcomes refused; the submits rolled back with them.
                (Ok(()), Ok(_), Err(e), Ok(())) if failed_here(&e) => {
                    Ok((query(&c, &s_statement, &s_refs).await, Err(unavailable(e))))
                }
                (begin, s_rows, o_rows, commit) => {
                    let first = begin.err().or(s_rows.err()).or(o_rows.err()).or(commit.err());
                    Err(first.map_or_else(|| unavailable("a group failed"), unavailable))
                }
            }
        }
    }
}

/// Submits far from their clients' bounds (`frostgate_submit`, migrations V2, V3, V5, for each).
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

/// Submit groups uncommitted at once over every instance of one log: each holds one of these
/// slots (a transaction-level advisory lock, `(GROUP_SLOT_KEY, 1..=GROUP_SLOTS)`) until it ends.
pub(super) const GROUP_SLOTS: usize = 8;
/// The slots' first key ("fgrp"): the two-key lock space, apart from the clients' locks.
const GROUP_SLOT_KEY: i32 = 0x6667_7270;

/// A group slot first; then each row of the arrays through `frostgate_submit`, in order (a
/// volatile function: each call sees the rows the calls before it wrote). Without a free slot
/// (more groups in flight than the margin allows for: more instances than slots, or a group
/// whose caller timed out still running) every row's margin is its bound: `near_bound`, and
/// each submit takes the exclusive path. The slot is taken before any row: every row's margin
/// reads it.
const SUBMIT_GROUP: &str = "WITH slot AS MATERIALIZED (
         SELECT EXISTS (SELECT 1 FROM generate_series(1, $14::INT) AS n
                        WHERE pg_try_advisory_xact_lock($15::INT, n) LIMIT 1) AS held)
     SELECT a.i, f.* FROM slot, unnest($1::TEXT[], $2::TEXT[], $3::BYTEA[], $4::TEXT[], $5::TEXT[],
         $6::TEXT[], $7::BIGINT[], $8::TEXT[], $9::BIGINT[], $10::BOOLEAN[], $11::BOOLEAN[], $12::BIGINT[],
         $13::BIGINT[]) WITH ORDINALITY
       AS a(client, request_id, hash, body, key, kind, now, owner, until, ready, claiming, max_open, margin, i),
     LATERAL frostgate_submit(a.client, a.request_id, a.hash, a.body, a.key, a.kind, a.now, a.owner, a.until,
         a.ready, a.claiming, a.max_open, CASE WHEN slot.held THEN a.margin ELSE a.max_open END) AS f
     ORDER BY a.i";

impl GroupWrite for Submits {
    type Job = SubmitJob;
    type Answer = SubmitAnswer;
    type Key = (String, String);
    const MAX: usize = MAX_SUBMITS;

    const SQL: &'static str = SUBMIT_GROUP;

    fn key(job: &SubmitJob) -> (String, String) {
        (job.row.client.clone(), job.row.request_id.clone())
    }

    fn params(group: &[SubmitJob]) -> Vec<Box<dyn ToSql + Sync + Send + '_>> {
        let text = |f: fn(&SubmitJob) -> &str| -> Box<dyn ToSql + Sync + Send + '_> {
            Box::new(group.iter().map(f).collect::<Vec<&str>>())
        };
        let number = |f: fn(&SubmitJob) -> i64| -> Box<dyn ToSql + Sync + Send + '_> {
            Box::new(group.iter().map(f).collect::<Vec<i64>>())
        };
        let flag = |f: fn(&SubmitJob) -> bool| -> Box<dyn ToSql + Sync + Send + '_> {
            Box::new(group.iter().map(f).collect::<Vec<bool>>())
        };
        let hashes: Vec<&[u8]> = group.iter().map(|j| j.row.hash.as_slice()).collect();
        vec![
            text(|j| &j.row.client),
            text(|j| &j.row.request_id),
            Box::new(hashes),
            text(|j| &j.row.body),
            text(|j| &j.row.key),
            text(|j| j.row.kind),
            number(|j| j.row.now),
            text(|j| &j.row.owner),
            number(|j| j.row.until),
            flag(|j| j.row.ready),
            flag(|j| j.row.claiming),
            number(|j| j.max_open),
            number(|j| j.margin),
            Box::new(GROUP_SLOTS as i32),
            Box::new(GROUP_SLOT_KEY),
        ]
    }

    fn answers(rows: &[Row], group: &[SubmitJob]) -> Vec<Result<SubmitAnswer, Error>> {
        let mut answers: Vec<Option<Result<SubmitAnswer, Error>>> = group.iter().map(|_| None).collect();
        for row in rows {
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
        answers
            .into_iter()
            .map(|a| a.unwrap_or_else(|| Err(unavailable("request log: the submit's answer was lost"))))
            .collect()
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
/// come back. The state checked is a parameter ($6, `running`), so each row is found by its
/// primary key, not in a partial index of open requests (see `postgres::RUNNING`).
pub(super) const FINISH_GROUP: &str = concat!(
    "UPDATE sign_requests SET state = u.u_state, outcome = u.u_outcome, updated_ms = $5,
         lease_owner = NULL, lease_until_ms = 0
     FROM unnest($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[]) AS u(u_seq, u_epoch, u_state, u_outcome)
     WHERE seq = u.u_seq AND lease_epoch = u.u_epoch AND state = $6 RETURNING ",
    columns!()
);

impl GroupWrite for Outcomes {
    type Job = OutcomeJob;
    /// The record as stored, or `None` if the claim was lost.
    type Answer = Option<Record>;
    type Key = i64;
    const MAX: usize = 256;

    const SQL: &'static str = FINISH_GROUP;

    fn key(job: &OutcomeJob) -> i64 {
        job.seq
    }

    fn params(group: &[OutcomeJob]) -> Vec<Box<dyn ToSql + Sync + Send + '_>> {
        vec![
            Box::new(group.iter().map(|j| j.seq).collect::<Vec<i64>>()),
            Box::new(group.iter().map(|j| j.epoch).collect::<Vec<i64>>()),
            Box::new(group.iter().map(|j| j.state.name()).collect::<Vec<&str>>()),
            Box::new(group.iter().map(|j| j.outcome.as_deref()).collect::<Vec<Option<&str>>>()),
            Box::new(now_ms()),
            Box::new(State::Running.name()),
        ]
    }

    fn answers(rows: &[Row], group: &[OutcomeJob]) -> Vec<Result<Option<Record>, Error>> {
        let mut written = std::collections::HashMap::with_capacity(rows.len());
        for row in rows {
            if let Ok(seq) = row.try_get::<_, i64>(0) {
                written.insert(seq, record(row));
            }
        }
        group.iter().map(|j| written.remove(&j.seq).transpose()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::time::Instant;

    type Sender = mpsc::Sender<Waiting<Outcomes>>;

    /// A queue of outcome writes (the kind needs no server to be queued) and its handle.
    fn queue() -> (Sender, Queue<Outcomes>) {
        let (tx, rx) = mpsc::channel(QUEUED);
        (tx, Queue::new(rx))
    }

    async fn send(tx: &Sender, seq: i64) {
        let (answer, _) = oneshot::channel();
        let job = OutcomeJob { seq, epoch: 1, state: State::Signed, outcome: None };
        tx.send((job, answer)).await.expect("queued");
    }

    fn seqs(q: &Queue<Outcomes>) -> Vec<i64> {
        q.waiting.iter().map(|(j, _)| j.seq).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_wait_a_group_is_what_has_arrived() {
        let ((ta, mut a), (tb, mut b)) = (queue(), queue());
        send(&ta, 1).await;
        send(&tb, 2).await;
        let began = Instant::now();
        gather(&mut a, &mut b, Wait::NONE).await;
        assert_eq!((seqs(&a), seqs(&b), began.elapsed()), (vec![1], vec![2], Duration::ZERO));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_ends_when_the_group_holds_its_count_or_at_its_window() {
        let ((ta, mut a), (tb, mut b)) = (queue(), queue());
        send(&ta, 1).await;
        let later = tokio::spawn(async move {
            for seq in [2, 3, 4] {
                tokio::time::sleep(Duration::from_millis(10)).await;
                send(&tb, seq).await;
            }
            tb
        });
        let began = Instant::now();
        gather(&mut a, &mut b, Wait { window: Duration::from_secs(1), writes: 3 }).await;
        assert_eq!((seqs(&a), seqs(&b)), (vec![1], vec![2, 3]), "both kinds count, up to the count");
        assert_eq!(began.elapsed(), Duration::from_millis(20), "not the window");
        let tb = later.await.expect("sender");
        // Nothing more comes: the window ends the wait (its handle still alive).
        let (ta2, mut c) = queue();
        send(&ta2, 9).await;
        let began = Instant::now();
        gather(&mut c, &mut b, Wait { window: Duration::from_millis(3), writes: 10 }).await;
        assert_eq!((seqs(&c), seqs(&b)), (vec![9], vec![2, 3, 4]));
        assert_eq!(began.elapsed(), Duration::from_millis(3));
        drop((ta, tb, ta2));
    }

    #[tokio::test(start_paused = true)]
    async fn no_wait_once_neither_kind_can_take_more() {
        // Both kinds' handles gone: nothing can come.
        let ((ta, mut a), (tb, mut b)) = (queue(), queue());
        send(&ta, 1).await;
        drop((ta, tb));
        let began = Instant::now();
        gather(&mut a, &mut b, Wait { window: Duration::from_secs(1), writes: 10 }).await;
        assert_eq!((seqs(&a), began.elapsed()), (vec![1], Duration::ZERO));
        assert!(a.closed && b.closed);
        // One kind at its look-ahead and the other closed: the look-ahead holds, no wait.
        let ((ta, mut a), (tb, mut b)) = (queue(), queue());
        for seq in 0..(Queue::<Outcomes>::LOOK_AHEAD as i64 + 10) {
            send(&ta, seq).await;
        }
        drop(tb);
        let began = Instant::now();
        gather(&mut a, &mut b, Wait { window: Duration::from_secs(1), writes: 10_000 }).await;
        assert_eq!((a.waiting.len(), began.elapsed()), (Queue::<Outcomes>::LOOK_AHEAD, Duration::ZERO));
        drop(ta);
    }
}

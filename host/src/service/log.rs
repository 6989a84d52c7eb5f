//! The request log: every accepted request, its state and outcome, durable before it is
//! answered (SQLite: one instance; the schema's migrations in `host/migrations/sqlite`, applied
//! at open by refinery).
//!
//! Invariants: a request is found by (client, request id) only, so a client sees and cancels
//! only its own; one transaction checks and inserts (the same id with the same body answers the
//! stored request, with another body `request_conflict`); a worker changes a request only under
//! the lease epoch of its claim (a fencing token: a worker whose claim was taken over changes
//! nothing); a request may be cancelled only while no signing request can have reached a node
//! (`first_sent` is set, under the lease, before the first one is sent).

use super::request::{Outcome, RequestView, State, Submission};
use frostgate_common::error::{Error, ErrorCode};
use rusqlite::{params, Connection, OptionalExtension, Row};
use std::path::Path;
use std::sync::{Arc, Mutex};

mod embedded {
    refinery::embed_migrations!("migrations/sqlite");
}

/// A stored request.
#[derive(Debug, Clone)]
pub struct Record {
    /// Its position in the log (paging, claim order).
    pub seq: i64,
    /// The client.
    pub client: String,
    /// The submission.
    pub submission: Submission,
    /// The state.
    pub state: State,
    /// The outcome (empty until final).
    pub outcome: Outcome,
    /// Accepted at, ms.
    pub created_ms: i64,
    /// Changed at, ms.
    pub updated_ms: i64,
    /// The fencing token of the current claim.
    pub lease_epoch: i64,
    /// Whether a signing request may have reached a node.
    pub first_sent: bool,
}

impl Record {
    /// As the API answers it.
    pub fn view(&self) -> RequestView {
        RequestView {
            request_id: self.submission.request_id.clone(),
            state: self.state,
            key: self.submission.key.to_ascii_lowercase(),
            kind: self.submission.kind(),
            labels: self.submission.labels.clone(),
            created_at_ms: self.created_ms,
            updated_at_ms: self.updated_ms,
            outcome: self.outcome.clone(),
        }
    }
}

/// What a submission did.
#[derive(Debug, Clone)]
pub enum Submitted {
    /// A new request.
    Accepted(Record),
    /// The same request again: the stored one, in whatever state.
    Existing(Record),
}

/// A worker free when a request is accepted: it claims the request in the accepting commit (one
/// commit less per request), unless older requests are pending (they go first).
#[derive(Debug, Clone)]
pub struct ClaimAtAccept {
    /// The worker's owner name.
    pub owner: String,
    /// The lease, ms.
    pub lease_ms: i64,
    /// Whether the key's material is held (the request is then marked sent: it leaves at once).
    pub ready: bool,
}

/// A page of a client's requests.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this state.
    pub state: Option<State>,
    /// Only this key (hex).
    pub key: Option<String>,
    /// After this position (the previous page's token).
    pub after: i64,
    /// At most this many.
    pub limit: usize,
}

pub(super) fn unavailable(e: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::StoreUnavailable, format!("request log: {e}"))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// A record's columns, in the order [`record`] reads them (a macro: statements are literals,
/// parsed once per connection from its statement cache).
macro_rules! columns {
    () => {
        "seq, client, body, state, outcome, created_ms, updated_ms, lease_epoch, first_sent"
    };
}

/// Runs `sql` (parsed once per connection: the connection's statement cache).
fn execute(conn: &Connection, sql: &str, p: impl rusqlite::Params) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(p)
}

/// The one row `sql` answers, if any (the statement parsed once per connection).
fn query_opt<T>(
    conn: &Connection,
    sql: &str,
    p: impl rusqlite::Params,
    f: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Option<T>> {
    conn.prepare_cached(sql)?.query_row(p, f).optional()
}

fn record(row: &Row<'_>) -> rusqlite::Result<Record> {
    let body: String = row.get(2)?;
    let state: String = row.get(3)?;
    let outcome: Option<String> = row.get(4)?;
    let bad = |what: &str| rusqlite::Error::InvalidColumnType(0, what.into(), rusqlite::types::Type::Text);
    Ok(Record {
        seq: row.get(0)?,
        client: row.get(1)?,
        submission: serde_json::from_str(&body).map_err(|_| bad("body"))?,
        state: State::from_name(&state).ok_or_else(|| bad("state"))?,
        outcome: match outcome {
            Some(o) => serde_json::from_str(&o).map_err(|_| bad("outcome"))?,
            None => Outcome::default(),
        },
        created_ms: row.get(5)?,
        updated_ms: row.get(6)?,
        lease_epoch: row.get(7)?,
        first_sent: row.get::<_, i64>(8)? != 0,
    })
}

/// The SQLite request log.
#[derive(Debug, Clone)]
pub struct SqliteLog {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteLog {
    /// Opens (creating) the log at `path` and applies the migrations.
    pub fn open(path: &Path) -> Result<SqliteLog, Error> {
        let mut conn = Connection::open(path).map_err(unavailable)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(unavailable)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(unavailable)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(unavailable)?;
        embedded::migrations::runner().run(&mut conn).map_err(|e| unavailable(format!("migrations: {e}")))?;
        Ok(SqliteLog { conn: Arc::new(Mutex::new(conn)) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` in one transaction of its own (committed when it succeeds); the service writes
    /// through [`super::writer::GroupWriter`] instead.
    pub fn write<T>(&self, f: impl FnOnce(&Writes<'_>) -> Result<T, Error>) -> Result<T, Error> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(unavailable)?;
        let t = f(&Writes(&tx))?;
        tx.commit().map_err(unavailable)?;
        Ok(t)
    }

    /// `client`'s request `request_id`.
    pub fn get(&self, client: &str, request_id: &str) -> Result<Option<Record>, Error> {
        let sql = concat!("SELECT ", columns!(), " FROM sign_requests WHERE client = ?1 AND request_id = ?2");
        query_opt(&self.lock(), sql, params![client, request_id], record).map_err(unavailable)
    }

    /// A page of `client`'s requests, oldest first.
    pub fn list(&self, client: &str, f: &Filter) -> Result<Vec<Record>, Error> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(concat!(
                "SELECT ",
                columns!(),
                " FROM sign_requests WHERE client = ?1 AND seq > ?2
                 AND (?3 IS NULL OR state = ?3) AND (?4 IS NULL OR key = ?4) ORDER BY seq LIMIT ?5"
            ))
            .map_err(unavailable)?;
        let key = f.key.as_ref().map(|k| k.to_ascii_lowercase());
        let rows = stmt
            .query_map(params![client, f.after, f.state.map(State::name), key, f.limit as i64], record)
            .map_err(unavailable)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)
    }

    /// How many requests are open (pending, running), by state: read from the claim index, so
    /// it costs the work in flight, however long the log grows.
    pub fn open_counts(&self) -> Result<Vec<(State, u64)>, Error> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(OPEN_COUNTS).map_err(unavailable)?;
        let rows = stmt
            .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))
            .map_err(unavailable)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(unavailable)?;
        Ok(rows.into_iter().filter_map(|(s, n)| Some((State::from_name(&s)?, n as u64))).collect())
    }
}

/// The open requests by state (both [`SqliteLog::open_counts`] and the PostgreSQL log's).
pub const OPEN_COUNTS: &str =
    "SELECT state, COUNT(*) FROM sign_requests WHERE state IN ('pending', 'running') GROUP BY state";

/// The log's writes, inside a transaction: [`SqliteLog::write`] (one transaction each) or
/// [`super::writer::GroupWriter::write`] (many writers' operations committed together, each atomic on its own).
#[derive(Debug)]
pub struct Writes<'a>(pub(super) &'a Connection);

impl Writes<'_> {
    /// Stores a new request of `client`, or answers the stored one (same body), or refuses
    /// (`request_conflict`: another body under the id; `too_many_in_flight`: the client already
    /// has `max_open` requests not final).
    pub fn submit(&self, client: &str, s: &Submission, max_open: usize) -> Result<Submitted, Error> {
        let tx = self.0;
        let sql =
            concat!("SELECT ", columns!(), ", body_sha256 FROM sign_requests WHERE client = ?1 AND request_id = ?2");
        let existing =
            query_opt(tx, sql, params![client, s.request_id], |row| Ok((record(row)?, row.get::<_, Vec<u8>>(9)?)))
                .map_err(unavailable)?;
        if let Some((r, hash)) = existing {
            if hash != s.body_sha256() {
                return Err(Error::new(
                    ErrorCode::RequestConflict,
                    format!("request {} exists with another body", s.request_id),
                ));
            }
            return Ok(Submitted::Existing(r));
        }
        let open: i64 = query_opt(
            tx,
            "SELECT COUNT(*) FROM sign_requests WHERE client = ?1 AND state IN ('pending', 'running')",
            params![client],
            |row| row.get(0),
        )
        .map_err(unavailable)?
        .unwrap_or(0);
        if open as usize >= max_open {
            return Err(Error::new(
                ErrorCode::TooManyInFlight,
                format!("this client has {open} requests pending or running (at most {max_open})"),
            ));
        }
        let now = now_ms();
        let body = serde_json::to_string(s).map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
        execute(
            tx,
            "INSERT INTO sign_requests (client, request_id, body_sha256, body, key, kind, state, created_ms, updated_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7, ?7)",
            params![client, s.request_id, s.body_sha256().to_vec(), body, s.key.to_ascii_lowercase(), s.kind().name(), now],
        )
        .map_err(unavailable)?;
        let seq = tx.last_insert_rowid();
        Ok(Submitted::Accepted(Record {
            seq,
            client: client.into(),
            submission: s.clone(),
            state: State::Pending,
            outcome: Outcome::default(),
            created_ms: now,
            updated_ms: now,
            lease_epoch: 0,
            first_sent: false,
        }))
    }

    /// Claims the just-accepted request `seq` for `c` when no older request is pending: the
    /// claimed record, or `None` (it stays pending, for the workers' claims).
    pub fn claim_accepted(&self, seq: i64, c: &ClaimAtAccept) -> Result<Option<Record>, Error> {
        let now = now_ms();
        let sql = concat!(
            "UPDATE sign_requests SET state = 'running', lease_owner = ?2, lease_until_ms = ?3,
             lease_epoch = lease_epoch + 1, updated_ms = ?4, first_sent = MAX(first_sent, ?5)
             WHERE seq = ?1 AND state = 'pending'
             AND NOT EXISTS (SELECT 1 FROM sign_requests WHERE state = 'pending' AND seq < ?1) RETURNING ",
            columns!()
        );
        query_opt(self.0, sql, params![seq, c.owner, now + c.lease_ms, now, i64::from(c.ready)], record)
            .map_err(unavailable)
    }

    /// Cancels `client`'s request while no signing request can have reached a node
    /// (`request_not_cancellable` after; a cancelled one answers as it is).
    pub fn cancel(&self, client: &str, request_id: &str) -> Result<Record, Error> {
        let conn = self.0;
        let changed = execute(
            conn,
            "UPDATE sign_requests SET state = 'cancelled', updated_ms = ?3, lease_owner = NULL
             WHERE client = ?1 AND request_id = ?2 AND state IN ('pending', 'running') AND first_sent = 0",
            params![client, request_id, now_ms()],
        )
        .map_err(unavailable)?;
        let sql = concat!("SELECT ", columns!(), " FROM sign_requests WHERE client = ?1 AND request_id = ?2");
        let r = query_opt(conn, sql, params![client, request_id], record)
            .map_err(unavailable)?
            .ok_or_else(|| Error::new(ErrorCode::RequestUnknown, format!("no request {request_id}")))?;
        if changed == 0 && r.state != State::Cancelled {
            return Err(Error::new(
                ErrorCode::RequestNotCancellable,
                format!("request {request_id} is {}: a signing request may have reached a node", r.state.name()),
            ));
        }
        Ok(r)
    }

    /// Claims up to `n` requests for `owner` until `lease_ms` from now, in one transaction: each
    /// a pending one, or a running one whose lease expired (its worker died); the client with the
    /// fewest running requests first (counting those just claimed), then the oldest. A claim's
    /// epoch is the record's new `lease_epoch`; the flag says whether it was taken over from
    /// another claim. A request of a key in `ready` (its worker holds the key's material and
    /// sends at once) is marked `first_sent` in the same commit.
    pub fn claim(
        &self,
        owner: &str,
        lease_ms: i64,
        n: usize,
        ready: &std::collections::HashSet<String>,
    ) -> Result<Vec<(Record, bool)>, Error> {
        let tx = self.0;
        let now = now_ms();
        let mut out = Vec::new();
        while out.len() < n {
            let next: Option<(i64, String, String)> = query_opt(
                tx,
                "SELECT seq, state, key FROM sign_requests AS r
                     WHERE state = 'pending' OR (state = 'running' AND lease_until_ms < ?1)
                     ORDER BY (SELECT COUNT(*) FROM sign_requests AS o
                               WHERE o.client = r.client AND o.state = 'running' AND o.lease_until_ms >= ?1), seq
                     LIMIT 1",
                params![now],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .map_err(unavailable)?;
            let Some((seq, was, key)) = next else { break };
            let sql = concat!(
                "UPDATE sign_requests SET state = 'running', lease_owner = ?2, lease_until_ms = ?3,
                 lease_epoch = lease_epoch + 1, updated_ms = ?4, first_sent = MAX(first_sent, ?5) WHERE seq = ?1
                 RETURNING ",
                columns!()
            );
            let r =
                query_opt(tx, sql, params![seq, owner, now + lease_ms, now, i64::from(ready.contains(&key))], record)
                    .map_err(unavailable)?
                    .ok_or_else(|| unavailable("a claimed request vanished"))?;
            out.push((r, was == State::Running.name()));
        }
        Ok(out)
    }

    /// Under the claim `epoch`: a signing request is about to be sent (no cancel after), and the
    /// lease runs `lease_ms` from now. False if the claim was lost (taken over or cancelled).
    pub fn mark_sent(&self, seq: i64, epoch: i64, lease_ms: i64) -> Result<bool, Error> {
        let now = now_ms();
        let changed = execute(
            self.0,
            "UPDATE sign_requests SET first_sent = 1, lease_until_ms = ?3, updated_ms = ?4
             WHERE seq = ?1 AND lease_epoch = ?2 AND state = 'running'",
            params![seq, epoch, now + lease_ms, now],
        )
        .map_err(unavailable)?;
        Ok(changed == 1)
    }

    /// Under the claim `epoch`: extends the lease. False if the claim was lost.
    pub fn renew(&self, seq: i64, epoch: i64, lease_ms: i64) -> Result<bool, Error> {
        let changed = execute(
            self.0,
            "UPDATE sign_requests SET lease_until_ms = ?3 WHERE seq = ?1 AND lease_epoch = ?2 AND state = 'running'",
            params![seq, epoch, now_ms() + lease_ms],
        )
        .map_err(unavailable)?;
        Ok(changed == 1)
    }

    /// Under the claim `epoch`: the final state and outcome (or back to pending, with no outcome,
    /// when nothing was sent and the cluster was unreachable); the record as stored, or `None` if
    /// the claim was lost.
    pub fn finish(&self, seq: i64, epoch: i64, state: State, outcome: &Outcome) -> Result<Option<Record>, Error> {
        let text = serde_json::to_string(outcome).map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
        let outcome = (state != State::Pending).then_some(text);
        let sql = concat!(
            "UPDATE sign_requests SET state = ?3, outcome = ?4, updated_ms = ?5, lease_owner = NULL,
             lease_until_ms = 0 WHERE seq = ?1 AND lease_epoch = ?2 AND state = 'running' RETURNING ",
            columns!()
        );
        query_opt(self.0, sql, params![seq, epoch, state.name(), outcome, now_ms()], record).map_err(unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn submission(id: &str, digest: u8) -> Submission {
        Submission {
            request_id: id.into(),
            key: "ab".repeat(32),
            digest: Some(format!("{digest:02x}").repeat(32)),
            merkle_root: None,
            untweaked: false,
            path: None,
            psbt: None,
            labels: BTreeMap::new(),
        }
    }

    fn log() -> (tempfile::TempDir, SqliteLog) {
        let dir = tempfile::tempdir().expect("dir");
        let log = SqliteLog::open(&dir.path().join("requests.db")).expect("open");
        (dir, log)
    }

    #[test]
    fn the_same_id_answers_the_same_request_and_another_body_conflicts_per_client() {
        let (_d, log) = log();
        let Submitted::Accepted(a) = log.write(|w| w.submit("alice", &submission("r1", 1), 10)).expect("new") else {
            panic!()
        };
        let Submitted::Existing(again) = log.write(|w| w.submit("alice", &submission("r1", 1), 10)).expect("again")
        else {
            panic!()
        };
        assert_eq!(a.seq, again.seq);
        let e = log.write(|w| w.submit("alice", &submission("r1", 2), 10)).expect_err("conflict");
        assert_eq!(e.code(), ErrorCode::RequestConflict);
        // Another client may use the same id, and sees only its own.
        assert!(matches!(
            log.write(|w| w.submit("bob", &submission("r1", 2), 10)).expect("bob"),
            Submitted::Accepted(_)
        ));
        assert!(log.get("bob", "r1").expect("get").is_some_and(|r| r.submission.digest == submission("r1", 2).digest));
        assert!(log.get("carol", "r1").expect("get").is_none());
        assert_eq!(log.list("alice", &Filter { limit: 10, ..Filter::default() }).expect("list").len(), 1);
        assert_eq!(log.write(|w| w.cancel("carol", "r1")).expect_err("not hers").code(), ErrorCode::RequestUnknown);
    }

    #[test]
    fn a_request_is_cancellable_until_its_first_signing_request_and_a_lost_claim_changes_nothing() {
        let (_d, log) = log();
        log.write(|w| w.submit("alice", &submission("r1", 1), 10)).expect("r1");
        log.write(|w| w.submit("alice", &submission("r2", 2), 10)).expect("r2");
        // Claimed but nothing sent: still cancellable, and the worker's claim is then lost.
        let (r1, _) = log.write(|w| w.claim("w", 30_000, 1, &Default::default())).expect("claim").pop().expect("r1");
        assert_eq!(log.write(|w| w.cancel("alice", "r1")).expect("cancel").state, State::Cancelled);
        assert!(!log.write(|w| w.mark_sent(r1.seq, r1.lease_epoch, 30_000)).expect("mark"));
        assert!(log
            .write(|w| w.finish(r1.seq, r1.lease_epoch, State::Signed, &Outcome::default()))
            .expect("finish")
            .is_none());
        assert_eq!(log.get("alice", "r1").expect("get").expect("r1").state, State::Cancelled);
        // Sent: not cancellable; finished under its epoch.
        let (r2, _) = log.write(|w| w.claim("w", 30_000, 1, &Default::default())).expect("claim").pop().expect("r2");
        assert!(log.write(|w| w.mark_sent(r2.seq, r2.lease_epoch, 30_000)).expect("mark"));
        assert_eq!(log.write(|w| w.cancel("alice", "r2")).expect_err("sent").code(), ErrorCode::RequestNotCancellable);
        let stored =
            log.write(|w| w.finish(r2.seq, r2.lease_epoch, State::Signed, &Outcome::default())).expect("finish");
        assert_eq!(stored.map(|r| (r.seq, r.state)), Some((r2.seq, State::Signed)), "the stored record answered");
        assert_eq!(
            log.write(|w| w.cancel("alice", "r2")).expect_err("signed").code(),
            ErrorCode::RequestNotCancellable
        );
        assert!(log.write(|w| w.claim("w", 30_000, 1, &Default::default())).expect("claim").is_empty());
    }

    #[test]
    fn an_expired_lease_is_taken_over_with_a_new_epoch_that_fences_the_old_worker() {
        let (_d, log) = log();
        log.write(|w| w.submit("alice", &submission("r1", 1), 10)).expect("r1");
        let (first, fresh) =
            log.write(|w| w.claim("w1", -1, 1, &Default::default())).expect("claim").pop().expect("r1");
        let (second, takeover) =
            log.write(|w| w.claim("w2", 30_000, 1, &Default::default())).expect("takeover").pop().expect("r1 again");
        assert!(!fresh && takeover);
        assert_eq!((second.seq, second.lease_epoch), (first.seq, first.lease_epoch + 1));
        assert!(log
            .write(|w| w.finish(first.seq, first.lease_epoch, State::Failed, &Outcome::default()))
            .expect("old")
            .is_none());
        assert!(log
            .write(|w| w.finish(second.seq, second.lease_epoch, State::Signed, &Outcome::default()))
            .expect("new")
            .is_some());
    }

    #[test]
    fn a_client_at_its_bound_is_refused_and_claims_go_to_the_client_with_fewest_running() {
        let (_d, log) = log();
        for i in 0..3 {
            log.write(|w| w.submit("flood", &submission(&format!("f{i}"), i), 3)).expect("flood");
        }
        let e = log.write(|w| w.submit("flood", &submission("f3", 3), 3)).expect_err("bound");
        assert_eq!(e.code(), ErrorCode::TooManyInFlight);
        log.write(|w| w.submit("quiet", &submission("q0", 9), 3)).expect("quiet");
        // One batch of two: the client with none running goes second, before the flood's next.
        let batch = log.write(|w| w.claim("w", 30_000, 2, &Default::default())).expect("claim");
        let clients: Vec<&str> = batch.iter().map(|(r, _)| r.client.as_str()).collect();
        assert_eq!(clients, ["flood", "quiet"]);
        let open = |log: &SqliteLog| -> BTreeMap<&str, u64> {
            log.open_counts().expect("counts").into_iter().map(|(s, n)| (s.name(), n)).collect()
        };
        assert_eq!(open(&log), BTreeMap::from([("pending", 2), ("running", 2)]));
        // A final request is no longer counted.
        let (r, _) = &batch[1];
        log.write(|w| w.finish(r.seq, r.lease_epoch, State::Signed, &Outcome::default()))
            .expect("finish")
            .expect("held");
        assert_eq!(open(&log), BTreeMap::from([("pending", 2), ("running", 1)]));
    }

    #[test]
    fn open_requests_are_counted_from_the_claim_index_not_by_a_scan_of_the_log() {
        let (_dir, log) = log();
        let conn = log.lock();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {OPEN_COUNTS}"))
            .expect("explain")
            .query_map([], |row| row.get::<_, String>(3))
            .expect("plan")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert!(plan.iter().any(|step| step.contains("INDEX sign_requests_claim (state=?)")), "{plan:?}");
        assert!(!plan.iter().any(|step| step.starts_with("SCAN sign_requests")), "{plan:?}");
    }

    #[test]
    fn the_group_writer_commits_many_together_and_a_refused_one_alone_changes_nothing() {
        let (dir, log) = log();
        let writer = super::super::writer::GroupWriter::start(&dir.path().join("requests.db")).expect("writer");
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
        let results = rt.block_on(async {
            let mut tasks = Vec::new();
            for i in 0..64u8 {
                let w = writer.clone();
                // Every fourth one conflicts with an earlier id (another body): refused alone.
                let id = if i % 4 == 3 { format!("r{}", i - 1) } else { format!("r{i}") };
                tasks.push(tokio::spawn(
                    async move { w.write(move |w| w.submit("alice", &submission(&id, i), 100)).await },
                ));
            }
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.expect("task"));
            }
            out
        });
        let refused =
            results.iter().filter(|r| r.as_ref().is_err_and(|e| e.code() == ErrorCode::RequestConflict)).count();
        assert_eq!(refused, 16, "{results:?}");
        let stored = log.list("alice", &Filter { limit: 100, ..Filter::default() }).expect("list");
        assert_eq!(stored.len(), 48);
        // Each stored body is one its writers sent (the first of two to reach the writer wins).
        for r in &stored {
            let n: u8 = r.submission.request_id[1..].parse().expect("id");
            let senders = if n % 4 == 2 { vec![n, n + 1] } else { vec![n] };
            assert!(senders.iter().any(|m| r.submission.digest == submission("x", *m).digest), "{r:?}");
        }
    }

    #[test]
    fn a_request_of_a_ready_key_is_marked_sent_by_its_claim() {
        let (_d, log) = log();
        log.write(|w| w.submit("alice", &submission("r1", 1), 10)).expect("r1");
        let ready = std::collections::HashSet::from(["ab".repeat(32)]);
        let (r1, _) = log.write(|w| w.claim("w", 30_000, 1, &ready)).expect("claim").pop().expect("r1");
        assert!(r1.first_sent, "claimed with its key's material held: sent at once");
        assert_eq!(log.write(|w| w.cancel("alice", "r1")).expect_err("sent").code(), ErrorCode::RequestNotCancellable);
    }

    #[test]
    fn a_panicking_write_is_rolled_back_alone_and_the_writer_goes_on() {
        let (dir, log) = log();
        let writer = super::super::writer::GroupWriter::start(&dir.path().join("requests.db")).expect("writer");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        rt.block_on(async {
            let w = writer.clone();
            let bad = tokio::spawn(async move {
                w.write(|w| {
                    w.submit("alice", &submission("half", 1), 10)?;
                    panic!("a job that panics after writing");
                    #[allow(unreachable_code)]
                    Ok(())
                })
                .await
            });
            let good = writer.write(|w| w.submit("alice", &submission("whole", 2), 10)).await;
            let bad = bad.await.expect("task");
            assert_eq!(bad.expect_err("panicked").code(), ErrorCode::StoreUnavailable);
            assert!(good.is_ok());
            let after = writer.write(|w| w.submit("alice", &submission("after", 3), 10)).await;
            assert!(after.is_ok(), "the writer goes on");
        });
        assert!(log.get("alice", "half").expect("get").is_none(), "the panicked job's write was rolled back");
        assert!(log.get("alice", "whole").expect("get").is_some());
    }
}

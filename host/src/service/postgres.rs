//! The request log on PostgreSQL, shared by several service instances: the same operations and
//! rows as the SQLite log (`log.rs`), each in a transaction of its own, except submits far from
//! their client's bound and outcomes: those arriving together are committed together
//! ([`super::pg_group`]).
//!
//! Invariants: the unique (client, request_id) key decides between submits of one id, so the
//! idempotency check holds across instances; a client near its bound on open requests takes its
//! lock (`pg_advisory_xact_lock`) before counting, so the bound holds exactly; a claim takes rows
//! with `FOR UPDATE SKIP LOCKED` (two instances never claim the same request at once) and raises
//! its `lease_epoch`, the fencing token every later write of the claim names; the database
//! unreachable is `store_unavailable`, and nothing is answered before its commit.

use super::log::{unavailable, ClaimAtAccept, Filter, Record, Submitted};
use super::pg_group::{Grouped, OutcomeJob, Outcomes, SubmitJob, Submits};
use super::pg_rows::{chain, columns, existing_or_conflict, now_ms, record, NewRow, OP_TIMEOUT};
use super::request::{Outcome, State, Submission};
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use frostgate_common::error::{Error, ErrorCode};
use std::str::FromStr;
use std::time::Duration;
use tokio_postgres::{NoTls, Row};

mod embedded {
    refinery::embed_migrations!("migrations/postgres");
}

/// Connections per instance (and the group writers' own, [`super::pg_group::CONNECTIONS`]).
pub(super) const POOL_SIZE: usize = 16;
/// How long an operation waits for a connection (or to make one) before `store_unavailable`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Serializes the migrations of instances starting together.
const MIGRATION_LOCK: i64 = 0x6672_6f73_7467_6174; // "frostgat"

// Every statement is prepared once per connection (`prepare_cached`).
const GET: &str = concat!("SELECT ", columns!(), " FROM sign_requests WHERE client = $1 AND request_id = $2");
const GET_WITH_HASH: &str =
    concat!("SELECT ", columns!(), ", body_sha256 FROM sign_requests WHERE client = $1 AND request_id = $2");
const LOCK_CLIENT: &str = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))";
const OPEN_OF_CLIENT: &str = "SELECT COUNT(*) FROM sign_requests WHERE client = $1 AND state IN ('pending', 'running')";
/// No request is pending: asked in the claim index's order, so that index answers from its first
/// entry (not a scan of the per-client index, which holds the entries of requests finished since
/// the last vacuum). `frostgate_submit` (migration V5) asks the same.
macro_rules! none_pending {
    () => {
        "(SELECT r.seq FROM sign_requests AS r WHERE r.state = 'pending' ORDER BY r.lease_until_ms, r.seq LIMIT 1) IS NULL"
    };
}
/// [`none_pending!`] (tests pin its plan, and that `frostgate_submit` asks the same).
pub const NONE_PENDING: &str = none_pending!();
/// A new request, `running` under the claim ($8 owner, $9 lease end, $10 ready) when $11 asks
/// for it and no other request is pending; an id already stored inserts nothing.
const INSERT: &str = concat!(
    "INSERT INTO sign_requests (client, request_id, body_sha256, body, key, kind, state, created_ms, updated_ms,
                                lease_owner, lease_until_ms, lease_epoch, first_sent)
     SELECT $1, $2, $3, $4, $5, $6, CASE WHEN c THEN 'running' ELSE 'pending' END, $7, $7,
            CASE WHEN c THEN $8::TEXT END, CASE WHEN c THEN $9::BIGINT ELSE 0 END, CASE WHEN c THEN 1 ELSE 0 END,
            c AND $10::BOOLEAN
     FROM (SELECT $11::BOOLEAN AND ",
    none_pending!(),
    " AS c) AS claim
     ON CONFLICT (client, request_id) DO NOTHING RETURNING ",
    columns!()
);
/// Below `max_open_per_client` by at least this many, a submit holds its client's lock shared:
/// as many as the submit groups uncommitted at once hold, whatever the number of instances (each
/// group holds one of the log's slots; without one, its submits take the exclusive path).
const LOCK_FREE_MARGIN: usize = super::pg_group::GROUP_SLOTS * super::pg_group::MAX_SUBMITS;
/// Every session's settings. Each statement is fixed and prepared once per connection: planned
/// once (a generic plan), not again at each execution with its values (the groups' arrays). That
/// plan is made with the statistics of the moment and kept until they change, and a log's
/// statistics mislead while it is young (empty, or grown and never analyzed). Every statement
/// reads a few rows by an index, so the other ways are turned off (a plan falls back to one only
/// where no index serves it, and none of these statements is such):
/// - no sequential scans: planned on an empty log, the outcome update read the whole table for
///   every group (153 buffers per row by the end of a run, against 11);
/// - no bitmap scans: a bitmap scan never marks the index entries of finished requests dead, so
///   each per-client count read every entry of requests finished since the last vacuum (2,817 per
///   count on average over a run, against 13-24 with the index-only scan).
pub const SESSION_SETTINGS: [(&str, &str); 5] = [
    ("statement_timeout", "10000"),
    ("idle_in_transaction_session_timeout", "15000"),
    ("plan_cache_mode", "force_generic_plan"),
    ("enable_seqscan", "off"),
    ("enable_bitmapscan", "off"),
];
/// The states a statement that finds its row by a key checks: parameters, not literals. Planned
/// generically, a statement with a state parameter cannot be proven to match a partial index of
/// open requests, so its row is found by its key (primary or unique) whatever the statistics
/// were when its connection planned it; with the literal, a log never vacuumed yet made the
/// planner scan every open request's entry (and those of requests finished since) for it.
const RUNNING: &str = "running";
/// As [`RUNNING`]: the open states.
const OPEN: [&str; 2] = ["pending", "running"];
const CANCEL: &str = "UPDATE sign_requests SET state = 'cancelled', updated_ms = $3, lease_owner = NULL
     WHERE client = $1 AND request_id = $2 AND state = ANY($4::TEXT[]) AND NOT first_sent";
/// Served by a partial index of open requests (the literal states prove it).
const NEXT_CLAIMABLE: &str = "SELECT seq, state, key FROM sign_requests AS r
     WHERE state IN ('pending', 'running') AND (state = 'pending' OR lease_until_ms < $1)
     ORDER BY (SELECT COUNT(*) FROM sign_requests AS o
               WHERE o.client = r.client AND o.state = 'running' AND o.lease_until_ms >= $1), seq
     LIMIT 1 FOR UPDATE SKIP LOCKED";
const CLAIM: &str = concat!(
    "UPDATE sign_requests SET state = 'running', lease_owner = $2, lease_until_ms = $3,
     lease_epoch = lease_epoch + 1, updated_ms = $4, first_sent = first_sent OR $5
     WHERE seq = $1 RETURNING ",
    columns!()
);
const MARK_SENT: &str = "UPDATE sign_requests SET first_sent = TRUE, lease_until_ms = $3, updated_ms = $4
     WHERE seq = $1 AND lease_epoch = $2 AND state = $5";
const RENEW: &str = "UPDATE sign_requests SET lease_until_ms = $3 WHERE seq = $1 AND lease_epoch = $2 AND state = $4";
/// The statements whose plans `tests/tests/request_log.rs` pins, planned as the service's sessions
/// plan them, on a log never vacuumed (statistics under which the planner's defaults pick a
/// bitmap scan, or a partial index for a row found by its key): (statement, arguments for
/// `EXPLAIN EXECUTE`, the indexes of which one must serve it).
pub const PINNED_PLANS: [(&str, &str, &[&str]); 10] = [
    (
        super::pg_group::FINISH_GROUP,
        "'{1}', '{1}', '{signed}', '{x}', 1, 'running'",
        &["Index Scan using sign_requests_pkey"],
    ),
    (MARK_SENT, "1, 1, 2, 3, 'running'", &["Index Scan using sign_requests_pkey"]),
    (RENEW, "1, 1, 2, 'running'", &["Index Scan using sign_requests_pkey"]),
    (CANCEL, "'dev', 'x', 1, '{pending,running}'", &["Index Scan using sign_requests_client_request_id_key"]),
    (GET_WITH_HASH, "'dev', 'x'", &["Index Scan using sign_requests_client_request_id_key"]),
    (OPEN_OF_CLIENT, "'dev'", &["Index Only Scan using sign_requests_client_state"]),
    (concat!("SELECT ", none_pending!()), "", &["Index Only Scan using sign_requests_claimable"]),
    (
        NEXT_CLAIMABLE,
        "5",
        &[
            "Index Scan using sign_requests_claimable on sign_requests r",
            "Index Scan using sign_requests_client_state on sign_requests r",
        ],
    ),
    (
        super::log::OPEN_COUNTS,
        "",
        &["Index Only Scan using sign_requests_claimable", "Index Only Scan using sign_requests_client_state"],
    ),
    // A page reads the client's requests by the unique index and sorts them by seq (no (client,
    // seq) index: one would cost every submit an entry, and planners pick it for key lookups).
    (LIST, "'dev', 0, NULL, NULL, 50", &["Index Scan using sign_requests_client_request_id_key"]),
];
const LIST: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM sign_requests WHERE client = $1 AND seq > $2
     AND ($3::TEXT IS NULL OR state = $3) AND ($4::TEXT IS NULL OR key = $4) ORDER BY seq LIMIT $5"
);
/// How many of `client`'s requests are pending or running, and the stored request under the
/// submitted id (both asked at once: one round trip).
async fn probe<C: GenericClient>(c: &C, client: &str, request_id: &str) -> Result<(i64, Option<Row>), Error> {
    let (count, get) = (c.prepare_cached(OPEN_OF_CLIENT), c.prepare_cached(GET_WITH_HASH));
    let (count, get) = tokio::join!(count, get);
    let (count, get) = (count.map_err(unavailable)?, get.map_err(unavailable)?);
    let (by_client, by_id): (
        [&(dyn tokio_postgres::types::ToSql + Sync); 1],
        [&(dyn tokio_postgres::types::ToSql + Sync); 2],
    ) = ([&client], [&client, &request_id]);
    let (open, existing) = tokio::join!(c.query_one(&count, &by_client), c.query_opt(&get, &by_id));
    Ok((open.and_then(|r| r.try_get(0)).map_err(unavailable)?, existing.map_err(unavailable)?))
}

/// Inserts the request, claimed when the row asks and no other is pending; another submit of the
/// same id that landed first is read instead (same body: it; another: a conflict).
async fn insert<C: GenericClient>(c: &C, row: &NewRow) -> Result<Submitted, Error> {
    let inserted =
        c.query_opt(&c.prepare_cached(INSERT).await.map_err(unavailable)?, &row.params()).await.map_err(unavailable)?;
    match inserted {
        Some(stored) => Ok(Submitted::Accepted(record(&stored)?)),
        None => {
            let get = c.prepare_cached(GET_WITH_HASH).await.map_err(unavailable)?;
            existing_or_conflict(&c.query_one(&get, &[&row.client, &row.request_id]).await.map_err(unavailable)?, row)
        }
    }
}

/// `sql` prepared on the transaction's connection (once per connection).
async fn prepared(tx: &deadpool_postgres::Transaction<'_>, sql: &str) -> Result<tokio_postgres::Statement, Error> {
    tx.prepare_cached(sql).await.map_err(unavailable)
}

/// The PostgreSQL request log (cheap to clone: a pool).
#[derive(Clone)]
pub struct PgLog {
    pool: Pool,
    /// Submits far from their client's bound, group-committed.
    submits: Grouped<Submits>,
    /// Outcomes, group-committed.
    outcomes: Grouped<Outcomes>,
}

impl std::fmt::Debug for PgLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLog").finish_non_exhaustive()
    }
}

impl PgLog {
    /// Connects to `url` (`postgres://user@host:port/db`) and applies the migrations (one
    /// instance at a time). With `ca`, over TLS only, the server verified against `ca`; without,
    /// plaintext (loopback or a private network).
    pub async fn open(url: &str, ca: Option<&std::path::Path>) -> Result<PgLog, Error> {
        use tokio_postgres::config::SslMode;
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|e| Error::new(ErrorCode::ConfigInvalid, format!("store URL: {e}")))?;
        if ca.is_none() && config.get_ssl_mode() == SslMode::Require {
            return Err(Error::new(ErrorCode::ConfigInvalid, "store URL: sslmode=require needs [store] ca"));
        }
        config.connect_timeout(CONNECT_TIMEOUT);
        // A database that stops answering (a cut network, a dead host) is found out in seconds,
        // not after the system's keepalive (hours): every call then answers store_unavailable,
        // and the server drops the locks of a transaction left idle.
        config.keepalives_idle(Duration::from_secs(5));
        config.tcp_user_timeout(OP_TIMEOUT);
        let options: Vec<String> = SESSION_SETTINGS.iter().map(|(k, v)| format!("-c {k}={v}")).collect();
        config.options(options.join(" "));
        // Never a plaintext fallback with a CA: TLS, or no connection.
        let tls = match ca {
            None => None,
            Some(ca) => {
                config.ssl_mode(SslMode::Require);
                Some(tokio_postgres_rustls::MakeRustlsConnect::new(crate::api::tls::client_config_with_ca(ca)?))
            }
        };
        let pool = |size: usize| {
            // A pooled connection is reused unless closed (no test query per operation): a
            // server that went away closes it, and a silent one fails the operation within the
            // timeouts.
            let recycling = ManagerConfig { recycling_method: RecyclingMethod::Fast };
            let manager = match &tls {
                None => Manager::from_config(config.clone(), NoTls, recycling),
                Some(tls) => Manager::from_config(config.clone(), tls.clone(), recycling),
            };
            Pool::builder(manager)
                .max_size(size)
                .wait_timeout(Some(CONNECT_TIMEOUT))
                .create_timeout(Some(CONNECT_TIMEOUT))
                .recycle_timeout(Some(CONNECT_TIMEOUT))
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .build()
                .map_err(|e| Error::new(ErrorCode::Internal, format!("PostgreSQL pool: {e}")))
        };
        let (pool, groups) = (pool(POOL_SIZE)?, pool(super::pg_group::CONNECTIONS)?);
        let mut client = pool.get().await.map_err(|e| unavailable(chain(&e)))?;
        client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await.map_err(unavailable)?;
        let migrated = embedded::migrations::runner().run_async(&mut **client).await;
        client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await.map_err(unavailable)?;
        migrated.map_err(|e| unavailable(format!("migrations: {e}")))?;
        drop(client);
        let (submits, outcomes) = super::pg_group::start(groups)?;
        Ok(PgLog { submits, outcomes, pool })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, Error> {
        self.pool.get().await.map_err(|e| unavailable(chain(&e)))
    }

    /// As [`super::log::Writes::submit`], then [`super::log::Writes::claim_accepted`] with
    /// `claim`, in the inserting statement. The unique key decides between submits of one id.
    /// The bound is exact: far from it, a submit holds its client's lock shared (submits run side
    /// by side; at most the instances' groups are in flight, fewer rows than the margin), all of
    /// it `frostgate_submit` (migrations V2, V3, V5) in a group with the submits arriving with it; near
    /// it, exclusive, so it counts only once every submit in flight has committed.
    pub async fn submit(
        &self,
        client: &str,
        s: &Submission,
        max_open: usize,
        claim: Option<&ClaimAtAccept>,
    ) -> Result<Submitted, Error> {
        // Shared with the group's job, not copied: the exclusive path below needs it again.
        let new = std::sync::Arc::new(NewRow::new(client, s, claim)?);
        let job = SubmitJob { row: new.clone(), max_open: max_open as i64, margin: LOCK_FREE_MARGIN as i64 };
        if let Some(done) = self.submits.write(job).await? {
            return Ok(done);
        }
        // Near the bound: under the exclusive lock.
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(unavailable)?;
        tx.execute(&tx.prepare_cached(LOCK_CLIENT).await.map_err(unavailable)?, &[&client])
            .await
            .map_err(unavailable)?;
        let (open, existing) = probe(&tx, client, &s.request_id).await?;
        if let Some(row) = existing {
            return existing_or_conflict(&row, &new);
        }
        if open as usize >= max_open {
            return Err(Error::new(
                ErrorCode::TooManyInFlight,
                format!("this client has {open} requests pending or running (at most {max_open})"),
            ));
        }
        let submitted = insert(&tx, &new).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(submitted)
    }

    /// As [`super::log::Writes::cancel`].
    pub async fn cancel(&self, client: &str, request_id: &str) -> Result<Record, Error> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(unavailable)?;
        let changed = tx
            .execute(&prepared(&tx, CANCEL).await?, &[&client, &request_id, &now_ms(), &&OPEN[..]])
            .await
            .map_err(unavailable)?;
        let row = tx
            .query_opt(&prepared(&tx, GET).await?, &[&client, &request_id])
            .await
            .map_err(unavailable)?
            .ok_or_else(|| Error::new(ErrorCode::RequestUnknown, format!("no request {request_id}")))?;
        let r = record(&row)?;
        tx.commit().await.map_err(unavailable)?;
        if changed == 0 && r.state != State::Cancelled {
            return Err(Error::new(
                ErrorCode::RequestNotCancellable,
                format!("request {request_id} is {}: a signing request may have reached a node", r.state.name()),
            ));
        }
        Ok(r)
    }

    /// As [`super::log::Writes::claim`]; rows another instance is claiming are skipped.
    pub async fn claim(
        &self,
        owner: &str,
        lease_ms: i64,
        n: usize,
        ready: &std::collections::HashSet<String>,
    ) -> Result<Vec<(Record, bool)>, Error> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(unavailable)?;
        let now = now_ms();
        let mut out = Vec::new();
        while out.len() < n {
            let next = tx.query_opt(&prepared(&tx, NEXT_CLAIMABLE).await?, &[&now]).await.map_err(unavailable)?;
            let Some(row) = next else { break };
            let (seq, was, key): (i64, String, String) = (
                row.try_get(0).map_err(unavailable)?,
                row.try_get(1).map_err(unavailable)?,
                row.try_get(2).map_err(unavailable)?,
            );
            let row = tx
                .query_one(
                    &prepared(&tx, CLAIM).await?,
                    &[&seq, &owner, &(now + lease_ms), &now, &ready.contains(&key)],
                )
                .await
                .map_err(unavailable)?;
            out.push((record(&row)?, was == State::Running.name()));
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(out)
    }

    /// As [`super::log::Writes::mark_sent`].
    pub async fn mark_sent(&self, seq: i64, epoch: i64, lease_ms: i64) -> Result<bool, Error> {
        let now = now_ms();
        self.update(MARK_SENT, &[&seq, &epoch, &(now + lease_ms), &now, &RUNNING]).await
    }

    /// As [`super::log::Writes::renew`].
    pub async fn renew(&self, seq: i64, epoch: i64, lease_ms: i64) -> Result<bool, Error> {
        self.update(RENEW, &[&seq, &epoch, &(now_ms() + lease_ms), &RUNNING]).await
    }

    /// As [`super::log::Writes::finish`], committed with the outcomes of other requests that
    /// arrive meanwhile ([`super::pg_group`]).
    pub async fn finish(&self, seq: i64, epoch: i64, state: State, outcome: &Outcome) -> Result<Option<Record>, Error> {
        let text = serde_json::to_string(outcome).map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
        let outcome = (state != State::Pending).then_some(text);
        self.outcomes.write(OutcomeJob { seq, epoch, state, outcome }).await
    }

    async fn update(&self, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> Result<bool, Error> {
        let c = self.client().await?;
        let changed =
            c.execute(&c.prepare_cached(sql).await.map_err(unavailable)?, params).await.map_err(unavailable)?;
        Ok(changed == 1)
    }

    /// As [`super::log::SqliteLog::get`].
    pub async fn get(&self, client: &str, request_id: &str) -> Result<Option<Record>, Error> {
        let c = self.client().await?;
        let row = c
            .query_opt(&c.prepare_cached(GET).await.map_err(unavailable)?, &[&client, &request_id])
            .await
            .map_err(unavailable)?;
        row.as_ref().map(record).transpose()
    }

    /// As [`super::log::SqliteLog::list`].
    pub async fn list(&self, client: &str, f: &Filter) -> Result<Vec<Record>, Error> {
        let key = f.key.as_ref().map(|k| k.to_ascii_lowercase());
        let state = f.state.map(State::name);
        let c = self.client().await?;
        let rows = c
            .query(
                &c.prepare_cached(LIST).await.map_err(unavailable)?,
                &[&client, &f.after, &state, &key, &(f.limit as i64)],
            )
            .await
            .map_err(unavailable)?;
        rows.iter().map(record).collect()
    }

    /// As [`super::log::SqliteLog::open_counts`].
    pub async fn open_counts(&self) -> Result<Vec<(State, u64)>, Error> {
        let c = self.client().await?;
        let rows = c
            .query(&c.prepare_cached(super::log::OPEN_COUNTS).await.map_err(unavailable)?, &[])
            .await
            .map_err(unavailable)?;
        let mut out = Vec::new();
        for row in rows {
            let (state, n): (String, i64) =
                (row.try_get(0).map_err(unavailable)?, row.try_get(1).map_err(unavailable)?);
            if let Some(s) = State::from_name(&state) {
                out.push((s, n as u64));
            }
        }
        Ok(out)
    }
}

//! The request log the service runs on, named by `[store] url`: `sqlite:PATH` (embedded, one
//! instance; writes group-committed) or `postgres://...` (several instances). One set of
//! operations for the handlers and workers, whichever it is.

use super::log::{ClaimAtAccept, Filter, Record, SqliteLog, Submitted};
use super::pg_rows::timed;
use super::postgres::PgLog;
use super::request::{Outcome, State, Submission};
use super::writer::GroupWriter;
use frostgate_common::error::{Error, ErrorCode};
use std::collections::HashSet;
use std::sync::Arc;

/// The request log (cheap to clone).
#[derive(Debug, Clone)]
pub enum RequestLog {
    /// Embedded: reads on one connection, writes through the group writer.
    Sqlite {
        /// Reads.
        log: Arc<SqliteLog>,
        /// Writes.
        writer: GroupWriter,
    },
    /// Shared by several instances.
    Postgres(PgLog),
}

/// A write `op` to the log, its duration observed ([`super::metrics::ServiceMetrics::wrote`]).
async fn observed<T>(op: &'static str, write: impl std::future::Future<Output = Result<T, Error>>) -> Result<T, Error> {
    let started = std::time::Instant::now();
    let r = write.await;
    super::metrics::global().wrote(op, started.elapsed().as_secs_f64());
    r
}

impl RequestLog {
    /// Opens (creating or migrating) the log `url` names (PostgreSQL over TLS with `ca`).
    pub async fn open(url: &str, ca: Option<&std::path::Path>) -> Result<RequestLog, Error> {
        if let Some(path) = url.strip_prefix("sqlite:").filter(|p| !p.is_empty()) {
            if ca.is_some() {
                return Err(Error::new(ErrorCode::ConfigInvalid, "[store] ca is for a postgres:// store"));
            }
            let path = std::path::Path::new(path);
            let log = Arc::new(SqliteLog::open(path)?);
            return Ok(RequestLog::Sqlite { log, writer: GroupWriter::start(path)? });
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(RequestLog::Postgres(PgLog::open(url, ca).await?));
        }
        Err(Error::new(ErrorCode::ConfigInvalid, format!("store {url:?}: sqlite:PATH or postgres://...")))
    }

    /// Its kind, as health answers it.
    pub fn kind(&self) -> &'static str {
        match self {
            RequestLog::Sqlite { .. } => "sqlite",
            RequestLog::Postgres(_) => "postgres",
        }
    }

    async fn read<T: Send + 'static>(
        log: &Arc<SqliteLog>,
        f: impl FnOnce(&SqliteLog) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let log = log.clone();
        tokio::task::spawn_blocking(move || f(&log))
            .await
            .map_err(|e| Error::new(ErrorCode::Internal, format!("request log task: {e}")))?
    }

    /// Stores a new request, answers the stored one (same body) or refuses (see
    /// [`super::log::Writes::submit`]); with `claim`, a new request is claimed in the same commit
    /// when no older one is pending (it is then `running`).
    pub async fn submit(
        &self,
        client: &str,
        s: &Submission,
        max_open: usize,
        claim: Option<ClaimAtAccept>,
    ) -> Result<Submitted, Error> {
        observed("submit", async move {
            match self {
                RequestLog::Sqlite { writer, .. } => {
                    let (client, s) = (client.to_string(), s.clone());
                    writer
                        .write(move |w| match (w.submit(&client, &s, max_open)?, claim) {
                            (Submitted::Accepted(r), Some(c)) => {
                                Ok(Submitted::Accepted(w.claim_accepted(r.seq, &c)?.unwrap_or(r)))
                            }
                            (submitted, _) => Ok(submitted),
                        })
                        .await
                }
                RequestLog::Postgres(pg) => timed(pg.submit(client, s, max_open, claim.as_ref())).await,
            }
        })
        .await
    }

    /// Cancels a request until its first signing request.
    pub async fn cancel(&self, client: &str, request_id: &str) -> Result<Record, Error> {
        observed("cancel", async move {
            match self {
                RequestLog::Sqlite { writer, .. } => {
                    let (client, id) = (client.to_string(), request_id.to_string());
                    writer.write(move |w| w.cancel(&client, &id)).await
                }
                RequestLog::Postgres(pg) => timed(pg.cancel(client, request_id)).await,
            }
        })
        .await
    }

    /// Claims up to `n` requests for `owner` (see [`super::log::Writes::claim`]).
    pub async fn claim(
        &self,
        owner: &str,
        lease_ms: i64,
        n: usize,
        ready: HashSet<String>,
    ) -> Result<Vec<(Record, bool)>, Error> {
        observed("claim", async move {
            match self {
                RequestLog::Sqlite { writer, .. } => {
                    let owner = owner.to_string();
                    writer.write(move |w| w.claim(&owner, lease_ms, n, &ready)).await
                }
                RequestLog::Postgres(pg) => timed(pg.claim(owner, lease_ms, n, &ready)).await,
            }
        })
        .await
    }

    /// Under the claim `epoch`: a signing request is about to leave. False if the claim was lost.
    pub async fn mark_sent(&self, seq: i64, epoch: i64, lease_ms: i64) -> Result<bool, Error> {
        observed("mark_sent", async move {
            match self {
                RequestLog::Sqlite { writer, .. } => writer.write(move |w| w.mark_sent(seq, epoch, lease_ms)).await,
                RequestLog::Postgres(pg) => timed(pg.mark_sent(seq, epoch, lease_ms)).await,
            }
        })
        .await
    }

    /// Under the claim `epoch`: extends the lease. False if the claim was lost.
    pub async fn renew(&self, seq: i64, epoch: i64, lease_ms: i64) -> Result<bool, Error> {
        observed("renew", async move {
            match self {
                RequestLog::Sqlite { writer, .. } => writer.write(move |w| w.renew(seq, epoch, lease_ms)).await,
                RequestLog::Postgres(pg) => timed(pg.renew(seq, epoch, lease_ms)).await,
            }
        })
        .await
    }

    /// Under the claim `epoch`: the final state and outcome (or back to pending); the record as
    /// stored, or `None` if the claim was lost.
    pub async fn finish(&self, seq: i64, epoch: i64, state: State, outcome: Outcome) -> Result<Option<Record>, Error> {
        observed("finish", async move {
            match self {
                RequestLog::Sqlite { writer, .. } => writer.write(move |w| w.finish(seq, epoch, state, &outcome)).await,
                RequestLog::Postgres(pg) => timed(pg.finish(seq, epoch, state, &outcome)).await,
            }
        })
        .await
    }

    /// `client`'s request `request_id`.
    pub async fn get(&self, client: &str, request_id: &str) -> Result<Option<Record>, Error> {
        match self {
            RequestLog::Sqlite { log, .. } => {
                let (client, id) = (client.to_string(), request_id.to_string());
                Self::read(log, move |l| l.get(&client, &id)).await
            }
            RequestLog::Postgres(pg) => timed(pg.get(client, request_id)).await,
        }
    }

    /// A page of `client`'s requests, oldest first.
    pub async fn list(&self, client: &str, f: Filter) -> Result<Vec<Record>, Error> {
        match self {
            RequestLog::Sqlite { log, .. } => {
                let client = client.to_string();
                Self::read(log, move |l| l.list(&client, &f)).await
            }
            RequestLog::Postgres(pg) => timed(pg.list(client, &f)).await,
        }
    }

    /// How many requests are open (pending, running), by state; at the cost of the work in
    /// flight, not of the log's length.
    pub async fn open_counts(&self) -> Result<Vec<(State, u64)>, Error> {
        match self {
            RequestLog::Sqlite { log, .. } => Self::read(log, |l| l.open_counts()).await,
            RequestLog::Postgres(pg) => timed(pg.open_counts()).await,
        }
    }
}

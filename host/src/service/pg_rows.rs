//! The PostgreSQL request log's rows and errors, shared by its single operations (`postgres.rs`)
//! and its group commits (`pg_group.rs`): decoding a stored record, the row a submit inserts,
//! the body-hash check that tells the same request from a conflict, and the bound on every
//! operation's time.

use super::log::{unavailable, ClaimAtAccept, Record, Submitted};
use super::request::{Outcome, State, Submission};
use frostgate_common::error::{Error, ErrorCode};
use std::time::Duration;
use tokio_postgres::Row;

/// The log's columns in the order [`record_at`] decodes them (every statement that answers
/// records selects or returns these).
macro_rules! columns {
    () => {
        "seq, client, body, state, outcome, created_ms, updated_ms, lease_epoch, first_sent"
    };
}
pub(super) use columns;

/// The longest one operation of the log may take (then `store_unavailable`).
pub const OP_TIMEOUT: Duration = Duration::from_secs(15);

/// A PostgreSQL operation, bounded by [`OP_TIMEOUT`] (then `store_unavailable`).
pub(super) async fn timed<T>(op: impl std::future::Future<Output = Result<T, Error>>) -> Result<T, Error> {
    match tokio::time::timeout(OP_TIMEOUT, op).await {
        Ok(r) => r,
        Err(_) => Err(Error::new(
            ErrorCode::StoreUnavailable,
            format!("request log: PostgreSQL did not answer within {} s", OP_TIMEOUT.as_secs()),
        )),
    }
}

/// The record in `row`'s columns.
pub(super) fn record(row: &Row) -> Result<Record, Error> {
    record_at(row, 0)
}

/// The record in `row`'s columns from `at` on ([`columns!`]'s order).
pub(super) fn record_at(row: &Row, at: usize) -> Result<Record, Error> {
    let bad = |what: &str| unavailable(format!("stored {what} does not decode"));
    let body: String = row.try_get(at + 2).map_err(unavailable)?;
    let state: String = row.try_get(at + 3).map_err(unavailable)?;
    let outcome: Option<String> = row.try_get(at + 4).map_err(unavailable)?;
    Ok(Record {
        seq: row.try_get(at).map_err(unavailable)?,
        client: row.try_get(at + 1).map_err(unavailable)?,
        submission: serde_json::from_str(&body).map_err(|_| bad("body"))?,
        state: State::from_name(&state).ok_or_else(|| bad("state"))?,
        outcome: match outcome {
            Some(o) => serde_json::from_str(&o).map_err(|_| bad("outcome"))?,
            None => Outcome::default(),
        },
        created_ms: row.try_get(at + 5).map_err(unavailable)?,
        updated_ms: row.try_get(at + 6).map_err(unavailable)?,
        lease_epoch: row.try_get(at + 7).map_err(unavailable)?,
        first_sent: row.try_get(at + 8).map_err(unavailable)?,
    })
}

/// A stored request under the submitted id: the same body answers it, another is a conflict.
pub(super) fn existing_or_conflict(row: &Row, new: &NewRow) -> Result<Submitted, Error> {
    existing_or_conflict_at(row, 0, &new.hash, &new.request_id)
}

/// [`existing_or_conflict`] of the record from column `at` on, its body hash after it, for a
/// submit of `request_id` whose body hashes to `hash`.
pub(super) fn existing_or_conflict_at(row: &Row, at: usize, hash: &[u8], request_id: &str) -> Result<Submitted, Error> {
    let stored: Vec<u8> = row.try_get(at + 9).map_err(unavailable)?;
    if stored != hash {
        return Err(Error::new(ErrorCode::RequestConflict, format!("request {request_id} exists with another body")));
    }
    Ok(Submitted::Existing(record_at(row, at)?))
}

/// An error with its causes (a TLS handshake's reason is a cause of the pool's error).
pub(super) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}

pub(super) type Param<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);

/// A new request's row: what the insert and `frostgate_submit` take as `$1`-`$11`, made once per
/// submit.
pub(super) struct NewRow {
    pub(super) client: String,
    pub(super) request_id: String,
    pub(super) hash: Vec<u8>,
    pub(super) body: String,
    pub(super) key: String,
    pub(super) kind: &'static str,
    pub(super) now: i64,
    pub(super) owner: String,
    pub(super) until: i64,
    pub(super) ready: bool,
    pub(super) claiming: bool,
}

impl NewRow {
    pub(super) fn new(client: &str, s: &Submission, claim: Option<&ClaimAtAccept>) -> Result<Self, Error> {
        let now = now_ms();
        let (claiming, owner, until, ready) = match claim {
            Some(c) => (true, c.owner.clone(), now + c.lease_ms, c.ready),
            None => (false, String::new(), 0, false),
        };
        Ok(NewRow {
            client: client.to_string(),
            request_id: s.request_id.clone(),
            hash: s.body_sha256().to_vec(),
            body: serde_json::to_string(s).map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?,
            key: s.key.to_ascii_lowercase(),
            kind: s.kind().name(),
            now,
            owner,
            until,
            ready,
            claiming,
        })
    }

    pub(super) fn params(&self) -> [Param<'_>; 11] {
        [
            &self.client,
            &self.request_id,
            &self.hash,
            &self.body,
            &self.key,
            &self.kind,
            &self.now,
            &self.owner,
            &self.until,
            &self.ready,
            &self.claiming,
        ]
    }
}

/// Now, ms since the epoch (the log's timestamps).
pub(super) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

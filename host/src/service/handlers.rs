//! The service's operations, one copy for both APIs (JSON over HTTPS in [`super::http`], gRPC in
//! [`super::grpc`]): who the caller is, submit, get (waiting), list, cancel.
//!
//! Invariant: the caller is found from its connection's certificate alone; every operation sees
//! only that client's requests.

use super::changes::Subscription;
use super::config::Client;
use super::log::{Filter, Submitted};
use super::request::{check_request_id, RequestView, State, Submission};
use super::store::RequestLog;
use super::worker::Workers;
use crate::api::connection::CallerId;
use frostgate_common::error::{Error, ErrorCode};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Longest wait for a final state.
pub const MAX_WAIT_SECS: u64 = 60;
/// Largest page.
pub const MAX_PAGE_SIZE: usize = 500;

/// The calls each client has being served, by client id.
pub type Calls = Arc<std::sync::Mutex<HashMap<String, usize>>>;

/// One call of a client, counted against its bound while this lives.
#[derive(Debug)]
pub struct Admitted {
    calls: Calls,
    client: String,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = calls.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                calls.remove(&self.client);
            }
        }
    }
}

/// When a wait of `wait_seconds` (at most [`MAX_WAIT_SECS`]) from now ends.
fn deadline(wait_seconds: u64) -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(wait_seconds.min(MAX_WAIT_SECS))
}

/// What the operations share.
#[derive(Debug)]
pub struct Api {
    /// The request log.
    pub log: RequestLog,
    /// The workers (woken on a new request; their changes end waits).
    pub workers: Arc<Workers>,
    /// The clients by connection identity; empty with `dev`.
    pub clients: HashMap<CallerId, Client>,
    /// `--dev-plaintext`: every caller is the development client.
    pub dev: bool,
    /// Requests one client may have open.
    pub max_open_per_client: usize,
    /// Calls of one client served at once (each until answered; a watch while it lasts).
    pub max_calls_per_client: usize,
    /// The calls each client has being served.
    pub calls: Calls,
    /// The largest body.
    pub max_body_bytes: usize,
}

fn invalid(m: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::RequestInvalid, m.to_string())
}

/// A page query.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ListQuery {
    /// Only this state (its name).
    pub state: Option<String>,
    /// Only this key (hex).
    pub key: Option<String>,
    /// The previous page's token.
    pub page_token: Option<String>,
    /// At most this many (default 50, at most [`MAX_PAGE_SIZE`]).
    pub page_size: Option<usize>,
}

/// A page of requests.
#[derive(Debug, Serialize, Deserialize)]
pub struct Page {
    /// The requests, oldest first.
    pub requests: Vec<RequestView>,
    /// The next page's token, if there may be one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

impl Api {
    /// The client a connection's certificate names (`client_not_authorized` for none).
    pub fn client(&self, caller: &CallerId) -> Result<Client, Error> {
        if self.dev {
            return Ok(Client::development());
        }
        self.clients
            .get(caller)
            .cloned()
            .ok_or_else(|| Error::new(ErrorCode::ClientNotAuthorized, "this certificate is not a configured client"))
    }

    /// One more call of `client` (`too_many_in_flight` past [`Api::max_calls_per_client`]): a
    /// client's flood of calls holds at most that many places in the request log's queues and
    /// connections, whatever its connections and streams.
    pub fn admit(&self, client: &Client) -> Result<Admitted, Error> {
        let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        let n = calls.entry(client.id.clone()).or_default();
        if *n >= self.max_calls_per_client {
            return Err(Error::new(
                ErrorCode::TooManyInFlight,
                format!("this client has {n} calls being served (at most {})", self.max_calls_per_client),
            ));
        }
        *n += 1;
        Ok(Admitted { calls: self.calls.clone(), client: client.id.clone() })
    }

    /// Validates, authorizes and stores a submission: (whether it is new, the request), answered
    /// once final or after `wait_seconds` (at most [`MAX_WAIT_SECS`]; 0: at once).
    pub async fn submit(
        &self,
        client: &Client,
        submission: Submission,
        wait_seconds: u64,
    ) -> Result<(bool, RequestView), Error> {
        let admitted = Arc::new(self.admit(client)?);
        let deadline = deadline(wait_seconds);
        // Subscribed before the request can start: its worker's announcement reaches this wait.
        let changes = (wait_seconds > 0).then(|| self.workers.changes.subscribe(&client.id, &submission.request_id));
        let (new, record, here) = self.store(client, submission, admitted.clone()).await?;
        match changes {
            Some(changes) if !record.state.is_final() => {
                Ok((new, self.wait(client, &record.submission.request_id, deadline, changes, here).await?))
            }
            _ => Ok((new, record.view())),
        }
    }

    /// Stores a submission: whether it is new, the request, and whether a worker here started it.
    /// The store's task holds `admitted` until its write is answered (a caller that goes away
    /// does not free its place before its write leaves the queue).
    async fn store(
        &self,
        client: &Client,
        submission: Submission,
        admitted: Arc<Admitted>,
    ) -> Result<(bool, super::log::Record, bool), Error> {
        submission.validate()?;
        client.authorize(&submission.key, submission.kind())?;
        // A free worker takes the request in the accepting commit. Stored and started in a task
        // of its own: a caller that goes away meanwhile cannot leave a claimed request unstarted.
        let (log, workers) = (self.log.clone(), self.workers.clone());
        let (id, max_open) = (client.id.clone(), self.max_open_per_client);
        let stored = tokio::spawn(async move {
            let slot = workers.free_slot(&submission.key);
            let claim = slot.as_ref().map(|(_, c)| c.clone());
            let submitted = log.submit(&id, &submission, max_open, claim).await;
            drop(admitted);
            let submitted = submitted?;
            let mut here = false;
            if let Submitted::Accepted(r) = &submitted {
                match slot {
                    Some((permit, _)) if r.state == State::Running => {
                        workers.start(r.clone(), permit);
                        here = true;
                    }
                    _ => workers.wake.notify_one(),
                }
            }
            Ok::<_, Error>((submitted, here))
        });
        let (submitted, here) =
            stored.await.map_err(|e| Error::new(ErrorCode::Internal, format!("request log task: {e}")))??;
        match submitted {
            Submitted::Accepted(r) => {
                tracing::info!(client = %client.name, request = %r.submission.request_id, seq = r.seq, "request accepted");
                super::metrics::global().accepted(r.submission.kind());
                Ok((true, r, here))
            }
            Submitted::Existing(r) => Ok((false, r, false)),
        }
    }

    /// `client`'s request `id` as stored (not a call of its own: its caller is admitted).
    pub async fn record(&self, client: &Client, id: &str) -> Result<super::log::Record, Error> {
        check_request_id(id)?;
        self.log
            .get(&client.id, id)
            .await?
            .ok_or_else(|| Error::new(ErrorCode::RequestUnknown, format!("no request {id}")))
    }

    /// `client`'s request `id` now.
    pub async fn get(&self, client: &Client, id: &str) -> Result<RequestView, Error> {
        let _admitted = self.admit(client)?;
        Ok(self.record(client, id).await?.view())
    }

    /// `client`'s request `id`, once final or after `wait_seconds` (at most [`MAX_WAIT_SECS`]).
    pub async fn wait_for(&self, client: &Client, id: &str, wait_seconds: u64) -> Result<RequestView, Error> {
        let _admitted = self.admit(client)?;
        let changes = self.workers.changes.subscribe(&client.id, id);
        // A request a worker here runs is not final until its change is announced, after this
        // subscription: the first wait needs no read.
        let running = wait_seconds > 0 && self.workers.running_here(&client.id, id);
        self.wait(client, id, deadline(wait_seconds), changes, running).await
    }

    /// `client`'s request `id` once final or at `deadline`, hearing its changes on `changes`;
    /// `running`: a worker here runs it and announces on `changes` after the subscription (no
    /// first read).
    async fn wait(
        &self,
        client: &Client,
        id: &str,
        deadline: tokio::time::Instant,
        mut changes: Subscription,
        mut running: bool,
    ) -> Result<RequestView, Error> {
        loop {
            if !running {
                let record = self.record(client, id).await?;
                if record.state.is_final() || tokio::time::Instant::now() >= deadline {
                    return Ok(record.view());
                }
            }
            // Woken when this request changes here (with its final record as stored, when it
            // has one: no need to read it back); polled for changes another instance makes.
            let poll = deadline.min(tokio::time::Instant::now() + Duration::from_secs(1));
            if let Some(stored) = changes.next(poll).await {
                if stored.state.is_final() && stored.client == client.id {
                    return Ok(stored.view());
                }
            }
            // Still run by a worker here (the change was its start): not final before its
            // announcement, which reaches this subscription; read again at the deadline.
            running = tokio::time::Instant::now() < deadline && self.workers.running_here(&client.id, id);
        }
    }

    /// Cancels `client`'s request `id` (until its first signing request).
    pub async fn cancel(&self, client: &Client, id: &str) -> Result<RequestView, Error> {
        let _admitted = self.admit(client)?;
        check_request_id(id)?;
        let record = self.log.cancel(&client.id, id).await?;
        self.workers.touched(&record);
        Ok(record.view())
    }

    /// A page of `client`'s requests.
    pub async fn list(&self, client: &Client, q: ListQuery) -> Result<Page, Error> {
        let _admitted = self.admit(client)?;
        let state = match q.state.as_deref().filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => Some(State::from_name(s).ok_or_else(|| invalid(format!("state {s:?}")))?),
        };
        let after = match q.page_token.as_deref().filter(|t| !t.is_empty()) {
            None => 0,
            Some(t) => t.parse::<i64>().map_err(|_| invalid("page_token"))?,
        };
        let limit = q.page_size.filter(|n| *n > 0).unwrap_or(50).min(MAX_PAGE_SIZE);
        let filter = Filter { state, key: q.key.filter(|k| !k.is_empty()), after, limit };
        let records = self.log.list(&client.id, filter).await?;
        let next_page_token = (records.len() == limit).then(|| records.last().map(|r| r.seq.to_string())).flatten();
        Ok(Page { requests: records.iter().map(|r| r.view()).collect(), next_page_token })
    }

    /// The open requests (pending, running) by state, every open state named.
    pub async fn health(&self) -> Result<serde_json::Value, Error> {
        let open = self.log.open_counts().await?;
        let counts: serde_json::Map<String, serde_json::Value> =
            State::every_open(&open).into_iter().map(|(s, n)| (s.name().to_string(), n.into())).collect();
        Ok(serde_json::json!({ "status": "ok", "store": self.log.kind(), "requests": counts }))
    }
}

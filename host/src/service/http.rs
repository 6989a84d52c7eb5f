//! The service's JSON API over HTTPS (mutual TLS, pinned client certificates; plaintext on
//! loopback with `--dev-plaintext`), described by `host/openapi/service.yaml`:
//! `POST /v1/sign-requests`, `GET /v1/sign-requests/{id}[?wait_seconds=N]`,
//! `GET /v1/sign-requests?state=&key=&page_token=&page_size=`,
//! `POST /v1/sign-requests/{id}:cancel`, `GET /healthz`.
//!
//! Invariants: every request is answered as its client, found from the connection's certificate
//! alone (never from a header); an error is a JSON body `{"error": {code, recovery, message}}`
//! with the HTTP status of its code ([`status_of`]); a body over the limit is refused before
//! it is parsed.

use super::config::Client;
use super::log::{Filter, SqliteLog, Submitted};
use super::request::{check_request_id, RequestView, State, Submission};
use super::worker::{db, Workers};
use crate::api::connection::CallerId;
use axum::body::Body;
use axum::extract::{Extension, Path, Query, State as Shared};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use frostgate_common::error::{Error, ErrorCode};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Longest long poll.
pub const MAX_WAIT_SECS: u64 = 60;
/// Largest page.
pub const MAX_PAGE_SIZE: usize = 500;

/// What the handlers share.
#[derive(Debug)]
pub struct Api {
    /// The request log.
    pub log: Arc<SqliteLog>,
    /// The workers (woken on a new request; their changes end long polls).
    pub workers: Arc<Workers>,
    /// The clients by connection identity; empty with `dev`.
    pub clients: HashMap<CallerId, Client>,
    /// `--dev-plaintext`: every caller is the development client.
    pub dev: bool,
    /// Requests one client may have open.
    pub max_open_per_client: usize,
    /// The largest body.
    pub max_body_bytes: usize,
    /// Answered by `/healthz`.
    pub store: &'static str,
}

/// The HTTP status of an error code.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::RequestInvalid | ErrorCode::PsbtInvalid | ErrorCode::DerivationInvalid => StatusCode::BAD_REQUEST,
        ErrorCode::ClientNotAuthorized => StatusCode::FORBIDDEN,
        ErrorCode::RequestUnknown => StatusCode::NOT_FOUND,
        ErrorCode::RequestConflict | ErrorCode::RequestNotCancellable => StatusCode::CONFLICT,
        ErrorCode::TooManyInFlight => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An error as the API answers it.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": super::request::ErrorView::from(&self.0) });
        json(status_of(self.0.code()), &body)
    }
}

fn json(status: StatusCode, body: &impl Serialize) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (status, [(axum::http::header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

fn invalid(m: impl std::fmt::Display) -> ApiError {
    ApiError(Error::new(ErrorCode::RequestInvalid, m.to_string()))
}

impl Api {
    fn client(&self, caller: &CallerId) -> Result<Client, ApiError> {
        if self.dev {
            return Ok(Client::development());
        }
        self.clients.get(caller).cloned().ok_or_else(|| {
            ApiError(Error::new(ErrorCode::ClientNotAuthorized, "this certificate is not a configured client"))
        })
    }
}

/// The routes.
pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/v1/sign-requests", get(list).post(submit))
        .route("/v1/sign-requests/{id}", get(get_one).post(cancel))
        .route("/healthz", get(healthz))
        .with_state(api)
}

async fn submit(
    Shared(api): Shared<Arc<Api>>,
    Extension(caller): Extension<CallerId>,
    body: Body,
) -> Result<Response, ApiError> {
    let client = api.client(&caller)?;
    let bytes = axum::body::to_bytes(body, api.max_body_bytes)
        .await
        .map_err(|_| invalid(format!("the body exceeds {} bytes", api.max_body_bytes)))?;
    let submission: Submission = serde_json::from_slice(&bytes).map_err(|e| invalid(format!("body: {e}")))?;
    submission.validate()?;
    client.authorize(&submission.key, submission.kind())?;
    let max_open = api.max_open_per_client;
    let id = client.id.clone();
    let submitted = db(&api.log, move |l| l.submit(&id, &submission, max_open)).await?;
    match submitted {
        Submitted::Accepted(r) => {
            tracing::info!(client = %client.name, request = %r.submission.request_id, seq = r.seq, "request accepted");
            api.workers.wake.notify_one();
            Ok(json(StatusCode::CREATED, &r.view()))
        }
        Submitted::Existing(r) => Ok(json(StatusCode::OK, &r.view())),
    }
}

#[derive(Debug, Deserialize)]
struct Wait {
    wait_seconds: Option<u64>,
}

async fn get_one(
    Shared(api): Shared<Arc<Api>>,
    Extension(caller): Extension<CallerId>,
    Path(id): Path<String>,
    Query(wait): Query<Wait>,
) -> Result<Response, ApiError> {
    let client = api.client(&caller)?;
    check_request_id(&id)?;
    let view = wait_for(&api, &client, &id, wait.wait_seconds.unwrap_or(0)).await?;
    Ok(json(StatusCode::OK, &view))
}

/// `client`'s request `id`, once final or after `wait_seconds` (at most [`MAX_WAIT_SECS`]).
pub async fn wait_for(api: &Api, client: &Client, id: &str, wait_seconds: u64) -> Result<RequestView, ApiError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait_seconds.min(MAX_WAIT_SECS));
    let mut changed = api.workers.changed.subscribe();
    loop {
        let (who, which) = (client.id.clone(), id.to_string());
        let record = db(&api.log, move |l| l.get(&who, &which))
            .await?
            .ok_or_else(|| ApiError(Error::new(ErrorCode::RequestUnknown, format!("no request {id}"))))?;
        if record.state.is_final() || tokio::time::Instant::now() >= deadline {
            return Ok(record.view());
        }
        // Woken by any change here; polled for changes another instance makes.
        let _ = tokio::time::timeout_at(
            deadline.min(tokio::time::Instant::now() + Duration::from_millis(500)),
            changed.changed(),
        )
        .await;
    }
}

async fn cancel(
    Shared(api): Shared<Arc<Api>>,
    Extension(caller): Extension<CallerId>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let client = api.client(&caller)?;
    let Some(id) = id.strip_suffix(":cancel") else {
        return Err(ApiError(Error::new(ErrorCode::RequestInvalid, "POST /v1/sign-requests/{id}:cancel")));
    };
    check_request_id(id)?;
    let (who, which) = (client.id.clone(), id.to_string());
    let record = db(&api.log, move |l| l.cancel(&who, &which)).await?;
    api.workers.changed.send_modify(|n| *n += 1);
    Ok(json(StatusCode::OK, &record.view()))
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    state: Option<String>,
    key: Option<String>,
    page_token: Option<String>,
    page_size: Option<usize>,
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

async fn list(
    Shared(api): Shared<Arc<Api>>,
    Extension(caller): Extension<CallerId>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let client = api.client(&caller)?;
    let state = match &q.state {
        None => None,
        Some(s) => Some(State::from_name(s).ok_or_else(|| invalid(format!("state {s:?}")))?),
    };
    let after = match &q.page_token {
        None => 0,
        Some(t) => t.parse::<i64>().map_err(|_| invalid("page_token"))?,
    };
    let limit = q.page_size.unwrap_or(50).clamp(1, MAX_PAGE_SIZE);
    let filter = Filter { state, key: q.key.clone(), after, limit };
    let who = client.id.clone();
    let records = db(&api.log, move |l| l.list(&who, &filter)).await?;
    let next_page_token = (records.len() == limit).then(|| records.last().map(|r| r.seq.to_string())).flatten();
    Ok(json(StatusCode::OK, &Page { requests: records.iter().map(|r| r.view()).collect(), next_page_token }))
}

async fn healthz(Shared(api): Shared<Arc<Api>>) -> Result<Response, ApiError> {
    let counts = db(&api.log, |l| l.counts()).await?;
    let counts: serde_json::Map<String, serde_json::Value> =
        counts.into_iter().map(|(s, n)| (s.name().to_string(), n.into())).collect();
    Ok(json(StatusCode::OK, &serde_json::json!({ "status": "ok", "store": api.store, "requests": counts })))
}

/// Serves `router` on every accepted connection, each request carrying its connection's caller.
pub async fn serve(
    incoming: tokio_stream::wrappers::ReceiverStream<std::io::Result<crate::api::connection::ApiConnection>>,
    router: Router,
) {
    use tokio_stream::StreamExt;
    let mut incoming = incoming;
    while let Some(conn) = incoming.next().await {
        let Ok(conn) = conn else { continue };
        let caller = tonic::transport::server::Connected::connect_info(&conn);
        let service = hyper_util::service::TowerToHyperService::new(router.clone().layer(Extension(caller)));
        tokio::spawn(async move {
            let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            if let Err(e) = builder.serve_connection(hyper_util::rt::TokioIo::new(conn), service).await {
                tracing::debug!("HTTP connection: {e}");
            }
        });
    }
}

//! The service's JSON API over HTTPS (mutual TLS, pinned client certificates; plaintext on
//! loopback with `--dev-plaintext`), described by `host/openapi/service.json`:
//! `POST /v1/sign-requests[?wait_seconds=N]`, `GET /v1/sign-requests/{id}[?wait_seconds=N]`,
//! `GET /v1/sign-requests?state=&key=&page_token=&page_size=`,
//! `POST /v1/sign-requests/{id}:cancel`, `GET /healthz`.
//!
//! Invariants: every request is answered as its client, found from the connection's certificate
//! alone (never from a header); an error is a JSON body `{"error": {code, recovery, message}}`
//! with the HTTP status of its code ([`status_of`]); a body over the limit is refused before
//! it is parsed.

use super::handlers::{Api, ListQuery};
use super::request::Submission;
use crate::api::connection::CallerId;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, State as Shared};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use frostgate_common::error::{Error, ErrorCode};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

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
    wait: Result<Query<Wait>, QueryRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let client = api.client(&caller)?;
    let Query(wait) = wait.map_err(|e| invalid(format!("query: {e}")))?;
    let bytes = axum::body::to_bytes(body, api.max_body_bytes)
        .await
        .map_err(|_| invalid(format!("the body exceeds {} bytes", api.max_body_bytes)))?;
    let submission: Submission = serde_json::from_slice(&bytes).map_err(|e| invalid(format!("body: {e}")))?;
    let (new, view) = api.submit(&client, submission, wait.wait_seconds.unwrap_or(0)).await?;
    Ok(json(if new { StatusCode::CREATED } else { StatusCode::OK }, &view))
}

#[derive(Debug, Deserialize)]
struct Wait {
    wait_seconds: Option<u64>,
}

async fn get_one(
    Shared(api): Shared<Arc<Api>>,
    Extension(caller): Extension<CallerId>,
    Path(id): Path<String>,
    wait: Result<Query<Wait>, QueryRejection>,
) -> Result<Response, ApiError> {
    let client = api.client(&caller)?;
    let Query(wait) = wait.map_err(|e| invalid(format!("query: {e}")))?;
    Ok(json(StatusCode::OK, &api.wait_for(&client, &id, wait.wait_seconds.unwrap_or(0)).await?))
}

async fn cancel(
    Shared(api): Shared<Arc<Api>>,
    Extension(caller): Extension<CallerId>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let client = api.client(&caller)?;
    let Some(id) = id.strip_suffix(":cancel") else {
        return Err(invalid("POST /v1/sign-requests/{id}:cancel"));
    };
    Ok(json(StatusCode::OK, &api.cancel(&client, id).await?))
}

async fn list(
    Shared(api): Shared<Arc<Api>>,
    Extension(caller): Extension<CallerId>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let client = api.client(&caller)?;
    let Query(q) = q.map_err(|e| invalid(format!("query: {e}")))?;
    Ok(json(StatusCode::OK, &api.list(&client, q).await?))
}

async fn healthz(Shared(api): Shared<Arc<Api>>) -> Result<Response, ApiError> {
    Ok(json(StatusCode::OK, &api.health().await?))
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

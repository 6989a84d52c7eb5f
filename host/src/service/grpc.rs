//! The service's gRPC API (`proto/frostgate/v1/service.proto`): the operations of
//! [`super::handlers`], the caller found from the connection's certificate as for JSON.
//!
//! Invariant: an error is a status whose metadata holds the stable code and recovery class
//! (as the nodes' API), its gRPC code chosen by [`grpc_code`].

use super::handlers::{Api, ListQuery};
use super::request::{RequestView, Submission};
use crate::api::connection::CallerId;
use crate::api::pb;
use frostgate_common::error::{Error, ErrorCode};
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// The gRPC code of a service error.
pub fn grpc_code(code: ErrorCode) -> tonic::Code {
    match code {
        ErrorCode::RequestConflict => tonic::Code::AlreadyExists,
        ErrorCode::ClientNotAuthorized => tonic::Code::PermissionDenied,
        ErrorCode::RequestUnknown => tonic::Code::NotFound,
        ErrorCode::RequestNotCancellable => tonic::Code::FailedPrecondition,
        ErrorCode::RequestInvalid | ErrorCode::PsbtInvalid | ErrorCode::DerivationInvalid => {
            tonic::Code::InvalidArgument
        }
        ErrorCode::TooManyInFlight => tonic::Code::ResourceExhausted,
        ErrorCode::StoreUnavailable => tonic::Code::Unavailable,
        _ => tonic::Code::Internal,
    }
}

fn status(e: Error) -> Status {
    let with_metadata = crate::api::status(&e);
    Status::with_metadata(grpc_code(e.code()), e.message(), with_metadata.metadata().clone())
}

fn caller<T>(r: &Request<T>) -> CallerId {
    r.extensions().get::<CallerId>().cloned().unwrap_or_else(|| CallerId("unknown".into()))
}

fn opt(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn view(v: RequestView) -> pb::ServiceSignRequest {
    let o = v.outcome;
    pb::ServiceSignRequest {
        request_id: v.request_id,
        state: v.state.name().into(),
        key: v.key,
        kind: v.kind.name().into(),
        labels: v.labels.into_iter().collect(),
        created_at_ms: v.created_at_ms,
        updated_at_ms: v.updated_at_ms,
        signature: o.signature.unwrap_or_default(),
        output_key: o.output_key.unwrap_or_default(),
        psbt: o.psbt.unwrap_or_default(),
        tx: o.tx.unwrap_or_default(),
        txid: o.txid.unwrap_or_default(),
        inputs: o.inputs.into_iter().map(|n| n as u32).collect(),
        signers: o.signers.into_iter().map(u32::from).collect(),
        attempts: o.attempts,
        error: o.error.map(|e| pb::ServiceError { code: e.code, recovery: e.recovery, message: e.message }),
        refusals: o
            .refusals
            .into_iter()
            .map(|r| pb::NodeRefusal { node: u32::from(r.node), reason: r.reason })
            .collect(),
    }
}

fn submission(r: pb::SubmitRequest) -> Submission {
    let mut s = Submission {
        request_id: r.request_id,
        key: r.key,
        digest: None,
        merkle_root: None,
        untweaked: false,
        path: None,
        psbt: None,
        labels: r.labels.into_iter().collect(),
    };
    match r.target {
        Some(pb::submit_request::Target::Digest(d)) => {
            s.digest = Some(d.digest);
            s.merkle_root = opt(d.merkle_root);
            s.untweaked = d.untweaked;
            s.path = opt(d.path);
        }
        Some(pb::submit_request::Target::Psbt(p)) => s.psbt = Some(p),
        None => {}
    }
    s
}

/// The gRPC service over the shared operations.
#[derive(Debug, Clone)]
pub struct Grpc(pub Arc<Api>);

type Watch = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::ServiceSignRequest, Status>> + Send>>;

#[tonic::async_trait]
impl pb::signing_service_server::SigningService for Grpc {
    async fn submit(&self, r: Request<pb::SubmitRequest>) -> Result<Response<pb::ServiceSignRequest>, Status> {
        let client = self.0.client(&caller(&r)).map_err(status)?;
        let r = r.into_inner();
        let wait = u64::from(r.wait_seconds);
        let (_, v) = self.0.submit(&client, submission(r), wait).await.map_err(status)?;
        Ok(Response::new(view(v)))
    }

    async fn get(&self, r: Request<pb::GetSignRequest>) -> Result<Response<pb::ServiceSignRequest>, Status> {
        let client = self.0.client(&caller(&r)).map_err(status)?;
        let q = r.into_inner();
        let v = self.0.wait_for(&client, &q.request_id, u64::from(q.wait_seconds)).await.map_err(status)?;
        Ok(Response::new(view(v)))
    }

    async fn list(&self, r: Request<pb::ListSignRequests>) -> Result<Response<pb::SignRequestPage>, Status> {
        let client = self.0.client(&caller(&r)).map_err(status)?;
        let q = r.into_inner();
        let query = ListQuery {
            state: opt(q.state),
            key: opt(q.key),
            page_token: opt(q.page_token),
            page_size: Some(q.page_size as usize),
        };
        let page = self.0.list(&client, query).await.map_err(status)?;
        Ok(Response::new(pb::SignRequestPage {
            requests: page.requests.into_iter().map(view).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn cancel(&self, r: Request<pb::CancelSignRequest>) -> Result<Response<pb::ServiceSignRequest>, Status> {
        let client = self.0.client(&caller(&r)).map_err(status)?;
        let v = self.0.cancel(&client, &r.into_inner().request_id).await.map_err(status)?;
        Ok(Response::new(view(v)))
    }

    type WatchStream = Watch;

    async fn watch(&self, r: Request<pb::GetSignRequest>) -> Result<Response<Watch>, Status> {
        let client = self.0.client(&caller(&r)).map_err(status)?;
        let id = r.into_inner().request_id;
        // One call while the watch lasts.
        let admitted = self.0.admit(&client).map_err(status)?;
        let mut changes = self.0.workers.changes.subscribe(&client.id, &id);
        let first = self.0.record(&client, &id).await.map_err(status)?;
        let api = self.0.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tokio::spawn(async move {
            let _admitted = admitted;
            let mut last = first.view();
            if tx.send(Ok(view(last.clone()))).await.is_err() {
                return;
            }
            while !last.state.is_final() {
                let poll = tokio::time::Instant::now() + Duration::from_secs(1);
                // A client that went away ends its watch.
                tokio::select! {
                    _ = changes.next(poll) => {}
                    _ = tx.closed() => return,
                }
                let now = match api.record(&client, &id).await {
                    Ok(r) => r.view(),
                    Err(e) => {
                        let _ = tx.send(Err(status(e))).await;
                        return;
                    }
                };
                if now.state != last.state && tx.send(Ok(view(now.clone()))).await.is_err() {
                    return;
                }
                last = now;
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}

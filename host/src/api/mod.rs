//! The node's network API: gRPC (`proto/frostgate/v1/signer.proto`), served by the host in front
//! of its enclave and called by coordinators and DKG relays.
//!
//! Invariants: the API exposes only the network-facing subset of the boundary messages (no store
//! loading, no commits, no channel handshake), each checked on arrival ([`convert`]); it requires
//! mutual TLS with pinned certificates, except an explicit development plaintext mode on loopback
//! ([`tls`], [`server`]); connections and each caller's share of the enclave are bounded
//! ([`connection`], [`admission`]); every error carries its stable code and recovery class in the
//! status metadata.

pub mod admission;
pub mod codec;
pub mod connection;
pub mod convert;
pub mod request;
pub mod rpc;
pub mod server;
pub mod tls;

use frostgate_common::error::{Error, ErrorCode, RecoveryClass};

/// The generated gRPC code.
#[allow(missing_docs, clippy::all, clippy::pedantic, missing_debug_implementations)]
pub mod pb {
    tonic::include_proto!("frostgate.v1");
}

/// Status metadata key holding the stable error code.
pub const CODE_KEY: &str = "frostgate-error-code";
/// Status metadata key holding the recovery class.
pub const RECOVERY_KEY: &str = "frostgate-recovery";

/// Largest gRPC message either side accepts (the boundary's frame limit).
pub const MAX_MESSAGE_LEN: usize = frostgate_common::limits::MAX_FRAME_LEN;

/// An error as a gRPC status: the class picks the gRPC code, the metadata keeps the exact code.
pub fn status(e: &Error) -> tonic::Status {
    let grpc = match e.recovery_class() {
        _ if e.code() == ErrorCode::Internal => tonic::Code::Internal,
        RecoveryClass::Retry => tonic::Code::Unavailable,
        RecoveryClass::NewAttempt => tonic::Code::Aborted,
        RecoveryClass::FixRequest => tonic::Code::InvalidArgument,
        RecoveryClass::Operator => tonic::Code::FailedPrecondition,
    };
    let mut s = tonic::Status::new(grpc, e.message());
    let meta = s.metadata_mut();
    meta.insert(CODE_KEY, tonic::metadata::MetadataValue::from_static(e.code().code()));
    meta.insert(RECOVERY_KEY, tonic::metadata::MetadataValue::from_static(e.recovery_class().as_str()));
    s
}

/// A status back to an error: the node's code if it sent one, else `node_unavailable`
/// (transport failure, refused TLS handshake, a server that is not a frostgate node).
pub fn error_from_status(node: impl std::fmt::Display, s: &tonic::Status) -> Error {
    let code = s.metadata().get(CODE_KEY).and_then(|v| v.to_str().ok()).and_then(ErrorCode::from_code);
    match code {
        Some(code) => Error::new(code, s.message()),
        None => Error::new(ErrorCode::NodeUnavailable, format!("node {node}: {} ({:?})", s.message(), s.code())),
    }
}

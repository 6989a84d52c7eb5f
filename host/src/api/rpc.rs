//! The gRPC glue, generated from the boundary table: for every `Network` row, the server's RPC
//! method (check, admit, forward, convert back: [`SignerApi::serve`]) and the client's call
//! ([`NetworkRequest::send`]).
//!
//! Invariant: the set of RPCs is the set of `Network` rows. A row without its RPC in
//! `signer.proto` (or an RPC without its row) does not compile, and `tests/proto.rs` checks the
//! request and reply message of every RPC against the row's types.

use super::convert::Proto;
use super::pb;
use super::server::SignerApi;
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::protocol::*;
use tonic::{Request as GrpcRequest, Response, Status};

pub use super::request::{Client, NetworkRequest};

/// One `Network` row as `tests/proto.rs` compares it with `signer.proto`.
#[derive(Debug, Clone, Copy)]
pub struct RpcRow {
    /// The RPC (the row's name).
    pub rpc: &'static str,
    /// The generated request message's Rust type name.
    pub request_pb: &'static str,
    /// The generated reply message's Rust type name.
    pub reply_pb: &'static str,
    /// Decodes protobuf bytes as the request and checks them as the server does; on success the
    /// request, and the request again after a conversion back to protobuf and a second check
    /// (the fuzz targets and tests compare the two).
    pub decode: DecodeFn,
    /// Converts a message of this row's request or reply type to protobuf and back and says
    /// whether it came back equal; `None` for a message of any other type (the conversion
    /// round-trip test runs every generated message through every row).
    pub round_trip: RoundTripFn,
}

/// See [`RpcRow::round_trip`].
pub type RoundTripFn = fn(&Message) -> Option<bool>;

/// [`RpcRow::round_trip`] for request `Q` with reply `R`.
fn round_trip<Q, R>(m: &Message) -> Option<bool>
where
    Q: Proto + FromMessage + PartialEq,
    R: Proto + FromMessage + PartialEq,
{
    fn again<T: Proto + PartialEq>(t: T) -> bool {
        T::from_pb(t.to_pb()).is_ok_and(|u| u == t)
    }
    match Q::from_message(m.clone()) {
        Ok(q) => Some(again(q)),
        Err(_) => R::from_message(m.clone()).ok().map(again),
    }
}

/// See [`RpcRow::decode`].
pub type DecodeFn = fn(&[u8]) -> Result<(Message, Message), Error>;

/// [`RpcRow::decode`] for request `Q`.
fn decode<Q: Proto + Into<Message> + Clone>(bytes: &[u8]) -> Result<(Message, Message), Error>
where
    Q::Pb: prost::Message + Default,
{
    let pb = <Q::Pb as prost::Message>::decode(bytes)
        .map_err(|e| Error::new(ErrorCode::MalformedMessage, format!("protobuf: {e}")))?;
    let q = Q::from_pb(pb)?;
    let again = Q::from_pb(q.to_pb())?;
    Ok((q.into(), again.into()))
}

macro_rules! grpc_glue {
    (@rows [$($acc:tt)*]) => {
        grpc_glue!(@emit $($acc)*);
    };
    (@rows [$($acc:tt)*]
        $(#[doc = $doc:literal])*
        $kind:literal $name:ident ($payload:ty) {
            request, from: $from:ident, exposure: Network, ready: $ready:ident, serve: $method:ident, reply: $reply:ty,
            opens: [$($opens:ident),*], closes: [$($closes:ident),*]
        }
        $($rest:tt)*
    ) => {
        grpc_glue!(@rows [$($acc)* ($name, $method, $payload, $reply)] $($rest)*);
    };
    (@rows [$($acc:tt)*]
        $(#[doc = $doc:literal])*
        $kind:literal $name:ident ($payload:ty) { $($spec:tt)* }
        $($rest:tt)*
    ) => {
        grpc_glue!(@rows [$($acc)*] $($rest)*);
    };
    (@emit $(($name:ident, $method:ident, $payload:ty, $reply:ty))*) => {
        #[tonic::async_trait]
        impl pb::signer_server::Signer for SignerApi {
            $(
                async fn $method(
                    &self,
                    request: GrpcRequest<<$payload as Proto>::Pb>,
                ) -> Result<Response<<$reply as Proto>::Pb>, Status> {
                    self.serve::<$payload>(request).await
                }
            )*
        }

        $(
            impl NetworkRequest for $payload {
                const RPC: &'static str = stringify!($name);
                async fn send(
                    mut client: Client,
                    request: <$payload as Proto>::Pb,
                ) -> Result<Response<<$reply as Proto>::Pb>, Status> {
                    client.$method(request).await
                }
            }
        )*

        /// Every RPC of the network API, from the table.
        pub fn rpcs() -> Vec<RpcRow> {
            vec![
                $(
                    RpcRow {
                        rpc: stringify!($name),
                        request_pb: std::any::type_name::<<$payload as Proto>::Pb>(),
                        reply_pb: std::any::type_name::<<$reply as Proto>::Pb>(),
                        decode: decode::<$payload>,
                        round_trip: round_trip::<$payload, $reply>,
                    },
                )*
            ]
        }
    };
    ($($rows:tt)*) => {
        grpc_glue!(@rows [] $($rows)*);
    };
}

frostgate_common::boundary_table!(grpc_glue);

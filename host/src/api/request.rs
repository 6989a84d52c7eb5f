//! A boundary request that is also an RPC of the network API: what a client calls and a server
//! serves (implemented for every `Network` row by the glue in `rpc.rs`).

use super::convert::Proto;
use super::pb;
use frostgate_common::protocol::Request;
use std::future::Future;
use tonic::transport::Channel;
use tonic::{Response, Status};

/// The generated gRPC client.
pub type Client = pb::signer_client::SignerClient<Channel>;

/// A boundary request that is also an RPC of the network API.
pub trait NetworkRequest: Request + Proto {
    /// The RPC's name in `signer.proto`.
    const RPC: &'static str;
    /// Calls the RPC.
    fn send(
        client: Client,
        request: Self::Pb,
    ) -> impl Future<Output = Result<Response<<Self::Reply as Proto>::Pb>, Status>> + Send
    where
        Self::Reply: Proto;
}

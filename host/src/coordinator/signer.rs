//! A connection to one signer node's network API (gRPC, mutual TLS when configured).
//!
//! Callers send typed boundary requests; each is sent as the RPC of the same name and the reply
//! checked back into its typed reply ([`Proto::from_pb`]), so the coordinator and the DKG relay
//! are the same whether a node is local or remote. An unreachable node is represented, not hidden: every
//! call to it fails `node_unavailable`.

use crate::api::convert::Proto;
use crate::api::rpc::{Client, NetworkRequest};
use crate::api::tls::{self, TlsFiles};
use crate::api::{error_from_status, MAX_MESSAGE_LEN};
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::ids::ParticipantId;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// How long connecting (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One signer (cheap to clone: clones share the connection).
#[derive(Debug, Clone)]
pub struct SignerClient {
    id: ParticipantId,
    client: Result<Client, Error>,
}

impl SignerClient {
    /// Connects to a node's API at `IP:PORT` (with `tls`: mutual TLS, the node's certificate
    /// pinned); a failure is kept and reported on every call.
    pub async fn connect(id: ParticipantId, address: &str, tls: Option<&TlsFiles>) -> SignerClient {
        let client = connect(address, tls).await.map(|channel| {
            Client::new(channel).max_decoding_message_size(MAX_MESSAGE_LEN).max_encoding_message_size(MAX_MESSAGE_LEN)
        });
        let client = client
            .map_err(|e| Error::new(ErrorCode::NodeUnavailable, format!("node {id} at {address}: {}", e.message())));
        SignerClient { id, client }
    }

    /// The participant id.
    pub fn id(&self) -> ParticipantId {
        self.id
    }

    /// Whether the node was reachable when connecting.
    pub fn reachable(&self) -> bool {
        self.client.is_ok()
    }

    /// One request with a deadline: its RPC, the reply checked ([`Proto::from_pb`]).
    pub async fn call<R>(&self, request: R, timeout: Duration) -> Result<R::Reply, Error>
    where
        R: NetworkRequest,
        R::Reply: Proto,
    {
        let client = match &self.client {
            Ok(c) => c.clone(),
            Err(e) => return Err(e.clone()),
        };
        let id = self.id;
        let call = async move {
            let reply = R::send(client, request.to_pb()).await.map_err(|s| error_from_status(id, &s))?;
            R::Reply::from_pb(reply.into_inner())
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(reply) => reply,
            Err(_) => Err(Error::new(ErrorCode::RequestTimeout, format!("node {id}: no reply within {timeout:?}"))),
        }
    }
}

/// A channel to the node at `address`: plain (loopback) without `tls`, else mutual TLS with the
/// node's pinned certificate.
pub async fn connect(address: &str, tls: Option<&TlsFiles>) -> Result<Channel, Error> {
    // tonic's transport errors say "transport error"; the cause is further down the chain.
    let unavailable = |e: &dyn std::error::Error| {
        let mut text = e.to_string();
        let mut cause = e.source();
        while let Some(c) = cause {
            text.push_str(&format!(": {c}"));
            cause = c.source();
        }
        Error::new(ErrorCode::NodeUnavailable, text)
    };
    let endpoint = Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| Error::new(ErrorCode::ConfigInvalid, format!("node address {address:?}: {e}")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    let Some(files) = tls else {
        return endpoint.connect().await.map_err(|e| unavailable(&e));
    };
    let connector = tokio_rustls::TlsConnector::from(tls::client_config(files)?);
    let address = address.to_string();
    let connect = tower::service_fn(move |_: tonic::transport::Uri| {
        let (connector, address) = (connector.clone(), address.clone());
        async move {
            let tcp = tokio::net::TcpStream::connect(&address).await?;
            tcp.set_nodelay(true)?;
            // The pinned-certificate verifier ignores names; this one only fills the handshake.
            let name = rustls::pki_types::ServerName::try_from("frostgate-node")
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            let stream = connector.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    });
    endpoint.connect_with_connector(connect).await.map_err(|e| unavailable(&e))
}

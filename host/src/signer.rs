//! A connection to one signer node's network API (gRPC, mutual TLS when configured).
//!
//! Callers speak boundary [`Message`]s; each is sent as the RPC of the same name and the reply
//! checked back into a message ([`Proto::from_pb`]), so the coordinator and the DKG relay are the
//! same whether a node is local or remote. An unreachable node is represented, not hidden: every
//! call to it fails `node_unavailable`.

use crate::api::convert::Proto;
use crate::api::tls::{self, TlsFiles};
use crate::api::{error_from_status, pb, MAX_MESSAGE_LEN};
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::ids::ParticipantId;
use frostgate_common::protocol::*;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// How long connecting (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

type Client = pb::signer_client::SignerClient<Channel>;

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

    /// One request with a deadline.
    pub async fn call(&self, m: Message, timeout: Duration) -> Result<Message, Error> {
        let client = match &self.client {
            Ok(c) => c.clone(),
            Err(e) => return Err(e.clone()),
        };
        match tokio::time::timeout(timeout, dispatch(client, self.id, m)).await {
            Ok(reply) => reply,
            Err(_) => {
                Err(Error::new(ErrorCode::RequestTimeout, format!("node {}: no reply within {timeout:?}", self.id)))
            }
        }
    }
}

async fn connect(address: &str, tls: Option<&TlsFiles>) -> Result<Channel, Error> {
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

/// A reply, checked.
fn got<A: Proto>(node: ParticipantId, r: Result<tonic::Response<A::Pb>, tonic::Status>) -> Result<A, Error> {
    A::from_pb(raw(node, r)?)
}

fn raw<T>(node: ParticipantId, r: Result<tonic::Response<T>, tonic::Status>) -> Result<T, Error> {
    r.map(tonic::Response::into_inner).map_err(|s| error_from_status(node, &s))
}

fn no_outcome() -> Error {
    Error::new(ErrorCode::MalformedMessage, "reply without an outcome")
}

async fn dispatch(mut c: Client, id: ParticipantId, m: Message) -> Result<Message, Error> {
    Ok(match m {
        Message::Health => Message::HealthReply(got(id, c.health(pb::HealthRequest {}).await)?),
        Message::GetKey(r) => Message::KeyInfo(got(id, c.get_key(r.to_pb()).await)?),
        Message::GetIdentity => Message::Identity(got(id, c.get_identity(pb::GetIdentityRequest {}).await)?),
        Message::OpenSession(r) => Message::SessionOpened(got(id, c.open_session(r.to_pb()).await)?),
        Message::OpenAttempt(r) => Message::AttemptOpened(got(id, c.open_attempt(r.to_pb()).await)?),
        Message::Round1(r) => Message::Round1Reply(got(id, c.round1(r.to_pb()).await)?),
        Message::Round2(r) => Message::Round2Reply(got(id, c.round2(r.to_pb()).await)?),
        Message::VerifyShare(r) => Message::ShareVerdict(got(id, c.verify_share(r.to_pb()).await)?),
        Message::Aggregate(r) => Message::AggregateReply(got(id, c.aggregate(r.to_pb()).await)?),
        Message::AbortAttempt(r) => Message::AttemptAborted(got(id, c.abort_attempt(r.to_pb()).await)?),
        Message::CloseSession(r) => Message::SessionClosed(got(id, c.close_session(r.to_pb()).await)?),
        Message::DkgAbort(r) => Message::DkgAborted(got(id, c.dkg_abort(r.to_pb()).await)?),
        Message::DevDealerKeygen(r) => Message::KeyInfo(got(id, c.dev_dealer_keygen(r.to_pb()).await)?),
        Message::DkgStart(r) => {
            use pb::dkg_start_reply::Outcome;
            match raw(id, c.dkg_start(r.to_pb()).await)?.outcome.ok_or_else(no_outcome)? {
                Outcome::Round1(p) => Message::DkgRound1(Proto::from_pb(p)?),
                Outcome::Blame(b) => Message::DkgBlame(Proto::from_pb(b)?),
            }
        }
        Message::DkgRound2(r) => {
            use pb::dkg_round2_reply::Outcome;
            match raw(id, c.dkg_round2(r.to_pb()).await)?.outcome.ok_or_else(no_outcome)? {
                Outcome::Envelopes(e) => Message::DkgRound2Reply(Proto::from_pb(e)?),
                Outcome::Blame(b) => Message::DkgBlame(Proto::from_pb(b)?),
            }
        }
        Message::DkgFinish(r) => {
            use pb::dkg_finish_reply::Outcome;
            match raw(id, c.dkg_finish(r.to_pb()).await)?.outcome.ok_or_else(no_outcome)? {
                Outcome::Confirmation(x) => Message::DkgConfirm(Proto::from_pb(x)?),
                Outcome::Blame(b) => Message::DkgBlame(Proto::from_pb(b)?),
            }
        }
        Message::DkgActivate(r) => {
            use pb::dkg_activate_reply::Outcome;
            match raw(id, c.dkg_activate(r.to_pb()).await)?.outcome.ok_or_else(no_outcome)? {
                Outcome::Key(k) => Message::KeyInfo(Proto::from_pb(k)?),
                Outcome::Blame(b) => Message::DkgBlame(Proto::from_pb(b)?),
            }
        }
        other => {
            return Err(Error::new(
                ErrorCode::UnexpectedMessage,
                format!("{} is not part of the network API", other.info().name),
            ))
        }
    })
}

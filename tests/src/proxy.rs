//! A gRPC proxy in front of a real node: every RPC is forwarded, and a [`Tap`] may observe or
//! replace the replies of the few RPCs that release or assert something (a lying node, an
//! outside detector). The RPCs come from the boundary table (every network row), so the proxy
//! forwards a new RPC without being told.

use frostgate_common::protocol::*;
use frostgate_host::api::convert::Proto;
use frostgate_host::api::pb::{self, signer_client::SignerClient, signer_server::Signer};
use frostgate_host::api::rpc::NetworkRequest;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// What a proxy does with the RPCs that matter; the defaults forward unchanged.
pub trait Tap: Send + Sync + 'static {
    /// `GetKey`: the reply the caller sees.
    fn key(&self, info: pb::KeyInfo) -> pb::KeyInfo {
        info
    }
    /// `Aggregate`: a reply of the proxy's own instead of forwarding (`None` forwards).
    fn answer_aggregate(&self, _request: &pb::Aggregate) -> Option<pb::AggregateReply> {
        None
    }
    /// `Aggregate`: called with every reply the node gave.
    fn aggregated(&self, _request: &pb::Aggregate, _reply: &pb::AggregateReply) {}
    /// `Round2`: called with every share the node released.
    fn released(&self, _request: &pb::Round2, _reply: &pb::Round2Reply) {}
    /// `Round2`, `SignPreprocessed` and `SignBatch`: a refusal of the proxy's own instead of
    /// forwarding (`None` forwards).
    fn refuse_signing(&self) -> Option<Status> {
        None
    }
}

/// The proxy.
pub struct Proxy {
    inner: SignerClient<Channel>,
    tap: Arc<dyn Tap>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").finish_non_exhaustive()
    }
}

impl Proxy {
    /// Serves a proxy on a fresh loopback port in front of the node at `target` (`IP:PORT`,
    /// plain gRPC); returns its address. Call inside a multi-threaded runtime that outlives it.
    /// The node need not be up yet (the connection is made per call).
    pub async fn start(target: &str, tap: Arc<dyn Tap>) -> SocketAddr {
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{target}")).expect("endpoint").connect_lazy();
        Self::start_over(channel, tap).await
    }

    /// Serves a plain-gRPC proxy on a fresh loopback port in front of the node behind `channel`
    /// (e.g. mutual TLS as a coordinator, `frostgate_host::coordinator::signer::connect`).
    pub async fn start_over(channel: Channel, tap: Arc<dyn Tap>) -> SocketAddr {
        let inner = SignerClient::new(channel);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = pb::signer_server::SignerServer::new(Proxy { inner, tap });
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(server)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        addr
    }
}

/// How the proxy relays one RPC: forwarded unchanged, unless its payload overrides this.
trait Relay: NetworkRequest
where
    Self::Reply: Proto,
{
    fn relay(p: &Proxy, request: Self::Pb) -> impl Future<Output = Result<<Self::Reply as Proto>::Pb, Status>> + Send {
        let sent = Self::send(p.inner.clone(), request);
        async move { Ok(sent.await?.into_inner()) }
    }
}

/// The payloads relayed by the tapped implementations below; every other one is forwarded.
macro_rules! relay_impl {
    (KeyRef) => {};
    (Round2) => {};
    (SignPreprocessed) => {};
    (SignBatch) => {};
    (Aggregate) => {};
    ($payload:ident) => {
        impl Relay for $payload {}
    };
}

/// Implements `Signer` for `Proxy` over every network row of the boundary table (so the proxy
/// cannot miss an RPC): each RPC goes through its payload's [`Relay`].
macro_rules! proxy_glue {
    (@rows [$($acc:tt)*]) => {
        proxy_glue!(@emit $($acc)*);
    };
    (@rows [$($acc:tt)*]
        $(#[doc = $doc:literal])*
        $kind:literal $name:ident ($payload:ident) {
            request, from: $from:ident, exposure: Network, ready: $ready:ident, serve: $method:ident, reply: $reply:ty,
            opens: [$($opens:ident),*], closes: [$($closes:ident),*]
        }
        $($rest:tt)*
    ) => {
        proxy_glue!(@rows [$($acc)* ($method, $payload, $reply)] $($rest)*);
    };
    (@rows [$($acc:tt)*]
        $(#[doc = $doc:literal])*
        $kind:literal $name:ident ($payload:ty) { $($spec:tt)* }
        $($rest:tt)*
    ) => {
        proxy_glue!(@rows [$($acc)*] $($rest)*);
    };
    (@emit $(($method:ident, $payload:ident, $reply:ty))*) => {
        $( relay_impl!($payload); )*

        #[tonic::async_trait]
        impl Signer for Proxy {
            $(
                async fn $method(
                    &self,
                    r: Request<<$payload as Proto>::Pb>,
                ) -> Result<Response<<$reply as Proto>::Pb>, Status> {
                    <$payload as Relay>::relay(self, r.into_inner()).await.map(Response::new)
                }
            )*
        }
    };
    ($($rows:tt)*) => {
        proxy_glue!(@rows [] $($rows)*);
    };
}

frostgate_common::boundary_table!(proxy_glue);

impl Relay for KeyRef {
    async fn relay(p: &Proxy, r: pb::KeyRef) -> Result<pb::KeyInfo, Status> {
        let info = p.inner.clone().get_key(r).await?.into_inner();
        Ok(p.tap.key(info))
    }
}

/// A signing RPC: refused if the tap says so, else forwarded and `seen` told of the reply, in a
/// task of its own, so a caller that goes away (a killed coordinator) cannot make the proxy miss
/// what the node released.
async fn signing<Q, R, Fut>(
    p: &Proxy,
    request: Q,
    call: impl FnOnce(SignerClient<Channel>, Q) -> Fut + Send + 'static,
    seen: impl FnOnce(&dyn Tap, &Q, &R) + Send + 'static,
) -> Result<R, Status>
where
    Q: Clone + Send + 'static,
    R: Send + 'static,
    Fut: Future<Output = Result<Response<R>, Status>> + Send + 'static,
{
    if let Some(refusal) = p.tap.refuse_signing() {
        return Err(refusal);
    }
    let (inner, tap) = (p.inner.clone(), p.tap.clone());
    tokio::spawn(async move {
        let reply = call(inner, request.clone()).await?.into_inner();
        seen(tap.as_ref(), &request, &reply);
        Ok(reply)
    })
    .await
    .map_err(|e| Status::internal(e.to_string()))?
}

impl Relay for Round2 {
    async fn relay(p: &Proxy, request: pb::Round2) -> Result<pb::Round2Reply, Status> {
        signing(p, request, |mut c, r| async move { c.round2(r).await }, |tap, q, r| tap.released(q, r)).await
    }
}

impl Relay for SignPreprocessed {
    async fn relay(p: &Proxy, request: pb::SignPreprocessed) -> Result<pb::PreprocessedShare, Status> {
        signing(p, request, |mut c, r| async move { c.sign_preprocessed(r).await }, released).await
    }
}

impl Relay for SignBatch {
    async fn relay(p: &Proxy, request: pb::SignBatch) -> Result<pb::BatchSigned, Status> {
        let seen = |tap: &dyn Tap, request: &pb::SignBatch, reply: &pb::BatchSigned| {
            for (item, outcome) in request.items.iter().zip(&reply.outcomes) {
                if let Some(pb::sign_outcome::Outcome::Signed(share)) = &outcome.outcome {
                    released(tap, item, share);
                }
            }
        };
        signing(p, request, |mut c, r| async move { c.sign_batch(r).await }, seen).await
    }
}

impl Relay for Aggregate {
    async fn relay(p: &Proxy, request: pb::Aggregate) -> Result<pb::AggregateReply, Status> {
        if let Some(reply) = p.tap.answer_aggregate(&request) {
            return Ok(reply);
        }
        let (mut inner, tap) = (p.inner.clone(), p.tap.clone());
        tokio::spawn(async move {
            let reply = inner.aggregate(request.clone()).await?.into_inner();
            tap.aggregated(&request, &reply);
            Ok(reply)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
    }
}

/// Reports a share released by a one-request signing to the tap as round 2's would be.
fn released(tap: &dyn Tap, request: &pb::SignPreprocessed, reply: &pb::PreprocessedShare) {
    let round2 = pb::Round2 {
        attempt_id: request.attempt_id.clone(),
        seat: request.seat,
        mode: None,
        signing_package: request.signing_package.clone(),
    };
    let share = pb::Round2Reply {
        attempt_id: reply.attempt_id.clone(),
        seat: reply.seat,
        signature_share: reply.signature_share.clone(),
    };
    tap.released(&round2, &share);
}

//! A gRPC proxy in front of a real node: every RPC is forwarded, and a [`Tap`] may observe or
//! replace the replies of the few RPCs that release or assert something (a lying node, an
//! outside detector). The list of forwarded RPCs is the one place a test proxy names them.

use frostgate_host::api::pb::{self, signer_client::SignerClient, signer_server::Signer};
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

/// Implements `Signer` for `Proxy`: the listed RPCs forwarded unchanged, then the tapped ones.
macro_rules! signer_impl {
    (forward { $($name:ident($req:ident) -> $rep:ident;)* } tapped { $($tapped:tt)* }) => {
        #[tonic::async_trait]
        impl Signer for Proxy {
            $(
                async fn $name(&self, r: Request<pb::$req>) -> Result<Response<pb::$rep>, Status> {
                    self.inner.clone().$name(r.into_inner()).await
                }
            )*
            $($tapped)*
        }
    };
}

signer_impl! {
    forward {
        health(HealthRequest) -> HealthReply;
        get_identity(GetIdentityRequest) -> Identity;
        open_session(OpenSession) -> SessionOpened;
        open_attempt(OpenAttempt) -> AttemptRef;
        round1(SeatRef) -> Round1Reply;
        verify_share(VerifyShare) -> ShareVerdictReply;
        abort_attempt(AttemptRef) -> AttemptAborted;
        close_session(SessionRef) -> SessionRef;
        dkg_start(DkgStart) -> DkgStartReply;
        dkg_round2(DkgRound2) -> DkgRound2Reply;
        dkg_finish(DkgFinish) -> DkgFinishReply;
        dkg_activate(DkgActivate) -> DkgActivateReply;
        dkg_abort(DkgRef) -> DkgRef;
        dev_dealer_keygen(DevDealerKeygen) -> KeyInfo;
        open_psbt_session(OpenPsbtSession) -> PsbtSessionOpened;
        get_policy(GetPolicyRequest) -> PolicyInfo;
        get_audit(GetAudit) -> AuditLog;
        open_derived_session(OpenDerivedSession) -> SessionOpened;
        refresh_start(RefreshStart) -> DkgStartReply;
        refresh_activate(RefreshActivate) -> RefreshActivateReply;
        refresh_commit(RefreshCommit) -> KeyRefreshed;
        get_refresh_vote(GetRefreshVote) -> RefreshVote;
        refresh_abandon(RefreshAbandon) -> RefreshAbandoned;
        repair_start(RepairStart) -> DkgRound2Reply;
        repair_sigma(RepairSigma) -> DkgRound2Reply;
        repair_finish(RepairFinish) -> DkgActivateReply;
        attest_epoch(AttestEpoch) -> EpochStatement;
        preprocess(Preprocess) -> Preprocessed;
        close_sessions(CloseSessions) -> SessionsClosed;
    }
    tapped {
        async fn get_key(&self, r: Request<pb::KeyRef>) -> Result<Response<pb::KeyInfo>, Status> {
            let info = self.inner.clone().get_key(r.into_inner()).await?.into_inner();
            Ok(Response::new(self.tap.key(info)))
        }

        // Released shares and signatures are recorded in a task of their own, so a caller that
        // goes away (a killed coordinator) cannot make the proxy miss what the node released.
        async fn round2(&self, r: Request<pb::Round2>) -> Result<Response<pb::Round2Reply>, Status> {
            if let Some(refusal) = self.tap.refuse_signing() {
                return Err(refusal);
            }
            let (mut inner, tap, request) = (self.inner.clone(), self.tap.clone(), r.into_inner());
            tokio::spawn(async move {
                let reply = inner.round2(request.clone()).await?.into_inner();
                tap.released(&request, &reply);
                Ok(Response::new(reply))
            })
            .await
            .map_err(|e| Status::internal(e.to_string()))?
        }

        async fn sign_preprocessed(
            &self,
            r: Request<pb::SignPreprocessed>,
        ) -> Result<Response<pb::PreprocessedShare>, Status> {
            if let Some(refusal) = self.tap.refuse_signing() {
                return Err(refusal);
            }
            let (mut inner, tap, request) = (self.inner.clone(), self.tap.clone(), r.into_inner());
            tokio::spawn(async move {
                let reply = inner.sign_preprocessed(request.clone()).await?.into_inner();
                released(tap.as_ref(), &request, &reply);
                Ok(Response::new(reply))
            })
            .await
            .map_err(|e| Status::internal(e.to_string()))?
        }

        async fn sign_batch(&self, r: Request<pb::SignBatch>) -> Result<Response<pb::BatchSigned>, Status> {
            if let Some(refusal) = self.tap.refuse_signing() {
                return Err(refusal);
            }
            let (mut inner, tap, request) = (self.inner.clone(), self.tap.clone(), r.into_inner());
            tokio::spawn(async move {
                let reply = inner.sign_batch(request.clone()).await?.into_inner();
                for (item, outcome) in request.items.iter().zip(&reply.outcomes) {
                    if let Some(pb::sign_outcome::Outcome::Signed(share)) = &outcome.outcome {
                        released(tap.as_ref(), item, share);
                    }
                }
                Ok(Response::new(reply))
            })
            .await
            .map_err(|e| Status::internal(e.to_string()))?
        }

        async fn aggregate(&self, r: Request<pb::Aggregate>) -> Result<Response<pb::AggregateReply>, Status> {
            let request = r.into_inner();
            if let Some(reply) = self.tap.answer_aggregate(&request) {
                return Ok(Response::new(reply));
            }
            let (mut inner, tap) = (self.inner.clone(), self.tap.clone());
            tokio::spawn(async move {
                let reply = inner.aggregate(request.clone()).await?.into_inner();
                tap.aggregated(&request, &reply);
                Ok(Response::new(reply))
            })
            .await
            .map_err(|e| Status::internal(e.to_string()))?
        }
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

//! A lying signer node: a gRPC server in front of a real node that forwards every RPC and alters
//! the replies a compromised node would (what the coordinator must not believe).

use crate::signing::random;
use bitcoin::secp256k1::{Keypair, Message as SecpMessage, PublicKey, Secp256k1, SecretKey};
use frost_secp256k1_tr::keys::{PublicKeyPackage, VerifyingShare};
use frost_secp256k1_tr::SigningPackage;
use frostgate_host::api::pb::{self, signer_client::SignerClient, signer_server::Signer};
use std::net::SocketAddr;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// What the node lies about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lie {
    /// `GetKey`: the real package with every verifying share replaced by a random point; the
    /// verifying key (so the key id) is unchanged.
    KeyPackageShares,
    /// `Aggregate`: a valid BIP340 signature of the message under a key of the liar's own, with
    /// that key as the output key.
    AggregateOwnKey,
}

/// The lying node.
#[derive(Debug)]
pub struct Liar {
    inner: SignerClient<Channel>,
    lie: Lie,
}

fn random_point() -> Vec<u8> {
    loop {
        if let Ok(sk) = SecretKey::from_slice(&random::<32>()) {
            return PublicKey::from_secret_key(&Secp256k1::new(), &sk).serialize().to_vec();
        }
    }
}

impl Liar {
    /// Serves the liar on a fresh loopback port in front of the node at `target` (`IP:PORT`,
    /// plain gRPC); returns its address. Call inside a multi-threaded runtime that outlives it.
    pub async fn start(target: &str, lie: Lie) -> SocketAddr {
        let inner = SignerClient::connect(format!("http://{target}")).await.expect("connect to the real node");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = pb::signer_server::SignerServer::new(Liar { inner, lie });
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(server)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        addr
    }

    fn lie_about_key(&self, mut info: pb::KeyInfo) -> pb::KeyInfo {
        let real = PublicKeyPackage::deserialize(&info.public_key_package).expect("real package");
        let shares = real
            .verifying_shares()
            .keys()
            .map(|id| (*id, VerifyingShare::deserialize(&random_point()).expect("share")))
            .collect();
        let forged = PublicKeyPackage::new(shares, *real.verifying_key(), real.min_signers());
        info.public_key_package = forged.serialize().expect("serialize");
        info
    }

    fn own_signature(request: &pb::Aggregate) -> pb::AggregateReply {
        let package = SigningPackage::deserialize(&request.signing_package).expect("package");
        let secp = Secp256k1::new();
        let keypair = loop {
            if let Ok(k) = Keypair::from_seckey_slice(&secp, &random::<32>()) {
                break k;
            }
        };
        let digest: [u8; 32] = package.message().as_slice().try_into().expect("32-byte message");
        let sig = secp.sign_schnorr_no_aux_rand(&SecpMessage::from_digest(digest), &keypair);
        let (xonly, _) = keypair.x_only_public_key();
        pb::AggregateReply {
            outcome: Some(pb::aggregate_reply::Outcome::Signed(pb::aggregate_reply::Signed {
                signature: sig.as_ref().to_vec(),
                output_key: xonly.serialize().to_vec(),
            })),
        }
    }
}

/// Implements `Signer` for `Liar`: the listed RPCs forwarded unchanged, then the custom ones.
macro_rules! signer_impl {
    (forward { $($name:ident($req:ident) -> $rep:ident;)* } custom { $($custom:tt)* }) => {
        #[tonic::async_trait]
        impl Signer for Liar {
            $(
                async fn $name(&self, r: Request<pb::$req>) -> Result<Response<pb::$rep>, Status> {
                    self.inner.clone().$name(r.into_inner()).await
                }
            )*
            $($custom)*
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
        round2(Round2) -> Round2Reply;
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
    }
    custom {
        async fn get_key(&self, r: Request<pb::KeyRef>) -> Result<Response<pb::KeyInfo>, Status> {
            let info = self.inner.clone().get_key(r.into_inner()).await?.into_inner();
            Ok(Response::new(if self.lie == Lie::KeyPackageShares { self.lie_about_key(info) } else { info }))
        }

        async fn aggregate(&self, r: Request<pb::Aggregate>) -> Result<Response<pb::AggregateReply>, Status> {
            let request = r.into_inner();
            if self.lie == Lie::AggregateOwnKey {
                return Ok(Response::new(Self::own_signature(&request)));
            }
            self.inner.clone().aggregate(request).await
        }
    }
}

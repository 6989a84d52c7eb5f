//! A lying signer node: a [`Proxy`] in front of a real node that alters the replies a
//! compromised node would (what the coordinator must not believe).

use crate::proxy::{Proxy, Tap};
use crate::signing::random;
use bitcoin::secp256k1::{Keypair, Message as SecpMessage, PublicKey, Secp256k1, SecretKey};
use frost_secp256k1_tr::keys::{PublicKeyPackage, VerifyingShare};
use frost_secp256k1_tr::SigningPackage;
use frostgate_host::api::pb;
use std::net::SocketAddr;
use std::sync::Arc;

/// What the node lies about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lie {
    /// `GetKey`: the real package with every verifying share replaced by a random point; the
    /// verifying key (so the key id) is unchanged.
    KeyPackageShares,
    /// `Aggregate`: a valid BIP340 signature of the message under a key of the liar's own, with
    /// that key as the output key.
    AggregateOwnKey,
    /// Every signing request: refused as a bad request (`derivation_invalid`, recovery class
    /// `fix_request`), as if the request itself were wrong.
    RefuseAsBadRequest,
}

/// The lying node's tap.
#[derive(Debug)]
pub struct Liar {
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
        Proxy::start(target, Arc::new(Liar { lie })).await
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

impl Tap for Liar {
    fn key(&self, info: pb::KeyInfo) -> pb::KeyInfo {
        if self.lie == Lie::KeyPackageShares {
            self.lie_about_key(info)
        } else {
            info
        }
    }

    fn answer_aggregate(&self, request: &pb::Aggregate) -> Option<pb::AggregateReply> {
        (self.lie == Lie::AggregateOwnKey).then(|| Self::own_signature(request))
    }

    fn refuse_signing(&self) -> Option<tonic::Status> {
        (self.lie == Lie::RefuseAsBadRequest).then(|| {
            frostgate_host::api::status(&frostgate_common::error::Error::new(
                frostgate_common::error::ErrorCode::DerivationInvalid,
                "made up by a lying node",
            ))
        })
    }
}

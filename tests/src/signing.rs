//! Drives signing through the boundary messages, either in process (the enclave's `Service`) or
//! over the real channel, and checks results with independent implementations: libsecp256k1
//! (BIP340 verification) and rust-bitcoin (BIP341 output keys).

use bitcoin::hashes::Hash;
use bitcoin::key::TapTweak;
use bitcoin::secp256k1::{schnorr, Message as SecpMessage, Secp256k1, XOnlyPublicKey};
use frost_secp256k1_tr::round1::SigningCommitments;
use frost_secp256k1_tr::{Identifier, SigningPackage};
use frostgate_common::bounded::{SignatureShareBytes, Signers, SigningPackageBytes};
use frostgate_common::channel::Channel;
use frostgate_common::error::Error;
use frostgate_common::ids::{AttemptId, KeyId, ParticipantId, SessionId};
use frostgate_common::protocol::SignerShares;
use frostgate_common::protocol::*;
use frostgate_enclave::service::Service;
use frostgate_host::api::convert::Proto;
use frostgate_host::api::rpc::NetworkRequest;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Where requests go.
#[derive(Debug, Clone)]
pub enum Caller {
    /// In process, straight into the enclave's request handler.
    Service(Arc<Service>),
    /// In process, recording the frame encoding of every request and reply.
    Recording(Arc<Service>, Arc<std::sync::Mutex<Vec<Vec<u8>>>>),
    /// Over the real channel to an enclave process.
    Channel(Channel),
    /// Over a node's network API (gRPC).
    Node(frostgate_host::coordinator::signer::SignerClient),
}

impl Caller {
    /// Sends a typed request; an `Error` reply becomes `Err`, the reply is checked to be the one
    /// the boundary table names.
    pub async fn request<R>(&self, r: R) -> Result<R::Reply, Error>
    where
        R: NetworkRequest,
        R::Reply: Proto,
    {
        match self {
            Caller::Channel(c) => c.request(r, Some(std::time::Duration::from_secs(60))).await,
            Caller::Node(c) => c.call(r, std::time::Duration::from_secs(60)).await,
            _ => reply_of::<R>(self.call(r.into()).await.unwrap_or_else(Message::Error)),
        }
    }

    /// Sends any message (also ones no honest host sends); an `Error` reply becomes `Err`. Over
    /// a node's API only typed requests exist: use [`Caller::request`].
    pub async fn call(&self, m: Message) -> Result<Message, Error> {
        let reply = match self {
            Caller::Service(s) => s.handle(m).await,
            Caller::Recording(s, frames) => {
                let encode = |m: &Message| {
                    frostgate_common::frame::encode(&frostgate_common::frame::Frame {
                        request_id: 1,
                        message: m.clone(),
                    })
                    .expect("every message encodes")
                };
                let request = encode(&m);
                let reply = s.handle(m).await;
                let mut f = frames.lock().expect("lock");
                f.push(request);
                f.push(encode(&reply));
                reply
            }
            Caller::Channel(c) => return c.call(m, Some(std::time::Duration::from_secs(60))).await,
            Caller::Node(_) => panic!("raw messages do not exist on the network API: use Caller::request"),
        };
        match reply {
            Message::Error(e) => Err(e),
            other => Ok(other),
        }
    }
}

/// Random bytes from the OS.
pub fn random<const N: usize>() -> [u8; N] {
    let hex = crate::token::random_hex(N);
    let mut out = [0u8; N];
    hex::decode_to_slice(hex, &mut out).expect("hex");
    out
}

/// A participant id.
pub fn pid(n: u16) -> ParticipantId {
    ParticipantId::new(n).expect("participant")
}

/// Creates a dealer key held by the callee.
pub async fn dealer(c: &Caller, threshold: u16, participants: u16) -> KeyInfo {
    c.request(DevDealerKeygen { threshold, participants }).await.expect("dealer")
}

/// Opens a session; returns its id and output key.
pub async fn open_session(
    c: &Caller,
    key: KeyId,
    message: [u8; 32],
    mode: TaprootMode,
) -> Result<(SessionId, [u8; 32]), Error> {
    let session = SessionId::from_bytes(random());
    let o = c.request(OpenSession { session, key, message, mode }).await?;
    Ok((session, o.output_key))
}

/// Opens an attempt with a fresh id.
pub async fn open_attempt(c: &Caller, session: SessionId, signers: &[ParticipantId]) -> Result<AttemptId, Error> {
    let attempt = AttemptId::from_bytes(random());
    let signers = Signers::new(signers.to_vec()).expect("bound");
    let opened = c.request(OpenAttempt { session, attempt, signers }).await?;
    assert_eq!(opened.attempt, attempt);
    Ok(attempt)
}

/// Round 1 for one seat.
pub async fn round1(c: &Caller, attempt: AttemptId, seat: ParticipantId) -> Result<Vec<u8>, Error> {
    Ok(c.request(SeatRef { attempt, seat }).await?.commitments.into_inner())
}

/// Builds a signing package from commitments by seat (the coordinator's job).
pub fn package(commitments: &BTreeMap<ParticipantId, Vec<u8>>, message: &[u8]) -> Vec<u8> {
    let map: BTreeMap<Identifier, SigningCommitments> = commitments
        .iter()
        .map(|(p, c)| {
            (Identifier::try_from(p.get()).expect("id"), SigningCommitments::deserialize(c).expect("commitments"))
        })
        .collect();
    SigningPackage::new(map, message).serialize().expect("package")
}

/// Round 2 for one seat.
pub async fn round2(
    c: &Caller,
    attempt: AttemptId,
    seat: ParticipantId,
    mode: TaprootMode,
    pkg: &[u8],
) -> Result<Vec<u8>, Error> {
    let signing_package = SigningPackageBytes::new(pkg.to_vec()).expect("bound");
    Ok(c.request(Round2 { attempt, seat, mode, signing_package }).await?.signature_share.into_inner())
}

/// Builds the share list for aggregation.
pub fn shares(list: &BTreeMap<ParticipantId, Vec<u8>>) -> SignerShares {
    SignerShares::new(
        list.iter()
            .map(|(p, s)| SignerShare {
                signer: *p,
                signature_share: SignatureShareBytes::new(s.clone()).expect("bound"),
            })
            .collect::<Vec<_>>(),
    )
    .expect("bound")
}

/// Aggregates.
pub async fn aggregate(
    c: &Caller,
    attempt: AttemptId,
    mode: TaprootMode,
    pkg: &[u8],
    list: &BTreeMap<ParticipantId, Vec<u8>>,
) -> Result<AggregateOutcome, Error> {
    c.request(Aggregate {
        attempt,
        mode,
        signing_package: SigningPackageBytes::new(pkg.to_vec()).expect("bound"),
        shares: shares(list),
    })
    .await
}

/// Verifies one share through the enclave.
pub async fn verify_share(
    c: &Caller,
    attempt: AttemptId,
    pkg: &[u8],
    signer: ParticipantId,
    share: &[u8],
) -> Result<ShareVerdict, Error> {
    c.request(VerifyShare {
        attempt,
        signing_package: SigningPackageBytes::new(pkg.to_vec()).expect("bound"),
        share: SignerShare { signer, signature_share: SignatureShareBytes::new(share.to_vec()).expect("bound") },
    })
    .await
}

/// A prepared attempt: session, attempt, commitments, package.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The session.
    pub session: SessionId,
    /// The attempt.
    pub attempt: AttemptId,
    /// The session's output key.
    pub output_key: [u8; 32],
    /// The message.
    pub message: [u8; 32],
    /// The mode.
    pub mode: TaprootMode,
    /// Commitments by seat.
    pub commitments: BTreeMap<ParticipantId, Vec<u8>>,
    /// The signing package.
    pub package: Vec<u8>,
}

/// Opens a session and an attempt and runs round 1 for every signer.
pub async fn prepare(c: &Caller, key: KeyId, signers: &[ParticipantId], mode: TaprootMode) -> Prepared {
    let message = random::<32>();
    let (session, output_key) = open_session(c, key, message, mode).await.expect("session");
    let attempt = open_attempt(c, session, signers).await.expect("attempt");
    let mut commitments = BTreeMap::new();
    for s in signers {
        commitments.insert(*s, round1(c, attempt, *s).await.expect("round 1"));
    }
    let package = package(&commitments, &message);
    Prepared { session, attempt, output_key, message, mode, commitments, package }
}

/// Runs round 2 for every signer.
pub async fn sign_all(c: &Caller, p: &Prepared) -> BTreeMap<ParticipantId, Vec<u8>> {
    let mut out = BTreeMap::new();
    for s in p.commitments.keys() {
        out.insert(*s, round2(c, p.attempt, *s, p.mode, &p.package).await.expect("round 2"));
    }
    out
}

/// BIP340 verification by libsecp256k1. Deliberately not the product's own wrapper
/// (`frostgate_host::coordinator::libsecp_verifies`): tests check frostgate's output with code
/// that frostgate does not ship.
pub fn libsecp_verifies(signature: &Bip340Signature, message: &[u8; 32], xonly: &[u8; 32]) -> bool {
    let secp = Secp256k1::verification_only();
    let (Ok(sig), Ok(key)) = (schnorr::Signature::from_slice(&signature.to_bytes()), XOnlyPublicKey::from_slice(xonly))
    else {
        return false;
    };
    secp.verify_schnorr(&sig, &SecpMessage::from_digest(*message), &key).is_ok()
}

/// The BIP341 output key of an internal key, computed by rust-bitcoin.
pub fn bitcoin_output_key(internal: &[u8; 32], mode: &TaprootMode) -> [u8; 32] {
    let secp = Secp256k1::verification_only();
    let key = XOnlyPublicKey::from_slice(internal).expect("x-only key");
    match mode {
        TaprootMode::Untweaked => key.serialize(),
        TaprootMode::Bip86 => key.tap_tweak(&secp, None).0.to_x_only_public_key().serialize(),
        TaprootMode::ScriptTree { merkle_root } => {
            let root = bitcoin::TapNodeHash::from_byte_array(*merkle_root);
            key.tap_tweak(&secp, Some(root)).0.to_x_only_public_key().serialize()
        }
    }
}

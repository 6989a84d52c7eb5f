//! The outside double-release detector: it sits in front of every node (a [`Tap`] per node) and
//! sees every share a node releases and every signature any node aggregates, and it checks every
//! signature a coordinator prints. It knows nothing of frostgate's internals: only FROST's public
//! encodings and libsecp256k1.

use crate::proxy::Tap;
use bitcoin::secp256k1::{schnorr::Signature, Message, Secp256k1, XOnlyPublicKey};
use frost_secp256k1_tr::{Identifier, SigningPackage};
use frostgate_host::api::pb;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A violation of what the soak must never see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// One nonce commitment of one signer answered with two different shares.
    DoubleRelease { node: u16, commitment: String },
    /// Two signatures with the same nonce point R over different messages.
    NonceReuse { r: String },
    /// A signature that does not verify under the output key it was given with.
    InvalidSignature { source: String, detail: String },
    /// A released share or aggregate whose request the detector cannot read (should not happen),
    /// or a driver step that failed.
    Unreadable { what: String },
    /// A node not ready within the bound after a restart (a store that does not verify against
    /// its anchor keeps its node from ever being ready).
    NotReady { node: u16, cycle: u32, action: String, log_tail: String },
    /// A node not restarted in this cycle refusing for a store verdict (it would stay so).
    Refusing { node: u16, cycle: u32, code: String },
    /// A node's store above the bound that compaction keeps it under.
    StoreGrowth { node: u16, rows: u64, bound: u64 },
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Violation::DoubleRelease { node, commitment } => {
                write!(f, "double release: node {node} gave two shares for commitment {commitment}")
            }
            Violation::NonceReuse { r } => write!(f, "nonce reuse: R {r} signs two different messages"),
            Violation::InvalidSignature { source, detail } => write!(f, "invalid signature from {source}: {detail}"),
            Violation::Unreadable { what } => write!(f, "unreadable {what}"),
            Violation::NotReady { node, cycle, action, log_tail } => {
                write!(f, "node {node} not ready after cycle {cycle} ({action}):\n{log_tail}")
            }
            Violation::Refusing { node, cycle, code } => {
                write!(f, "node {node} refuses with {code} at cycle {cycle} (a store verdict on a live node)")
            }
            Violation::StoreGrowth { node, rows, bound } => {
                write!(f, "store growth: node {node} holds {rows} records (bound {bound})")
            }
        }
    }
}

#[derive(Debug, Default)]
struct Seen {
    /// Output keys signatures must be under (any key when empty).
    keys: Vec<[u8; 32]>,
    /// (node, serialized commitments) -> the share released for it.
    shares: HashMap<(u16, Vec<u8>), Vec<u8>>,
    /// R (32 bytes) -> (message, signature).
    signatures: HashMap<[u8; 32], ([u8; 32], [u8; 64])>,
    shares_released: u64,
    violations: Vec<Violation>,
}

/// Counts for the summary line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Shares released (repeats of the same share included).
    pub shares: u64,
    /// Distinct signatures seen.
    pub signatures: u64,
}

/// The detector (shared by every node's tap).
#[derive(Debug, Default)]
pub struct Detector {
    seen: Mutex<Seen>,
}

impl Detector {
    /// A tap for node `node` (its participant id).
    pub fn tap(self: &Arc<Self>, node: u16) -> Arc<dyn Tap> {
        Arc::new(NodeTap { node, detector: self.clone() })
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// From now on a signature counts only under `output_key` (or another key expected so far).
    pub fn expect_output_key(&self, output_key: [u8; 32]) {
        self.seen().keys.push(output_key);
    }

    /// Every violation so far.
    pub fn violations(&self) -> Vec<Violation> {
        self.seen().violations.clone()
    }

    /// Records a violation found elsewhere (the driver's checks).
    pub fn report(&self, v: Violation) {
        self.seen().violations.push(v);
    }

    /// The counts so far.
    pub fn counts(&self) -> Counts {
        let s = self.seen();
        Counts { shares: s.shares_released, signatures: s.signatures.len() as u64 }
    }

    /// Checks a BIP340 signature of `message` under `output_key` (libsecp256k1) and that its R
    /// signs no other message.
    pub fn signature(&self, source: &str, message: &[u8], signature: &[u8], output_key: &[u8]) {
        let checked = (|| -> Result<([u8; 32], [u8; 64]), String> {
            let message: [u8; 32] = message.try_into().map_err(|_| "message is not 32 bytes".to_string())?;
            let sig = Signature::from_slice(signature).map_err(|e| e.to_string())?;
            let key = XOnlyPublicKey::from_slice(output_key).map_err(|e| e.to_string())?;
            let expected = self.seen().keys.clone();
            if !expected.is_empty() && !expected.contains(&key.serialize()) {
                return Err(format!("under {}, not the key being signed with", hex::encode(output_key)));
            }
            Secp256k1::verification_only()
                .verify_schnorr(&sig, &Message::from_digest(message), &key)
                .map_err(|e| format!("{e} (message {}, key {})", hex::encode(message), hex::encode(output_key)))?;
            Ok((message, sig.serialize()))
        })();
        let mut s = self.seen();
        match checked {
            Err(detail) => s.violations.push(Violation::InvalidSignature { source: source.into(), detail }),
            Ok((message, sig)) => {
                let r: [u8; 32] = sig[..32].try_into().expect("64-byte signature");
                match s.signatures.get(&r) {
                    Some((m, _)) if *m != message => s.violations.push(Violation::NonceReuse { r: hex::encode(r) }),
                    Some(_) => {}
                    None => {
                        s.signatures.insert(r, (message, sig));
                    }
                }
            }
        }
    }

    fn released(&self, node: u16, request: &pb::Round2, reply: &pb::Round2Reply) {
        let seat = u16::try_from(request.seat).ok();
        let commitment = seat.and_then(|seat| Identifier::try_from(seat).ok()).and_then(|id| {
            let package = SigningPackage::deserialize(&request.signing_package).ok()?;
            package.signing_commitments().get(&id)?.serialize().ok()
        });
        let mut s = self.seen();
        s.shares_released += 1;
        let Some(commitment) = commitment else {
            s.violations.push(Violation::Unreadable { what: format!("round 2 request to node {node}") });
            return;
        };
        let share = reply.signature_share.clone();
        match s.shares.get(&(node, commitment.clone())) {
            Some(previous) if *previous != share => {
                s.violations.push(Violation::DoubleRelease { node, commitment: hex::encode(&commitment) })
            }
            Some(_) => {}
            None => {
                s.shares.insert((node, commitment), share);
            }
        }
    }
}

struct NodeTap {
    node: u16,
    detector: Arc<Detector>,
}

impl Tap for NodeTap {
    fn released(&self, request: &pb::Round2, reply: &pb::Round2Reply) {
        self.detector.released(self.node, request, reply);
    }

    fn aggregated(&self, request: &pb::Aggregate, reply: &pb::AggregateReply) {
        let Some(pb::aggregate_reply::Outcome::Signed(signed)) = &reply.outcome else { return };
        match SigningPackage::deserialize(&request.signing_package) {
            Ok(package) => self.detector.signature(
                &format!("node {} aggregate", self.node),
                package.message(),
                &signed.signature,
                &signed.output_key,
            ),
            Err(_) => {
                self.detector.report(Violation::Unreadable { what: format!("aggregate request to node {}", self.node) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// BIP340 signing with a chosen nonce (what a double release lets anyone do).
    fn sign_with_nonce(
        keypair: &bitcoin::secp256k1::Keypair,
        nonce: &bitcoin::secp256k1::SecretKey,
        message: [u8; 32],
    ) -> [u8; 64] {
        use bitcoin::hashes::{sha256, Hash, HashEngine};
        use bitcoin::secp256k1::{Parity, Scalar};
        let secp = Secp256k1::new();
        let (r_point, r_parity) = nonce.x_only_public_key(&secp);
        let k = if r_parity == Parity::Odd { nonce.negate() } else { *nonce };
        let (p, p_parity) = keypair.x_only_public_key();
        let x = if p_parity == Parity::Odd { keypair.secret_key().negate() } else { keypair.secret_key() };
        let tag = sha256::Hash::hash(b"BIP0340/challenge");
        let mut engine = sha256::Hash::engine();
        for part in
            [tag.as_byte_array().as_slice(), tag.as_byte_array(), &r_point.serialize(), &p.serialize(), &message]
        {
            engine.input(part);
        }
        let e = Scalar::from_be_bytes(sha256::Hash::from_engine(engine).to_byte_array()).expect("challenge below n");
        // s = k + e*x with x the key for the even-y public key.
        let s = k.add_tweak(&Scalar::from(x.mul_tweak(&e).expect("e*x"))).expect("s");
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&r_point.serialize());
        sig[32..].copy_from_slice(&s.secret_bytes());
        sig
    }

    /// The detector is not vacuous: a second, different share for one commitment and a second
    /// message under one R are reported; a repeat of the same share or signature is not.
    #[test]
    fn double_releases_and_nonce_reuse_are_reported() {
        use bitcoin::secp256k1::{Keypair, SecretKey};
        let d = Arc::new(Detector::default());
        // A real signing package with node 1's commitment.
        let mut rng = rand_core::OsRng;
        let (shares, _) = frost_secp256k1_tr::keys::generate_with_dealer(
            3,
            2,
            frost_secp256k1_tr::keys::IdentifierList::Default,
            rng,
        )
        .expect("dealer");
        let id = Identifier::try_from(1u16).expect("id");
        let key = frost_secp256k1_tr::keys::KeyPackage::try_from(shares[&id].clone()).expect("key package");
        let (_, commitments) = frost_secp256k1_tr::round1::commit(key.signing_share(), &mut rng);
        let package = SigningPackage::new([(id, commitments)].into(), &[7u8; 32]);
        let round2 =
            pb::Round2 { seat: 1, signing_package: package.serialize().expect("package"), ..Default::default() };
        let reply = |b: u8| pb::Round2Reply { signature_share: vec![b; 32], ..Default::default() };
        d.released(1, &round2, &reply(1));
        d.released(1, &round2, &reply(1));
        assert!(d.violations().is_empty(), "a repeat of the same share is no violation");
        d.released(1, &round2, &reply(2));
        assert!(
            matches!(d.violations().last(), Some(Violation::DoubleRelease { node: 1, .. })),
            "{:?}",
            d.violations()
        );

        let secp = Secp256k1::new();
        let keypair = Keypair::from_secret_key(&secp, &SecretKey::from_slice(&[3u8; 32]).expect("key"));
        let (xonly, _) = keypair.x_only_public_key();
        let sig = secp.sign_schnorr_no_aux_rand(&Message::from_digest([1u8; 32]), &keypair);
        let before = d.violations().len();
        d.signature("test", &[1u8; 32], sig.as_ref(), &xonly.serialize());
        d.signature("test", &[1u8; 32], sig.as_ref(), &xonly.serialize());
        assert_eq!(d.violations().len(), before, "a valid signature, seen twice");
        d.signature("test", &[2u8; 32], sig.as_ref(), &xonly.serialize());
        assert!(matches!(d.violations().last(), Some(Violation::InvalidSignature { .. })));
        // A valid signature under a key other than the one being signed with.
        let other = Detector::default();
        other.expect_output_key([7; 32]);
        other.signature("test", &[1u8; 32], sig.as_ref(), &xonly.serialize());
        assert!(matches!(other.violations().last(), Some(Violation::InvalidSignature { .. })));
        // Two valid signatures of different messages with one nonce: the second is reported.
        let nonce = SecretKey::from_slice(&[5u8; 32]).expect("nonce");
        let first = sign_with_nonce(&keypair, &nonce, [1u8; 32]);
        let second = sign_with_nonce(&keypair, &nonce, [2u8; 32]);
        let before = d.violations().len();
        d.signature("test", &[1u8; 32], &first, &xonly.serialize());
        assert_eq!(d.violations().len(), before, "the hand-made signature verifies: {:?}", d.violations());
        d.signature("test", &[2u8; 32], &second, &xonly.serialize());
        assert_eq!(d.violations().len(), before + 1, "{:?}", d.violations());
        assert!(matches!(d.violations().last(), Some(Violation::NonceReuse { .. })), "{:?}", d.violations());
        assert_eq!(d.counts().shares, 3);
    }
}

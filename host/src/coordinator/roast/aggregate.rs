//! Aggregation and blame, off the signing path: the coordinator aggregates the attempt's shares
//! itself and verifies the signature with libsecp256k1 under the output key it computed; only
//! when that fails are the shares checked one by one, to name the culprits.

use super::evidence::{Evidence, Reason, Step};
use crate::coordinator::taproot::Tweaked;
use bitcoin::secp256k1::{schnorr, Message as SecpMessage, Secp256k1, XOnlyPublicKey};
use frost_secp256k1_tr::round2::SignatureShare;
use frost_secp256k1_tr::{Identifier, SigningPackage};
use frostgate_common::ids::{AttemptId, ParticipantId};
use frostgate_common::protocol::Bip340Signature;
use std::collections::BTreeMap;

/// The BIP340 signature the shares aggregate to under the tweaked package (FROST's aggregation,
/// as the enclave's `Aggregate` does it); `None` if a share does not decode or they do not
/// aggregate.
pub(super) fn aggregate(
    package: &SigningPackage,
    shares: &BTreeMap<ParticipantId, Vec<u8>>,
    public: &Tweaked,
) -> Option<Bip340Signature> {
    let mut map = BTreeMap::new();
    for (p, share) in shares {
        map.insert(Identifier::try_from(p.get()).ok()?, SignatureShare::deserialize(share).ok()?);
    }
    let sig =
        frost_core::aggregate_custom(package, &map, &public.public, frost_core::CheaterDetection::Disabled).ok()?;
    let bytes = sig.serialize().ok()?;
    // frost-secp256k1-tr serializes a signature as BIP340's 64 bytes: r (x only), then s.
    let (r, s) = (bytes.get(..32)?, bytes.get(32..64)?);
    Some(Bip340Signature { r: r.try_into().ok()?, s: s.try_into().ok()? })
}

/// Every share that does not verify against the key's own (tweaked) public package, as evidence.
pub(super) fn invalid_shares(
    shares: &BTreeMap<ParticipantId, Vec<u8>>,
    public: &Tweaked,
    package: &SigningPackage,
    attempt: AttemptId,
    package_hash: [u8; 32],
) -> Vec<Evidence> {
    let tweaked = &public.public;
    let mut invalid = Vec::new();
    for (p, share) in shares {
        let valid = Identifier::try_from(p.get()).ok().and_then(|id| {
            let s = SignatureShare::deserialize(share).ok()?;
            let vs = tweaked.verifying_shares().get(&id)?;
            frost_core::verify_signature_share(id, vs, &s, package, tweaked.verifying_key()).ok()
        });
        if valid.is_none() {
            invalid.push(Evidence {
                signer: p.get(),
                reason: Reason::InvalidShare,
                step: Step::Round2,
                code: None,
                attempt: Some(attempt),
                share: Some(share.clone()),
                package_sha256: Some(package_hash),
                message: None,
            });
        }
    }
    invalid
}

pub(super) fn sha256(data: &[u8]) -> [u8; 32] {
    use bitcoin::hashes::{sha256, Hash};
    sha256::Hash::hash(data).to_byte_array()
}

/// BIP340 verification by libsecp256k1.
pub fn libsecp_verifies(signature: &Bip340Signature, message: &[u8; 32], xonly: &[u8; 32]) -> bool {
    let secp = Secp256k1::verification_only();
    let (Ok(sig), Ok(key)) = (schnorr::Signature::from_slice(&signature.to_bytes()), XOnlyPublicKey::from_slice(xonly))
    else {
        return false;
    };
    secp.verify_schnorr(&sig, &SecpMessage::from_digest(*message), &key).is_ok()
}

//! A key's public material and the package consensus: the one public key package that at least
//! `threshold` nodes return byte for byte.

use super::evidence::{Evidence, Reason, Step};
use super::request::Settings;
use crate::coordinator::signer::SignerClient;
use crate::coordinator::taproot::{x_only, TweakCache, Tweaked};
use frost_secp256k1_tr::keys::PublicKeyPackage;
use frost_secp256k1_tr::Identifier;
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::ids::{KeyId, ParticipantId};
use frostgate_common::protocol::{KeyRef, TaprootMode};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A key's public material, fetched once and reused across signings (public data only).
///
/// Invariant: the package is the only one that at least `threshold` nodes returned byte for
/// byte, whose verifying key is the key id and whose threshold is the cluster's (from the
/// operator's cluster file, never from a node), so fewer than `threshold` lying nodes cannot
/// substitute it; nodes that returned another package are excluded from every signing with it.
#[derive(Debug)]
pub struct KeyMaterial {
    public: PublicKeyPackage,
    threshold: u16,
    disagreeing: Vec<Evidence>,
    tweaked: TweakCache,
}

impl KeyMaterial {
    /// Fetches the key's public key package from every signer and keeps the one that at least
    /// `threshold` of them agree on (see the type's invariant).
    pub async fn fetch(
        signers: &[Arc<SignerClient>],
        key: &KeyId,
        threshold: u16,
        settings: Settings,
    ) -> Result<Arc<KeyMaterial>, Error> {
        let (public, disagreeing) = public_key(signers, key, threshold, settings).await?;
        Ok(Arc::new(KeyMaterial { public, threshold, disagreeing, tweaked: TweakCache::default() }))
    }

    /// The agreed package's threshold.
    pub fn threshold(&self) -> u16 {
        self.threshold
    }

    /// The agreed package's encoding.
    pub fn public_key_package_bytes(&self) -> Result<Vec<u8>, Error> {
        self.public.serialize().map_err(|e| Error::new(ErrorCode::InvalidEncoding, format!("public key package: {e}")))
    }

    /// The participants of the agreed package, ascending.
    pub fn participants(&self) -> Vec<u16> {
        (1..=frostgate_common::limits::MAX_PARTICIPANTS)
            .filter(|&n| Identifier::try_from(n).is_ok_and(|i| self.public.verifying_shares().contains_key(&i)))
            .collect()
    }

    /// Nodes that returned another package than the agreed one, with evidence.
    pub fn disagreeing(&self) -> &[Evidence] {
        &self.disagreeing
    }

    /// The x-only output key for `mode`, computed from the agreed package.
    pub fn output_key(&self, mode: &TaprootMode) -> Result<[u8; 32], Error> {
        self.tweaked(mode).map(|t| t.output_key)
    }

    /// The group key (SEC1 compressed, the full point: BIP32 works on points, not x-only keys).
    pub fn group_key(&self) -> Result<Vec<u8>, Error> {
        self.public
            .verifying_key()
            .serialize()
            .map_err(|e| Error::new(ErrorCode::InvalidEncoding, format!("verifying key: {e}")))
    }

    /// The package tweaked for `mode` (computed once per mode).
    fn tweaked(&self, mode: &TaprootMode) -> Result<Arc<Tweaked>, Error> {
        self.tweaked.get(&self.public, &[], mode)
    }

    /// The child at `path` (the root when empty) tweaked for `mode`.
    pub(super) fn tweaked_at(&self, path: &[u32], mode: &TaprootMode) -> Result<Arc<Tweaked>, Error> {
        self.tweaked.get(&self.public, path, mode)
    }
}

/// Asks every signer for the key's package, then [`agree`]s on one.
async fn public_key(
    signers: &[Arc<SignerClient>],
    key: &KeyId,
    threshold: u16,
    settings: Settings,
) -> Result<(PublicKeyPackage, Vec<Evidence>), Error> {
    let mut asks = tokio::task::JoinSet::new();
    for s in signers {
        let (s, key) = (s.clone(), *key);
        asks.spawn(async move {
            let reply = s.call(KeyRef { key }, settings.signer_timeout).await;
            (s.id(), reply.map(|info| info.public_key_package.into_inner()))
        });
    }
    let mut replies = Vec::new();
    while let Some(r) = asks.join_next().await {
        replies.extend(r.ok());
    }
    replies.sort_by_key(|(p, _)| *p);
    agree(replies, key, threshold)
}

/// The package consensus (pure): the one package that at least `threshold` of the replies carry
/// identically (verifying key = `key`, threshold = `threshold`), and evidence against every node
/// that answered with anything else. Two packages each backed by `threshold` nodes (impossible
/// with fewer than `threshold` liars) fail closed.
pub(super) fn agree(
    replies: Vec<(ParticipantId, Result<Vec<u8>, Error>)>,
    key: &KeyId,
    threshold: u16,
) -> Result<(PublicKeyPackage, Vec<Evidence>), Error> {
    let mut by_package: BTreeMap<Vec<u8>, Vec<ParticipantId>> = BTreeMap::new();
    let mut disagreeing = Vec::new();
    let mut last = Error::new(ErrorCode::NodeUnavailable, "no signer reachable");
    let mismatch = |signer: ParticipantId, why: String| Evidence {
        signer: signer.get(),
        reason: Reason::KeyPackageMismatch,
        step: Step::GetKey,
        code: None,
        attempt: None,
        share: None,
        package_sha256: None,
        message: Some(why),
    };
    for (id, reply) in replies {
        let bytes = match reply {
            Ok(bytes) => bytes,
            Err(e) => {
                last = e;
                continue;
            }
        };
        match PublicKeyPackage::deserialize(&bytes) {
            Ok(p) if x_only(p.verifying_key()).ok() != Some(*key.as_bytes()) => {
                disagreeing.push(mismatch(id, "its package's verifying key is not the key id".into()))
            }
            Ok(p) if p.min_signers() != Some(threshold) => disagreeing.push(mismatch(
                id,
                format!("its package's threshold {:?} is not the cluster's {threshold}", p.min_signers()),
            )),
            Ok(_) => by_package.entry(bytes).or_default().push(id),
            Err(e) => disagreeing.push(mismatch(id, format!("its package does not decode: {e}"))),
        }
    }
    let backed: Vec<&Vec<u8>> =
        by_package.iter().filter(|(_, ids)| ids.len() >= threshold as usize).map(|(b, _)| b).collect();
    let bytes = match backed.as_slice() {
        [one] => (*one).clone(),
        [] if by_package.is_empty() && disagreeing.is_empty() => return Err(last),
        [] => {
            return Err(Error::new(
                ErrorCode::SigningFailed,
                format!(
                    "no public key package is returned by {threshold} nodes (agreeing groups: {:?}; disagreeing: {:?})",
                    by_package.values().collect::<Vec<_>>(),
                    disagreeing.iter().map(|e| e.signer).collect::<Vec<_>>()
                ),
            ))
        }
        _ => {
            return Err(Error::new(
                ErrorCode::SigningFailed,
                format!("conflicting public key packages are each returned by {threshold} nodes: refusing to choose"),
            ))
        }
    };
    let public = PublicKeyPackage::deserialize(&bytes)
        .map_err(|e| Error::new(ErrorCode::InvalidEncoding, format!("public key package: {e}")))?;
    for (other, ids) in &by_package {
        if *other != bytes {
            for id in ids {
                disagreeing.push(mismatch(*id, "its package differs from the one the other nodes agree on".into()));
            }
        }
    }
    Ok((public, disagreeing))
}

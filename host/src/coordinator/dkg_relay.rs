//! Relays the enclave-to-enclave protocols between signer nodes: a DKG, a share refresh (the same
//! steps), and the repair of a lost seat. The relay is untrusted by design: it sees public round-1
//! packages, ciphertexts and signed confirmations only; any abort is propagated to every node.
//! Every ceremony starts with its attestation exchange (`attest_ceremony`): each enclave decides
//! from its own pins which peers must have attested.

use crate::api::convert::Proto;
use crate::api::rpc::NetworkRequest;
use crate::coordinator::signer::SignerClient;
use frostgate_common::bounded::*;
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::ids::{DkgId, KeyId, ParticipantId};
use frostgate_common::protocol::*;
use std::sync::Arc;
use std::time::Duration;

const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// One DKG step on one node: its result, or the blame it answered as an error naming the culprit.
async fn step<T, R>(c: &SignerClient, request: R) -> Result<T, Error>
where
    R: NetworkRequest<Reply = DkgOutcome<T>>,
    DkgOutcome<T>: Proto,
{
    match c.call(request, STEP_TIMEOUT).await? {
        DkgOutcome::Done(t) => Ok(t),
        DkgOutcome::Blame(b) => Err(Error::new(b.code, format!("node {} blames participant {}", c.id(), b.culprit))),
    }
}

/// A ceremony's attestation among `nodes`, before it starts: every node's challenge, every
/// node's attestation over all of them, then every node checks its peers against its own
/// `[group]` pins. Every node is asked, so the error names each node that refused and the peer
/// it refused.
async fn attest_ceremony(nodes: &[&SignerClient], ceremony: DkgId, kind: CeremonyKind) -> Result<(), Error> {
    let internal = |e| Error::new(ErrorCode::Internal, e);
    let mut challenges = Vec::new();
    for n in nodes {
        challenges.push(n.call(CeremonyChallenge { ceremony, kind, me: n.id() }, STEP_TIMEOUT).await?);
    }
    challenges.sort_by_key(|c| c.from);
    let challenges = CeremonyChallenges::new(challenges).map_err(internal)?;
    let mut attestations = Vec::new();
    for n in nodes {
        let attestation = n.call(CeremonyAttest { ceremony, challenges: challenges.clone() }, STEP_TIMEOUT).await?;
        if attestation.provider != AttestationProvider::None {
            attestations.push(PeerAttestation { from: n.id(), attestation });
        }
    }
    let mut refusals = Vec::new();
    for n in nodes {
        let others: Vec<PeerAttestation> = attestations.iter().filter(|a| a.from != n.id()).cloned().collect();
        let peers = CeremonyPeers {
            ceremony,
            challenges: challenges.clone(),
            attestations: PeerAttestations::new(others).map_err(internal)?,
        };
        if let DkgOutcome::Blame(b) = n.call(peers, STEP_TIMEOUT).await? {
            refusals.push(format!("node {} refuses participant {}'s attestation ({})", n.id(), b.culprit, b.code));
        }
    }
    match refusals.is_empty() {
        true => Ok(()),
        false => Err(Error::new(ErrorCode::AttestationInvalid, refusals.join("; "))),
    }
}

/// Runs a `threshold`-of-n DKG among all `nodes`; returns the key every node activated.
pub async fn run(nodes: &[Arc<SignerClient>], threshold: u16) -> Result<KeyInfo, Error> {
    let dkg = DkgId::from_bytes(crate::random_bytes());
    let start = |me, participants| DkgStart { dkg, threshold, me, participants };
    let activate = |confirmations| DkgActivate { dkg, confirmations };
    relay(nodes, dkg, start, activate, |k: &KeyInfo| k.key).await
}

/// Refreshes `key`'s shares among `nodes` (every seat of the key not among them is removed);
/// returns the refreshed key and epoch every node put in force.
///
/// An atomic commitment: `RefreshActivate` prepares the refreshed share on every node (durable,
/// not in force: the key keeps signing at its epoch); then [`resolve`] collects every node's
/// signed vote and commits (all prepared: each node checks every vote) or abandons (a node voted
/// it never prepared). A node failing its activation therefore leaves every node at the old
/// epoch.
pub async fn refresh(nodes: &[Arc<SignerClient>], key: KeyId) -> Result<KeyRefreshed, Error> {
    let dkg = DkgId::from_bytes(crate::random_bytes());
    let start = |me, participants| RefreshStart { dkg, key, me, participants };
    let activate = |confirmations| RefreshActivate { dkg, confirmations };
    match relay(nodes, dkg, start, activate, |k: &KeyRefreshed| (k.key.key, k.epoch)).await {
        Ok(prepared) if prepared.key.key == key => resolve(nodes, dkg, key).await,
        Ok(_) => Err(Error::new(ErrorCode::Internal, "a refresh answered for another key")),
        Err(e) => {
            // Whatever was prepared is abandoned everywhere (or stays for a later `--resolve`).
            if let Err(r) = resolve(nodes, dkg, key).await {
                tracing::warn!(%dkg, code = %r.code(), "refresh not resolved: {}", r.message());
            }
            Err(e)
        }
    }
}

/// Ends refresh `dkg` of `key` among `nodes` (its participants): every node's signed vote; all
/// prepared, it is committed on each (each retried, idempotent); else abandoned on each.
pub async fn resolve(nodes: &[Arc<SignerClient>], dkg: DkgId, key: KeyId) -> Result<KeyRefreshed, Error> {
    let again = |what: String| {
        Error::new(
            ErrorCode::NodeUnavailable,
            format!("{what}; once every node is reachable: `frostgate refresh --key {key} --resolve {dkg}`"),
        )
    };
    let mut votes = Vec::new();
    for n in nodes {
        let v = n
            .call(GetRefreshVote { dkg, key }, STEP_TIMEOUT)
            .await
            .map_err(|e| again(format!("node {} did not vote on refresh {dkg} ({})", n.id(), e.message())))?;
        votes.push(v);
    }
    let all = RefreshVotes::new(votes.clone()).map_err(|e| Error::new(ErrorCode::Internal, e))?;
    if let Some(never) = votes.iter().find(|v| !v.prepared) {
        for n in nodes {
            let _ = n.call(RefreshAbandon { dkg, key, votes: all.clone() }, STEP_TIMEOUT).await;
        }
        return Err(Error::new(
            ErrorCode::DkgPhase,
            format!("node {} never prepared refresh {dkg}: abandoned, the key stays at its epoch", never.seat),
        ));
    }
    let epoch = votes.first().map(|v| v.epoch).ok_or_else(|| Error::new(ErrorCode::Internal, "no node"))?;
    let mut committed = None;
    for n in nodes {
        let mut tries = 0;
        let done = loop {
            tries += 1;
            match n.call(RefreshCommit { dkg, key, epoch, votes: all.clone() }, STEP_TIMEOUT).await {
                Ok(k) => break k,
                Err(e) if tries < 5 && e.recovery_class() == frostgate_common::error::RecoveryClass::Retry => {
                    tokio::time::sleep(Duration::from_millis(200 * tries)).await;
                }
                Err(e) => return Err(again(format!("node {} did not commit epoch {epoch} ({})", n.id(), e.message()))),
            }
        };
        committed.get_or_insert(done);
    }
    committed.ok_or_else(|| Error::new(ErrorCode::Internal, "no node in the refresh"))
}

/// Repairs seat `seat` of `key` onto `new` (a fresh enclave pinned for the seat by every helper)
/// with `helpers` (at least the threshold); returns the key as the new enclave now holds it.
/// Helpers that started and fail later forget the repair after the DKG TTL.
pub async fn repair(helpers: &[Arc<SignerClient>], new: &SignerClient, key: KeyId) -> Result<KeyInfo, Error> {
    let internal = |e| Error::new(ErrorCode::Internal, e);
    let repair = DkgId::from_bytes(crate::random_bytes());
    let seat = new.id();
    let identity_key = new.call(GetIdentity, STEP_TIMEOUT).await?;
    let ids = Signers::new(helpers.iter().map(|h| h.id()).collect::<Vec<_>>()).map_err(internal)?;
    let everyone: Vec<&SignerClient> = helpers.iter().map(|h| h.as_ref()).chain([new]).collect();
    attest_ceremony(&everyone, repair, CeremonyKind::Repair).await?;
    let mut deltas = Vec::new();
    for h in helpers {
        let start =
            RepairStart { repair, key, seat, identity_key: identity_key.clone(), me: h.id(), helpers: ids.clone() };
        deltas.extend(step::<DkgEnvelopes, _>(h, start).await?.into_inner());
    }
    let mut sigmas = Vec::new();
    for h in helpers {
        let mine: Vec<DkgEnvelope> = deltas.iter().filter(|e| e.to == h.id()).cloned().collect();
        let envelopes = DkgEnvelopes::new(mine).map_err(internal)?;
        sigmas.extend(step::<DkgEnvelopes, _>(h, RepairSigma { repair, envelopes }).await?.into_inner());
    }
    // Any helper's package: each bound its own package's hash into its sigma, so the new enclave
    // opens the sigmas only if they all hold this one.
    let helper = helpers.first().ok_or_else(|| Error::new(ErrorCode::SignerSetInvalid, "no helper"))?;
    let public_key_package = helper.call(KeyRef { key }, STEP_TIMEOUT).await?.public_key_package;
    let envelopes = DkgEnvelopes::new(sigmas).map_err(internal)?;
    step::<KeyInfo, _>(new, RepairFinish { repair, key, seat, public_key_package, envelopes }).await
}

/// Relays one DKG (or refresh) to its end; on any failure every node abandons it.
async fn relay<S, A, K, Id>(
    nodes: &[Arc<SignerClient>],
    dkg: DkgId,
    start: impl Fn(ParticipantId, DkgParticipants) -> S,
    activate: impl Fn(DkgConfirmations) -> A,
    agreed: impl Fn(&K) -> Id,
) -> Result<K, Error>
where
    S: NetworkRequest<Reply = DkgOutcome<DkgRound1Package>>,
    A: NetworkRequest<Reply = DkgOutcome<K>>,
    DkgOutcome<K>: Proto,
    Id: PartialEq,
{
    let result = async {
        let internal = |e| Error::new(ErrorCode::Internal, e);
        let mut participants = Vec::new();
        for n in nodes {
            let identity_key = n.call(GetIdentity, STEP_TIMEOUT).await?;
            participants.push(DkgParticipant { id: n.id(), identity_key });
        }
        let participants = DkgParticipants::new(participants).map_err(internal)?;
        let everyone: Vec<&SignerClient> = nodes.iter().map(|n| n.as_ref()).collect();
        attest_ceremony(&everyone, dkg, CeremonyKind::Dkg).await?;
        let mut round1 = Vec::new();
        for n in nodes {
            round1.push(step::<DkgRound1Package, _>(n, start(n.id(), participants.clone())).await?);
        }
        let mut envelopes = Vec::new();
        for n in nodes {
            let others: Vec<DkgRound1Package> = round1.iter().filter(|p| p.from != n.id()).cloned().collect();
            let round1 = DkgRound1Packages::new(others).map_err(internal)?;
            let reply = step::<DkgEnvelopes, _>(n, DkgRound2 { dkg, round1 }).await?;
            envelopes.extend(reply.into_inner());
        }
        let mut confirmations = Vec::new();
        for n in nodes {
            let mine: Vec<DkgEnvelope> = envelopes.iter().filter(|e| e.to == n.id()).cloned().collect();
            let envelopes = DkgEnvelopes::new(mine).map_err(internal)?;
            confirmations.push(step::<DkgConfirmation, _>(n, DkgFinish { dkg, envelopes }).await?);
        }
        let confirmations = DkgConfirmations::new(confirmations).map_err(internal)?;
        let mut key: Option<K> = None;
        for n in nodes {
            let k = step::<K, _>(n, activate(confirmations.clone())).await?;
            if key.as_ref().is_some_and(|first| agreed(first) != agreed(&k)) {
                return Err(Error::new(
                    ErrorCode::DkgTranscriptMismatch,
                    format!("node {} activated another key", n.id()),
                ));
            }
            key.get_or_insert(k);
        }
        key.ok_or_else(|| Error::new(ErrorCode::Internal, "no node in the DKG"))
    }
    .await;
    if result.is_err() {
        for n in nodes {
            let _ = n.call(DkgRef { dkg }, Duration::from_secs(5)).await;
        }
    }
    result
}

/// Connects to every node of a cluster.
pub async fn connect_all(cluster: &crate::coordinator::cluster::Cluster) -> Vec<Arc<SignerClient>> {
    let mut out = Vec::new();
    for n in &cluster.nodes {
        let id = ParticipantId::new(n.id).unwrap_or_else(|_| unreachable!("checked when the cluster file was loaded"));
        out.push(Arc::new(SignerClient::connect(id, &n.api, cluster.tls_for(n).as_ref()).await));
    }
    out
}

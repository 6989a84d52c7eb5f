//! Relays a DKG between signer nodes. The relay is untrusted by design: it sees public round-1
//! packages, ciphertexts and signed confirmations only; any abort is propagated to every node.

use crate::signer::SignerClient;
use frostgate_common::bounded::*;
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::ids::{DkgId, ParticipantId};
use frostgate_common::protocol::*;
use std::sync::Arc;
use std::time::Duration;

const STEP_TIMEOUT: Duration = Duration::from_secs(30);

async fn step(c: &SignerClient, m: Message) -> Result<Message, Error> {
    match c.call(m, STEP_TIMEOUT).await? {
        Message::DkgBlame(b) => Err(Error::new(b.code, format!("node {} blames participant {}", c.id(), b.culprit))),
        other => Ok(other),
    }
}

/// Runs a `threshold`-of-n DKG among all `nodes`; returns the key every node activated.
pub async fn run(nodes: &[Arc<SignerClient>], threshold: u16) -> Result<KeyInfo, Error> {
    let dkg = DkgId::from_bytes(crate::random_bytes());
    let result = run_inner(nodes, threshold, dkg).await;
    if result.is_err() {
        for n in nodes {
            let _ = n.call(Message::DkgAbort(DkgRef { dkg }), Duration::from_secs(5)).await;
        }
    }
    result
}

fn unexpected(m: &Message) -> Error {
    Error::new(ErrorCode::UnexpectedMessage, m.info().name)
}

async fn run_inner(nodes: &[Arc<SignerClient>], threshold: u16, dkg: DkgId) -> Result<KeyInfo, Error> {
    let mut participants = Vec::new();
    for n in nodes {
        match step(n, Message::GetIdentity).await? {
            Message::Identity(identity_key) => participants.push(DkgParticipant { id: n.id(), identity_key }),
            other => return Err(unexpected(&other)),
        }
    }
    let participants = DkgParticipants::new(participants).map_err(|e| Error::new(ErrorCode::Internal, e))?;
    let mut round1 = Vec::new();
    for n in nodes {
        let m = Message::DkgStart(DkgStart { dkg, threshold, me: n.id(), participants: participants.clone() });
        match step(n, m).await? {
            Message::DkgRound1(p) => round1.push(p),
            other => return Err(unexpected(&other)),
        }
    }
    let mut envelopes = Vec::new();
    for n in nodes {
        let others: Vec<DkgRound1Package> = round1.iter().filter(|p| p.from != n.id()).cloned().collect();
        let m = Message::DkgRound2(DkgRound2 {
            dkg,
            round1: DkgRound1Packages::new(others).map_err(|e| Error::new(ErrorCode::Internal, e))?,
        });
        match step(n, m).await? {
            Message::DkgRound2Reply(e) => envelopes.extend(e.into_inner()),
            other => return Err(unexpected(&other)),
        }
    }
    let mut confirmations = Vec::new();
    for n in nodes {
        let mine: Vec<DkgEnvelope> = envelopes.iter().filter(|e| e.to == n.id()).cloned().collect();
        let m = Message::DkgFinish(DkgFinish {
            dkg,
            envelopes: DkgEnvelopes::new(mine).map_err(|e| Error::new(ErrorCode::Internal, e))?,
        });
        match step(n, m).await? {
            Message::DkgConfirm(c) => confirmations.push(c),
            other => return Err(unexpected(&other)),
        }
    }
    let confirmations = DkgConfirmations::new(confirmations).map_err(|e| Error::new(ErrorCode::Internal, e))?;
    let mut key: Option<KeyInfo> = None;
    for n in nodes {
        match step(n, Message::DkgActivate(DkgActivate { dkg, confirmations: confirmations.clone() })).await? {
            Message::KeyInfo(k) => {
                if key.as_ref().is_some_and(|first| first.key != k.key) {
                    return Err(Error::new(
                        ErrorCode::DkgTranscriptMismatch,
                        format!("node {} activated another key", n.id()),
                    ));
                }
                key.get_or_insert(k);
            }
            other => return Err(unexpected(&other)),
        }
    }
    key.ok_or_else(|| Error::new(ErrorCode::Internal, "no node in the DKG"))
}

/// Connects to every node of a cluster.
pub async fn connect_all(cluster: &crate::cluster::Cluster) -> Vec<Arc<SignerClient>> {
    let mut out = Vec::new();
    for n in &cluster.nodes {
        let id = ParticipantId::new(n.id).unwrap_or_else(|_| unreachable!("checked when the cluster file was loaded"));
        out.push(Arc::new(SignerClient::connect(id, &n.api, cluster.tls_for(n).as_ref()).await));
    }
    out
}

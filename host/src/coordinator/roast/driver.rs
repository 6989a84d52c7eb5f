//! Runs the ROAST core over gRPC: each ask becomes the node calls it stands for, each reply
//! (or error, or deadline) goes back to the core as an answer. All I/O of a signing is here.

use super::core::{Outcome, Roast};
use super::exchange::{Action, Answer, Ask};
use super::request::{binding, SignRequest};
use super::strategy::Strategy;
use crate::coordinator::signer::SignerClient;
use frostgate_common::bounded::{Signers, SigningPackageBytes};
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::ids::{AttemptId, ParticipantId, SessionId};
use frostgate_common::protocol::*;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

/// Commitments a `Preprocess` call asks for when none is held for a node.
const PREPROCESS_BATCH: u16 = 16;

/// Below this many held commitments a signing asks for two back instead of one.
const HELD_LOW: usize = 8;

/// Deadline of the best-effort calls (a release, a closing).
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(2);

/// What every ask of one signing shares.
#[derive(Clone)]
pub struct Context {
    /// The session.
    pub session: SessionId,
    /// What is signed.
    pub request: Arc<SignRequest>,
    /// Deadline of each call to a signer.
    pub timeout: Duration,
    /// Whether preprocessed signings to one node go in batches.
    pub batch: bool,
}

/// The nodes of a signing, by participant.
type Nodes = Arc<BTreeMap<ParticipantId, Arc<SignerClient>>>;

/// Runs `core` to its outcome over `nodes`.
///
/// Asks still under way when the outcome is set (another attempt's) are not cancelled: they
/// finish in the background, so what they bring back is kept (next commitments held, closings
/// queued again) and, when the session was closed at once, it is closed again after them (a
/// late opening cannot leave it open).
pub async fn run<S: Strategy>(mut core: Roast<S>, nodes: &Nodes, cx: Context) -> Outcome {
    let mut asks: JoinSet<(AttemptId, ParticipantId, Result<Answer, Error>)> = JoinSet::new();
    let mut asked: HashMap<tokio::task::Id, (AttemptId, ParticipantId)> = HashMap::new();
    let mut closed_now: Option<Vec<ParticipantId>> = None;
    let mut actions = core.start();
    loop {
        for action in actions.drain(..) {
            match action {
                Action::Ask { attempt, signer, ask } => {
                    let Some(node) = nodes.get(&signer).cloned() else { continue };
                    let cx = cx.clone();
                    let task = asks.spawn(async move { (attempt, signer, execute(&node, &cx, attempt, ask).await) });
                    asked.insert(task.id(), (attempt, signer));
                }
                Action::DropHeld(p) => {
                    if let Some(node) = nodes.get(&p) {
                        node.drop_commitments(&cx.request.key);
                    }
                }
                Action::Close { signers, now } => {
                    close(nodes, &signers, cx.session, now).await;
                    closed_now = now.then_some(signers);
                }
            }
        }
        if let Some(outcome) = core.take_outcome() {
            if !asks.is_empty() {
                let (nodes, session) = (nodes.clone(), cx.session);
                tokio::spawn(async move {
                    while asks.join_next().await.is_some() {}
                    if let Some(signers) = closed_now {
                        close(&nodes, &signers, session, true).await;
                    }
                });
            }
            return outcome;
        }
        actions = match asks.join_next_with_id().await {
            Some(Ok((id, (attempt, signer, answer)))) => {
                asked.remove(&id);
                core.answer(attempt, signer, answer)
            }
            // A task that panicked answers for its ask with an error (the signer is blamed, the
            // attempt goes on), never silence that would stall it.
            Some(Err(e)) => match asked.remove(&e.id()) {
                Some((attempt, signer)) => {
                    core.answer(attempt, signer, Err(Error::new(ErrorCode::Internal, "the ask's task failed")))
                }
                None => Vec::new(),
            },
            None => {
                return Err((Error::new(ErrorCode::Internal, "the signing stalled with nothing asked"), Vec::new()))
            }
        };
    }
}

/// Closes the session on `signers`: at once (one call each, concurrently) or queued for their
/// next requests.
async fn close(nodes: &Nodes, signers: &[ParticipantId], session: SessionId, now: bool) {
    let targets = signers.iter().filter_map(|p| nodes.get(p)).filter(|c| c.reachable());
    if !now {
        targets.for_each(|c| c.close_later([session]));
        return;
    }
    let mut calls = JoinSet::new();
    for c in targets {
        let c = c.clone();
        calls.spawn(async move { drop(c.call(SessionRef { session }, CLEANUP_TIMEOUT).await) });
    }
    while calls.join_next().await.is_some() {}
}

/// The node calls one ask stands for.
async fn execute(c: &SignerClient, cx: &Context, attempt: AttemptId, ask: Ask) -> Result<Answer, Error> {
    let (session, req, timeout, key) = (cx.session, &cx.request, cx.timeout, cx.request.key);
    let bounded = |e: frostgate_common::bounded::TooLong| Error::new(ErrorCode::Internal, e.to_string());
    match ask {
        Ask::Open { signers } => {
            open_session(c, session, req, timeout).await?;
            let signers = Signers::new(signers).map_err(bounded)?;
            c.call(OpenAttempt { session, attempt, signers }, timeout).await?;
            let r = c.call(SeatRef { attempt, seat: c.id() }, timeout).await?;
            Ok(Answer::Commitments(r.commitments.into_inner()))
        }
        Ask::Commitment => {
            if let Some(held) = c.take_commitment(&key) {
                return Ok(Answer::Commitment { commitment: held, held: true });
            }
            let r = c.call(Preprocess { key, seat: c.id(), count: PREPROCESS_BATCH }, timeout).await?;
            let mut fresh = r.commitments.into_inner().into_iter();
            let first = fresh.next().ok_or_else(|| Error::new(ErrorCode::Internal, "no commitment preprocessed"))?;
            c.hold_commitments(key, fresh);
            Ok(Answer::Commitment { commitment: first, held: false })
        }
        Ask::Round2 { package } => {
            let signing_package = SigningPackageBytes::new(package.to_vec()).map_err(bounded)?;
            let r = c.call(Round2 { attempt, seat: c.id(), mode: req.mode, signing_package }, timeout).await?;
            Ok(Answer::Share(r.signature_share.into_inner()))
        }
        Ask::SignPreprocessed { commitment, signers, package } => {
            let m = SignPreprocessed {
                binding: binding(session, req)?,
                attempt,
                signers: Signers::new(signers).map_err(bounded)?,
                seat: c.id(),
                commitment,
                signing_package: SigningPackageBytes::new(package.to_vec()).map_err(bounded)?,
                replenish: if c.held_commitments(&key) < HELD_LOW { 2 } else { 1 },
                close: c.take_closing(),
            };
            let close = m.close.clone();
            let signed = if cx.batch { c.sign_preprocessed(m, timeout).await } else { c.call(m, timeout).await };
            match signed {
                Ok(r) => {
                    c.hold_commitments(key, r.next.into_inner());
                    Ok(Answer::Share(r.signature_share.into_inner()))
                }
                Err(e) => {
                    // Not known to have arrived: the closings go with a later request.
                    c.close_later(close.into_inner());
                    Err(e)
                }
            }
        }
        Ask::Release => {
            let _ = c.call(AttemptRef { attempt }, CLEANUP_TIMEOUT).await;
            Ok(Answer::Done)
        }
        Ask::Probe => {
            open_session(c, session, req, timeout).await?;
            let _ = c.call(SessionRef { session }, timeout).await;
            Ok(Answer::Done)
        }
    }
}

/// Opens the session on one node: the digest, or the PSBT input (whose sighash the enclave
/// computes itself and must equal ours). This is where a node's policy decides.
async fn open_session(c: &SignerClient, session: SessionId, req: &SignRequest, timeout: Duration) -> Result<(), Error> {
    match binding(session, req)? {
        SessionBinding::Digest(open) => {
            c.call(open, timeout).await?;
        }
        SessionBinding::Derived(open) => {
            c.call(open, timeout).await?;
        }
        SessionBinding::Psbt(open) => {
            if c.call(open, timeout).await?.sighash != req.message {
                return Err(mismatch());
            }
        }
        SessionBinding::Request(open) => {
            if c.call(open, timeout).await?.message != req.message {
                return Err(mismatch());
            }
        }
    }
    Ok(())
}

fn mismatch() -> Error {
    Error::new(ErrorCode::SigningPackageMismatch, "the enclave computed another sighash for this input")
}

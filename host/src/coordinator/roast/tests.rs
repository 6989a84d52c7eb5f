//! The ROAST core driven by hand-fed answers, without a socket: responsive, silent, lying,
//! refusing and restarting signers, under both strategies. The signers are simulated with real
//! FROST key shares (a dealer, test-only), so every signature is checked by libsecp256k1.

use super::core::{Outcome, Roast, PROBE};
use super::evidence::{Reason, Step};
use super::exchange::{Action, Answer, Ask};
use super::request::SignRequest;
use super::strategy::{Interactive, Preprocessed, Strategy};
use crate::coordinator::taproot::{TweakCache, Tweaked};
use frost_secp256k1_tr as frost;
use frostgate_common::bounded::CommitmentBytes;
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::ids::{AttemptId, CommitmentId, KeyId, ParticipantId};
use frostgate_common::protocol::{PreCommitment, TaprootMode};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

type P = ParticipantId;

fn p(n: u16) -> P {
    ParticipantId::new(n).expect("participant")
}

/// `n` simulated signers of one dealer key (threshold `t`), answering like honest enclaves.
struct Cluster {
    t: u16,
    shares: BTreeMap<P, frost::keys::KeyPackage>,
    public: Arc<Tweaked>,
    /// Live nonces by (attempt, signer) (interactive) and by commitment id (preprocessed).
    nonces: BTreeMap<(AttemptId, P), frost::round1::SigningNonces>,
    pre: BTreeMap<CommitmentId, frost::round1::SigningNonces>,
    /// The preprocessed commitments handed out, as the coordinator's pool would hold them.
    held: BTreeMap<P, VecDeque<PreCommitment>>,
    asks: Vec<(AttemptId, P, Ask)>,
    closes: Vec<(Vec<P>, bool)>,
    dropped: Vec<P>,
}

impl Cluster {
    fn new(n: u16, t: u16) -> Cluster {
        let rng = frost::rand_core::OsRng;
        let (shares, public) =
            frost::keys::generate_with_dealer(n, t, frost::keys::IdentifierList::Default, rng).expect("dealer");
        let shares = shares
            .into_iter()
            .map(|(id, s)| {
                let n = (1..=n).find(|n| frost::Identifier::try_from(*n).expect("id") == id).expect("index");
                (p(n), frost::keys::KeyPackage::try_from(s).expect("key package"))
            })
            .collect();
        let public = TweakCache::default().get(&public, &[], &TaprootMode::Bip86).expect("tweak");
        Cluster {
            t,
            shares,
            public,
            nonces: BTreeMap::new(),
            pre: BTreeMap::new(),
            held: BTreeMap::new(),
            asks: Vec::new(),
            closes: Vec::new(),
            dropped: Vec::new(),
        }
    }

    fn request(&self) -> SignRequest {
        SignRequest {
            key: KeyId::from_bytes([1; 32]),
            message: rand_bytes(),
            mode: TaprootMode::Bip86,
            psbt: None,
            path: Vec::new(),
            request: None,
        }
    }

    fn roast<S: Strategy>(&self, s: S, request: &SignRequest, reachable: &[P]) -> Roast<S> {
        let signers: Vec<(P, bool)> = self.shares.keys().map(|q| (*q, reachable.contains(q))).collect();
        Roast::new(s, rand_bytes(), request, self.public.clone(), self.t, &signers, &[]).expect("roast")
    }

    fn commit(&self, signer: P) -> (frost::round1::SigningNonces, Vec<u8>) {
        let kp = &self.shares[&signer];
        let (nonces, commitments) = frost::round1::commit(kp.signing_share(), &mut frost::rand_core::OsRng);
        (nonces, commitments.serialize().expect("commitments"))
    }

    fn share(&self, signer: P, nonces: &frost::round1::SigningNonces, package: &[u8]) -> Result<Answer, Error> {
        let package = frost::SigningPackage::deserialize(package).expect("package");
        let share = frost::round2::sign_with_tweak(&package, nonces, &self.shares[&signer], None)
            .map_err(|e| Error::new(ErrorCode::SigningFailed, e.to_string()))?;
        Ok(Answer::Share(share.serialize()))
    }

    /// What an honest enclave answers.
    fn honest(&mut self, attempt: AttemptId, signer: P, ask: &Ask) -> Result<Answer, Error> {
        match ask {
            Ask::Open { .. } => {
                let (nonces, bytes) = self.commit(signer);
                self.nonces.insert((attempt, signer), nonces);
                Ok(Answer::Commitments(bytes))
            }
            Ask::Commitment => {
                if let Some(c) = self.held.get_mut(&signer).and_then(VecDeque::pop_front) {
                    return Ok(Answer::Commitment { commitment: c, held: true });
                }
                let (nonces, bytes) = self.commit(signer);
                let id = CommitmentId::from_bytes(rand_bytes());
                self.pre.insert(id, nonces);
                let commitment = PreCommitment { id, commitments: CommitmentBytes::new(bytes).expect("bound") };
                Ok(Answer::Commitment { commitment, held: false })
            }
            Ask::Round2 { package } => {
                let nonces = self.nonces.remove(&(attempt, signer)).ok_or_else(unknown)?;
                self.share(signer, &nonces, package)
            }
            Ask::SignPreprocessed { commitment, package, .. } => {
                let nonces = self.pre.remove(commitment).ok_or_else(unknown)?;
                self.share(signer, &nonces, package)
            }
            Ask::Release | Ask::Probe => Ok(Answer::Done),
        }
    }

    /// Runs `core` to its outcome; `fault` may answer an ask in place of the honest enclave.
    fn run<S: Strategy>(
        &mut self,
        mut core: Roast<S>,
        mut fault: impl FnMut(&mut Cluster, AttemptId, P, &Ask) -> Option<Result<Answer, Error>>,
    ) -> Outcome {
        let mut queue: VecDeque<Action> = core.start().into();
        loop {
            if let Some(outcome) = core.take_outcome() {
                // Whatever the core still asked after the outcome is never answered.
                for a in queue {
                    self.record(&a);
                }
                return outcome;
            }
            let action = queue.pop_front().expect("the core stalled with nothing asked and no outcome");
            self.record(&action);
            if let Action::Ask { attempt, signer, ask } = action {
                let answer = match fault(self, attempt, signer, &ask) {
                    Some(a) => a,
                    None => self.honest(attempt, signer, &ask),
                };
                queue.extend(core.answer(attempt, signer, answer));
            }
        }
    }

    fn record(&mut self, a: &Action) {
        match a {
            Action::Ask { attempt, signer, ask } => self.asks.push((*attempt, *signer, ask.clone())),
            Action::DropHeld(q) => self.dropped.push(*q),
            Action::Close { signers, now } => self.closes.push((signers.clone(), *now)),
        }
    }

    fn verifies(&self, outcome: &Outcome, request: &SignRequest) -> super::Signed {
        let s = outcome.clone().unwrap_or_else(|(e, ev)| panic!("{e}: {ev:?}"));
        assert!(super::libsecp_verifies(&s.bip340, &request.message, &self.public.output_key), "{s:?}");
        s
    }
}

fn unknown() -> Error {
    Error::new(ErrorCode::CommitmentUnknown, "no such nonce")
}

fn rand_bytes<const N: usize>() -> [u8; N] {
    crate::random_bytes()
}

fn timeout() -> Error {
    Error::new(ErrorCode::RequestTimeout, "no reply")
}

#[test]
fn responsive_signers_sign_in_one_attempt_under_both_strategies() {
    for interactive in [true, false] {
        let mut c = Cluster::new(3, 2);
        let request = c.request();
        let all = [p(1), p(2), p(3)];
        let outcome = if interactive {
            let core = c.roast(Interactive, &request, &all);
            c.run(core, |_, _, _, _| None)
        } else {
            let core = c.roast(Preprocessed, &request, &all);
            c.run(core, |_, _, _, _| None)
        };
        let s = c.verifies(&outcome, &request);
        assert_eq!((s.attempts, s.signers.clone(), s.excluded.len()), (1, vec![1, 2], 0));
        // Round 1 and round 2 to each of the two signers, nothing else, then the closing.
        assert_eq!(c.asks.len(), 4, "{:?}", c.asks);
        assert_eq!(c.closes, vec![(vec![p(1), p(2)], interactive)]);
    }
}

#[test]
fn a_silent_signer_is_excluded_for_timing_out_and_the_others_sign_without_it() {
    let mut c = Cluster::new(3, 2);
    let request = c.request();
    let core = c.roast(Preprocessed, &request, &[p(1), p(2), p(3)]);
    let outcome = c.run(core, |_, _, signer, _| (signer == p(1)).then(|| Err(timeout())));
    let s = c.verifies(&outcome, &request);
    assert_eq!((s.attempts, s.signers.clone()), (2, vec![2, 3]));
    let ev = &s.excluded[0];
    assert_eq!(
        (ev.signer, ev.reason, ev.step, ev.code),
        (1, Reason::Timeout, Step::Round1, Some(ErrorCode::RequestTimeout))
    );
    // The attempt's other signer was released (its nonce wiped) before it signed again.
    let released: Vec<P> = c.asks.iter().filter(|(_, _, a)| matches!(a, Ask::Release)).map(|(_, q, _)| *q).collect();
    assert_eq!(released, vec![p(2)]);
}

#[test]
fn a_lying_signer_is_named_by_its_invalid_share_and_the_signing_finishes_without_it() {
    for interactive in [true, false] {
        let mut c = Cluster::new(3, 2);
        let request = c.request();
        let all = [p(1), p(2), p(3)];
        // Signer 2 signs another package: its share decodes but does not verify.
        let lie = |c: &mut Cluster, attempt: AttemptId, signer: P, ask: &Ask| {
            if signer != p(2) {
                return None;
            }
            let package = match ask {
                Ask::Round2 { package } | Ask::SignPreprocessed { package, .. } => package.clone(),
                _ => return None,
            };
            let mut other = frost::SigningPackage::deserialize(&package).expect("package");
            other = frost::SigningPackage::new(other.signing_commitments().clone(), b"another message");
            let nonces = match ask {
                Ask::Round2 { .. } => c.nonces.remove(&(attempt, signer)),
                Ask::SignPreprocessed { commitment, .. } => c.pre.remove(commitment),
                _ => None,
            }?;
            Some(c.share(signer, &nonces, &other.serialize().expect("package")))
        };
        let outcome = if interactive {
            let core = c.roast(Interactive, &request, &all);
            c.run(core, lie)
        } else {
            let core = c.roast(Preprocessed, &request, &all);
            c.run(core, lie)
        };
        let s = c.verifies(&outcome, &request);
        assert_eq!((s.attempts, s.signers.clone()), (2, vec![1, 3]));
        let ev = &s.excluded[0];
        assert_eq!((ev.signer, ev.reason, ev.step), (2, Reason::InvalidShare, Step::Round2));
        assert!(ev.share.is_some() && ev.package_sha256.is_some(), "{ev:?}");
    }
}

#[test]
fn a_restarted_signer_that_lost_its_held_commitment_is_not_blamed_and_signs_again() {
    let mut c = Cluster::new(2, 2);
    // Signer 1's pool holds a commitment its enclave no longer has (it restarted).
    let (_, bytes) = c.commit(p(1));
    let stale = PreCommitment {
        id: CommitmentId::from_bytes([9; 16]),
        commitments: CommitmentBytes::new(bytes).expect("bound"),
    };
    c.held.insert(p(1), VecDeque::from([stale]));
    let request = c.request();
    let core = c.roast(Preprocessed, &request, &[p(1), p(2)]);
    let outcome = c.run(core, |_, _, _, _| None);
    let s = c.verifies(&outcome, &request);
    assert_eq!((s.attempts, s.signers.clone(), s.excluded.len()), (2, vec![1, 2], 0), "{s:?}");
    assert_eq!(c.dropped, vec![p(1)], "what was held for it is dropped");
}

#[test]
fn a_fresh_commitment_refused_is_an_error_like_any_other() {
    let mut c = Cluster::new(3, 2);
    let request = c.request();
    let core = c.roast(Preprocessed, &request, &[p(1), p(2), p(3)]);
    // Signer 1's enclave refuses even the commitment it just issued.
    let outcome = c.run(core, |_, _, signer, ask| {
        (signer == p(1) && matches!(ask, Ask::SignPreprocessed { .. })).then(|| Err(unknown()))
    });
    let s = c.verifies(&outcome, &request);
    assert_eq!(s.excluded.iter().map(|e| (e.signer, e.reason)).collect::<Vec<_>>(), vec![(1, Reason::Error)]);
}

#[test]
fn fewer_than_t_responsive_signers_fail_with_every_exclusion_named() {
    let mut c = Cluster::new(3, 2);
    let request = c.request();
    // Node 3 is unreachable from the start; node 1 times out.
    let core = c.roast(Interactive, &request, &[p(1), p(2)]);
    let outcome = c.run(core, |_, _, signer, _| (signer == p(1)).then(|| Err(timeout())));
    let (e, excluded) = outcome.expect_err("no signature");
    assert_eq!(e.code(), ErrorCode::SigningFailed, "{e}");
    let named: Vec<(u16, Reason, Step)> = excluded.iter().map(|e| (e.signer, e.reason, e.step)).collect();
    assert_eq!(named, vec![(1, Reason::Timeout, Step::Round1), (3, Reason::Unreachable, Step::Connect)]);
    // The session is closed on every node asked anything.
    assert_eq!(c.closes, vec![(vec![p(1), p(2)], true)]);
}

#[test]
fn policy_refusals_ask_every_node_and_the_answer_names_each_decision() {
    let mut c = Cluster::new(3, 2);
    let request = c.request();
    let core = c.roast(Interactive, &request, &[p(1), p(2), p(3)]);
    let refuse = |q: P| Error::new(ErrorCode::PolicyViolation, format!("rule max_amount at node {q}"));
    let outcome = c.run(core, |_, _, signer, ask| match ask {
        Ask::Open { .. } | Ask::Probe => Some(Err(refuse(signer))),
        _ => None,
    });
    let (e, excluded) = outcome.expect_err("refused");
    assert_eq!(e.code(), ErrorCode::PolicyViolation);
    assert!((1..=3).all(|n| e.message().contains(&format!("node {n}: rule max_amount"))), "{e}");
    let refused: Vec<u16> = excluded.iter().filter(|e| e.reason == Reason::PolicyRefused).map(|e| e.signer).collect();
    assert_eq!(refused, vec![1, 2, 3]);
    let probed: Vec<P> =
        c.asks.iter().filter(|(a, _, k)| *a == PROBE && matches!(k, Ask::Probe)).map(|(_, q, _)| *q).collect();
    assert_eq!(probed, vec![p(3)], "node 3 was never in an attempt: it is probed");
}

#[test]
fn every_signer_refusing_the_request_itself_is_the_answer_and_a_mix_is_a_signing_failure() {
    let conflict = |q: P| Error::new(ErrorCode::RequestConflict, format!("request r1 is bound elsewhere at {q}"));
    let mut c = Cluster::new(3, 2);
    let request = c.request();
    let core = c.roast(Interactive, &request, &[p(1), p(2), p(3)]);
    let outcome = c.run(core, |_, _, signer, ask| match ask {
        Ask::Open { .. } => Some(Err(conflict(signer))),
        _ => None,
    });
    let (e, _) = outcome.expect_err("refused");
    assert_eq!(e.code(), ErrorCode::RequestConflict, "{e}");
    assert!(e.message().contains("every signer refused the request"), "{e}");
    // One refuses, one is unreachable: nothing to say of the request itself.
    let mut c = Cluster::new(3, 2);
    let request = c.request();
    let core = c.roast(Interactive, &request, &[p(1), p(2)]);
    let outcome = c.run(core, |_, _, signer, ask| match (ask, signer == p(1)) {
        (Ask::Open { .. }, true) => Some(Err(conflict(signer))),
        (Ask::Open { .. }, false) => Some(Err(Error::new(ErrorCode::NodeUnavailable, "down"))),
        _ => None,
    });
    assert_eq!(outcome.expect_err("failed").0.code(), ErrorCode::SigningFailed);
}

#[test]
fn answers_the_core_did_not_ask_for_change_nothing() {
    let mut c = Cluster::new(3, 2);
    let request = c.request();
    let mut core = c.roast(Interactive, &request, &[p(1), p(2), p(3)]);
    let first = core.start();
    let Some(Action::Ask { attempt, .. }) = first.first().cloned() else { panic!("{first:?}") };
    // Unknown attempt, a signer not in the attempt, a probe answer nobody asked for.
    let stray = AttemptId::from_bytes([7; 16]);
    assert!(core.answer(stray, p(1), Err(timeout())).is_empty());
    assert!(core.answer(attempt, p(3), Err(timeout())).is_empty());
    assert!(core.answer(PROBE, p(1), Err(timeout())).is_empty());
    // Signer 1 answers twice: the second answer is ignored.
    let a1 = c.honest(attempt, p(1), &Ask::Open { signers: vec![p(1), p(2)] });
    assert!(core.answer(attempt, p(1), a1.clone()).is_empty());
    assert!(core.answer(attempt, p(1), Err(timeout())).is_empty());
    let a2 = c.honest(attempt, p(2), &Ask::Open { signers: vec![p(1), p(2)] });
    let round2 = core.answer(attempt, p(2), a2);
    assert_eq!(round2.len(), 2, "round 2 to both: {round2:?}");
    assert!(core.take_outcome().is_none());
}

#[test]
fn attempt_ids_are_distinct_per_seed_and_attempt_and_never_the_probe_id() {
    let (s1, s2) = ([1; 32], [2; 32]);
    let ids: std::collections::BTreeSet<AttemptId> =
        (1..=50).flat_map(|n| [super::core::attempt_id(&s1, n), super::core::attempt_id(&s2, n)]).collect();
    assert_eq!(ids.len(), 100);
    assert!(!ids.contains(&PROBE));
}

#[test]
fn the_package_consensus_takes_the_package_threshold_nodes_agree_on() {
    let c = Cluster::new(3, 2);
    let bytes = c.public.public.serialize().expect("package");
    // The untweaked package is what nodes return; its verifying key is the key id.
    let (shares, public) =
        frost::keys::generate_with_dealer(3, 2, frost::keys::IdentifierList::Default, frost::rand_core::OsRng)
            .expect("dealer");
    drop(shares);
    let good = public.serialize().expect("package");
    let key = KeyId::from_bytes(crate::coordinator::taproot::x_only(public.verifying_key()).expect("x"));
    let replies = vec![(p(1), Ok(good.clone())), (p(2), Ok(bytes.clone())), (p(3), Ok(good.clone()))];
    let (agreed, disagreeing) = super::key::agree(replies, &key, 2).expect("agreed");
    assert_eq!(agreed.serialize().expect("package"), good);
    assert_eq!(
        disagreeing.iter().map(|e| (e.signer, e.reason)).collect::<Vec<_>>(),
        vec![(2, Reason::KeyPackageMismatch)]
    );
    // Only one node has it: no package is backed by the threshold.
    let replies = vec![(p(1), Ok(good.clone())), (p(2), Err(timeout())), (p(3), Ok(bytes))];
    assert_eq!(super::key::agree(replies, &key, 2).expect_err("no quorum").code(), ErrorCode::SigningFailed);
}

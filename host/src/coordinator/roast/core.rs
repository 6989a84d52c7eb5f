//! ROAST as a state machine without I/O: answers in, asks out.
//!
//! It keeps a ready set and an excluded set; whenever `t` signers are ready (and fewer than
//! `n - t + 1` attempts run) it starts an attempt with `t` of them. Each attempt waits for every
//! signer's round-1 answer, then every round-2 answer; the shares are aggregated here and the
//! signature verified with libsecp256k1 under the output key computed from the agreed package
//! (see [`super::aggregate`]). A signer that times out, errs or returns an invalid share is
//! excluded with evidence; the others of a failed attempt are released (their nonces wiped) and
//! become ready again. It finishes with a signature as long as `t` honest signers respond.
//!
//! Invariants: every signer is in at most one running attempt; an answer to an ask this core did
//! not make (unknown attempt, signer not in it, already answered) changes nothing; once the
//! outcome is set no further ask is made.

use super::aggregate::{aggregate, invalid_shares, libsecp_verifies, sha256};
use super::evidence::{evidence, Evidence, Reason, Step};
use super::exchange::{Action, Answer, Ask};
use super::request::{SignRequest, Signed};
use super::strategy::{Round1, Strategy};
use crate::coordinator::taproot::Tweaked;
use frost_secp256k1_tr::{Identifier, SigningPackage};
use frostgate_common::error::{Error, ErrorCode, RecoveryClass};
use frostgate_common::ids::{AttemptId, ParticipantId};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// How a signing ended.
pub type Outcome = Result<Signed, (Error, Vec<Evidence>)>;

/// The attempt id the probes are asked under (never an attempt's: those derive from a hash).
pub const PROBE: AttemptId = AttemptId::from_bytes([0; 16]);

enum Stage {
    Round1(BTreeMap<ParticipantId, Round1>),
    Round2 { package: SigningPackage, bytes: Arc<Vec<u8>>, r1: BTreeMap<ParticipantId, Round1>, shares: Shares },
    Releasing,
}

type Shares = BTreeMap<ParticipantId, Vec<u8>>;

struct Attempt {
    signers: Vec<ParticipantId>,
    /// Signers whose answer to the current stage is awaited.
    waiting: BTreeSet<ParticipantId>,
    stage: Stage,
    failed: Vec<Evidence>,
    /// A signer lost what was held for it: the attempt fails, nobody is blamed for that.
    forgiven: bool,
}

/// One signing's ROAST state.
pub struct Roast<S: Strategy> {
    strategy: S,
    /// Secret to this coordinator: attempt ids derive from it, so nobody who learns the session
    /// id (it is in the nodes' audit trails) can open the next attempt first.
    attempt_seed: [u8; 32],
    message: [u8; 32],
    public: Arc<Tweaked>,
    t: usize,
    max_active: usize,
    ready: BTreeSet<ParticipantId>,
    excluded: BTreeMap<ParticipantId, Evidence>,
    /// Signers sent any request of this session (the ones to close it on).
    asked: BTreeSet<ParticipantId>,
    attempts: BTreeMap<AttemptId, Attempt>,
    started: u32,
    probing: BTreeSet<ParticipantId>,
    probed: bool,
    outcome: Option<Outcome>,
}

impl<S: Strategy> Roast<S> {
    /// A signing of `request` under `public` (tweaked for its path and mode) with `signers`
    /// (id, reachable), `disagreeing` excluded from the start (see `KeyMaterial`); attempt ids
    /// derive from `attempt_seed` (fresh and secret per signing).
    pub fn new(
        strategy: S,
        attempt_seed: [u8; 32],
        request: &SignRequest,
        public: Arc<Tweaked>,
        threshold: u16,
        signers: &[(ParticipantId, bool)],
        disagreeing: &[Evidence],
    ) -> Result<Self, Error> {
        let (t, n) = (usize::from(threshold), signers.len());
        if n < t || t == 0 {
            return Err(Error::new(ErrorCode::SignerSetInvalid, format!("{n} signers for a {t}-of-n key")));
        }
        let mut excluded = BTreeMap::new();
        // A node that could not even be reached is never ready; it is reported, not hidden.
        for (p, _) in signers.iter().filter(|(_, reachable)| !reachable) {
            let mut ev = evidence(*p, Step::Connect, PROBE, &Error::new(ErrorCode::NodeUnavailable, "unreachable"));
            ev.attempt = None;
            excluded.insert(*p, ev);
        }
        // A node that disagreed about the key's public package is not trusted to sign with it.
        for ev in disagreeing {
            if let Ok(p) = ParticipantId::new(ev.signer) {
                excluded.entry(p).or_insert_with(|| ev.clone());
            }
        }
        let ready = signers.iter().map(|(p, _)| *p).filter(|p| !excluded.contains_key(p)).collect();
        Ok(Roast {
            strategy,
            attempt_seed,
            message: request.message,
            public,
            t,
            max_active: n - t + 1,
            ready,
            excluded,
            asked: BTreeSet::new(),
            attempts: BTreeMap::new(),
            started: 0,
            probing: BTreeSet::new(),
            probed: false,
            outcome: None,
        })
    }

    /// The first asks.
    pub fn start(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        self.schedule(&mut out);
        out
    }

    /// The outcome, once there is one (taken once).
    pub fn take_outcome(&mut self) -> Option<Outcome> {
        self.outcome.take()
    }

    /// Feeds `signer`'s answer to an ask of `attempt`; returns what to do next.
    pub fn answer(&mut self, attempt: AttemptId, signer: ParticipantId, answer: Result<Answer, Error>) -> Vec<Action> {
        let mut out = Vec::new();
        if self.outcome.is_some() {
            return out;
        }
        if attempt == PROBE {
            if self.probing.remove(&signer) {
                if let Err(e) = answer {
                    self.excluded.insert(signer, evidence(signer, Step::Round1, PROBE, &e));
                }
                self.schedule(&mut out);
            }
            return out;
        }
        let Some(a) = self.attempts.get_mut(&attempt) else { return out };
        if !a.waiting.remove(&signer) {
            return out;
        }
        match &mut a.stage {
            Stage::Round1(got) => match answer.and_then(|x| self.strategy.commitments(x)) {
                Ok(r1) => drop(got.insert(signer, r1)),
                Err(e) => {
                    if self.strategy.drops_held(&e) {
                        out.push(Action::DropHeld(signer));
                    }
                    a.failed.push(evidence(signer, Step::Round1, attempt, &e));
                }
            },
            Stage::Round2 { r1, shares, .. } => match answer {
                Ok(Answer::Share(share)) => drop(shares.insert(signer, share)),
                Ok(other) => {
                    let e = Error::new(ErrorCode::MalformedMessage, format!("unexpected answer {other:?}"));
                    a.failed.push(evidence(signer, Step::Round2, attempt, &e));
                }
                Err(e) => {
                    if self.strategy.drops_held(&e) {
                        out.push(Action::DropHeld(signer));
                    }
                    match r1.get(&signer) {
                        Some(r) if self.strategy.forgives(&e, r) => a.forgiven = true,
                        _ => a.failed.push(evidence(signer, Step::Round2, attempt, &e)),
                    }
                }
            },
            Stage::Releasing => {
                if !self.excluded.contains_key(&signer) {
                    self.ready.insert(signer);
                }
            }
        }
        if a.waiting.is_empty() {
            self.advance(attempt, &mut out);
        }
        if self.outcome.is_none() {
            self.schedule(&mut out);
        }
        out
    }

    /// Every answer of the attempt's stage is in: the next stage, or its end.
    fn advance(&mut self, id: AttemptId, out: &mut Vec<Action>) {
        let Some(mut a) = self.attempts.remove(&id) else { return };
        if matches!(a.stage, Stage::Releasing) {
            return;
        }
        if !a.failed.is_empty() || a.forgiven {
            return self.release(id, a, out);
        }
        match std::mem::replace(&mut a.stage, Stage::Releasing) {
            Stage::Round1(got) => {
                let map: BTreeMap<Identifier, _> = got
                    .iter()
                    .filter_map(|(p, r)| Identifier::try_from(p.get()).ok().map(|i| (i, r.commitments)))
                    .collect();
                let package = SigningPackage::new(map, &self.message);
                let Ok(bytes) = package.serialize() else { return self.release(id, a, out) };
                let bytes = Arc::new(bytes);
                for (p, r) in &got {
                    let ask = self.strategy.round2(r, &a.signers, bytes.clone());
                    out.push(Action::Ask { attempt: id, signer: *p, ask });
                }
                a.waiting = a.signers.iter().copied().collect();
                a.stage = Stage::Round2 { package, bytes, r1: got, shares: BTreeMap::new() };
                self.attempts.insert(id, a);
            }
            Stage::Round2 { package, bytes, shares, .. } => {
                if let Some(signature) = aggregate(&package, &shares, &self.public) {
                    if libsecp_verifies(&signature, &self.message, &self.public.output_key) {
                        let signers = a.signers.iter().map(|p| p.get()).collect();
                        return self.finish(Ok((signature, signers)), out);
                    }
                }
                a.failed = invalid_shares(&shares, &self.public, &package, id, sha256(&bytes));
                if a.failed.is_empty() {
                    // Every share verifies, yet they do not aggregate: nobody can be named.
                    a.forgiven = true;
                }
                self.release(id, a, out)
            }
            Stage::Releasing => {}
        }
    }

    /// Ends a failed attempt: its culprits excluded with evidence, the others released.
    fn release(&mut self, id: AttemptId, mut a: Attempt, out: &mut Vec<Action>) {
        for ev in std::mem::take(&mut a.failed) {
            if let Ok(p) = ParticipantId::new(ev.signer) {
                self.ready.remove(&p);
                self.excluded.entry(p).or_insert(ev);
            }
        }
        a.waiting = a.signers.iter().copied().filter(|p| !self.excluded.contains_key(p)).collect();
        for p in &a.waiting {
            out.push(Action::Ask { attempt: id, signer: *p, ask: Ask::Release });
        }
        if !a.waiting.is_empty() {
            a.stage = Stage::Releasing;
            self.attempts.insert(id, a);
        }
    }

    /// Starts attempts while `t` signers are ready; ends the signing when none can start.
    fn schedule(&mut self, out: &mut Vec<Action>) {
        while self.ready.len() >= self.t && self.attempts.len() < self.max_active {
            let chosen: Vec<ParticipantId> = self.ready.iter().copied().take(self.t).collect();
            self.started += 1;
            let id = attempt_id(&self.attempt_seed, self.started);
            for p in &chosen {
                self.ready.remove(p);
                self.asked.insert(*p);
                out.push(Action::Ask { attempt: id, signer: *p, ask: self.strategy.round1(&chosen) });
            }
            let attempt = Attempt {
                waiting: chosen.iter().copied().collect(),
                signers: chosen,
                stage: Stage::Round1(BTreeMap::new()),
                failed: Vec::new(),
                forgiven: false,
            };
            self.attempts.insert(id, attempt);
        }
        if !self.attempts.is_empty() || !self.probing.is_empty() {
            return;
        }
        let refused = self.excluded.values().any(|e| e.reason == Reason::PolicyRefused);
        if refused && !self.probed && !self.ready.is_empty() {
            // Policies refused: ask the nodes not yet asked too, so the report names every
            // node's decision (opening a session consumes nothing; the driver closes it again).
            self.probed = true;
            for p in std::mem::take(&mut self.ready) {
                self.probing.insert(p);
                out.push(Action::Ask { attempt: PROBE, signer: p, ask: Ask::Probe });
            }
            return;
        }
        let refusals: Vec<String> = self
            .excluded
            .values()
            .filter(|e| e.reason == Reason::PolicyRefused)
            .map(|e| format!("node {}: {}", e.signer, e.message.as_deref().unwrap_or("")))
            .collect();
        // Every excluded signer refused the request itself with one code the request must fix (a
        // service request bound to another target, or expired): that is the answer too.
        let codes: Vec<Option<ErrorCode>> = self.excluded.values().map(|e| e.code).collect();
        let request_refusal = match codes.first() {
            Some(Some(c))
                if c.recovery_class() == RecoveryClass::FixRequest && codes.iter().all(|x| *x == Some(*c)) =>
            {
                Some(*c)
            }
            _ => None,
        };
        // Operators' policies refused: that is the answer, not a signing fault.
        let e = match (refusals.is_empty(), request_refusal) {
            (false, _) => Error::new(ErrorCode::PolicyViolation, format!("refused by policy: {}", refusals.join("; "))),
            (true, Some(code)) => {
                let why: Vec<String> = self
                    .excluded
                    .values()
                    .map(|e| format!("node {}: {}", e.signer, e.message.as_deref().unwrap_or("")))
                    .collect();
                Error::new(code, format!("every signer refused the request: {}", why.join("; ")))
            }
            (true, None) => Error::new(
                ErrorCode::SigningFailed,
                format!("fewer than {} responsive, honest signers remain ({} excluded)", self.t, self.excluded.len()),
            ),
        };
        self.finish(Err(e), out)
    }

    /// Sets the outcome; the session is closed on every signer asked anything.
    fn finish(
        &mut self,
        result: Result<(frostgate_common::protocol::Bip340Signature, Vec<u16>), Error>,
        out: &mut Vec<Action>,
    ) {
        if !self.asked.is_empty() {
            let signers = self.asked.iter().copied().collect();
            out.push(Action::Close { signers, now: self.strategy.closes_now() });
        }
        let excluded: Vec<Evidence> = std::mem::take(&mut self.excluded).into_values().collect();
        self.outcome = Some(match result {
            Ok((signature, signers)) => Ok(Signed {
                signature: hex::encode(signature.to_bytes()),
                bip340: signature,
                output_key: hex::encode(self.public.output_key),
                signers,
                attempts: self.started,
                excluded,
            }),
            Err(e) => Err((e, excluded)),
        });
    }
}

/// The `n`th attempt of a signing whose seed is `seed` (n from 1): distinct per seed and
/// attempt, unpredictable without the seed, never [`PROBE`].
pub fn attempt_id(seed: &[u8; 32], n: u32) -> AttemptId {
    let mut input = b"frostgate/roast/attempt".to_vec();
    input.extend_from_slice(seed);
    input.extend_from_slice(&n.to_be_bytes());
    let h = sha256(&input);
    let mut id = [0u8; 16];
    id.copy_from_slice(&h[..16]);
    id[0] |= 1;
    AttemptId::from_bytes(id)
}

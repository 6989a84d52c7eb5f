//! Per-caller admission to the enclave: in-flight requests, open sessions, attempts, ceremonies
//! (DKGs, refreshes, repairs) and preprocessed commitments. What a request opens and closes comes
//! from its boundary-table row alone (`Message::opens`, `Message::closes`), never a match here.
//!
//! Invariants: one caller (a client certificate, or a plaintext peer address) never has more
//! than its quota of each; a request over quota is refused before it reaches the enclave
//! (`too_many_in_flight` for concurrency, `quota_exceeded` for registries), so a flood from one
//! caller cannot fill the enclave's registries or its one channel for the others. A reservation is
//! taken before forwarding (so concurrent requests cannot overshoot) and released when the
//! request fails or is abandoned, the enclave closed or aborted it, the DKG ended, or its TTL
//! passed.

use super::connection::{ApiLimits, CallerId};
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::ids::{AttemptId, CommitmentId, DkgId, SessionId};
use frostgate_common::protocol::{Entry, Message, PreCommitment, SignOutcome, When};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Registry entries older than this are forgotten here (the enclave's session TTL; DKGs expire
/// sooner in the enclave).
const ENTRY_TTL: Duration = Duration::from_secs(frostgate_common::limits::SESSION_TTL_SECS);

/// DKGs, refreshes and repairs are forgotten here after the enclave's DKG TTL.
const CEREMONY_TTL: Duration = Duration::from_secs(frostgate_common::limits::DKG_TTL_SECS);

/// Preprocessed commitments are forgotten here after the enclave's default nonce TTL.
const COMMITMENT_TTL: Duration = Duration::from_secs(frostgate_common::limits::NONCE_TTL_SECS);

#[derive(Debug)]
struct Caller {
    in_flight: Arc<Semaphore>,
    sessions: HashMap<SessionId, Instant>,
    attempts: HashMap<AttemptId, (SessionId, Instant)>,
    dkgs: HashMap<DkgId, Instant>,
    /// Repairs this caller started (the enclave keeps them apart from DKGs; both count against
    /// `max_dkgs_per_caller`).
    repairs: HashMap<DkgId, Instant>,
    /// Preprocessed commitments issued to this caller and not yet used.
    commitments: HashMap<CommitmentId, Instant>,
    /// Openings forwarded and not yet answered: a concurrent close must not release them (the
    /// opening could still take effect after the close, uncounted).
    opening: std::collections::HashSet<Reserved>,
}

type Callers = Arc<Mutex<HashMap<CallerId, Caller>>>;

/// What a request reserved, to settle once its reply is known. Dropped unsettled (the client
/// went away mid-request), it gives its reservation back.
#[derive(Debug)]
pub struct Ticket {
    _permit: OwnedSemaphorePermit,
    callers: Callers,
    caller: CallerId,
    reserved: Vec<Reserved>,
    /// Closing, aborting: released only once the enclave did it.
    releases: Vec<Reserved>,
    /// DKGs, refreshes and repairs that leave the caller's count when the reply ends them
    /// (a blame, the key).
    ends: Vec<Reserved>,
    /// Its reservations stand even if it fails (a one-request signing may have bound its session
    /// and attempt before failing); a later close, or the TTL, releases them.
    keep_on_error: bool,
}

impl Ticket {
    fn undo(&mut self, c: &mut Caller) {
        for r in std::mem::take(&mut self.reserved) {
            c.opening.remove(&r);
            match r {
                Reserved::Session(s) => drop(c.sessions.remove(&s)),
                Reserved::Attempt(a) => drop(c.attempts.remove(&a)),
                Reserved::Dkg(d) => drop(c.dkgs.remove(&d)),
                Reserved::Repair(d) => drop(c.repairs.remove(&d)),
            }
        }
    }
}

impl Drop for Ticket {
    /// Unsettled (the client went away mid-request): the reservations go back, except those of a
    /// request that may have opened entries even if it failed (they stand until closed or
    /// expired, as when it fails).
    fn drop(&mut self) {
        if self.reserved.is_empty() {
            return;
        }
        let callers = self.callers.clone();
        let mut callers = callers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = callers.get_mut(&self.caller) {
            if self.keep_on_error {
                for r in std::mem::take(&mut self.reserved) {
                    c.opening.remove(&r);
                }
            } else {
                self.undo(c);
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Reserved {
    Session(SessionId),
    Attempt(AttemptId),
    Dkg(DkgId),
    Repair(DkgId),
}

/// The admission state of one API server.
#[derive(Debug)]
pub struct Admission {
    limits: ApiLimits,
    callers: Callers,
}

fn quota(caller: &CallerId, what: &str, max: usize) -> Error {
    Error::new(ErrorCode::QuotaExceeded, format!("caller {caller} holds its quota of {max} open {what}"))
}

impl Admission {
    /// Admission under `limits`.
    pub fn new(limits: ApiLimits) -> Admission {
        Admission { limits, callers: Arc::new(Mutex::new(HashMap::new())) }
    }

    /// Admits `m` from `caller`, or refuses it before it reaches the enclave.
    pub fn enter(&self, caller: &CallerId, m: &Message) -> Result<Ticket, Error> {
        let limits = self.limits;
        let mut callers = self.callers.lock().unwrap_or_else(|p| p.into_inner());
        let c = callers.entry(caller.clone()).or_insert_with(|| Caller {
            in_flight: Arc::new(Semaphore::new(limits.max_in_flight_per_caller.max(1))),
            sessions: HashMap::new(),
            attempts: HashMap::new(),
            dkgs: HashMap::new(),
            repairs: HashMap::new(),
            commitments: HashMap::new(),
            opening: std::collections::HashSet::new(),
        });
        let permit = c.in_flight.clone().try_acquire_owned().map_err(|_| {
            Error::new(
                ErrorCode::TooManyInFlight,
                format!("caller {caller} has {} requests in flight", limits.max_in_flight_per_caller),
            )
        })?;
        let now = Instant::now();
        c.sessions.retain(|_, t| now.duration_since(*t) < ENTRY_TTL);
        c.attempts.retain(|_, (_, t)| now.duration_since(*t) < ENTRY_TTL);
        c.dkgs.retain(|_, t| now.duration_since(*t) < CEREMONY_TTL);
        c.repairs.retain(|_, t| now.duration_since(*t) < CEREMONY_TTL);
        c.commitments.retain(|_, t| now.duration_since(*t) < COMMITMENT_TTL);
        // What the request opens and closes, from its boundary-table row alone (`Registers`).
        let (opens, closes) = (m.opens(), m.closes());
        // Commitments named by a signing are used (or unknown) once it is admitted.
        let mut used: Vec<CommitmentId> = closes
            .iter()
            .filter_map(|(e, w)| match (e, w) {
                (Entry::Commitment(id), When::Sent) if c.commitments.contains_key(id) => Some(*id),
                _ => None,
            })
            .collect();
        used.sort();
        used.dedup();
        let asked: usize = opens.iter().map(|e| if let Entry::Commitments(n) = e { usize::from(*n) } else { 0 }).sum();
        if asked > 0 && c.commitments.len() - used.len() + asked > limits.max_commitments_per_caller {
            return Err(quota(caller, "preprocessed commitments", limits.max_commitments_per_caller));
        }
        // Every opening counts (a one-request signing opens its own session and attempt, a batch
        // one per item, a refresh and a repair like a DKG). Every quota is checked before
        // anything is taken.
        let mut sessions: Vec<SessionId> =
            opens.iter().filter_map(|e| if let Entry::Session(s) = e { Some(*s) } else { None }).collect();
        sessions.sort();
        sessions.dedup();
        sessions.retain(|s| !c.sessions.contains_key(s));
        let mut attempts: Vec<(AttemptId, SessionId)> = opens
            .iter()
            .filter_map(|e| if let Entry::Attempt(a, Some(s)) = e { Some((*a, *s)) } else { None })
            .collect();
        attempts.sort();
        attempts.dedup_by_key(|(a, _)| *a);
        attempts.retain(|(a, _)| !c.attempts.contains_key(a));
        let reserved_of = |e: &Entry| match e {
            Entry::Session(s) => Some(Reserved::Session(*s)),
            Entry::Attempt(a, _) => Some(Reserved::Attempt(*a)),
            Entry::Dkg(d) => Some(Reserved::Dkg(*d)),
            Entry::Repair(d) => Some(Reserved::Repair(*d)),
            Entry::Commitments(_) | Entry::Commitment(_) => None,
        };
        // DKGs (refreshes too) and repairs: one quota, two registries (as in the enclave).
        let mut ceremonies: Vec<Reserved> =
            opens.iter().filter(|e| matches!(e, Entry::Dkg(_) | Entry::Repair(_))).filter_map(reserved_of).collect();
        ceremonies.sort();
        ceremonies.dedup();
        ceremonies.retain(|r| match r {
            Reserved::Dkg(d) => !c.dkgs.contains_key(d),
            Reserved::Repair(d) => !c.repairs.contains_key(d),
            _ => false,
        });
        let releases: Vec<Reserved> =
            closes.iter().filter(|(_, w)| *w == When::Answered).filter_map(|(e, _)| reserved_of(e)).collect();
        // Closed as soon as the request is forwarded (a repair's sigma: the enclave drops the
        // repair when the request arrives, whatever it answers).
        let released_now: Vec<Reserved> = closes
            .iter()
            .filter(|(e, w)| *w == When::Sent && matches!(e, Entry::Repair(_)))
            .filter_map(|(e, _)| reserved_of(e))
            .collect();
        let ends: Vec<Reserved> =
            closes.iter().filter(|(_, w)| *w == When::Ended).filter_map(|(e, _)| reserved_of(e)).collect();
        // Sessions this request closes make room for the ones it opens.
        let closing = releases
            .iter()
            .filter(|r| matches!(r, Reserved::Session(s) if c.sessions.contains_key(s)) && !c.opening.contains(r))
            .count();
        if !sessions.is_empty()
            && (c.sessions.len() + sessions.len()).saturating_sub(closing) > limits.max_sessions_per_caller
        {
            return Err(quota(caller, "sessions", limits.max_sessions_per_caller));
        }
        if !attempts.is_empty() && c.attempts.len() + attempts.len() > limits.max_attempts_per_caller {
            return Err(quota(caller, "attempts", limits.max_attempts_per_caller));
        }
        if !ceremonies.is_empty() && c.dkgs.len() + c.repairs.len() + ceremonies.len() > limits.max_dkgs_per_caller {
            return Err(quota(caller, "DKGs, refreshes and repairs", limits.max_dkgs_per_caller));
        }
        for id in used {
            c.commitments.remove(&id);
        }
        let mut reserved = Vec::new();
        for s in sessions {
            c.sessions.insert(s, now);
            reserved.push(Reserved::Session(s));
        }
        for (a, s) in attempts {
            c.attempts.insert(a, (s, now));
            reserved.push(Reserved::Attempt(a));
        }
        for r in ceremonies {
            match r {
                Reserved::Dkg(d) => drop(c.dkgs.insert(d, now)),
                Reserved::Repair(d) => drop(c.repairs.insert(d, now)),
                _ => {}
            }
            reserved.push(r);
        }
        for r in released_now {
            if let Reserved::Repair(d) = r {
                c.repairs.remove(&d);
            }
        }
        c.opening.extend(reserved.iter().copied());
        // A request opening entries in several registries (a one-request signing) may have
        // opened some before it failed: its reservations stand until closed or expired.
        let keep_on_error = opens.len() > 1;
        Ok(Ticket {
            _permit: permit,
            callers: self.callers.clone(),
            caller: caller.clone(),
            reserved,
            releases,
            ends,
            keep_on_error,
        })
    }

    /// Settles a ticket with the enclave's reply: a refused opening gives its reservation back;
    /// a close or abort the enclave carried out releases what it closed; a DKG that ended (blame,
    /// or the activated key) leaves the caller's count.
    pub fn settle(&self, mut ticket: Ticket, reply: &Message) {
        let mut callers = self.callers.lock().unwrap_or_else(|p| p.into_inner());
        let Some(c) = callers.get_mut(&ticket.caller) else { return };
        if matches!(reply, Message::Error(_)) && !ticket.keep_on_error {
            ticket.undo(c);
        } else if matches!(reply, Message::Error(_)) {
            for r in std::mem::take(&mut ticket.reserved) {
                c.opening.remove(&r);
            }
        } else {
            for r in std::mem::take(&mut ticket.reserved) {
                c.opening.remove(&r);
            }
            let Caller { sessions, attempts, dkgs, repairs, opening, .. } = c;
            for r in std::mem::take(&mut ticket.releases) {
                match r {
                    _ if opening.contains(&r) => {}
                    Reserved::Session(s) => {
                        sessions.remove(&s);
                        attempts.retain(|a, (session, _)| *session != s || opening.contains(&Reserved::Attempt(*a)));
                    }
                    Reserved::Attempt(a) => drop(attempts.remove(&a)),
                    Reserved::Dkg(d) => drop(dkgs.remove(&d)),
                    Reserved::Repair(d) => drop(repairs.remove(&d)),
                }
            }
        }
        if reply.ends_ceremony() {
            for r in &ticket.ends {
                match r {
                    Reserved::Dkg(d) => drop(c.dkgs.remove(d)),
                    Reserved::Repair(d) => drop(c.repairs.remove(d)),
                    _ => {}
                }
            }
        }
        // Commitments handed out to this caller count until used or expired.
        let now = Instant::now();
        let mut issued = |list: &[PreCommitment]| {
            for p in list {
                c.commitments.insert(p.id, now);
            }
        };
        match reply {
            Message::Preprocessed(r) => issued(r.commitments.as_inner()),
            Message::PreprocessedShare(r) => issued(r.next.as_inner()),
            Message::BatchSigned(r) => {
                for o in r.outcomes.as_inner() {
                    if let SignOutcome::Signed(share) = o {
                        issued(share.next.as_inner());
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use frostgate_common::bounded::{SessionIds, Signers, SigningPackageBytes};
    use frostgate_common::ids::{CommitmentId, KeyId, ParticipantId};
    use frostgate_common::protocol::{
        BatchSigned, CloseSessions, OpenSession, SessionBinding, SessionsClosed, SignBatch, SignPreprocessed,
        TaprootMode,
    };
    use frostgate_common::protocol::{SignItems, SignOutcomes};

    fn signing(session: u8, close: &[u8]) -> SignPreprocessed {
        let seat = ParticipantId::new(1).expect("id");
        SignPreprocessed {
            binding: SessionBinding::Digest(OpenSession {
                session: SessionId::from_bytes([session; 16]),
                key: KeyId::from_bytes([1; 32]),
                message: [2; 32],
                mode: TaprootMode::Bip86,
            }),
            attempt: AttemptId::from_bytes([session; 16]),
            signers: Signers::new(vec![seat]).expect("bound"),
            seat,
            commitment: CommitmentId::from_bytes([3; 16]),
            signing_package: SigningPackageBytes::new(vec![]).expect("bound"),
            replenish: 1,
            close: SessionIds::new(close.iter().map(|s| SessionId::from_bytes([*s; 16])).collect::<Vec<_>>())
                .expect("bound"),
        }
    }

    fn batch(items: Vec<SignPreprocessed>) -> Message {
        Message::SignBatch(SignBatch { items: SignItems::new(items).expect("bound") })
    }

    fn answered() -> Message {
        Message::BatchSigned(BatchSigned { outcomes: SignOutcomes::new(vec![]).expect("bound") })
    }

    #[test]
    fn one_request_signings_count_against_the_quotas_and_cannot_release_their_own_sessions() {
        let limits = ApiLimits { max_sessions_per_caller: 3, ..ApiLimits::default() };
        let admission = Admission::new(limits);
        let caller = CallerId("coordinator".into());
        // Item 1 closes item 2's session, which the same batch binds: nothing is released.
        let t = admission.enter(&caller, &batch(vec![signing(1, &[2]), signing(2, &[])])).expect("admitted");
        admission.settle(t, &answered());
        let t = admission.enter(&caller, &batch(vec![signing(3, &[])])).expect("the third session");
        admission.settle(t, &answered());
        let e = admission.enter(&caller, &batch(vec![signing(4, &[])])).expect_err("over quota");
        assert_eq!(e.code(), ErrorCode::QuotaExceeded);
        // Closing one in the same request makes room for the next.
        let t = admission.enter(&caller, &batch(vec![signing(4, &[1])])).expect("room made by the close");
        admission.settle(t, &answered());
        // A failed one-request signing keeps its reservation (it may have bound its session).
        let t = admission.enter(&caller, &Message::SignPreprocessed(signing(5, &[2]))).expect("admitted");
        admission.settle(t, &Message::Error(Error::new(ErrorCode::CommitmentUnknown, "refused")));
        let e = admission.enter(&caller, &batch(vec![signing(6, &[])])).expect_err("still full");
        assert_eq!(e.code(), ErrorCode::QuotaExceeded);
        let close = CloseSessions {
            sessions: SessionIds::new(vec![SessionId::from_bytes([3; 16]), SessionId::from_bytes([4; 16])])
                .expect("bound"),
        };
        let t = admission.enter(&caller, &Message::CloseSessions(close)).expect("close");
        admission.settle(t, &Message::SessionsClosed(SessionsClosed { closed: 2 }));
        admission.enter(&caller, &batch(vec![signing(6, &[])])).expect("room again");
    }

    #[test]
    fn preprocessed_commitments_count_until_used_and_a_caller_cannot_hoard_them() {
        use frostgate_common::bounded::CommitmentBytes;
        use frostgate_common::protocol::PreCommitments;
        use frostgate_common::protocol::{PreCommitment, Preprocess, Preprocessed, PreprocessedShare};
        let limits = ApiLimits { max_commitments_per_caller: 10, ..ApiLimits::default() };
        let admission = Admission::new(limits);
        let caller = CallerId("coordinator".into());
        let seat = ParticipantId::new(1).expect("id");
        let key = KeyId::from_bytes([1; 32]);
        let issued = |first: u8, n: u8| {
            let list: Vec<PreCommitment> = (first..first + n)
                .map(|i| PreCommitment {
                    id: CommitmentId::from_bytes([i; 16]),
                    commitments: CommitmentBytes::new(vec![i]).expect("bound"),
                })
                .collect();
            PreCommitments::new(list).expect("bound")
        };
        let preprocess = |count| Message::Preprocess(Preprocess { key, seat, count });
        let t = admission.enter(&caller, &preprocess(8)).expect("8 of 10");
        admission.settle(t, &Message::Preprocessed(Preprocessed { key, seat, commitments: issued(10, 8) }));
        let e = admission.enter(&caller, &preprocess(3)).expect_err("11 of 10");
        assert_eq!(e.code(), ErrorCode::QuotaExceeded);
        // A signing refused before the enclave (here: over the session quota) uses nothing.
        let tight = Admission::new(ApiLimits { max_commitments_per_caller: 10, max_sessions_per_caller: 0, ..limits });
        let t = tight.enter(&caller, &preprocess(8)).expect("8 of 10");
        tight.settle(t, &Message::Preprocessed(Preprocessed { key, seat, commitments: issued(10, 8) }));
        let mut uses = signing(7, &[]);
        uses.commitment = CommitmentId::from_bytes([10; 16]);
        assert!(tight.enter(&caller, &Message::SignPreprocessed(uses.clone())).is_err());
        assert_eq!(tight.enter(&caller, &preprocess(3)).expect_err("still 8 held").code(), ErrorCode::QuotaExceeded);
        // Using one frees its place; its replenishment counts again.
        let t = admission.enter(&caller, &Message::SignPreprocessed(uses)).expect("uses one, asks one");
        let share = PreprocessedShare {
            attempt: AttemptId::from_bytes([7; 16]),
            seat,
            signature_share: frostgate_common::bounded::SignatureShareBytes::new(vec![1]).expect("bound"),
            next: issued(40, 1),
        };
        admission.settle(t, &Message::PreprocessedShare(share));
        let t = admission.enter(&caller, &preprocess(2)).expect("8 held, 2 more");
        admission.settle(t, &Message::Preprocessed(Preprocessed { key, seat, commitments: issued(50, 2) }));
        assert_eq!(admission.enter(&caller, &preprocess(1)).expect_err("10 held").code(), ErrorCode::QuotaExceeded);
    }

    #[test]
    fn a_refresh_counts_against_the_dkg_quota_like_a_dkg() {
        use frostgate_common::ids::DkgId;
        use frostgate_common::protocol::DkgParticipants;
        use frostgate_common::protocol::{DkgAborted, DkgRef, RefreshStart};
        let limits = ApiLimits { max_dkgs_per_caller: 2, ..ApiLimits::default() };
        let admission = Admission::new(limits);
        let caller = CallerId("coordinator".into());
        let refresh = |i: u8| {
            Message::RefreshStart(RefreshStart {
                dkg: DkgId::from_bytes([i; 16]),
                key: KeyId::from_bytes([1; 32]),
                me: ParticipantId::new(1).expect("id"),
                participants: DkgParticipants::new(vec![]).expect("bound"),
            })
        };
        let round1 = || {
            Message::DkgRound1(frostgate_common::protocol::DkgRound1Package {
                dkg: DkgId::from_bytes([0; 16]),
                from: ParticipantId::new(1).expect("id"),
                package: frostgate_common::bounded::DkgPackageBytes::new(vec![1]).expect("bound"),
            })
        };
        for i in 1..=2 {
            let t = admission.enter(&caller, &refresh(i)).expect("within the quota");
            admission.settle(t, &round1());
        }
        let e = admission.enter(&caller, &refresh(3)).expect_err("a third refresh");
        assert_eq!(e.code(), ErrorCode::QuotaExceeded);
        // Aborting one makes room again.
        let abort = Message::DkgAbort(DkgRef { dkg: DkgId::from_bytes([1; 16]) });
        let t = admission.enter(&caller, &abort).expect("abort");
        admission.settle(t, &Message::DkgAborted(DkgAborted { dkg: DkgId::from_bytes([1; 16]) }));
        admission.enter(&caller, &refresh(3)).expect("room again");
    }

    #[test]
    fn a_ceremonys_challenge_counts_as_its_ceremony_and_a_refusal_or_an_abort_gives_it_back() {
        use frostgate_common::error::Error;
        use frostgate_common::ids::DkgId;
        use frostgate_common::protocol::{CeremonyChallenge, CeremonyChallenged, CeremonyKind, DkgAborted, DkgRef};
        let admission = Admission::new(ApiLimits { max_dkgs_per_caller: 1, ..ApiLimits::default() });
        let caller = CallerId("coordinator".into());
        let me = ParticipantId::new(1).expect("id");
        let challenge = |i: u8, kind| {
            Message::CeremonyChallenge(CeremonyChallenge { ceremony: DkgId::from_bytes([i; 16]), kind, me })
        };
        // Refused by the enclave: nothing held.
        let t = admission.enter(&caller, &challenge(1, CeremonyKind::Dkg)).expect("room");
        admission.settle(t, &Message::Error(Error::new(ErrorCode::DkgConfigInvalid, "not pinned")));
        let t = admission.enter(&caller, &challenge(2, CeremonyKind::Repair)).expect("room again");
        let answer = CeremonyChallenged { ceremony: DkgId::from_bytes([2; 16]), from: me, challenge: [0; 32] };
        admission.settle(t, &Message::CeremonyChallenged(answer));
        // Held: a repair's challenge fills the quota shared with DKGs.
        let e = admission.enter(&caller, &challenge(3, CeremonyKind::Dkg)).expect_err("full");
        assert_eq!(e.code(), ErrorCode::QuotaExceeded);
        let admission = Admission::new(ApiLimits { max_dkgs_per_caller: 1, ..ApiLimits::default() });
        let t = admission.enter(&caller, &challenge(4, CeremonyKind::Dkg)).expect("room");
        let answer = CeremonyChallenged { ceremony: DkgId::from_bytes([4; 16]), from: me, challenge: [0; 32] };
        admission.settle(t, &Message::CeremonyChallenged(answer));
        // The DKG it preceded is the same entry, and its abort gives the place back.
        let abort = Message::DkgAbort(DkgRef { dkg: DkgId::from_bytes([4; 16]) });
        let t = admission.enter(&caller, &abort).expect("abort");
        admission.settle(t, &Message::DkgAborted(DkgAborted { dkg: DkgId::from_bytes([4; 16]) }));
        admission.enter(&caller, &challenge(5, CeremonyKind::Dkg)).expect("room after the abort");
    }
}

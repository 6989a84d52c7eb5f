//! Ends of life: closing a session, aborting an attempt, and the expiry sweep. Markers go with
//! their attempt; by then every nonce of the attempt is consumed or wiped.

use super::*;

impl Engine {
    /// Closes a session (its signature exists, or it is abandoned): removes it with its attempts,
    /// live nonces (wiped) and markers, and records the closing. Idempotent. Safe for the same
    /// reason expiry is: the nonces are gone, so no old package can ever be signed again.
    pub fn close_session(&self, session: SessionId) {
        let known = {
            let mut s = self.lock();
            let known = s.sessions.contains_key(&session);
            Self::remove_sessions(&mut s, &BTreeSet::from([session]));
            known
        };
        if known {
            // Queued in order after the session's binding; its outcome is not awaited.
            drop(self.store.persist_detached(vec![Record::SessionExpired { session }]));
        }
    }

    /// Closes several sessions as [`Self::close_session`] does, recording the closings in one
    /// commit; returns how many were open.
    pub fn close_sessions(&self, sessions: &[SessionId]) -> u32 {
        let known: Vec<SessionId> = {
            let mut s = self.lock();
            let known: Vec<SessionId> = sessions.iter().copied().filter(|id| s.sessions.contains_key(id)).collect();
            Self::remove_sessions(&mut s, &known.iter().copied().collect());
            known
        };
        if !known.is_empty() {
            let records = known.iter().map(|&session| Record::SessionExpired { session }).collect();
            drop(self.store.persist_detached(records));
        }
        u32::try_from(known.len()).unwrap_or(u32::MAX)
    }

    /// Abandons an attempt: it is forgotten with its live nonces (wiped) and its settled
    /// markers. Safe for the reason closing is: a consumed nonce was taken by value and no longer
    /// exists, and the aborted attempt's other nonces are wiped here, so no nonce of this attempt
    /// can ever sign again; an attempt re-opened under the same id gets fresh nonces. Markers whose
    /// persist is in flight stay until it resolves (then [`Self::settle`] drops them).
    pub fn abort(&self, attempt: AttemptId) -> Result<u16, Error> {
        let mut s = self.lock();
        if s.attempts.remove(&attempt).is_none() {
            return Err(err(ErrorCode::UnknownAttempt, format!("attempt {attempt}")));
        }
        let before = s.nonces.len();
        s.nonces.retain(|(a, _), _| *a != attempt);
        let wiped = before - s.nonces.len();
        Self::drop_orphan_markers(&mut s);
        Ok(u16::try_from(wiped).unwrap_or(u16::MAX))
    }

    /// A consumed marker whose persist resolved: kept while its attempt exists, dropped with an
    /// attempt that was aborted or closed meanwhile.
    pub(super) fn settle(s: &mut State, marker: Seat) {
        if s.attempts.contains_key(&marker.0) {
            s.consumed.insert(marker, Marker::Kept);
        } else {
            s.consumed.remove(&marker);
        }
    }

    /// Removes settled markers of attempts no longer known.
    pub(super) fn drop_orphan_markers(s: &mut State) {
        let State { attempts, consumed, completed, .. } = s;
        consumed.retain(|(a, _), m| *m == Marker::Pending || attempts.contains_key(a));
        completed.retain(|a, m| *m == Marker::Pending || attempts.contains_key(a));
    }

    /// Expiry sweep: wipes nonces older than the nonce TTL (markers and keys untouched), and
    /// removes sessions older than the session TTL with their attempts, nonces and markers.
    /// Returns the number of nonces wiped.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut s = self.lock();
        self.sweep_locked(&mut s, now)
    }

    /// The sweep, then durably records the sessions it expired (best effort: a session whose
    /// expiry record is lost expires again after a reload, from its stored opening time).
    pub async fn sweep_and_record(&self, now: Instant) -> usize {
        let (wiped, expired) = {
            let mut s = self.lock();
            let before: BTreeSet<SessionId> = s.sessions.keys().copied().collect();
            let wiped = self.sweep_locked(&mut s, now);
            let expired: Vec<SessionId> = before.into_iter().filter(|id| !s.sessions.contains_key(id)).collect();
            (wiped, expired)
        };
        if !expired.is_empty() {
            let records = expired.into_iter().map(|session| Record::SessionExpired { session }).collect();
            if let Err(e) = self.store.persist(records).await {
                tracing::warn!(error = ?e, "session expiry not recorded");
            }
        }
        wiped
    }

    pub(super) fn remove_sessions(s: &mut State, expired: &BTreeSet<SessionId>) {
        // A request's session that leaves before its first marker was written takes its deferred
        // `Requested` entry with it, unwritten: the request's next session writes one.
        let unaudited: Vec<Record> = s
            .sessions
            .iter()
            .filter(|(id, sess)| expired.contains(id) && *sess.durable.borrow() != Binding::Durable)
            .filter(|(_, sess)| {
                sess.deferred.iter().any(|r| matches!(r, Record::Audit(e) if e.decision == frostgate_common::protocol::AuditDecision::Requested))
            })
            .filter_map(|(_, sess)| sess.request.clone())
            .collect();
        for request in &unaudited {
            Self::request_unaudited(s, request);
        }
        let gone: BTreeSet<AttemptId> =
            s.attempts.iter().filter(|(_, a)| expired.contains(&a.session)).map(|(id, _)| *id).collect();
        s.sessions.retain(|id, _| !expired.contains(id));
        s.attempts.retain(|id, _| !gone.contains(id));
        s.nonces.retain(|(a, _), _| !gone.contains(a));
        // Markers of pending persists stay until their persist resolves.
        s.consumed.retain(|(a, _), m| !gone.contains(a) || *m == Marker::Pending);
        s.completed.retain(|a, m| !gone.contains(a) || *m == Marker::Pending);
    }

    pub(super) fn sweep_locked(&self, s: &mut State, now: Instant) -> usize {
        let before = s.nonces.len();
        let ttl = self.limits.nonce_ttl;
        s.nonces.retain(|_, n| now.saturating_duration_since(n.created) < ttl);
        let pooled = s.pool.len();
        s.pool.retain(|_, p| !p.expired(now, ttl));
        let wiped_pooled = pooled - s.pool.len();
        let expired: BTreeSet<SessionId> = s
            .sessions
            .iter()
            .filter(|(_, sess)| now.saturating_duration_since(sess.created) >= self.limits.session_ttl)
            .map(|(id, _)| *id)
            .collect();
        if !expired.is_empty() {
            Self::remove_sessions(s, &expired);
        }
        self.prune_charges(s);
        Self::expire_requests(s, unix_now());
        before - s.nonces.len() + wiped_pooled
    }
}

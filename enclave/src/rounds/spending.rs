//! Spending under the policy: PSBT sessions, the raw-digest gate, the window counters and the
//! audit trail (the rules and their invariants are in [`crate::policy`]).
//!
//! Invariants: a session's policy is decided before anything is bound or consumed; a charge is
//! checked and taken under the one state lock in round 2 and made durable with the consumed-nonce
//! marker; every decision under a configured policy is an audit record of the host store.

use super::*;
use crate::policy::{Policy, Spend, Split, Window};
use frostgate_common::protocol::{AuditDecision, PsbtSessionOpened};

/// The satoshis of a charge that closes the window (see `Engine::close_windows`).
pub(super) const CLOSES_WINDOW: u64 = u64::MAX;

/// What a session's first share charges to the policy window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Charge {
    /// A txid (PSBT path) or the digest (raw path): charged once.
    pub(super) id: [u8; 32],
    /// Satoshis to outputs other than the key's.
    pub(super) sats: u64,
    /// The hash of the policy that approved the session.
    pub(super) policy: [u8; 32],
    /// How the key's signings spread over its enclaves (this enclave's share of each limit).
    pub(super) split: Split,
}

/// How `record`'s signings spread over its enclaves.
pub(super) fn split_of(record: &KeyRecord) -> Split {
    let seats = u16::try_from(record.participants.len()).unwrap_or(u16::MAX);
    Split { threshold: record.threshold, seats }
}

/// One charge taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Charged {
    pub(super) sats: u64,
    pub(super) at_unix: u64,
    /// Whether its `Charged` record is known durable. Until it is, every share of the charge
    /// carries the record in its own commit, so no share leaves with its charge unwritten.
    pub(super) durable: bool,
}

/// The charge id of a raw digest: tagged, so it never equals a transaction id.
fn raw_charge_id(message: &[u8; 32]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"frostgate/raw-digest-charge/v1");
    ctx.update(message);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// What an audit record says about the request.
pub(crate) struct Decision<'a> {
    pub(super) session: SessionId,
    pub(super) key: KeyId,
    pub(super) txid: Option<[u8; 32]>,
    pub(super) input: Option<u32>,
    pub(super) raw_digest: bool,
    pub(super) spend: Option<&'a Spend>,
    /// For a derived key: its path (`0/5`).
    pub(super) path: Option<&'a [u32]>,
}

impl Engine {
    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The enclave's clock for windows: wall time, never earlier than the latest charge it knows
    /// (a clock set back does not reopen a window).
    pub(super) fn clock(s: &State) -> u64 {
        unix_now().max(s.clock_high)
    }

    fn window(&self, s: &State, now: u64) -> Window {
        let w = self.policy.window_secs();
        s.charges.values().filter(|c| c.at_unix.saturating_add(w) > now).fold(Window::default(), |acc, c| {
            // A closing charge counts as every signature of the window too.
            let count = if c.sats == CLOSES_WINDOW { u64::MAX } else { 1 };
            Window { sats: acc.sats.saturating_add(c.sats), count: acc.count.saturating_add(count) }
        })
    }

    /// Closes the policy's windows for one window length from now, durably (a charge of every
    /// satoshi and every signature): after a seat is restored or repaired into a fresh store,
    /// whose lost counters are unknown. No-op without window limits.
    pub async fn close_windows(&self) -> Result<(), Error> {
        if self.policy.window_secs() == 0 {
            return Ok(());
        }
        let record = {
            let mut s = self.lock();
            let now = Self::clock(&s);
            let mut id = [0u8; 32];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id)
                .map_err(|_| err(ErrorCode::Internal, "randomness"))?;
            s.charges.insert(id, Charged { sats: CLOSES_WINDOW, at_unix: now, durable: false });
            s.clock_high = s.clock_high.max(now);
            Some(Record::Charged { id, sats: CLOSES_WINDOW, at_unix: now })
        };
        self.store.persist(record.iter().cloned().collect()).await.map_err(persist_err)?;
        Self::charge_durable(&mut self.lock(), &record);
        tracing::warn!(window_secs = self.policy.window_secs(), "policy windows closed for one window");
        Ok(())
    }

    /// Whether `charge` would fit the window now (nothing is taken).
    fn precheck(&self, s: &State, charge: &Option<Charge>) -> Result<(), Error> {
        match charge {
            Some(c) if !s.charges.contains_key(&c.id) => {
                self.policy.check_window(self.window(s, Self::clock(s)), c.sats, c.split)
            }
            _ => Ok(()),
        }
    }

    /// Takes `charge` under the lock (round 2): the record to persist with the marker when the
    /// charge is new or not yet known durable, `policy_violation` when the window has no room.
    /// A charge is never given back (a commit reported "not written" keeps it, not durable):
    /// counting a transaction that was not signed fails safe, the reverse would not.
    pub(super) fn take_charge(&self, s: &mut State, charge: &Option<Charge>) -> Result<Option<Record>, Error> {
        let Some(c) = charge else { return Ok(None) };
        if let Some(taken) = s.charges.get(&c.id) {
            return Ok((!taken.durable).then_some(Record::Charged {
                id: c.id,
                sats: taken.sats,
                at_unix: taken.at_unix,
            }));
        }
        let now = Self::clock(s);
        self.policy.check_window(self.window(s, now), c.sats, c.split)?;
        s.charges.insert(c.id, Charged { sats: c.sats, at_unix: now, durable: false });
        s.clock_high = s.clock_high.max(now);
        Ok(Some(Record::Charged { id: c.id, sats: c.sats, at_unix: now }))
    }

    /// After a durable commit of `record`: its charge is durable.
    pub(super) fn charge_durable(s: &mut State, record: &Option<Record>) {
        if let Some(Record::Charged { id, .. }) = record {
            if let Some(c) = s.charges.get_mut(id) {
                c.durable = true;
            }
        }
    }

    /// Charges older than the window are forgotten.
    pub(super) fn prune_charges(&self, s: &mut State) {
        let (w, now) = (self.policy.window_secs(), Self::clock(s));
        s.charges.retain(|_, c| c.at_unix.saturating_add(w) > now);
    }

    /// Records a refusal durably (best effort: the refusal stands either way), then returns it.
    pub(super) async fn refuse(&self, d: Decision<'_>, e: Error) -> Error {
        let record = self.audit(&mut self.lock(), AuditDecision::Refused, e.message(), &d, None);
        if let Some(record) = record {
            if let Err(pe) = self.store.persist(vec![record]).await {
                tracing::warn!(error = ?pe, "audit record of a refusal not written");
            }
        }
        tracing::info!(session = %d.session, code = %e.code(), "policy refused: {}", e.message());
        e
    }

    /// The raw-digest gate and charge of [`Engine::open_session`].
    pub(super) async fn raw_digest_charge(
        &self,
        session: SessionId,
        key: KeyId,
        message: [u8; 32],
    ) -> Result<Option<Charge>, Error> {
        let d = Decision { session, key, txid: None, input: None, raw_digest: true, spend: None, path: None };
        if let Err(e) = self.policy.check_raw_digest() {
            return Err(self.refuse(d, e).await);
        }
        let split = split_of(&*self.key(&key)?);
        let charge = (!self.policy.is_unrestricted()).then_some(Charge {
            id: raw_charge_id(&message),
            sats: 0,
            policy: self.policy.hash(),
            split,
        });
        let checked = self.precheck(&self.lock(), &charge);
        if let Err(e) = checked {
            return Err(self.refuse(d, e).await);
        }
        Ok(charge)
    }

    /// Binds a session to input `input` of a PSBT: checks the input spends this key, computes the
    /// sighash, applies the policy (refusals are audited), and makes the binding and its approval
    /// durable before answering. An identical repeat is accepted.
    pub async fn open_psbt_session(
        &self,
        id: SessionId,
        key: KeyId,
        input: u32,
        psbt: &[u8],
    ) -> Result<PsbtSessionOpened, Error> {
        self.bind_psbt_session(id, key, input, psbt, Write::Now, None).await
    }

    /// [`Self::open_psbt_session`], its binding written as `write` says; for a signing service
    /// request, the request bound with it (to the transaction's id; see `requests.rs`).
    pub(crate) async fn bind_psbt_session(
        &self,
        id: SessionId,
        key: KeyId,
        input: u32,
        psbt: &[u8],
        write: Write,
        request: Option<&frostgate_common::protocol::RequestTag>,
    ) -> Result<PsbtSessionOpened, Error> {
        let record = self.key(&key)?;
        let checked = match crate::psbt::check(psbt, input, &record) {
            Ok(c) => c,
            // A policy rule the PSBT check applies itself (the sighash type): audited as well.
            Err(e) if e.code() == ErrorCode::PolicyViolation => {
                let d = Decision {
                    session: id,
                    key,
                    txid: None,
                    input: Some(input),
                    raw_digest: false,
                    spend: None,
                    path: None,
                };
                return Err(self.refuse(d, e).await);
            }
            Err(e) => return Err(e),
        };
        let request = match request {
            Some(tag) => {
                let target = crate::markers::RequestTarget::Psbt { txid: checked.txid };
                Some(self.check_request(tag, id, key, Some(input), target)?)
            }
            None => None,
        };
        let reply = PsbtSessionOpened {
            session: id,
            output_key: checked.output_key,
            sighash: checked.sighash,
            txid: checked.txid,
        };
        let d = Decision {
            session: id,
            key,
            txid: Some(checked.txid),
            input: Some(input),
            raw_digest: false,
            spend: Some(&checked.spend),
            path: checked.derived.as_ref().map(|d| d.path.as_slice()),
        };
        if let Err(e) = self.policy.check_spend(&checked.spend) {
            return Err(self.refuse(d, e).await);
        }
        let charge = (!self.policy.is_unrestricted()).then_some(Charge {
            id: checked.txid,
            sats: checked.spend.sats,
            policy: self.policy.hash(),
            split: split_of(&record),
        });
        let now = Instant::now();
        let prechecked = {
            let s = self.lock();
            if let Some(existing) = s.sessions.get(&id) {
                if existing.key == key
                    && existing.message == checked.sighash
                    && existing.mode == checked.mode
                    && existing.derived.as_ref().map(|d| &d.path) == checked.derived.as_ref().map(|d| &d.path)
                {
                    return Ok(reply);
                }
                return Err(err(ErrorCode::SessionConflict, format!("session {id} is bound to another message")));
            }
            self.precheck(&s, &charge)
        };
        if let Err(e) = prechecked {
            return Err(self.refuse(d, e).await);
        }
        let (records, durable, approval, requested) = {
            let mut s = self.lock();
            if s.sessions.contains_key(&id) {
                return Err(err(ErrorCode::SessionConflict, format!("session {id} was bound concurrently")));
            }
            self.room_for_session(&mut s, now)?;
            if let Some(r) = &request {
                self.bind_request(&mut s, r)?;
            }
            let durable = binding(if write == Write::Now { Binding::Queued } else { Binding::Failed });
            let mut session = Session {
                key,
                epoch: record.epoch(),
                message: checked.sighash,
                mode: checked.mode,
                output_key: checked.output_key,
                created: now,
                opened_unix: unix_now(),
                durable: durable.clone(),
                charge,
                derived: checked.derived.clone().map(Arc::new),
                deferred: Vec::new(),
                request: request.clone(),
            };
            let mut records = session.records(id);
            let requested = session.request.as_ref().and_then(|r| self.request_audit(&mut s, r, &d, write));
            if write == Write::WithFirstMarker {
                session.deferred.extend(requested);
                session.deferred.extend(self.audit_deferred(&mut s, AuditDecision::Approved, &d));
                s.sessions.insert(id, session);
                return Ok(reply);
            }
            let approval = self.audit(&mut s, AuditDecision::Approved, "", &d, None);
            s.sessions.insert(id, session);
            records.extend(requested.clone());
            records.extend(approval.clone());
            (records, durable, approval, requested)
        };
        match self.store.persist(records).await {
            Ok(()) => {
                durable.send_replace(Binding::Durable);
                Ok(reply)
            }
            Err(e) => {
                durable.send_replace(Binding::Failed);
                let mut s = self.lock();
                // With any attempt bound to it meanwhile (its nonces wiped): nothing of it signs.
                Self::remove_sessions(&mut s, &BTreeSet::from([id]));
                if let (Some(_), Some(r)) = (&requested, &request) {
                    Self::request_unaudited(&mut s, r);
                }
                Self::forget_audit(&mut s, &requested);
                Self::forget_audit(&mut s, &approval);
                Err(persist_err(e))
            }
        }
    }
}

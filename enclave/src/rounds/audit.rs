//! The audit trail: every decision under a configured policy, numbered, kept as records of the
//! host store, bounded as `[audit]` says (`crate::audit`), and acknowledged out by the auditor.
//!
//! Invariants: a `signed` record is never dropped to make room (signing is refused first,
//! `audit_trail_full`); approvals and refusals make room among themselves only (oldest refusal
//! first); records leave by an acknowledgement only once its own record is durable.

use super::spending::Decision;
use super::*;
use crate::audit::AuditRules;
use frostgate_common::bounded::{Label, Text};
use frostgate_common::protocol::AuditOutputs;
use frostgate_common::protocol::{AuditAcknowledged, AuditDecision, AuditEntry, AuditOutput};

fn text_label(s: &str) -> Label {
    Label::new(s.to_string()).unwrap_or_else(|_| unreachable!("a short constant"))
}

/// `s`, cut at a character boundary to the bound (a rule naming a request, 129 bytes, whole).
fn text(s: &str) -> Text {
    let mut end = s.len().min(Text::MAX_LEN);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Text::new(s[..end].to_string()).unwrap_or_else(|_| unreachable!("cut below the bound"))
}

/// The kept trail: entries in the order they were kept, and the signed ones counted apart.
#[derive(Debug, Default)]
pub(super) struct Trail {
    entries: std::collections::VecDeque<AuditEntry>,
    signed: usize,
    /// The last sequence number issued.
    pub(super) seq: u64,
    /// The highest acknowledged sequence number.
    pub(super) acknowledged: u64,
}

impl Trail {
    fn keep(&mut self, entry: AuditEntry, rules: &AuditRules) {
        self.seq = self.seq.max(entry.seq);
        // A record committed twice (a deferred binding carried by two seats' markers) is one entry.
        if self.entries.iter().rev().any(|e| e.seq == entry.seq) {
            return;
        }
        if entry.decision == AuditDecision::Signed {
            self.signed += 1;
        }
        self.entries.push_back(entry);
        // Refusals, approvals and requests' bindings make room (in that order); signed records wait
        // for an acknowledgement.
        while self.entries.len() - self.signed > rules.max_entries {
            let oldest = |d: AuditDecision| self.entries.iter().position(|e| e.decision == d);
            let oldest = oldest(AuditDecision::Refused)
                .or_else(|| oldest(AuditDecision::Approved))
                .or_else(|| oldest(AuditDecision::Requested));
            match oldest {
                Some(i) => drop(self.entries.remove(i)),
                None => break,
            }
        }
    }

    fn forget(&mut self, seq: u64) {
        let before = self.entries.len();
        self.entries.retain(|e| !(e.seq == seq && e.decision == AuditDecision::Signed));
        self.signed -= before - self.entries.len();
        self.entries.retain(|e| e.seq != seq);
    }

    /// Kept entries up to `through`, in sequence order.
    fn up_to(&self, through: u64) -> Vec<AuditEntry> {
        let mut out: Vec<AuditEntry> = self.entries.iter().filter(|e| e.seq <= through).cloned().collect();
        out.sort_by_key(|e| e.seq);
        out
    }

    /// Drops the entries up to `through` (acknowledged): how many.
    fn acknowledge(&mut self, through: u64) -> u64 {
        let before = self.entries.len();
        self.entries.retain(|e| e.seq > through);
        self.signed = self.entries.iter().filter(|e| e.decision == AuditDecision::Signed).count();
        self.acknowledged = self.acknowledged.max(through);
        self.seq = self.seq.max(through);
        (before - self.entries.len()) as u64
    }

    /// Every kept entry (snapshots).
    pub(super) fn entries(&self) -> impl Iterator<Item = &AuditEntry> {
        self.entries.iter()
    }
}

impl Engine {
    /// The same engine keeping its audit trail as `rules` say (before it serves).
    pub fn with_audit(mut self, rules: AuditRules) -> Self {
        self.audit_rules = rules;
        self
    }

    /// Numbers an audit record and keeps it (bounded); the caller persists the returned record.
    /// `None` without a configured policy (no audit trail in development).
    pub(super) fn audit(
        &self,
        s: &mut State,
        decision: AuditDecision,
        rule: &str,
        d: &Decision<'_>,
        signed: Option<(AttemptId, ParticipantId)>,
    ) -> Option<Record> {
        let entry = self.audit_entry(s, decision, rule, d, signed)?;
        self.keep_audit(s, entry.clone());
        Some(Record::Audit(entry))
    }

    /// `audit_trail_full` when one more signed record would exceed `[audit] max_signed`
    /// (no share may leave without its record kept). Nothing to check without a policy.
    pub(super) fn room_for_signed(&self, s: &State) -> Result<(), Error> {
        if self.policy.is_unrestricted() || s.audit.signed < self.audit_rules.max_signed {
            return Ok(());
        }
        Err(err(
            ErrorCode::AuditTrailFull,
            format!(
                "{} signed decisions kept (max_signed): export them and have the auditor acknowledge \
                 (`frostgate audit export` / `frostgate audit acknowledge`)",
                s.audit.signed
            ),
        ))
    }

    /// The next numbered audit entry (not kept). `None` without a configured policy.
    fn audit_entry(
        &self,
        s: &mut State,
        decision: AuditDecision,
        rule: &str,
        d: &Decision<'_>,
        signed: Option<(AttemptId, ParticipantId)>,
    ) -> Option<AuditEntry> {
        if self.policy.is_unrestricted() {
            return None;
        }
        s.audit.seq += 1;
        let outputs = d
            .spend
            .map(|sp| {
                sp.external
                    .iter()
                    .take(AuditOutputs::MAX_LEN)
                    .map(|(script, sats)| AuditOutput { to: self.policy.describe(script), sats: *sats })
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let entry = AuditEntry {
            seq: s.audit.seq,
            at_unix: Self::clock(s),
            decision,
            rule: text(rule),
            session: d.session,
            attempt: signed.map(|(a, _)| a),
            seat: signed.map(|(_, p)| p),
            key: d.key,
            txid: d.txid,
            input: d.input,
            path: Label::new(
                d.path.map(|p| p.iter().map(u32::to_string).collect::<Vec<_>>().join("/")).unwrap_or_default(),
            )
            .unwrap_or_else(|_| text_label("path too long")),
            raw_digest: d.raw_digest,
            outputs: AuditOutputs::new(outputs).unwrap_or_else(|_| unreachable!("taken up to the bound")),
            fee_sats: d.spend.map(|sp| sp.fee).unwrap_or(0),
            policy_hash: self.policy.hash(),
        };
        Some(entry)
    }

    /// Numbers and keeps an audit record of an event that concerns no session (zero session and
    /// key ids); the caller persists it. `None` without a configured policy.
    pub(super) fn audit_event(&self, s: &mut State, decision: AuditDecision, rule: &str) -> Option<Record> {
        let d = Decision {
            session: SessionId::from_bytes([0; 16]),
            key: KeyId::from_bytes([0; 32]),
            txid: None,
            input: None,
            raw_digest: false,
            spend: None,
            path: None,
        };
        self.audit(s, decision, rule, &d, None)
    }

    /// [`Self::audit`] for a record that goes with a later marker (`Write::WithFirstMarker`):
    /// numbered now, kept in the trail only once that commit succeeds ([`Self::keep_written`]).
    pub(super) fn audit_deferred(&self, s: &mut State, decision: AuditDecision, d: &Decision<'_>) -> Option<Record> {
        self.audit_deferred_rule(s, decision, "", d)
    }

    /// [`Self::audit_deferred`] with a rule.
    pub(super) fn audit_deferred_rule(
        &self,
        s: &mut State,
        decision: AuditDecision,
        rule: &str,
        d: &Decision<'_>,
    ) -> Option<Record> {
        self.audit_entry(s, decision, rule, d, None).map(Record::Audit)
    }

    /// After a successful commit of `records`: their audit entries are in the trail (an entry
    /// already there is not repeated).
    pub(super) fn keep_written(&self, s: &mut State, records: &[Record]) {
        for r in records {
            if let Record::Audit(e) = r {
                self.keep_audit(s, e.clone());
            }
        }
    }

    /// Keeps an entry (see [`Trail`] for what makes room).
    pub(super) fn keep_audit(&self, s: &mut State, entry: AuditEntry) {
        s.audit.keep(entry, &self.audit_rules);
    }

    /// Drops an audit entry whose commit is known not written.
    pub(super) fn forget_audit(s: &mut State, record: &Option<Record>) {
        if let Some(Record::Audit(e)) = record {
            s.audit.forget(e.seq);
        }
    }

    /// Replays an acknowledgement (at load): the entries kept so far up to it leave.
    pub(super) fn replay_acknowledged(s: &mut State, through: u64) {
        s.audit.acknowledge(through);
    }

    /// The auditor's acknowledgement of an export: checked against the records kept here up to
    /// `through`, made durable, then those records leave the trail.
    pub async fn acknowledge_audit(&self, through: u64, signature: &[u8; 64]) -> Result<AuditAcknowledged, Error> {
        {
            let s = self.lock();
            if through > s.audit.seq {
                return Err(err(ErrorCode::AuditAckInvalid, format!("record {through} was never issued here")));
            }
            let identity = self.custody.identity_public_key();
            self.audit_rules.check_ack(identity, through, &s.audit.up_to(through), signature)?;
        }
        self.store.persist(vec![Record::AuditAcknowledged { through }]).await.map_err(persist_err)?;
        let dropped = self.lock().audit.acknowledge(through);
        tracing::info!(through, dropped, "audit records acknowledged by the auditor left the trail");
        Ok(AuditAcknowledged { through, dropped })
    }

    /// Audit records with a sequence number above `after`, at most `max`, in order.
    pub fn audit_after(&self, after: u64, max: usize) -> Vec<AuditEntry> {
        // Commits may land out of sequence order; readers page by sequence number.
        let mut out: Vec<AuditEntry> = self.lock().audit.entries().filter(|e| e.seq > after).cloned().collect();
        out.sort_by_key(|e| e.seq);
        out.truncate(max);
        out
    }
}

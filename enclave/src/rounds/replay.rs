//! Replay and snapshot: the engine's state rebuilt from verified store records at load, and
//! written back as one complete snapshot for compaction.
//!
//! Invariant: replay only adds markers (a marker known in memory stays) and never removes live
//! nonces of attempts that still exist; a snapshot holds every key, binding and marker.

use super::*;

impl Engine {
    /// Applies verified store records (at load). Idempotent; never removes live nonces of
    /// attempts that still exist, and only adds markers (a marker known in memory stays).
    pub fn replay(&self, records: &[Record]) -> Result<(), Error> {
        let now = Instant::now();
        let unix = unix_now();
        let mut s = self.lock();
        let mut dropped = BTreeSet::new();
        // Epochs of the keys seen in this replay: within a chain they never go back.
        let mut epochs: HashMap<KeyId, u64> = HashMap::new();
        for r in records {
            match r {
                Record::KeyAdded { key, public_key_package, seats } => {
                    let record = Self::stored_key(key, public_key_package, seats)?;
                    let epoch = record.epoch();
                    if s.prepared.get(key).is_some_and(|(_, p)| p.epoch() <= epoch) {
                        s.prepared.remove(key);
                    }
                    if epochs.insert(*key, epoch).is_some_and(|seen| epoch < seen) {
                        return Err(err(ErrorCode::StoreTampered, format!("key {key}'s epoch went back to {epoch}")));
                    }
                    match s.keys.get(key).map(|k| k.epoch()) {
                        // Memory is ahead (a reload while serving): replay only adds.
                        Some(held) if epoch < held => {}
                        Some(held) if epoch > held => Self::install_newer_key(&mut s, record),
                        _ => {
                            s.keys.insert(*key, Arc::new(record));
                        }
                    }
                }
                Record::SessionBound { session, key, message, mode, opened_unix }
                | Record::SessionCharged { session, key, message, mode, opened_unix, .. } => {
                    let charge = match r {
                        Record::SessionCharged { charge_id, sats, policy_hash, .. } => {
                            let split = s
                                .keys
                                .get(key)
                                .map(|k| spending::split_of(k))
                                .ok_or_else(|| err(ErrorCode::StoreTampered, "session of an unknown key"))?;
                            Some(Charge { id: *charge_id, sats: *sats, policy: *policy_hash, split })
                        }
                        _ => None,
                    };
                    // A session approved under another policy (or under none, when one is
                    // configured now) is not signed under this one.
                    let current = (!self.policy.is_unrestricted()).then(|| self.policy.hash());
                    if current.is_some() && charge.map(|c| c.policy) != current {
                        dropped.insert(*session);
                        continue;
                    }
                    let record = s
                        .keys
                        .get(key)
                        .cloned()
                        .ok_or_else(|| err(ErrorCode::StoreTampered, "session of an unknown key"))?;
                    let output_key = crate::taproot::output_key(&record.public, mode)?;
                    let age = Duration::from_secs(unix.saturating_sub(*opened_unix));
                    let created = now.checked_sub(age).unwrap_or(now);
                    s.sessions.insert(
                        *session,
                        Session {
                            key: *key,
                            epoch: record.epoch(),
                            message: *message,
                            mode: *mode,
                            output_key,
                            created,
                            opened_unix: *opened_unix,
                            durable: binding(Binding::Durable),
                            charge,
                            derived: None,
                            deferred: Vec::new(),
                            request: None,
                        },
                    );
                }
                Record::AttemptBound { attempt, session, signers } => {
                    s.attempts.insert(
                        *attempt,
                        Attempt {
                            session: *session,
                            signers: signers.iter().copied().collect(),
                            durable: binding(Binding::Durable),
                        },
                    );
                }
                Record::NonceConsumed { attempt, seat } => {
                    s.consumed.insert((*attempt, *seat), Marker::Kept);
                    drop(s.nonces.remove(&(*attempt, *seat)));
                }
                Record::AttemptCompleted { attempt, .. } => {
                    s.completed.insert(*attempt, Marker::Kept);
                }
                Record::SessionExpired { session } => Self::remove_sessions(&mut s, &BTreeSet::from([*session])),
                Record::Charged { id, sats, at_unix } => {
                    s.charges.insert(*id, Charged { sats: *sats, at_unix: *at_unix, durable: true });
                    s.clock_high = s.clock_high.max(*at_unix);
                }
                Record::Audit(entry) => self.keep_audit(&mut s, entry.clone()),
                Record::AuditAcknowledged { through } => Self::replay_acknowledged(&mut s, *through),
                Record::KekRotated { at_unix } => s.kek_rotated_unix = s.kek_rotated_unix.max(*at_unix),
                Record::KeyCommitted { key, dkg } => drop(s.committed_by.insert(*key, *dkg)),
                Record::PreparedAbandoned { key, dkg } => {
                    if s.prepared.get(key).is_some_and(|(by, _)| by == dkg) {
                        s.prepared.remove(key);
                    }
                }
                Record::KeyPrepared { dkg, key, public_key_package, seats } => {
                    let record = Self::stored_key(key, public_key_package, seats)?;
                    // Prepared for the next epoch of a held key; stale once the key reached it.
                    let current = s.keys.get(key).map(|k| k.epoch());
                    if current.is_some_and(|c| Some(record.epoch()) == c.checked_add(1)) {
                        s.prepared.insert(*key, (*dkg, Arc::new(record)));
                    }
                }
                Record::SessionPath { session, path } => {
                    // A session gone meanwhile (expired, or bound under another policy) has no path.
                    let Some((key, mode)) = s.sessions.get(session).map(|x| (x.key, x.mode)) else { continue };
                    let record = s
                        .keys
                        .get(&key)
                        .cloned()
                        .ok_or_else(|| err(ErrorCode::StoreTampered, "session of an unknown key"))?;
                    let derived = crate::derive::derive(&record.public, path)
                        .map_err(|e| err(ErrorCode::StoreTampered, format!("stored path: {}", e.message())))?;
                    let output_key = crate::taproot::output_key(&derived.public, &mode)?;
                    if let Some(sess) = s.sessions.get_mut(session) {
                        sess.output_key = output_key;
                        sess.derived = Some(Arc::new(derived));
                    }
                }
                Record::RequestBound { .. } => Self::replay_request(&mut s, r, unix),
                Record::SnapshotBegin { .. } | Record::SnapshotEnd { .. } => {}
            }
        }
        if !dropped.is_empty() {
            tracing::info!(sessions = dropped.len(), "sessions bound under another policy dropped");
            Self::remove_sessions(&mut s, &dropped);
        }
        // Markers live only as long as their attempt (see `abort`).
        Self::drop_orphan_markers(&mut s);
        self.prune_charges(&mut s);
        if s.sessions.len() > self.limits.max_sessions || s.attempts.len() > self.limits.max_attempts {
            self.sweep_locked(&mut s, now);
            if s.sessions.len() > self.limits.max_sessions || s.attempts.len() > self.limits.max_attempts {
                return Err(err(ErrorCode::RegistryFull, "the stored state exceeds the engine's bounds"));
            }
        }
        Ok(())
    }

    /// A stored key record, checked against its id.
    fn stored_key(
        key: &KeyId,
        public_key_package: &[u8],
        seats: &[(ParticipantId, u64, Vec<u8>)],
    ) -> Result<KeyRecord, Error> {
        let public = frost_secp256k1_tr::keys::PublicKeyPackage::deserialize(public_key_package)
            .map_err(|e| frost_err(ErrorCode::StoreTampered, "stored public key package", e))?;
        let seats =
            seats.iter().map(|(p, epoch, blob)| (*p, keys::SealedSeat { blob: blob.clone(), epoch: *epoch })).collect();
        let record = KeyRecord::new(public, seats)?;
        if record.key_id != *key {
            return Err(err(ErrorCode::StoreTampered, "stored key id does not match its public key package"));
        }
        Ok(record)
    }

    /// The whole durable state as records (a snapshot for compaction).
    pub fn snapshot(&self) -> Result<Vec<Record>, Error> {
        self.snapshot_then(|state| state)
    }

    /// Takes the snapshot and hands it to `submit` before the state lock is released, so no
    /// marker can be committed between the two (and then deleted by the snapshot's compaction
    /// without being in it).
    pub fn snapshot_then<T>(&self, submit: impl FnOnce(Vec<Record>) -> T) -> Result<T, Error> {
        let s = self.lock();
        let out = Self::state_records(&s)?;
        Ok(submit(out))
    }

    fn state_records(s: &State) -> Result<Vec<Record>, Error> {
        let mut out = Vec::new();
        for k in s.keys.values() {
            out.push(key_record(k)?);
        }
        for (dkg, k) in s.prepared.values() {
            out.push(prepared_record(*dkg, k)?);
        }
        for (key, dkg) in &s.committed_by {
            if s.keys.contains_key(key) {
                out.push(Record::KeyCommitted { key: *key, dkg: *dkg });
            }
        }
        for (id, sess) in &s.sessions {
            // A request's binding is written once below, from the registry.
            out.extend(sess.records(*id).into_iter().filter(|r| !matches!(r, Record::RequestBound { .. })));
        }
        for (id, a) in &s.attempts {
            out.push(a.record(*id));
        }
        out.extend(Self::request_records(s));
        // Pending markers too: their commit may already be acknowledged and precede this
        // snapshot, which then deletes its row. A pending marker whose commit fails later
        // stays in the snapshot: consumed on the store's side, the safe direction.
        for (attempt, seat) in s.consumed.keys() {
            if s.attempts.contains_key(attempt) {
                out.push(Record::NonceConsumed { attempt: *attempt, seat: *seat });
            }
        }
        for attempt in s.completed.keys() {
            if let Some(sess) = s.attempts.get(attempt).and_then(|a| s.sessions.get(&a.session)) {
                out.push(Record::AttemptCompleted { attempt: *attempt, message: sess.message, mode: sess.mode });
            }
        }
        // The window's charges and the audit trail as kept survive compaction; the
        // acknowledgement first (it drops only what precedes it at replay), so the numbering
        // goes on after it even when every record left.
        for (id, c) in &s.charges {
            out.push(Record::Charged { id: *id, sats: c.sats, at_unix: c.at_unix });
        }
        if s.kek_rotated_unix > 0 {
            out.push(Record::KekRotated { at_unix: s.kek_rotated_unix });
        }
        if s.audit.acknowledged > 0 {
            out.push(Record::AuditAcknowledged { through: s.audit.acknowledged });
        }
        for e in s.audit.entries() {
            out.push(Record::Audit(e.clone()));
        }
        Ok(out)
    }
}

pub(super) fn key_record(k: &KeyRecord) -> Result<Record, Error> {
    Ok(Record::KeyAdded {
        key: k.key_id,
        public_key_package: k
            .public
            .serialize()
            .map_err(|e| frost_err(ErrorCode::Internal, "public key package", e))?,
        seats: k.seats.iter().map(|(p, s)| (*p, s.epoch, s.blob.clone())).collect(),
    })
}

/// [`key_record`] of a prepared (not yet committed) refresh.
pub(super) fn prepared_record(dkg: frostgate_common::ids::DkgId, k: &KeyRecord) -> Result<Record, Error> {
    match key_record(k)? {
        Record::KeyAdded { key, public_key_package, seats } => {
            Ok(Record::KeyPrepared { dkg, key, public_key_package, seats })
        }
        _ => Err(err(ErrorCode::Internal, "a key record")),
    }
}

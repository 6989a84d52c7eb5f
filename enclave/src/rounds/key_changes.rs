//! Key changes: a key added (DKG, dealer, repair, restore), its refresh prepared then committed
//! (two phases), or resealed
//! under a new key-encryption key.
//!
//! Invariant: every key change holds the engine's key-change lock from its check through its
//! durable commit to its installation in memory, so key changes apply in store order, and a
//! compaction (which holds the lock while it snapshots) never misses a committed key record.

use super::*;

impl Engine {
    /// Adds a key (from DKG or the dev dealer) once it is durable in the store.
    pub async fn add_key(&self, record: KeyRecord) -> Result<(), Error> {
        let _one = self.key_change.lock().await;
        if self.lock().keys.contains_key(&record.key_id) {
            return Err(err(ErrorCode::Internal, format!("key {} already held", record.key_id)));
        }
        self.persist_key(&record).await?;
        self.lock().keys.insert(record.key_id, Arc::new(record));
        Ok(())
    }

    /// Commits a key record (durable, acknowledged, anchored) once every seat of it unseals.
    pub(super) async fn persist_key(&self, record: &KeyRecord) -> Result<(), Error> {
        self.check_unseals(record)?;
        self.store.persist(vec![replay::key_record(record)?]).await.map_err(persist_err)
    }

    /// Every seat of `record` unseals with the token's current key-encryption keys. Called under
    /// the key-change lock: a blob sealed before a rotation finished (under the key it destroyed)
    /// is refused here instead of being stored unreadable.
    pub(super) fn check_unseals(&self, record: &KeyRecord) -> Result<(), Error> {
        for seat in record.seats.keys() {
            record.unseal(&self.custody, *seat).map_err(|e| {
                err(ErrorCode::UnsealFailed, format!("seat {seat} was sealed under a rotated key-encryption key: {e}"))
            })?;
        }
        Ok(())
    }

    /// Rotates the key-encryption key: a new key on the token (unless an incomplete rotation
    /// left one), every held seat resealed under it and committed (durable and anchored), then
    /// the old key destroyed. Holds the key-change lock throughout. A crash at any step leaves
    /// a node that boots (unsealing tries both keys while two exist) and a rotation that a new
    /// run finishes. Returns (keys, seats) resealed.
    pub async fn rotate_kek(&self) -> Result<(usize, usize), Error> {
        use crate::store::faults::{crash_point, KEK_AFTER_CREATE, KEK_AFTER_DESTROY, KEK_AFTER_RESEAL};
        let _one = self.key_change.lock().await;
        let since = unix_now().saturating_sub(self.lock().kek_rotated_unix);
        let interval = self.limits.kek_rotation_interval.as_secs();
        if !self.custody.kek_rotation_in_progress() && since < interval {
            return Err(err(
                ErrorCode::KekRotationTooSoon,
                format!("the last rotation completed {since} s ago; this enclave allows one per {interval} s"),
            ));
        }
        if self.custody.begin_kek_rotation()? {
            tracing::info!("new key-encryption key created");
        }
        crash_point(KEK_AFTER_CREATE);
        let (held, prepared) = {
            let s = self.lock();
            (s.keys.values().cloned().collect::<Vec<_>>(), s.prepared.values().cloned().collect::<Vec<_>>())
        };
        let resealed = held.iter().map(|k| self.resealed(k)).collect::<Result<Vec<_>, _>>()?;
        // A prepared refresh is resealed too: its commit may come after the old key is gone.
        let prepared_resealed =
            prepared.iter().map(|(dkg, k)| Ok((*dkg, self.resealed(k)?))).collect::<Result<Vec<_>, Error>>()?;
        let seats: usize = resealed.iter().map(|r| r.seats.len()).sum();
        let keys = resealed.len();
        let mut records = resealed.iter().map(replay::key_record).collect::<Result<Vec<_>, _>>()?;
        for (dkg, record) in &prepared_resealed {
            records.push(replay::prepared_record(*dkg, record)?);
        }
        // The rotation enters the chain (and the audit trail) with the resealed shares.
        let at_unix = unix_now();
        records.push(Record::KekRotated { at_unix });
        let audited = self.audit_event(
            &mut self.lock(),
            frostgate_common::protocol::AuditDecision::KekRotated,
            &format!("key-encryption key rotated: {keys} keys, {seats} seats resealed"),
        );
        records.extend(audited.clone());
        if let Err(e) = self.store.persist(records).await {
            Self::forget_audit(&mut self.lock(), &audited);
            return Err(persist_err(e));
        }
        {
            let mut s = self.lock();
            s.kek_rotated_unix = s.kek_rotated_unix.max(at_unix);
            for (dkg, record) in prepared_resealed {
                s.prepared.insert(record.key_id, (dkg, Arc::new(record)));
            }
            for record in resealed {
                s.keys.insert(record.key_id, Arc::new(record));
            }
        }
        crash_point(KEK_AFTER_RESEAL);
        self.custody.finish_kek_rotation()?;
        crash_point(KEK_AFTER_DESTROY);
        tracing::info!(keys, seats, "key-encryption key rotated; the old key is destroyed");
        Ok((keys, seats))
    }

    /// `key` with every seat unsealed and sealed again under the current key-encryption key.
    fn resealed(&self, key: &KeyRecord) -> Result<KeyRecord, Error> {
        let mut record = key.clone();
        for (seat, sealed) in record.seats.iter_mut() {
            let context = key.seal_context(*seat, sealed.epoch);
            let plain = crate::sealing::unseal(&self.custody, &context, &sealed.blob)?;
            sealed.blob = crate::sealing::seal(&self.custody, &context, &plain)?;
        }
        Ok(record)
    }

    /// Installs `record` in place of an older epoch of its key, dropping the key's sessions.
    pub(super) fn install_newer_key(s: &mut State, record: KeyRecord) {
        let key = record.key_id;
        let stale: BTreeSet<SessionId> =
            s.sessions.iter().filter(|(_, sess)| sess.key == key).map(|(id, _)| *id).collect();
        if !stale.is_empty() {
            tracing::info!(key = %key, sessions = stale.len(), "sessions of the previous key epoch dropped");
            Self::remove_sessions(s, &stale);
        }
        s.pool.retain(|_, p| !p.of_key(&key));
        s.keys.insert(key, Arc::new(record));
    }

    /// Holds off key changes while a compaction snapshot is taken (a key record is committed
    /// before it is installed in memory: a snapshot in between would miss it and delete its
    /// record). `None` while a key change is in progress.
    pub fn try_hold_key_changes(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        self.key_change.try_lock().ok()
    }

    /// As [`Self::try_hold_key_changes`], waiting for a key change in progress to finish.
    pub async fn hold_key_changes(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.key_change.lock().await
    }
}

//! A refresh's activation as an atomic commitment: prepared beside the current epoch (phase 1),
//! put in force only with every participant's signed vote that it prepared the same refresh
//! (phase 2), or abandoned everywhere on one participant's signed vote that it never will.
//!
//! Invariants:
//! - The key signs at its current epoch until the commit; the prepared share is durable
//!   (`KeyPrepared`) and resealed with everything else by a KEK rotation.
//! - A commit needs a `prepared` vote of every participant of the refreshed key, each signed by
//!   its pinned identity over (refresh, key, seat, epoch, package hash): a coordinator that
//!   activated only some participants cannot commit any of them.
//! - An enclave that voted "not prepared" for a refresh never prepares it (the vote is taken
//!   under the key-change lock, the refresh is marked abandoned and its DKG dropped), so a
//!   refresh is either committable everywhere or abandonable everywhere.
//! - One refresh per key is prepared at a time: a second is refused until the first is
//!   committed or abandoned, so two refreshes can never be committed on different nodes.

use super::*;
use crate::custody::identity::verify_identity_signature;
use frostgate_common::ids::DkgId;
use frostgate_common::protocol::RefreshVote;

type Pins = std::collections::BTreeMap<ParticipantId, Vec<u8>>;

fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, data).as_ref());
    out
}

fn package_hash(record: &KeyRecord) -> Result<[u8; 32], Error> {
    let bytes = record.public.serialize().map_err(|e| frost_err(ErrorCode::Internal, "public key package", e))?;
    Ok(sha256(&bytes))
}

/// Whether `vote` is `seat`'s, about this refresh and key, signed by its pinned identity.
fn vote_of(vote: &RefreshVote, pins: &Pins, dkg: DkgId, key: &KeyId) -> Result<(), Error> {
    let pin = pins
        .get(&vote.seat)
        .ok_or_else(|| err(ErrorCode::DkgConfigInvalid, format!("participant {} is not pinned here", vote.seat)))?;
    if vote.dkg != dkg || vote.key != *key {
        return Err(err(
            ErrorCode::DkgConfigInvalid,
            format!("participant {}'s vote is about another refresh", vote.seat),
        ));
    }
    if !verify_identity_signature(pin, &vote.signed_message(), &vote.signature_r, &vote.signature_s) {
        return Err(err(
            ErrorCode::DkgConfigInvalid,
            format!("participant {}'s vote is not signed by its pinned identity", vote.seat),
        ));
    }
    Ok(())
}

/// Most refreshes remembered as voted "never". The mark only has to outlive an activation already
/// past its DKG's confirmation when the vote came (its DKG is dropped with the vote, so nothing
/// later can prepare it): a bounded set, emptied when full, keeps a flood of votes from growing it.
const MAX_ABANDONED: usize = 1024;

impl Engine {
    fn mark_abandoned(s: &mut State, dkg: DkgId) {
        if s.abandoned.len() >= MAX_ABANDONED {
            s.abandoned.clear();
        }
        s.abandoned.insert(dkg);
    }

    /// Phase 1: makes refresh `dkg`'s record (`from_epoch` + 1) durable beside the key, which
    /// keeps signing at `from_epoch`. Refused (`key_epoch_changed`) if the key moved on, and
    /// (`dkg_phase`) if another refresh is prepared or this one was voted never.
    pub async fn prepare_key(&self, dkg: DkgId, record: KeyRecord, from_epoch: u64) -> Result<(), Error> {
        let _one = self.key_change.lock().await;
        let current = self.key(&record.key_id)?;
        if current.epoch() != from_epoch || Some(record.epoch()) != from_epoch.checked_add(1) {
            return Err(err(
                ErrorCode::KeyEpochChanged,
                format!("key {} is at epoch {}, not {from_epoch}", record.key_id, current.epoch()),
            ));
        }
        {
            let s = self.lock();
            if s.abandoned.contains(&dkg) {
                return Err(err(ErrorCode::DkgPhase, format!("refresh {dkg} was voted abandoned here")));
            }
            if let Some((other, _)) = s.prepared.get(&record.key_id).filter(|(other, _)| *other != dkg) {
                return Err(err(
                    ErrorCode::DkgPhase,
                    format!(
                        "refresh {other} of key {} is prepared here: end it first (`frostgate refresh --key {} \
                         --resolve {other}`)",
                        record.key_id, record.key_id
                    ),
                ));
            }
        }
        self.check_unseals(&record)?;
        self.store.persist(vec![replay::prepared_record(dkg, &record)?]).await.map_err(persist_err)?;
        self.lock().prepared.insert(record.key_id, (dkg, Arc::new(record)));
        Ok(())
    }

    /// This enclave's signed vote on refresh `dkg` of `key`: prepared (durable here, or already
    /// in force), else "never" (and from now on it never prepares it).
    pub async fn refresh_vote(&self, dkg: DkgId, key: KeyId) -> Result<RefreshVote, Error> {
        let _one = self.key_change.lock().await;
        let current = self.key(&key)?;
        let seat = *current
            .seats
            .keys()
            .next()
            .ok_or_else(|| err(ErrorCode::SeatNotHeld, format!("no seat of key {key} is held here")))?;
        let prepared = {
            let mut s = self.lock();
            match (s.prepared.get(&key), s.committed_by.get(&key)) {
                (Some((by, record)), _) if *by == dkg => Some(record.clone()),
                (_, Some(by)) if *by == dkg => Some(current.clone()),
                _ => {
                    Self::mark_abandoned(&mut s, dkg);
                    None
                }
            }
        };
        let mut vote = RefreshVote {
            dkg,
            key,
            seat,
            prepared: prepared.is_some(),
            epoch: prepared.as_ref().map(|r| r.epoch()).unwrap_or(0),
            package_hash: prepared.as_deref().map(package_hash).transpose()?.unwrap_or([0; 32]),
            signature_r: [0; 32],
            signature_s: [0; 32],
        };
        (vote.signature_r, vote.signature_s) = self.custody.identity_sign(&vote.signed_message())?;
        Ok(vote)
    }

    /// Phase 2: puts the record refresh `dkg` prepared for `key` at `epoch` in force, given a
    /// `prepared` vote of every participant of it (its sessions, opened under the old epoch, are
    /// dropped with their attempts, nonces and markers). Idempotent for a refresh already in
    /// force here.
    pub async fn commit_key(
        &self,
        pins: Option<&Pins>,
        dkg: DkgId,
        key: &KeyId,
        epoch: u64,
        votes: &[RefreshVote],
    ) -> Result<Arc<KeyRecord>, Error> {
        let _one = self.key_change.lock().await;
        let current = self.key(key)?;
        if current.epoch() == epoch && self.lock().committed_by.get(key) == Some(&dkg) {
            return Ok(current);
        }
        let prepared = self.lock().prepared.get(key).cloned();
        let Some((_, prepared)) = prepared
            .filter(|(by, p)| *by == dkg && p.epoch() == epoch && Some(epoch) == current.epoch().checked_add(1))
        else {
            return Err(err(
                ErrorCode::KeyEpochChanged,
                format!("key {key} is at epoch {} with no refresh {dkg} prepared at epoch {epoch}", current.epoch()),
            ));
        };
        let pins = pins.ok_or_else(|| err(ErrorCode::DkgConfigInvalid, "no [group] is pinned here"))?;
        let hash = package_hash(&prepared)?;
        for p in prepared.participants.keys() {
            let vote = votes.iter().find(|v| v.seat == *p).ok_or_else(|| {
                err(ErrorCode::DkgConfigInvalid, format!("no vote of participant {p}: every participant must prepare"))
            })?;
            vote_of(vote, pins, dkg, key)?;
            if !vote.prepared || vote.epoch != epoch || vote.package_hash != hash {
                return Err(err(
                    ErrorCode::DkgConfigInvalid,
                    format!("participant {p} did not prepare this refresh's epoch {epoch} (its vote says otherwise)"),
                ));
            }
        }
        // Fewer seats raise every enclave's share of the window limits (`policy::Split`): charges
        // taken under the old split would let the key overspend this window, so it closes first.
        if prepared.participants.len() < current.participants.len() {
            self.close_windows().await?;
        }
        self.check_unseals(&prepared)?;
        let records = vec![replay::key_record(&prepared)?, Record::KeyCommitted { key: *key, dkg }];
        self.store.persist(records).await.map_err(persist_err)?;
        let mut s = self.lock();
        s.prepared.remove(key);
        s.committed_by.insert(*key, dkg);
        Self::install_newer_key(&mut s, (*prepared).clone());
        Ok(prepared)
    }

    /// Drops refresh `dkg`'s prepared record of `key` given a participant's signed vote that it
    /// never prepared it (so it can never be committed anywhere). Whether one was dropped.
    pub async fn abandon_prepared(
        &self,
        pins: Option<&Pins>,
        dkg: DkgId,
        key: &KeyId,
        votes: &[RefreshVote],
    ) -> Result<bool, Error> {
        let _one = self.key_change.lock().await;
        Self::mark_abandoned(&mut self.lock(), dkg);
        let prepared = self.lock().prepared.get(key).cloned();
        let Some((_, prepared)) = prepared.filter(|(by, _)| *by == dkg) else { return Ok(false) };
        let pins = pins.ok_or_else(|| err(ErrorCode::DkgConfigInvalid, "no [group] is pinned here"))?;
        let never = votes
            .iter()
            .filter(|v| !v.prepared && prepared.participants.contains_key(&v.seat))
            .find(|v| vote_of(v, pins, dkg, key).is_ok())
            .ok_or_else(|| {
                err(
                    ErrorCode::DkgConfigInvalid,
                    format!("no participant's signed vote that refresh {dkg} was never prepared"),
                )
            })?;
        self.store.persist(vec![Record::PreparedAbandoned { key: *key, dkg }]).await.map_err(persist_err)?;
        self.lock().prepared.remove(key);
        tracing::info!(%dkg, key = %key, by = %never.seat, "prepared refresh abandoned");
        Ok(true)
    }
}

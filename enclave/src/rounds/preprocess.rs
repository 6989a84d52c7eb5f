//! Preprocessed nonces: commitments handed out ahead of use, so that a signing costs one request
//! per signer (FROST's and ROAST's preprocessing).
//!
//! Invariants (beside the module's, in `rounds/mod.rs`):
//! - A preprocessed pair lives only in this process's memory, under a random [`CommitmentId`],
//!   bound to one seat of one key at one epoch; it counts against the live-nonce bound and is
//!   wiped by the sweep once older than the nonce TTL, and with its key's sessions on a refresh.
//! - It is taken out of the pool under the state lock when a signing adopts it into one
//!   (attempt, seat) slot, so it can serve at most one slot; from there round 2's rules apply
//!   unchanged: the package must carry exactly its commitments, and the consumed marker is durable
//!   before the share leaves. A second package for the same commitment finds it gone
//!   (`commitment_unknown`) or its slot consumed (`nonce_already_consumed`).
//! - An id this enclave did not issue, already used, expired or lost in a restart is refused
//!   (`commitment_unknown`) before anything is bound to it.

use super::*;
use frostgate_common::ids::CommitmentId;
use frostgate_common::limits::MAX_PREPROCESS;
use frostgate_common::protocol::{PreCommitment, SessionBinding};

/// A nonce pair issued ahead of use for one seat of one key epoch. Never cloned or serialized.
#[derive(Debug)]
pub(super) struct Pooled {
    key: KeyId,
    epoch: u64,
    seat: ParticipantId,
    live: LiveNonce,
}

impl Pooled {
    /// Whether it belongs to `key` (any epoch).
    pub(super) fn of_key(&self, key: &KeyId) -> bool {
        self.key == *key
    }

    /// Whether it is older than `ttl` at `now` (wiped by whoever finds it so).
    pub(super) fn expired(&self, now: Instant, ttl: Duration) -> bool {
        now.saturating_duration_since(self.live.created) >= ttl
    }

    /// Whether it was issued for `seat` of `key` (any epoch; the epoch is checked at adoption).
    fn issued_for(&self, key: &KeyId, seat: ParticipantId) -> bool {
        self.key == *key && self.seat == seat
    }
}

fn random_id() -> Result<CommitmentId, Error> {
    let mut id = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id)
        .map_err(|_| err(ErrorCode::Internal, "randomness"))?;
    Ok(CommitmentId::from_bytes(id))
}

impl Engine {
    /// Issues `count` (at most 64) commitments for `seat` of `key`: fresh nonce pairs kept live
    /// here until one signing uses each.
    pub fn preprocess(&self, key: KeyId, seat: ParticipantId, count: u16) -> Result<Vec<PreCommitment>, Error> {
        if usize::from(count) > MAX_PREPROCESS {
            return Err(err(
                ErrorCode::MalformedMessage,
                format!("{count} commitments asked, at most {MAX_PREPROCESS}"),
            ));
        }
        let record = self.key(&key)?;
        if !record.seats.contains_key(&seat) {
            return Err(err(ErrorCode::SeatNotHeld, format!("seat {seat} of key {key} is not held here")));
        }
        if count == 0 {
            return Ok(Vec::new());
        }
        // Made without the state lock; the key package is wiped when it drops.
        let package = record.unseal(&self.custody, seat)?;
        let fresh = fresh_pairs(&package, count)?;
        drop(package);
        self.pool_fresh(key, record.epoch(), seat, fresh)
    }

    /// Keeps `fresh` pairs live in the pool for `seat` of `key` at `epoch`, within the live-nonce
    /// bounds; their public commitments.
    fn pool_fresh(
        &self,
        key: KeyId,
        epoch: u64,
        seat: ParticipantId,
        fresh: Vec<Fresh>,
    ) -> Result<Vec<PreCommitment>, Error> {
        let now = Instant::now();
        let mut s = self.lock();
        match s.keys.get(&key) {
            Some(k) if k.epoch() == epoch => {}
            _ => return Err(err(ErrorCode::KeyEpochChanged, format!("key {key} changed while preprocessing"))),
        }
        let full = |s: &State| {
            s.nonces.len() + s.pool.len() + fresh.len() > self.limits.max_live_nonces
                || s.pool.len() + fresh.len() > self.limits.max_preprocessed
        };
        if full(&s) {
            self.sweep_locked(&mut s, now);
            if full(&s) {
                return Err(err(
                    ErrorCode::RegistryFull,
                    format!("{} live nonces ({} preprocessed)", s.nonces.len() + s.pool.len(), s.pool.len()),
                ));
            }
        }
        let mut out = Vec::with_capacity(fresh.len());
        for (id, nonces, commitments) in fresh {
            out.push(PreCommitment { id, commitments: signing::commitment_bytes(commitments.clone())? });
            let live = LiveNonce { nonces, commitments, created: now, preprocessed: Some(id) };
            s.pool.insert(id, Pooled { key, epoch, seat, live });
        }
        Ok(out)
    }

    /// Refuses (`commitment_unknown`) before anything is bound unless `commitment` is live here
    /// for `seat` of `key` (in the pool, unexpired, or already adopted into `attempt`'s slot for
    /// the seat, a retry; or that slot is consumed), so a made-up id leaves no session or attempt
    /// behind.
    pub fn check_commitment(
        &self,
        key: &KeyId,
        seat: ParticipantId,
        attempt: AttemptId,
        commitment: CommitmentId,
    ) -> Result<(), Error> {
        let s = self.lock();
        let ttl = self.limits.nonce_ttl;
        let pooled =
            s.pool.get(&commitment).is_some_and(|p| p.issued_for(key, seat) && !p.expired(Instant::now(), ttl));
        let adopted = s.nonces.get(&(attempt, seat)).is_some_and(|l| l.preprocessed == Some(commitment));
        // A slot already consumed goes on to its own refusal (`nonce_already_consumed`).
        let consumed = s.consumed.contains_key(&(attempt, seat));
        if pooled || adopted || consumed {
            return Ok(());
        }
        Err(err(
            ErrorCode::CommitmentUnknown,
            format!("no live preprocessed commitment {commitment} for seat {seat} of key {key}"),
        ))
    }

    /// Binds the session and the attempt of a one-request signing; their records go with the
    /// seat's consumed marker, in one commit (an identical repeat of either is accepted).
    pub async fn bind_for_signing(
        &self,
        binding: &SessionBinding,
        attempt: AttemptId,
        signers: &[ParticipantId],
    ) -> Result<(), Error> {
        let w = Write::WithFirstMarker;
        // What the openings return (output key, sighash) is not needed: the package's message
        // must equal the session's, and the coordinator computed both itself.
        match binding {
            SessionBinding::Digest(o) => {
                self.bind_session(o.session, o.key, &[], o.message, o.mode, w, None).await.map(|_| ())
            }
            SessionBinding::Derived(o) => {
                self.bind_session(o.session, o.key, o.path.as_inner(), o.message, o.mode, w, None).await.map(|_| ())
            }
            SessionBinding::Psbt(o) => {
                self.bind_psbt_session(o.session, o.key, o.input, o.psbt.as_inner(), w, None).await.map(|_| ())
            }
            SessionBinding::Request(r) => self.bind_request_session(r, w).await.map(|_| ()),
        }?;
        self.bind_attempt(binding.session(), attempt, signers, w)
    }

    /// Signs `package_bytes` for `seat` in `attempt` with the preprocessed pair `commitment`:
    /// adopts the pair into the attempt's slot for the seat (once), then round 2 under the
    /// session's own Taproot mode. A retry of the same request after a failed commit finds the
    /// pair already in its slot.
    ///
    /// Then up to `replenish` replacement commitments are made with the key package the share
    /// was signed with (no second unseal) and pooled; a replenishment that fails (full registry,
    /// a refresh meanwhile) returns fewer, never an error: the share is released either way.
    pub async fn sign_preprocessed(
        &self,
        attempt: AttemptId,
        seat: ParticipantId,
        commitment: CommitmentId,
        package_bytes: &[u8],
        replenish: u16,
    ) -> Result<(SignatureShareBytes, Vec<PreCommitment>), Error> {
        let (mode, key, epoch) = {
            let mut s = self.lock();
            let b = Self::bound(&s, &attempt, Some(seat))?;
            let slot = (attempt, seat);
            if s.consumed.contains_key(&slot) {
                return Err(err(ErrorCode::NonceAlreadyConsumed, format!("seat {seat} in attempt {attempt}")));
            }
            match s.nonces.get(&slot) {
                Some(live) if live.preprocessed == Some(commitment) => {}
                Some(_) => {
                    return Err(err(
                        ErrorCode::SigningPackageMismatch,
                        format!("seat {seat} already has another nonce in attempt {attempt}"),
                    ))
                }
                None => {
                    let (usable, expired) = match s.pool.get(&commitment) {
                        Some(p) => (
                            p.issued_for(&b.key.key_id, seat) && p.epoch == b.key.epoch(),
                            p.expired(Instant::now(), self.limits.nonce_ttl),
                        ),
                        None => (false, false),
                    };
                    // An expired pair is wiped here, whoever names it; another seat's stays.
                    let pooled = if usable || expired { s.pool.remove(&commitment) } else { None };
                    let pooled = pooled.filter(|_| usable && !expired).ok_or_else(|| {
                        err(
                            ErrorCode::CommitmentUnknown,
                            format!("no live preprocessed commitment {commitment} for seat {seat} of this key"),
                        )
                    })?;
                    s.nonces.insert(slot, pooled.live);
                }
            }
            (b.mode, b.key.key_id, b.key.epoch())
        };
        let count = replenish.min(MAX_PREPROCESS as u16);
        let (share, fresh) =
            self.round2_then(attempt, seat, mode, package_bytes, |package| fresh_pairs(package, count)).await?;
        let next = fresh.and_then(|f| self.pool_fresh(key, epoch, seat, f)).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "no commitments replenished");
            Vec::new()
        });
        Ok((share, next))
    }
}

/// A fresh nonce pair with its id and its public commitments.
type Fresh = (CommitmentId, round1::SigningNonces, Vec<u8>);

/// `count` fresh pairs from the OS CSPRNG, hedged with the share (FROST's `commit`).
fn fresh_pairs(package: &frost_secp256k1_tr::keys::KeyPackage, count: u16) -> Result<Vec<Fresh>, Error> {
    let mut fresh = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let (nonces, commitments) = round1::commit(package.signing_share(), &mut rand_core::OsRng);
        let commitments = commitments.serialize().map_err(|e| frost_err(ErrorCode::Internal, "commitments", e))?;
        fresh.push((random_id()?, nonces, commitments));
    }
    Ok(fresh)
}

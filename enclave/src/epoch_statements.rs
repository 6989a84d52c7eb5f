//! Epoch statements: how a restoring enclave learns the key's current epoch from its pinned
//! peers, so that it refuses a stale backup itself (a host that skips the CLI's check gains
//! nothing).
//!
//! Invariants:
//! - A statement is signed by a peer's HSM identity key (pinned in this enclave's `[group]`) over
//!   the key, the peer's seat, its epoch, SHA-256 of its public key package and a challenge this
//!   enclave drew for this restore: statements cannot be forged, nor replayed from an earlier
//!   restore (each challenge serves one restore and lives 5 minutes).
//! - A restore needs statements from at least the key's threshold of distinct peers (other than
//!   the seat restored), all at the backup's epoch and package: a backup of an earlier epoch is
//!   `backup_stale`; anything else that does not add up is `backup_invalid`.

use crate::custody::identity::verify_identity_signature;
use crate::rounds::Engine;
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::ids::{KeyId, ParticipantId};
use frostgate_common::protocol::{EpochStatement, SeatBackup};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a challenge is good for.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(300);
/// Most challenges outstanding (one per key; the oldest goes first).
const MAX_CHALLENGES: usize = 64;

fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, data).as_ref());
    out
}

/// The challenges this enclave drew for restores, by key.
#[derive(Debug, Default)]
pub struct Challenges {
    map: Mutex<HashMap<KeyId, ([u8; 32], Instant)>>,
}

impl Challenges {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<KeyId, ([u8; 32], Instant)>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh challenge for a restore of `key` (replacing any earlier one for it).
    pub fn draw(&self, key: KeyId) -> Result<[u8; 32], Error> {
        let mut challenge = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut challenge)
            .map_err(|_| Error::new(ErrorCode::Internal, "randomness"))?;
        let mut map = self.lock();
        let now = Instant::now();
        map.retain(|_, (_, at)| now.saturating_duration_since(*at) < CHALLENGE_TTL);
        if map.len() >= MAX_CHALLENGES && !map.contains_key(&key) {
            if let Some(oldest) = map.iter().min_by_key(|(_, (_, at))| *at).map(|(k, _)| *k) {
                map.remove(&oldest);
            }
        }
        map.insert(key, (challenge, now));
        Ok(challenge)
    }

    /// Takes the live challenge for `key` (single use).
    pub fn take(&self, key: &KeyId) -> Result<[u8; 32], Error> {
        match self.lock().remove(key) {
            Some((challenge, at)) if at.elapsed() < CHALLENGE_TTL => Ok(challenge),
            _ => Err(Error::new(
                ErrorCode::BackupInvalid,
                format!("no live restore challenge for key {key} here (ask for one, then collect the statements)"),
            )),
        }
    }
}

/// This enclave's signed statement of the epoch at which it holds `key`, over `challenge`.
pub fn state(engine: &Engine, key: KeyId, challenge: [u8; 32]) -> Result<EpochStatement, Error> {
    let record = engine.key(&key)?;
    let seat = *record
        .seats
        .keys()
        .next()
        .ok_or_else(|| Error::new(ErrorCode::SeatNotHeld, format!("no seat of key {key} is held here")))?;
    let package =
        record.public.serialize().map_err(|e| Error::new(ErrorCode::Internal, format!("public key package: {e}")))?;
    let mut statement = EpochStatement {
        key,
        seat,
        epoch: record.epoch(),
        package_hash: sha256(&package),
        challenge,
        signature_r: [0; 32],
        signature_s: [0; 32],
    };
    let (r, s) = engine.custody().identity_sign(&statement.signed_message())?;
    (statement.signature_r, statement.signature_s) = (r, s);
    Ok(statement)
}

/// Checks that at least `threshold` distinct pinned peers state the backup's epoch and package
/// over `challenge`.
pub fn check(
    pins: Option<&BTreeMap<ParticipantId, Vec<u8>>>,
    backup: &SeatBackup,
    statements: &[EpochStatement],
    challenge: [u8; 32],
    threshold: u16,
    participants: &[ParticipantId],
) -> Result<(), Error> {
    let invalid = |m: String| Error::new(ErrorCode::BackupInvalid, m);
    let pins =
        pins.ok_or_else(|| invalid("no [group] is pinned here: the peers' statements cannot be checked".into()))?;
    let package_hash = sha256(backup.public_key_package.as_inner());
    let mut stated = BTreeSet::new();
    let mut newer = Vec::new();
    for st in statements {
        let pin = pins.get(&st.seat).ok_or_else(|| invalid(format!("participant {} is not pinned here", st.seat)))?;
        if !participants.contains(&st.seat) {
            return Err(invalid(format!("participant {} holds no seat of the backup's key", st.seat)));
        }
        if st.key != backup.key || st.challenge != challenge || st.seat == backup.seat {
            return Err(invalid(format!(
                "participant {}'s statement is for another key, challenge or seat (replayed?)",
                st.seat
            )));
        }
        if !verify_identity_signature(pin, &st.signed_message(), &st.signature_r, &st.signature_s) {
            return Err(invalid(format!("participant {}'s statement is not signed by its pinned identity", st.seat)));
        }
        if st.epoch > backup.epoch {
            newer.push(format!("participant {} holds epoch {}", st.seat, st.epoch));
        } else if st.epoch != backup.epoch || st.package_hash != package_hash {
            return Err(invalid(format!(
                "participant {} states epoch {} with another package than the backup's (epoch {})",
                st.seat, st.epoch, backup.epoch
            )));
        }
        stated.insert(st.seat);
    }
    if !newer.is_empty() {
        return Err(Error::new(
            ErrorCode::BackupStale,
            format!(
                "the backup is of epoch {} and {}: take a current backup, or repair the seat",
                backup.epoch,
                newer.join(", ")
            ),
        ));
    }
    if threshold < 2 || stated.len() < usize::from(threshold) {
        return Err(invalid(format!(
            "{} peers stated the current epoch; the key's threshold is {threshold}",
            stated.len()
        )));
    }
    Ok(())
}

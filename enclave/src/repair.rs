//! Repair of a lost seat onto a fresh enclave (FROST's repairable threshold scheme,
//! `keys::repairable`): `t` helpers rebuild seat N's share for the enclave now pinned for N,
//! and none of them, the hosts or the relay learns it.
//!
//! Invariants:
//! - Every value crosses as AES-256-GCM ciphertext under a pairwise HSM-derived key between
//!   pinned identities: deltas helper to helper, sigmas helper to the new enclave. The associated
//!   data binds the repair id, sender, recipient, key id, the helper set and the hash of the
//!   helper's public key package, so the new enclave combines only contributions that agree.
//! - Helpers act only for a seat pinned (in their own `[group]`) to the identity the request
//!   names; a helper's own delta lives only in this map (its encoding wiped on drop), bounded,
//!   with a TTL, and is used only while the key is at the epoch it was made at. (frost-core's
//!   `Delta` and `Sigma` are `Copy` without zeroize: their encodings here are wiped, the
//!   library's own copies are not.)
//! - The new enclave seals the repaired share only if its verifying share is the one the public
//!   key package lists for the seat, and only for a key it does not hold yet; it first closes its
//!   policy windows for one window length (the lost store's counters are unknown).

use crate::dkg::{decrypt_envelope, encrypt_envelope, DkgError};
use crate::keys::{frost_err, identifier, key_id_of, KeyRecord, SealedSeat};
use crate::rounds::Engine;
use crate::sealing;
use frost_secp256k1_tr::keys::repairable::{self, Delta, Sigma};
use frost_secp256k1_tr::keys::{KeyPackage, PublicKeyPackage};
use frost_secp256k1_tr::Secp256K1Sha256TR;
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::ids::{DkgId, KeyId, ParticipantId};
use frostgate_common::protocol::DkgEnvelopes;
use frostgate_common::protocol::{DkgEnvelope, RepairFinish, RepairSigma, RepairStart};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// Most repairs this enclave helps with at once.
pub const MAX_REPAIRS: usize = 16;

type Pins = BTreeMap<ParticipantId, Vec<u8>>;
type RepairResult<T> = Result<T, DkgError>;

fn err(code: ErrorCode, msg: impl std::fmt::Display) -> DkgError {
    DkgError::Error(Error::new(code, msg))
}

/// A repair this enclave helps with, between its two steps.
struct Helping {
    key: KeyId,
    seat: ParticipantId,
    me: ParticipantId,
    helpers: Vec<ParticipantId>,
    epoch: u64,
    package_hash: [u8; 32],
    /// This helper's delta to itself (a scalar encoding).
    own_delta: Zeroizing<Vec<u8>>,
    started: Instant,
}

/// Repairs in progress on the helpers' side.
pub struct Repairs {
    map: Mutex<HashMap<DkgId, Helping>>,
    ttl: Duration,
}

impl std::fmt::Debug for Repairs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Repairs(..)")
    }
}

impl Default for Repairs {
    fn default() -> Self {
        Repairs::new(crate::dkg::DEFAULT_DKG_TTL)
    }
}

/// Everything a repair ciphertext is bound to.
struct Binding<'a> {
    kind: &'static [u8],
    repair: DkgId,
    seat: ParticipantId,
    from: ParticipantId,
    to: ParticipantId,
    key: KeyId,
    helpers: &'a [ParticipantId],
    package_hash: [u8; 32],
}

impl Binding<'_> {
    fn bytes(&self) -> Vec<u8> {
        let mut c = self.kind.to_vec();
        c.extend_from_slice(self.repair.as_bytes());
        c.extend_from_slice(&self.seat.get().to_be_bytes());
        c.extend_from_slice(&self.from.get().to_be_bytes());
        c.extend_from_slice(&self.to.get().to_be_bytes());
        c.extend_from_slice(self.key.as_bytes());
        c.extend_from_slice(&(self.helpers.len() as u16).to_be_bytes());
        for h in self.helpers {
            c.extend_from_slice(&h.get().to_be_bytes());
        }
        c.extend_from_slice(&self.package_hash);
        c
    }
}

const DELTA: &[u8] = b"frostgate/repair-delta/v1";
const SIGMA: &[u8] = b"frostgate/repair-sigma/v1";

fn package_hash(public: &PublicKeyPackage) -> Result<[u8; 32], Error> {
    let bytes = public.serialize().map_err(|e| frost_err(ErrorCode::Internal, "public key package", e))?;
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref());
    Ok(out)
}

fn pinned(pins: Option<&Pins>, p: ParticipantId) -> Result<&[u8], DkgError> {
    pins.and_then(|pins| pins.get(&p)).map(Vec::as_slice).ok_or_else(|| {
        err(ErrorCode::DkgConfigInvalid, format!("participant {p} is not pinned in this enclave's [group]"))
    })
}

/// Whether `package` is seat `seat`'s share of `public` (its verifying share is the listed one).
pub fn matches_verifying_share(package: &KeyPackage, public: &PublicKeyPackage, seat: ParticipantId) -> bool {
    // The secret share itself, not only the verifying share the package claims: `s_i * G`.
    let derived = frost_secp256k1_tr::keys::VerifyingShare::from(*package.signing_share());
    identifier(seat).is_ok_and(|id| public.verifying_shares().get(&id) == Some(package.verifying_share()))
        && derived == *package.verifying_share()
        && package.verifying_key() == public.verifying_key()
        && public.min_signers().is_some_and(|t| t == *package.min_signers() && t >= 2)
}

impl Repairs {
    /// Repairs dropped after `ttl`.
    pub fn new(ttl: Duration) -> Repairs {
        Repairs { map: Mutex::new(HashMap::new()), ttl }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<DkgId, Helping>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Abandons a repair (its deltas are wiped). Whether it was here.
    pub fn abort(&self, id: DkgId) -> bool {
        self.lock().remove(&id).is_some()
    }

    /// Drops repairs older than the TTL (their deltas are wiped on drop). Returns how many.
    pub fn expire(&self, now: Instant) -> usize {
        let mut map = self.lock();
        let before = map.len();
        map.retain(|_, r| now.saturating_duration_since(r.started) < self.ttl);
        before - map.len()
    }

    /// Helper, step 1: checks the request against the key held here and the pinned group, splits
    /// this helper's part of the lost share into deltas, and returns the other helpers' deltas
    /// encrypted to each.
    pub fn start(&self, engine: &Engine, pins: Option<&Pins>, r: &RepairStart) -> RepairResult<DkgEnvelopes> {
        let record = engine.key(&r.key)?;
        let helpers: Vec<ParticipantId> = r.helpers.as_inner().clone();
        if !record.seats.contains_key(&r.me) {
            return Err(err(
                ErrorCode::DkgConfigInvalid,
                format!("this enclave holds no seat {} of key {}", r.me, r.key),
            ));
        }
        if !helpers.windows(2).all(|w| w[0] < w[1]) || !helpers.contains(&r.me) || helpers.contains(&r.seat) {
            return Err(err(ErrorCode::DkgConfigInvalid, "helpers: ascending, including this one, excluding the seat"));
        }
        if helpers.len() < record.threshold as usize {
            return Err(err(
                ErrorCode::DkgConfigInvalid,
                format!("{} helpers, threshold {}", helpers.len(), record.threshold),
            ));
        }
        if let Some(p) = helpers.iter().chain([&r.seat]).find(|p| !record.participants.contains_key(p)) {
            return Err(err(ErrorCode::DkgConfigInvalid, format!("participant {p} holds no share of key {}", r.key)));
        }
        for h in &helpers {
            pinned(pins, *h)?;
        }
        if pinned(pins, r.me)? != engine.custody().identity_public_key() {
            return Err(err(
                ErrorCode::DkgConfigInvalid,
                format!("participant {} is not pinned to this enclave", r.me),
            ));
        }
        // The operator pins the new enclave's identity for the seat; a host cannot substitute it.
        if pinned(pins, r.seat)? != r.identity_key.as_inner().as_slice() {
            return Err(err(
                ErrorCode::DkgConfigInvalid,
                format!("seat {} is pinned to another identity key: pin the new enclave's identity in [group]", r.seat),
            ));
        }
        let mut map = self.lock();
        if map.contains_key(&r.repair) {
            return Err(err(ErrorCode::DkgConfigInvalid, "this repair id is already running"));
        }
        if map.len() >= MAX_REPAIRS {
            let now = Instant::now();
            map.retain(|_, h| now.saturating_duration_since(h.started) < self.ttl);
            if map.len() >= MAX_REPAIRS {
                return Err(err(ErrorCode::RegistryFull, format!("{MAX_REPAIRS} repairs in progress")));
            }
        }
        let ids = helpers.iter().map(|h| identifier(*h)).collect::<Result<Vec<_>, _>>()?;
        let package = record.unseal(engine.custody(), r.me)?;
        let deltas = repairable::repair_share_part1::<Secp256K1Sha256TR, _>(
            &ids,
            &package,
            &mut rand_core::OsRng,
            identifier(r.seat)?,
        )
        .map_err(|e| frost_err(ErrorCode::DkgConfigInvalid, "repair part 1", e))?;
        drop(package);
        let package_hash = package_hash(&record.public)?;
        let mut envelopes = Vec::new();
        let mut own = None;
        for (h, id) in helpers.iter().zip(&ids) {
            let delta = Zeroizing::new(
                deltas.get(id).ok_or_else(|| err(ErrorCode::Internal, "a helper's delta is missing"))?.serialize(),
            );
            if *h == r.me {
                own = Some(delta);
                continue;
            }
            let aad = Binding {
                kind: DELTA,
                repair: r.repair,
                seat: r.seat,
                from: r.me,
                to: *h,
                key: r.key,
                helpers: &helpers,
                package_hash,
            }
            .bytes();
            let k = engine.custody().identity_shared_key(pinned(pins, *h)?, &aad)?;
            envelopes.push(DkgEnvelope {
                dkg: r.repair,
                from: r.me,
                to: *h,
                ciphertext: encrypt_envelope(&k, &aad, &delta)?,
            });
        }
        let own_delta = own.ok_or_else(|| err(ErrorCode::Internal, "this helper's own delta is missing"))?;
        map.insert(
            r.repair,
            Helping {
                key: r.key,
                seat: r.seat,
                me: r.me,
                helpers,
                epoch: record.epoch(),
                package_hash,
                own_delta,
                started: Instant::now(),
            },
        );
        DkgEnvelopes::new(envelopes).map_err(|e| err(ErrorCode::Internal, e))
    }

    /// Helper, step 2 (once): the deltas addressed here, summed with this helper's own, go to the
    /// new enclave as one encrypted sigma (with the key epoch).
    pub fn sigma(&self, engine: &Engine, pins: Option<&Pins>, r: &RepairSigma) -> RepairResult<DkgEnvelopes> {
        let h =
            self.lock().remove(&r.repair).ok_or_else(|| err(ErrorCode::DkgUnknown, format!("repair {}", r.repair)))?;
        // A refresh since step 1 changed this helper's share: its delta is of the old epoch.
        let record = engine.key(&h.key)?;
        if record.epoch() != h.epoch || !record.seats.contains_key(&h.me) {
            return Err(err(ErrorCode::KeyEpochChanged, format!("key {} changed since this repair started", h.key)));
        }
        let expected: Vec<ParticipantId> = h.helpers.iter().copied().filter(|p| *p != h.me).collect();
        let mut given: Vec<ParticipantId> = r.envelopes.as_inner().iter().map(|e| e.from).collect();
        given.sort();
        if given != expected || r.envelopes.as_inner().iter().any(|e| e.to != h.me || e.dkg != r.repair) {
            return Err(err(ErrorCode::DkgConfigInvalid, "one delta from every other helper, addressed here"));
        }
        let mut deltas =
            vec![Delta::deserialize(&h.own_delta).map_err(|e| frost_err(ErrorCode::Internal, "delta", e))?];
        for e in r.envelopes.as_inner() {
            let aad = Binding {
                kind: DELTA,
                repair: r.repair,
                seat: h.seat,
                from: e.from,
                to: h.me,
                key: h.key,
                helpers: &h.helpers,
                package_hash: h.package_hash,
            }
            .bytes();
            let k = engine.custody().identity_shared_key(pinned(pins, e.from)?, &aad)?;
            let plain = decrypt_envelope(&k, &aad, e.ciphertext.as_inner())
                .ok_or(DkgError::Blame(ErrorCode::DkgDecryptFailed, e.from))?;
            deltas.push(Delta::deserialize(&plain).map_err(|_| DkgError::Blame(ErrorCode::DkgInvalidShare, e.from))?);
        }
        let sigma = repairable::repair_share_part2(&deltas);
        let mut plain = Zeroizing::new(h.epoch.to_be_bytes().to_vec());
        plain.extend_from_slice(&Zeroizing::new(sigma.serialize()));
        let aad = Binding {
            kind: SIGMA,
            repair: r.repair,
            seat: h.seat,
            from: h.me,
            to: h.seat,
            key: h.key,
            helpers: &h.helpers,
            package_hash: h.package_hash,
        }
        .bytes();
        let k = engine.custody().identity_shared_key(pinned(pins, h.seat)?, &aad)?;
        let envelope =
            DkgEnvelope { dkg: r.repair, from: h.me, to: h.seat, ciphertext: encrypt_envelope(&k, &aad, &plain)? };
        DkgEnvelopes::new(vec![envelope]).map_err(|e| err(ErrorCode::Internal, e))
    }

    /// New enclave: combines the helpers' sigmas into the seat's share, checks it against the
    /// public key package's verifying share, seals it and stores the key.
    pub async fn finish(engine: &Engine, pins: Option<&Pins>, r: &RepairFinish) -> RepairResult<KeyRecord> {
        if pinned(pins, r.seat)? != engine.custody().identity_public_key() {
            return Err(err(ErrorCode::DkgConfigInvalid, format!("seat {} is not pinned to this enclave", r.seat)));
        }
        if engine.key(&r.key).is_ok() {
            return Err(err(ErrorCode::DkgConfigInvalid, format!("key {} is already held here", r.key)));
        }
        let public = PublicKeyPackage::deserialize(r.public_key_package.as_inner())
            .map_err(|e| frost_err(ErrorCode::InvalidEncoding, "public key package", e))?;
        if key_id_of(&public)? != r.key {
            return Err(err(ErrorCode::DkgConfigInvalid, "the public key package is another key's"));
        }
        let threshold = public.min_signers().unwrap_or(u16::MAX) as usize;
        let mut helpers: Vec<ParticipantId> = r.envelopes.as_inner().iter().map(|e| e.from).collect();
        helpers.sort();
        helpers.dedup();
        let members = KeyRecord::new(public.clone(), BTreeMap::new())?.participants;
        if helpers.len() != r.envelopes.as_inner().len()
            || helpers.len() < threshold
            || helpers.contains(&r.seat)
            || !members.contains_key(&r.seat)
            || helpers.iter().any(|h| !members.contains_key(h))
            || r.envelopes.as_inner().iter().any(|e| e.to != r.seat || e.dkg != r.repair)
        {
            return Err(err(
                ErrorCode::DkgConfigInvalid,
                "one sigma from each of at least threshold helpers of the key",
            ));
        }
        let package_hash = package_hash(&public)?;
        let mut sigmas = Vec::new();
        let mut epochs = Vec::new();
        for e in r.envelopes.as_inner() {
            let aad = Binding {
                kind: SIGMA,
                repair: r.repair,
                seat: r.seat,
                from: e.from,
                to: r.seat,
                key: r.key,
                helpers: &helpers,
                package_hash,
            }
            .bytes();
            let k = engine.custody().identity_shared_key(pinned(pins, e.from)?, &aad)?;
            let plain = decrypt_envelope(&k, &aad, e.ciphertext.as_inner())
                .ok_or(DkgError::Blame(ErrorCode::DkgDecryptFailed, e.from))?;
            let (epoch, sigma) =
                plain.split_at_checked(8).ok_or(DkgError::Blame(ErrorCode::DkgInvalidShare, e.from))?;
            epochs.push(u64::from_be_bytes(epoch.try_into().unwrap_or_default()));
            sigmas.push(Sigma::deserialize(sigma).map_err(|_| DkgError::Blame(ErrorCode::DkgInvalidShare, e.from))?);
        }
        let epoch = epochs[0];
        if epochs.iter().any(|e| *e != epoch) {
            return Err(err(ErrorCode::DkgConfigInvalid, "the helpers hold the key at different epochs"));
        }
        let package = repairable::repair_share_part3(&sigmas, identifier(r.seat)?, &public)
            .map_err(|e| frost_err(ErrorCode::DkgInvalidShare, "repair part 3", e))?;
        if !matches_verifying_share(&package, &public, r.seat) {
            return Err(err(
                ErrorCode::DkgInvalidShare,
                format!("the repaired share is not seat {}'s (its verifying share differs)", r.seat),
            ));
        }
        let plain = Zeroizing::new(package.serialize().map_err(|e| frost_err(ErrorCode::Internal, "key package", e))?);
        drop(package);
        let mut record = KeyRecord::new(public, BTreeMap::new())?;
        let blob = sealing::seal(engine.custody(), &record.seal_context(r.seat, epoch), &plain)?;
        record.seats.insert(r.seat, SealedSeat { blob, epoch });
        // The store this seat lived in is gone with its policy counters: they count as exhausted.
        engine.close_windows().await?;
        engine.add_key(record.clone()).await?;
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use frost_secp256k1_tr::keys::{generate_with_dealer, IdentifierList};
    use frost_secp256k1_tr::Identifier;

    /// The check the new enclave applies before sealing: the repaired share of seat 2 is
    /// accepted, another seat's share or a share of another key is not.
    #[test]
    fn only_the_seats_own_share_matches_its_verifying_share() {
        let (shares, public) = generate_with_dealer(3, 2, IdentifierList::Default, rand_core::OsRng).expect("dealer");
        let (_, other_public) = generate_with_dealer(3, 2, IdentifierList::Default, rand_core::OsRng).expect("dealer");
        let seat = |n: u16| ParticipantId::new(n).expect("seat");
        let package =
            |n: u16| KeyPackage::try_from(shares[&identifier(seat(n)).expect("id")].clone()).expect("package");
        // Rebuild seat 2 from helpers 1 and 3 exactly as the protocol does.
        let helpers = [identifier(seat(1)).expect("id"), identifier(seat(3)).expect("id")];
        let mut sigmas_in: BTreeMap<Identifier, Vec<Delta>> = BTreeMap::new();
        for h in [1u16, 3] {
            let deltas = repairable::repair_share_part1::<Secp256K1Sha256TR, _>(
                &helpers,
                &package(h),
                &mut rand_core::OsRng,
                identifier(seat(2)).expect("id"),
            )
            .expect("part 1");
            for (to, d) in deltas {
                sigmas_in.entry(to).or_default().push(d);
            }
        }
        let sigmas: Vec<Sigma> = sigmas_in.values().map(|d| repairable::repair_share_part2(d)).collect();
        let repaired =
            repairable::repair_share_part3(&sigmas, identifier(seat(2)).expect("id"), &public).expect("part 3");
        assert_eq!(repaired.signing_share(), package(2).signing_share());
        assert!(matches_verifying_share(&repaired, &public, seat(2)));
        assert!(!matches_verifying_share(&repaired, &public, seat(1)), "another seat's verifying share");
        assert!(!matches_verifying_share(&package(1), &public, seat(2)), "another seat's share");
        assert!(!matches_verifying_share(&repaired, &other_public, seat(2)), "another key");
        // One sigma short: not the seat's share.
        let short =
            repairable::repair_share_part3(&sigmas[..1], identifier(seat(2)).expect("id"), &public).expect("p3");
        assert!(!matches_verifying_share(&short, &public, seat(2)));
    }
}

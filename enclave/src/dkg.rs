//! Distributed key generation between enclaves (FROST DKG parts 1-3), one participant per
//! enclave, with round-2 packages encrypted end to end and a signed transcript check; and share
//! refresh (FROST's refresh DKG: every participant deals a sharing of zero), which runs the same
//! steps for a key already held and ends in the same key with shares of the next epoch.
//!
//! Invariants:
//! - DKG secret packages live only in this map, in enclave memory (`ZeroizeOnDrop`); a restart
//!   loses them and the DKG must start again. Nothing secret is persisted before activation, and
//!   then only the sealed key package.
//! - A DKG runs only if this enclave's identity key is the one pinned for its participant id,
//!   and round-2 packages travel only as AES-256-GCM ciphertexts under pairwise keys derived in the
//!   HSMs (static-static ECDH): the hosts and the relay see ciphertext only.
//! - A key is activated only when every participant's signed confirmation verifies under its
//!   pinned identity key over the same transcript hash as this enclave's own.
//! - A refresh activates in two phases: `RefreshActivate` makes the refreshed share durable beside
//!   the current one (`Engine::prepare_key`), which keeps signing; `RefreshCommit`, sent once every
//!   participant prepared, puts it in force (`Engine::commit_key`). One participant failing its
//!   activation leaves every participant signing at the old epoch. The refresh keeps the group key (checked), and its transcript binds the key
//!   and the epoch refreshed, so participants at different epochs never activate.

use crate::custody::identity::{self, verify_identity_signature};
use crate::keys::{frost_err, identifier, KeyRecord, SealedSeat};
use crate::rounds::Engine;
use crate::sealing;
use frost_secp256k1_tr::keys::dkg::{self as fdkg, round1, round2};
use frost_secp256k1_tr::keys::refresh;
use frost_secp256k1_tr::keys::{KeyPackage, PublicKeyPackage};
use frost_secp256k1_tr::Identifier;
use frostgate_common::bounded::{DkgCiphertext, DkgPackageBytes};
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::ids::{DkgId, KeyId, ParticipantId};
use frostgate_common::protocol::{DkgConfirmation, DkgEnvelope, DkgRound1Package, DkgStart, RefreshStart};
use frostgate_common::protocol::{DkgEnvelopes, DkgParticipants};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// Most DKGs in progress at once.
pub const MAX_DKGS: usize = 16;
/// A DKG not activated or aborted within this long is dropped (its secrets wiped), so unfinished
/// DKGs cannot hold the registry forever.
pub const DEFAULT_DKG_TTL: Duration = Duration::from_secs(frostgate_common::limits::DKG_TTL_SECS);

/// A DKG failure: a typed error, or an abort attributed to a participant.
#[derive(Debug)]
pub enum DkgError {
    /// Not attributable.
    Error(Error),
    /// Attributed to `culprit`, with the reason.
    Blame(ErrorCode, ParticipantId),
}

impl From<Error> for DkgError {
    fn from(e: Error) -> Self {
        DkgError::Error(e)
    }
}

type DkgResult<T> = Result<T, DkgError>;

/// What a refresh refreshes: a key held here, at an epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RefreshOf {
    key: KeyId,
    epoch: u64,
}

enum Phase {
    Round1(round1::SecretPackage),
    Round2 { secret: round2::SecretPackage, others: BTreeMap<Identifier, round1::Package> },
    Confirmed(Box<Confirmed>),
}

/// A derived but not yet activated key (boxed: the key package is large).
struct Confirmed {
    key_package: KeyPackage,
    public: PublicKeyPackage,
    transcript: [u8; 32],
    key: KeyId,
}

struct Dkg {
    threshold: u16,
    me: ParticipantId,
    participants: BTreeMap<ParticipantId, Vec<u8>>,
    round1: BTreeMap<ParticipantId, Vec<u8>>,
    phase: Phase,
    started: Instant,
    /// `Some` for a refresh of a held key.
    refresh: Option<RefreshOf>,
}

/// DKGs in progress, and the group they may run in.
pub struct Dkgs {
    map: Mutex<HashMap<DkgId, Dkg>>,
    pinned: Option<BTreeMap<ParticipantId, Vec<u8>>>,
    ttl: Duration,
    /// `[group] allow_removal_to_threshold`.
    allow_removal_to_threshold: bool,
}

impl Default for Dkgs {
    fn default() -> Self {
        Dkgs::new(None, DEFAULT_DKG_TTL)
    }
}

impl std::fmt::Debug for Dkgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dkgs(..)")
    }
}

fn err(code: ErrorCode, msg: impl std::fmt::Display) -> DkgError {
    DkgError::Error(Error::new(code, msg))
}

fn context(dkg: &DkgId, from: ParticipantId, to: ParticipantId) -> Vec<u8> {
    let mut c = b"frostgate/dkg-round2/v1".to_vec();
    c.extend_from_slice(dkg.as_bytes());
    c.extend_from_slice(&from.get().to_be_bytes());
    c.extend_from_slice(&to.get().to_be_bytes());
    c
}

fn aead(key: &Zeroizing<[u8; 32]>) -> Result<LessSafeKey, Error> {
    UnboundKey::new(&AES_256_GCM, key.as_slice())
        .map(LessSafeKey::new)
        .map_err(|_| Error::new(ErrorCode::Internal, "AES-256-GCM key"))
}

impl Dkgs {
    /// DKGs restricted to the pinned group (from the enclave's own configuration, never from
    /// the host). Without pins every DKG is refused.
    /// A DKG older than `ttl` is dropped (see [`DEFAULT_DKG_TTL`]).
    pub fn new(pinned: Option<BTreeMap<ParticipantId, Vec<u8>>>, ttl: Duration) -> Dkgs {
        Dkgs { map: Mutex::new(HashMap::new()), pinned, ttl, allow_removal_to_threshold: false }
    }

    /// The same registry, allowing (or not) refreshes that remove seats down to the threshold.
    pub fn allowing_removal_to_threshold(mut self, allow: bool) -> Dkgs {
        self.allow_removal_to_threshold = allow;
        self
    }

    /// Drops DKGs older than the TTL (their secret packages are wiped on drop). Returns how many.
    pub fn expire(&self, now: Instant) -> usize {
        let mut map = self.lock();
        let before = map.len();
        map.retain(|_, d| now.saturating_duration_since(d.started) < self.ttl);
        before - map.len()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<DkgId, Dkg>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Round 1: checks the pinned configuration, runs part 1, returns the public package.
    pub fn start(&self, engine: &Engine, r: &DkgStart) -> DkgResult<DkgRound1Package> {
        let n = r.participants.as_inner().len() as u16;
        if r.threshold < 2 || r.threshold > n {
            return Err(err(ErrorCode::DkgConfigInvalid, format!("{}-of-{n} is not a valid group", r.threshold)));
        }
        self.begin(engine, r.dkg, r.me, r.threshold, &r.participants, None)
    }

    /// Round 1 of a refresh of a key held here (one seat): the participants must be pinned, hold
    /// the key, and be at least its threshold; the others' seats are removed by the refresh.
    pub fn start_refresh(&self, engine: &Engine, r: &RefreshStart) -> DkgResult<DkgRound1Package> {
        let record = engine.key(&r.key)?;
        if record.seats.keys().copied().collect::<Vec<_>>() != [r.me] {
            return Err(err(
                ErrorCode::DkgConfigInvalid,
                format!("a refresh needs this enclave to hold exactly seat {} of key {}", r.me, r.key),
            ));
        }
        let ids: Vec<ParticipantId> = r.participants.as_inner().iter().map(|p| p.id).collect();
        if let Some(p) = ids.iter().find(|p| !record.participants.contains_key(p)) {
            return Err(err(ErrorCode::DkgConfigInvalid, format!("participant {p} holds no share of key {}", r.key)));
        }
        if ids.len() < record.threshold as usize {
            return Err(err(
                ErrorCode::DkgConfigInvalid,
                format!("{} participants cannot refresh a key of threshold {}", ids.len(), record.threshold),
            ));
        }
        // Removing seats down to n = t leaves no spare: one lost node then loses the key. Only
        // this enclave's operator can allow it (a coordinator can send any participant list).
        if ids.len() == record.threshold as usize
            && ids.len() < record.participants.len()
            && !self.allow_removal_to_threshold
        {
            return Err(err(
                ErrorCode::DkgConfigInvalid,
                format!(
                    "this refresh would leave key {} with {} seats for a threshold of {} (no spare seat); \
                     set [group] allow_removal_to_threshold = true in this enclave's configuration to allow it",
                    r.key,
                    ids.len(),
                    record.threshold
                ),
            ));
        }
        let refresh = RefreshOf { key: r.key, epoch: record.epoch() };
        self.begin(engine, r.dkg, r.me, record.threshold, &r.participants, Some(refresh))
    }

    /// Round 1 of a DKG or a refresh: the participants against the pinned group (a DKG: exactly
    /// the group; a refresh: members of it), then part 1.
    fn begin(
        &self,
        engine: &Engine,
        id: DkgId,
        me: ParticipantId,
        threshold: u16,
        list: &DkgParticipants,
        refresh: Option<RefreshOf>,
    ) -> DkgResult<DkgRound1Package> {
        let ids: Vec<ParticipantId> = list.as_inner().iter().map(|p| p.id).collect();
        let n = ids.len() as u16;
        if n < 2 || !ids.windows(2).all(|w| w[0] < w[1]) {
            return Err(err(ErrorCode::DkgConfigInvalid, "at least two ascending unique participants are required"));
        }
        let participants: BTreeMap<ParticipantId, Vec<u8>> =
            list.as_inner().iter().map(|p| (p.id, p.identity_key.as_inner().clone())).collect();
        if participants.values().any(|k| !identity::well_formed(k)) {
            return Err(err(ErrorCode::DkgConfigInvalid, "an identity key is not an uncompressed P-256 point"));
        }
        // The host proposes the participants; the enclave's own configuration decides. A host that
        // substituted a peer's identity key could otherwise read that peer's round-2 share.
        let Some(pins) = &self.pinned else {
            return Err(err(ErrorCode::DkgConfigInvalid, "no [group] is pinned in this enclave's configuration"));
        };
        let pinned = match refresh {
            None => *pins == participants,
            Some(_) => participants.iter().all(|(p, k)| pins.get(p) == Some(k)),
        };
        if !pinned {
            return Err(err(
                ErrorCode::DkgConfigInvalid,
                "the participants or identity keys differ from the pinned [group]",
            ));
        }
        if participants.get(&me).map(Vec::as_slice) != Some(engine.custody().identity_public_key()) {
            return Err(err(
                ErrorCode::DkgConfigInvalid,
                format!("participant {me} is not pinned to this enclave's identity key"),
            ));
        }
        let mut map = self.lock();
        // One refresh of a key at a time: two confirmed refreshes activated on different nodes
        // would leave the seats on different sharings.
        if let Some(of) = refresh {
            if map.iter().any(|(other, d)| *other != id && d.refresh.is_some_and(|r| r.key == of.key)) {
                return Err(err(
                    ErrorCode::DkgConfigInvalid,
                    format!("a refresh of key {} is already running here (abort it, or let it expire)", of.key),
                ));
            }
        }
        if let Some(existing) = map.get(&id) {
            let same = existing.me == me
                && existing.threshold == threshold
                && existing.participants == participants
                && existing.refresh == refresh;
            if same {
                if let Some(own) = existing.round1.get(&me) {
                    return Ok(round1_package(id, me, own.clone())?);
                }
            }
            return Err(err(ErrorCode::DkgConfigInvalid, "this DKG id is already running with another configuration"));
        }
        if map.len() >= MAX_DKGS {
            let now = Instant::now();
            map.retain(|_, d| now.saturating_duration_since(d.started) < self.ttl);
        }
        if map.len() >= MAX_DKGS {
            return Err(err(
                ErrorCode::RegistryFull,
                format!("{MAX_DKGS} DKGs in progress; the oldest expires {}s after its start", self.ttl.as_secs()),
            ));
        }
        let (secret, package) = match refresh {
            None => fdkg::part1(identifier(me)?, n, threshold, rand_core::OsRng),
            Some(_) => refresh::refresh_dkg_part1(identifier(me)?, n, threshold, rand_core::OsRng),
        }
        .map_err(|e| frost_err(ErrorCode::DkgConfigInvalid, "DKG part 1", e))?;
        let bytes = package.serialize().map_err(|e| frost_err(ErrorCode::Internal, "round-1 package", e))?;
        let dkg = Dkg {
            threshold,
            me,
            participants,
            round1: BTreeMap::from([(me, bytes.clone())]),
            phase: Phase::Round1(secret),
            started: Instant::now(),
            refresh,
        };
        map.insert(id, dkg);
        Ok(round1_package(id, me, bytes)?)
    }

    /// Round 2: verifies everyone else's proofs, returns round-2 packages encrypted to each recipient.
    pub fn round2(&self, engine: &Engine, id: DkgId, packages: &[DkgRound1Package]) -> DkgResult<DkgEnvelopes> {
        let mut map = self.lock();
        let dkg = map.get(&id).ok_or_else(|| err(ErrorCode::DkgUnknown, format!("DKG {id}")))?;
        let expected: Vec<ParticipantId> = dkg.participants.keys().copied().filter(|p| *p != dkg.me).collect();
        let mut given: Vec<ParticipantId> = packages.iter().map(|p| p.from).collect();
        given.sort();
        if given != expected || packages.iter().any(|p| p.dkg != id) {
            return Err(err(
                ErrorCode::DkgConfigInvalid,
                "round 2 needs exactly one round-1 package from every other participant",
            ));
        }
        if !matches!(dkg.phase, Phase::Round1(_)) {
            return Err(err(ErrorCode::DkgPhase, "round 2 is allowed once, after round 1"));
        }
        let mut others = BTreeMap::new();
        // A refresh's commitments omit the constant term (a sharing of zero): one fewer.
        let commitments = dkg.threshold as usize - usize::from(dkg.refresh.is_some());
        for p in packages {
            let pkg = round1::Package::deserialize(p.package.as_inner())
                .ok()
                .filter(|pkg| pkg.commitment().serialize().is_ok_and(|c| c.len() == commitments));
            let Some(pkg) = pkg else {
                map.remove(&id);
                return Err(DkgError::Blame(ErrorCode::DkgInvalidProof, p.from));
            };
            others.insert(identifier(p.from)?, pkg);
        }
        // Taken out under the lock; put back only if part 2 succeeds (else the DKG is aborted).
        let Some(Dkg { threshold, me, participants, mut round1, phase: Phase::Round1(secret), started, refresh }) =
            map.remove(&id)
        else {
            return Err(err(ErrorCode::Internal, "phase changed under the lock"));
        };
        let part2 = match refresh {
            None => fdkg::part2(secret, &others),
            Some(_) => refresh::refresh_dkg_part2(secret, &others),
        };
        let (secret2, outgoing) = match part2 {
            Ok(x) => x,
            Err(e) => {
                let culprit = e.culprits().first().and_then(|c| participant_of(&participants, c));
                return Err(match culprit {
                    Some(c) => DkgError::Blame(ErrorCode::DkgInvalidProof, c),
                    None => err(ErrorCode::DkgInvalidProof, format!("DKG part 2: {e}")),
                });
            }
        };
        for (p, pkg) in &others {
            if let Some(pid) = participant_of(&participants, p) {
                round1.insert(pid, pkg.serialize().map_err(|e| frost_err(ErrorCode::Internal, "round-1 package", e))?);
            }
        }
        let mut envelopes = Vec::new();
        for (to_id, pkg) in &outgoing {
            let to =
                participant_of(&participants, to_id).ok_or_else(|| err(ErrorCode::Internal, "unknown recipient"))?;
            let plain =
                Zeroizing::new(pkg.serialize().map_err(|e| frost_err(ErrorCode::Internal, "round-2 package", e))?);
            let ctx = context(&id, me, to);
            let key = engine.custody().identity_shared_key(&participants[&to], &ctx)?;
            envelopes.push(DkgEnvelope { dkg: id, from: me, to, ciphertext: encrypt_envelope(&key, &ctx, &plain)? });
        }
        map.insert(
            id,
            Dkg {
                threshold,
                me,
                participants,
                round1,
                phase: Phase::Round2 { secret: secret2, others },
                started,
                refresh,
            },
        );
        DkgEnvelopes::new(envelopes).map_err(|e| err(ErrorCode::Internal, e))
    }

    /// Round 3: decrypts and verifies the shares addressed here, derives the key, and returns a
    /// signed confirmation of the transcript. The key is not active yet.
    pub fn finish(&self, engine: &Engine, id: DkgId, envelopes: &[DkgEnvelope]) -> DkgResult<DkgConfirmation> {
        let mut map = self.lock();
        let dkg = map.get_mut(&id).ok_or_else(|| err(ErrorCode::DkgUnknown, format!("DKG {id}")))?;
        let Phase::Round2 { secret, others } = &dkg.phase else {
            return Err(err(ErrorCode::DkgPhase, "finish is allowed once, after round 2"));
        };
        let expected: Vec<ParticipantId> = dkg.participants.keys().copied().filter(|p| *p != dkg.me).collect();
        let mut given: Vec<ParticipantId> = envelopes.iter().map(|e| e.from).collect();
        given.sort();
        if given != expected || envelopes.iter().any(|e| e.to != dkg.me || e.dkg != id) {
            return Err(err(
                ErrorCode::DkgConfigInvalid,
                "finish needs exactly one envelope from every other participant, addressed here",
            ));
        }
        let mut incoming = BTreeMap::new();
        let mut blame = None;
        for e in envelopes {
            let ctx = context(&id, e.from, dkg.me);
            let key = engine.custody().identity_shared_key(&dkg.participants[&e.from], &ctx)?;
            let Some(plain) = decrypt_envelope(&key, &ctx, e.ciphertext.as_inner()) else {
                blame = Some(DkgError::Blame(ErrorCode::DkgDecryptFailed, e.from));
                break;
            };
            match round2::Package::deserialize(&plain) {
                Ok(p) => {
                    incoming.insert(identifier(e.from)?, p);
                }
                Err(_) => {
                    blame = Some(DkgError::Blame(ErrorCode::DkgInvalidShare, e.from));
                    break;
                }
            }
        }
        let result = match (blame, dkg.refresh) {
            (Some(b), _) => Err(b),
            (None, None) => fdkg::part3(secret, others, &incoming).map_err(|e| {
                match e.culprits().first().and_then(|c| participant_of(&dkg.participants, c)) {
                    Some(c) => DkgError::Blame(ErrorCode::DkgInvalidShare, c),
                    None => err(ErrorCode::DkgInvalidShare, format!("DKG part 3: {e}")),
                }
            }),
            (None, Some(of)) => refreshed_shares(engine, of, dkg.me, secret, others, &incoming, &dkg.participants),
        };
        let (key_package, public) = match result {
            Ok(x) => x,
            Err(e) => {
                map.remove(&id);
                return Err(e);
            }
        };
        let key = crate::keys::key_id_of(&public)?;
        if dkg.refresh.is_some_and(|of| of.key != key) {
            map.remove(&id);
            return Err(err(ErrorCode::Internal, "a refresh changed the group key"));
        }
        let transcript = transcript_hash(&id, dkg, &public)?;
        let (r, s) = engine.custody().identity_sign(&transcript)?;
        let me = dkg.me;
        dkg.phase = Phase::Confirmed(Box::new(Confirmed { key_package, public, transcript, key }));
        Ok(DkgConfirmation { dkg: id, from: me, key, transcript_hash: transcript, signature_r: r, signature_s: s })
    }

    /// Activation: every participant must have confirmed the same transcript with its pinned
    /// identity key. Then the share is sealed and the key stored; otherwise the DKG is aborted.
    pub async fn activate(
        &self,
        engine: &Engine,
        id: DkgId,
        confirmations: &[DkgConfirmation],
    ) -> DkgResult<KeyRecord> {
        let (confirmed, _) = self.confirmed(engine, id, confirmations, false)?;
        engine.add_key(confirmed.clone()).await?;
        self.lock().remove(&id);
        Ok(confirmed)
    }

    /// Activation of a refresh, phase 1: as [`Self::activate`], then the refreshed share (sealed
    /// under the next epoch) is prepared beside the current one, durable but not in force (the
    /// key keeps signing at its epoch until [`Engine::commit_key`]). Returns the new record.
    pub async fn activate_refresh(
        &self,
        engine: &Engine,
        id: DkgId,
        confirmations: &[DkgConfirmation],
    ) -> DkgResult<KeyRecord> {
        let (record, from) = self.confirmed(engine, id, confirmations, true)?;
        let from = from.ok_or_else(|| err(ErrorCode::Internal, "a refresh without its epoch"))?;
        engine.prepare_key(id, record.clone(), from.epoch).await?;
        self.lock().remove(&id);
        Ok(record)
    }

    /// Checks the confirmations of a confirmed DKG (a refresh when `refresh`) and seals its
    /// share (at the next epoch for a refresh). A failed check aborts the DKG.
    fn confirmed(
        &self,
        engine: &Engine,
        id: DkgId,
        confirmations: &[DkgConfirmation],
        refresh: bool,
    ) -> DkgResult<(KeyRecord, Option<RefreshOf>)> {
        let mut map = self.lock();
        let dkg = map.get(&id).ok_or_else(|| err(ErrorCode::DkgUnknown, format!("DKG {id}")))?;
        if dkg.refresh.is_some() != refresh {
            let which =
                if refresh { "a DKG activates with DkgActivate" } else { "a refresh activates with RefreshActivate" };
            return Err(err(ErrorCode::DkgPhase, which));
        }
        let Phase::Confirmed(confirmed) = &dkg.phase else {
            return Err(err(ErrorCode::DkgPhase, "activation is allowed after finish"));
        };
        let Confirmed { key_package, public, transcript, key } = confirmed.as_ref();
        if let Err(e) = check_confirmations(id, dkg, transcript, key, confirmations) {
            map.remove(&id);
            return Err(e);
        }
        let plain =
            Zeroizing::new(key_package.serialize().map_err(|e| frost_err(ErrorCode::Internal, "key package", e))?);
        let epoch = match dkg.refresh {
            None => 0,
            Some(of) => of.epoch.checked_add(1).ok_or_else(|| err(ErrorCode::Internal, "key epoch overflow"))?,
        };
        let mut record = KeyRecord::new(public.clone(), BTreeMap::new())?;
        let blob = sealing::seal(engine.custody(), &record.seal_context(dkg.me, epoch), &plain)?;
        record.seats.insert(dkg.me, SealedSeat { blob, epoch });
        Ok((record, dkg.refresh))
    }

    /// The pinned group (from this enclave's configuration), if any.
    pub fn pins(&self) -> Option<&BTreeMap<ParticipantId, Vec<u8>>> {
        self.pinned.as_ref()
    }

    /// Abandons a DKG; its secrets are wiped.
    pub fn abort(&self, id: DkgId) -> bool {
        self.lock().remove(&id).is_some()
    }
}

fn check_confirmations(
    id: DkgId,
    dkg: &Dkg,
    transcript: &[u8; 32],
    key: &KeyId,
    confirmations: &[DkgConfirmation],
) -> DkgResult<()> {
    let mut from: Vec<ParticipantId> = confirmations.iter().map(|c| c.from).collect();
    from.sort();
    from.dedup();
    if from.len() != confirmations.len() || from != dkg.participants.keys().copied().collect::<Vec<_>>() {
        return Err(err(ErrorCode::DkgTranscriptMismatch, "activation needs one confirmation from every participant"));
    }
    for c in confirmations {
        if c.dkg != id || c.transcript_hash != *transcript || c.key != *key {
            return Err(err(
                ErrorCode::DkgTranscriptMismatch,
                format!("participant {} saw a different transcript", c.from),
            ));
        }
        if !verify_identity_signature(&dkg.participants[&c.from], transcript, &c.signature_r, &c.signature_s) {
            return Err(err(
                ErrorCode::DkgTranscriptMismatch,
                format!("participant {}'s confirmation does not verify", c.from),
            ));
        }
    }
    Ok(())
}

/// Refresh part 3: the held share plus everyone's zero-sharing contributions. The old share is
/// unsealed here and dropped (wiped) on return. A contribution that fails its sender's
/// commitment names the sender.
fn refreshed_shares(
    engine: &Engine,
    of: RefreshOf,
    me: ParticipantId,
    secret: &round2::SecretPackage,
    others: &BTreeMap<Identifier, round1::Package>,
    incoming: &BTreeMap<Identifier, round2::Package>,
    participants: &BTreeMap<ParticipantId, Vec<u8>>,
) -> DkgResult<(KeyPackage, PublicKeyPackage)> {
    let record = engine.key(&of.key)?;
    if record.epoch() != of.epoch {
        return Err(err(
            ErrorCode::KeyEpochChanged,
            format!("key {} left epoch {} during the refresh", of.key, of.epoch),
        ));
    }
    let old = record.unseal(engine.custody(), me)?;
    let refreshed = refresh::refresh_dkg_shares(secret, others, incoming, record.public.clone(), old);
    refreshed.map_err(|e| {
        let me_id = identifier(me).ok();
        let culprit = incoming
            .iter()
            .find(|(from, share)| {
                let commitment = others.get(from).map(|p| p.commitment());
                !matches!((me_id, commitment), (Some(i), Some(c)) if zero_sharing_holds(i, share, c))
            })
            .and_then(|(from, _)| participant_of(participants, from));
        match culprit {
            Some(c) => DkgError::Blame(ErrorCode::DkgInvalidShare, c),
            None => err(ErrorCode::DkgInvalidShare, format!("refresh part 3: {e}")),
        }
    })
}

/// Whether `share` = z(i) for the zero-constant polynomial committed to by `commitment`
/// (`[a_1 G, .., a_{t-1} G]`): FROST's VSS check of `z(i) / i` against the commitment shifted
/// down one degree, since `z(i) G = i * sum_k a_{k+1} i^k G`.
fn zero_sharing_holds(
    i: Identifier,
    share: &round2::Package,
    commitment: &frost_secp256k1_tr::keys::VerifiableSecretSharingCommitment,
) -> bool {
    use frost_core::Field;
    use frost_secp256k1_tr::keys::{SecretShare, SigningShare};
    type F = frost_secp256k1_tr::Secp256K1ScalarField;
    let scalar = |bytes: Vec<u8>| <[u8; 32]>::try_from(bytes).ok().and_then(|b| F::deserialize(&b).ok());
    let (Some(x), Some(z)) = (scalar(i.serialize()), scalar(share.signing_share().serialize())) else {
        return false;
    };
    let Ok(x_inv) = F::invert(&x) else { return false };
    let mut product = z * x_inv;
    let shifted = Zeroizing::new(F::serialize(&product));
    {
        use zeroize::Zeroize;
        let mut z = z;
        z.zeroize();
        product.zeroize();
    }
    let Ok(shifted) = SigningShare::deserialize(shifted.as_slice()) else { return false };
    SecretShare::new(i, shifted, commitment.clone()).verify().is_ok()
}

fn participant_of(participants: &BTreeMap<ParticipantId, Vec<u8>>, id: &Identifier) -> Option<ParticipantId> {
    participants.keys().copied().find(|p| identifier(*p).is_ok_and(|i| &i == id))
}

fn round1_package(dkg: DkgId, from: ParticipantId, bytes: Vec<u8>) -> Result<DkgRound1Package, Error> {
    Ok(DkgRound1Package {
        dkg,
        from,
        package: DkgPackageBytes::new(bytes).map_err(|e| Error::new(ErrorCode::Internal, e))?,
    })
}

/// SHA-256 over everything every participant must agree on.
fn transcript_hash(id: &DkgId, dkg: &Dkg, public: &PublicKeyPackage) -> Result<[u8; 32], Error> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    match dkg.refresh {
        None => ctx.update(b"frostgate/dkg-transcript/v1"),
        Some(of) => {
            ctx.update(b"frostgate/refresh-transcript/v1");
            ctx.update(of.key.as_bytes());
            ctx.update(&of.epoch.to_be_bytes());
        }
    }
    ctx.update(id.as_bytes());
    ctx.update(&dkg.threshold.to_be_bytes());
    for (p, key) in &dkg.participants {
        ctx.update(&p.get().to_be_bytes());
        ctx.update(key);
        let pkg = dkg.round1.get(p).ok_or_else(|| Error::new(ErrorCode::Internal, "missing round-1 package"))?;
        ctx.update(&(pkg.len() as u32).to_be_bytes());
        ctx.update(pkg);
    }
    ctx.update(&public.serialize().map_err(|e| frost_err(ErrorCode::Internal, "public key package", e))?);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    Ok(out)
}

pub(crate) fn encrypt_envelope(key: &Zeroizing<[u8; 32]>, aad: &[u8], plain: &[u8]) -> Result<DkgCiphertext, Error> {
    let mut nonce = [0u8; 12];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
        .map_err(|_| Error::new(ErrorCode::Internal, "randomness"))?;
    let mut buf = plain.to_vec();
    aead(key)?
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut buf)
        .map_err(|_| Error::new(ErrorCode::Internal, "AES-GCM seal"))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&buf);
    // The plaintext copy inside `buf` was overwritten in place by ciphertext.
    DkgCiphertext::new(out).map_err(|e| Error::new(ErrorCode::Internal, e))
}

pub(crate) fn decrypt_envelope(key: &Zeroizing<[u8; 32]>, aad: &[u8], ciphertext: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let (nonce, body) = (ciphertext.get(..12)?, ciphertext.get(12..)?);
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut buf = Zeroizing::new(body.to_vec());
    let len = aead(key).ok()?.open_in_place(nonce, Aad::from(aad), &mut buf).ok()?.len();
    buf.truncate(len);
    Some(buf)
}

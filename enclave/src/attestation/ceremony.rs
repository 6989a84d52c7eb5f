//! A ceremony's attestation (DKG, refresh, repair): this enclave's challenge for it, and the
//! peers it verified against its own `[group]` pins.
//!
//! The exchange: every participant draws a challenge (`CeremonyChallenge`); every participant
//! attests over [`ceremony_binding`] of the ceremony id and all the challenges
//! (`CeremonyAttest`); every participant checks its peers' documents (`CeremonyPeers`) with its
//! own challenge among those bound, so a document is fresh to each verifier.
//!
//! Invariants: a peer pinned with `attestation` in this enclave's `[group]` must have verified
//! in this ceremony before any of the ceremony's secrets leave for it or are taken from it
//! ([`Ceremonies::require`], called by `DkgRound2`, `RepairStart` and `RepairFinish`); the pins
//! come from this enclave's configuration alone, never from the host; a challenge lives in
//! memory only, is bounded ([`MAX_CEREMONIES`]) and expires with the DKG TTL.

use crate::dkg::DkgError;
use frostgate_attest::peer::{ceremony_binding, verify_attestation, Pins};
use frostgate_common::bounded::Signers;
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::ids::{DkgId, ParticipantId};
use frostgate_common::protocol::{
    CeremonyChallenge, CeremonyChallenged, CeremonyKind, CeremonyPeers, CeremonyVerified,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Most ceremonies with a live challenge: as many DKGs and repairs as the enclave runs at once.
pub const MAX_CEREMONIES: usize = crate::dkg::MAX_DKGS + crate::repair::MAX_REPAIRS;

struct Ceremony {
    kind: CeremonyKind,
    me: ParticipantId,
    challenge: [u8; 32],
    verified: BTreeSet<ParticipantId>,
    started: Instant,
}

/// The ceremonies' challenges and verified peers.
pub struct Ceremonies {
    map: Mutex<HashMap<DkgId, Ceremony>>,
    /// `[group]` participants pinned with `attestation`.
    pins: BTreeMap<ParticipantId, Pins>,
    ttl: Duration,
}

impl std::fmt::Debug for Ceremonies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ceremonies").field("pinned", &self.pins.keys().collect::<Vec<_>>()).finish_non_exhaustive()
    }
}

impl Default for Ceremonies {
    fn default() -> Self {
        Ceremonies::new(BTreeMap::new(), crate::dkg::DEFAULT_DKG_TTL)
    }
}

fn config(msg: impl std::fmt::Display) -> DkgError {
    DkgError::Error(Error::new(ErrorCode::DkgConfigInvalid, msg))
}

impl Ceremonies {
    /// Ceremonies checking `pins` (from this enclave's `[group]`); a challenge older than `ttl`
    /// is dropped.
    pub fn new(pins: BTreeMap<ParticipantId, Pins>, ttl: Duration) -> Ceremonies {
        Ceremonies { map: Mutex::new(HashMap::new()), pins, ttl }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<DkgId, Ceremony>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether any peer is pinned (else no ceremony needs an attestation here).
    pub fn any_pinned(&self) -> bool {
        !self.pins.is_empty()
    }

    /// Drops challenges older than the TTL. Returns how many.
    pub fn expire(&self, now: Instant) -> usize {
        let mut map = self.lock();
        let before = map.len();
        map.retain(|_, c| now.saturating_duration_since(c.started) < self.ttl);
        before - map.len()
    }

    /// Forgets ceremony `ceremony` of `kind` (ended or aborted). Whether it was here.
    pub fn end(&self, ceremony: DkgId, kind: CeremonyKind) -> bool {
        let mut map = self.lock();
        match map.get(&ceremony) {
            Some(c) if c.kind == kind => map.remove(&ceremony).is_some(),
            _ => false,
        }
    }

    /// Step 1: this enclave's challenge for the ceremony (the same one when asked again with the
    /// same kind and participant).
    pub fn challenge(&self, r: &CeremonyChallenge) -> Result<CeremonyChallenged, Error> {
        let mut map = self.lock();
        if let Some(c) = map.get(&r.ceremony) {
            if c.kind != r.kind || c.me != r.me {
                return Err(Error::new(ErrorCode::DkgConfigInvalid, "this ceremony id is already attested otherwise"));
            }
            return Ok(CeremonyChallenged { ceremony: r.ceremony, from: c.me, challenge: c.challenge });
        }
        if map.len() >= MAX_CEREMONIES {
            let now = Instant::now();
            map.retain(|_, c| now.saturating_duration_since(c.started) < self.ttl);
        }
        if map.len() >= MAX_CEREMONIES {
            return Err(Error::new(
                ErrorCode::RegistryFull,
                format!(
                    "{MAX_CEREMONIES} ceremonies in progress; the oldest expires {}s after its start",
                    self.ttl.as_secs()
                ),
            ));
        }
        let mut challenge = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut challenge)
            .map_err(|_| Error::new(ErrorCode::Internal, "randomness"))?;
        let ceremony =
            Ceremony { kind: r.kind, me: r.me, challenge, verified: BTreeSet::new(), started: Instant::now() };
        map.insert(r.ceremony, ceremony);
        Ok(CeremonyChallenged { ceremony: r.ceremony, from: r.me, challenge })
    }

    /// The nonce of the ceremony's documents over `challenges`, which must be ascending, all of
    /// this ceremony, and hold this enclave's own challenge.
    pub fn binding(&self, ceremony: DkgId, challenges: &[CeremonyChallenged]) -> Result<[u8; 32], Error> {
        let map = self.lock();
        let mine = map.get(&ceremony).ok_or_else(|| {
            Error::new(ErrorCode::DkgUnknown, format!("no challenge for ceremony {ceremony} here (ask for one first)"))
        })?;
        let bad = |m: &str| Error::new(ErrorCode::DkgConfigInvalid, format!("ceremony {ceremony}: {m}"));
        if challenges.iter().any(|c| c.ceremony != ceremony) {
            return Err(bad("a challenge of another ceremony"));
        }
        if !challenges.windows(2).all(|w| w[0].from < w[1].from) {
            return Err(bad("the challenges are not ascending by participant, once each"));
        }
        if !challenges.iter().any(|c| c.from == mine.me && c.challenge == mine.challenge) {
            return Err(bad("this enclave's own challenge is not among those bound"));
        }
        let list: Vec<(u16, [u8; 32])> = challenges.iter().map(|c| (c.from.get(), c.challenge)).collect();
        Ok(ceremony_binding(ceremony.as_bytes(), &list))
    }

    /// Step 3: checks every pinned peer among the challenges against its pins at `now` (seconds
    /// since the Unix epoch, this enclave's clock). The first that fails is blamed.
    pub fn verify_peers(&self, r: &CeremonyPeers, now: u64) -> Result<CeremonyVerified, DkgError> {
        let challenges = r.challenges.as_inner();
        let nonce = self.binding(r.ceremony, challenges).map_err(DkgError::Error)?;
        // What was bound: the verified peers count only for this very challenge (not for a
        // ceremony of the same id drawn again while the documents were checked).
        let bound = self.lock().get(&r.ceremony).map(|c| (c.kind, c.me, c.challenge));
        let (_, me, _) = bound.ok_or_else(|| config("ceremony gone"))?;
        let mut verified = Vec::new();
        for peer in challenges.iter().map(|c| c.from).filter(|p| *p != me) {
            let Some(pins) = self.pins.get(&peer) else { continue };
            let blame = |check: &str, detail: &str| {
                tracing::warn!(ceremony = %r.ceremony, %peer, check, detail, "peer attestation refused");
                DkgError::Blame(ErrorCode::AttestationInvalid, peer)
            };
            let Some(a) = r.attestations.as_inner().iter().find(|a| a.from == peer) else {
                return Err(blame("provider", "no attestation from a pinned peer"));
            };
            if let Err(refusal) = verify_attestation(&a.attestation, pins, &nonce, now) {
                return Err(blame(refusal.check.name(), &refusal.detail));
            }
            verified.push(peer);
        }
        let mut map = self.lock();
        let c = map
            .get_mut(&r.ceremony)
            .filter(|c| Some((c.kind, c.me, c.challenge)) == bound)
            .ok_or_else(|| config("the ceremony ended or was drawn again while its peers were checked"))?;
        c.verified.extend(verified.iter().copied());
        let verified = Signers::new(verified).map_err(|e| DkgError::Error(Error::new(ErrorCode::Internal, e)))?;
        Ok(CeremonyVerified { ceremony: r.ceremony, verified })
    }

    /// Before a ceremony's secret-bearing step: every pinned one of `peers` verified in it.
    pub fn require(
        &self,
        ceremony: DkgId,
        kind: CeremonyKind,
        peers: impl IntoIterator<Item = ParticipantId>,
    ) -> Result<(), DkgError> {
        let map = self.lock();
        let held = map.get(&ceremony).filter(|c| c.kind == kind);
        for peer in peers.into_iter().filter(|p| self.pins.contains_key(p)) {
            if !held.is_some_and(|c| c.verified.contains(&peer)) {
                tracing::warn!(%ceremony, %peer, "a pinned peer has not attested itself in this ceremony");
                return Err(DkgError::Blame(ErrorCode::AttestationInvalid, peer));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use frostgate_common::bounded::{AttestationDocBytes, BootKeyBytes};
    use frostgate_common::protocol::PeerAttestations;
    use frostgate_common::protocol::{Attestation, AttestationProvider, CeremonyChallenges, PeerAttestation};

    fn pid(i: u16) -> ParticipantId {
        ParticipantId::new(i).expect("id")
    }

    /// Participant 3 pinned (its pins are never reached by these tests' documents).
    fn ceremonies() -> Ceremonies {
        let pins = Pins { identity_key: vec![4; 65], root: vec![1, 2, 3], pcrs: BTreeMap::new(), allow_debug: false };
        Ceremonies::new(BTreeMap::from([(pid(3), pins)]), Duration::from_secs(60))
    }

    fn draw(c: &Ceremonies, id: DkgId, me: u16) -> CeremonyChallenged {
        c.challenge(&CeremonyChallenge { ceremony: id, kind: CeremonyKind::Dkg, me: pid(me) }).expect("challenge")
    }

    fn challenged(id: DkgId, from: u16, challenge: [u8; 32]) -> CeremonyChallenged {
        CeremonyChallenged { ceremony: id, from: pid(from), challenge }
    }

    fn blamed(r: Result<impl std::fmt::Debug, DkgError>) -> (ErrorCode, u16) {
        match r {
            Err(DkgError::Blame(code, p)) => (code, p.get()),
            other => panic!("not a blame: {other:?}"),
        }
    }

    fn unattested() -> Attestation {
        Attestation {
            provider: AttestationProvider::None,
            document: AttestationDocBytes::new(Vec::new()).expect("empty"),
            boot_key: BootKeyBytes::new(Vec::new()).expect("empty"),
            certification_r: [0; 32],
            certification_s: [0; 32],
        }
    }

    #[test]
    fn a_pinned_peer_that_never_attested_is_blamed_before_any_secret_step() {
        let c = ceremonies();
        let id = DkgId::from_bytes([1; 16]);
        // No exchange at all (a coordinator that skipped it): refused, naming the pinned peer.
        assert_eq!(blamed(c.require(id, CeremonyKind::Dkg, [pid(2), pid(3)])), (ErrorCode::AttestationInvalid, 3));
        draw(&c, id, 1);
        assert_eq!(blamed(c.require(id, CeremonyKind::Dkg, [pid(3)])), (ErrorCode::AttestationInvalid, 3));
        // Unpinned peers need nothing.
        c.require(id, CeremonyKind::Dkg, [pid(2)]).expect("unpinned");
    }

    #[test]
    fn a_pinned_peer_without_a_document_or_provider_is_blamed() {
        let c = ceremonies();
        let id = DkgId::from_bytes([2; 16]);
        let mine = draw(&c, id, 1);
        let list = vec![mine, challenged(id, 2, [5; 32]), challenged(id, 3, [6; 32])];
        let peers = |attestations: Vec<PeerAttestation>| CeremonyPeers {
            ceremony: id,
            challenges: CeremonyChallenges::new(list.clone()).expect("bound"),
            attestations: PeerAttestations::new(attestations).expect("bound"),
        };
        assert_eq!(blamed(c.verify_peers(&peers(Vec::new()), 0)), (ErrorCode::AttestationInvalid, 3));
        let none = PeerAttestation { from: pid(3), attestation: unattested() };
        assert_eq!(blamed(c.verify_peers(&peers(vec![none]), 0)), (ErrorCode::AttestationInvalid, 3));
        assert_eq!(blamed(c.require(id, CeremonyKind::Dkg, [pid(3)])), (ErrorCode::AttestationInvalid, 3));
    }

    #[test]
    fn the_binding_needs_this_enclaves_own_fresh_challenge_of_this_ceremony() {
        let c = ceremonies();
        let id = DkgId::from_bytes([3; 16]);
        let code = |r: Result<[u8; 32], Error>| r.expect_err("refused").code();
        assert_eq!(code(c.binding(id, &[])), ErrorCode::DkgUnknown);
        let mine = draw(&c, id, 2);
        // Asked again: the same challenge; otherwise (another participant or kind) refused.
        assert_eq!(draw(&c, id, 2), mine);
        let other = CeremonyChallenge { ceremony: id, kind: CeremonyKind::Repair, me: pid(2) };
        assert_eq!(c.challenge(&other).expect_err("kind").code(), ErrorCode::DkgConfigInvalid);
        let one = challenged(id, 1, [5; 32]);
        c.binding(id, &[one, mine]).expect("bound");
        assert_eq!(code(c.binding(id, &[one])), ErrorCode::DkgConfigInvalid, "own challenge missing");
        assert_eq!(code(c.binding(id, &[one, challenged(id, 2, [0; 32])])), ErrorCode::DkgConfigInvalid, "stale");
        assert_eq!(code(c.binding(id, &[mine, one])), ErrorCode::DkgConfigInvalid, "not ascending");
        let elsewhere = challenged(DkgId::from_bytes([9; 16]), 1, [5; 32]);
        assert_eq!(code(c.binding(id, &[elsewhere, mine])), ErrorCode::DkgConfigInvalid, "another ceremony");
        // A verification kept for a DKG does not serve a repair of the same id.
        assert_eq!(blamed(c.require(id, CeremonyKind::Repair, [pid(3)])).0, ErrorCode::AttestationInvalid);
    }

    #[test]
    fn challenges_are_bounded_and_expire() {
        let c = Ceremonies::new(BTreeMap::new(), Duration::from_secs(60));
        for i in 0..MAX_CEREMONIES {
            draw(&c, DkgId::from_bytes([i as u8; 16]), 1);
        }
        let full = CeremonyChallenge { ceremony: DkgId::from_bytes([255; 16]), kind: CeremonyKind::Dkg, me: pid(1) };
        assert_eq!(c.challenge(&full).expect_err("full").code(), ErrorCode::RegistryFull);
        assert_eq!(c.expire(Instant::now() + Duration::from_secs(61)), MAX_CEREMONIES);
        c.challenge(&full).expect("room again");
    }
}

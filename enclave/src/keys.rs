//! Group keys held by this enclave: public key packages, sealed seats, and the definition of
//! "internal key" (the output key is [`crate::taproot`]'s).
//!
//! Definition (BIP341): the **internal key** of a group is the x-only encoding of its
//! `PublicKeyPackage` verifying key, whatever produced it (DKG, whose part 3 already applies the
//! ciphersuite's key-only tweak, or the dev dealer, which applies none); it is also the key id.
//!
//! Invariant: a seat's `KeyPackage` exists in plaintext only between unseal and the end of the
//! round that needed it (it is `ZeroizeOnDrop`); at rest it is a blob sealed in the HSM.

use crate::custody::Custody;
use crate::sealing::{self, SealContext, SealedKind};
use frost_secp256k1_tr::keys::{KeyPackage, PublicKeyPackage};
use frost_secp256k1_tr::Identifier;
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::ids::{KeyId, ParticipantId};
use std::collections::BTreeMap;

/// A sealed key package for one seat.
#[derive(Debug, Clone)]
pub struct SealedSeat {
    /// The sealed `KeyPackage` encoding.
    pub blob: Vec<u8>,
    /// The key epoch bound into the blob.
    pub epoch: u64,
}

/// One group key as this enclave holds it.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    /// The key id (the internal key).
    pub key_id: KeyId,
    /// The public key package (untweaked).
    pub public: PublicKeyPackage,
    /// Signatures need this many participants.
    pub threshold: u16,
    /// Every participant and its FROST identifier.
    pub participants: BTreeMap<ParticipantId, Identifier>,
    /// The seats held here.
    pub seats: BTreeMap<ParticipantId, SealedSeat>,
}

/// Maps a FROST error to a typed error.
pub fn frost_err(code: ErrorCode, what: &str, e: frost_secp256k1_tr::Error) -> Error {
    Error::new(code, format!("{what}: {e}"))
}

/// The FROST identifier of a participant id.
pub fn identifier(p: ParticipantId) -> Result<Identifier, Error> {
    Identifier::try_from(p.get()).map_err(|e| frost_err(ErrorCode::Internal, "identifier", e))
}

/// The key id (internal key) of a public key package.
pub fn key_id_of(public: &PublicKeyPackage) -> Result<KeyId, Error> {
    crate::taproot::x_only(public.verifying_key()).map(KeyId::from_bytes)
}

impl KeyRecord {
    /// Builds a record from a public key package and the sealed seats held here.
    pub fn new(public: PublicKeyPackage, seats: BTreeMap<ParticipantId, SealedSeat>) -> Result<KeyRecord, Error> {
        let key_id = key_id_of(&public)?;
        let threshold = public
            .min_signers()
            .ok_or_else(|| Error::new(ErrorCode::Internal, "public key package lacks min_signers"))?;
        let mut participants = BTreeMap::new();
        for id in public.verifying_shares().keys() {
            let p = (1..=frostgate_common::limits::MAX_PARTICIPANTS)
                .find(|&n| Identifier::try_from(n).is_ok_and(|i| &i == id))
                .ok_or_else(|| {
                    Error::new(ErrorCode::Internal, "participant identifier outside 1..=MAX_PARTICIPANTS")
                })?;
            participants.insert(ParticipantId::new(p).map_err(|e| Error::new(ErrorCode::Internal, e))?, *id);
        }
        Ok(KeyRecord { key_id, public, threshold, participants, seats })
    }

    /// The key epoch of the seats held here (0 until the first refresh; every seat of a record
    /// has the same epoch).
    pub fn epoch(&self) -> u64 {
        self.seats.values().map(|s| s.epoch).max().unwrap_or(0)
    }

    /// The seal context of a seat.
    pub fn seal_context(&self, seat: ParticipantId, epoch: u64) -> SealContext {
        SealContext { kind: SealedKind::KeyShare, key_id: self.key_id, participant: seat, epoch }
    }

    /// Unseals a seat's key package. Lives only as long as the caller keeps it.
    pub fn unseal(&self, custody: &Custody, seat: ParticipantId) -> Result<KeyPackage, Error> {
        let sealed = self.seats.get(&seat).ok_or_else(|| Error::new(ErrorCode::SeatNotHeld, format!("seat {seat}")))?;
        let plain = sealing::unseal(custody, &self.seal_context(seat, sealed.epoch), &sealed.blob)?;
        KeyPackage::deserialize(&plain).map_err(|e| frost_err(ErrorCode::UnsealFailed, "key package", e))
    }
}

/// Development only: a trusted dealer creates a key whose every seat is held by this enclave.
/// Each key package is sealed like any other share.
#[cfg(feature = "dev-dealer")]
pub fn dev_dealer(custody: &Custody, threshold: u16, participants: u16) -> Result<KeyRecord, Error> {
    use frost_secp256k1_tr::keys::{generate_with_dealer, IdentifierList};
    use zeroize::Zeroizing;
    if participants > frostgate_common::limits::MAX_PARTICIPANTS || threshold < 2 || threshold > participants {
        return Err(Error::new(
            ErrorCode::SignerSetInvalid,
            format!("{threshold}-of-{participants} is not a valid group"),
        ));
    }
    let (shares, public) = generate_with_dealer(participants, threshold, IdentifierList::Default, rand_core::OsRng)
        .map_err(|e| frost_err(ErrorCode::SigningFailed, "dealer", e))?;
    let mut record = KeyRecord::new(public, BTreeMap::new())?;
    let ids: Vec<(ParticipantId, Identifier)> = record.participants.iter().map(|(p, i)| (*p, *i)).collect();
    for (seat, id) in ids {
        let share = shares.get(&id).ok_or_else(|| Error::new(ErrorCode::Internal, "dealer share missing"))?.clone();
        let package = KeyPackage::try_from(share).map_err(|e| frost_err(ErrorCode::Internal, "key package", e))?;
        let plain = Zeroizing::new(package.serialize().map_err(|e| frost_err(ErrorCode::Internal, "key package", e))?);
        let blob = sealing::seal(custody, &record.seal_context(seat, 0), &plain)?;
        record.seats.insert(seat, SealedSeat { blob, epoch: 0 });
    }
    Ok(record)
}

//! Backup of one seat to the operator's recovery key, and its restore into a fresh enclave.
//!
//! Format: ECDH on secp256k1 between an ephemeral key `e` and the recovery key `R` (both x-only,
//! even y), `K = HMAC-SHA256(SHA-256(ECDH point), "frostgate/backup/v1" | E | R)`, then
//! AES-256-GCM with a random nonce and associated data binding the key id, the seat, the epoch,
//! SHA-256 of the public key package, `R` and `E`.
//!
//! Invariants:
//! - The plaintext share exists only inside an enclave (`Zeroizing`); the backup leaves as
//!   ciphertext to the recovery public key pinned in the enclave's own configuration (a host
//!   cannot substitute its own key).
//! - The recovery private key is read only by the enclave that restores, from a file private to
//!   its user (like the PIN), and wiped after use.
//! - A restore stores the share only if it is the seat's (its verifying share is the package's),
//!   of the epoch the key's threshold of pinned peers state they hold (`crate::epoch_statements`:
//!   a stale backup is refused here, not only by the CLI), for a key not held yet, and after
//!   closing the policy's windows for one window length: the
//!   counters of the lost store are unknown, so they count as exhausted.

use crate::keys::{frost_err, identifier, key_id_of, KeyRecord, SealedSeat};
use crate::rounds::Engine;
use bitcoin::secp256k1::{ecdh::SharedSecret, Keypair, Parity, PublicKey, Secp256k1, SecretKey, XOnlyPublicKey};
use frost_secp256k1_tr::keys::{KeyPackage, PublicKeyPackage};
use frostgate_common::bounded::{DkgCiphertext, PublicKeyPackageBytes};
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::ids::KeyId;
use frostgate_common::protocol::SeatBackup;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use zeroize::Zeroizing;

const DOMAIN: &[u8] = b"frostgate/backup/v1";

/// `[recovery]`: the operator's recovery key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecoveryConfig {
    /// The recovery public key (x-only secp256k1, hex): backups are encrypted to it.
    pub public_key: String,
    /// The recovery private key (hex, 32 bytes), read only by a restore; only on the node that
    /// restores, and only while it does.
    pub private_key_file: Option<PathBuf>,
}

/// The recovery key as configured.
#[derive(Debug, Clone)]
pub struct Recovery {
    public: XOnlyPublicKey,
    private_key_file: Option<PathBuf>,
}

fn invalid(msg: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::BackupInvalid, msg)
}

fn config_err(msg: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::ConfigInvalid, msg)
}

impl Recovery {
    /// Checks `[recovery]`.
    pub fn from_config(c: &RecoveryConfig) -> Result<Recovery, Error> {
        let bytes = hex::decode(&c.public_key).map_err(|e| config_err(format!("[recovery] public_key: {e}")))?;
        let public = XOnlyPublicKey::from_slice(&bytes)
            .map_err(|e| config_err(format!("[recovery] public_key is not an x-only secp256k1 key: {e}")))?;
        Ok(Recovery { public, private_key_file: c.private_key_file.clone() })
    }

    /// Reads the private key (file private to this user), checks it is the configured one.
    fn private_key(&self) -> Result<SecretKey, Error> {
        use std::io::Read;
        use std::os::unix::fs::MetadataExt;
        let path = self.private_key_file.as_ref().ok_or_else(|| {
            config_err(
                "no [recovery] private_key_file: this enclave cannot restore (configure it on the restoring node)",
            )
        })?;
        let mut file = std::fs::File::open(path).map_err(|e| config_err(format!("{}: {e}", path.display())))?;
        let meta = file.metadata().map_err(|e| config_err(format!("{}: {e}", path.display())))?;
        crate::private_file::private_to_me(path, "recovery key file", meta.uid(), meta.mode())?;
        let mut text = Zeroizing::new(String::new());
        file.read_to_string(&mut text).map_err(|e| config_err(format!("{}: {e}", path.display())))?;
        let bytes =
            Zeroizing::new(hex::decode(text.trim()).map_err(|_| config_err("the recovery key file is not hex"))?);
        let secret =
            SecretKey::from_slice(&bytes).map_err(|_| config_err("the recovery key file holds no valid key"))?;
        let (public, parity) = secret.x_only_public_key(&Secp256k1::signing_only());
        if public != self.public {
            return Err(config_err("the recovery key file does not match [recovery] public_key"));
        }
        if parity == Parity::Odd {
            let mut odd = secret;
            let even = odd.negate();
            odd.non_secure_erase();
            return Ok(even);
        }
        Ok(secret)
    }
}

fn package_hash(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    out
}

/// The AES key and the associated data of a backup.
fn keys(shared: &SharedSecret, b: &SeatBackup) -> Result<(LessSafeKey, Vec<u8>), Error> {
    let secret = Zeroizing::new(shared.secret_bytes());
    let mac = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_ref());
    let mut info = DOMAIN.to_vec();
    info.extend_from_slice(&b.ephemeral_public_key);
    info.extend_from_slice(&b.recovery_public_key);
    let tag = ring::hmac::sign(&mac, &info);
    let key = UnboundKey::new(&AES_256_GCM, tag.as_ref())
        .map(LessSafeKey::new)
        .map_err(|_| Error::new(ErrorCode::Internal, "AES-256-GCM key"))?;
    let mut aad = DOMAIN.to_vec();
    aad.extend_from_slice(b.key.as_bytes());
    aad.extend_from_slice(&b.seat.get().to_be_bytes());
    aad.extend_from_slice(&b.epoch.to_be_bytes());
    aad.extend_from_slice(&package_hash(b.public_key_package.as_inner()));
    aad.extend_from_slice(&b.recovery_public_key);
    aad.extend_from_slice(&b.ephemeral_public_key);
    Ok((key, aad))
}

/// A secp256k1 secret key from the OS CSPRNG (the draw is wiped).
fn random_secret_key() -> Result<SecretKey, Error> {
    let mut random = Zeroizing::new([0u8; 32]);
    loop {
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), random.as_mut())
            .map_err(|_| Error::new(ErrorCode::Internal, "randomness"))?;
        if let Ok(k) = SecretKey::from_slice(random.as_ref()) {
            return Ok(k);
        }
    }
}

fn even(x: &XOnlyPublicKey) -> PublicKey {
    x.public_key(Parity::Even)
}

/// Encrypts the seat this enclave holds of `key` to the pinned recovery key.
pub fn backup(engine: &Engine, recovery: Option<&Recovery>, key: KeyId) -> Result<SeatBackup, Error> {
    let recovery =
        recovery.ok_or_else(|| config_err("no [recovery] public_key is pinned in this enclave's configuration"))?;
    let record = engine.key(&key)?;
    let seat = match record.seats.keys().copied().collect::<Vec<_>>()[..] {
        [seat] => seat,
        _ => return Err(Error::new(ErrorCode::SeatNotHeld, "a backup is of a key held with exactly one seat")),
    };
    let plain = Zeroizing::new(
        record
            .unseal(engine.custody(), seat)?
            .serialize()
            .map_err(|e| frost_err(ErrorCode::Internal, "key package", e))?,
    );
    let secp = Secp256k1::new();
    let ephemeral = random_secret_key()?;
    let (e_public, parity) = Keypair::from_secret_key(&secp, &ephemeral).x_only_public_key();
    let mut ephemeral = if parity == Parity::Odd {
        let mut drawn = ephemeral;
        let negated = drawn.negate();
        drawn.non_secure_erase();
        negated
    } else {
        ephemeral
    };
    let public = record.public.serialize().map_err(|e| frost_err(ErrorCode::Internal, "public key package", e))?;
    let mut b = SeatBackup {
        key,
        seat,
        epoch: record.epoch(),
        public_key_package: PublicKeyPackageBytes::new(public).map_err(|e| Error::new(ErrorCode::Internal, e))?,
        recovery_public_key: recovery.public.serialize(),
        ephemeral_public_key: e_public.serialize(),
        ciphertext: DkgCiphertext::new(Vec::new()).map_err(|e| Error::new(ErrorCode::Internal, e))?,
    };
    let shared = SharedSecret::new(&even(&recovery.public), &ephemeral);
    ephemeral.non_secure_erase();
    let (aead, aad) = keys(&shared, &b)?;
    let mut nonce = [0u8; 12];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
        .map_err(|_| Error::new(ErrorCode::Internal, "randomness"))?;
    let mut buf = plain.to_vec();
    aead.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(&aad), &mut buf)
        .map_err(|_| Error::new(ErrorCode::Internal, "AES-GCM seal"))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&buf);
    b.ciphertext = DkgCiphertext::new(out).map_err(|e| Error::new(ErrorCode::Internal, e))?;
    Ok(b)
}

/// Opens a backup with the recovery private key and checks the share is the seat's.
fn open(recovery: &Recovery, b: &SeatBackup) -> Result<(KeyPackage, PublicKeyPackage), Error> {
    if b.recovery_public_key != recovery.public.serialize() {
        return Err(invalid("the backup is encrypted to another recovery key than [recovery] public_key"));
    }
    let public = PublicKeyPackage::deserialize(b.public_key_package.as_inner())
        .map_err(|e| frost_err(ErrorCode::BackupInvalid, "public key package", e))?;
    if key_id_of(&public)? != b.key {
        return Err(invalid("the backup's public key package is another key's"));
    }
    let ephemeral = XOnlyPublicKey::from_slice(&b.ephemeral_public_key).map_err(|_| invalid("ephemeral key"))?;
    let mut secret = recovery.private_key()?;
    let shared = SharedSecret::new(&even(&ephemeral), &secret);
    secret.non_secure_erase();
    let (aead, aad) = keys(&shared, b)?;
    let sealed = b.ciphertext.as_inner();
    let (nonce, body) = (sealed.get(..12), sealed.get(12..));
    let nonce = nonce.and_then(|n| Nonce::try_assume_unique_for_key(n).ok()).ok_or_else(|| invalid("truncated"))?;
    let mut buf = Zeroizing::new(body.unwrap_or_default().to_vec());
    let len = aead
        .open_in_place(nonce, Aad::from(&aad), &mut buf)
        .map_err(|_| invalid("the backup does not open with the recovery key (altered, or another key's)"))?
        .len();
    buf.truncate(len);
    let package = KeyPackage::deserialize(&buf).map_err(|e| frost_err(ErrorCode::BackupInvalid, "key package", e))?;
    if *package.identifier() != identifier(b.seat)?
        || !crate::repair::matches_verifying_share(&package, &public, b.seat)
    {
        return Err(invalid(format!("the share is not seat {}'s (its verifying share differs)", b.seat)));
    }
    Ok((package, public))
}

/// Restores a seat into this enclave: opens and checks the backup, closes the policy's windows
/// (the lost store's counters are unknown), seals the share under this token and stores the key.
pub async fn restore(
    engine: &Engine,
    recovery: Option<&Recovery>,
    pins: Option<&BTreeMap<frostgate_common::ids::ParticipantId, Vec<u8>>>,
    b: &SeatBackup,
    statements: &[frostgate_common::protocol::EpochStatement],
    challenge: [u8; 32],
) -> Result<KeyRecord, Error> {
    let recovery = recovery.ok_or_else(|| config_err("no [recovery] is configured in this enclave"))?;
    if let Some(pinned) = pins.map(|p| p.get(&b.seat)) {
        if pinned.map(Vec::as_slice) != Some(engine.custody().identity_public_key()) {
            return Err(config_err(format!("seat {} is not pinned to this enclave in its [group]", b.seat)));
        }
    }
    if engine.key(&b.key).is_ok() {
        return Err(Error::new(ErrorCode::BackupInvalid, format!("key {} is already held here", b.key)));
    }
    let (package, public) = open(recovery, b)?;
    // The current epoch, from the key's threshold of pinned peers over this restore's challenge.
    // The threshold and the participants are the public package's (which every statement must
    // hash to), never the encrypted package's alone.
    let participants: Vec<frostgate_common::ids::ParticipantId> =
        KeyRecord::new(public.clone(), BTreeMap::new())?.participants.keys().copied().collect();
    let threshold = public.min_signers().unwrap_or(u16::MAX);
    crate::epoch_statements::check(pins, b, statements, challenge, threshold, &participants)?;
    let plain = Zeroizing::new(package.serialize().map_err(|e| frost_err(ErrorCode::Internal, "key package", e))?);
    drop(package);
    let mut record = KeyRecord::new(public, BTreeMap::new())?;
    let blob = crate::sealing::seal(engine.custody(), &record.seal_context(b.seat, b.epoch), &plain)?;
    record.seats.insert(b.seat, SealedSeat { blob, epoch: b.epoch });
    engine.close_windows().await?;
    engine.add_key(record.clone()).await?;
    Ok(record)
}

/// Creates a recovery key pair: the private key (hex) in a new file private to this user;
/// returns the x-only public key (hex).
pub fn generate_recovery_key(path: &std::path::Path) -> Result<String, Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let secret = random_secret_key()?;
    let (public, _) = secret.x_only_public_key(&Secp256k1::signing_only());
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| config_err(format!("{}: {e}", path.display())))?;
    let text = Zeroizing::new(format!("{}\n", hex::encode(secret.secret_bytes())));
    let mut secret = secret;
    secret.non_secure_erase();
    file.write_all(text.as_bytes()).map_err(|e| config_err(format!("{}: {e}", path.display())))?;
    Ok(hex::encode(public.serialize()))
}

//! `aes_only`: the root of the secrets the token cannot keep (store key, blob tag key), 32 random
//! bytes from the token's RNG, sealed under the key-encryption key in the record
//! `<prefix>-root`: `3 | kek id (8) | iv (16) | AES-256-CBC ciphertext of the PKCS#7-padded root (48) | check (32)` with
//! `check = HMAC-SHA256(HMAC-SHA256(root, "frostgate/root-check/v1"), "frostgate/sealed-root" |
//! everything before it)`.
//!
//! Invariants: the root is decrypted only by the token and lives only in wiped enclave memory; a
//! root whose check fails is never used (the check needs the decrypted root, so it is verified,
//! in constant time, right after decryption and before anything is derived); every failure is
//! the same `unseal_failed`.

use super::blobs::{cbc_decrypt, cbc_encrypt};
use super::objects::Kek;
use super::records::{self, Record};
use super::token::hsm_err;
use super::vault::Vault;
use frostgate_common::error::{Error, ErrorCode};
use zeroize::Zeroizing;

const VERSION: u8 = 3;
const CHECK_LABEL: &[u8] = b"frostgate/root-check/v1";
const DOMAIN: &[u8] = b"frostgate/sealed-root";
const LEN: usize = 1 + 8 + 16 + 48 + 32;

fn check_key(root: &[u8; 32]) -> ring::hmac::Key {
    let derived = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, root), CHECK_LABEL);
    ring::hmac::Key::new(ring::hmac::HMAC_SHA256, derived.as_ref())
}

fn check_message(sealed: &[u8]) -> Vec<u8> {
    [DOMAIN, sealed].concat()
}

fn seal(vault: &Vault, kek: Kek, root: &[u8; 32]) -> Result<Vec<u8>, Error> {
    let (iv, ct) = cbc_encrypt(vault, kek, root)?;
    let mut value = Vec::with_capacity(LEN);
    value.push(VERSION);
    value.extend_from_slice(&kek.id);
    value.extend_from_slice(&iv);
    value.extend_from_slice(&ct);
    let tag = ring::hmac::sign(&check_key(root), &check_message(&value));
    value.extend_from_slice(tag.as_ref());
    Ok(value)
}

fn open(vault: &Vault, value: &[u8]) -> Result<Zeroizing<[u8; 32]>, Error> {
    let failed = || Error::new(ErrorCode::UnsealFailed, "the sealed root did not authenticate");
    if value.len() != LEN || value[0] != VERSION {
        return Err(failed());
    }
    let kek = vault.keks().all().find(|k| k.id == value[1..9]).ok_or_else(failed)?;
    let plain = cbc_decrypt(vault, kek, &value[9..25], &value[25..73]).map_err(|_| failed())?;
    let mut root = Zeroizing::new([0u8; 32]);
    if plain.len() != 32 {
        return Err(failed());
    }
    root.copy_from_slice(&plain);
    // Constant time (ring).
    ring::hmac::verify(&check_key(&root), &check_message(&value[..73]), &value[73..]).map_err(|_| failed())?;
    Ok(root)
}

/// Whether `value` is a sealed root that opens under a present key-encryption key.
pub(crate) fn opens(vault: &Vault, value: &[u8]) -> bool {
    open(vault, value).is_ok()
}

/// `token init`: a new root, sealed under the sealing key-encryption key.
pub(crate) fn create(vault: &Vault, prefix: &str) -> Result<(), Error> {
    let mut root = Zeroizing::new([0u8; 32]);
    vault
        .token()
        .with_session(|s| s.generate_random_slice(&mut root[..]).map_err(|e| hsm_err("C_GenerateRandom", e)))?;
    let value = seal(vault, vault.keks().sealing, &root)?;
    vault.token().with_session(|s| records::create(s, prefix, Record::Root, value)).map(|_| ())
}

/// Boot: the root, from whichever record a present key-encryption key opens.
pub(crate) fn unseal(vault: &Vault, prefix: &str) -> Result<Zeroizing<[u8; 32]>, Error> {
    let found = vault.token().with_session(|s| records::read(s, prefix, Record::Root))?;
    if found.is_empty() {
        return Err(Error::new(
            ErrorCode::HsmObjectMissing,
            format!("{} is not on the token", Record::Root.label(prefix)),
        ));
    }
    let mut last = None;
    for (_, value) in &found {
        match open(vault, value) {
            Ok(root) => return Ok(root),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::new(ErrorCode::UnsealFailed, "no sealed root")))
}

/// KEK rotation: seals the root in memory under the new sealing key too.
pub(crate) fn reseal(vault: &Vault, prefix: &str, root: &[u8; 32]) -> Result<(), Error> {
    let value = seal(vault, vault.keks().sealing, root)?;
    vault.token().with_session(|s| records::create(s, prefix, Record::Root, value)).map(|_| ())
}

/// KEK rotation, last step: destroys the copies of `record` sealed under `old` (the kek id sits
/// at bytes 1..9 in the root's format and in every encrypt-then-MAC blob).
pub(crate) fn drop_under(vault: &Vault, prefix: &str, record: Record, old: Kek) -> Result<(), Error> {
    vault.token().with_session(|s| {
        for (h, value) in records::read(s, prefix, record)? {
            if value.get(1..9) == Some(&old.id[..]) {
                s.destroy_object(h).map_err(|e| hsm_err("C_DestroyObject(record)", e))?;
            }
        }
        Ok(())
    })
}

//! Key custody in the HSM, through PKCS#11.
//!
//! Invariants: key material this enclave relies on (key-encryption key, MAC root, identity
//! private key) is generated on the token and never leaves it; the enclave refuses to start
//! unless every object is present, unique and within its role's policy ([`objects::load`]).

pub mod blobs;
pub mod config;
pub mod identity;
pub mod objects;
pub mod probe;
pub mod profile;
pub mod records;
pub mod root;
pub mod token;
pub mod vault;

use config::CustodyConfig;
use frostgate_common::error::{Error, ErrorCode};
use identity::Identity;
use objects::{Labels, ObjectReport, Objects};
use profile::{Profile, Rules};
use token::Token;
pub use vault::{Keks, Vault};
use vault::{Memory, STORE_KEY_LABEL, TAG_KEY_LABEL};
use zeroize::Zeroizing;

/// A logged-in token whose objects passed the boot self-check, with the secrets its profile
/// keeps in enclave memory.
#[derive(Debug)]
pub struct Custody {
    vault: Vault,
    objects: Objects,
    identity: Identity,
    label_prefix: String,
}

impl Custody {
    /// Boot: opens the token, reads its recorded profile (refusing one that differs from the
    /// configured one: boot never re-chooses), checks every object and unseals what the profile
    /// keeps in enclave memory. Fails closed with a typed error.
    pub fn open(config: &CustodyConfig) -> Result<Custody, Error> {
        let token = Token::open(config)?;
        let opened = Self::load(token, config);
        if let Ok(c) = &opened {
            if c.vault.keks().other.is_some() {
                tracing::warn!("two key-encryption keys: a rotation is incomplete; run `frostgate token rotate-kek`");
            }
        }
        opened
    }

    fn load(token: Token, config: &CustodyConfig) -> Result<Custody, Error> {
        let prefix = &config.object_label_prefix;
        let labels = Labels::new(prefix);
        let loaded = token.with_session(|s| {
            let profile = records::profile(s, prefix)?;
            if let Some(configured) = config.profile {
                if configured != profile {
                    return Err(Error::new(
                        ErrorCode::CustodyProfileMismatch,
                        format!("the token was initialized under custody profile {profile}; the configuration says {configured}"),
                    ));
                }
            }
            Ok((profile, objects::load(s, &labels, profile)?))
        });
        let (profile, objects) = match loaded {
            Ok(x) => x,
            Err(e) => {
                token.close();
                return Err(e);
            }
        };
        let vault = Vault {
            token,
            profile,
            keks: std::sync::RwLock::new(Keks { sealing: objects.kek, other: objects.kek_other }),
            memory: Memory::default(),
        };
        Self::unlock(vault, objects, prefix)
    }

    /// Fills the profile's memory: the root (`aes_only`) and the blob tag key.
    fn fill_memory(vault: &mut Vault, objects: &Objects, prefix: &str) -> Result<(), Error> {
        if vault.profile == Profile::AesOnly {
            vault.memory.root = Some(root::unseal(vault, prefix)?);
        }
        if vault.profile != Profile::Full {
            vault.memory.tag_key = Some(vault.root_hmac(objects.mac_root, TAG_KEY_LABEL)?);
        }
        Ok(())
    }

    /// Fills the profile's memory and loads the identity.
    fn unlock(mut vault: Vault, objects: Objects, prefix: &str) -> Result<Custody, Error> {
        let unlocked =
            Self::fill_memory(&mut vault, &objects, prefix).and_then(|()| Identity::load(&vault, &objects, prefix));
        match unlocked {
            Ok(identity) => Ok(Custody { vault, objects, identity, label_prefix: prefix.to_string() }),
            Err(e) => {
                vault.token.close();
                Err(e)
            }
        }
    }

    /// `token init`: creates the objects of the strongest profile the token supports (or of
    /// `config.profile`, refused with the missing mechanisms named if the token lacks one),
    /// refusing if any object exists, records the profile, then runs `then` on the new custody
    /// (the store anchor at the empty head: `crate::store::anchor::init_token`). Returns the new
    /// identity public key and the profile.
    pub fn init_then(
        config: &CustodyConfig,
        then: impl FnOnce(&Custody) -> Result<(), Error>,
    ) -> Result<(Vec<u8>, Profile), Error> {
        let token = Token::open(config)?;
        let prefix = &config.object_label_prefix;
        let labels = Labels::new(prefix);
        let chosen = profile::Capabilities::of(&token).and_then(|caps| match config.profile {
            Some(p) => caps.require(p),
            None => caps.best(),
        });
        let checked = chosen.and_then(|profile| {
            token.with_session(|s| {
                let existing = records::existing(s, prefix)?;
                Ok((profile, objects::check_init(s, &labels, existing)?))
            })
        });
        let (profile, adopt) = match checked {
            Ok(x) => x,
            Err(e) => {
                token.close();
                return Err(e);
            }
        };
        // From here on, every object with this enclave's labels was made by this init (or is the
        // adopted key-encryption key): a failure removes them, leaving the token as it was.
        let objects = match token.with_session(|s| objects::init(s, &labels, profile, adopt)) {
            Ok(o) => o,
            Err(e) => {
                let e = undone(e, token.with_session(|s| undo_init(s, &labels, prefix, adopt)));
                token.close();
                return Err(e);
            }
        };
        let mut vault = Vault {
            token,
            profile,
            keks: std::sync::RwLock::new(Keks { sealing: objects.kek, other: None }),
            memory: Memory::default(),
        };
        let made = (|| {
            if profile == Profile::AesOnly {
                root::create(&vault, prefix)?;
            }
            Self::fill_memory(&mut vault, &objects, prefix)?;
            if !profile.identity_in_token() {
                identity::create_sealed(&vault, prefix)?;
            }
            // The profile record last among the records: a token that has it is complete.
            vault.token.with_session(|s| records::create_profile(s, prefix, profile))?;
            Identity::load(&vault, &objects, prefix)
        })();
        let custody = match made {
            Ok(identity) => Custody { vault, objects, identity, label_prefix: prefix.to_string() },
            Err(e) => {
                let e = undone(e, vault.token.with_session(|s| undo_init(s, &labels, prefix, adopt)));
                vault.token.close();
                return Err(e);
            }
        };
        if let Err(e) = then(&custody) {
            let e = undone(e, custody.token().with_session(|s| undo_init(s, &labels, prefix, adopt)));
            custody.close();
            return Err(e);
        }
        let key = custody.identity_public_key().to_vec();
        custody.close();
        Ok((key, profile))
    }

    /// `token inspect`: a report on every object of the recorded profile, violations included;
    /// never fails on a weak object (the caller decides), only on an unusable token.
    pub fn inspect(config: &CustodyConfig) -> Result<(Profile, Vec<ObjectReport>), Error> {
        let token = Token::open(config)?;
        let labels = Labels::new(&config.object_label_prefix);
        let result = token.with_session(|s| {
            let profile = records::profile(s, &config.object_label_prefix)?;
            Ok((profile, objects::inspect(s, &labels, profile)?))
        });
        token.close();
        result
    }

    /// The sealing view: token, profile, key-encryption keys, tag key.
    pub fn vault(&self) -> &Vault {
        &self.vault
    }

    /// The token.
    pub fn token(&self) -> &Token {
        &self.vault.token
    }

    /// The custody profile in force.
    pub fn profile(&self) -> Profile {
        self.vault.profile
    }

    /// The checked object handles.
    pub fn objects(&self) -> &Objects {
        &self.objects
    }

    /// The key-encryption keys in use.
    pub fn keks(&self) -> Keks {
        self.vault.keks()
    }

    /// Whether a rotation was begun and not finished (two key-encryption keys on the token).
    pub fn kek_rotation_in_progress(&self) -> bool {
        self.keks().other.is_some()
    }

    /// Rotation, step 1: unless a rotation is already incomplete, generates a new key-encryption
    /// key on the token, makes it the sealing one (the old one stays, for unsealing) and seals
    /// this enclave's own records (root, identity) under it too. Returns whether a key was created.
    pub fn begin_kek_rotation(&self) -> Result<bool, Error> {
        let mut keks = self.vault.keks.write().unwrap_or_else(|p| p.into_inner());
        if keks.other.is_some() {
            return Ok(false);
        }
        let labels = Labels::new(&self.label_prefix);
        let new = self.token().with_session(|s| objects::create_kek(s, &labels, keks.sealing.handle))?;
        *keks = Keks { sealing: new, other: Some(keks.sealing) };
        drop(keks);
        self.records_under(new)?;
        Ok(true)
    }

    /// Seals this enclave's own records (the root, the sealed identity) under `kek` where no copy
    /// is sealed under it yet: before an old key is destroyed, whether the new one was generated
    /// here or made with the token's tool and found at boot.
    fn records_under(&self, kek: objects::Kek) -> Result<(), Error> {
        let prefix = &self.label_prefix;
        // A copy counts only if it names `kek` and opens: an id alone is not proof.
        let covered = |record| -> Result<bool, Error> {
            let copies = self.vault.token.with_session(|s| records::read(s, prefix, record))?;
            Ok(copies.iter().any(|(_, v)| {
                v.get(1..9) == Some(&kek.id[..])
                    && match record {
                        records::Record::Root => root::opens(&self.vault, v),
                        _ => identity::opens(&self.vault, v),
                    }
            }))
        };
        if let Some(root) = &self.vault.memory.root {
            if !covered(records::Record::Root)? {
                root::reseal(&self.vault, prefix, root)?;
            }
        }
        if !self.profile().identity_in_token() && !covered(records::Record::SealedIdentity)? {
            self.identity.reseal(&self.vault, prefix)?;
        }
        Ok(())
    }

    /// Rotation, last step: destroys the other key-encryption key and the records sealed under
    /// it. Call only once every blob the enclave relies on is sealed under the sealing key,
    /// durable and anchored.
    pub fn finish_kek_rotation(&self) -> Result<(), Error> {
        // The records first, without the lock (sealing them reads the keys).
        let current = self.keks();
        if let Some(other) = current.other {
            if other.id == current.sealing.id {
                return Err(Error::new(
                    ErrorCode::HsmObjectPolicyViolation,
                    "the two key-encryption keys carry the same id: nothing destroyed",
                ));
            }
            self.records_under(current.sealing)?;
        }
        let mut keks = self.vault.keks.write().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = keks.other {
            for record in [records::Record::Root, records::Record::SealedIdentity] {
                root::drop_under(&self.vault, &self.label_prefix, record, old)?;
            }
            self.token()
                .with_session(|s| s.destroy_object(old.handle).map_err(|e| token::hsm_err("C_DestroyObject", e)))?;
            keks.other = None;
        }
        Ok(())
    }

    /// The prefix of this enclave's object labels.
    pub fn label_prefix(&self) -> &str {
        &self.label_prefix
    }

    /// Derives the store-sealing key: HMAC-SHA256 under the profile's root (inside the HSM under
    /// `full` and `cbc_hmac`) over a fixed label. The result lives in wiped memory.
    pub fn derive_store_key(&self) -> Result<Zeroizing<[u8; 32]>, Error> {
        self.vault.root_hmac(self.objects.mac_root, STORE_KEY_LABEL)
    }

    /// The identity public key (uncompressed SEC1 P-256 point).
    pub fn identity_public_key(&self) -> &[u8] {
        self.identity.public_key()
    }

    /// A 32-byte key shared with the holder of `peer` (an identity public key), bound to
    /// `context`. Both ends compute the same value; nobody else can.
    pub fn identity_shared_key(&self, peer: &[u8], context: &[u8]) -> Result<Zeroizing<[u8; 32]>, Error> {
        self.identity.shared_key(&self.vault, peer, context)
    }

    /// ECDSA P-256 / SHA-256 signature (r, s) by the identity key over `message`.
    pub fn identity_sign(&self, message: &[u8]) -> Result<([u8; 32], [u8; 32]), Error> {
        self.identity.sign(&self.vault, message)
    }

    /// Closes the token's sessions (logging this application out).
    pub fn close(self) {
        self.vault.token.close();
    }
}

/// Removes what a failed `token init` made: every record and key object with this enclave's
/// labels, except an adopted key-encryption key.
/// Returns what could not be removed (empty: the token is as it was).
fn undo_init(s: &token::Hsm<'_>, labels: &Labels, prefix: &str, adopted_kek: bool) -> Result<Vec<String>, Error> {
    let mut left = Vec::new();
    for (role, handle) in objects::all(s, labels)? {
        if !(adopted_kek && role == objects::Role::Kek) && s.destroy_object(handle).is_err() {
            left.push(labels.of(role));
        }
    }
    for record in [records::Record::Profile, records::Record::Root, records::Record::SealedIdentity] {
        let label = record.label(prefix);
        // A record that cannot even be read is left too (a public one is not ours to trust).
        let Ok(copies) = records::read(s, prefix, record) else {
            left.push(label);
            continue;
        };
        for (h, _) in copies {
            if s.destroy_object(h).is_err() {
                left.push(label.clone());
            }
        }
    }
    Ok(left)
}

/// `e`, naming what a failed init could not remove from the token.
fn undone(e: Error, cleanup: Result<Vec<String>, Error>) -> Error {
    let left = match cleanup {
        Ok(left) if left.is_empty() => return e,
        Ok(left) => left.join(", "),
        Err(c) => format!("the cleanup itself failed ({c})"),
    };
    Error::new(e.code(), format!("{}; left on the token by the failed init, remove by hand: {left}", e.message()))
}

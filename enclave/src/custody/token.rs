//! The PKCS#11 token: one `Pkcs11` per process, found by label, with one long-lived logged-in
//! anchor session (closing the last session would log the application out) and a small pool of
//! work sessions.
//!
//! Invariants: the module is initialized at most once per process (one module path per process); the PIN is used for login
//! and dropped (wiped) immediately; every PKCS#11 failure maps to a typed error naming the
//! function and return value, never the PIN.

use super::config::CustodyConfig;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use frostgate_common::error::{Error, ErrorCode};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The process's one initialized PKCS#11 module (C_Initialize once per process; a second
/// initialize fails, and init/finalize cycles have crashed SoftHSM).
static MODULE: Mutex<Option<(PathBuf, Pkcs11)>> = Mutex::new(None);

pub(crate) fn module(path: &Path) -> Result<Pkcs11, Error> {
    let mut slot = lock(&MODULE);
    if let Some((loaded, pkcs11)) = slot.as_ref() {
        if loaded == path {
            return Ok(pkcs11.clone());
        }
        return Err(Error::new(
            ErrorCode::ConfigInvalid,
            format!(
                "PKCS#11 module {} requested, but {} is already loaded in this process",
                path.display(),
                loaded.display()
            ),
        ));
    }
    let module_err =
        |e: CkError| Error::new(ErrorCode::HsmModuleUnavailable, format!("PKCS#11 module {}: {e}", path.display()));
    let pkcs11 = Pkcs11::new(path).map_err(module_err)?;
    pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)).map_err(module_err)?;
    *slot = Some((path.to_path_buf(), pkcs11.clone()));
    Ok(pkcs11)
}

/// Finalizes the process's PKCS#11 module, if loaded. Call once, at process exit, after every
/// [`Token`] is closed.
pub fn finalize_module() {
    if let Some((_, pkcs11)) = lock(&MODULE).take() {
        let _ = pkcs11.finalize();
    }
}

/// HSM calls made through [`Token::with_session`] and their total duration, process-wide.
static HSM_CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static HSM_MICROS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// (calls, total microseconds) of HSM work so far.
pub fn hsm_counters() -> (u64, u64) {
    (HSM_CALLS.load(std::sync::atomic::Ordering::Relaxed), HSM_MICROS.load(std::sync::atomic::Ordering::Relaxed))
}

/// PKCS#11 operations by kind, process-wide, in [`Call`] order.
static CALLS: [std::sync::atomic::AtomicU64; 10] = [const { std::sync::atomic::AtomicU64::new(0) }; 10];

/// A kind of PKCS#11 operation.
#[derive(Debug, Clone, Copy)]
enum Call {
    Decrypt,
    Encrypt,
    Sign,
    Derive,
    Random,
    Find,
    Attributes,
    Create,
    Destroy,
    Generate,
}

fn count(c: Call) {
    CALLS[c as usize].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// PKCS#11 operations that reached the token so far, by kind.
pub fn call_counts() -> frostgate_common::protocol::HsmCalls {
    let n = |c: Call| CALLS[c as usize].load(std::sync::atomic::Ordering::Relaxed);
    frostgate_common::protocol::HsmCalls {
        decrypt: n(Call::Decrypt),
        encrypt: n(Call::Encrypt),
        sign: n(Call::Sign),
        derive: n(Call::Derive),
        random: n(Call::Random),
        find: n(Call::Find),
        attributes: n(Call::Attributes),
        create: n(Call::Create),
        destroy: n(Call::Destroy),
        generate: n(Call::Generate),
    }
}

/// A work session whose every PKCS#11 operation is counted by kind ([`call_counts`]): the only
/// way custody code reaches the token after login.
pub struct Hsm<'a>(&'a Session);

impl std::fmt::Debug for Hsm<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hsm")
    }
}

type CkResult<T> = cryptoki::error::Result<T>;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectHandle};

impl Hsm<'_> {
    /// `C_Decrypt`.
    pub fn decrypt(&self, m: &Mechanism, key: ObjectHandle, data: &[u8]) -> CkResult<Vec<u8>> {
        count(Call::Decrypt);
        self.0.decrypt(m, key, data)
    }
    /// `C_Encrypt`.
    pub fn encrypt(&self, m: &Mechanism, key: ObjectHandle, data: &[u8]) -> CkResult<Vec<u8>> {
        count(Call::Encrypt);
        self.0.encrypt(m, key, data)
    }
    /// `C_Sign`.
    pub fn sign(&self, m: &Mechanism, key: ObjectHandle, data: &[u8]) -> CkResult<Vec<u8>> {
        count(Call::Sign);
        self.0.sign(m, key, data)
    }
    /// `C_DeriveKey`.
    pub fn derive_key(&self, m: &Mechanism, base: ObjectHandle, template: &[Attribute]) -> CkResult<ObjectHandle> {
        count(Call::Derive);
        self.0.derive_key(m, base, template)
    }
    /// `C_GenerateRandom`.
    pub fn generate_random_slice(&self, out: &mut [u8]) -> CkResult<()> {
        count(Call::Random);
        self.0.generate_random_slice(out)
    }
    /// `C_FindObjects*`.
    pub fn find_objects(&self, template: &[Attribute]) -> CkResult<Vec<ObjectHandle>> {
        count(Call::Find);
        self.0.find_objects(template)
    }
    /// `C_GetAttributeValue`.
    pub fn get_attributes(&self, h: ObjectHandle, types: &[AttributeType]) -> CkResult<Vec<Attribute>> {
        count(Call::Attributes);
        self.0.get_attributes(h, types)
    }
    /// `C_SetAttributeValue` (counted with the attribute reads).
    pub fn update_attributes(&self, h: ObjectHandle, template: &[Attribute]) -> CkResult<()> {
        count(Call::Attributes);
        self.0.update_attributes(h, template)
    }
    /// `C_CreateObject`.
    pub fn create_object(&self, template: &[Attribute]) -> CkResult<ObjectHandle> {
        count(Call::Create);
        self.0.create_object(template)
    }
    /// `C_DestroyObject`.
    pub fn destroy_object(&self, h: ObjectHandle) -> CkResult<()> {
        count(Call::Destroy);
        self.0.destroy_object(h)
    }
    /// `C_GenerateKey`.
    pub fn generate_key(&self, m: &Mechanism, template: &[Attribute]) -> CkResult<ObjectHandle> {
        count(Call::Generate);
        self.0.generate_key(m, template)
    }
    /// `C_GenerateKeyPair`.
    pub fn generate_key_pair(
        &self,
        m: &Mechanism,
        public: &[Attribute],
        private: &[Attribute],
    ) -> CkResult<(ObjectHandle, ObjectHandle)> {
        count(Call::Generate);
        self.0.generate_key_pair(m, public, private)
    }
}

/// Most idle work sessions kept open.
const POOL_MAX: usize = 8;

/// Maps a PKCS#11 failure to `hsm_operation_failed`, naming the function that failed.
pub fn hsm_err(context: &str, e: CkError) -> Error {
    Error::new(ErrorCode::HsmOperationFailed, format!("{context}: {e}"))
}

/// A logged-in token.
pub struct Token {
    pkcs11: Pkcs11,
    slot: Slot,
    label: String,
    _anchor: Mutex<Session>,
    pool: Mutex<Vec<Session>>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token").field("label", &self.label).field("slot", &self.slot.id()).finish_non_exhaustive()
    }
}

impl Token {
    /// Loads the module (once per process), finds the token by label, logs in.
    pub fn open(config: &CustodyConfig) -> Result<Token, Error> {
        let pkcs11 = module(&config.module)?;
        Self::login(pkcs11, config)
    }

    fn login(pkcs11: Pkcs11, config: &CustodyConfig) -> Result<Token, Error> {
        let slot = find_slot(&pkcs11, &config.token_label)?;
        let anchor = pkcs11.open_rw_session(slot).map_err(|e| hsm_err("C_OpenSession", e))?;
        let pin = config.read_pin()?;
        match anchor.login(UserType::User, Some(&pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
                return Err(Error::new(
                    ErrorCode::HsmPinIncorrect,
                    format!("token {:?} rejected the PIN", config.token_label),
                ));
            }
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => {
                return Err(Error::new(
                    ErrorCode::HsmPinLocked,
                    format!("the user PIN of token {:?} is locked", config.token_label),
                ));
            }
            Err(CkError::Pkcs11(rv @ (RvError::PinInvalid | RvError::PinLenRange), _)) => {
                return Err(Error::new(
                    ErrorCode::HsmPinIncorrect,
                    format!("token {:?} rejected the PIN: {rv}", config.token_label),
                ));
            }
            Err(e) => return Err(hsm_err("C_Login", e)),
        }
        drop(pin);
        Ok(Token {
            pkcs11,
            slot,
            label: config.token_label.clone(),
            _anchor: Mutex::new(anchor),
            pool: Mutex::new(Vec::new()),
        })
    }

    /// The module and the token's slot (for reads that need no session: the mechanism list).
    pub(crate) fn slot(&self) -> (&Pkcs11, Slot) {
        (&self.pkcs11, self.slot)
    }

    /// The token's label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Runs `f` on a work session from the pool (opened on demand; returned afterwards).
    pub fn with_session<R>(&self, f: impl FnOnce(&Hsm<'_>) -> Result<R, Error>) -> Result<R, Error> {
        let session = match lock(&self.pool).pop() {
            Some(s) => s,
            None => self.pkcs11.open_rw_session(self.slot).map_err(|e| hsm_err("C_OpenSession", e))?,
        };
        let started = std::time::Instant::now();
        let result = f(&Hsm(&session));
        HSM_MICROS.fetch_add(started.elapsed().as_micros() as u64, std::sync::atomic::Ordering::Relaxed);
        HSM_CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut pool = lock(&self.pool);
        if pool.len() < POOL_MAX {
            pool.push(session);
        }
        result
    }

    /// Closes every session (the last one closed logs this application out of the token).
    pub fn close(self) {
        let Token { pool, _anchor, .. } = self;
        drop(pool);
        drop(_anchor);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn find_slot(pkcs11: &Pkcs11, label: &str) -> Result<Slot, Error> {
    let slots = pkcs11.get_slots_with_token().map_err(|e| hsm_err("C_GetSlotList", e))?;
    let mut found = Vec::new();
    for slot in slots {
        let info = pkcs11.get_token_info(slot).map_err(|e| hsm_err("C_GetTokenInfo", e))?;
        if info.label().trim_end() == label {
            found.push(slot);
        }
    }
    match found.as_slice() {
        [slot] => Ok(*slot),
        [] => Err(Error::new(ErrorCode::HsmTokenNotFound, format!("no token labelled {label:?}"))),
        many => {
            Err(Error::new(ErrorCode::HsmTokenNotFound, format!("{} tokens labelled {label:?}: ambiguous", many.len())))
        }
    }
}

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

    /// The mechanisms the token offers.
    pub fn capabilities(&self) -> Result<super::profile::Capabilities, Error> {
        super::profile::Capabilities::read(&self.pkcs11, self.slot)
    }

    /// The token's label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Runs `f` on a work session from the pool (opened on demand; returned afterwards).
    pub fn with_session<R>(&self, f: impl FnOnce(&Session) -> Result<R, Error>) -> Result<R, Error> {
        let session = match lock(&self.pool).pop() {
            Some(s) => s,
            None => self.pkcs11.open_rw_session(self.slot).map_err(|e| hsm_err("C_OpenSession", e))?,
        };
        let started = std::time::Instant::now();
        let result = f(&session);
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

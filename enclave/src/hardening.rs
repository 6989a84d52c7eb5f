//! Process hardening of the enclave, applied before any secret is read.
//!
//! Invariants: the enclave process is not dumpable (no core file, no `/proc/PID/mem`, `environ`
//! or ptrace attach by a process of the same user; its `/proc` files belong to root); its core
//! size limit is 0; its memory is locked when the memlock limit allows it (otherwise it says so);
//! it refuses to read a PIN file, or to use a SoftHSM token directory, that a user other than
//! itself can read or write.

use crate::custody::config::{CustodyConfig, PinSource};
use frostgate_common::error::{Error, ErrorCode};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// What [`harden`] achieved, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hardened {
    /// Memory locked (`mlockall`), so no secret is written to swap.
    pub memory_locked: bool,
}

/// Makes this process non-dumpable, sets its core limit to 0 and locks its memory if it can.
pub fn harden() -> Result<Hardened, Error> {
    let fail = |what: &str, e: nix::Error| Error::new(ErrorCode::Internal, format!("hardening: {what}: {e}"));
    nix::sys::prctl::set_dumpable(false).map_err(|e| fail("PR_SET_DUMPABLE", e))?;
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0)
        .map_err(|e| fail("RLIMIT_CORE", e))?;
    // With MCL_FUTURE every later allocation must fit the memlock limit, or it fails: lock only
    // when the limit cannot be hit (root, or an unlimited or large limit).
    let (soft, _) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_MEMLOCK)
        .map_err(|e| fail("RLIMIT_MEMLOCK", e))?;
    let roomy = soft == nix::sys::resource::RLIM_INFINITY || soft >= 1 << 30;
    let memory_locked = if nix::unistd::geteuid().is_root() || roomy {
        use nix::sys::mman::{mlockall, MlockAllFlags};
        match mlockall(MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!("memory not locked (mlockall: {e}); secrets may reach swap");
                false
            }
        }
    } else {
        tracing::warn!(
            memlock_limit = soft,
            "memory not locked: RLIMIT_MEMLOCK is below 1 GiB (set LimitMEMLOCK=infinity); secrets may reach swap"
        );
        false
    };
    Ok(Hardened { memory_locked })
}

/// [`crate::private_file::private_to_me`] for a path that may be missing (then the use that follows reports it).
fn private_path(path: &Path, what: &str) -> Result<(), Error> {
    match std::fs::metadata(path) {
        Ok(meta) => crate::private_file::private_to_me(path, what, meta.uid(), meta.mode()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::new(ErrorCode::ConfigInvalid, format!("{what} {}: {e}", path.display()))),
    }
}

/// SoftHSM's token directory, from the file `SOFTHSM2_CONF` names, or SoftHSM's default
/// configuration file (`directories.tokendir`).
fn softhsm_token_dir() -> Option<std::path::PathBuf> {
    let conf = std::env::var_os("SOFTHSM2_CONF").unwrap_or_else(|| "/etc/softhsm/softhsm2.conf".into());
    let text = std::fs::read_to_string(conf).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == "directories.tokendir").then(|| std::path::PathBuf::from(v.trim()))
    })
}

/// Checks the custody files before the token is opened: the PIN file (checked again on the
/// descriptor it is read from, see `CustodyConfig::read_pin`) and (SoftHSM) the token directory
/// are this user's alone. A PIN from the environment is allowed (the process is not dumpable, so
/// its `/proc/PID/environ` is readable by root only).
pub fn check_custody_files(config: &CustodyConfig) -> Result<(), Error> {
    if let PinSource::File(path) = &config.pin {
        private_path(path, "PIN file")?;
    }
    if config.module.to_string_lossy().contains("softhsm") {
        if let Some(dir) = softhsm_token_dir() {
            private_path(&dir, "SoftHSM token directory")?;
        }
    }
    Ok(())
}

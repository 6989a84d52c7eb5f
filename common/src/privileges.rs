//! Dropping root: a process started as root (by systemd or `frostgate node`) switches to its own
//! unprivileged user before it opens anything else.
//!
//! Invariant: after [`drop_to`] returns `Ok`, the real, effective and saved uid and gid are the
//! user's, the supplementary groups are exactly its primary group, and regaining root fails.

use crate::error::{Error, ErrorCode};
use nix::unistd::{Gid, Uid, User};

/// A resolved Unix user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The name.
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
}

/// Looks a user up by name.
pub fn account(name: &str) -> Result<Account, Error> {
    match User::from_name(name) {
        Ok(Some(u)) => Ok(Account { name: name.to_string(), uid: u.uid.as_raw(), gid: u.gid.as_raw() }),
        Ok(None) => Err(Error::new(ErrorCode::ConfigInvalid, format!("no Unix user named {name:?}"))),
        Err(e) => Err(Error::new(ErrorCode::ConfigInvalid, format!("looking up user {name:?}: {e}"))),
    }
}

/// Becomes `name`: as root, sets groups (the user's own, from the group database, as a login or
/// systemd's `User=` does: e.g. `pkcs11` for openCryptoki), gid and uid for good; as that user
/// already, does nothing; as anyone else, refuses.
pub fn drop_to(name: &str) -> Result<Account, Error> {
    let who = account(name)?;
    let euid = nix::unistd::geteuid();
    if euid.as_raw() == who.uid && nix::unistd::getuid().as_raw() == who.uid {
        return Ok(who);
    }
    if !euid.is_root() {
        return Err(Error::new(
            ErrorCode::ConfigInvalid,
            format!("asked to run as {name:?} (uid {}), but running as uid {} without root", who.uid, euid.as_raw()),
        ));
    }
    let fail =
        |what: &str, e: nix::Error| Error::new(ErrorCode::Internal, format!("dropping to {name:?}: {what}: {e}"));
    let gid = Gid::from_raw(who.gid);
    let cname =
        std::ffi::CString::new(name).map_err(|_| Error::new(ErrorCode::ConfigInvalid, "user name holds NUL"))?;
    nix::unistd::initgroups(&cname, gid).map_err(|e| fail("initgroups", e))?;
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| fail("setresgid", e))?;
    let uid = Uid::from_raw(who.uid);
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| fail("setresuid", e))?;
    if nix::unistd::setuid(Uid::from_raw(0)).is_ok() && who.uid != 0 {
        return Err(Error::new(ErrorCode::Internal, format!("dropping to {name:?}: root could be regained")));
    }
    Ok(who)
}

//! Files only the enclave's user may reach (the PIN file, the recovery key file, the token
//! directory): one rule, checked before any of them is read.

use frostgate_common::error::{Error, ErrorCode};
use std::path::Path;

/// Refuses a file or directory that another user can read or write, or that this user does not
/// own (`uid` and `mode` as read from it).
pub fn private_to_me(path: &Path, what: &str, uid: u32, mode: u32) -> Result<(), Error> {
    let me = nix::unistd::geteuid().as_raw();
    if uid != me {
        return Err(Error::new(
            ErrorCode::ConfigInvalid,
            format!("{what} {} belongs to uid {uid}, not to this enclave's uid {me}", path.display()),
        ));
    }
    if mode & 0o077 != 0 {
        return Err(Error::new(
            ErrorCode::ConfigInvalid,
            format!("{what} {} is accessible by other users (mode {:o}); chmod go-rwx", path.display(), mode & 0o777),
        ));
    }
    Ok(())
}

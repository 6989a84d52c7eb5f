//! Files the CLI writes for its operator (a backup, a signed PSBT): never through a symbolic
//! link, and never over an existing file unless the operator asked (`--force`).

use frostgate_common::error::{Error, ErrorCode};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

fn refusal(path: &Path, why: &str) -> Error {
    Error::new(ErrorCode::ConfigInvalid, format!("{}: {why}", path.display()))
}

/// Whether [`write_new`] may write `path`: checked before any work whose result would then be
/// lost (the race with a link planted later is closed by `write_new` itself).
pub fn check_new(path: &Path, force: bool) -> Result<(), Error> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(refusal(path, "is a symbolic link; not followed")),
        Ok(m) if !m.is_file() => Err(refusal(path, "exists and is not a regular file")),
        Ok(_) if !force => Err(refusal(path, "exists; pass --force to overwrite it")),
        _ => Ok(()),
    }
}

/// Writes `bytes` to a new file `path` (mode 0600). With `force` an existing regular file is
/// removed and a new one created in its place (never written through); a symbolic link
/// (dangling or not) at `path` is refused either way.
pub fn write_new(path: &Path, bytes: &[u8], force: bool) -> Result<(), Error> {
    check_new(path, force)?;
    let refuse = |why: String| Error::new(ErrorCode::ConfigInvalid, format!("{}: {why}", path.display()));
    if force {
        // Replaced, not written through: its mode and any hard link to it stay as they were.
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(refuse(e.to_string())),
            _ => {}
        }
    }
    // O_EXCL: fails on anything at the path, a link planted since the check included.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .create_new(true)
        .open(path)
        .map_err(|e| refuse(e.to_string()))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(|e| refuse(e.to_string()))
}

/// Writes `text` to `path` (created or truncated) readable by its owner only: a PIN, a TLS key
/// of a development cluster.
pub fn write_private(path: &Path, text: &str) -> Result<(), Error> {
    let io = |e: std::io::Error| Error::new(ErrorCode::ConfigInvalid, format!("{}: {e}", path.display()));
    let mut f =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path).map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)
}

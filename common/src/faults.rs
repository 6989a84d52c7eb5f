//! Development-only fault points (the `dev-fault-injection` features of the enclave and host
//! crates; ARCHITECTURE.md, "Development fault injection"). A point is armed by
//! `FROSTGATE_DEV_FAULT=<point>` or by the content of the file named by
//! `FROSTGATE_DEV_FAULT_FILE`, read at every check so a test can arm a point just before the
//! commit it targets.

/// Whether `point` is armed. `enabled` is the calling crate's `cfg!(feature =
/// "dev-fault-injection")`: when it is false nothing is read and the answer is always false.
pub fn armed(enabled: bool, point: &str) -> bool {
    if !enabled {
        return false;
    }
    std::env::var("FROSTGATE_DEV_FAULT").is_ok_and(|v| v == point)
        || std::env::var_os("FROSTGATE_DEV_FAULT_FILE")
            .and_then(|f| std::fs::read_to_string(f).ok())
            .is_some_and(|v| v.trim() == point)
}

//! Development-only crash points in the commit protocol. With the `dev-fault-injection` feature,
//! the process aborts (as a crash would) at the configured point: `FROSTGATE_DEV_FAULT=<point>`,
//! or the content of the file named by `FROSTGATE_DEV_FAULT_FILE` (read at every check, so a test
//! can arm a point just before the commit it targets). Without the feature every call is a no-op.

/// After the host acknowledged a commit, before the HSM anchor is advanced.
pub const AFTER_ACK_BEFORE_ANCHOR: &str = "after_ack_before_anchor";
/// After the anchor is advanced, before the share or signature is released.
pub const AFTER_ANCHOR_BEFORE_RELEASE: &str = "after_anchor_before_release";

/// Whether `point` is the configured fault (always false without the feature).
pub fn armed(point: &str) -> bool {
    if !cfg!(feature = "dev-fault-injection") {
        return false;
    }
    if std::env::var("FROSTGATE_DEV_FAULT").is_ok_and(|v| v == point) {
        return true;
    }
    std::env::var_os("FROSTGATE_DEV_FAULT_FILE")
        .and_then(|f| std::fs::read_to_string(f).ok())
        .is_some_and(|v| v.trim() == point)
}

/// Aborts the process if `point` is the configured fault.
pub fn crash_point(point: &str) {
    if armed(point) {
        tracing::error!(point, "DEVELOPMENT fault injection: aborting");
        std::process::abort();
    }
}

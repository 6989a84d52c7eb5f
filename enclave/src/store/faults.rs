//! Development-only crash points in the commit protocol. With the `dev-fault-injection` feature,
//! `FROSTGATE_DEV_FAULT=<point>` makes the process abort (as a crash would) at that point; without
//! the feature every call is a no-op.

/// After the host acknowledged a commit, before the HSM anchor is advanced.
pub const AFTER_ACK_BEFORE_ANCHOR: &str = "after_ack_before_anchor";
/// After the anchor is advanced, before the share or signature is released.
pub const AFTER_ANCHOR_BEFORE_RELEASE: &str = "after_anchor_before_release";

/// Aborts the process if `point` is the configured fault.
pub fn crash_point(point: &str) {
    #[cfg(feature = "dev-fault-injection")]
    if std::env::var("FROSTGATE_DEV_FAULT").is_ok_and(|v| v == point) {
        tracing::error!(point, "DEVELOPMENT fault injection: aborting");
        std::process::abort();
    }
    let _ = point;
}

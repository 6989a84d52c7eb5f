//! Development-only crash points in the enclave's commit protocol: with the `dev-fault-injection`
//! feature the process aborts (as a crash would) at the armed point (`frostgate_common::faults`).
//! Without the feature every call is a no-op.

/// After the host acknowledged a commit, before the HSM anchor is advanced.
pub const AFTER_ACK_BEFORE_ANCHOR: &str = "after_ack_before_anchor";
/// After the anchor is advanced, before the share or signature is released.
pub const AFTER_ANCHOR_BEFORE_RELEASE: &str = "after_anchor_before_release";

/// Whether `point` is the configured fault (always false without the feature).
pub fn armed(point: &str) -> bool {
    frostgate_common::faults::armed(cfg!(feature = "dev-fault-injection"), point)
}

/// Aborts the process if `point` is the configured fault.
pub fn crash_point(point: &str) {
    if armed(point) {
        tracing::error!(point, "DEVELOPMENT fault injection: aborting");
        std::process::abort();
    }
}

//! Development-only crash points in the enclave's commit and key-rotation protocols: with the `dev-fault-injection`
//! feature the process aborts (as a crash would) at the armed point (`frostgate_common::faults`).
//! Without the feature every call is a no-op.

/// After the host acknowledged a commit, before the HSM anchor is advanced.
pub const AFTER_ACK_BEFORE_ANCHOR: &str = "after_ack_before_anchor";
/// After the anchor is advanced, before the share or signature is released.
pub const AFTER_ANCHOR_BEFORE_RELEASE: &str = "after_anchor_before_release";

/// Key-encryption-key rotation: after the new key is created, before any blob is resealed.
pub const KEK_AFTER_CREATE: &str = "kek_after_create";
/// After the resealed key records are durable and anchored, before the old key is destroyed.
pub const KEK_AFTER_RESEAL: &str = "kek_after_reseal";
/// After the old key is destroyed, before the rotation is reported.
pub const KEK_AFTER_DESTROY: &str = "kek_after_destroy";

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

//! Error codes, their recovery classes and their wire order are pinned: changing any of them is a
//! breaking change for every caller and must fail here first.

use frostgate_common::{Error, ErrorCode, RecoveryClass};

/// (wire index, code, recovery class). Append only.
const PINNED: &[(usize, &str, &str)] = &[
    (0, "frame_too_large", "fix_request"),
    (1, "frame_truncated", "fix_request"),
    (2, "frame_trailing_bytes", "fix_request"),
    (3, "unsupported_protocol_version", "fix_request"),
    (4, "unknown_message_kind", "fix_request"),
    (5, "malformed_message", "fix_request"),
    (6, "unexpected_message", "fix_request"),
    (7, "peer_not_authorized", "operator"),
    (8, "channel_closed", "retry"),
    (9, "channel_io", "retry"),
    (10, "too_many_in_flight", "retry"),
    (11, "request_timeout", "retry"),
    (12, "enclave_unavailable", "retry"),
    (13, "config_invalid", "operator"),
    (14, "internal", "operator"),
    (15, "custody_not_configured", "operator"),
    (16, "hsm_module_unavailable", "operator"),
    (17, "hsm_token_not_found", "operator"),
    (18, "hsm_pin_incorrect", "operator"),
    (19, "hsm_pin_locked", "operator"),
    (20, "hsm_pin_unavailable", "operator"),
    (21, "hsm_object_missing", "operator"),
    (22, "hsm_object_policy_violation", "operator"),
    (23, "hsm_objects_exist", "fix_request"),
    (24, "hsm_operation_failed", "retry"),
    (25, "unseal_failed", "operator"),
    (26, "unknown_key", "fix_request"),
    (27, "unknown_session", "new_attempt"),
    (28, "session_conflict", "fix_request"),
    (29, "unknown_attempt", "new_attempt"),
    (30, "attempt_conflict", "fix_request"),
    (31, "signer_set_invalid", "fix_request"),
    (32, "seat_not_held", "fix_request"),
    (33, "nonce_unavailable", "new_attempt"),
    (34, "nonce_already_consumed", "new_attempt"),
    (35, "signing_package_mismatch", "fix_request"),
    (36, "attempt_completed", "new_attempt"),
    (37, "invalid_encoding", "fix_request"),
    (38, "registry_full", "retry"),
    (39, "store_commit_failed", "retry"),
    (40, "store_outcome_unknown", "new_attempt"),
    (41, "dev_feature_disabled", "fix_request"),
    (42, "signing_failed", "new_attempt"),
    (43, "store_not_loaded", "retry"),
    (44, "store_tampered", "operator"),
    (45, "store_rollback_detected", "operator"),
    (46, "dkg_unknown", "new_attempt"),
    (47, "dkg_config_invalid", "fix_request"),
    (48, "dkg_phase", "fix_request"),
    (49, "dkg_invalid_proof", "new_attempt"),
    (50, "dkg_decrypt_failed", "new_attempt"),
    (51, "dkg_invalid_share", "new_attempt"),
    (52, "dkg_transcript_mismatch", "new_attempt"),
    (53, "node_unavailable", "retry"),
    (54, "tls_required", "operator"),
    (55, "store_anchor_missing", "operator"),
    (56, "store_anchor_invalid", "operator"),
    (57, "listen_path_occupied", "operator"),
    (58, "quota_exceeded", "retry"),
    (59, "psbt_invalid", "fix_request"),
    (60, "psbt_wrong_key", "fix_request"),
    (61, "policy_violation", "fix_request"),
    (62, "derivation_invalid", "fix_request"),
    (63, "key_epoch_changed", "new_attempt"),
    (64, "backup_invalid", "fix_request"),
    (65, "commitment_unknown", "new_attempt"),
    (66, "store_damaged", "operator"),
    (67, "audit_trail_full", "operator"),
    (68, "audit_ack_invalid", "fix_request"),
    (69, "kek_rotation_too_soon", "operator"),
    (70, "backup_stale", "fix_request"),
    (71, "hsm_mechanism_missing", "operator"),
    (72, "custody_profile_mismatch", "operator"),
    (73, "attestation_invalid", "operator"),
    (74, "request_invalid", "fix_request"),
    (75, "request_conflict", "fix_request"),
    (76, "request_not_cancellable", "fix_request"),
    (77, "client_not_authorized", "fix_request"),
    (78, "store_unavailable", "retry"),
    (79, "request_unknown", "fix_request"),
    (80, "request_expired", "fix_request"),
];

#[test]
fn every_code_is_pinned_with_its_class_and_wire_index() {
    assert_eq!(ErrorCode::ALL.len(), PINNED.len(), "a code was added or removed: pin it here");
    for (&code, &(index, name, class)) in ErrorCode::ALL.iter().zip(PINNED) {
        assert_eq!(code.code(), name);
        assert_eq!(code.recovery_class().as_str(), class, "{name}");
        let wire = postcard::to_stdvec(&code).expect("encode");
        assert_eq!(wire, postcard::to_stdvec(&(index as u32)).expect("encode"), "{name} moved on the wire");
        assert_eq!(ErrorCode::from_code(name), Some(code));
    }
}

#[test]
fn codes_are_unique_snake_case() {
    let mut seen = std::collections::HashSet::new();
    for c in ErrorCode::ALL {
        assert!(seen.insert(c.code()), "duplicate {}", c.code());
        assert!(c.code().chars().all(|ch| ch.is_ascii_lowercase() || ch == '_'), "{} not snake_case", c.code());
    }
}

#[test]
fn recovery_class_names_are_pinned() {
    assert_eq!(RecoveryClass::Retry.as_str(), "retry");
    assert_eq!(RecoveryClass::NewAttempt.as_str(), "new_attempt");
    assert_eq!(RecoveryClass::FixRequest.as_str(), "fix_request");
    assert_eq!(RecoveryClass::Operator.as_str(), "operator");
}

#[test]
fn error_messages_are_bounded_and_display_code_and_class() {
    let e = Error::new(ErrorCode::ChannelClosed, "é".repeat(1000));
    assert!(e.message().len() <= frostgate_common::bounded::Text::MAX_LEN);
    assert!(e.to_string().starts_with("channel_closed (retry): "));
    let wire = postcard::to_stdvec(&e).expect("encode");
    assert_eq!(postcard::from_bytes::<Error>(&wire).expect("decode"), e);
}

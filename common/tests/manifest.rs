//! The checked-in boundary manifest equals the one generated from the code.
//! To accept a reviewed change: `FROSTGATE_BLESS=1 cargo test -p frostgate-common --test manifest`.

#[test]
fn checked_in_manifest_matches_the_code() {
    let generated = frostgate_common::manifest::render().expect("manifest renders");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("BOUNDARY.md");
    if std::env::var_os("FROSTGATE_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write manifest");
    }
    let checked_in = std::fs::read_to_string(&path).expect("common/BOUNDARY.md exists");
    assert!(
        checked_in == generated,
        "the boundary changed: review the diff, then regenerate common/BOUNDARY.md with \
         `cargo run -q -p frostgate-host -- enclave protocol > common/BOUNDARY.md`\n--- generated ---\n{generated}"
    );
}

#[test]
fn manifest_lists_every_message_kind_and_error_code() {
    let m = frostgate_common::manifest::render().expect("manifest renders");
    for (i, k) in frostgate_common::protocol::KINDS.iter().enumerate() {
        assert!(m.contains(&format!("| {i} | {} |", k.name)), "kind {} missing", k.name);
    }
    for c in frostgate_common::ErrorCode::ALL {
        assert!(m.contains(&format!("| {} | {} |", c.code(), c.recovery_class())), "code {} missing", c.code());
    }
}

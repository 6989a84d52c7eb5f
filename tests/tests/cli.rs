//! The `frostgate` CLI against real processes.

use frostgate_tests::{host_bin, EnclaveProcess};
use std::process::Command;

#[test]
fn enclave_status_spawns_a_child_enclave_and_reports_json() {
    let out = Command::new(host_bin()).args(["enclave", "status", "--spawn", "--json"]).output().expect("run");
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    // No custody configured: the enclave answers but refuses to sign, and says why.
    assert_eq!(v["state"], "refusing");
    assert_eq!(v["refusal_code"], "custody_not_configured");
    assert_eq!(v["protocol_version"], frostgate_common::protocol::PROTOCOL_VERSION);
    assert_eq!(v["build"]["name"], "frostgate-enclave");
}

#[test]
fn enclave_status_spawns_a_child_enclave_with_custody() {
    let dir = frostgate_tests::token::TokenDir::new();
    let token = dir.add_token("status1");
    let config = token.config.display().to_string();
    let init = Command::new(host_bin())
        .args(["token", "init", "--config", &config])
        .envs(token.env().iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("run");
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    let out = Command::new(host_bin())
        .args(["enclave", "status", "--spawn", "--json", "--config", &config])
        .envs(token.env().iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("run");
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    // Custody is up, but no host store was streamed to this enclave: it says so and refuses.
    assert_eq!(v["state"], "refusing");
    assert_eq!(v["refusal_code"], "store_not_loaded");
    assert_eq!(v["refusal_recovery_class"], "retry");
}

#[test]
fn enclave_status_connects_to_a_running_enclave() {
    let enclave = EnclaveProcess::start(&[]);
    let out = Command::new(host_bin())
        .args(["enclave", "status", "--connect"])
        .arg(format!("unix:{}", enclave.socket.display()))
        .output()
        .expect("run");
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("state:    refusing") && text.contains("refusal:  custody_not_configured (recovery: operator)"),
        "{text}"
    );
}

#[test]
fn enclave_status_without_an_enclave_fails_with_a_code() {
    let dir = tempfile::tempdir().expect("dir");
    let out = Command::new(host_bin())
        .args(["enclave", "status", "--connect"])
        .arg(dir.path().join("nobody-listens.sock"))
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("error: enclave_unavailable (recovery: retry)"), "{err}");
    assert_eq!(out.status.code(), Some(i32::from(frostgate_common::exit::RETRY)), "{err}");
}

#[test]
fn exit_statuses_follow_the_one_table_in_both_binaries() {
    use frostgate_common::exit;
    let dir = tempfile::tempdir().expect("dir");
    // A signature that does not verify: the input is wrong.
    let zero = "00".repeat(32);
    let out = Command::new(host_bin())
        .args(["verify", "--output-key", &zero, "--message", &zero, "--signature", &"00".repeat(64)])
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(i32::from(exit::status_for(&frostgate_common::Error::new(
            frostgate_common::ErrorCode::SigningFailed,
            "x"
        )))),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A missing configuration file: 2, from the host and from the enclave.
    let missing = dir.path().join("missing.toml");
    let out = Command::new(host_bin()).args(["status", "--cluster"]).arg(&missing).output().expect("run");
    assert_eq!(out.status.code(), Some(i32::from(exit::CONFIG)), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(frostgate_tests::enclave_bin())
        .args(["token", "inspect", "--config"])
        .arg(&missing)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(i32::from(exit::CONFIG)), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn enclave_status_refused_by_peer_credentials_reports_the_code() {
    let other = frostgate_tests::own_uid().wrapping_add(4242).to_string();
    let enclave = EnclaveProcess::start(&["--allowed-uid", &other]);
    let out =
        Command::new(host_bin()).args(["enclave", "status", "--connect"]).arg(&enclave.socket).output().expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("error: peer_not_authorized (recovery: operator)"), "{err}");
}

#[test]
fn enclave_protocol_prints_the_checked_in_manifest() {
    let out = Command::new(host_bin()).args(["enclave", "protocol"]).output().expect("run");
    assert!(out.status.success());
    let checked_in =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../common/BOUNDARY.md")).expect("manifest");
    assert_eq!(String::from_utf8_lossy(&out.stdout), checked_in);
}

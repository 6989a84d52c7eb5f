//! Custody through the real binaries: `token init` / `token inspect`, the boot self-check of
//! `frostgate-enclave serve`, the auditor's outside view with `pkcs11-tool`, and log hygiene.

use frostgate_common::protocol::ServiceState;
use frostgate_common::transport::Address;
use frostgate_host::node::enclave::EnclaveClient;
use frostgate_tests::token::{TestToken, TokenDir};
use frostgate_tests::{enclave_bin, host_bin, wait_bounded, EnclaveProcess};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Runs a binary with the token's environment and full tracing; returns its output.
fn run(bin: std::path::PathBuf, token: &TestToken, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .env("RUST_LOG", "trace")
        .envs(token.env().iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("run")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn init(token: &TestToken) -> serde_json::Value {
    let o = run(host_bin(), token, &["token", "init", "--json", "--config", &token.config.display().to_string()]);
    assert!(o.status.success(), "init: {}", text(&o));
    serde_json::from_slice(&o.stdout).expect("json")
}

/// Starts `serve` and expects it to refuse to boot; returns everything it printed.
fn boot_refused(token: &TestToken, config: &std::path::Path) -> String {
    let dir = tempfile::tempdir().expect("dir");
    let mut child = Command::new(enclave_bin())
        .args(["serve", "--listen"])
        .arg(dir.path().join("e.sock"))
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "trace")
        .envs(token.env().iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let status = wait_bounded(&mut child, Duration::from_secs(60));
    let out = child.wait_with_output().expect("output");
    let all = text(&out);
    assert!(!status.success(), "boot should have been refused:\n{all}");
    assert!(!all.contains("READY"), "never listened:\n{all}");
    assert!(!dir.path().join("e.sock").exists());
    all
}

#[test]
fn init_inspect_and_serve_ready() {
    let dir = TokenDir::new();
    let token = dir.add_token("node1");
    let v = init(&token);
    assert_eq!(v["identity_public_key"].as_str().expect("hex").len(), 130);

    let o = run(host_bin(), &token, &["token", "inspect", "--json", "--config", &token.config.display().to_string()]);
    assert!(o.status.success(), "inspect: {}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(report["ok"], true);
    let objects = report["objects"].as_array().expect("objects");
    assert_eq!(objects.len(), 4);
    for obj in objects {
        assert_eq!(obj["count"], 1);
        assert!(obj["violations"].as_array().expect("violations").is_empty(), "{obj}");
    }

    let enclave = EnclaveProcess::start_with_env(&["--config", &token.config.display().to_string()], token.env());
    let health = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt")
        .block_on(async {
            let store = std::sync::Arc::new(
                frostgate_host::node::store::HostStore::open(&dir.path().join("host.db")).expect("db"),
            );
            let client = EnclaveClient::connect_with_store(Address::Unix(enclave.socket.clone()), Some(store.clone()))
                .await
                .expect("connect");
            let before = client.health().await.expect("health");
            assert_eq!(before.state, ServiceState::Refusing(frostgate_common::ErrorCode::StoreNotLoaded));
            let status = client.load_store(&store, false).await.expect("load");
            assert_eq!((status.records, status.head_version, status.anchor_version), (0, 0, 0));
            client.health().await
        })
        .expect("health");
    assert_eq!(health.state, ServiceState::Ready);
    assert!(!enclave.logs().contains(&token.pin), "PIN in the enclave's log");
}

#[test]
fn serve_without_custody_reports_refusal_code() {
    let enclave = EnclaveProcess::start(&[]);
    let o = Command::new(host_bin())
        .args(["enclave", "status", "--json", "--connect"])
        .arg(&enclave.socket)
        .output()
        .expect("run");
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["state"], "refusing");
    assert_eq!(v["refusal_code"], "custody_not_configured");
    assert_eq!(v["refusal_recovery_class"], "operator");
}

#[test]
fn init_refuses_existing_objects_and_there_is_no_destructive_rotate() {
    let dir = TokenDir::new();
    let token = dir.add_token("node1");
    init(&token);
    let config = token.config.display().to_string();
    let o = run(host_bin(), &token, &["token", "init", "--config", &config]);
    assert!(!o.status.success());
    assert!(text(&o).contains("error: hsm_objects_exist (recovery: fix_request)"), "{}", text(&o));
    assert!(text(&o).contains("frostgate token rotate-kek"), "the refusal names the safe way: {}", text(&o));
    // Still exactly one of each object, unchanged.
    let o = run(host_bin(), &token, &["token", "inspect", "--json", "--config", &config]);
    assert!(o.status.success(), "{}", text(&o));
    // The flag that destroyed every object (and with the KEK every sealed share) is gone.
    for bin in [host_bin(), frostgate_tests::enclave_bin()] {
        let o = run(bin, &token, &["token", "init", "--danger-rotate", "--config", &config]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains("unexpected argument '--danger-rotate'"), "{}", text(&o));
    }
}

#[test]
fn the_kek_value_cannot_be_read_from_outside() {
    let dir = TokenDir::new();
    let token = dir.add_token("node1");
    init(&token);
    let out_file = dir.path().join("kek.bin");
    let o = token.pkcs11_tool(&[
        "--read-object",
        "--type",
        "secrkey",
        "--label",
        "frostgate-kek",
        "-o",
        &out_file.display().to_string(),
    ]);
    assert!(!o.status.success(), "reading the KEK succeeded: {}", text(&o));
    assert!(std::fs::read(&out_file).map(|b| b.is_empty()).unwrap_or(true), "KEK bytes written");
    let listing = token.pkcs11_tool(&["-O"]);
    let listing = text(&listing);
    assert!(listing.contains("frostgate-kek") && listing.contains("never extractable"), "{listing}");
}

#[test]
fn boot_refuses_a_weakened_object() {
    let dir = TokenDir::new();
    let token = dir.add_token("node1");
    init(&token);
    // An attacker (or a careless operator) replaces the KEK with an extractable one.
    let o = token.pkcs11_tool(&["--delete-object", "--type", "secrkey", "--label", "frostgate-kek"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = token.pkcs11_tool(&["--keygen", "--key-type", "AES:32", "--label", "frostgate-kek", "--extractable"]);
    assert!(o.status.success(), "{}", text(&o));
    let all = boot_refused(&token, &token.config);
    assert!(all.contains("error: hsm_object_policy_violation (recovery: operator)"), "{all}");
    assert!(all.contains("CKA_EXTRACTABLE is true"), "{all}");
    let o = run(host_bin(), &token, &["token", "inspect", "--json", "--config", &token.config.display().to_string()]);
    assert!(!o.status.success());
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(report["ok"], false);
    assert!(text(&o).contains("hsm_object_policy_violation"));
}

#[test]
fn boot_refuses_a_duplicated_label() {
    let dir = TokenDir::new();
    let token = dir.add_token("node1");
    init(&token);
    // A second object with the MAC root's label makes the choice ambiguous.
    let o =
        token.pkcs11_tool(&["--keygen", "--key-type", "GENERIC:32", "--label", "frostgate-mac-root", "--sensitive"]);
    assert!(o.status.success(), "{}", text(&o));
    let all = boot_refused(&token, &token.config);
    assert!(all.contains("hsm_object_policy_violation") && all.contains("2 objects carry this label"), "{all}");
}

#[test]
fn a_second_key_encryption_key_must_meet_the_policy_and_a_third_is_refused() {
    let dir = TokenDir::new();
    let token = dir.add_token("node1");
    init(&token);
    // Two key-encryption keys exist only during a rotation; the second is held to the same policy.
    let o = token.pkcs11_tool(&["--keygen", "--key-type", "AES:32", "--label", "frostgate-kek", "--sensitive"]);
    assert!(o.status.success(), "{}", text(&o));
    let all = boot_refused(&token, &token.config);
    assert!(all.contains("hsm_object_policy_violation") && all.contains("second Kek"), "{all}");
    assert!(all.contains("CKA_MODIFIABLE is true"), "{all}");
    let o = token.pkcs11_tool(&["--keygen", "--key-type", "AES:32", "--label", "frostgate-kek", "--sensitive"]);
    assert!(o.status.success(), "{}", text(&o));
    let all = boot_refused(&token, &token.config);
    assert!(all.contains("3 objects carry this label; one, or two during a rotation"), "{all}");
}

#[test]
fn boot_refuses_a_missing_object() {
    let dir = TokenDir::new();
    let token = dir.add_token("node1");
    init(&token);
    let o = token.pkcs11_tool(&["--delete-object", "--type", "secrkey", "--label", "frostgate-mac-root"]);
    assert!(o.status.success(), "{}", text(&o));
    let all = boot_refused(&token, &token.config);
    assert!(all.contains("error: hsm_object_missing (recovery: operator)"), "{all}");
    // Before init, everything is missing.
    let fresh = dir.add_token("node2");
    let all = boot_refused(&fresh, &fresh.config);
    assert!(all.contains("hsm_object_missing"), "{all}");
}

#[test]
fn wrong_pin_missing_token_missing_pin_and_bad_module_have_their_codes() {
    let dir = TokenDir::new();
    let token = dir.add_token("node1");
    init(&token);
    let wrong_pin = dir.path().join("wrong.pin");
    frostgate_tests::token::write_private(&wrong_pin, "not-the-pin\n");
    let cases = [
        (
            "wrong pin",
            token.config_with("wrong-pin", None, None, Some(&wrong_pin)),
            "error: hsm_pin_incorrect (recovery: operator)",
        ),
        (
            "missing token",
            token.config_with("no-token", None, Some("no-such-token"), None),
            "error: hsm_token_not_found (recovery: operator)",
        ),
        (
            "missing pin file",
            token.config_with("no-pin", None, None, Some(&dir.path().join("absent.pin"))),
            "error: hsm_pin_unavailable (recovery: operator)",
        ),
        (
            "bad module",
            token.config_with("bad-module", Some("/nonexistent/libpkcs11.so"), None, None),
            "error: hsm_module_unavailable (recovery: operator)",
        ),
    ];
    for (name, config, expected) in cases {
        let all = boot_refused(&token, &config);
        assert!(all.contains(expected), "{name}: {all}");
        let o = run(host_bin(), &token, &["token", "inspect", "--config", &config.display().to_string()]);
        assert!(!o.status.success() && text(&o).contains(expected), "{name} (inspect): {}", text(&o));
    }
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[custody]\ntoken_label = \"node1\"\npin = { file = \"/x\" }\nslot = 0\n").expect("write");
    let all = boot_refused(&token, &bad);
    assert!(all.contains("error: config_invalid (recovery: operator)") && all.contains("slot"), "{all}");
}

#[test]
fn the_pin_never_appears_in_any_output_or_log() {
    let dir = TokenDir::new();
    let token = dir.add_token("node1");
    let config = token.config.display().to_string();
    let mut seen = String::new();
    for args in [
        vec!["token", "init", "--config", &config],
        vec!["token", "init", "--config", &config],
        vec!["token", "inspect", "--config", &config],
        vec!["token", "inspect", "--json", "--config", &config],
    ] {
        seen.push_str(&text(&run(host_bin(), &token, &args)));
        seen.push_str(&text(&run(enclave_bin(), &token, &args)));
    }
    let enclave = EnclaveProcess::start_with_env(&["--config", &config], token.env());
    seen.push_str(&enclave.logs());
    drop(enclave);
    let wrong = dir.path().join("wrong.pin");
    let wrong_pin = format!("wrong-{}", frostgate_tests::token::random_hex(8));
    frostgate_tests::token::write_private(&wrong, &wrong_pin);
    let wrong_config = token.config_with("wrong", None, None, Some(&wrong));
    let refused = boot_refused(&token, &wrong_config);
    assert!(seen.contains("TRACE") || seen.contains("DEBUG") || seen.contains("INFO"), "logs were captured:\n{seen}");
    assert!(!seen.contains(&token.pin), "the PIN appeared in output or logs");
    assert!(!refused.contains(&wrong_pin), "a rejected PIN appeared in output or logs");
}

/// The enclave refuses a PIN file or a SoftHSM token directory that another user can read (or
/// that another user owns), before it reads the PIN.
#[test]
fn a_pin_file_or_token_directory_readable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TokenDir::new();
    let token = dir.add_token("node1");
    init(&token);
    let chmod = |p: &std::path::Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod")
    };
    chmod(&token.pin_file, 0o644);
    let all = boot_refused(&token, &token.config);
    assert!(all.contains("error: config_invalid (recovery: operator)") && all.contains("PIN file"), "{all}");
    chmod(&token.pin_file, 0o600);
    // SoftHSM's token directory (kryoptic keeps one database file per token instead).
    let tokens = dir.path().join("tokens");
    if tokens.exists() {
        chmod(&tokens, 0o755);
        let all = boot_refused(&token, &token.config);
        assert!(all.contains("error: config_invalid") && all.contains("token directory"), "{all}");
        chmod(&tokens, 0o700);
    }
    // Private again: the enclave starts.
    let config = token.config.display().to_string();
    drop(EnclaveProcess::start_with_env(&["--config", &config], token.env()));
}

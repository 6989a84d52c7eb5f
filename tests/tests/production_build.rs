//! A production build (each binary built with `-p`, as the README says) contains no development
//! code path: its enclave reports no dev feature and refuses `DevDealerKeygen` with
//! `dev_feature_disabled`, across a real process with HSM custody.
//!
//! The production binaries are built into the shared target directory and copied out; the
//! development binaries the other tests use are rebuilt right after (Cargo keeps both feature
//! sets' artifacts, so each rebuild only re-links).

use frostgate_common::error::ErrorCode;
use frostgate_common::protocol::{DevDealerKeygen, ServiceState};
use frostgate_common::transport::Address;
use frostgate_host::node::enclave::EnclaveClient;
use frostgate_tests::token::TokenDir;
use frostgate_tests::Daemon;
use std::path::{Path, PathBuf};
use std::process::Command;

fn cargo_build(args: &[&str]) {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    let status = Command::new(option_env!("CARGO").unwrap_or("cargo"))
        .args(["build", "--quiet", "--locked", "--bins", "-p", "frostgate-enclave", "-p", "frostgate-host"])
        .args(args)
        .current_dir(workspace)
        .status()
        .expect("cargo build");
    assert!(status.success(), "cargo build {args:?}");
}

/// The production `frostgate-enclave` and `frostgate`, copied into `dir`.
fn production_binaries(dir: &Path) -> (PathBuf, PathBuf) {
    let built = frostgate_tests::bin_dir().to_path_buf();
    cargo_build(&[]);
    let enclave = dir.join("frostgate-enclave");
    let host = dir.join("frostgate");
    std::fs::copy(built.join("frostgate-enclave"), &enclave).expect("copy enclave");
    std::fs::copy(built.join("frostgate"), &host).expect("copy host");
    // Put the development binaries back for every later test.
    cargo_build(&["--all-features"]);
    (enclave, host)
}

/// The production binaries, built once per test process (tests run in parallel and must not
/// race the build-and-restore above).
fn production_binaries_once() -> (PathBuf, PathBuf) {
    static BINS: std::sync::OnceLock<(tempfile::TempDir, PathBuf, PathBuf)> = std::sync::OnceLock::new();
    let (_, enclave, host) = BINS.get_or_init(|| {
        let dir = tempfile::Builder::new().prefix("fg-production-").tempdir().expect("dir");
        let (e, h) = production_binaries(dir.path());
        (dir, e, h)
    });
    (enclave.clone(), host.clone())
}

/// `frostgate token init` for `token` with `host_bin`, which must succeed.
fn token_init(host_bin: &Path, token: &frostgate_tests::token::TestToken) {
    let o = Command::new(host_bin)
        .args(["token", "init", "--config"])
        .arg(&token.config)
        .envs(token.env().iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("token init");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn version(bin: &Path) -> String {
    let o = Command::new(bin).arg("--version").output().expect("--version");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn a_production_build_has_no_dev_feature_and_refuses_the_dealer() {
    let tokens = TokenDir::new();
    let (enclave_bin, host_bin) = production_binaries_once();
    assert!(version(&enclave_bin).contains("(dev features: none)"), "{}", version(&enclave_bin));
    assert!(version(&frostgate_tests::enclave_bin()).contains("dev-dealer"), "the test build has the dealer");

    let token = tokens.add_token("prod");
    token_init(&host_bin, &token);
    let socket = tokens.path().join("enclave.sock");
    let args: Vec<String> = vec![
        "serve".into(),
        "--listen".into(),
        socket.display().to_string(),
        "--config".into(),
        token.config.display().to_string(),
    ];
    let mut enclave = Daemon::start(&enclave_bin, &args, token.env(), tokens.path().join("enclave.log"));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
    rt.block_on(async {
        let client = EnclaveClient::connect(Address::Unix(socket.clone())).await.expect("connect");
        assert_eq!(client.hello().build.dev_features.as_inner(), "");
        let health = client.health().await.expect("health");
        assert_eq!(health.dev_features.as_inner(), "");
        // Custody is up; the store is simply not loaded yet (no host).
        assert_eq!(health.state, ServiceState::Refusing(ErrorCode::StoreNotLoaded));
        let reply = client.channel().request(DevDealerKeygen { threshold: 2, participants: 3 }, None).await;
        assert_eq!(reply.expect_err("refused").code(), ErrorCode::DevFeatureDisabled);
    });
    // The development enclave, same token: it does report its dev features.
    enclave.kill();
    let mut dev = Daemon::start(&frostgate_tests::enclave_bin(), &args, token.env(), tokens.path().join("dev.log"));
    rt.block_on(async {
        let client = EnclaveClient::connect(Address::Unix(socket.clone())).await.expect("connect");
        assert!(client.hello().build.dev_features.as_inner().contains("dev-dealer"));
    });
    dev.kill();
}

/// A client generated by Google's protoc (Python, `grpcio-tools`), not by this build, against a
/// cluster of production binaries: `Health`, `GetIdentity`, `GetKey` of a DKG key, a malformed
/// request answered with its `frostgate-error-code`, `DevDealerKeygen` refused, and preprocessing:
/// `Preprocess`, a made-up commitment refused by `SignPreprocessed` and in a `SignBatch`, nothing
/// bound (`CloseSessions`), and `Attest` (no provider: every field empty; a short challenge
/// malformed).
#[test]
fn a_protoc_generated_python_client_talks_to_a_production_cluster() {
    let work = tempfile::tempdir().expect("dir");
    let (_, host_bin) = production_binaries_once();
    let c = frostgate_tests::dev_cluster::DevCluster::start(&host_bin, 3, 2, &["--dev-plaintext"]);
    let key_id = c.keygen()["key"].as_str().expect("key").to_string();
    let dir = c.dir.clone();
    let cluster = frostgate_host::coordinator::cluster::Cluster::load(&dir.join("cluster.toml")).expect("cluster");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    let out = work.path().join("generated");
    std::fs::create_dir(&out).expect("out dir");
    let o = Command::new("python3")
        .arg(workspace.join("tests/python/grpc_client.py"))
        .arg(workspace.join("host/proto"))
        .arg(&out)
        .arg(&cluster.nodes[0].api)
        .arg(&key_id)
        .output()
        .expect("python3");
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let seen: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(seen["health_ready"], true, "{seen}");
    assert_eq!(seen["health_dev_features"], "", "a production enclave: {seen}");
    assert_eq!(seen["identity_key_len"], 65);
    assert_eq!(seen["key_threshold"], 2);
    assert_eq!(seen["key_participants"], serde_json::json!([1, 2, 3]));
    assert_eq!(seen["key_output_key_len"], 32);
    assert_eq!(seen["malformed"]["code"], "malformed_message", "{seen}");
    assert_eq!(seen["malformed"]["recovery"], "fix_request");
    assert_eq!(seen["malformed"]["grpc"], "INVALID_ARGUMENT");
    assert_eq!(seen["dealer"]["code"], "dev_feature_disabled", "{seen}");
    assert_eq!(seen["preprocessed_ids"], serde_json::json!([16, 16]), "{seen}");
    assert_eq!(seen["attestation"], serde_json::json!({"provider": "none", "document_len": 0, "boot_key_len": 0}));
    assert_eq!(seen["attest_short"]["code"], "malformed_message", "{seen}");
    assert_eq!(seen["made_up"]["code"], "commitment_unknown", "{seen}");
    assert_eq!(seen["made_up"]["recovery"], "new_attempt", "{seen}");
    assert_eq!(seen["batch_refused"], serde_json::json!(["commitment_unknown", "commitment_unknown"]), "{seen}");
    assert_eq!(seen["closed"], 0, "a refused signing binds nothing: {seen}");
}

/// `[attestation] provider = "software"` is a development feature: a production enclave refuses
/// to start with it (`dev_feature_disabled`), and `nitro` outside a Nitro Enclave is refused
/// naming the missing device; neither starts unattested.
#[test]
fn a_production_enclave_refuses_the_software_attestation_provider() {
    let tokens = TokenDir::new();
    let (enclave_bin, host_bin) = production_binaries_once();
    let token = tokens.add_token("prod-attest");
    token_init(&host_bin, &token);
    let base = std::fs::read_to_string(&token.config).expect("config");
    for (provider, expected) in [("software", "dev_feature_disabled"), ("nitro", "/dev/nsm")] {
        std::fs::write(&token.config, format!("{base}\n[attestation]\nprovider = \"{provider}\"\n")).expect("config");
        let o = Command::new(&enclave_bin)
            .args(["serve", "--listen"])
            .arg(tokens.path().join(format!("{provider}.sock")))
            .arg("--config")
            .arg(&token.config)
            .envs(token.env().iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("serve");
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{provider}: started\n{stderr}");
        assert!(stderr.contains(expected), "{provider}: {stderr}");
    }
}

//! `frostgate node --config node.toml`: one process command that runs an enclave child and the host.

use frostgate_common::protocol::TaprootMode;
use frostgate_tests::node::Node;
use frostgate_tests::signing::*;
use frostgate_tests::{host_bin, Daemon};

fn write_config(node: &Node, extra: &str) -> std::path::PathBuf {
    let path = node.tokens.path().join("frostgate-node.toml");
    std::fs::write(
        &path,
        format!(
            "[node]\ndb = \"{}\"\nlisten = \"{}\"\nmetrics_listen = \"127.0.0.1:0\"\n{extra}\n[enclave]\nsocket = \"{}\"\nconfig = \"{}\"\n",
            node.db.display(),
            node.host_socket().display(),
            node.tokens.path().join("child-enclave.sock").display(),
            node.token.config.display(),
        ),
    )
    .expect("node.toml");
    path
}

#[test]
fn a_node_runs_its_enclave_as_a_child_signs_and_stops_both_on_sigterm() {
    let node = Node::new();
    let config = write_config(&node, "");
    let log = node.tokens.path().join("node.log");
    let args = vec!["node".to_string(), "--config".into(), config.display().to_string()];
    let mut daemon = Daemon::start(&host_bin(), &args, node.token.env(), log);
    assert!(daemon.ready.contains("metrics=http://127.0.0.1:"), "{}", daemon.ready);
    let child_socket = node.tokens.path().join("child-enclave.sock");
    assert!(child_socket.exists(), "the enclave child listens");
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt").block_on(async {
        let c = node.caller().await;
        let key = dealer(&c, 2, 3).await;
        let p = prepare(&c, key.key, &[pid(1), pid(3)], TaprootMode::Bip86).await;
        let shares = sign_all(&c, &p).await;
        match aggregate(&c, p.attempt, p.mode, &p.package, &shares).await.expect("aggregate") {
            frostgate_common::protocol::AggregateOutcome::Signed { signature, output_key } => {
                assert!(libsecp_verifies(&signature, &p.message, &output_key));
            }
            other => panic!("{other:?}"),
        }
    });
    let status = daemon.terminate();
    assert!(status.success(), "{status:?}\n{}", daemon.logs());
    // The child got SIGTERM with its parent and removed its socket.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while child_socket.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!child_socket.exists(), "the enclave child stopped with the node");
}

#[test]
fn a_node_config_with_an_unknown_field_is_refused() {
    let node = Node::new();
    let config = write_config(&node, "slot = 3");
    let out = std::process::Command::new(host_bin()).args(["node", "--config"]).arg(&config).output().expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("error: config_invalid (recovery: operator)") && err.contains("slot"), "{err}");
}

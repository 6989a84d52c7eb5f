//! HSM key-encryption-key rotation on running nodes (`frostgate token rotate-kek`): every share
//! resealed under a new key, durable and anchored, before the old key is destroyed; a kill -9 at
//! every step leaves a node that boots and signs, and a second run finishes the rotation.

use frostgate_common::protocol::TaprootMode;
use frostgate_tests::dkg::{
    dkg_key, relay_over as relay, runtime as rt, sign_multi, start_nodes as cluster, stored_key, unsealed_share,
};
use frostgate_tests::node::Node;
use frostgate_tests::signing::pid;
use frostgate_tests::{bin_dir, host_bin};
use std::process::{Command, Output};

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn rotate(node: &Node) -> Output {
    let socket = format!("unix:{}", node.host_socket().display());
    Command::new(host_bin()).args(["token", "rotate-kek", "--connect", &socket, "--json"]).output().expect("run")
}

/// The number of key-encryption keys on the node's token (`token inspect`, node stopped), and
/// whether the inspection found no violation.
fn keks(node: &Node) -> (u64, bool) {
    let o = Command::new(host_bin())
        .args(["token", "inspect", "--json", "--config", &node.token.config.display().to_string()])
        .envs(node.token.env().iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("inspect");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{}", text(&o)));
    let kek = v["objects"].as_array().expect("objects").iter().find(|r| r["role"] == "kek").expect("kek").clone();
    (kek["count"].as_u64().expect("count"), v["ok"] == true)
}

/// The `CKA_ID`s (hex) of the key-encryption keys on the node's token (node stopped).
fn kek_ids(node: &Node) -> Vec<String> {
    let o = node.token.pkcs11_tool(&["--list-objects", "--type", "secrkey"]);
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let mut ids = Vec::new();
    let mut in_kek = false;
    for line in text.lines().map(str::trim) {
        if let Some(label) = line.strip_prefix("label:") {
            in_kek = label.trim() == "frostgate-kek";
        } else if let Some(id) = line.strip_prefix("ID:").filter(|_| in_kek) {
            ids.push(id.trim().to_string());
        }
    }
    ids.sort();
    ids
}

/// Whether the node's token can unseal seat 1 from the store at `db` (node stopped).
fn unseals(node: &Node, db: &std::path::Path, key: frostgate_common::ids::KeyId) -> bool {
    Command::new(bin_dir().join("frostgate-test-unseal"))
        .args([&node.token.config.display().to_string(), &db.display().to_string(), &key.to_string(), "1"])
        .envs(node.token.env().iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("run")
        .status
        .success()
}

#[test]
fn rotation_reseals_every_share_destroys_the_old_key_and_the_node_signs() {
    let mut nodes = cluster(3);
    let rt = rt();
    let key = rt.block_on(async { dkg_key(&relay(&nodes).await, 2).await.key });
    nodes[0].kill();
    let (_, share) = unsealed_share(&nodes[0], key, pid(1));
    let before = nodes[0].db.with_extension("before-rotation");
    std::fs::copy(&nodes[0].db, &before).expect("copy");
    let old_blob = stored_key(&nodes[0].db, key).1[0].2.clone();
    nodes[0].start();

    let o = rotate(&nodes[0]);
    assert!(o.status.success(), "{}\n{}", text(&o), nodes[0].logs());
    let out: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!((out["keys"].as_u64(), out["seats"].as_u64()), (Some(1), Some(1)), "{out}");
    rt.block_on(async {
        let relay = relay(&nodes).await;
        sign_multi(&relay.nodes[..2], key, TaprootMode::Bip86).await;
    });

    nodes[0].kill();
    assert_eq!(keks(&nodes[0]), (1, true), "exactly one key-encryption key after the rotation");
    // The same share, under a new key: the old blob no longer opens (its key is destroyed) and is
    // gone from the store.
    assert_eq!(unsealed_share(&nodes[0], key, pid(1)).1, share);
    assert!(!unseals(&nodes[0], &before, key), "a blob sealed under the destroyed key still unseals");
    assert_ne!(stored_key(&nodes[0].db, key).1[0].2, old_blob);
    let db = std::fs::read(&nodes[0].db).expect("db");
    assert!(!db.windows(old_blob.len()).any(|w| w == old_blob.as_slice()), "the old blob is still in host.db");
    nodes[0].start();
    rt.block_on(async { sign_multi(&relay(&nodes).await.nodes[..2], key, TaprootMode::Bip86).await });
}

#[test]
fn a_kill_at_every_step_of_a_rotation_leaves_a_node_that_boots_signs_and_finishes_it() {
    let mut nodes = cluster(3);
    // Rotations back to back (each step begins a new one): no interval between them here.
    nodes[0].enclave_args.push("--kek-rotation-interval-secs=0".into());
    let rt = rt();
    let key = rt.block_on(async { dkg_key(&relay(&nodes).await, 2).await.key });
    // (fault point, key-encryption keys on the token after the crash)
    let steps = [
        ("kek_after_create", 2),
        // The reseal commit acknowledged by the host, the HSM anchor not yet advanced.
        ("after_ack_before_anchor", 2),
        ("kek_after_reseal", 2),
        ("kek_after_destroy", 1),
    ];
    for (point, after) in steps {
        nodes[0].kill();
        let before = kek_ids(&nodes[0]);
        assert_eq!(before.len(), 1, "{before:?}");
        nodes[0].start();
        nodes[0].arm(point);
        let o = rotate(&nodes[0]);
        assert!(!o.status.success(), "{point}: the enclave should have crashed: {}", text(&o));
        nodes[0].kill();
        assert_eq!(keks(&nodes[0]), (after, true), "{point}: key-encryption keys after the crash");
        nodes[0].start();
        rt.block_on(async { sign_multi(&relay(&nodes).await.nodes[..2], key, TaprootMode::Bip86).await });
        // A second run finishes (or repeats) the rotation.
        let o = rotate(&nodes[0]);
        assert!(o.status.success(), "{point}: {}\n{}", text(&o), nodes[0].logs());
        rt.block_on(async { sign_multi(&relay(&nodes).await.nodes[..2], key, TaprootMode::Bip86).await });
        nodes[0].kill();
        assert_eq!(keks(&nodes[0]), (1, true), "{point}: one key-encryption key after the second run");
        // Whatever the crash, the rotation ends on the new key (its id is the old one's plus
        // one), never back on the old one.
        let after_ids = kek_ids(&nodes[0]);
        assert_eq!(after_ids.len(), 1);
        assert_ne!(after_ids, before, "{point}: the rotation kept the old key-encryption key");
        let (old, new) = (
            u128::from_str_radix(&before[0], 16).expect("hex id"),
            u128::from_str_radix(&after_ids[0], 16).expect("hex id"),
        );
        assert!(new > old, "{point}: {before:?} -> {after_ids:?}");
        nodes[0].start();
    }
}

/// The host's local socket can ask for a rotation at any time: the enclave allows one per
/// `--kek-rotation-interval-secs` (default an hour), across restarts, and each rotation is a record
/// of the chain and an entry of the audit trail.
#[test]
fn a_rotation_is_audited_and_another_within_the_interval_is_refused() {
    let mut node = Node::new();
    let mut config = std::fs::read_to_string(&node.token.config).expect("config");
    config.push_str("\n[policy]\nnetwork = \"regtest\"\n");
    std::fs::write(&node.token.config, config).expect("config");
    node.start();
    let o = rotate(&node);
    assert!(o.status.success(), "{}\n{}", text(&o), node.logs());
    let o = rotate(&node);
    assert!(!o.status.success() && text(&o).contains("kek_rotation_too_soon"), "{}", text(&o));
    // A restart does not reset the interval (the rotation is a record of the store).
    node.kill();
    node.start();
    let o = rotate(&node);
    assert!(!o.status.success() && text(&o).contains("kek_rotation_too_soon"), "{}", text(&o));
    // The audit trail names the rotation.
    let export = node.db.with_extension("audit.jsonl");
    let socket = format!("unix:{}", node.host_socket().display());
    let o = Command::new(host_bin())
        .args(["audit", "export", "--connect", &socket, "--out", &export.display().to_string()])
        .output()
        .expect("export");
    assert!(o.status.success(), "{}", text(&o));
    let rows = std::fs::read_to_string(&export).expect("export");
    let rotations = rows.lines().filter(|l| l.contains("\"decision\":\"kek_rotated\"")).count();
    assert_eq!(rotations, 1, "{rows}");
    node.kill();
    assert_eq!(keks(&node), (1, true));
}

//! Repair of a lost seat onto a fresh node (new token, empty store): threshold helpers rebuild
//! the seat's share inside the new enclave, checked against the verifying share; the runbook of
//! `OPERATIONS.md` run as an operator would, plus a relay that tampers with the contributions.

use frostgate_common::error::ErrorCode;
use frostgate_common::ids::KeyId;
use frostgate_common::protocol::TaprootMode;
use frostgate_tests::dev_cluster::DevCluster;
use frostgate_tests::dkg::{
    dkg_key, relay_over, runtime, sign_multi, start_nodes, unseal_with, unsealed_share, Tamper,
};
use frostgate_tests::host_bin;
use frostgate_tests::node::Node;
use frostgate_tests::signing::{pid, random};
use std::str::FromStr;

/// Seat `seat` of `key` as dev-cluster node `i`'s own token unseals it from its store (stopped).
fn share_of(c: &DevCluster, i: u16, key: KeyId, seat: u16) -> Vec<u8> {
    let n = c.node(i);
    let env = [("SOFTHSM2_CONF".to_string(), n.join("enclave/softhsm2.conf").display().to_string())];
    // Run as root, a dev cluster's enclave runs as its own user, which alone reads the PIN file.
    let user = nix::unistd::geteuid().is_root().then_some("frostgate-dev-enclave");
    // The store belongs to the host's user: a copy the enclave's user can open.
    let copy = tempfile::tempdir().expect("dir");
    let open = |p: &std::path::Path, mode| {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(mode)).expect("chmod")
    };
    open(copy.path(), 0o777);
    for suffix in ["", "-wal"] {
        let from = format!("{}{suffix}", n.join("host/host.db").display());
        let to = copy.path().join(format!("host.db{suffix}"));
        if std::fs::copy(&from, &to).is_ok() {
            open(&to, 0o666);
        }
    }
    unseal_with(&n.join("enclave/enclave.toml"), &copy.path().join("host.db"), &env, user, key, pid(seat)).1
}

#[test]
fn a_lost_node_is_repaired_from_two_helpers_and_signs_with_the_same_share() {
    let c = DevCluster::start(&host_bin(), 3, 2, &[]);
    let key = c.keygen()["key"].as_str().expect("key").to_string();
    let key_id = KeyId::from_str(&key).expect("key id");
    c.sign(&key, &hex::encode(random::<32>())).unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    // Node 3's share as its own token holds it, before the loss.
    c.kill(3);
    let lost = share_of(&c, 3, key_id, 3);
    // Node 3 loses its token and its disk; the operator pins the new identity everywhere.
    let d = c.dir.display().to_string();
    c.run(&["dev", "cluster", "replace-node", "--dir", &d, "--node", "3", "--json"]).expect("replace");
    // The helpers still run with the old pins: they refuse to help a seat pinned elsewhere.
    c.up(&[]).expect("up");
    let e = c.run(&["repair", "--cluster", &c.file(), "--key", &key, "--seat", "3"]).expect_err("old pins");
    assert!(e.contains("dkg_config_invalid") && e.contains("pin the new enclave's identity"), "{e}");
    for i in [1, 2] {
        c.kill(i);
    }
    c.up(&[]).expect("up with the new pins");
    let out = c
        .run(&["repair", "--cluster", &c.file(), "--key", &key, "--seat", "3", "--json"])
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    assert_eq!((out["key"].as_str(), out["seat"].as_u64()), (Some(key.as_str()), Some(3)), "{out}");
    assert_eq!(out["helpers"], serde_json::json!([1, 2]));
    // Node 3 signs again: with node 1 down, every signature needs it.
    c.kill(1);
    let signed = c.sign(&key, &hex::encode(random::<32>())).unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    assert_eq!(signed["signers"], serde_json::json!([2, 3]), "{signed}");
    // The repaired share is the lost one, now sealed under the new token.
    c.kill(3);
    assert_eq!(share_of(&c, 3, key_id, 3), lost);
    // A second repair onto a node that holds the key is refused.
    c.up(&[]).expect("up");
    let e = c.run(&["repair", "--cluster", &c.file(), "--key", &key, "--seat", "3"]).expect_err("already held");
    assert!(e.contains("already held here"), "{e}");
}

#[test]
fn a_tampered_delta_or_sigma_names_its_sender_and_nothing_is_stored() {
    let mut nodes = start_nodes(3);
    let rt = runtime();
    let key = rt.block_on(async { dkg_key(&relay_over(&nodes).await, 2).await.key });
    // Node 3 is lost and replaced; everyone pins the new identity.
    nodes[2].kill();
    nodes[2] = Node::new();
    Node::pin_group(&nodes);
    for n in nodes.iter_mut() {
        n.kill();
        n.start();
    }
    let relay = rt.block_on(async {
        let relay = relay_over(&nodes).await;
        let helpers = [pid(1), pid(2)];
        // A delta from helper 2 to helper 1 altered in transit: helper 1 names 2.
        let run = relay
            .repair(key, pid(3), &helpers, &Tamper { envelope: Some((pid(2), pid(1))), ..Tamper::default() })
            .await;
        let blame = run.blames.get(&pid(1)).expect("helper 1 blames");
        assert_eq!((blame.code, blame.culprit), (ErrorCode::DkgDecryptFailed, pid(2)), "{run:?}");
        assert!(run.keys.is_empty(), "{run:?}");
        // A sigma from helper 1 to the new enclave altered in transit: the new enclave names 1.
        let run = relay
            .repair(key, pid(3), &helpers, &Tamper { envelope: Some((pid(1), pid(3))), ..Tamper::default() })
            .await;
        let blame = run.blames.get(&pid(3)).expect("the new enclave blames");
        assert_eq!((blame.code, blame.culprit), (ErrorCode::DkgDecryptFailed, pid(1)), "{run:?}");
        assert!(run.keys.is_empty(), "{run:?}");
        let e = relay.nodes[2].1.request(frostgate_common::protocol::KeyRef { key }).await.expect_err("not stored");
        assert_eq!(e.code(), ErrorCode::UnknownKey);
        // Untampered, the repair succeeds and the new node signs with either helper.
        let run = relay.repair(key, pid(3), &helpers, &Tamper::default()).await;
        assert_eq!(run.keys.len(), 1, "{run:?}");
        for other in [0, 1] {
            sign_multi(&[relay.nodes[other].clone(), relay.nodes[2].clone()], key, TaprootMode::Bip86).await;
        }
        relay
    });
    // No share (the repaired one, or a helper's) in any log, store file or relayed message.
    for n in nodes.iter_mut() {
        n.kill();
    }
    let shares: Vec<Vec<u8>> = (0..3).map(|i| unsealed_share(&nodes[i], key, pid(i as u16 + 1)).1).collect();
    let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    let recorded = relay.recorded.lock().expect("lock");
    assert!(recorded.len() > 10);
    for share in &shares {
        for n in &nodes {
            for suffix in ["", "-wal"] {
                let bytes = std::fs::read(format!("{}{suffix}", n.db.display())).unwrap_or_default();
                assert!(!contains(&bytes, share), "a share in a store file");
            }
            assert!(!contains(n.logs().as_bytes(), share) && !n.logs().contains(&hex::encode(share)), "in the logs");
        }
        assert!(recorded.iter().all(|m| !contains(m, share)), "a share in a relayed message");
    }
}

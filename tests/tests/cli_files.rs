//! The CLI touches only the files it owns: outputs never follow a symbolic link nor overwrite
//! without `--force`, `dev cluster init` writes only into a new or empty directory, `dev cluster
//! down` signals only its own nodes' daemons, and node logs are private to their owner.

use frostgate_tests::dev_cluster::{DevCluster, Process};
use frostgate_tests::host_bin;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

fn frostgate(args: &[&str]) -> std::process::Output {
    Command::new(host_bin()).args(args).output().expect("run frostgate")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A victim file and a link to it: (victim, link).
fn planted_link(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let victim = dir.join("victim.txt");
    std::fs::write(&victim, b"precious\n").expect("victim");
    let link = dir.join("out");
    std::os::unix::fs::symlink(&victim, &link).expect("link");
    (victim, link)
}

#[test]
fn backup_and_sign_psbt_outputs_never_follow_a_link_nor_overwrite() {
    let tmp = tempfile::tempdir().expect("dir");
    let (victim, link) = planted_link(tmp.path());
    let existing = tmp.path().join("existing.json");
    std::fs::write(&existing, b"old\n").expect("existing");
    let key = "11".repeat(32);
    for out in [&link, &existing] {
        for force in [false, true] {
            let mut args =
                vec!["backup", "--connect", "unix:/nonexistent/host.sock", "--key", key.as_str(), "--out", s(out)];
            if force {
                args.push("--force");
            }
            let o = frostgate(&args);
            assert!(!o.status.success());
            let stderr = String::from_utf8_lossy(&o.stderr);
            if out == &link || !force {
                // Refused before the node is even asked.
                assert!(stderr.contains(s(out)) && !stderr.contains("nonexistent"), "{stderr}");
            }
        }
    }
    assert_eq!(std::fs::read(&victim).expect("victim"), b"precious\n");
    assert_eq!(std::fs::read(&existing).expect("existing"), b"old\n");

    let cluster = DevCluster::init(&host_bin(), 3, 2, &["--dev-plaintext"]);
    let cluster_file = cluster.dir.join("cluster.toml");
    let psbt = tmp.path().join("in.psbt");
    std::fs::write(&psbt, b"cHNidP8BAA==\n").expect("psbt");
    for force in [false, true] {
        let mut args = vec![
            "sign-psbt",
            "--cluster",
            s(&cluster_file),
            "--key",
            key.as_str(),
            "--psbt",
            s(&psbt),
            "--out",
            s(&link),
        ];
        if force {
            args.push("--force");
        }
        let o = frostgate(&args);
        assert!(!o.status.success());
        assert!(String::from_utf8_lossy(&o.stderr).contains("symbolic link"), "{o:?}");
    }
    assert_eq!(std::fs::read(&victim).expect("victim"), b"precious\n");
}

/// The bytes, owner and mode of the operator's files planted in `d`.
fn files_as_found(d: &Path) -> Vec<(Vec<u8>, u32, u32)> {
    ["notes.txt", "tls/coordinator.key"]
        .iter()
        .map(|f| {
            let m = std::fs::metadata(d.join(f)).expect("meta");
            (std::fs::read(d.join(f)).expect("read"), m.uid(), m.mode())
        })
        .collect()
}

#[test]
fn dev_cluster_init_refuses_a_directory_that_holds_anything() {
    let tmp = tempfile::tempdir().expect("dir");
    let d = tmp.path().join("d");
    std::fs::create_dir_all(d.join("tls")).expect("dirs");
    std::fs::write(d.join("notes.txt"), b"mine\n").expect("notes");
    std::fs::write(d.join("tls/coordinator.key"), b"my key\n").expect("key");
    let before = files_as_found(&d);
    let o = frostgate(&["dev", "cluster", "init", "--dir", s(&d), "--nodes", "3", "--threshold", "2"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not empty"), "{o:?}");
    let after = files_as_found(&d);
    assert_eq!(before, after, "nothing in the directory changed");
    assert!(!d.join("node1").exists(), "no node directory created");
    // A link to a directory is not a directory of ours either.
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(tmp.path().join("empty"), &link).expect("link");
    std::fs::create_dir(tmp.path().join("empty")).expect("empty");
    let o = frostgate(&["dev", "cluster", "init", "--dir", s(&link), "--nodes", "3", "--threshold", "2"]);
    assert!(!o.status.success(), "{o:?}");
    assert_eq!(std::fs::read_dir(tmp.path().join("empty")).expect("read").count(), 0);
}

#[test]
fn dev_cluster_down_signals_only_its_own_daemons() {
    let tmp = tempfile::tempdir().expect("dir");
    let d = tmp.path().join("d");
    std::fs::create_dir_all(d.join("node1")).expect("dirs");
    let mut bystander = Command::new("sleep").arg("600").spawn().expect("sleep");
    std::fs::write(d.join("node1/host.pid"), bystander.id().to_string()).expect("pid");
    std::fs::write(d.join("node1/enclave.pid"), std::process::id().to_string()).expect("pid");
    let o = frostgate(&["dev", "cluster", "down", "--dir", s(&d)]);
    assert!(o.status.success(), "{o:?}");
    assert!(bystander.try_wait().expect("wait").is_none(), "an unrelated process named by a pid file must live");
    bystander.kill().expect("kill");
    let _ = bystander.wait();
}

#[test]
fn dev_cluster_logs_are_private_to_their_owner() {
    let cluster = DevCluster::start(&host_bin(), 2, 2, &["--dev-plaintext"]);
    for log in ["enclave.log", "host.log"] {
        let mode = std::fs::metadata(cluster.dir.join("node1").join(log)).expect("log").permissions().mode();
        assert_eq!(mode & 0o077, 0, "{log} mode {mode:o}");
    }
}

/// A node's port is chosen at `init` and bound at `up`: if something took it meanwhile, `up`
/// names the node, the address and the cause, starts the nodes that can start, and a second `up`
/// once the port is free starts the rest.
#[test]
fn dev_cluster_up_names_a_taken_port_and_starts_the_node_once_it_is_free() {
    let cluster = DevCluster::init(&host_bin(), 2, 2, &["--dev-plaintext"]);
    let toml = std::fs::read_to_string(cluster.dir.join("cluster.toml")).expect("cluster.toml");
    let apis: Vec<&str> =
        toml.lines().filter_map(|l| l.trim().strip_prefix("api = \"")).filter_map(|l| l.strip_suffix('"')).collect();
    assert_eq!(apis.len(), 2, "{toml}");
    let taken = std::net::TcpListener::bind(apis[1]).expect("the second node's port is free before up");
    let e = cluster.up(&[]).expect_err("a taken port");
    assert!(
        e.contains("enclave_unavailable")
            && e.contains("node 2")
            && e.contains(apis[1])
            && e.contains("Address already in use"),
        "{e}"
    );
    assert!(!e.contains("node 1"), "node 1 started: {e}");
    assert!(cluster.pid(1, Process::Host).is_some(), "the node that could start runs");
    drop(taken);
    cluster.up(&[]).expect("up once the port is free");
    for node in 1..=2 {
        assert!(cluster.pid(node, Process::Host).is_some() && cluster.pid(node, Process::Enclave).is_some());
    }
    let key = cluster.keygen()["key"].as_str().expect("key").to_string();
    let signed = cluster.sign(&key, &"ab".repeat(32)).expect("signs with both nodes");
    assert!(signed["signature"].is_string(), "{signed}");
}

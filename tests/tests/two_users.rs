//! Two users on one machine (`[node] user` + `[enclave] user`, node started as root): the enclave
//! and the host run as separate users; the host's user can read neither the PIN, the token files,
//! nor the enclave's memory or environment; the enclave's own user cannot dump it either (it is
//! not dumpable); and the node still signs.
//!
//! Needs root (to create the two test users and start the node); elsewhere it says so and passes
//! nothing off as tested.

use frostgate_common::protocol::{Health, ServiceState, TaprootMode};
use frostgate_host::coordinator::signer::SignerClient;
use frostgate_tests::node::Node;
use frostgate_tests::signing::*;
use frostgate_tests::{host_bin, Daemon};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const HOST_USER: &str = "fgtest-host";
const ENCLAVE_USER: &str = "fgtest-enclave";

fn ensure_user(name: &str) -> (u32, u32) {
    if frostgate_common::privileges::account(name).is_err() {
        let o = Command::new("useradd")
            .args(["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name])
            .output()
            .expect("useradd");
        assert!(o.status.success(), "useradd {name}: {}", String::from_utf8_lossy(&o.stderr));
    }
    let a = frostgate_common::privileges::account(name).expect("account");
    (a.uid, a.gid)
}

fn chown_r(path: &Path, uid: u32, gid: u32) {
    let o = Command::new("chown").args(["-R", &format!("{uid}:{gid}")]).arg(path).output().expect("chown");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Runs `cat path` as `uid:gid`; true if it could read it.
fn can_read_as(uid: u32, gid: u32, path: &Path) -> bool {
    Command::new("cat").arg(path).uid(uid).gid(gid).output().map(|o| o.status.success()).unwrap_or(false)
}

fn uid_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = status.lines().find(|l| l.starts_with("Uid:")).expect("Uid line");
    line.split_whitespace().nth(1).and_then(|u| u.parse().ok()).expect("uid")
}

#[test]
fn the_host_user_cannot_read_the_pin_the_token_or_the_enclave_and_the_node_signs() {
    if !nix::unistd::geteuid().is_root() {
        // A skipped test must say so where CI logs show it.
        #[allow(clippy::print_stderr)]
        {
            eprintln!("SKIPPED: two-user separation needs root to create users and start the node");
        }
        return;
    }
    let (host_uid, host_gid) = ensure_user(HOST_USER);
    let (enclave_uid, enclave_gid) = ensure_user(ENCLAVE_USER);
    let node = Node::new();
    // The enclave's files: token directory, PIN, enclave.toml, SoftHSM conf, all its user's alone.
    let enclave_dir = node.tokens.path();
    chown_r(enclave_dir, enclave_uid, enclave_gid);
    let base = tempfile::Builder::new().prefix("fg-two-users-").tempdir().expect("dir");
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let sock_dir = base.path().join("run");
    let host_dir = base.path().join("host");
    std::fs::create_dir(&sock_dir).expect("run dir");
    std::fs::create_dir(&host_dir).expect("host dir");
    chown_r(&sock_dir, enclave_uid, enclave_gid);
    std::fs::set_permissions(&host_dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    chown_r(&host_dir, host_uid, host_gid);
    // The token dir's parent is a root-only temp dir: let the enclave user traverse it.
    std::fs::set_permissions(enclave_dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let config = base.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\ndb = \"{}\"\nuser = \"{HOST_USER}\"\n[enclave]\nsocket = \"{}\"\nconfig = \"{}\"\nuser = \"{ENCLAVE_USER}\"\n[api]\nlisten = \"127.0.0.1:0\"\ndev_plaintext = true\n",
            host_dir.join("host.db").display(),
            sock_dir.join("enclave.sock").display(),
            node.token.config.display(),
        ),
    )
    .expect("node.toml");
    let args = vec!["node".to_string(), "--config".into(), config.display().to_string()];
    let daemon = Daemon::start(&host_bin(), &args, node.token.env(), base.path().join("node.log"));

    // Who runs what.
    let node_pid = daemon.pid().expect("running");
    let children: Vec<u32> = String::from_utf8_lossy(
        &Command::new("pgrep").args(["-P", &node_pid.to_string()]).output().expect("pgrep").stdout,
    )
    .lines()
    .filter_map(|l| l.trim().parse().ok())
    .collect();
    assert_eq!(children.len(), 2, "enclave and host children: {children:?}");
    let uids: Vec<u32> = children.iter().map(|p| uid_of(*p)).collect();
    assert!(uids.contains(&host_uid) && uids.contains(&enclave_uid), "{uids:?}");
    let enclave_pid = children[uids.iter().position(|u| *u == enclave_uid).expect("enclave child")];

    // What the host's user cannot reach.
    assert!(!can_read_as(host_uid, host_gid, &node.token.pin_file), "host user read the PIN");
    let token_files = std::fs::read_dir(enclave_dir.join("tokens")).expect("tokens").flatten().count();
    assert!(token_files > 0);
    let listed = Command::new("ls").arg(enclave_dir.join("tokens")).uid(host_uid).gid(host_gid).output().expect("ls");
    assert!(!listed.status.success(), "host user listed the token directory");
    for f in ["environ", "mem", "maps"] {
        let p = Path::new("/proc").join(enclave_pid.to_string()).join(f);
        assert!(!can_read_as(host_uid, host_gid, &p), "host user read {}", p.display());
        // Not dumpable: not even the enclave's own user can read these (same-uid gcore/ptrace).
        assert!(!can_read_as(enclave_uid, enclave_gid, &p), "enclave user read {}", p.display());
    }

    // The node signs through its API.
    let port: u16 = daemon
        .ready
        .split_whitespace()
        .find_map(|w| w.strip_prefix("api="))
        .and_then(|a| a.rsplit_once(':'))
        .and_then(|(_, p)| p.parse().ok())
        .expect("api port");
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt").block_on(async {
        let client = SignerClient::connect(pid(1), &format!("127.0.0.1:{port}"), None).await;
        let h = client.call(Health, Duration::from_secs(10)).await.expect("health");
        assert_eq!(h.state, ServiceState::Ready);
        let c = Caller::Node(client);
        let key = dealer(&c, 2, 3).await;
        let p = prepare(&c, key.key, &[pid(1), pid(2)], TaprootMode::Bip86).await;
        let shares = sign_all(&c, &p).await;
        match aggregate(&c, p.attempt, p.mode, &p.package, &shares).await.expect("aggregate") {
            frostgate_common::protocol::AggregateOutcome::Signed { signature, output_key } => {
                assert!(libsecp_verifies(&signature, &p.message, &output_key))
            }
            other => panic!("{other:?}"),
        }
    });
    drop(daemon);
    // The supervisor was killed: both children notice and stop (bounded wait).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while children.iter().any(|p| Path::new(&format!("/proc/{p}")).exists()) {
        assert!(std::time::Instant::now() < deadline, "children outlived the killed node: {children:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Give the token directory back to root so the temp dirs can be removed.
    chown_r(enclave_dir, 0, 0);
    chown_r(base.path(), 0, 0);
}

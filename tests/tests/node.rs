//! `frostgate node --config node.toml`: one process command that runs an enclave child and the
//! host, serving the gRPC API on loopback, or on any address with mutual TLS (pinned certificates).

use frostgate_common::error::ErrorCode;
use frostgate_common::ids::ParticipantId;
use frostgate_common::protocol::{Health, TaprootMode};
use frostgate_host::api::tls::TlsFiles;
use frostgate_host::coordinator::signer::SignerClient;
use frostgate_tests::node::Node;
use frostgate_tests::signing::*;
use frostgate_tests::{host_bin, Daemon};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn write_config(node: &Node, extra: &str) -> PathBuf {
    let path = node.tokens.path().join("frostgate-node.toml");
    std::fs::write(
        &path,
        format!(
            "[node]\ndb = \"{}\"\nmetrics_listen = \"127.0.0.1:0\"\n{extra}\n[enclave]\nsocket = \"{}\"\nconfig = \"{}\"\n",
            node.db.display(),
            node.tokens.path().join("child-enclave.sock").display(),
            node.token.config.display(),
        ),
    )
    .expect("node.toml");
    path
}

/// `[api]` with `listen` (and `[api.tls]` when given).
fn api_section(listen: &str, tls: Option<&TlsFiles>) -> String {
    let mut s = format!("[api]\nlisten = \"{listen}\"\n");
    if tls.is_none() {
        s.push_str("dev_plaintext = true\n");
    }
    if let Some(t) = tls {
        let peers: Vec<String> = t.peers.iter().map(|p| format!("\"{}\"", p.display())).collect();
        s.push_str(&format!(
            "[api.tls]\ncert = \"{}\"\nkey = \"{}\"\npeers = [{}]\n",
            t.cert.display(),
            t.key.display(),
            peers.join(", ")
        ));
    }
    s
}

fn start(node: &Node, config: &Path) -> Daemon {
    let args = vec!["node".to_string(), "--config".into(), config.display().to_string()];
    Daemon::start(&host_bin(), &args, node.token.env(), node.tokens.path().join("node.log"))
}

/// The API's bound address from the readiness line (`... api=IP:PORT ...`).
fn api_port(d: &Daemon) -> u16 {
    let addr = d.ready.split_whitespace().find_map(|w| w.strip_prefix("api=")).expect("api address");
    addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).expect("port")
}

/// A self-signed certificate and key in `dir`.
fn cert(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (c, k) = frostgate_host::api::tls::generate(name).expect("generate");
    let (cp, kp) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    std::fs::write(&cp, c).expect("cert");
    std::fs::write(&kp, k).expect("key");
    (cp, kp)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt")
}

fn one() -> ParticipantId {
    ParticipantId::new(1).expect("id")
}

/// Dealer key, 2-of-3 signing of all seats through one node, libsecp256k1 check.
async fn sign_through(c: &Caller) {
    let key = dealer(c, 2, 3).await;
    let p = prepare(c, key.key, &[pid(1), pid(3)], TaprootMode::Bip86).await;
    let shares = sign_all(c, &p).await;
    match aggregate(c, p.attempt, p.mode, &p.package, &shares).await.expect("aggregate") {
        frostgate_common::protocol::AggregateOutcome::Signed { signature, output_key } => {
            assert!(libsecp_verifies(&signature, &p.message, &output_key));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_node_runs_its_enclave_as_a_child_signs_and_stops_both_on_sigterm() {
    let node = Node::new();
    let config = write_config(&node, &api_section("127.0.0.1:0", None));
    let mut daemon = start(&node, &config);
    assert!(daemon.ready.contains("metrics=http://127.0.0.1:"), "{}", daemon.ready);
    assert!(!daemon.ready.contains("tls=mutual"), "{}", daemon.ready);
    let child_socket = node.tokens.path().join("child-enclave.sock");
    assert!(child_socket.exists(), "the enclave child listens");
    let port = api_port(&daemon);
    rt().block_on(async {
        let client = SignerClient::connect(one(), &format!("127.0.0.1:{port}"), None).await;
        assert!(client.reachable());
        sign_through(&Caller::Node(client.clone())).await;
        // Only the network-facing subset exists on the API (no store loading, no commits): a
        // client cannot even express them, and `host/tests/proto.rs` pins the RPC set.
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

#[test]
fn a_non_loopback_api_without_tls_refuses_to_start_before_its_enclave() {
    let node = Node::new();
    let config = write_config(&node, &api_section("0.0.0.0:0", None));
    let out = std::process::Command::new(host_bin())
        .args(["node", "--config"])
        .arg(&config)
        .envs(node.token.env().iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("error: tls_required (recovery: operator)") && err.contains("0.0.0.0"), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).is_empty(), "never ready");
    assert!(!node.tokens.path().join("child-enclave.sock").exists(), "the enclave was never started");
    // The same through `frostgate host serve`, and an IPv6 wildcard too.
    for addr in ["0.0.0.0:0", "[::]:0"] {
        let out = std::process::Command::new(host_bin())
            .args(["host", "serve", "--db"])
            .arg(&node.db)
            .args(["--enclave", "/nonexistent.sock", "--api-listen", addr])
            .output()
            .expect("run");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("error: tls_required"), "{addr}: {err}");
    }
    // Loopback too: mutual TLS is the default; plaintext only when asked for by name.
    let config = write_config(&node, "[api]\nlisten = \"127.0.0.1:0\"\n");
    let out = std::process::Command::new(host_bin()).args(["node", "--config"]).arg(&config).output().expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("error: tls_required") && err.contains("dev_plaintext"), "{err}");
    let out = std::process::Command::new(host_bin())
        .args(["host", "serve", "--db"])
        .arg(&node.db)
        .args(["--enclave", "/nonexistent.sock", "--api-listen", "127.0.0.1:0"])
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("error: tls_required"), "{err}");
}

#[test]
fn a_tls_api_with_a_missing_certificate_file_is_refused() {
    let node = Node::new();
    let dir = node.tokens.path();
    let (client, _) = cert(dir, "client");
    let tls = TlsFiles { cert: dir.join("missing.crt"), key: dir.join("missing.key"), peers: vec![client] };
    let config = write_config(&node, &api_section("0.0.0.0:0", Some(&tls)));
    let out = std::process::Command::new(host_bin()).args(["node", "--config"]).arg(&config).output().expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("error: config_invalid") && err.contains("missing.crt"), "{err}");
}

#[test]
fn mutual_tls_admits_exactly_the_pinned_certificates() {
    let node = Node::new();
    let dir = node.tokens.path();
    let (server_cert, server_key) = cert(dir, "node");
    let (client_cert, client_key) = cert(dir, "coordinator");
    let (other_cert, other_key) = cert(dir, "intruder");
    let (other_server, _) = cert(dir, "other-node");
    let served = TlsFiles { cert: server_cert.clone(), key: server_key.clone(), peers: vec![client_cert.clone()] };
    // Listening on every interface is allowed with TLS.
    let config = write_config(&node, &api_section("0.0.0.0:0", Some(&served)));
    let daemon = start(&node, &config);
    assert!(daemon.ready.contains("tls=mutual"), "{}", daemon.ready);
    let address = format!("127.0.0.1:{}", api_port(&daemon));
    let health = |c: SignerClient| async move { c.call(Health, Duration::from_secs(10)).await };
    rt().block_on(async {
        let pinned = TlsFiles { cert: client_cert.clone(), key: client_key.clone(), peers: vec![server_cert.clone()] };
        let good = SignerClient::connect(one(), &address, Some(&pinned)).await;
        assert!(health(good.clone()).await.is_ok());
        sign_through(&Caller::Node(good)).await;

        // A client certificate the node does not pin.
        let intruder = TlsFiles { cert: other_cert.clone(), key: other_key.clone(), peers: vec![server_cert.clone()] };
        let e = health(SignerClient::connect(one(), &address, Some(&intruder)).await).await.expect_err("refused");
        assert_eq!(e.code(), ErrorCode::NodeUnavailable, "{e}");
        // The pinned client, expecting another node's certificate (a node impersonator).
        let wrong = TlsFiles { cert: client_cert.clone(), key: client_key.clone(), peers: vec![other_server] };
        let e = health(SignerClient::connect(one(), &address, Some(&wrong)).await).await.expect_err("refused");
        assert_eq!(e.code(), ErrorCode::NodeUnavailable, "{e}");
        // No TLS at all.
        let e = health(SignerClient::connect(one(), &address, None).await).await.expect_err("refused");
        assert_eq!(e.code(), ErrorCode::NodeUnavailable, "{e}");
    });
    let logs = daemon.logs();
    assert!(logs.contains("peer_not_authorized"), "the node logs refused handshakes:\n{logs}");
    // The TLS private keys never reach the log.
    for key in [&server_key, &client_key, &other_key] {
        let pem = std::fs::read_to_string(key).expect("key");
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(!logs.contains(&body[..40]), "a private key was logged");
    }
}

#[test]
fn a_node_config_with_a_missing_field_names_it() {
    let node = Node::new();
    let cases = [
        // No database.
        ("[node]\n[enclave]\nsocket = \"/tmp/x.sock\"\n".to_string(), "db"),
        // TLS without its pinned peers.
        (
            format!(
                "[node]\ndb = \"{}\"\n[enclave]\nsocket = \"/tmp/x.sock\"\n[api]\nlisten = \"0.0.0.0:0\"\n[api.tls]\ncert = \"a\"\nkey = \"b\"\n",
                node.db.display()
            ),
            "peers",
        ),
    ];
    for (text, field) in cases {
        let path = node.tokens.path().join("incomplete.toml");
        std::fs::write(&path, text).expect("write");
        let out = std::process::Command::new(host_bin()).args(["node", "--config"]).arg(&path).output().expect("run");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("error: config_invalid (recovery: operator)")
                && err.contains(&format!("missing field `{field}`")),
            "{field}: {err}"
        );
    }
}

/// Reads the metrics endpoint from the readiness line (`... metrics=http://IP:PORT/metrics`).
fn metrics(d: &Daemon) -> String {
    let url = d.ready.split_whitespace().find_map(|w| w.strip_prefix("metrics=http://")).expect("metrics address");
    let (addr, path) = url.split_once('/').expect("path");
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect metrics");
    write!(s, "GET /{path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("request");
    let mut body = String::new();
    s.read_to_string(&mut body).expect("response");
    body
}

/// Polls `check` every 100 ms for up to 60 s.
async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(std::time::Instant::now() < deadline, "{what} did not happen");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The enclave child dies (SIGKILL): the node restarts it with backoff, the host reconnects and
/// reloads the store, the key survives and signs again, and the metrics count the restart.
#[test]
fn a_node_restarts_a_dead_enclave_child_and_serves_again() {
    let node = Node::new();
    let config = write_config(&node, &api_section("127.0.0.1:0", None));
    let daemon = start(&node, &config);
    let port = api_port(&daemon);
    let child_pid = || -> Option<i32> {
        let o = std::process::Command::new("pgrep")
            .args(["-P", &daemon.pid().expect("running").to_string()])
            .output()
            .ok()?;
        String::from_utf8_lossy(&o.stdout).lines().next()?.trim().parse().ok()
    };
    let first = child_pid().expect("the enclave child runs");
    rt().block_on(async {
        let client = SignerClient::connect(one(), &format!("127.0.0.1:{port}"), None).await;
        let c = Caller::Node(client.clone());
        let key = dealer(&c, 2, 3).await;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(first), nix::sys::signal::Signal::SIGKILL).expect("kill");
        eventually("enclave restart and store reload", || {
            let client = client.clone();
            async move {
                matches!(
                    client.call(Health, Duration::from_secs(2)).await,
                    Ok(h) if h.state == frostgate_common::protocol::ServiceState::Ready
                )
            }
        })
        .await;
        // Health (through the API, as `frostgate status` reads it) counts the restart.
        let h = client.call(Health, Duration::from_secs(5)).await.expect("health");
        assert_eq!((h.enclave_restarts, h.host_reconnects), (1, 1), "{h:?}");
        // The key came back from the host store and signs.
        let p = prepare(&c, key.key, &[pid(1), pid(2)], TaprootMode::Bip86).await;
        let shares = sign_all(&c, &p).await;
        assert!(matches!(
            aggregate(&c, p.attempt, p.mode, &p.package, &shares).await.expect("aggregate"),
            frostgate_common::protocol::AggregateOutcome::Signed { .. }
        ));
    });
    let second = child_pid().expect("a new enclave child runs");
    assert_ne!(first, second);
    let m = metrics(&daemon);
    assert!(m.contains("frostgate_enclave_restarts_total 1"), "{m}");
    assert!(m.contains("frostgate_enclave_reconnects_total 1"), "{m}");
}

/// A host in front of a separately run enclave: the enclave is killed and started again; the
/// host reconnects by itself, reloads the store, and its clients are served again.
#[test]
fn a_host_reconnects_to_a_restarted_enclave_and_reloads_the_store() {
    let mut node = Node::new();
    node.start();
    let rt = rt();
    let key = rt.block_on(async { dealer(&node.caller().await, 2, 3).await });
    if let Some(mut e) = node.enclave.take() {
        e.kill();
    }
    rt.block_on(async {
        let c = node.caller().await;
        // Down: a typed, retryable error, not a hang.
        let e = c.request(Health).await.expect_err("enclave down");
        assert_eq!(e.recovery_class(), frostgate_common::error::RecoveryClass::Retry, "{e}");
    });
    node.start_enclave();
    rt.block_on(async {
        let c = node.caller().await;
        eventually("reconnect and reload", || {
            let c = &c;
            async move {
                matches!(c.request(Health).await,
                    Ok(h) if h.state == frostgate_common::protocol::ServiceState::Ready)
            }
        })
        .await;
        let p = prepare(&c, key.key, &[pid(2), pid(3)], TaprootMode::Bip86).await;
        let shares = sign_all(&c, &p).await;
        assert!(matches!(
            aggregate(&c, p.attempt, p.mode, &p.package, &shares).await.expect("aggregate"),
            frostgate_common::protocol::AggregateOutcome::Signed { .. }
        ));
    });
    assert!(node.logs().contains("store reloaded"), "{}", node.logs());
}

/// An idle API connection (no bytes either way) is closed after `idle_timeout_secs`; a TLS client
/// that never finishes its handshake is dropped too.
#[test]
fn idle_api_connections_are_closed() {
    let node = Node::new();
    let config =
        write_config(&node, &format!("{}[api.limits]\nidle_timeout_secs = 1\n", api_section("127.0.0.1:0", None)));
    let daemon = start(&node, &config);
    let port = api_port(&daemon);
    let mut idle = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    idle.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let started = std::time::Instant::now();
    use std::io::Read;
    let mut b = [0u8; 256];
    // The server speaks first (HTTP/2 settings); then nothing, until it closes the connection.
    let closed = loop {
        match idle.read(&mut b) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e) => break !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
        }
    };
    assert!(closed, "the idle connection was not closed");
    assert!(started.elapsed() < Duration::from_secs(30));
    // A busy client is not affected: a request after the idle period on a fresh connection works.
    rt().block_on(async {
        let client = SignerClient::connect(one(), &format!("127.0.0.1:{port}"), None).await;
        assert!(client.call(Health, Duration::from_secs(5)).await.is_ok());
    });
}

/// Quotas are per TLS identity: one pinned client that holds its quota of sessions is refused
/// (`quota_exceeded`), another pinned client of the same node still opens sessions and signs;
/// closing sessions gives the quota back.
#[test]
fn session_quotas_are_per_client_certificate() {
    let node = Node::new();
    let dir = node.tokens.path();
    let (server_cert, server_key) = cert(dir, "node");
    let (a_cert, a_key) = cert(dir, "coordinator-a");
    let (b_cert, b_key) = cert(dir, "coordinator-b");
    let served = TlsFiles { cert: server_cert.clone(), key: server_key, peers: vec![a_cert.clone(), b_cert.clone()] };
    let api = format!("{}[api.limits]\nmax_sessions_per_caller = 3\n", api_section("127.0.0.1:0", Some(&served)));
    let daemon = start(&node, &write_config(&node, &api));
    let address = format!("127.0.0.1:{}", api_port(&daemon));
    rt().block_on(async {
        let tls = |cert: &PathBuf, key: &PathBuf| TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            peers: vec![server_cert.clone()],
        };
        let a = Caller::Node(SignerClient::connect(one(), &address, Some(&tls(&a_cert, &a_key))).await);
        let b = Caller::Node(SignerClient::connect(one(), &address, Some(&tls(&b_cert, &b_key))).await);
        let key = dealer(&a, 2, 3).await;
        let mut opened = Vec::new();
        for _ in 0..3 {
            opened.push(open_session(&a, key.key, random(), TaprootMode::Bip86).await.expect("within quota").0);
        }
        let e = open_session(&a, key.key, random(), TaprootMode::Bip86).await.expect_err("over quota");
        assert_eq!(e.code(), ErrorCode::QuotaExceeded, "{e}");
        // Another certificate is another caller: it signs.
        sign_through(&b).await;
        // Closing one of A's sessions gives its quota back.
        let close = frostgate_common::protocol::SessionRef { session: opened[0] };
        a.request(close).await.expect("close");
        open_session(&a, key.key, random(), TaprootMode::Bip86).await.expect("quota given back");
    });
    drop(daemon);
}

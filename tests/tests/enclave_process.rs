//! The real enclave binary: handshake, health, malformed frames on live connections, peer
//! credentials, clean shutdown on SIGTERM.

use frostgate_common::error::ErrorCode;
use frostgate_common::frame::{self, raw_frame, Frame};
use frostgate_common::limits::MAX_FRAME_LEN;
use frostgate_common::protocol::*;
use frostgate_common::transport::Address;
use frostgate_host::node::enclave::EnclaveClient;
use frostgate_tests::{own_uid, EnclaveProcess};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

fn raw_connect(e: &EnclaveProcess) -> UnixStream {
    let s = UnixStream::connect(&e.socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    s
}

fn read_frame(s: &mut UnixStream) -> Option<Frame> {
    let mut prefix = [0u8; 4];
    s.read_exact(&mut prefix).ok()?;
    let mut body = vec![0u8; frame::check_length(prefix).expect("sane length")];
    s.read_exact(&mut body).ok()?;
    Some(frame::decode_body(&body).expect("enclave sends valid frames"))
}

fn error_code(f: &Frame) -> ErrorCode {
    match &f.message {
        Message::Error(e) => e.code(),
        other => panic!("expected an error, got {other:?}"),
    }
}

fn ping(s: &mut UnixStream, id: u64) {
    s.write_all(&frame::encode(&Frame { request_id: id, message: Message::Ping(Ping { echo: id }) }).expect("encode"))
        .expect("write");
    let reply = read_frame(s).expect("reply");
    assert_eq!(reply, Frame { request_id: id, message: Message::Pong(Pong { echo: id }) });
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

#[test]
fn handshake_health_and_ping_through_the_host_client() {
    let enclave = EnclaveProcess::start(&[]);
    runtime().block_on(async {
        let client = EnclaveClient::connect(Address::Unix(enclave.socket.clone())).await.expect("connect");
        assert_eq!(client.hello().protocol_version, PROTOCOL_VERSION);
        assert_eq!(client.hello().build.name.as_inner(), "frostgate-enclave");
        let health = client.health().await.expect("health");
        assert_eq!(health.state, ServiceState::Refusing(ErrorCode::CustodyNotConfigured));
        // Several requests in flight at once on one connection.
        let tasks: Vec<_> = (0..64u64)
            .map(|i| {
                let ch = client.channel().clone();
                tokio::spawn(async move { (i, ch.call(Message::Ping(Ping { echo: i }), None).await) })
            })
            .collect();
        for t in tasks {
            let (i, reply) = t.await.expect("join");
            assert_eq!(reply.expect("pong"), Message::Pong(Pong { echo: i }));
        }
        assert_eq!(client.ping(99).await.expect("pong"), 99);
    });
}

#[test]
fn every_malformed_frame_class_gets_its_code_and_other_connections_keep_working() {
    let enclave = EnclaveProcess::start(&[]);
    let mut bystander = raw_connect(&enclave);
    ping(&mut bystander, 1);

    let ping_payload = postcard_ping();
    let mut trailing = ping_payload.clone();
    trailing.push(0);
    let cases: Vec<(&str, Vec<u8>, ErrorCode)> = vec![
        ("bad version", raw_frame(PROTOCOL_VERSION + 1, 11, &ping_payload), ErrorCode::UnsupportedProtocolVersion),
        ("unknown kind", raw_frame(PROTOCOL_VERSION, 12, &[0x7e]), ErrorCode::UnknownMessageKind),
        ("trailing bytes", raw_frame(PROTOCOL_VERSION, 13, &trailing), ErrorCode::FrameTrailingBytes),
        (
            "garbage",
            raw_frame(PROTOCOL_VERSION, 14, &[1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            ErrorCode::MalformedMessage,
        ),
        ("shorter than header", vec![0, 0, 0, 3, 1, 2, 3], ErrorCode::FrameTruncated),
    ];
    for (name, bytes, code) in cases {
        let mut s = raw_connect(&enclave);
        s.write_all(&bytes).expect("write");
        let reply = read_frame(&mut s).unwrap_or_else(|| panic!("{name}: no reply"));
        assert_eq!(error_code(&reply), code, "{name}");
        // The same connection is still usable after a frame whose length was readable.
        ping(&mut s, 100);
        ping(&mut bystander, 2);
    }

    // Oversize: rejected from the length prefix, then that connection is closed.
    let mut s = raw_connect(&enclave);
    s.write_all(&((MAX_FRAME_LEN + 1) as u32).to_be_bytes()).expect("write");
    let reply = read_frame(&mut s).expect("reply");
    assert_eq!(reply.request_id, 0);
    assert_eq!(error_code(&reply), ErrorCode::FrameTooLarge);
    assert!(read_frame(&mut s).is_none(), "connection closed after an oversize frame");

    // Truncated: the peer hangs up inside a frame; the enclave drops that connection only.
    let mut s = raw_connect(&enclave);
    let full = frame::encode(&Frame { request_id: 20, message: Message::Ping(Ping { echo: 1 }) }).expect("encode");
    s.write_all(&full[..full.len() - 2]).expect("write");
    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    assert!(read_frame(&mut s).is_none());

    ping(&mut bystander, 3);
    let mut fresh = raw_connect(&enclave);
    ping(&mut fresh, 4);
    let logs = enclave.logs();
    assert!(logs.contains("frame_too_large") && logs.contains("unknown_message_kind"), "codes are logged:\n{logs}");
}

fn postcard_ping() -> Vec<u8> {
    // The payload of a Ping: kind 5, then the varint echo value 7.
    let f = frame::encode(&Frame { request_id: 0, message: Message::Ping(Ping { echo: 7 }) }).expect("encode");
    f[4 + 10..].to_vec()
}

#[test]
fn requests_the_host_may_not_send_are_refused() {
    let enclave = EnclaveProcess::start(&[]);
    let mut s = raw_connect(&enclave);
    // A reply-kind frame with no outstanding request is dropped (never answered) ...
    s.write_all(&frame::encode(&Frame { request_id: 30, message: Message::Pong(Pong { echo: 9 }) }).expect("encode"))
        .expect("write");
    // ... so the next reply the host sees is the answer to its ping.
    ping(&mut s, 31);
}

#[test]
fn a_connection_from_another_unix_user_is_refused() {
    let other_uid = own_uid().wrapping_add(4242).to_string();
    let enclave = EnclaveProcess::start(&["--allowed-uid", &other_uid]);
    let mut s = raw_connect(&enclave);
    let reply = read_frame(&mut s).expect("refusal frame");
    assert_eq!(reply.request_id, 0);
    assert_eq!(error_code(&reply), ErrorCode::PeerNotAuthorized);
    assert!(read_frame(&mut s).is_none(), "connection closed after refusal");
    // The host client reports the typed refusal.
    let err = runtime().block_on(EnclaveClient::connect(Address::Unix(enclave.socket.clone()))).expect_err("refused");
    assert_eq!(err.code(), ErrorCode::PeerNotAuthorized, "{err}");
    assert!(enclave.logs().contains("peer_not_authorized"));
}

#[test]
fn sigterm_shuts_down_cleanly_and_removes_the_socket() {
    let mut enclave = EnclaveProcess::start(&[]);
    let mut s = raw_connect(&enclave);
    ping(&mut s, 1);
    let status = enclave.terminate();
    assert!(status.success(), "exit status {status:?}");
    assert!(!enclave.socket.exists(), "socket file removed");
    assert!(enclave.logs().contains("SIGTERM: shutting down"));
}

/// `--listen` replaces only a stale socket: a regular file (say, a mistyped `host.db`), a
/// directory or a socket another enclave serves is refused with `listen_path_occupied` and left
/// as it was; a socket left by a killed enclave is replaced.
#[test]
fn listen_refuses_every_existing_path_but_a_stale_socket() {
    let dir = tempfile::tempdir().expect("dir");
    let run = |path: &std::path::Path| {
        let mut child = std::process::Command::new(frostgate_tests::enclave_bin())
            .args(["serve", "--listen"])
            .arg(path)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        frostgate_tests::wait_bounded(&mut child, Duration::from_secs(30));
        let o = child.wait_with_output().expect("output");
        (o.status, String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let db = dir.path().join("host.db");
    std::fs::write(&db, b"the only copy of the sealed shares").expect("db");
    let sub = dir.path().join("a-directory");
    std::fs::create_dir(&sub).expect("dir");
    for path in [&db, &sub] {
        let (status, err) = run(path);
        assert!(!status.success(), "{}: {err}", path.display());
        assert!(err.contains("error: listen_path_occupied (recovery: operator)"), "{err}");
    }
    assert_eq!(std::fs::read(&db).expect("db kept"), b"the only copy of the sealed shares");
    assert!(sub.is_dir());

    // A live enclave's socket: the second enclave is refused and the first keeps serving.
    let mut live = EnclaveProcess::start(&[]);
    let (status, err) = run(&live.socket);
    assert!(!status.success() && err.contains("listen_path_occupied"), "{err}");
    let mut s = raw_connect(&live);
    ping(&mut s, 1);
    // Killed: its socket file is stale now, and a new enclave replaces it.
    live.kill();
    assert!(live.socket.exists());
    let args = ["serve".to_string(), "--listen".into(), live.socket.display().to_string()];
    let mut again =
        frostgate_tests::Daemon::start(&frostgate_tests::enclave_bin(), &args, &[], dir.path().join("again.log"));
    let mut s = UnixStream::connect(&live.socket).expect("connect to the new enclave");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    ping(&mut s, 2);
    again.kill();
}

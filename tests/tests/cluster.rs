//! Signer nodes and the ROAST coordinator through the real CLI: `dev cluster`, `keygen`,
//! `sign`, `verify`, `status`, with nodes offline, returning invalid shares, or crashing.

use frostgate_tests::host_bin;

use frostgate_tests::dev_cluster::{run_json, DevCluster as Cluster};

fn fg(args: &[&str]) -> Result<serde_json::Value, String> {
    run_json(&host_bin(), args)
}

fn cluster(nodes: u16, threshold: u16) -> Cluster {
    cluster_with(nodes, threshold, &[])
}

fn cluster_with(nodes: u16, threshold: u16, extra: &[&str]) -> Cluster {
    Cluster::start(&host_bin(), nodes, threshold, extra)
}

fn verified(sig: &serde_json::Value, message: &str) {
    let out = fg(&[
        "verify",
        "--output-key",
        sig["output_key"].as_str().expect("output key"),
        "--message",
        message,
        "--signature",
        sig["signature"].as_str().expect("signature"),
        "--json",
    ])
    .expect("verify");
    assert_eq!(out["valid"], true);
}

fn message() -> String {
    frostgate_tests::token::random_hex(32)
}

fn excluded(sig: &serde_json::Value, node: u64) -> &serde_json::Value {
    sig["excluded"]
        .as_array()
        .expect("excluded")
        .iter()
        .find(|e| e["signer"] == node)
        .unwrap_or_else(|| panic!("node {node} not excluded: {sig}"))
}

#[test]
fn three_of_five_signs_with_one_node_offline_and_one_returning_invalid_shares() {
    let c = cluster(5, 3);
    let key = c.keygen();
    let k = key["key"].as_str().expect("key").to_string();
    assert_eq!(key["threshold"], 3);
    c.kill(3);
    c.arm(2, "host_corrupt_shares");
    let status = fg(&["status", "--cluster", &c.file(), "--json"]).expect("status");
    assert_eq!(status["nodes"][2]["state"], "down");
    assert_eq!(status["nodes"][2]["code"], "node_unavailable");
    let m = message();
    let sig = c.sign(&k, &m).unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    verified(&sig, &m);
    let signers: Vec<u64> =
        sig["signers"].as_array().expect("signers").iter().map(|v| v.as_u64().expect("id")).collect();
    assert_eq!(signers.len(), 3);
    assert!(!signers.contains(&2) && !signers.contains(&3), "{sig}");
    let bad = excluded(&sig, 2);
    assert_eq!(bad["reason"], "invalid_share");
    assert!(
        bad["share"].as_str().is_some_and(|s| s.len() >= 64)
            && bad["package_sha256"].as_str().is_some_and(|s| s.len() == 64),
        "evidence: {bad}"
    );
    assert_eq!(excluded(&sig, 3)["reason"], "unreachable");
    assert!(sig["attempts"].as_u64().expect("attempts") >= 2, "{sig}");

    // Restarting the nodes keeps their keys and markers: the same key signs again.
    std::fs::remove_file(c.node(2).join("fault")).expect("disarm");
    let d = c.dir.display().to_string();
    fg(&["dev", "cluster", "down", "--dir", &d]).expect("down");
    fg(&["dev", "cluster", "up", "--dir", &d]).expect("up");
    let status = fg(&["status", "--cluster", &c.file(), "--json"]).expect("status");
    assert!(status["nodes"].as_array().expect("nodes").iter().all(|n| n["state"] == "ready"), "{status}");
    let m = message();
    let sig = c.sign(&k, &m).expect("sign after restart");
    verified(&sig, &m);
    assert!(sig["excluded"].as_array().expect("excluded").is_empty(), "{sig}");
}

#[test]
fn a_node_killed_mid_signing_does_not_stop_the_signature() {
    let c = cluster(5, 3);
    let k = c.keygen()["key"].as_str().expect("key").to_string();
    // Node 1's enclave crashes at its first commit of this signing (binding the session).
    c.arm(1, "after_anchor_before_release");
    let m = message();
    let sig = c.sign(&k, &m).unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    verified(&sig, &m);
    assert!(!sig["signers"].as_array().expect("signers").iter().any(|v| v == 1), "{sig}");
    let ev = excluded(&sig, 1);
    assert!(ev["reason"] == "unreachable" || ev["reason"] == "timeout", "{ev}");
    assert!(c.logs().contains("DEVELOPMENT fault injection"), "the crash happened");
    let status = fg(&["status", "--cluster", &c.file(), "--json"]).expect("status");
    assert_ne!(status["nodes"][0]["state"], "ready", "{status}");
}

#[test]
fn a_cluster_smaller_than_its_threshold_fails_with_evidence() {
    let c = cluster(3, 2);
    let k = c.keygen()["key"].as_str().expect("key").to_string();
    c.kill(1);
    c.kill(2);
    let e = c.sign(&k, &message()).expect_err("cannot sign with one node");
    assert!(e.contains("error: ") && (e.contains("signing_failed") || e.contains("node_unavailable")), "{e}");
}

#[test]
fn status_names_the_code_of_a_node_whose_store_was_rolled_back() {
    let c = cluster(3, 2);
    let k = c.keygen()["key"].as_str().expect("key").to_string();
    let db = c.node(2).join("host").join("host.db");
    let older = c.dir.join("older.db");
    rusqlite::Connection::open(&db)
        .expect("db")
        .execute("VACUUM INTO ?1", [older.display().to_string()])
        .expect("copy");
    let m = message();
    let sig = c.sign(&k, &m).expect("sign");
    assert!(sig["signers"].as_array().expect("signers").iter().any(|v| v == 2), "node 2 signed: {sig}");
    let d = c.dir.display().to_string();
    fg(&["dev", "cluster", "down", "--dir", &d]).expect("down");
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    std::fs::copy(&older, &db).expect("restore an older copy");
    let e = fg(&["dev", "cluster", "up", "--dir", &d]).expect_err("node 2 cannot come up");
    assert!(e.contains("node 2") && e.contains("store_rollback_detected"), "{e}");
    let status = fg(&["status", "--cluster", &c.file(), "--json"]).expect("status");
    let nodes = status["nodes"].as_array().expect("nodes");
    assert_eq!(nodes[1]["state"], "refusing", "{status}");
    assert_eq!(nodes[1]["code"], "store_rollback_detected", "{status}");
    assert_eq!(nodes[1]["recovery_class"], "operator");
    assert_eq!((nodes[0]["state"].as_str(), nodes[2]["state"].as_str()), (Some("ready"), Some("ready")), "{status}");
    // The other two still sign.
    let m = message();
    let sig = c.sign(&k, &m).expect("sign without node 2");
    verified(&sig, &m);
}

#[test]
fn a_mutual_tls_cluster_on_every_interface_keygens_and_signs_and_pins_each_node() {
    let c = cluster_with(3, 2, &["--tls", "--api-bind", "0.0.0.0"]);
    let text = std::fs::read_to_string(c.file()).expect("cluster.toml");
    assert!(text.contains("server_cert") && text.contains("api_listen = \"0.0.0.0:"), "{text}");
    for i in 1..=3 {
        let log = std::fs::read_to_string(c.node(i).join("host.log")).unwrap_or_default();
        assert!(!log.contains("BEGIN PRIVATE KEY"), "node {i} logged a key");
    }
    let k = c.keygen()["key"].as_str().expect("key").to_string();
    let m = message();
    verified(&c.sign(&k, &m).unwrap_or_else(|e| panic!("{e}\n{}", c.logs())), &m);
    // Pin the wrong certificate for node 1: the coordinator refuses to talk to it (a node
    // impersonator), reports why, and signs with the other two.
    let swapped = text.replacen("node1/host/tls.crt", "node3/host/tls.crt", 1);
    assert_ne!(swapped, text);
    std::fs::write(c.file(), swapped).expect("cluster.toml");
    let sig = c.sign(&k, &m).unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    verified(&sig, &m);
    assert_eq!(excluded(&sig, 1)["code"], "node_unavailable", "{sig}");
    // Without the coordinator's own certificate the cluster file is refused.
    let without: String = text
        .lines()
        .filter(|l| !l.starts_with("[tls]") && !l.starts_with("cert =") && !l.starts_with("key ="))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(c.file(), without).expect("cluster.toml");
    let e = c.sign(&k, &m).expect_err("no client identity");
    assert!(e.contains("error: config_invalid"), "{e}");
}

/// A node that lies about the key's public package (same key id, forged verifying shares),
/// would answer `Aggregate` with a valid signature under a key of its own, or refuses every
/// signing as a bad request (`fix_request`): the coordinator believes none of it. It signs with
/// the honest nodes, the signature verifies under the key from keygen, the liar is excluded with
/// evidence, and no honest node is blamed. The coordinator aggregates itself, so a node's
/// aggregate is never asked for: the would-be liar signs honestly and nobody is excluded.
#[test]
fn a_lying_node_cannot_substitute_the_key_package_or_the_signature() {
    use frostgate_tests::liar::{Liar, Lie};
    // Plaintext (development) so the liar can sit in front of node 1 without its TLS key.
    let c = cluster_with(3, 2, &["--dev-plaintext"]);
    let key = c.keygen();
    let k = key["key"].as_str().expect("key").to_string();
    let real_output_key = key["output_key"].as_str().expect("output key").to_string();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    let honest = frostgate_host::coordinator::cluster::Cluster::load(std::path::Path::new(&c.file())).expect("cluster");
    for (lie, reason) in [
        (Lie::KeyPackageShares, "key_package_mismatch"),
        (Lie::AggregateOwnKey, "none"),
        // A request error from one node is that node's: the others complete the signing.
        (Lie::RefuseAsBadRequest, "error"),
    ] {
        let addr = rt.block_on(Liar::start(&honest.nodes[0].api, lie));
        let mut lying = honest.clone();
        lying.nodes[0].api = addr.to_string();
        let file = c.dir.join(format!("lying-{reason}.toml"));
        lying.save(&file).expect("save");
        let file = file.display().to_string();
        let m = message();
        let sig = fg(&["sign", "--cluster", &file, "--key", &k, "--message", &m, "--timeout-ms", "5000", "--json"])
            .unwrap_or_else(|e| panic!("{lie:?}: {e}\n{}", c.logs()));
        assert_eq!(sig["output_key"], real_output_key.as_str(), "{lie:?}: {sig}");
        verified(&sig, &m);
        if reason == "none" {
            assert_eq!(sig["excluded"], serde_json::json!([]), "{lie:?}: {sig}");
        } else {
            let ev = excluded(&sig, 1);
            assert_eq!(ev["reason"], reason, "{lie:?}: {sig}");
        }
        for e in sig["excluded"].as_array().expect("excluded") {
            assert_eq!(e["signer"], 1, "{lie:?}: an honest node was blamed: {sig}");
        }
        // `pubkey` takes the package the honest majority agrees on, not the liar's.
        let pk = fg(&["pubkey", "--cluster", &file, "--key", &k, "--json"]).expect("pubkey");
        assert_eq!(pk["output_key"], real_output_key.as_str(), "{lie:?}");
        assert_eq!(pk["address"], key["address"], "{lie:?}");
    }
}

/// An API client of node 1 connecting from another address (another caller identity).
async fn other_caller(api: &str) -> frostgate_host::api::pb::signer_client::SignerClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{api}"))
        .expect("endpoint")
        .local_address(Some("127.0.0.2".parse().expect("ip")))
        .connect()
        .await
        .expect("connect from 127.0.0.2");
    frostgate_host::api::pb::signer_client::SignerClient::new(channel)
}

fn code_of(s: &tonic::Status) -> frostgate_common::error::ErrorCode {
    frostgate_host::api::error_from_status(1, s).code()
}

/// One caller floods node 1 (sessions to its quota, thousands of concurrent Health calls, DKGs to
/// its quota, connections beyond the per-peer cap): it is refused with typed codes, and an honest
/// coordinator (another caller) still runs a DKG and signs through the same node.
#[test]
fn floods_by_one_caller_do_not_stop_an_honest_coordinator() {
    use frostgate_common::error::ErrorCode;
    use frostgate_host::api::connection::ApiLimits;
    use frostgate_host::api::pb;
    let c = cluster_with(3, 2, &["--dev-plaintext"]);
    let key = c.keygen();
    let k = key["key"].as_str().expect("key").to_string();
    let key_id = hex::decode(&k).expect("hex");
    let cluster =
        frostgate_host::coordinator::cluster::Cluster::load(std::path::Path::new(&c.file())).expect("cluster");
    let api = cluster.nodes[0].api.clone();
    let limits = ApiLimits::default();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    let mut attacker = rt.block_on(other_caller(&api));
    let bip86 = || Some(pb::TaprootMode { mode: Some(pb::taproot_mode::Mode::Bip86(pb::Empty {})) });

    // 1. Sessions up to the caller's quota, then quota_exceeded; nothing more reaches the enclave.
    rt.block_on(async {
        for i in 0..=limits.max_sessions_per_caller {
            let r = attacker
                .open_session(pb::OpenSession {
                    session_id: frostgate_tests::signing::random::<16>().to_vec(),
                    key_id: key_id.clone(),
                    message: vec![7; 32],
                    mode: bip86(),
                })
                .await;
            match (i < limits.max_sessions_per_caller, r) {
                (true, Ok(_)) => {}
                (false, Err(s)) => assert_eq!(code_of(&s), ErrorCode::QuotaExceeded, "{s:?}"),
                (_, other) => panic!("session {i}: {other:?}"),
            }
        }
    });
    let m = message();
    let sig = c.sign(&k, &m).unwrap_or_else(|e| panic!("honest signing after a session flood: {e}"));
    verified(&sig, &m);

    // 2. Thousands of concurrent Health calls from the attacker while the honest coordinator signs.
    let flood = rt.spawn({
        let api = api.clone();
        async move {
            // 30 connections x 100 concurrent calls, all from one address (one caller).
            let mut calls = Vec::new();
            for _ in 0..30 {
                let attacker = other_caller(&api).await;
                for _ in 0..100 {
                    let mut a = attacker.clone();
                    calls.push(tokio::spawn(async move { a.health(pb::HealthRequest {}).await }));
                }
            }
            let mut refused = 0;
            for t in calls {
                if let Ok(Err(s)) = t.await {
                    // Refused by the per-caller bound, or the flooder's own connection dropped
                    // under its load (HTTP/2 protections): never another code.
                    match code_of(&s) {
                        ErrorCode::TooManyInFlight => refused += 1,
                        ErrorCode::NodeUnavailable => {}
                        other => panic!("{other}: {s:?}"),
                    }
                }
            }
            refused
        }
    });
    let m = message();
    let sig = c.sign(&k, &m).unwrap_or_else(|e| panic!("honest signing during a Health flood: {e}"));
    verified(&sig, &m);
    let refused = rt.block_on(flood).expect("flood");
    assert!(refused > 0, "the per-caller in-flight bound never engaged");

    // 3. DKGs: the attacker's unfinished DKGs stop at its quota; an honest keygen still runs.
    rt.block_on(async {
        let mut participants = Vec::new();
        for n in &cluster.nodes {
            let mut client = pb::signer_client::SignerClient::connect(format!("http://{}", n.api)).await.expect("c");
            let id = client.get_identity(pb::GetIdentityRequest {}).await.expect("identity").into_inner();
            participants.push(pb::DkgParticipant { id: n.id.into(), identity_key: id.identity_key });
        }
        for i in 0..=limits.max_dkgs_per_caller {
            let r = attacker
                .dkg_start(pb::DkgStart {
                    dkg_id: frostgate_tests::signing::random::<16>().to_vec(),
                    threshold: 2,
                    me: 1,
                    participants: participants.clone(),
                })
                .await;
            match (i < limits.max_dkgs_per_caller, r) {
                (true, Ok(_)) => {}
                (false, Err(s)) => assert_eq!(code_of(&s), ErrorCode::QuotaExceeded, "{s:?}"),
                (_, other) => panic!("DKG {i}: {other:?}"),
            }
        }
    });
    let fresh = c.keygen();
    assert_ne!(fresh["key"], key["key"]);

    // 4. Connections: from one address at most the per-peer cap stays open.
    let held: Vec<std::net::TcpStream> = (0..limits.max_connections_per_peer + 20)
        .filter_map(|_| {
            let s = socket2_connect_from("127.0.0.2", &api)?;
            Some(s)
        })
        .collect();
    let open = held
        .iter()
        .filter(|s| {
            use std::io::Read;
            s.set_read_timeout(Some(std::time::Duration::from_millis(500))).expect("timeout");
            let mut b = [0u8; 1];
            // A closed connection reads EOF (or a reset); an open idle one times out.
            matches!((&**s).read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut)
        })
        .count();
    assert!(open <= limits.max_connections_per_peer, "{open} connections held open from one address");
    let m = message();
    let sig = c.sign(&k, &m).unwrap_or_else(|e| panic!("honest signing while connections are held: {e}"));
    verified(&sig, &m);
    drop(held);
}

/// A TCP connection to `to` from the local address `from` (port chosen by the kernel).
fn socket2_connect_from(from: &str, to: &str) -> Option<std::net::TcpStream> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
    rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().ok()?;
        socket.bind(format!("{from}:0").parse().ok()?).ok()?;
        let stream = socket.connect(to.parse().ok()?).await.ok()?.into_std().ok()?;
        stream.set_nonblocking(false).ok()?;
        Some(stream)
    })
}

/// Requests the coordinator cannot send (a 7-step path, a PSBT over the boundary's 512 KiB) fail
/// at once with their own error, before any node is contacted: nobody is excluded, and no
/// attempt or preprocessed commitment is spent (before: ROAST retried, preprocessing each time,
/// until every node's commitment quota was gone and the next honest signing failed).
#[test]
fn a_request_the_coordinator_cannot_send_fails_fast_and_costs_the_nodes_nothing() {
    let c = cluster_with(3, 2, &["--dev-plaintext"]);
    let key = c.keygen();
    let k = key["key"].as_str().expect("key").to_string();
    for _ in 0..3 {
        let m = message();
        let e =
            fg(&["sign", "--cluster", &c.file(), "--key", &k, "--message", &m, "--path", "0/1/2/3/4/5/6", "--json"])
                .expect_err("7 steps");
        assert!(e.contains("derivation_invalid") && !e.contains("excluded"), "{e}");
    }
    // A PSBT of one input of this key, padded over the bound with an unknown global field.
    let internal: [u8; 32] = hex::decode(&k).expect("hex").try_into().expect("32");
    let output_key: [u8; 32] =
        hex::decode(key["output_key"].as_str().expect("output key")).expect("hex").try_into().expect("32");
    let mut psbt = frostgate_tests::psbt::spend(
        &internal,
        &output_key,
        &[10_000],
        &[(frostgate_tests::psbt::p2tr(&output_key), 9_000)],
    );
    psbt.unknown.insert(bitcoin::psbt::raw::Key { type_value: 0xfc, key: b"pad".to_vec() }, vec![0u8; 540_000]);
    let dir = tempfile::tempdir().expect("dir");
    let path = frostgate_tests::psbt::write(dir.path(), "big.psbt", &psbt);
    let e = fg(&["sign-psbt", "--cluster", &c.file(), "--key", &k, "--psbt", &path, "--json"]).expect_err("too big");
    assert!(e.contains("psbt_invalid") && !e.contains("excluded"), "{e}");
    // Quotas intact: an honest signing right after, in one attempt, nobody excluded.
    let m = message();
    let sig = fg(&["sign", "--cluster", &c.file(), "--key", &k, "--message", &m, "--json"])
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    verified(&sig, &m);
    assert_eq!(sig["attempts"], 1, "{sig}");
    assert_eq!(sig["excluded"].as_array().map(Vec::len), Some(0), "{sig}");
}

/// Bytes that are not the request's protobuf get INVALID_ARGUMENT with the stable code
/// `malformed_message` in the metadata, like every other refusal (before: a bare INTERNAL).
#[test]
fn a_request_that_does_not_decode_is_malformed_message() {
    let c = cluster_with(2, 2, &["--dev-plaintext"]);
    let cluster =
        frostgate_host::coordinator::cluster::Cluster::load(std::path::Path::new(&c.file())).expect("cluster");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    let status = rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.nodes[0].api))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.expect("ready");
        // Field 1 as a length-delimited value whose length runs past the end.
        let garbage = vec![0x0a, 0xff, 0x01, 0x00];
        grpc.unary(
            tonic::Request::new(garbage),
            http::uri::PathAndQuery::from_static("/frostgate.v1.Signer/OpenSession"),
            RawCodec,
        )
        .await
        .expect_err("does not decode")
    });
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert_eq!(
        status.metadata().get(frostgate_host::api::CODE_KEY).and_then(|v| v.to_str().ok()),
        Some("malformed_message")
    );
    assert_eq!(
        status.metadata().get(frostgate_host::api::RECOVERY_KEY).and_then(|v| v.to_str().ok()),
        Some("fix_request")
    );
}

/// Sends and receives raw bytes (a client that is not generated from the contract).
#[derive(Debug, Clone, Copy)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, buf: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(buf, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, buf: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let mut out = vec![0u8; bytes::Buf::remaining(buf)];
        bytes::Buf::copy_to_slice(buf, &mut out);
        Ok(Some(out))
    }
}

//! Attested enclaves across real processes: a dev cluster whose enclaves attest themselves with
//! the software stand-in for the Nitro security module (a test PKI, development PCRs pinned in
//! the cluster file). `frostgate status` verifies each node's document with the same verifier as
//! real Nitro documents (challenge as nonce, per-boot key certified by the identity key); a node
//! whose PCRs differ from its pins, or that runs without a provider while pinned, is refused
//! with the check named; the cluster keeps signing.

use frostgate_common::bounded::Signers;
use frostgate_common::error::ErrorCode;
use frostgate_common::ids::{DkgId, ParticipantId};
use frostgate_common::protocol::{
    DkgEnvelopes, DkgOutcome, DkgParticipant, DkgParticipants, DkgRound1Packages, DkgRound2, DkgStart, GetIdentity,
    RepairStart,
};
use frostgate_host::coordinator::signer::SignerClient;
use frostgate_tests::dev_cluster::{DevCluster, Process};
use frostgate_tests::host_bin;
use std::time::Duration;

/// Every node's attestation from `frostgate status` and its exit code, once every node serves
/// through its host again (a restarted enclave takes its host a moment to reconnect to).
fn status(c: &DevCluster) -> (i32, Vec<serde_json::Value>) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let o = std::process::Command::new(host_bin())
            .args(["status", "--cluster", &c.file(), "--json"])
            .output()
            .expect("status");
        let s: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
        let nodes = s["nodes"].as_array().expect("nodes").clone();
        if nodes.iter().all(|n| n["state"] == "ready" && n["via"] == "host") {
            let code = o.status.code().expect("exit code");
            return (code, nodes.iter().map(|n| n["attestation"].clone()).collect());
        }
        assert!(std::time::Instant::now() < deadline, "nodes not back: {s}\n{}", c.logs());
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

fn pinned_pcr0(c: &DevCluster) -> String {
    let text = std::fs::read_to_string(c.file()).expect("cluster file");
    let table: toml::Table = toml::from_str(&text).expect("toml");
    table["nodes"][0]["attestation"]["pcrs"]["0"].as_str().expect("pcr0 pin").to_string()
}

fn enclave_config(c: &DevCluster, node: u16) -> std::path::PathBuf {
    c.node(node).join("enclave/enclave.toml")
}

#[test]
fn attested_nodes_verify_and_a_node_off_its_pins_is_refused_by_name() {
    let c = DevCluster::start(&host_bin(), 3, 2, &["--dev-plaintext", "--attestation", "software"]);
    let (code, attested) = status(&c);
    assert_eq!(code, 0);
    let pcr0 = pinned_pcr0(&c);
    for a in &attested {
        assert_eq!(a["state"], "verified", "{a}\n{}", c.logs());
        assert_eq!(a["provider"], "software");
        assert_eq!(a["pcrs"]["0"], pcr0.as_str());
    }
    // Attestation changes nothing for signing.
    let key = c.keygen();
    let key = key["key"].as_str().expect("key").to_string();
    let message = hex::encode([5u8; 32]);
    c.run(&["sign", "--cluster", &c.file(), "--key", &key, "--message", &message, "--json"]).expect("sign");
    // Node 3's enclave now reports another PCR0 (another image).
    let path = enclave_config(&c, 3);
    let text = std::fs::read_to_string(&path).expect("config");
    std::fs::write(&path, text.replacen(&format!("0 = \"{pcr0}\""), &format!("0 = \"{}\"", "ab".repeat(48)), 1))
        .expect("config");
    c.kill_process(3, Process::Enclave);
    c.up(&[]).expect("node 3 up");
    let (code, attested) = status(&c);
    assert_eq!(code, 3, "a refused node fails status (attestation_invalid)");
    assert_eq!(attested[0]["state"], "verified");
    let refusal =
        |a: &serde_json::Value| (a["state"].as_str().map(String::from), a["check"].as_str().map(String::from));
    assert_eq!(refusal(&attested[2]), (Some("refused".into()), Some("pcr".into())), "{}", attested[2]);
    // The coordinator runs no ceremony with it: keygen fails naming node 3 and its check.
    let e = c.run(&["keygen", "--cluster", &c.file(), "--json"]).expect_err("node 3 is off its pins");
    assert!(e.contains("attestation_invalid") && e.contains("node 3") && e.contains("pcr"), "{e}");
    // Node 1's pin names node 2's identity: node 2's enclave (same image) cannot answer for it.
    let file = c.file();
    let text = std::fs::read_to_string(&file).expect("cluster file");
    let table: toml::Table = toml::from_str(&text).expect("toml");
    let identity =
        |i: usize| table["nodes"][i]["attestation"]["identity_key"].as_str().expect("identity pin").to_string();
    let (one, two) = (identity(0), identity(1));
    std::fs::write(&file, text.replacen(&one, &two, 1)).expect("cluster file");
    let (_, attested) = status(&c);
    assert_eq!(refusal(&attested[0]), (Some("refused".into()), Some("identity".into())), "{}", attested[0]);
    std::fs::write(&file, &text).expect("cluster file");
    // Node 2 without a provider while pinned: refused, not shown as merely unattested.
    let path = enclave_config(&c, 2);
    let text = std::fs::read_to_string(&path).expect("config");
    let cut = text.find("\n[attestation]").expect("attestation table");
    let end = text[cut + 1..].find("\n[").map_or(text.len(), |e| cut + 1 + e);
    std::fs::write(&path, format!("{}{}", &text[..cut], &text[end..])).expect("config");
    c.kill_process(2, Process::Enclave);
    c.up(&[]).expect("node 2 up");
    let (code, attested) = status(&c);
    assert_eq!(code, 3);
    assert_eq!(refusal(&attested[1]), (Some("refused".into()), Some("provider".into())), "{}", attested[1]);
}

/// The cluster file without node `node`'s attestation pins: the coordinator then asks nothing of
/// it, and only the enclaves' own `[group]` pins stand between it and a ceremony.
fn unpin_in_cluster_file(c: &DevCluster, node: usize) {
    let file = c.file();
    let mut table: toml::Table = toml::from_str(&std::fs::read_to_string(&file).expect("cluster file")).expect("toml");
    let nodes = table.get_mut("nodes").and_then(|n| n.as_array_mut()).expect("nodes");
    nodes[node - 1].as_table_mut().expect("node").remove("attestation").expect("pinned");
    std::fs::write(&file, toml::to_string(&table).expect("toml")).expect("cluster file");
}

/// Asserts that a ceremony failed because nodes 1 and 2 each refused participant 3's attestation.
fn refused_by_every_peer(e: &str) {
    assert!(e.contains("attestation_invalid"), "{e}");
    for peer in [1, 2] {
        assert!(e.contains(&format!("node {peer} refuses participant 3's attestation")), "{e}");
    }
    assert!(!e.contains("node 3 refuses"), "node 3 refused a peer on its pins: {e}");
}

/// A coordinator that skips the attestation exchange: round 1 everywhere, then round 2 on node
/// 1, which would send its peers their shares. Answers node 1's round-2 outcome.
fn round2_without_attestation(c: &DevCluster) -> DkgOutcome<DkgEnvelopes> {
    let table: toml::Table = toml::from_str(&std::fs::read_to_string(c.file()).expect("cluster")).expect("toml");
    let apis: Vec<String> =
        table["nodes"].as_array().expect("nodes").iter().map(|n| n["api"].as_str().expect("api").to_string()).collect();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
    rt.block_on(async {
        let t = Duration::from_secs(10);
        let mut nodes = Vec::new();
        let mut participants = Vec::new();
        for (i, api) in apis.iter().enumerate() {
            let id = ParticipantId::new(i as u16 + 1).expect("id");
            let node = SignerClient::connect(id, api, None).await;
            participants.push(DkgParticipant { id, identity_key: node.call(GetIdentity, t).await.expect("identity") });
            nodes.push(node);
        }
        let participants = DkgParticipants::new(participants).expect("bound");
        let mut id = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut id);
        let dkg = DkgId::from_bytes(id);
        let mut round1 = Vec::new();
        for n in &nodes {
            let start = DkgStart { dkg, threshold: 2, me: n.id(), participants: participants.clone() };
            match n.call(start, t).await.expect("start") {
                DkgOutcome::Done(p) => round1.push(p),
                DkgOutcome::Blame(b) => panic!("{b:?}"),
            }
        }
        let others = DkgRound1Packages::new(round1.into_iter().filter(|p| p.from.get() != 1).collect::<Vec<_>>())
            .expect("bound");
        nodes[0].call(DkgRound2 { dkg, round1: others }, t).await.expect("round 2")
    })
}

/// A coordinator that skips the exchange before a repair: `RepairStart` on node 1 (helpers 1
/// and 2, seat 3), which would answer with deltas for helper 2. Answers node 1's outcome.
fn repair_start_without_attestation(c: &DevCluster, key: &str) -> DkgOutcome<DkgEnvelopes> {
    let table: toml::Table = toml::from_str(&std::fs::read_to_string(c.file()).expect("cluster")).expect("toml");
    let api = |i: usize| table["nodes"][i]["api"].as_str().expect("api").to_string();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
    rt.block_on(async {
        let t = Duration::from_secs(10);
        let id = |i: u16| ParticipantId::new(i).expect("id");
        let helper = SignerClient::connect(id(1), &api(0), None).await;
        let seat = SignerClient::connect(id(3), &api(2), None).await;
        let start = RepairStart {
            repair: DkgId::from_bytes([7; 16]),
            key: key.parse().expect("key id"),
            seat: id(3),
            identity_key: seat.call(GetIdentity, t).await.expect("identity"),
            me: id(1),
            helpers: Signers::new(vec![id(1), id(2)]).expect("bound"),
        };
        helper.call(start, t).await.expect("repair start")
    })
}

#[test]
fn ceremonies_run_between_attested_enclaves_and_every_peer_refuses_one_off_its_pins() {
    let c = DevCluster::start(&host_bin(), 3, 2, &["--dev-plaintext", "--attestation", "software"]);
    // Every enclave pins every peer's measurements in its own [group].
    let text = std::fs::read_to_string(enclave_config(&c, 1)).expect("config");
    assert_eq!(text.matches("attestation = { root = ").count(), 3, "{text}");
    // A coordinator that skips the exchange gets no share out of an enclave.
    match round2_without_attestation(&c) {
        DkgOutcome::Blame(b) => assert_eq!((b.code, b.culprit.get()), (ErrorCode::AttestationInvalid, 2)),
        DkgOutcome::Done(_) => panic!("round 2 answered for unattested peers"),
    }
    // A DKG between attested enclaves, then a signature; the key's seat repaired onto a fresh
    // token (same image), attested to the helpers.
    let key = c.keygen()["key"].as_str().expect("key").to_string();
    c.sign(&key, &hex::encode([7u8; 32])).unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    let d = c.dir.display().to_string();
    c.run(&["dev", "cluster", "replace-node", "--dir", &d, "--node", "3", "--json"]).expect("replace");
    for i in [1, 2, 3] {
        c.kill(i);
    }
    c.up(&[]).expect("up with the new pins");
    let repaired = c
        .run(&["repair", "--cluster", &c.file(), "--key", &key, "--seat", "3", "--json"])
        .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    assert_eq!(repaired["seat"], 3, "{repaired}");
    // A coordinator that skips the exchange gets no repair delta either.
    match repair_start_without_attestation(&c, &key) {
        DkgOutcome::Blame(b) => assert_eq!((b.code, b.culprit.get()), (ErrorCode::AttestationInvalid, 2)),
        DkgOutcome::Done(_) => panic!("a repair started with unattested peers"),
    }
    // Node 3's enclave now reports another PCR0 (another image), and the cluster file no longer
    // pins it, so the coordinator asks nothing: nodes 1 and 2 refuse it on their own pins.
    unpin_in_cluster_file(&c, 3);
    let pcr0 = pinned_pcr0(&c);
    let path = enclave_config(&c, 3);
    let original = std::fs::read_to_string(&path).expect("config");
    let at = original.find("\n[attestation]").expect("provider table");
    let (head, tail) = original.split_at(at);
    let other_image = tail.replacen(&format!("0 = \"{pcr0}\""), &format!("0 = \"{}\"", "ab".repeat(48)), 1);
    assert_ne!(other_image, tail);
    std::fs::write(&path, format!("{head}{other_image}")).expect("config");
    c.kill_process(3, Process::Enclave);
    c.up(&[]).expect("node 3 up");
    status(&c);
    let e = c.run(&["keygen", "--cluster", &c.file(), "--json"]).expect_err("node 3 is off its pins");
    refused_by_every_peer(&e);
    let e = c.run(&["refresh", "--cluster", &c.file(), "--key", &key, "--json"]).expect_err("refresh");
    refused_by_every_peer(&e);
    // A repair's exchange too: the helpers refuse the seat's enclave off its pins.
    let e = c.run(&["repair", "--cluster", &c.file(), "--key", &key, "--seat", "3"]).expect_err("repair");
    refused_by_every_peer(&e);
    // No downgrade: node 3 without a provider is refused the same way.
    let end = tail[1..].find("\n[").map_or(tail.len(), |e| e + 1);
    std::fs::write(&path, format!("{head}{}", &tail[end..])).expect("config");
    c.kill_process(3, Process::Enclave);
    c.up(&[]).expect("node 3 up");
    status(&c);
    let e = c.run(&["keygen", "--cluster", &c.file(), "--json"]).expect_err("node 3 unattested");
    refused_by_every_peer(&e);
    // Back on its image, it is attested again: the same cluster runs a DKG.
    std::fs::write(&path, &original).expect("config");
    c.kill_process(3, Process::Enclave);
    c.up(&[]).expect("node 3 up");
    status(&c);
    c.keygen();
}

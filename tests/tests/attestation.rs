//! Attested enclaves across real processes: a dev cluster whose enclaves attest themselves with
//! the software stand-in for the Nitro security module (a test PKI, development PCRs pinned in
//! the cluster file). `frostgate status` verifies each node's document with the same verifier as
//! real Nitro documents (challenge as nonce, per-boot key certified by the identity key); a node
//! whose PCRs differ from its pins, or that runs without a provider while pinned, is refused
//! with the check named; the cluster keeps signing.

use frostgate_tests::dev_cluster::{DevCluster, Process};
use frostgate_tests::host_bin;

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

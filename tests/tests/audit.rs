//! The audit trail against the outside review's flood (issue 25 item 1), across real processes:
//! approvals that sign nothing, by the thousand in the review (here a hundred, with the bounds
//! lowered in `[audit]` and compaction forced), neither erase a decision that released a share
//! (from the trail or from host.db) nor stop signing; a trail full of signed decisions refuses to
//! sign (`audit_trail_full`) until the pinned auditor acknowledges an export; a forged or
//! mismatched acknowledgement is refused.

use frostgate_common::ids::SessionId;
use frostgate_common::protocol::{OpenPsbtSession, SessionRef};
use frostgate_tests::dev_cluster::DevCluster;
use frostgate_tests::host_bin;
use frostgate_tests::psbt::{p2tr, random_address, spend, write};
use std::process::Command;
use std::time::Duration;

fn hex32(s: &str) -> [u8; 32] {
    hex::decode(s).expect("hex").try_into().expect("32 bytes")
}

fn frostgate(args: &[&str]) -> std::process::Output {
    Command::new(host_bin()).args(args).output().expect("run frostgate")
}

fn ok(o: std::process::Output) -> String {
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

struct Setup {
    cluster: DevCluster,
    key: String,
    internal: [u8; 32],
    output_key: [u8; 32],
    allowed: bitcoin::Address,
    work: tempfile::TempDir,
    auditor_key: std::path::PathBuf,
}

impl Setup {
    fn audit(&self, node: u16) -> Vec<serde_json::Value> {
        let text = ok(frostgate(&["audit", "--cluster", &self.cluster.file(), "--node", &node.to_string(), "--json"]));
        text.lines().map(|l| serde_json::from_str(l).expect("json line")).collect()
    }

    fn signed(&self, node: u16) -> Vec<u64> {
        self.audit(node).iter().filter(|e| e["decision"] == "signed").map(|e| e["seq"].as_u64().expect("seq")).collect()
    }

    fn sign_psbt(&self, name: &str) -> Result<serde_json::Value, String> {
        let psbt = spend(&self.internal, &self.output_key, &[11_000], &[(self.allowed.script_pubkey(), 10_000)]);
        let path = write(self.work.path(), name, &psbt);
        self.cluster.run(&[
            "sign-psbt",
            "--cluster",
            &self.cluster.file(),
            "--key",
            &self.key,
            "--psbt",
            &path,
            "--timeout-ms",
            "5000",
            "--json",
        ])
    }

    fn socket(&self, node: u16) -> String {
        format!("unix:{}", self.cluster.node(node).join("host").join("host.sock").display())
    }

    fn db(&self, node: u16) -> String {
        self.cluster.node(node).join("host").join("host.db").display().to_string()
    }

    fn first_version(&self, node: u16) -> u64 {
        let stats: serde_json::Value =
            serde_json::from_str(&ok(frostgate(&["store", "stats", "--db", &self.db(node), "--json"]))).expect("json");
        stats["first_version"].as_u64().expect("first version")
    }

    /// `frostgate audit acknowledge` of `export` on node `node` with `key`: the command's output.
    fn acknowledge(&self, node: u16, export: &std::path::Path, key: &std::path::Path) -> std::process::Output {
        frostgate(&[
            "audit",
            "acknowledge",
            "--connect",
            &self.socket(node),
            "--export",
            export.to_str().expect("utf-8"),
            "--auditor-key",
            key.to_str().expect("utf-8"),
        ])
    }

    /// Exports node `node`'s trail and acknowledges it with `key`: the command's output.
    fn export_and_acknowledge(&self, node: u16, key: &std::path::Path) -> std::process::Output {
        let export = self.work.path().join(format!("export-{node}-{}.jsonl", hex::encode(rand32())));
        ok(frostgate(&["audit", "export", "--connect", &self.socket(node), "--out", export.to_str().expect("utf-8")]));
        self.acknowledge(node, &export, key)
    }
}

fn rand32() -> [u8; 32] {
    frostgate_tests::signing::random()
}

fn setup(max_entries: usize, max_signed: usize) -> Setup {
    let work = tempfile::tempdir().expect("dir");
    let auditor_key = work.path().join("auditor.key");
    let auditor_public =
        ok(frostgate(&["audit", "auditor-key", "--private-key-out", auditor_key.to_str().expect("p")]));
    let allowed = random_address();
    let file = work.path().join("policy.toml");
    std::fs::write(
        &file,
        format!(
            "[policy]\nnetwork = \"regtest\"\ndestinations = [\"{allowed}\"]\n\n[audit]\nmax_entries = {max_entries}\n\
             max_signed = {max_signed}\nauditor_key = \"{}\"\n",
            auditor_public.trim()
        ),
    )
    .expect("policy");
    let cluster = DevCluster::init(&host_bin(), 3, 2, &["--policy", file.to_str().expect("p")]);
    // Compaction after 40 records, checked every second: the flood below compacts each store.
    cluster
        .up(&[("FROSTGATE_ENCLAVE_COMPACT_AFTER_RECORDS", "40"), ("FROSTGATE_ENCLAVE_SWEEP_INTERVAL_SECS", "1")])
        .expect("up");
    let key = cluster.keygen();
    Setup {
        key: key["key"].as_str().expect("key").to_string(),
        internal: hex32(key["key"].as_str().expect("key")),
        output_key: hex32(key["output_key"].as_str().expect("output key")),
        cluster,
        allowed,
        work,
        auditor_key,
    }
}

/// The review's flood: `count` PSBT sessions of a zero-value transaction paying only back to
/// the key, each approved and then closed unsigned, on every node, by the coordinator's
/// certificate over gRPC.
fn flood(s: &Setup, count: usize) {
    let cluster =
        frostgate_host::coordinator::cluster::Cluster::load(std::path::Path::new(&s.cluster.file())).expect("cluster");
    let key: frostgate_common::ids::KeyId = s.key.parse().expect("key id");
    frostgate_tests::dkg::runtime().block_on(async {
        let nodes = frostgate_host::coordinator::dkg_relay::connect_all(&cluster).await;
        for i in 0..count {
            let back = 5_000 + i as u64;
            let psbt = spend(&s.internal, &s.output_key, &[back], &[(p2tr(&s.output_key), back)]);
            let session = SessionId::from_bytes(frostgate_tests::signing::random());
            for node in &nodes {
                let open = OpenPsbtSession {
                    session,
                    key,
                    input: 0,
                    psbt: frostgate_common::bounded::PsbtBytes::new(psbt.serialize()).expect("bound"),
                };
                node.call(open, Duration::from_secs(10)).await.expect("a zero-value spend is approved");
                node.call(SessionRef { session }, Duration::from_secs(10)).await.expect("closed");
            }
        }
    });
}

#[test]
fn a_flood_of_approvals_neither_erases_signed_decisions_nor_stops_signing() {
    let s = setup(20, 64);
    s.sign_psbt("first.psbt").unwrap_or_else(|e| panic!("{e}\n{}", s.cluster.logs()));
    let signed_before: Vec<Vec<u64>> = (1..=3).map(|n| s.signed(n)).collect();
    assert_eq!(signed_before.iter().filter(|v| !v.is_empty()).count(), 2, "two signers: {signed_before:?}");
    let first_versions: Vec<u64> = (1..=3).map(|n| s.first_version(n)).collect();

    flood(&s, 100);
    // Every store compacted during or after the flood (bounded wait for the sweep).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while (1..=3).any(|n| s.first_version(n) <= first_versions[n as usize - 1]) {
        assert!(std::time::Instant::now() < deadline, "no compaction after the flood");
        std::thread::sleep(Duration::from_millis(200));
    }
    for n in 1..=3u16 {
        let trail = s.audit(n);
        let signed: Vec<u64> =
            trail.iter().filter(|e| e["decision"] == "signed").map(|e| e["seq"].as_u64().expect("seq")).collect();
        assert_eq!(signed, signed_before[n as usize - 1], "node {n} lost a signed decision to the flood");
        let others = trail.iter().filter(|e| e["decision"] != "signed").count();
        assert!(others <= 20, "node {n} keeps {others} approvals, over max_entries");
    }
    // host.db holds them too: a restarted node replays the same signed decisions.
    for n in 1..=3u16 {
        s.cluster.kill(n);
    }
    s.cluster.up(&[]).expect("up");
    for n in 1..=3u16 {
        assert_eq!(s.signed(n), signed_before[n as usize - 1], "node {n}'s host.db lost a signed decision");
    }
    // And signing goes on.
    s.sign_psbt("after.psbt").unwrap_or_else(|e| panic!("{e}\n{}", s.cluster.logs()));
}

#[test]
fn a_full_trail_refuses_to_sign_until_the_auditor_acknowledges_an_export() {
    let s = setup(4096, 2);
    // Each signing adds a signed record on its two signers; once two trails are full (2 each),
    // no pair can sign.
    let mut signed = 0;
    let e = loop {
        match s.sign_psbt(&format!("fill{signed}.psbt")) {
            Ok(_) => signed += 1,
            Err(e) => break e,
        }
        assert!(signed <= 3, "more signings than 3 trails of 2 can hold");
    };
    assert!(e.contains("audit_trail_full"), "{e}");
    assert!(signed >= 2, "{signed}");
    let full = (1..=3u16).filter(|n| s.signed(*n).len() == 2).count();
    assert!(full >= 2, "refused with fewer than two full trails");
    assert!((1..=3u16).all(|n| s.signed(n).len() <= 2), "a trail went over max_signed");

    // The node with the most signed decisions.
    let n = (1..=3u16).max_by_key(|n| s.signed(*n).len()).expect("a node");
    // Another key's acknowledgement is refused, and nothing leaves.
    let other = s.work.path().join("other.key");
    ok(frostgate(&["audit", "auditor-key", "--private-key-out", other.to_str().expect("p")]));
    let o = s.export_and_acknowledge(n, &other);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("audit_ack_invalid"), "{o:?}");
    let before = s.signed(n);
    // An export altered after it was written is refused by the tool before anything is signed.
    let export = s.work.path().join("altered.jsonl");
    ok(frostgate(&["audit", "export", "--connect", &s.socket(n), "--out", export.to_str().expect("p")]));
    let text = std::fs::read_to_string(&export).expect("export");
    let mut lines: Vec<&str> = text.lines().collect();
    // A signed decision left out (what a host hiding a spend from the auditor would do).
    let hidden = lines.iter().position(|l| l.contains("\"decision\":\"signed\"")).expect("a signed record");
    lines.remove(hidden);
    std::fs::write(&export, lines.join("\n") + "\n").expect("alter");
    let o = s.acknowledge(n, &export, &s.auditor_key);
    assert!(!o.status.success(), "{o:?}");
    assert_eq!(s.signed(n), before);
    // A self-consistent export of other records (one left out, the digest recomputed, as a host
    // showing the auditor a doctored trail would): the auditor's tool signs it, the enclave,
    // comparing with the records it keeps, refuses it.
    let kept: Vec<frostgate_common::protocol::AuditEntry> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["wire"].as_str().map(|w| postcard::from_bytes(&hex::decode(w).expect("hex")).expect("entry")))
        .collect();
    let end: serde_json::Value = serde_json::from_str(lines.last().expect("end")).expect("end");
    let through = end["through"].as_u64().expect("through");
    let identity = hex::decode(end["identity"].as_str().expect("identity")).expect("hex");
    let preimage = frostgate_common::protocol::audit_ack_preimage(&identity, through, &kept).expect("preimage");
    use bitcoin::hashes::Hash;
    let digest = bitcoin::hashes::sha256::Hash::hash(&preimage).to_byte_array();
    let last = lines.len() - 1;
    let doctored_end = serde_json::json!({
        "identity": end["identity"], "through": through, "records": kept.len(), "digest": hex::encode(digest)
    });
    let doctored_end = doctored_end.to_string();
    lines[last] = &doctored_end;
    std::fs::write(&export, lines.join("\n") + "\n").expect("doctor");
    let o = s.acknowledge(n, &export, &s.auditor_key);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("audit_ack_invalid"), "{o:?}");
    assert_eq!(s.signed(n), before);

    // The pinned auditor acknowledges every node's export: the records leave, signing resumes,
    // and the numbering goes on after the acknowledged records.
    let mut last = [0u64; 3];
    for n in 1..=3u16 {
        last[n as usize - 1] = s.audit(n).iter().filter_map(|e| e["seq"].as_u64()).max().unwrap_or(0);
        let o = s.export_and_acknowledge(n, &s.auditor_key);
        assert!(ok(o).contains("left the trail"));
        assert!(s.audit(n).is_empty(), "node {n} keeps acknowledged records");
    }
    s.sign_psbt("resumed.psbt").unwrap_or_else(|e| panic!("{e}\n{}", s.cluster.logs()));
    // After a restart (replay of host.db) the acknowledged records stay gone and new ones follow.
    for n in 1..=3u16 {
        s.cluster.kill(n);
    }
    s.cluster.up(&[]).expect("up");
    for n in 1..=3u16 {
        let trail = s.audit(n);
        assert!(trail.iter().all(|e| e["seq"].as_u64().expect("seq") > last[n as usize - 1]), "node {n}: {trail:?}");
    }
    let signers = (1..=3u16).filter(|n| !s.signed(*n).is_empty()).count();
    assert_eq!(signers, 2, "the resumed signing is in two trails");
}

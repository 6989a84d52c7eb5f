//! PSBT signing under the enclaves' policy, across real processes (a dev cluster of three nodes,
//! 2-of-3, mutual TLS): the final transaction is checked by Bitcoin Core's script interpreter
//! (`bitcoinconsensus`), every policy rule is refused by every node with nothing consumed, the
//! window counters survive kill -9 and a restored database is refused.

use bitcoin::consensus::encode::deserialize_hex;
use bitcoin::psbt::Psbt;
use bitcoin::Transaction;
use frostgate_tests::dev_cluster::DevCluster;
use frostgate_tests::host_bin;
use frostgate_tests::psbt::{p2tr, random_address, spend, write};
use std::path::Path;

mod common;
use common::consensus_valid;

struct Setup {
    cluster: DevCluster,
    key: String,
    internal: [u8; 32],
    output_key: [u8; 32],
    allowed: bitcoin::Address,
    work: tempfile::TempDir,
    /// The policy's canonical hash, computed here from the same file.
    policy_hash: String,
}

fn hex32(s: &str) -> [u8; 32] {
    hex::decode(s).expect("hex").try_into().expect("32 bytes")
}

fn setup(policy: &str) -> Setup {
    setup_with(policy, &[])
}

/// [`setup`] with extra `dev cluster init` flags.
fn setup_with(policy: &str, init: &[&str]) -> Setup {
    let work = tempfile::tempdir().expect("dir");
    let allowed = random_address();
    let file = work.path().join("policy.toml");
    let text = format!("[policy]\nnetwork = \"regtest\"\ndestinations = [\"{allowed}\"]\n{policy}");
    std::fs::write(&file, &text).expect("policy");
    let table: toml::Table = toml::from_str(&text).expect("toml");
    let config: frostgate_enclave::policy::PolicyConfig = table["policy"].clone().try_into().expect("policy");
    let policy_hash = hex::encode(frostgate_enclave::policy::Policy::from_config(&config).expect("valid").hash());
    let file = file.display().to_string();
    let mut args = vec!["--policy", file.as_str()];
    args.extend_from_slice(init);
    let cluster = DevCluster::start(&host_bin(), 3, 2, &args);
    let key = cluster.keygen();
    let internal = hex32(key["key"].as_str().expect("key"));
    let output_key = hex32(key["output_key"].as_str().expect("output key"));
    Setup {
        key: key["key"].as_str().expect("key").to_string(),
        cluster,
        internal,
        output_key,
        allowed,
        work,
        policy_hash,
    }
}

impl Setup {
    fn psbt(&self, name: &str, inputs: &[u64], to_allowed: u64, change: u64) -> (String, Psbt) {
        let mut outputs = vec![(self.allowed.script_pubkey(), to_allowed)];
        if change > 0 {
            outputs.push((p2tr(&self.output_key), change));
        }
        let psbt = spend(&self.internal, &self.output_key, inputs, &outputs);
        (write(self.work.path(), name, &psbt), psbt)
    }

    fn sign_psbt(&self, path: &str) -> Result<serde_json::Value, String> {
        self.cluster.run(&[
            "sign-psbt",
            "--cluster",
            &self.cluster.file(),
            "--key",
            &self.key,
            "--psbt",
            path,
            "--finalize",
            "--timeout-ms",
            "5000",
            "--json",
        ])
    }

    fn audit(&self, node: u16) -> Vec<serde_json::Value> {
        let o = std::process::Command::new(host_bin())
            .args(["audit", "--cluster", &self.cluster.file(), "--node", &node.to_string(), "--json"])
            .output()
            .expect("audit");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).expect("json line")).collect()
    }
}

#[test]
fn a_multi_input_psbt_is_signed_under_the_policy_and_consensus_valid() {
    let s = setup("max_sats_per_tx = 200000\nmax_fee_sats = 5000\n");
    let (path, unsigned) = s.psbt("two-inputs.psbt", &[120_000, 80_000], 150_000, 48_000);
    let out = s.sign_psbt(&path).unwrap_or_else(|e| panic!("{e}\n{}", s.cluster.logs()));
    let tx: Transaction = deserialize_hex(out["tx"].as_str().expect("tx")).expect("transaction");
    assert_eq!(tx.compute_txid().to_string(), out["txid"].as_str().expect("txid"));
    assert_eq!(tx.compute_txid(), unsigned.unsigned_tx.compute_txid(), "the signer changed the transaction");
    let spent: Vec<_> = unsigned.inputs.iter().map(|i| i.witness_utxo.clone().expect("utxo")).collect();
    consensus_valid(&tx, &spent);
    // The PSBT (not finalized) carries both key-path signatures.
    let signed: Psbt = out["psbt"].as_str().expect("psbt").parse().expect("psbt");
    assert!(signed.inputs.iter().all(|i| i.final_script_witness.is_some()));
    // Every node reports the same policy hash; each signing node audited approval and shares.
    let status = s.cluster.run(&["status", "--cluster", &s.cluster.file(), "--json"]).expect("status");
    let hashes: Vec<&str> =
        status["nodes"].as_array().expect("nodes").iter().map(|n| n["policy_hash"].as_str().expect("hash")).collect();
    assert_eq!(hashes.len(), 3);
    assert!(hashes.iter().all(|h| *h == s.policy_hash), "{hashes:?} vs {}", s.policy_hash);
    let txid = tx.compute_txid().to_string();
    let audited: Vec<serde_json::Value> = (1..=3).flat_map(|n| s.audit(n)).collect();
    let signed_shares = audited.iter().filter(|e| e["decision"] == "signed").count();
    assert!(signed_shares >= 4, "two inputs, two shares each: {audited:?}");
    let approvals: Vec<_> = audited.iter().filter(|e| e["decision"] == "approved").collect();
    assert!(approvals.iter().all(|e| e["txid"] == txid.as_str() && e["policy_hash"] == hashes[0]), "{approvals:?}");
    assert!(approvals.iter().any(|e| e["outputs"][0][1] == 150_000), "{approvals:?}");
}

/// Runs `f`, expects a refusal naming `rule` from the policy, and checks every node audited it.
fn refused(s: &Setup, result: Result<serde_json::Value, String>, rule: &str) {
    let err = result.expect_err("the policy must refuse");
    assert!(err.contains("policy_violation") && err.contains(rule), "{err}");
    for n in 1..=3 {
        let log = s.audit(n);
        assert!(
            log.iter().any(|e| e["decision"] == "refused" && e["rule"].as_str().unwrap_or("").starts_with(rule)),
            "node {n} did not audit the refusal of {rule}: {log:?}"
        );
    }
}

#[test]
fn every_rule_is_refused_by_every_node_and_nothing_is_consumed() {
    let s = setup(
        "max_sats_per_tx = 100000\nmax_fee_sats = 2000\nwindow_secs = 3600\nmax_sats_per_window = 150000\n\
         max_signatures_per_window = 10\n",
    );
    // A destination that is not allowed.
    let stranger = random_address();
    let psbt = spend(&s.internal, &s.output_key, &[50_000], &[(stranger.script_pubkey(), 49_000)]);
    refused(&s, s.sign_psbt(&write(s.work.path(), "stranger.psbt", &psbt)), "destinations");
    // Too much for one transaction.
    let (path, _) = s.psbt("big.psbt", &[150_000], 120_000, 29_000);
    refused(&s, s.sign_psbt(&path), "max_sats_per_tx");
    // Too much fee.
    let (path, _) = s.psbt("fee.psbt", &[50_000], 40_000, 5_000);
    refused(&s, s.sign_psbt(&path), "max_fee_sats");
    // The raw-digest path is off.
    let digest = hex::encode(frostgate_tests::signing::random::<32>());
    refused(&s, s.cluster.sign(&s.key, &digest), "allow_raw_digest");
    // Nothing was consumed or charged: each enclave's whole share of the window (2-of-3: 100,000
    // of 150,000) is still there for one allowed spend.
    let (path, _) = s.psbt("ok.psbt", &[101_000], 100_000, 0);
    s.sign_psbt(&path).unwrap_or_else(|e| panic!("{e}\n{}", s.cluster.logs()));
    // And now it is used up (the rule and the numbers are named).
    let (path, _) = s.psbt("more.psbt", &[2_000], 1_000, 0);
    let err = s.sign_psbt(&path).expect_err("window exhausted");
    assert!(err.contains("max_sats_per_window: 1000 requested, 0 left"), "{err}");
}

fn copy_db(from: &Path, to: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let f = from.with_file_name(format!("host.db{suffix}"));
        if f.exists() {
            std::fs::copy(&f, to.join(format!("host.db{suffix}"))).expect("copy db");
        } else {
            let _ = std::fs::remove_file(to.join(format!("host.db{suffix}")));
        }
    }
}

#[test]
fn window_counters_survive_kill_9_and_a_restored_database_is_refused() {
    // 2-of-3: each enclave's share of 225,000 is 150,000.
    let s = setup("max_sats_per_tx = 100000\nwindow_secs = 86400\nmax_sats_per_window = 225000\n");
    let db = s.cluster.node(1).join("host").join("host.db");
    assert!(db.exists(), "{}", db.display());
    // Node 1's database before any charge.
    s.cluster.kill(1);
    let before = s.work.path().join("before");
    std::fs::create_dir_all(&before).expect("dir");
    copy_db(&db, &before);
    s.cluster.run(&["dev", "cluster", "up", "--dir", &s.cluster.dir.display().to_string()]).expect("up");
    let (tx1, _) = s.psbt("tx1.psbt", &[101_000], 100_000, 0);
    s.sign_psbt(&tx1).unwrap_or_else(|e| panic!("{e}\n{}", s.cluster.logs()));
    // Signing the same transaction again charges nothing more.
    s.sign_psbt(&tx1).expect("a retry of the same transaction");
    let (tx2, _) = s.psbt("tx2.psbt", &[61_000], 60_000, 0);
    let err = s.sign_psbt(&tx2).expect_err("over the window");
    assert!(err.contains("max_sats_per_window: 60000 requested, 50000 left"), "{err}");
    // kill -9 of every enclave and host: the counters come back from the store.
    for n in 1..=3 {
        s.cluster.kill(n);
    }
    s.cluster.run(&["dev", "cluster", "up", "--dir", &s.cluster.dir.display().to_string()]).expect("up");
    let err = s.sign_psbt(&tx2).expect_err("still over the window after kill -9");
    assert!(err.contains("50000 left"), "{err}");
    let (tx3, _) = s.psbt("tx3.psbt", &[51_000], 50_000, 0);
    s.sign_psbt(&tx3).unwrap_or_else(|e| panic!("{e}\n{}", s.cluster.logs()));
    // Restoring node 1's older database (before any charge) is a rollback, not a reset.
    s.cluster.kill(1);
    copy_db(&before.join("host.db"), db.parent().expect("dir"));
    let up = s.cluster.run(&["dev", "cluster", "up", "--dir", &s.cluster.dir.display().to_string()]);
    let err = up.expect_err("node 1 must refuse its rolled-back store");
    assert!(err.contains("node 1"), "{err}");
    let log = std::fs::read_to_string(s.cluster.node(1).join("host.log")).unwrap_or_default();
    assert!(log.contains("store_rollback_detected"), "{log}");
}

#[test]
fn a_coordinator_that_binds_a_psbt_then_sends_another_message_is_refused() {
    use frostgate_common::bounded::PsbtBytes;
    use frostgate_common::error::ErrorCode;
    use frostgate_common::ids::{KeyId, SessionId};
    use frostgate_common::protocol::{OpenPsbtSession, TaprootMode};
    use frostgate_tests::signing::{package, pid, random, round1, round2, Caller};
    let s = setup("max_sats_per_tx = 100000\n");
    let (_, psbt) = s.psbt("lie.psbt", &[60_000], 50_000, 9_000);
    let cluster = frostgate_host::coordinator::cluster::Cluster::load(Path::new(&s.cluster.file())).expect("cluster");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    rt.block_on(async {
        let nodes = frostgate_host::coordinator::dkg_relay::connect_all(&cluster).await;
        let callers: Vec<Caller> = nodes.iter().take(2).map(|n| Caller::Node((**n).clone())).collect();
        let session = SessionId::from_bytes(random());
        let key = KeyId::from_bytes(s.internal);
        let mut sighash = None;
        for c in &callers {
            let psbt = PsbtBytes::new(psbt.serialize()).expect("bound");
            let bound = c.request(OpenPsbtSession { session, key, input: 0, psbt }).await.expect("bound");
            sighash = Some(bound.sighash);
        }
        let signers = [pid(1), pid(2)];
        let attempt = frostgate_common::ids::AttemptId::from_bytes(random());
        for c in &callers {
            let set = frostgate_common::bounded::Signers::new(signers.to_vec()).expect("bound");
            c.request(frostgate_common::protocol::OpenAttempt { session, attempt, signers: set })
                .await
                .expect("attempt");
        }
        let mut commitments = std::collections::BTreeMap::new();
        for (p, c) in signers.iter().zip(&callers) {
            commitments.insert(*p, round1(c, attempt, *p).await.expect("round 1"));
        }
        // A package for another message than the sighash the enclaves computed.
        let other: [u8; 32] = random();
        assert_ne!(Some(other), sighash);
        let lie = package(&commitments, &other);
        let e = round2(&callers[0], attempt, pid(1), TaprootMode::Bip86, &lie).await.expect_err("refused");
        assert_eq!(e.code(), ErrorCode::SigningPackageMismatch, "{e}");
        // Nothing was consumed: the honest package still signs with the same nonce.
        let honest = package(&commitments, &sighash.expect("sighash"));
        round2(&callers[0], attempt, pid(1), TaprootMode::Bip86, &honest).await.expect("the nonce is intact");
    });
}

#[test]
fn outputs_of_derived_addresses_are_signed_with_derived_change_and_consensus_valid() {
    use frostgate_tests::psbt::{child, mark_input, mark_output, spend_children};
    let s = setup("max_sats_per_tx = 100000\nmax_fee_sats = 5000\n");
    let x = s.cluster.run(&["xpub", "--cluster", &s.cluster.file(), "--key", &s.key, "--json"]).expect("xpub");
    let xpub: bitcoin::bip32::Xpub = x["xpub"].as_str().expect("xpub").parse().expect("xpub");
    // Spend 0/0 and 0/5; 90,000 to the allowed destination, change to 1/3 (proved by the output's
    // BIP371 fields, so it is not counted against max_sats_per_tx).
    let (change_internal, change_output) = child(&xpub, &[1, 3]);
    let mut psbt = spend_children(
        &xpub,
        &[(&[0, 0], 60_000), (&[0, 5], 70_000)],
        &[(s.allowed.script_pubkey(), 90_000), (p2tr(&change_output), 39_000)],
    );
    mark_output(&mut psbt, 1, &change_internal, xpub.fingerprint(), &[1, 3]);
    let file = write(s.work.path(), "derived.psbt", &psbt);
    let out = s.sign_psbt(&file).unwrap_or_else(|e| panic!("{e}\n{}", s.cluster.logs()));
    let tx: Transaction = deserialize_hex(out["tx"].as_str().expect("tx")).expect("transaction");
    let spent: Vec<_> = psbt.inputs.iter().map(|i| i.witness_utxo.clone().expect("utxo")).collect();
    consensus_valid(&tx, &spent);
    let audited = s.audit(1);
    assert!(audited.iter().any(|e| e["decision"] == "approved" && e["path"] == "0/5"), "{audited:?}");
    // A coordinator that lies about the path (0/7 for the key at 0/5): refused, nothing signed.
    let mut lie = psbt.clone();
    let (internal, _) = child(&xpub, &[0, 5]);
    lie.inputs[1].tap_key_origins.clear();
    mark_input(&mut lie, 1, &internal, xpub.fingerprint(), &[0, 7]);
    let err = s.sign_psbt(&write(s.work.path(), "lie.psbt", &lie)).expect_err("a path to another key");
    assert!(err.contains("psbt_wrong_key"), "{err}");
    // A hardened step is refused with its own code.
    let mut hardened = psbt.clone();
    let (internal, _) = child(&xpub, &[0, 0]);
    hardened.inputs[0].tap_key_origins.clear();
    let k = bitcoin::secp256k1::XOnlyPublicKey::from_slice(&internal).expect("x");
    let path: bitcoin::bip32::DerivationPath = "m/0'/0".parse().expect("path");
    hardened.inputs[0].tap_key_origins.insert(k, (Vec::new(), (xpub.fingerprint(), path)));
    let err = s.sign_psbt(&write(s.work.path(), "hardened.psbt", &hardened)).expect_err("hardened");
    assert!(err.contains("derivation_invalid"), "{err}");
    // Nothing was consumed by the refusals: the honest PSBT signs again.
    s.sign_psbt(&file).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn after_a_refresh_and_after_removing_a_node_the_same_key_signs_consensus_valid_transactions() {
    // The operators allow a removal down to n = t (2 seats of a 2-of-n key). A short window, so
    // that its closing at the removal can be seen and waited out.
    let s = setup_with(
        "max_sats_per_tx = 200000\nwindow_secs = 3\nmax_sats_per_window = 1000000\n",
        &["--allow-removal-to-threshold"],
    );
    let file = s.cluster.file();
    let refresh = |extra: &[&str]| {
        let mut args = vec!["refresh", "--cluster", &file, "--key", &s.key, "--json"];
        args.extend_from_slice(extra);
        s.cluster.run(&args).unwrap_or_else(|e| panic!("{e}\n{}", s.cluster.logs()))
    };
    let out = refresh(&[]);
    assert_eq!((out["key"].as_str(), out["epoch"].as_u64()), (Some(s.key.as_str()), Some(1)), "{out}");
    assert_eq!(out["participants"], serde_json::json!([1, 2, 3]));
    let sign = |name: &str| {
        let (path, unsigned) = s.psbt(name, &[100_000], 90_000, 9_000);
        let out = s.sign_psbt(&path).unwrap_or_else(|e| panic!("{e}\n{}", s.cluster.logs()));
        let tx: Transaction = deserialize_hex(out["tx"].as_str().expect("tx")).expect("transaction");
        consensus_valid(&tx, &[unsigned.inputs[0].witness_utxo.clone().expect("utxo")]);
    };
    sign("after-refresh.psbt");
    let out = refresh(&["--remove", "3"]);
    assert_eq!((out["epoch"].as_u64(), &out["participants"]), (Some(2), &serde_json::json!([1, 2])), "{out}");
    assert_eq!(out["removed"], serde_json::json!([3]));
    // Fewer seats raise each enclave's share of the window (2-of-2: the whole limit), so the
    // removal closed the windows for one window length: charges taken under the 2-of-3 split
    // cannot be topped up to more than the limit.
    let (path, _) = s.psbt("right-after-removal.psbt", &[100_000], 90_000, 9_000);
    let e = s.sign_psbt(&path).expect_err("window closed by the removal");
    assert!(e.contains("max_sats_per_window") && e.contains("0 left"), "{e}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while s.sign_psbt(&path).is_err() {
        assert!(std::time::Instant::now() < deadline, "the window never reopened");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    sign("after-removal.psbt");
    // The removed node cannot take part in a refresh any more.
    let e = s.cluster.run(&["refresh", "--cluster", &s.cluster.file(), "--key", &s.key]).expect_err("node 3");
    assert!(e.contains("dkg_config_invalid"), "{e}");
}

/// The outside review's spreading attack: signings spread over every pair of a 2-of-3 cluster
/// (the third node stopped each time), twice round. Windows are counted per enclave, so each
/// enclave enforces its 2-of-3 share of each limit and the cluster total stays within the limit
/// whichever signers sign (before: each enclave allowed the whole limit, and the cluster signed
/// up to 3/2 of it).
#[test]
fn signings_spread_over_every_pair_stay_within_the_cluster_window() {
    const WINDOW_SATS: u64 = 100_000;
    const WINDOW_SIGNATURES: u64 = 3;
    let s = setup(&format!(
        "max_sats_per_tx = 100000\nwindow_secs = 86400\nmax_sats_per_window = {WINDOW_SATS}\n\
         max_signatures_per_window = {WINDOW_SIGNATURES}\n"
    ));
    let up = || s.cluster.run(&["dev", "cluster", "up", "--dir", &s.cluster.dir.display().to_string()]).expect("up");
    let (mut signed_sats, mut signatures, mut refusals) = (0u64, 0u64, Vec::new());
    for (round, stopped) in [3u16, 2, 1, 3, 2, 1].into_iter().enumerate() {
        s.cluster.kill(stopped);
        // 30,000 to the allowed recipient, distinct transactions (distinct input amounts).
        let (path, _) = s.psbt(&format!("spread{round}.psbt"), &[31_000 + round as u64], 30_000, 0);
        match s.sign_psbt(&path) {
            Ok(_) => {
                signed_sats += 30_000;
                signatures += 1;
            }
            Err(e) => {
                assert!(e.contains("policy_violation") && e.contains("_per_window"), "{e}");
                refusals.push(e);
            }
        }
        up();
    }
    assert!(signed_sats <= WINDOW_SATS, "the cluster signed {signed_sats} sats in a window of {WINDOW_SATS}");
    assert!(
        signatures <= WINDOW_SIGNATURES,
        "the cluster signed {signatures} times in a window of {WINDOW_SIGNATURES}"
    );
    // Every pair could sign once (each enclave's share: 66,667 sats and 2 signatures).
    assert_eq!(signatures, 3, "one signing per pair fits: {refusals:?}");
    assert!(refusals.iter().all(|e| e.contains("2-of-3 share of")), "{refusals:?}");
    // A single spend above one enclave's share is refused by every enclave, however little of
    // the window was used (the README states this price).
    let s = setup(&format!("max_sats_per_tx = 100000\nwindow_secs = 86400\nmax_sats_per_window = {WINDOW_SATS}\n"));
    let (path, _) = s.psbt("over-share.psbt", &[71_000], 70_000, 0);
    let e = s.sign_psbt(&path).expect_err("70,000 is above each enclave's 66,667");
    assert!(e.contains("max_sats_per_window: 70000 requested, 66667 left"), "{e}");
    let (path, _) = s.psbt("share.psbt", &[66_667], 66_667, 0);
    s.sign_psbt(&path).unwrap_or_else(|e| panic!("{e}\n{}", s.cluster.logs()));
}

/// Sessions open in each node's enclave, from `frostgate status`.
fn open_sessions(s: &Setup) -> Vec<u64> {
    let status = s.cluster.run(&["status", "--cluster", &s.cluster.file(), "--json"]).expect("status");
    status["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["open_sessions"].as_u64().expect("open_sessions"))
        .collect()
}

#[test]
fn sign_sign_psbt_and_bench_leave_no_session_open_on_any_node() {
    let s = setup("max_sats_per_tx = 200000\nallow_raw_digest = true\n");
    assert_eq!(open_sessions(&s), vec![0, 0, 0]);
    let file = s.cluster.file();
    let message = hex::encode([7u8; 32]);
    for extra in [&[][..], &["--path", "0/3"][..], &["--untweaked"][..]] {
        let mut args = vec!["sign", "--cluster", &file, "--key", &s.key, "--message", &message, "--json"];
        args.extend_from_slice(extra);
        s.cluster.run(&args).unwrap_or_else(|e| panic!("sign {extra:?}: {e}\n{}", s.cluster.logs()));
    }
    assert_eq!(open_sessions(&s), vec![0, 0, 0], "after sign");
    let (path, _) = s.psbt("ok.psbt", &[120_000, 80_000], 150_000, 48_000);
    s.sign_psbt(&path).unwrap_or_else(|e| panic!("{e}\n{}", s.cluster.logs()));
    assert_eq!(open_sessions(&s), vec![0, 0, 0], "after sign-psbt");
    // A refused signing (every node's policy, then the probe) closes what it opened too.
    let (path, _) = s.psbt("too-much.psbt", &[300_000], 250_000, 48_000);
    s.sign_psbt(&path).expect_err("over max_sats_per_tx");
    assert_eq!(open_sessions(&s), vec![0, 0, 0], "after a refused sign-psbt");
    // The bench drives the same signing object, concurrently, on its own cluster.
    let bench = frostgate_tests::dev_cluster::run_json(
        &host_bin(),
        &["bench", "--count", "24", "--concurrency", "8", "--no-pure", "--json"],
    )
    .expect("bench");
    assert_eq!(bench["signatures"], 24, "{bench}");
    assert_eq!(bench["open_sessions_after"], 0, "{bench}");
}

//! The signing service through failures, on real processes: two instances on one real
//! PostgreSQL, one killed -9 at random points five times and restarted, PostgreSQL itself stopped
//! and started under load; and one instance on SQLite killed mid-request. Every request ends
//! `signed` with one answer, the same from both instances; every signature verifies under
//! libsecp256k1 and every transaction under Bitcoin Core's interpreter; each enclave charged its
//! policy window once per transaction it signed; each enclave's audit trail names every request
//! it bound, once. And with a request log lost, the enclaves refuse another body under a request
//! id they bound, and sign the same body again.

use bitcoin::consensus::encode::deserialize_hex;
use bitcoin::Transaction;
use frostgate_host::service::client::ServiceClient;
use frostgate_tests::dev_cluster::DevCluster;
use frostgate_tests::postgres::Postgres;
use frostgate_tests::psbt::{random_address, spend};
use frostgate_tests::{host_bin, Daemon};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

mod common;
use common::consensus_valid;

/// What a fault run met (its seed, its kills, its outcome), where CI logs show it.
macro_rules! report {
    ($($arg:tt)*) => {{
        #[allow(clippy::print_stderr)]
        {
            eprintln!($($arg)*);
        }
    }};
}

/// PSBT requests; each spends `SPEND` to the allowed destination (the window: twice their sum).
const PSBTS: usize = 40;
const DIGESTS: usize = 160;
const SPEND: u64 = 10_000;
/// Requests submitted to both instances at once.
const TWICE: usize = 50;

fn instance(dir: &Path, name: &str, cluster: &str, store: &str, config: &Path, port: u16) -> Daemon {
    let listen = format!("127.0.0.1:{port}");
    let args: Vec<String> = [
        "serve",
        "--cluster",
        cluster,
        "--store",
        store,
        "--http-listen",
        &listen,
        "--dev-plaintext",
        "--config",
        &config.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    Daemon::start(&host_bin(), &args, &[], dir.join(format!("{name}.log")))
}

fn url(d: &Daemon) -> String {
    let addr = d.ready.split_whitespace().find_map(|w| w.strip_prefix("http=")).expect("ready names http");
    format!("http://{addr}")
}

fn config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("service.toml");
    let text =
        "[store]\n[limits]\nlease_secs = 3\nmax_open_per_client = 1000\nworkers = 16\nsigner_timeout_ms = 5000\n";
    std::fs::write(&path, text).expect("config");
    path
}

fn cluster_with_window(work: &Path, allowed: &bitcoin::Address) -> DevCluster {
    let policy = work.join("policy.toml");
    let window = 2 * SPEND * PSBTS as u64;
    let text = format!(
        "[policy]\nnetwork = \"regtest\"\ndestinations = [\"{allowed}\"]\nwindow_secs = 3600\nmax_sats_per_window = {window}\nallow_raw_digest = true\n"
    );
    std::fs::write(&policy, text).expect("policy");
    DevCluster::start(&host_bin(), 3, 2, &["--dev-plaintext", "--policy", &policy.display().to_string()])
}

/// Submits `body` to `url` until the service answers 200 or 201 (connection refused while an
/// instance is down, 503 while PostgreSQL is): what an application does with an idempotent API.
async fn submit(url: String, body: Value) -> Value {
    for _ in 0..600 {
        if let Ok(c) = ServiceClient::new(&url, None) {
            if let Ok((status, v)) = c.call("POST", "/v1/sign-requests", Some(&body)).await {
                if status == 200 || status == 201 {
                    return v;
                }
                assert!(status == 503 || status == 429, "{status}: {v}");
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never accepted: {body}");
}

/// The request once final, asked of `url` (retried while it is down).
async fn final_state(url: &str, id: &str) -> Value {
    for _ in 0..120 {
        if let Ok(c) = ServiceClient::new(url, None) {
            if let Ok((200, v)) = c.call("GET", &format!("/v1/sign-requests/{id}?wait_seconds=5"), None).await {
                if v["state"] != "pending" && v["state"] != "running" {
                    return v;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("request {id} never final at {url}");
}

fn digest(n: usize) -> [u8; 32] {
    let mut d = [0u8; 32];
    d[..8].copy_from_slice(&(n as u64).to_be_bytes());
    d[31] = 0x5a;
    d
}

fn verifies(v: &Value, message: &[u8; 32]) -> bool {
    let sig = hex::decode(v["signature"].as_str().expect("signature")).expect("hex");
    let signature = frostgate_common::protocol::Bip340Signature {
        r: sig[..32].try_into().expect("r"),
        s: sig[32..].try_into().expect("s"),
    };
    let key: [u8; 32] = hex::decode(v["output_key"].as_str().expect("key")).expect("hex").try_into().expect("32");
    frostgate_host::coordinator::libsecp_verifies(&signature, message, &key)
}

/// One node's audit trail.
fn audit(cluster: &DevCluster, node: u16) -> Vec<Value> {
    let o = std::process::Command::new(host_bin())
        .args(["audit", "--cluster", &cluster.file(), "--node", &node.to_string(), "--json"])
        .output()
        .expect("audit");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).expect("json")).collect()
}

/// A node's `requested` entries (request id -> how many) and the transactions it signed (a
/// `signed` entry names its session; the session's approval names the transaction).
fn requested_and_signed(trail: &[Value]) -> (BTreeMap<String, usize>, BTreeSet<String>) {
    let (mut requested, mut txids, mut sessions) = (BTreeMap::new(), BTreeMap::new(), BTreeSet::new());
    for e in trail {
        let session = e["session"].as_str().unwrap_or("").to_string();
        match e["decision"].as_str().unwrap_or("") {
            "requested" => {
                assert_eq!(e["client"], "0".repeat(64), "the development client: {e}");
                *requested.entry(e["request_id"].as_str().expect("id").to_string()).or_default() += 1;
            }
            "approved" => {
                if let Some(txid) = e["txid"].as_str() {
                    txids.insert(session, txid.to_string());
                }
            }
            "signed" => drop(sessions.insert(session)),
            _ => {}
        }
    }
    let signed = sessions.iter().filter_map(|s| txids.get(s).cloned()).collect();
    (requested, signed)
}

/// What each node's window has charged, from a request over every window (its refusal names,
/// for each node, what is left of that node's allowance): node -> sats charged.
async fn charged(
    url: &str,
    key: &str,
    internal: &[u8; 32],
    output_key: &[u8; 32],
    to: &bitcoin::Address,
) -> BTreeMap<u64, u64> {
    let probe = spend(internal, output_key, &[5_000_000], &[(to.script_pubkey(), 4_000_000)]);
    let body = json!({ "request_id": "probe", "key": key, "psbt": probe.to_string() });
    submit(url.to_string(), body).await;
    let v = final_state(url, "probe").await;
    assert_eq!(v["state"], "refused", "{v}");
    let mut out = BTreeMap::new();
    for r in v["refusals"].as_array().expect("refusals") {
        // "max_sats_per_window: 4000000 requested, LEFT left of this enclave's ALLOWANCE (...)"
        let reason = r["reason"].as_str().expect("reason");
        let words: Vec<&str> = reason.split_whitespace().collect();
        let at = words.iter().position(|w| *w == "left").expect("left");
        let left: u64 = words[at - 1].parse().expect("left");
        let allowance: u64 = words[at + 4].parse().expect("allowance");
        out.insert(r["node"].as_u64().expect("node"), allowance - left);
    }
    out
}

#[test]
fn two_instances_on_postgres_sign_every_request_once_through_kill_9_and_a_database_restart() {
    let work = tempfile::tempdir().expect("dir");
    let allowed = random_address();
    let cluster = cluster_with_window(work.path(), &allowed);
    let made = cluster.keygen();
    let key = made["key"].as_str().expect("key").to_string();
    let internal: [u8; 32] = hex::decode(&key).expect("hex").try_into().expect("32");
    let output_key: [u8; 32] =
        hex::decode(made["output_key"].as_str().expect("output key")).expect("hex").try_into().expect("32");
    let pg = Postgres::start();
    let (store, config) = (pg.url(), config(work.path()));
    let b = instance(work.path(), "b", &cluster.file(), &store, &config, 0);
    // Instance A keeps its port across restarts (its clients retry the same address).
    let port_a = frostgate_tests::free_port();
    let mut a = instance(work.path(), "a", &cluster.file(), &store, &config, port_a);
    let (url_b, url_a) = (url(&b), url(&a));

    let psbts: Vec<bitcoin::Psbt> = (0..PSBTS)
        .map(|_| spend(&internal, &output_key, &[SPEND + 1_000], &[(allowed.script_pubkey(), SPEND)]))
        .collect();
    let bodies: Vec<(String, Value)> = (0..DIGESTS + PSBTS)
        .map(|n| {
            let id = format!("req-{n:03}");
            let body = match n.checked_sub(DIGESTS) {
                None => json!({ "request_id": id, "key": key, "digest": hex::encode(digest(n)) }),
                Some(p) => json!({ "request_id": id, "key": key, "psbt": psbts[p].to_string() }),
            };
            (id, body)
        })
        .collect();

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    let submitted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let submissions = {
        let mut tasks = Vec::new();
        for (n, (_, body)) in bodies.iter().enumerate() {
            let (body, b_url, a_url) = (body.clone(), url_b.clone(), url_a.clone());
            // Every 40 ms a request (8 s in all), the first TWICE to both instances at once; the
            // rest alternate.
            let submitted = submitted.clone();
            tasks.push(rt.spawn(async move {
                tokio::time::sleep(Duration::from_millis(40 * n as u64)).await;
                if n < TWICE {
                    let (x, y) = tokio::join!(submit(a_url, body.clone()), submit(b_url, body));
                    assert_eq!(x["request_id"], y["request_id"]);
                } else if n % 2 == 0 {
                    submit(a_url, body).await;
                } else {
                    submit(b_url, body).await;
                }
                submitted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }));
        }
        tasks
    };
    // Instance A killed -9 at random points five times, restarted each time; after the second,
    // PostgreSQL is stopped while submissions go on (clients get store_unavailable and retry)
    // and started again.
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos() as u64;
    report!("kill points seed: {seed:#x}");
    let mut rng = frostgate_tests::rng::SplitMix(seed);
    for round in 0..5 {
        std::thread::sleep(Duration::from_millis(rng.below(1500) + 200));
        a.kill();
        std::thread::sleep(Duration::from_millis(rng.below(800)));
        a = instance(work.path(), "a", &cluster.file(), &store, &config, port_a);
        report!("kill -9 of instance A, round {round}: restarted");
        if round == 1 {
            let before = submitted.load(std::sync::atomic::Ordering::SeqCst);
            pg.stop("fast");
            std::thread::sleep(Duration::from_secs(2));
            pg.restart();
            report!("PostgreSQL stopped and restarted with {before} of 200 requests submitted");
            assert!(before < 200, "the database stopped under load");
        }
    }
    rt.block_on(async {
        for t in submissions {
            t.await.expect("submitted");
        }
    });

    let answers: Vec<(Value, Value)> = rt.block_on(async {
        let mut out = Vec::new();
        for (id, _) in &bodies {
            out.push((final_state(&url_a, id).await, final_state(&url_b, id).await));
        }
        out
    });
    let mut takeovers = 0;
    for (n, ((id, _), (x, y))) in bodies.iter().zip(&answers).enumerate() {
        assert_eq!(x["state"], "signed", "{id}: {x}\nA:\n{}\nB:\n{}", a.logs(), b.logs());
        assert_eq!(x, y, "{id}: both instances give the same answer");
        takeovers += usize::from(x["attempts"].as_u64().unwrap_or(1) > 1);
        match n.checked_sub(DIGESTS) {
            None => assert!(verifies(x, &digest(n)), "{id}: {x}"),
            Some(p) => {
                let tx: Transaction = deserialize_hex(x["tx"].as_str().expect("tx")).expect("tx");
                assert_eq!(tx.compute_txid(), psbts[p].unsigned_tx.compute_txid());
                let spent: Vec<_> = psbts[p].inputs.iter().map(|i| i.witness_utxo.clone().expect("utxo")).collect();
                consensus_valid(&tx, &spent);
            }
        }
    }
    // The database holds each request once.
    let count = pg.query("SELECT COUNT(*), COUNT(DISTINCT request_id) FROM sign_requests WHERE request_id <> 'probe'");
    assert_eq!(count.trim(), "200|200");
    assert_eq!(pg.query("SELECT COUNT(*) FROM sign_requests WHERE state = 'signed'").trim(), "200");
    // Each enclave bound every request it signed for once, and charged its window once for each
    // transaction it signed (however many claims and attempts touched it); together they bound
    // every request.
    let windows = rt.block_on(charged(&url_b, &key, &internal, &output_key, &allowed));
    let mut all = BTreeSet::new();
    for node in 1..=3u16 {
        let (requested, signed) = requested_and_signed(&audit(&cluster, node));
        assert!(requested.values().all(|&n| n == 1), "node {node}: a request bound twice: {requested:?}");
        if let Some(charged) = windows.get(&u64::from(node)) {
            assert_eq!(*charged, SPEND * signed.len() as u64, "node {node}: charged once per transaction it signed");
        }
        all.extend(requested.into_keys());
    }
    assert!(windows.len() >= 2, "{windows:?}");
    assert!(all.is_superset(&bodies.iter().map(|(id, _)| id.clone()).collect()), "requests the enclaves bound");
    let logs = format!("{}{}", a.logs(), b.logs());
    report!(
        "fault run: 200 signed, {takeovers} with more than one attempt, {} lease takeovers logged",
        logs.matches("lease expired: taken over").count()
    );
}

#[test]
fn an_instance_on_sqlite_killed_mid_request_finishes_it_after_restart() {
    let work = tempfile::tempdir().expect("dir");
    let allowed = random_address();
    let cluster = cluster_with_window(work.path(), &allowed);
    let key = cluster.keygen()["key"].as_str().expect("key").to_string();
    let store = format!("sqlite:{}", work.path().join("requests.db").display());
    let config = config(work.path());
    let mut service = instance(work.path(), "sqlite", &cluster.file(), &store, &config, 0);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    let first = url(&service);
    let ids: Vec<String> = (0..30).map(|n| format!("mid-{n}")).collect();
    // Submitted together; the service is killed -9 as soon as one is running.
    let running = rt.block_on(async {
        let mut tasks = Vec::new();
        for (n, id) in ids.iter().enumerate() {
            let body = json!({ "request_id": id, "key": key, "digest": hex::encode(digest(1000 + n)) });
            tasks.push(tokio::spawn(submit(first.clone(), body)));
        }
        for t in tasks {
            t.await.expect("submitted");
        }
        let c = ServiceClient::new(&first, None).expect("client");
        for _ in 0..200 {
            let (_, page) = c.call("GET", "/v1/sign-requests?state=running", None).await.expect("list");
            let running: Vec<String> = page["requests"]
                .as_array()
                .expect("list")
                .iter()
                .filter_map(|r| r["request_id"].as_str().map(String::from))
                .collect();
            if !running.is_empty() {
                return running;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("no request seen running");
    });
    service.kill();
    let service = instance(work.path(), "sqlite", &cluster.file(), &store, &config, 0);
    let url = url(&service);
    rt.block_on(async {
        for (n, id) in ids.iter().enumerate() {
            let v = final_state(&url, id).await;
            assert_eq!(v["state"], "signed", "{id} ({}): {v}", if running.contains(id) { "was running" } else { "" });
            assert!(verifies(&v, &digest(1000 + n)), "{id}");
        }
    });
    // At least one was mid-request when the service died: its lease expired and it was taken
    // over by the restarted instance.
    let takeovers = service.logs().matches("lease expired: taken over").count();
    assert!(takeovers > 0, "no request was running at the kill");
    report!("killed with {} requests running; all 30 signed after the restart, {takeovers} taken over", running.len());
}

#[test]
fn the_enclaves_refuse_another_target_under_a_request_that_a_lost_request_log_forgot() {
    let work = tempfile::tempdir().expect("dir");
    let allowed = random_address();
    let cluster = cluster_with_window(work.path(), &allowed);
    let key = cluster.keygen()["key"].as_str().expect("key").to_string();
    let config = config(work.path());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    let body = |d: usize| json!({ "request_id": "dup-1", "key": key, "digest": hex::encode(digest(d)) });
    // A service on a fresh request log `name` takes `dup-1` for digest `d`: its final state.
    let on_fresh_log = |name: &str, d: usize| {
        let store = format!("sqlite:{}", work.path().join(format!("{name}.db")).display());
        let service = instance(work.path(), name, &cluster.file(), &store, &config, 0);
        rt.block_on(async {
            submit(url(&service), body(d)).await;
            final_state(&url(&service), "dup-1").await
        })
    };
    // Signed by a service on its request log.
    let signed = on_fresh_log("first", 1);
    assert_eq!(signed["state"], "signed", "{signed}");
    assert!(verifies(&signed, &digest(1)));
    // The log is lost: a service on a fresh one takes the same id with another digest. The
    // database cannot know; the enclaves refuse it, and nothing is signed.
    let refused = on_fresh_log("second", 2);
    assert_eq!(refused["state"], "failed", "{refused}");
    assert_eq!(refused["error"]["code"], "request_conflict", "{refused}");
    assert!(refused.get("signature").is_none_or(Value::is_null), "{refused}");
    // The same request resubmitted to a third fresh log is the same request: signed again.
    let again = on_fresh_log("third", 1);
    assert_eq!(again["state"], "signed", "{again}");
    assert!(verifies(&again, &digest(1)));
}

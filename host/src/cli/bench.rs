//! `frostgate bench`: throughput and latency of a local cluster (all nodes on this machine, each
//! with its own SoftHSM token, enclave, host and durable store), against the same signings done
//! in process with `frost-secp256k1-tr` alone (no HSM, no store, no channel, no network).

use super::dev;
use super::out;
use clap::Args;
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::protocol::{Health, HsmCalls, TaprootMode};
use frostgate_host::coordinator::dkg_relay;
use frostgate_host::coordinator::signer::SignerClient;
use frostgate_host::coordinator::{self, psbt, Settings, SignRequest};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Nodes in the cluster.
    #[arg(long, default_value_t = 3)]
    nodes: u16,
    /// Signing threshold.
    #[arg(long, default_value_t = 2)]
    threshold: u16,
    /// Concurrent signings.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Stop after this many signatures.
    #[arg(long, conflicts_with = "seconds")]
    count: Option<u64>,
    /// Stop after this many seconds (default 10 when no count is given).
    #[arg(long)]
    seconds: Option<u64>,
    /// Mutual TLS (pinned certificates) between the coordinator and every node's API.
    #[arg(long)]
    tls: bool,
    /// Sign PSBTs (one input each; every enclave parses it and computes the sighash) instead of
    /// 32-byte digests.
    #[arg(long)]
    psbt: bool,
    /// With `--psbt`: every enclave enforces a spending policy (one allowed destination, per-tx,
    /// fee and window limits far above the bench's spends), so charges and audit records are
    /// written too.
    #[arg(long, requires = "psbt")]
    policy: bool,
    /// Only the pure frost-secp256k1-tr signings (no cluster; with `--count`, for instruction
    /// counts: `scripts/instructions.sh`).
    #[arg(long, requires = "count", conflicts_with = "no_pure")]
    pure_only: bool,
    /// Skip the pure frost-secp256k1-tr comparison (for instruction counts of the cluster alone).
    #[arg(long)]
    no_pure: bool,
    /// Sign with the interactive rounds (session, attempt, round 1, round 2 per signer, then a
    /// closing call per node) instead of preprocessed commitments (one request per signer).
    #[arg(long)]
    interactive: bool,
    /// Send each one-request signing alone, never in a batch with the others in flight.
    #[arg(long, conflicts_with = "interactive")]
    no_batch: bool,
    /// Every node's token kind (softhsm, kryoptic, tpm2, opencryptoki), as `dev cluster init`.
    #[arg(long, value_enum, default_value = "softhsm")]
    token: super::dev_tokens::TokenKind,
    /// Then the same load through the signing service (`frostgate serve`, in this process, its
    /// request log on SQLite; JSON over HTTP), after one request that opens its signing (as the
    /// direct run opens its own before its clock): requests/s and latency beside the direct run's.
    #[arg(long, conflicts_with_all = ["psbt", "count"])]
    service: bool,
    /// With `--service`: the service's request log (`postgres://...`; default: SQLite in the
    /// run's directory).
    #[arg(long, requires = "service")]
    store: Option<String>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Counters summed over the nodes: (store commits, store records, HSM work units, HSM
/// microseconds, PKCS#11 operations by kind).
/// The nodes' counters, summed (Health).
#[derive(Default)]
struct Counters {
    commits: u64,
    records: u64,
    hsm_ops: u64,
    hsm_us: u64,
    hsm_calls: HsmCalls,
    open_sessions: u64,
}

async fn store_counters(nodes: &[Arc<SignerClient>]) -> Counters {
    let mut sum = Counters::default();
    for n in nodes {
        if let Ok(h) = n.call(Health, Duration::from_secs(5)).await {
            sum.commits += h.store_commits;
            sum.records += h.store_records;
            sum.hsm_ops += h.hsm_operations;
            sum.hsm_us += h.hsm_micros;
            sum.hsm_calls += h.hsm_calls;
            sum.open_sessions += h.open_sessions;
        }
    }
    sum
}

/// PKCS#11 operations per signature, by kind, between two readings.
fn calls_per_signature(before: HsmCalls, after: HsmCalls, signed: u64) -> serde_json::Value {
    let per = |a: u64, b: u64| if signed > 0 { b.saturating_sub(a) as f64 / signed as f64 } else { 0.0 };
    serde_json::json!({
        "decrypt": per(before.decrypt, after.decrypt),
        "encrypt": per(before.encrypt, after.encrypt),
        "sign": per(before.sign, after.sign),
        "random": per(before.random, after.random),
        "anchor_find": per(before.find, after.find),
        // Reads, and the store anchor rewritten in place (one per commit).
        "attributes": per(before.attributes, after.attributes),
        "anchor_create": per(before.create, after.create),
        "anchor_destroy": per(before.destroy, after.destroy),
        "other": per(before.derive + before.generate, after.derive + after.generate),
        "total": per(before.total(), after.total()),
    })
}

fn progress(done: u64, goal: &str) {
    let mut e = std::io::stderr();
    let _ = write!(e, "\rsigned {done}{goal}   ");
    let _ = e.flush();
}

pub async fn run(a: BenchArgs) -> Result<(), Error> {
    if a.concurrency == 0 {
        return Err(Error::new(ErrorCode::ConfigInvalid, "--concurrency must be at least 1"));
    }
    if a.pure_only {
        let count = a.count.unwrap_or(1);
        let rate = pure_frost(a.nodes, a.threshold, count, a.concurrency).await?;
        out(&format!("{}\n", serde_json::json!({ "pure_signatures": count, "pure_signatures_per_sec": rate })));
        return Ok(());
    }
    let tmp = tempfile::Builder::new()
        .prefix("frostgate-bench-")
        .tempdir()
        .map_err(|e| Error::new(ErrorCode::ConfigInvalid, e.to_string()))?;
    let dir = tmp.path().join("cluster");
    let policy = if a.policy {
        let file = tmp.path().join("policy.toml");
        let text = format!(
            "[policy]\nnetwork = \"regtest\"\ndestinations = [\"{}\"]\nmax_sats_per_tx = 100000000\n\
             window_secs = 86400\nmax_sats_per_window = 2100000000000000\nmax_signatures_per_window = 100000000\n\
             max_fee_sats = 100000\n",
            super::dev_psbt::seeded_address("bench")?
        );
        std::fs::write(&file, text).map_err(|e| Error::new(ErrorCode::ConfigInvalid, e.to_string()))?;
        Some(file)
    } else {
        None
    };
    let cluster_file = dev::create_cluster(&dir, a.nodes, a.threshold, a.tls, policy, a.token)?;
    let _stopped = StopOnDrop(&dir);
    dev::start_cluster(&dir)?;
    measure(&a, &cluster_file, tmp.path()).await
}

/// Stops the run's cluster however the run ends, a node that failed to start included: the
/// cluster's directory goes with the run, and nodes left behind could not be stopped by anyone.
struct StopOnDrop<'a>(&'a std::path::Path);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        let _ = dev::stop_cluster(self.0);
    }
}

async fn measure(a: &BenchArgs, cluster_file: &std::path::Path, work: &std::path::Path) -> Result<(), Error> {
    let cluster = frostgate_host::coordinator::cluster::Cluster::load(cluster_file)?;
    let nodes = dkg_relay::connect_all(&cluster).await;
    let key = dkg_relay::run(&nodes, a.threshold).await?.key;
    let settings = Settings { preprocessed: !a.interactive, batch: !a.no_batch, ..Settings::default() };
    let signing = coordinator::Signing::open(&nodes, &key, cluster.threshold, settings).await?;
    let material = signing.material().clone();
    // The PSBT path: the key's internal and BIP86 output keys, and the bench's recipient.
    let psbt = if a.psbt {
        let output = material.output_key(&TaprootMode::Bip86)?;
        let x = |b: &[u8; 32]| {
            bitcoin::secp256k1::XOnlyPublicKey::from_slice(b)
                .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))
        };
        Some((x(key.as_bytes())?, x(&output)?, super::dev_psbt::seeded_address("bench")?.script_pubkey()))
    } else {
        None
    };
    let group_key = material.group_key()?;
    let deadline = a.count.is_none().then(|| Instant::now() + Duration::from_secs(a.seconds.unwrap_or(10)));
    let goal = a.count.map(|c| format!("/{c}")).unwrap_or_default();
    let before = store_counters(&nodes).await;
    let calls0: u64 = nodes.iter().map(|n| n.calls()).sum();
    let started = Instant::now();
    let issued = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let failures = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..a.concurrency {
        let (signer, issued, done, latencies, failures) =
            (signing.signer(), issued.clone(), done.clone(), latencies.clone(), failures.clone());
        let psbt = psbt.clone();
        let group_key = group_key.clone();
        let count = a.count;
        tasks.push(tokio::spawn(async move {
            loop {
                let n = issued.fetch_add(1, Ordering::SeqCst);
                if count.is_some_and(|c| n >= c) || deadline.is_some_and(|d| Instant::now() >= d) {
                    return;
                }
                let request = match &psbt {
                    None => SignRequest {
                        key,
                        message: frostgate_host::random_bytes(),
                        mode: TaprootMode::Bip86,
                        psbt: None,
                        path: Vec::new(),
                        request: None,
                    },
                    Some((internal, output, to)) => {
                        let seed: [u8; 32] = frostgate_host::random_bytes();
                        let Ok(p) = super::dev_psbt::synthetic(*internal, *output, 100_000, to.clone(), 60_000, &seed)
                        else {
                            failures.fetch_add(1, Ordering::SeqCst);
                            continue;
                        };
                        match psbt::requests(&p, &key, &group_key, None) {
                            Ok(mut r) if !r.is_empty() => r.remove(0).1,
                            _ => {
                                failures.fetch_add(1, Ordering::SeqCst);
                                continue;
                            }
                        }
                    }
                };
                let t = Instant::now();
                match signer.sign(request).await {
                    Ok(_) => {
                        latencies.lock().unwrap_or_else(|p| p.into_inner()).push(t.elapsed().as_secs_f64() * 1000.0);
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(_) => {
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }));
    }
    let ticker = {
        let (done, goal) = (done.clone(), goal.clone());
        tokio::spawn(async move {
            loop {
                progress(done.load(Ordering::SeqCst), &goal);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    for t in tasks {
        let _ = t.await;
    }
    ticker.abort();
    let elapsed = started.elapsed().as_secs_f64();
    // Closings still queued go now, batched (counted as calls of this run).
    signing.finish().await;
    let calls = nodes.iter().map(|n| n.calls()).sum::<u64>() - calls0;
    progress(done.load(Ordering::SeqCst), &goal);
    let _ = writeln!(std::io::stderr());
    let after = store_counters(&nodes).await;
    let signed = done.load(Ordering::SeqCst);
    let mut lat = latencies.lock().unwrap_or_else(|p| p.into_inner()).clone();
    lat.sort_by(|x, y| x.total_cmp(y));
    let throughput = signed as f64 / elapsed;
    let commits = after.commits.saturating_sub(before.commits);
    let records = after.records.saturating_sub(before.records);
    let pure = match a.no_pure {
        true => f64::NAN,
        false => pure_frost(a.nodes, a.threshold, signed.max(1), a.concurrency).await?,
    };
    let service = match a.service {
        true => Some(through_service(a, cluster_file, work, &key, &nodes, throughput).await?),
        false => None,
    };
    let report = serde_json::json!({
        "service": service,
        "nodes": a.nodes,
        "threshold": a.threshold,
        "concurrency": a.concurrency,
        "signatures": signed,
        "failures": failures.load(Ordering::SeqCst),
        "seconds": elapsed,
        "signatures_per_sec": throughput,
        "latency_ms": {"p50": percentile(&lat, 0.50), "p95": percentile(&lat, 0.95), "p99": percentile(&lat, 0.99)},
        "commits_per_sec": commits as f64 / elapsed,
        "markers_per_sec": records as f64 / elapsed,
        "mean_batch": if commits > 0 { records as f64 / commits as f64 } else { 0.0 },
        "calls_per_signature": if signed > 0 { calls as f64 / signed as f64 } else { 0.0 },
        "commits_per_signature": if signed > 0 { commits as f64 / signed as f64 } else { 0.0 },
        "hsm_operations_per_signature": if signed > 0 { after.hsm_ops.saturating_sub(before.hsm_ops) as f64 / signed as f64 } else { 0.0 },
        "hsm_ms_per_signature": if signed > 0 { after.hsm_us.saturating_sub(before.hsm_us) as f64 / 1000.0 / signed as f64 } else { 0.0 },
        "pkcs11_calls_per_signature": calls_per_signature(before.hsm_calls, after.hsm_calls, signed),
        "token": a.token.name(),
        "signing": match (a.interactive, a.no_batch) {
            (true, _) => "interactive",
            (false, true) => "preprocessed",
            (false, false) => "preprocessed+batched",
        },
        "pure_signatures_per_sec": pure,
        "ratio": throughput / pure,
        "transport": if a.tls { "grpc+mtls" } else { "grpc" },
        // Sessions left open on the nodes once the run's `Signing` finished (0: all closed).
        "open_sessions_after": after.open_sessions,
    });
    if a.json {
        out(&format!("{report}\n"));
    } else {
        out(&format!(
            "frostgate {t}-of-{n}, concurrency {c}, {transport}, {signing}, {token} tokens: {signed} signatures in {elapsed:.1} s\n\
             | metric | value |\n|---|---|\n\
             | calls per signature (coordinator to nodes) | {cps_calls:.2} |\n\
             | durable commits per signature (all nodes) | {commits_per:.2} |\n\
             | HSM work units / HSM ms per signature (all nodes) | {hsm_ops:.1} / {hsm_ms:.2} |\n\
             | PKCS#11 operations per signature (all nodes) | {pkcs11:.2}: {pkcs11_kinds} |\n\
             | signatures/s | {throughput:.1} |\n| latency p50 / p95 / p99 (ms) | {p50:.1} / {p95:.1} / {p99:.1} |\n\
             | store commits/s | {cps:.1} |\n| durable records/s | {mps:.1} |\n| mean records per commit | {batch:.1} |\n\
             | pure frost-secp256k1-tr signatures/s | {pure:.1} |\n| ratio frostgate / pure | {ratio:.3} |\n{service}",
            service = match &report["service"] {
                serde_json::Value::Null => String::new(),
                v => format!(
                    "| through the service ({}): requests/s | {:.1} |\n| service latency p50 / p99 (ms) | {:.1} / {:.1} |\n| ratio service / direct | {:.3} |\n",
                    v["store"].as_str().unwrap_or("?"),
                    v["requests_per_sec"].as_f64().unwrap_or(0.0),
                    v["latency_ms"]["p50"].as_f64().unwrap_or(0.0),
                    v["latency_ms"]["p99"].as_f64().unwrap_or(0.0),
                    v["ratio_to_direct"].as_f64().unwrap_or(0.0),
                ),
            },
            t = a.threshold,
            token = a.token.name(),
            pkcs11 = report["pkcs11_calls_per_signature"]["total"].as_f64().unwrap_or(0.0),
            pkcs11_kinds = report["pkcs11_calls_per_signature"]
                .as_object()
                .map(|m| m
                    .iter()
                    .filter(|(k, v)| *k != "total" && v.as_f64().unwrap_or(0.0) > 0.0)
                    .map(|(k, v)| format!("{k} {:.2}", v.as_f64().unwrap_or(0.0)))
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default(),
            transport = report["transport"].as_str().unwrap_or(""),
            signing = report["signing"].as_str().unwrap_or(""),
            cps_calls = report["calls_per_signature"].as_f64().unwrap_or(0.0),
            commits_per = report["commits_per_signature"].as_f64().unwrap_or(0.0),
            hsm_ops = report["hsm_operations_per_signature"].as_f64().unwrap_or(0.0),
            hsm_ms = report["hsm_ms_per_signature"].as_f64().unwrap_or(0.0),
            n = a.nodes,
            c = a.concurrency,
            p50 = report["latency_ms"]["p50"].as_f64().unwrap_or(0.0),
            p95 = report["latency_ms"]["p95"].as_f64().unwrap_or(0.0),
            p99 = report["latency_ms"]["p99"].as_f64().unwrap_or(0.0),
            cps = report["commits_per_sec"].as_f64().unwrap_or(0.0),
            mps = report["markers_per_sec"].as_f64().unwrap_or(0.0),
            batch = report["mean_batch"].as_f64().unwrap_or(0.0),
            ratio = report["ratio"].as_f64().unwrap_or(0.0),
        ));
    }
    Ok(())
}

/// The same load through the signing service: `concurrency` clients, each submitting a digest
/// request and waiting for it in the same call (`?wait_seconds=60`), for the run's seconds. Against `direct` (the direct
/// coordinator's signatures/s in the same run).
async fn through_service(
    a: &BenchArgs,
    cluster_file: &std::path::Path,
    work: &std::path::Path,
    key: &frostgate_common::ids::KeyId,
    nodes: &[Arc<SignerClient>],
    direct: f64,
) -> Result<serde_json::Value, Error> {
    use frostgate_host::service;
    let options = service::ServeOptions {
        config: service::config::ServiceConfig::default(),
        cluster: cluster_file.to_path_buf(),
        store: a.store.clone().unwrap_or_else(|| format!("sqlite:{}", work.join("requests.db").display())),
        http_listen: "127.0.0.1:0".parse().map_err(|_| Error::new(ErrorCode::Internal, "address"))?,
        grpc_listen: None,
        metrics_listen: None,
        dev_plaintext: true,
    };
    let store = if options.store.starts_with("sqlite:") { "sqlite" } else { "postgres" };
    let running = service::start(options).await?;
    let client = service::client::ServiceClient::new(&format!("http://{}", running.http), None)?;
    // Request ids of this run only (a PostgreSQL log may hold earlier runs').
    let run = hex::encode(frostgate_host::random_bytes::<4>());
    // One request before the clock and the counters start, as the direct phase opens its signing
    // before its clock: the service opens its signing for the key (material fetched, nonces
    // preprocessed) on its first request, which is not the steady state measured.
    let warm_up = serde_json::json!({
        "request_id": format!("bench-{run}-warm-up"), "key": key.to_string(),
        "digest": hex::encode(frostgate_host::random_bytes::<32>()),
    });
    match client.json("POST", "/v1/sign-requests?wait_seconds=60", Some(&warm_up)).await {
        Ok(v) if v["state"] == "signed" => {}
        other => {
            running.stop().await;
            return Err(Error::new(ErrorCode::Internal, format!("the service's first request: {other:?}")));
        }
    }
    let writes_before = service::metrics::WRITES.map(|op| service::metrics::global().writes(op));
    let groups_before = service::metrics::global().groups();
    let stores_before = store_counters(nodes).await;
    let deadline = Instant::now() + Duration::from_secs(a.seconds.unwrap_or(10));
    let (done, failures) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let first_failure = Arc::new(Mutex::new(None::<String>));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..a.concurrency {
        // Each client on a connection of its own, kept open between its requests.
        let (client, done, failures, latencies) = (client.clone(), done.clone(), failures.clone(), latencies.clone());
        let first_failure = first_failure.clone();
        let (key, run) = (key.to_string(), run.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                let id = format!("bench-{run}-{worker}-{n}");
                let body = serde_json::json!({
                    "request_id": id, "key": key, "digest": hex::encode(frostgate_host::random_bytes::<32>()),
                });
                let t = Instant::now();
                // Submitted and waited for in one call.
                let signed = client.json("POST", "/v1/sign-requests?wait_seconds=60", Some(&body)).await;
                match signed {
                    Ok(v) if v["state"] == "signed" => {
                        latencies.lock().unwrap_or_else(|p| p.into_inner()).push(t.elapsed().as_secs_f64() * 1000.0);
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                    other => {
                        if failures.fetch_add(1, Ordering::SeqCst) == 0 {
                            let what = match other {
                                Ok(v) => v.to_string(),
                                Err(e) => e.to_string(),
                            };
                            *first_failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(what);
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    running.stop().await;
    let stores = store_counters(nodes).await;
    let signed = done.load(Ordering::SeqCst);
    let mut lat = latencies.lock().unwrap_or_else(|p| p.into_inner()).clone();
    lat.sort_by(|x, y| x.total_cmp(y));
    let rate = signed as f64 / elapsed;
    // Each kind of write to the request log: how many per request, and their mean duration.
    let mut writes = serde_json::Map::new();
    for (op, (count0, sum0)) in service::metrics::WRITES.into_iter().zip(writes_before) {
        let (count, sum) = service::metrics::global().writes(op);
        let n = count - count0;
        if n > 0 {
            let per_request = if signed > 0 { n as f64 / signed as f64 } else { 0.0 };
            writes.insert(
                op.into(),
                serde_json::json!({"per_request": per_request, "mean_ms": (sum - sum0) * 1000.0 / n as f64}),
            );
        }
    }
    let groups = service::metrics::global().groups();
    let (group_commits, grouped_writes) = (groups.0 - groups_before.0, groups.1 - groups_before.1);
    Ok(serde_json::json!({
        "store": store,
        "log_writes": writes,
        // The request log's group commits (paced: `service::pacing`; on PostgreSQL submits and
        // outcomes only) per request, and the writes each held.
        "log_group_commits_per_request": ratio(group_commits, signed),
        "log_writes_per_group_commit": ratio(grouped_writes as u64, group_commits),
        "transport": "http (plaintext, loopback)",
        "requests": signed,
        "failures": failures.load(Ordering::SeqCst),
        "first_failure": first_failure.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        "seconds": elapsed,
        "requests_per_sec": rate,
        "latency_ms": {"p50": percentile(&lat, 0.50), "p95": percentile(&lat, 0.95), "p99": percentile(&lat, 0.99)},
        "ratio_to_direct": rate / direct,
        // The nodes' marker commits per request, and markers per commit (smaller batches when
        // fewer signings are in flight at the nodes).
        "commits_per_request": ratio(stores.commits.saturating_sub(stores_before.commits), signed),
        "mean_batch": ratio(
            stores.records.saturating_sub(stores_before.records),
            stores.commits.saturating_sub(stores_before.commits)
        ),
    }))
}

/// `n / of`, 0 when `of` is 0.
fn ratio(n: u64, of: u64) -> f64 {
    if of > 0 {
        n as f64 / of as f64
    } else {
        0.0
    }
}

/// The same number of t-of-n signings with `frost-secp256k1-tr` alone, `concurrency` at a time:
/// round 1 for t signers, signing package, round 2, aggregate (all-cheater detection), verify.
/// Throwaway keys from a trusted dealer, in this process: a baseline, never a signer.
async fn pure_frost(n: u16, t: u16, count: u64, concurrency: usize) -> Result<f64, Error> {
    use frost_secp256k1_tr as frost;
    let (shares, public) =
        frost::keys::generate_with_dealer(n, t, frost::keys::IdentifierList::Default, rand_core_os())
            .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
    let packages: Vec<frost::keys::KeyPackage> = shares
        .into_values()
        .take(t as usize)
        .map(frost::keys::KeyPackage::try_from)
        .collect::<Result<_, _>>()
        .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
    let packages = Arc::new(packages);
    let public = Arc::new(public);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (packages, public, next) = (packages.clone(), public.clone(), next.clone());
        tasks.push(tokio::task::spawn_blocking(move || -> Result<(), String> {
            while next.fetch_add(1, Ordering::SeqCst) < count {
                let message: [u8; 32] = frostgate_host::random_bytes();
                let mut nonces = std::collections::BTreeMap::new();
                let mut commitments = std::collections::BTreeMap::new();
                for kp in packages.iter() {
                    let (n, c) = frost::round1::commit(kp.signing_share(), &mut rand_core_os());
                    nonces.insert(*kp.identifier(), n);
                    commitments.insert(*kp.identifier(), c);
                }
                let package = frost::SigningPackage::new(commitments, &message);
                let mut sig_shares = std::collections::BTreeMap::new();
                for kp in packages.iter() {
                    let share = frost::round2::sign_with_tweak(&package, &nonces[kp.identifier()], kp, None)
                        .map_err(|e| e.to_string())?;
                    sig_shares.insert(*kp.identifier(), share);
                }
                let sig =
                    frost::aggregate_with_tweak(&package, &sig_shares, &public, None).map_err(|e| e.to_string())?;
                use frost::keys::Tweak;
                public
                    .as_ref()
                    .clone()
                    .tweak::<&[u8]>(None)
                    .verifying_key()
                    .verify(&message, &sig)
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        }));
    }
    for t in tasks {
        t.await
            .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?
            .map_err(|e| Error::new(ErrorCode::Internal, e))?;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

fn rand_core_os() -> frost_secp256k1_tr::rand_core::OsRng {
    frost_secp256k1_tr::rand_core::OsRng
}

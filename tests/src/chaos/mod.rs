//! The chaos soak: a local cluster under continuous signing (digests and PSBTs) while a driver
//! SIGKILLs enclaves, hosts, whole nodes and coordinators at random moments, and crashes nodes at
//! the commit protocol's fault points; everything killed is restarted and must be ready again
//! within a bound. The [`Detector`] in front of every node reports double releases, nonce reuse
//! and invalid signatures; the driver reports nodes not ready in time (a store that does not
//! verify against its anchor keeps its node from being ready) and stores that keep growing.
//!
//! The seed fixes the sequence of actions and their delays; what the load is doing at each
//! moment is up to the machine, so two runs of one seed are alike, not identical.

pub mod detector;
mod load;

use crate::dev_cluster::{DevCluster, Process};
use crate::proxy::Proxy;
use crate::rng::SplitMix;
use detector::{Detector, Violation};
use frostgate_host::api::pb;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Chaos actions to take.
    pub cycles: u32,
    /// Nodes in the cluster.
    pub nodes: u16,
    /// Signing threshold.
    pub threshold: u16,
    /// Seed of the action sequence.
    pub seed: u64,
    /// Concurrent coordinators (each a `frostgate sign` / `sign-psbt` process at a time).
    pub coordinators: usize,
    /// How long a restarted node may take to be ready.
    pub ready_bound: Duration,
    /// `--compact-after-records` of the enclaves (small, so compaction runs under the chaos).
    pub compact_after_records: u64,
    /// Print each cycle's action and outcome on stderr.
    pub verbose: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cycles: 30,
            nodes: 3,
            threshold: 2,
            seed: 1,
            coordinators: 3,
            ready_bound: Duration::from_secs(60),
            compact_after_records: 400,
            verbose: false,
        }
    }
}

/// The commit protocol's development fault points (ARCHITECTURE.md, "Development fault
/// injection"): the first fails the host's transaction, the others abort their process.
const FAULT_POINTS: [&str; 4] =
    ["host_before_commit", "host_after_commit_before_ack", "after_ack_before_anchor", "after_anchor_before_release"];

/// Session TTL of the soak's enclaves: sessions left open by killed coordinators expire.
const SESSION_TTL_SECS: &str = "30";

/// A chaos action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    KillEnclave(u16),
    KillHost(u16),
    KillNode(u16),
    KillCoordinator,
    Fault(u16, &'static str),
}

fn action(rng: &mut SplitMix, nodes: u16) -> Action {
    let node = 1 + rng.below(nodes.into()) as u16;
    match rng.below(10) {
        0 | 1 => Action::KillEnclave(node),
        2 | 3 => Action::KillHost(node),
        4 | 5 => Action::KillNode(node),
        6 => Action::KillCoordinator,
        _ => Action::Fault(node, FAULT_POINTS[rng.below(FAULT_POINTS.len() as u64) as usize]),
    }
}

/// What the soak saw.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// Cycles run.
    pub cycles: u32,
    /// The seed.
    pub seed: u64,
    /// Distinct valid signatures seen (aggregates and coordinator outputs).
    pub signatures: u64,
    /// Shares released by the nodes.
    pub shares: u64,
    /// Signings that coordinators completed.
    pub signings_completed: u64,
    /// Signings that failed (expected while nodes are down).
    pub signings_failed: u64,
    /// Processes killed by the driver (coordinators included) or crashed at a fault point.
    pub kills: u64,
    /// Fault points that fired (process aborted or transaction failed).
    pub faults_fired: u64,
    /// Restart-to-ready times, milliseconds: p50, p99, max.
    pub ready_ms: [u64; 3],
    /// Most store rows any node held after a cycle, and the bound it must stay under.
    pub max_rows: u64,
    /// The row bound.
    pub rows_bound: u64,
    /// Every violation.
    pub violations: Vec<String>,
}

impl Report {
    /// One summary line.
    pub fn line(&self) -> String {
        format!(
            "chaos: cycles={} seed={} signatures={} shares={} signings={}/{} kills={} faults_fired={} ready_ms_p50={} ready_ms_p99={} ready_ms_max={} max_rows={}/{} violations={}",
            self.cycles,
            self.seed,
            self.signatures,
            self.shares,
            self.signings_completed,
            self.signings_completed + self.signings_failed,
            self.kills,
            self.faults_fired,
            self.ready_ms[0],
            self.ready_ms[1],
            self.ready_ms[2],
            self.max_rows,
            self.rows_bound,
            self.violations.len()
        )
    }
}

/// Node `api`'s `Health` (`None` when it does not answer).
async fn health(api: &str) -> Option<pb::HealthReply> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{api}")).ok()?;
    let channel = tokio::time::timeout(Duration::from_secs(2), endpoint.connect()).await.ok()?.ok()?;
    let mut client = pb::signer_client::SignerClient::new(channel);
    let reply = tokio::time::timeout(Duration::from_secs(2), client.health(pb::HealthRequest {})).await.ok()?.ok()?;
    Some(reply.into_inner())
}

/// Whether node `api` answers `Health` as ready.
async fn ready(api: &str) -> bool {
    health(api).await.is_some_and(|h| h.ready)
}

/// Store verdicts a node never leaves by itself: a live node refusing with one of these after
/// crashes alone is a violation (an unbootable or falsely condemned store).
const VERDICTS: [&str; 4] =
    ["store_rollback_detected", "store_tampered", "store_anchor_missing", "store_anchor_invalid"];

/// Rows in a node's store.
fn rows(db: &std::path::Path) -> u64 {
    rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|c| c.query_row("SELECT COUNT(*) FROM records", [], |r| r.get::<_, i64>(0)))
        .map(|n| n as u64)
        .unwrap_or(0)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Runs the soak with the binaries in `bin_dir()` (built with the development features).
pub fn run(o: &Options) -> Report {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let compact = o.compact_after_records.to_string();
    let env = [
        ("FROSTGATE_ENCLAVE_COMPACT_AFTER_RECORDS", compact.as_str()),
        ("FROSTGATE_ENCLAVE_SESSION_TTL_SECS", SESSION_TTL_SECS),
        ("FROSTGATE_ENCLAVE_SWEEP_INTERVAL_SECS", "2"),
    ];
    let cluster = DevCluster::start_with_env(&crate::host_bin(), o.nodes, o.threshold, &["--dev-plaintext"], &env);
    let key = cluster.keygen();
    let output_key: [u8; 32] = hex::decode(key["output_key"].as_str().expect("output key"))
        .ok()
        .and_then(|b| b.try_into().ok())
        .expect("32-byte output key");
    let real =
        frostgate_host::coordinator::cluster::Cluster::load(std::path::Path::new(&cluster.file())).expect("cluster");
    // The coordinators talk to the nodes through the detector's proxies.
    let detector = Arc::new(Detector::default());
    detector.expect_output_key(output_key);
    let mut tapped = real.clone();
    for n in tapped.nodes.iter_mut() {
        n.api = rt.block_on(Proxy::start(&n.api, detector.tap(n.id))).to_string();
    }
    let tapped_file = cluster.dir.join("chaos.toml");
    tapped.save(&tapped_file).expect("save");

    let load = load::Load::start(&tapped_file, &key, detector.clone(), o.coordinators);
    let mut rng = SplitMix(o.seed);
    let mut ready_ms = Vec::new();
    let (mut kills, mut faults_fired, mut max_rows) = (0u64, 0u64, 0u64);
    // Live state is bounded by the TTLs and the audit trail (4,096 records); the store holds at
    // most about twice the live state plus the compaction threshold (ARCHITECTURE.md).
    let rows_bound = 2 * (4_096 + 2_000) + o.compact_after_records;
    let api = |i: u16| real.nodes.iter().find(|n| n.id == i).expect("node").api.clone();

    for cycle in 0..o.cycles {
        std::thread::sleep(Duration::from_millis(50 + rng.below(450)));
        let act = action(&mut rng, o.nodes);
        let restart = match act {
            Action::KillEnclave(i) => {
                cluster.kill_process(i, Process::Enclave);
                kills += 1;
                Some(i)
            }
            Action::KillHost(i) => {
                cluster.kill_process(i, Process::Host);
                kills += 1;
                Some(i)
            }
            Action::KillNode(i) => {
                cluster.kill(i);
                kills += 2;
                Some(i)
            }
            Action::KillCoordinator => {
                kills += u64::from(load.kill_one());
                None
            }
            Action::Fault(i, point) => {
                let before = (cluster.pid(i, Process::Enclave), cluster.pid(i, Process::Host));
                let marks = fault_marks(&cluster, i);
                cluster.arm(i, point);
                let deadline = Instant::now() + Duration::from_secs(3);
                while Instant::now() < deadline && fault_marks(&cluster, i) == marks {
                    std::thread::sleep(Duration::from_millis(20));
                }
                cluster.disarm(i);
                let fired = fault_marks(&cluster, i) > marks;
                faults_fired += u64::from(fired);
                if fired && point != "host_before_commit" {
                    // The process logged, then aborts: let it be gone before `up` looks.
                    let deadline = Instant::now() + Duration::from_secs(2);
                    while Instant::now() < deadline
                        && (cluster.pid(i, Process::Enclave), cluster.pid(i, Process::Host)) == before
                    {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    kills += 1;
                }
                Some(i)
            }
        };
        if let Some(i) = restart {
            let t0 = Instant::now();
            if let Err(e) = cluster.up(&env) {
                detector.report(Violation::Unreadable { what: format!("cycle {cycle}: dev cluster up failed: {e}") });
            }
            let deadline = t0 + o.ready_bound;
            while !rt.block_on(ready(&api(i))) {
                if Instant::now() > deadline {
                    detector.report(Violation::NotReady {
                        node: i,
                        cycle,
                        action: format!("{act:?}"),
                        log_tail: tail(&cluster, i),
                    });
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            ready_ms.push(t0.elapsed().as_millis() as u64);
        }
        if o.verbose {
            #[allow(clippy::print_stderr)]
            {
                eprintln!(
                    "cycle {cycle}: {act:?} faults_fired={faults_fired} ready_ms={:?} signatures={}",
                    ready_ms.last().filter(|_| restart.is_some()),
                    detector.counts().signatures
                );
            }
        }
        for n in &real.nodes {
            if let Some(h) = rt.block_on(health(&n.api)) {
                if !h.ready && VERDICTS.contains(&h.refusing_code.as_str()) {
                    detector.report(Violation::Refusing { node: n.id, cycle, code: h.refusing_code });
                }
            }
            let r = rows(&n.db);
            max_rows = max_rows.max(r);
            if r > rows_bound {
                detector.report(Violation::StoreGrowth { node: n.id, rows: r, bound: rows_bound });
            }
        }
    }
    let (completed, failed) = load.stop();
    // Liveness after the soak: every node ready, one more signing completes, and a clean
    // restart of the whole cluster boots every store.
    cluster.run(&["dev", "cluster", "down", "--dir", &cluster.dir.display().to_string()]).expect("down");
    cluster.up(&env).expect("up after the soak");
    for n in &real.nodes {
        let deadline = Instant::now() + o.ready_bound;
        while !rt.block_on(ready(&n.api)) {
            if Instant::now() > deadline {
                detector.report(Violation::NotReady {
                    node: n.id,
                    cycle: o.cycles,
                    action: "restart after the soak".into(),
                    log_tail: tail(&cluster, n.id),
                });
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let last = load::sign_once(&tapped_file, &key, &detector);
    if let Err(e) = last {
        detector.report(Violation::NotReady { node: 0, cycle: o.cycles, action: "final signing".into(), log_tail: e });
    }
    ready_ms.sort_unstable();
    let counts = detector.counts();
    Report {
        cycles: o.cycles,
        seed: o.seed,
        signatures: counts.signatures,
        shares: counts.shares,
        signings_completed: completed,
        signings_failed: failed,
        kills,
        faults_fired,
        ready_ms: [percentile(&ready_ms, 0.5), percentile(&ready_ms, 0.99), ready_ms.last().copied().unwrap_or(0)],
        max_rows,
        rows_bound,
        violations: detector.violations().iter().map(ToString::to_string).collect(),
    }
}

/// How many times node `i`'s processes logged a fault injection.
fn fault_marks(cluster: &DevCluster, i: u16) -> usize {
    ["enclave.log", "host.log"]
        .iter()
        .map(|log| {
            std::fs::read_to_string(cluster.node(i).join(log)).unwrap_or_default().matches("fault injection").count()
        })
        .sum()
}

/// The last lines of node `i`'s logs.
fn tail(cluster: &DevCluster, i: u16) -> String {
    let mut s = String::new();
    for log in ["enclave.log", "host.log"] {
        let text = std::fs::read_to_string(cluster.node(i).join(log)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        s.push_str(&format!("--- {log}\n{}\n", lines[lines.len().saturating_sub(15)..].join("\n")));
    }
    s
}

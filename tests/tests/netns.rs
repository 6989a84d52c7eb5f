//! Nodes on separate network hosts: each node (enclave + host) in its own network namespace,
//! joined by veth pairs to a bridge, its API bound to its own address with mutual TLS. DKG and
//! signing cross real interfaces; then a 50 ms one-way delay (a userspace relay: this kernel has
//! no `sch_netem`), 5% packet loss on every node (iptables' statistic match inside each
//! namespace), and a partition of one node: ROAST signs with the rest, the isolated node rejoins,
//! and the outside detector sees no double release. Skips (with a message) where namespaces
//! cannot be created (not root, no `ip`).

use frostgate_host::coordinator::cluster::Cluster;
use frostgate_tests::chaos::detector::Detector;
use frostgate_tests::dev_cluster::{run_json, DevCluster};
use frostgate_tests::proxy::Proxy;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn sh(args: &[&str]) -> Result<(), String> {
    let o = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{args:?}: {e}"))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!("{args:?}: {}", String::from_utf8_lossy(&o.stderr)))
    }
}

fn must(args: &[&str]) {
    sh(args).unwrap_or_else(|e| panic!("{e}"));
}

/// The namespaces, veths and bridge of one test; removed on drop.
struct Topology {
    tag: String,
    nodes: u16,
    loss: bool,
}

impl Topology {
    fn bridge(&self) -> String {
        format!("fg{}br", self.tag)
    }
    fn ns(&self, i: u16) -> String {
        format!("fg{}n{i}", self.tag)
    }
    /// The bridge side of node `i`'s veth (what a partition takes down).
    fn link(&self, i: u16) -> String {
        format!("fg{}h{i}", self.tag)
    }
    fn ip(&self, i: u16) -> String {
        format!("10.231.{}.{}", self.tag, 10 + i)
    }

    /// Creates the topology, or says why it cannot be created here.
    fn create(nodes: u16) -> Result<Topology, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("not root".into());
        }
        let tag = (std::process::id() % 250).to_string();
        let t = Topology { tag, nodes: 0, loss: false };
        sh(&["ip", "netns", "add", &t.ns(0)]).map_err(|e| format!("ip netns unavailable: {e}"))?;
        sh(&["ip", "netns", "del", &t.ns(0)])?;
        let mut t = t;
        let br = t.bridge();
        sh(&["ip", "link", "add", &br, "type", "bridge"])?;
        sh(&["ip", "addr", "add", &format!("10.231.{}.1/24", t.tag), "dev", &br])?;
        sh(&["ip", "link", "set", &br, "up"])?;
        for i in 1..=nodes {
            let (ns, host_side, peer) = (t.ns(i), t.link(i), format!("fg{}p{i}", t.tag));
            sh(&["ip", "netns", "add", &ns])?;
            t.nodes = i;
            sh(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
            sh(&["ip", "link", "add", &host_side, "type", "veth", "peer", "name", &peer])?;
            sh(&["ip", "link", "set", &peer, "netns", &ns])?;
            sh(&["ip", "-n", &ns, "addr", "add", &format!("{}/24", t.ip(i)), "dev", &peer])?;
            sh(&["ip", "-n", &ns, "link", "set", &peer, "up"])?;
            sh(&["ip", "link", "set", &host_side, "master", &br])?;
            sh(&["ip", "link", "set", &host_side, "up"])?;
        }
        Ok(t)
    }

    fn partition(&self, i: u16, cut: bool) {
        must(&["ip", "link", "set", &self.link(i), if cut { "down" } else { "up" }]);
    }

    /// Drops `percent`% of the packets every node receives (0 removes the rule); `Err` where
    /// iptables or its statistic match is unavailable.
    fn loss(&mut self, percent: u32) -> Result<(), String> {
        for i in 1..=self.nodes {
            let ns = self.ns(i);
            if self.loss {
                sh(&["ip", "netns", "exec", &ns, "iptables", "-F", "INPUT"])?;
            }
            if percent > 0 {
                let p = format!("{:.2}", f64::from(percent) / 100.0);
                let rule = ["-A", "INPUT", "-m", "statistic", "--mode", "random", "--probability", &p, "-j", "DROP"];
                let mut args = vec!["ip", "netns", "exec", &ns, "iptables"];
                args.extend(rule);
                self.loss = true;
                sh(&args)?;
            }
        }
        self.loss = percent > 0;
        Ok(())
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for i in 1..=self.nodes {
            let _ = sh(&["ip", "link", "del", &self.link(i)]);
            let _ = sh(&["ip", "netns", "del", &self.ns(i)]);
        }
        let _ = sh(&["ip", "link", "del", &self.bridge()]);
    }
}

/// Signs `count` random messages with `file`'s cluster; each signature goes to the detector.
/// Returns the wall times (ms) of the `frostgate sign` runs that succeeded, and the failures.
fn sign_many(file: &str, key: &str, count: usize, detector: &Detector) -> (Vec<u64>, Vec<String>) {
    let (mut times, mut failures) = (Vec::new(), Vec::new());
    for _ in 0..count {
        let message: [u8; 32] = frostgate_tests::signing::random();
        let m = hex::encode(message);
        let t0 = Instant::now();
        let args = ["sign", "--cluster", file, "--key", key, "--message", &m, "--timeout-ms", "8000", "--json"];
        match run_json(&frostgate_tests::host_bin(), &args) {
            Ok(sig) => {
                times.push(t0.elapsed().as_millis() as u64);
                let field = |f: &str| hex::decode(sig[f].as_str().expect(f)).expect("hex");
                detector.signature(file, &message, &field("signature"), &field("output_key"));
            }
            Err(e) => failures.push(e),
        }
    }
    times.sort_unstable();
    (times, failures)
}

/// Signings per condition (the figures in RELIABILITY.md come from `FROSTGATE_NETNS_SIGNINGS=50`).
static SIGNINGS: std::sync::LazyLock<usize> = std::sync::LazyLock::new(|| {
    std::env::var("FROSTGATE_NETNS_SIGNINGS").ok().and_then(|v| v.parse().ok()).unwrap_or(6)
});

fn p50(times: &[u64]) -> u64 {
    times.get(times.len() / 2).copied().unwrap_or(0)
}

#[test]
fn nodes_in_separate_namespaces_sign_across_delay_loss_and_a_partition() {
    let mut topo = match Topology::create(3) {
        Ok(t) => t,
        Err(why) => {
            println!("SKIPPED: network namespaces unavailable here ({why})");
            return;
        }
    };
    let bin = frostgate_tests::host_bin();
    let cluster = DevCluster::init(&bin, 3, 2, &[]);
    // Each node's API on its own address (mutual TLS: the default of `dev cluster init`).
    let file = cluster.dir.join("cluster.toml");
    let mut c = Cluster::load(&file).expect("cluster");
    for n in c.nodes.iter_mut() {
        let port = n.api.rsplit_once(':').expect("port").1.to_string();
        n.api = format!("{}:{port}", topo.ip(n.id));
        n.api_listen = Some(n.api.clone());
        assert!(n.server_cert.is_some(), "mutual TLS");
    }
    c.save(&file).expect("save");
    let d = cluster.dir.display().to_string();
    for n in &c.nodes {
        let (ns, id) = (topo.ns(n.id), n.id.to_string());
        must(&[
            "ip",
            "netns",
            "exec",
            &ns,
            &bin.display().to_string(),
            "dev",
            "cluster",
            "up",
            "--dir",
            &d,
            "--node",
            &id,
        ]);
    }
    let f = file.display().to_string();
    // DKG across the bridge.
    let key = cluster.keygen();
    let k = key["key"].as_str().expect("key").to_string();
    let detector = Detector::default();

    let (direct, failed) = sign_many(&f, &k, *SIGNINGS, &detector);
    assert!(failed.is_empty(), "{failed:?}\n{}", cluster.logs());

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    // 50 ms one-way delay towards every node.
    let mut delayed = c.clone();
    for n in delayed.nodes.iter_mut() {
        let target = n.api.parse().expect("addr");
        n.api = rt.block_on(frostgate_tests::latency::relay(target, Duration::from_millis(50))).to_string();
    }
    let delayed_file = cluster.dir.join("delayed.toml");
    delayed.save(&delayed_file).expect("save");
    let (slow, failed) = sign_many(&delayed_file.display().to_string(), &k, *SIGNINGS, &detector);
    assert!(failed.is_empty(), "with 50 ms delay: {failed:?}");

    // 5% loss on every node's inbound packets (where iptables' statistic match exists).
    let lossy = match topo.loss(5) {
        Ok(()) => {
            let (lossy, failed) = sign_many(&f, &k, *SIGNINGS, &detector);
            topo.loss(0).expect("remove the loss rule");
            assert!(failed.is_empty(), "with 5% loss: {failed:?}");
            lossy
        }
        Err(why) => {
            println!("loss: skipped, iptables unavailable ({why})");
            let _ = topo.loss(0);
            Vec::new()
        }
    };

    // A partition, seen by the detector in front of every node (plaintext to the detector, mutual
    // TLS from it to the node, as the coordinator's identity).
    let detector = Arc::new(detector);
    let mut tapped = c.clone();
    for n in tapped.nodes.iter_mut() {
        let tls = c.tls_for(n);
        let channel = rt
            .block_on(frostgate_host::coordinator::signer::connect(&n.api, tls.as_ref()))
            .expect("TLS channel to the node");
        n.api = rt.block_on(Proxy::start_over(channel, detector.tap(n.id))).to_string();
        n.server_cert = None;
    }
    tapped.tls = None;
    let tapped_file = cluster.dir.join("tapped.toml");
    tapped.save(&tapped_file).expect("save");
    let tf = tapped_file.display().to_string();
    let signers = |sig: &serde_json::Value| -> Vec<u64> {
        sig["signers"].as_array().expect("signers").iter().map(|s| s.as_u64().expect("id")).collect()
    };
    let sign = |label: &str| -> serde_json::Value {
        let m = hex::encode(frostgate_tests::signing::random::<32>());
        let args = ["sign", "--cluster", &tf, "--key", &k, "--message", &m, "--timeout-ms", "5000", "--json"];
        let sig = run_json(&frostgate_tests::host_bin(), &args).unwrap_or_else(|e| panic!("{label}: {e}"));
        let field = |f: &str| hex::decode(sig[f].as_str().expect(f)).expect("hex");
        detector.signature(label, &hex::decode(&m).expect("hex"), &field("signature"), &field("output_key"));
        sig
    };
    topo.partition(3, true);
    let t0 = Instant::now();
    let without_3 = sign("node 3 partitioned");
    let partitioned_ms = t0.elapsed().as_millis();
    assert_eq!(signers(&without_3), vec![1, 2], "{without_3}");
    // Node 3 comes back and node 1 goes: signing needs node 3, so it has rejoined.
    topo.partition(3, false);
    // Rejoined: node 3 answers `Health` as ready through its (long-lived) proxy connection, which
    // waits out TCP's retransmission backoff from the partition.
    let t0 = Instant::now();
    let node3 = tapped.nodes[2].api.clone();
    rt.block_on(async {
        let mut client = frostgate_host::api::pb::signer_client::SignerClient::connect(format!("http://{node3}"))
            .await
            .expect("proxy");
        loop {
            let health =
                tokio::time::timeout(Duration::from_secs(2), client.health(frostgate_host::api::pb::HealthRequest {}));
            if matches!(health.await, Ok(Ok(r)) if r.get_ref().ready) {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(60), "node 3 did not rejoin within 60 s");
        }
    });
    let rejoin_ms = t0.elapsed().as_millis();
    topo.partition(1, true);
    let with_3 = sign("node 3 back, node 1 partitioned");
    assert_eq!(signers(&with_3), vec![2, 3], "{with_3}");
    topo.partition(1, false);
    let all = sign("healed");
    assert_eq!(signers(&all).len(), 2, "{all}");

    let v = detector.violations();
    assert!(v.is_empty(), "{v:?}");
    let counts = detector.counts();
    assert!(counts.shares >= 6, "the detector saw the partition phase's shares: {counts:?}");
    println!(
        "netns: direct p50 {} ms (max {}), 50 ms delay p50 {} ms (max {}), 5% loss p50 {} ms (max {}), \
         partitioned node: signed in {partitioned_ms} ms, rejoined in {rejoin_ms} ms; signatures {} shares {} violations 0",
        p50(&direct),
        direct.last().copied().unwrap_or(0),
        p50(&slow),
        slow.last().copied().unwrap_or(0),
        p50(&lossy),
        lossy.last().copied().unwrap_or(0),
        counts.signatures,
        counts.shares,
    );
}

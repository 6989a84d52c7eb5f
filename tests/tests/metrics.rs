//! The host's Prometheus endpoint: real scrapes after real signings, and its loopback-only rule.

use frostgate_common::protocol::TaprootMode;
use frostgate_tests::node::Node;
use frostgate_tests::signing::*;
use std::io::{Read, Write};

fn scrape(url: &str) -> String {
    let addr = url.trim_start_matches("http://").trim_end_matches("/metrics");
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    out
}

fn value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{series} missing:\n{metrics}"))
}

#[test]
fn metrics_count_signatures_failures_rounds_and_commits() {
    let mut node = Node::new();
    node.host_args = vec!["--metrics-listen".into(), "127.0.0.1:0".into()];
    node.start();
    let ready = node.host.as_ref().expect("host").ready.clone();
    let url =
        ready.split_whitespace().find_map(|w| w.strip_prefix("metrics=")).expect("metrics url in READY").to_string();
    let (key, p) = rt().block_on(async {
        let c = node.caller().await;
        let key = dealer(&c, 2, 3).await;
        let p = prepare(&c, key.key, &[pid(1), pid(2)], TaprootMode::Bip86).await;
        let shares = sign_all(&c, &p).await;
        aggregate(&c, p.attempt, p.mode, &p.package, &shares).await.expect("signed");
        // Health refreshes the enclave's HSM counters.
        c.request(frostgate_common::protocol::Health).await.expect("health");
        // A refused request is counted under its code.
        round2(&c, p.attempt, pid(1), p.mode, &p.package).await.expect_err("consumed");
        (key, p)
    });
    let m = scrape(&url);
    assert_eq!(value(&m, "frostgate_signatures_total"), 1.0);
    assert_eq!(value(&m, r#"frostgate_requests_total{kind="Round2",outcome="ok"}"#), 2.0);
    assert_eq!(value(&m, r#"frostgate_requests_total{kind="Round2",outcome="nonce_already_consumed"}"#), 1.0);
    assert_eq!(value(&m, r#"frostgate_failures_total{code="nonce_already_consumed"}"#), 1.0);
    assert_eq!(value(&m, r#"frostgate_request_seconds_count{kind="Round1"}"#), 2.0);
    assert!(value(&m, "frostgate_store_commit_seconds_count") >= 2.0, "{m}");
    assert!(value(&m, "frostgate_store_commit_records_sum") >= 3.0, "{m}");
    // Every signing step used the HSM (unseal per round, seal per key, anchor per commit).
    assert!(value(&m, "frostgate_enclave_hsm_operations_total") >= 10.0, "{m}");
    assert!(value(&m, "frostgate_enclave_hsm_seconds_total") > 0.0, "{m}");
    // Nothing but kinds, codes and numbers: no ids, keys or payloads.
    assert!(!m.contains(&key.key.to_string()) && !m.contains(&p.attempt.to_string()));
    // Every node metric the Grafana dashboard queries is one the host exposes.
    for name in frostgate_tests::dashboard_metrics("frostgate_").iter().filter(|n| !n.starts_with("frostgate_service_"))
    {
        assert!(m.contains(name.as_str()), "the dashboard queries {name}, which the host does not expose");
    }
}

#[test]
fn a_non_loopback_metrics_listener_refuses_to_start() {
    let mut node = Node::new();
    node.host_args = vec!["--metrics-listen".into(), "0.0.0.0:0".into()];
    node.start_enclave();
    let log = node.try_start_host().expect_err("must refuse");
    assert!(log.contains("error: config_invalid (recovery: operator)") && log.contains("not loopback"), "{log}");
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

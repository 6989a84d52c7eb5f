//! The signing service's Prometheus metrics (served on a loopback listener, as the nodes').
//!
//! Invariant: kinds, states, counts and durations only; never a client, request id, key or
//! payload.

use super::request::{Kind, State};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use std::sync::OnceLock;

/// The service's metrics.
#[derive(Debug)]
pub struct ServiceMetrics {
    registry: Registry,
    accepted: IntCounterVec,
    finished: IntCounterVec,
    latency: HistogramVec,
    takeovers: IntCounter,
    by_state: IntGaugeVec,
    waited: IntGauge,
    writes: HistogramVec,
    groups: Histogram,
}

fn build() -> Result<ServiceMetrics, prometheus::Error> {
    let registry = Registry::new_custom(Some("frostgate_service".into()), None)?;
    let accepted = IntCounterVec::new(Opts::new("requests_accepted_total", "New requests, by kind"), &["kind"])?;
    let finished = IntCounterVec::new(
        Opts::new("requests_finished_total", "Requests that reached a final state"),
        &["kind", "state"],
    )?;
    let latency = HistogramVec::new(
        HistogramOpts::new("request_seconds", "From acceptance to the final state, by kind")
            .buckets(prometheus::exponential_buckets(0.005, 2.0, 14)?),
        &["kind"],
    )?;
    let takeovers = IntCounter::new(
        "lease_takeovers_total",
        "Running requests claimed again after their lease expired (their worker died or stalled)",
    )?;
    let by_state =
        IntGaugeVec::new(Opts::new("requests", "Open requests in the log (pending, running), by state"), &["state"])?;
    let waited = IntGauge::new(
        "requests_waited_for",
        "Requests someone waits for on this instance (a long poll, a submit that waits, a watch)",
    )?;
    let writes = HistogramVec::new(
        HistogramOpts::new("log_write_seconds", "A write to the request log, from the call to its durable answer")
            .buckets(prometheus::exponential_buckets(0.000_25, 2.0, 14)?),
        &["op"],
    )?;
    let groups = Histogram::with_opts(
        HistogramOpts::new("log_group_writes", "Writes in one group commit of the request log (committed or failed together; on PostgreSQL submits and outcomes only)")
            .buckets(prometheus::exponential_buckets(1.0, 2.0, 9)?),
    )?;
    registry.register(Box::new(accepted.clone()))?;
    registry.register(Box::new(finished.clone()))?;
    registry.register(Box::new(latency.clone()))?;
    registry.register(Box::new(takeovers.clone()))?;
    registry.register(Box::new(by_state.clone()))?;
    registry.register(Box::new(waited.clone()))?;
    registry.register(Box::new(writes.clone()))?;
    registry.register(Box::new(groups.clone()))?;
    // Every series exists from the start (at zero), so dashboards and alerts see it.
    for kind in [Kind::Digest, Kind::Psbt] {
        accepted.with_label_values(&[kind.name()]);
        latency.with_label_values(&[kind.name()]);
        for state in State::ALL.into_iter().filter(|s| s.is_final()) {
            finished.with_label_values(&[kind.name(), state.name()]);
        }
    }
    for op in WRITES {
        writes.with_label_values(&[op]);
    }
    Ok(ServiceMetrics { registry, accepted, finished, latency, takeovers, by_state, waited, writes, groups })
}

/// The request log's write operations (the `op` label).
pub const WRITES: [&str; 6] = ["submit", "cancel", "claim", "mark_sent", "renew", "finish"];

/// The process's service metrics.
pub fn global() -> &'static ServiceMetrics {
    static M: OnceLock<ServiceMetrics> = OnceLock::new();
    // The metric definitions are constants; registering them cannot fail on a fresh registry.
    M.get_or_init(|| build().unwrap_or_else(|e| panic!("service metric definitions: {e}")))
}

impl ServiceMetrics {
    /// A new request.
    pub fn accepted(&self, kind: Kind) {
        self.accepted.with_label_values(&[kind.name()]).inc();
    }

    /// A request reached `state`, `seconds` after it was accepted.
    pub fn finished(&self, kind: Kind, state: State, seconds: f64) {
        self.finished.with_label_values(&[kind.name(), state.name()]).inc();
        self.latency.with_label_values(&[kind.name()]).observe(seconds.max(0.0));
    }

    /// A write `op` (one of [`WRITES`]) to the request log took `seconds`.
    pub fn wrote(&self, op: &'static str, seconds: f64) {
        self.writes.with_label_values(&[op]).observe(seconds);
    }

    /// The writes `op` so far: how many, and their total seconds.
    pub fn writes(&self, op: &'static str) -> (u64, f64) {
        let h = self.writes.with_label_values(&[op]);
        (h.get_sample_count(), h.get_sample_sum())
    }

    /// A group commit of `writes` writes to the request log.
    pub fn grouped(&self, writes: usize) {
        self.groups.observe(writes as f64);
    }

    /// The group commits so far: how many, and the writes they held.
    pub fn groups(&self) -> (u64, f64) {
        (self.groups.get_sample_count(), self.groups.get_sample_sum())
    }

    /// A lease taken over.
    pub fn takeover(&self) {
        self.takeovers.inc();
    }

    /// The text exposition, with the log's open requests by state (`open`) and the requests
    /// waited for here (`waited`: their change channels, [`super::changes::Changes`]).
    pub fn render(&self, open: &[(State, u64)], waited: usize) -> String {
        self.waited.set(waited as i64);
        for (s, n) in State::every_open(open) {
            self.by_state.with_label_values(&[s.name()]).set(n as i64);
        }
        let mut buf = Vec::new();
        let _ = prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

//! Prometheus metrics of the host process, served as text on a loopback-only HTTP endpoint.
//!
//! Invariant: metrics carry kinds, error codes, counts and durations only; never ids, keys,
//! messages or any payload.

use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::protocol::{AggregateOutcome, Message};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry, TextEncoder,
};
use std::sync::OnceLock;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The host's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_seconds: HistogramVec,
    signatures: IntCounter,
    failures: IntCounterVec,
    commit_seconds: Histogram,
    commit_records: Histogram,
    hsm_operations: prometheus::IntGauge,
    hsm_seconds: prometheus::Gauge,
    enclave_reconnects: IntCounter,
    enclave_restarts: IntCounter,
}

fn build() -> Result<Metrics, prometheus::Error> {
    let registry = Registry::new_custom(Some("frostgate".into()), None)?;
    let requests = IntCounterVec::new(
        Opts::new(
            "requests_total",
            "Requests forwarded to the enclave, by message kind and outcome (ok or error code)",
        ),
        &["kind", "outcome"],
    )?;
    let request_seconds = HistogramVec::new(
        HistogramOpts::new("request_seconds", "Enclave round trip per request kind (round 1, round 2, aggregate, ...)")
            .buckets(prometheus::exponential_buckets(0.0005, 2.0, 14)?),
        &["kind"],
    )?;
    let signatures = IntCounter::new("signatures_total", "BIP340 signatures released by this node's enclave")?;
    let failures = IntCounterVec::new(Opts::new("failures_total", "Failed requests by error code"), &["code"])?;
    let commit_seconds = Histogram::with_opts(
        HistogramOpts::new("store_commit_seconds", "Durable SQLite commit of one batch of store records")
            .buckets(prometheus::exponential_buckets(0.0001, 2.0, 14)?),
    )?;
    let commit_records = Histogram::with_opts(
        HistogramOpts::new("store_commit_records", "Records per commit (group commit batch size)")
            .buckets(prometheus::exponential_buckets(1.0, 2.0, 10)?),
    )?;
    registry.register(Box::new(requests.clone()))?;
    registry.register(Box::new(request_seconds.clone()))?;
    registry.register(Box::new(signatures.clone()))?;
    registry.register(Box::new(failures.clone()))?;
    registry.register(Box::new(commit_seconds.clone()))?;
    registry.register(Box::new(commit_records.clone()))?;
    let hsm_operations = prometheus::IntGauge::new(
        "enclave_hsm_operations_total",
        "HSM (PKCS#11) operations by the enclave since it started",
    )?;
    let hsm_seconds = prometheus::Gauge::new(
        "enclave_hsm_seconds_total",
        "Time spent in those HSM operations (divide by the count for the mean latency)",
    )?;
    registry.register(Box::new(hsm_operations.clone()))?;
    registry.register(Box::new(hsm_seconds.clone()))?;
    let enclave_reconnects = IntCounter::new(
        "enclave_reconnects_total",
        "Times the host reconnected to its enclave (and reloaded the store) after the connection ended",
    )?;
    let enclave_restarts =
        IntCounter::new("enclave_restarts_total", "Times `frostgate node` restarted its enclave child after it died")?;
    registry.register(Box::new(enclave_reconnects.clone()))?;
    registry.register(Box::new(enclave_restarts.clone()))?;
    Ok(Metrics {
        registry,
        requests,
        request_seconds,
        signatures,
        failures,
        commit_seconds,
        commit_records,
        hsm_operations,
        hsm_seconds,
        enclave_reconnects,
        enclave_restarts,
    })
}

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    // The metric definitions are constants; registering them cannot fail on a fresh registry.
    M.get_or_init(|| build().unwrap_or_else(|e| panic!("metric definitions: {e}")))
}

impl Metrics {
    /// Records one forwarded request.
    pub fn observe_request(&self, kind: &str, elapsed: Duration, result: &Result<Message, Error>) {
        self.request_seconds.with_label_values(&[kind]).observe(elapsed.as_secs_f64());
        match result {
            Ok(reply) => {
                self.requests.with_label_values(&[kind, "ok"]).inc();
                if matches!(reply, Message::AggregateReply(AggregateOutcome::Signed { .. })) {
                    self.signatures.inc();
                }
            }
            Err(e) => {
                self.requests.with_label_values(&[kind, e.code().code()]).inc();
                self.failures.with_label_values(&[e.code().code()]).inc();
            }
        }
    }

    /// Records one store commit.
    pub fn observe_commit(&self, elapsed: Duration, records: usize) {
        self.commit_seconds.observe(elapsed.as_secs_f64());
        self.commit_records.observe(records as f64);
    }

    /// Records the enclave's cumulative HSM counters (from its health report).
    pub fn observe_enclave(&self, health: &frostgate_common::protocol::HealthReply) {
        self.hsm_operations.set(i64::try_from(health.hsm_operations).unwrap_or(i64::MAX));
        self.hsm_seconds.set(health.hsm_micros as f64 / 1e6);
    }

    /// The host reconnected to its enclave.
    pub fn enclave_reconnected(&self) {
        self.enclave_reconnects.inc();
    }

    /// The node restarted its enclave child.
    pub fn enclave_restarted(&self) {
        self.enclave_restarts.inc();
    }

    /// Times the node restarted its enclave child.
    pub fn enclave_restarts(&self) -> u64 {
        self.enclave_restarts.get()
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Binds the metrics endpoint. Loopback only: the endpoint has no TLS and no authentication.
pub async fn bind(address: &str) -> Result<tokio::net::TcpListener, Error> {
    let addr: std::net::SocketAddr = address
        .parse()
        .map_err(|_| Error::new(ErrorCode::ConfigInvalid, format!("metrics address {address:?} is not IP:PORT")))?;
    if !addr.ip().is_loopback() {
        return Err(Error::new(
            ErrorCode::ConfigInvalid,
            format!("metrics address {addr} is not loopback; the metrics endpoint serves loopback only"),
        ));
    }
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::new(ErrorCode::ConfigInvalid, format!("binding metrics address {addr}: {e}")))
}

/// Serves `GET /metrics` (HTTP/1.1, one request per connection) until dropped: this process's
/// host metrics.
pub async fn serve(listener: tokio::net::TcpListener) {
    serve_with(listener, std::sync::Arc::new(|| Box::pin(async { global().render() }))).await
}

/// What renders a scrape (it may read a store first).
pub type Render =
    std::sync::Arc<dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send>> + Send + Sync>;

/// Serves `GET /metrics` with what `render` gives (the signing service's metrics too).
pub async fn serve_with(listener: tokio::net::TcpListener, render: Render) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else { continue };
        let render = render.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
                .await
                .ok()
                .and_then(|r| r.ok())
                .unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]);
            let (status, body) = if request.starts_with("GET /metrics ") {
                ("200 OK", render().await)
            } else {
                ("404 Not Found", "not found\n".to_string())
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

//! The signing service (`frostgate serve`) across real processes: a dev cluster of three nodes
//! (2-of-3, an enclave policy), the service on SQLite, and clients it did not write (Python's
//! standard library over HTTP and over HTTPS with a client certificate) beside its own CLI.
//! Signatures are checked with libsecp256k1 and transactions with Bitcoin Core's interpreter.

use bitcoin::consensus::encode::deserialize_hex;
use bitcoin::Transaction;
use frostgate_host::api::tls::TlsFiles;
use frostgate_host::service::client::ServiceClient;
use frostgate_tests::dev_cluster::DevCluster;
use frostgate_tests::psbt::{p2tr, random_address, spend};
use frostgate_tests::{host_bin, Daemon};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

mod common;
use common::consensus_valid;

/// A running service.
struct Service {
    daemon: Daemon,
    url: String,
    /// Its gRPC address, when asked for.
    grpc: Option<String>,
}

impl Service {
    fn start(dir: &Path, cluster: &str, store: &Path, extra: &[&str]) -> Service {
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--cluster".into(),
            cluster.into(),
            "--store".into(),
            format!("sqlite:{}", store.display()),
            "--http-listen".into(),
            "127.0.0.1:0".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let daemon = Daemon::start(&host_bin(), &args, &[], dir.join("service.log"));
        let field = |name: &str| daemon.ready.split_whitespace().find_map(|w| w.strip_prefix(name)).map(String::from);
        let addr = field("http=").expect("ready line names the HTTP address");
        let scheme = if extra.contains(&"--dev-plaintext") { "http" } else { "https" };
        Service { url: format!("{scheme}://{addr}"), grpc: field("grpc="), daemon }
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// The service's OpenAPI document.
fn openapi() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../host/openapi/service.json"));
    serde_json::from_str(&text.expect("openapi document")).expect("JSON")
}

/// Checks `body` against schema `pointer` of the OpenAPI document (its `$ref`s resolved in it).
fn conforms(doc: &Value, pointer: &str, body: &Value, what: &str) {
    // The schema at `pointer` is a `$ref` into the components (a path template's braces are
    // not valid in a URI fragment, so the operation is looked up here, the schema by reference).
    let target = match pointer.starts_with("/components/schemas/") {
        true => format!("#{pointer}"),
        false => doc.pointer(pointer).and_then(|n| n["$ref"].as_str()).expect("a $ref schema").to_string(),
    };
    let mut schema = doc.clone();
    schema["$ref"] = json!(target);
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let errors: Vec<String> = validator.iter_errors(body).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert!(errors.is_empty(), "{what}: {body} does not conform to the OpenAPI document: {errors:?}");
}

/// Checks one exchange against the OpenAPI document: the path, method and status are
/// described, the request body (when accepted) and the response body conform.
fn documented(method: &str, path: &str, request: Option<&Value>, status: u16, response: &Value) {
    let doc = openapi();
    let bare = path.split('?').next().unwrap_or(path);
    let template = match bare {
        "/v1/sign-requests" | "/healthz" => bare.to_string(),
        p if p.ends_with(":cancel") => "/v1/sign-requests/{request_id}:cancel".into(),
        _ => "/v1/sign-requests/{request_id}".into(),
    };
    let operation = format!("/paths/{}/{}", template.replace('/', "~1"), method.to_lowercase());
    let described = doc.pointer(&format!("{operation}/responses/{status}"));
    let described = described.unwrap_or_else(|| panic!("{method} {template} {status} is not in the OpenAPI document"));
    let schema = match described.get("$ref").and_then(Value::as_str) {
        Some(r) => format!("{}/content/application~1json/schema", r.trim_start_matches('#')),
        None => format!("{operation}/responses/{status}/content/application~1json/schema"),
    };
    conforms(&doc, &schema, response, &format!("{method} {path} -> {status}"));
    if let (Some(body), 200..=201) = (request, status) {
        conforms(&doc, "/components/schemas/Submission", body, &format!("{method} {path} request"));
    }
}

/// One call, checked against the OpenAPI document: (HTTP status, JSON body).
fn call(c: &ServiceClient, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let (status, response) = rt().block_on(c.call(method, path, body.as_ref())).expect("service reachable");
    documented(method, path, body.as_ref(), status, &response);
    (status, response)
}

fn digest_body(id: &str, key: &str, digest: u8) -> Value {
    json!({ "request_id": id, "key": key, "digest": hex::encode([digest; 32]) })
}

fn hex32(s: &str) -> [u8; 32] {
    hex::decode(s).expect("hex").try_into().expect("32 bytes")
}

fn verifies(v: &Value, digest: u8) -> bool {
    let sig = hex::decode(v["signature"].as_str().expect("signature")).expect("hex");
    let signature = frostgate_common::protocol::Bip340Signature {
        r: sig[..32].try_into().expect("r"),
        s: sig[32..].try_into().expect("s"),
    };
    frostgate_host::coordinator::libsecp_verifies(
        &signature,
        &[digest; 32],
        &hex32(v["output_key"].as_str().expect("key")),
    )
}

/// Python's standard library as a client: POSTs `body`, then GETs it waiting; prints
/// `[post status, post body, get body]` as JSON. With `tls`: (client cert, key, pinned service cert).
fn python(url: &str, body: &Value, tls: Option<(&Path, &Path, &Path)>) -> Value {
    let script = r#"
import json, sys, ssl, urllib.request, urllib.error
url, body = sys.argv[1], sys.argv[2]
ctx = None
if len(sys.argv) > 3:
    cert, key, pinned = sys.argv[3:6]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # pinned by hand below: the service's certificate, byte for byte
    ctx.load_cert_chain(cert, key)
def req(method, path, data=None):
    r = urllib.request.Request(url + path, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(r, context=ctx, timeout=70) as resp:
            if ctx is not None:
                der = resp.fp.raw._sock.getpeercert(binary_form=True)
                want = ssl.PEM_cert_to_DER_cert(open(pinned).read())
                assert der == want, "not the pinned service certificate"
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
s1, b1 = req("POST", "/v1/sign-requests", body.encode())
s2, b2 = req("GET", "/v1/sign-requests/" + json.loads(body)["request_id"] + "?wait_seconds=30")
print(json.dumps([s1, b1, b2]))
"#;
    let mut cmd = std::process::Command::new("python3");
    cmd.args(["-c", script, url, &body.to_string()]);
    if let Some((cert, key, pinned)) = tls {
        cmd.args([cert, key, pinned]);
    }
    let o = cmd.output().expect("python3");
    assert!(o.status.success(), "python: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("python's JSON")
}

#[test]
fn digests_and_psbts_are_signed_once_per_request_id_and_refusals_and_cancels_are_final() {
    let work = tempfile::tempdir().expect("dir");
    let allowed = random_address();
    let policy = work.path().join("policy.toml");
    let text = format!("[policy]\nnetwork = \"regtest\"\ndestinations = [\"{allowed}\"]\nmax_sats_per_tx = 200000\nallow_raw_digest = true\n");
    std::fs::write(&policy, text).expect("policy");
    let c = DevCluster::start(&host_bin(), 3, 2, &["--dev-plaintext", "--policy", &policy.display().to_string()]);
    let made = c.keygen();
    let key = made["key"].as_str().expect("key").to_string();
    let (internal, output_key) = (hex32(&key), hex32(made["output_key"].as_str().expect("output key")));
    let store = work.path().join("requests.db");
    let service = Service::start(work.path(), &c.file(), &store, &["--dev-plaintext"]);
    let client = ServiceClient::new(&service.url, None).expect("client");

    // A client we did not write (Python's standard library): accepted, then signed.
    let out = python(&service.url, &digest_body("py-1", &key, 1), None);
    assert_eq!(out[0], 201, "{out}");
    documented("POST", "/v1/sign-requests", Some(&digest_body("py-1", &key, 1)), 201, &out[1]);
    documented("GET", "/v1/sign-requests/py-1", None, 200, &out[2]);
    assert_eq!((out[2]["request_id"].as_str(), out[2]["state"].as_str()), (Some("py-1"), Some("signed")), "{out}");
    assert!(verifies(&out[2], 1), "{out}");
    // The same id and body: the same request (200, same signature); another body: a conflict,
    // and nothing else happens.
    let (status, again) = call(&client, "POST", "/v1/sign-requests", Some(digest_body("py-1", &key, 1)));
    assert_eq!((status, &again["signature"]), (200, &out[2]["signature"]));
    let (status, conflict) = call(&client, "POST", "/v1/sign-requests", Some(digest_body("py-1", &key, 2)));
    assert_eq!((status, conflict["error"]["code"].as_str()), (409, Some("request_conflict")), "{conflict}");
    let (_, still) = call(&client, "GET", "/v1/sign-requests/py-1", None);
    assert_eq!(still["signature"], out[2]["signature"]);
    // Submitted and waited for in one call: answered once signed (201: new). The same call again
    // answers the stored request (200); the wait is not part of the request.
    let waiting = "/v1/sign-requests?wait_seconds=30";
    let (status, waited) = call(&client, "POST", waiting, Some(digest_body("post-wait", &key, 6)));
    assert_eq!((status, waited["state"].as_str()), (201, Some("signed")), "{waited}");
    assert!(verifies(&waited, 6), "{waited}");
    let (status, again) =
        call(&client, "POST", "/v1/sign-requests?wait_seconds=2", Some(digest_body("post-wait", &key, 6)));
    assert_eq!((status, &again["signature"]), (200, &waited["signature"]));
    let (status, e) = call(&client, "POST", "/v1/sign-requests?wait_seconds=x", Some(digest_body("post-x", &key, 6)));
    assert_eq!((status, e["error"]["code"].as_str()), (400, Some("request_invalid")), "{e}");
    // The CLI, as a user runs it: submit and wait, get, list; cancel refused once signed.
    let cli = |args: &[&str]| {
        let with: Vec<&str> =
            ["request"].iter().chain(args).chain(&["--service", service.url.as_str(), "--json"]).copied().collect();
        frostgate_tests::dev_cluster::run_json(&frostgate_tests::host_bin(), &with)
    };
    let digest = hex::encode([7u8; 32]);
    let submitted = cli(&["submit", "--request-id", "cli-1", "--key", &key, "--digest", &digest, "--wait", "30"]);
    let submitted = submitted.expect("request submit");
    assert_eq!(submitted["state"], "signed", "{submitted}");
    assert!(verifies(&submitted, 7), "{submitted}");
    let got = cli(&["get", "--request-id", "cli-1"]).expect("request get");
    assert_eq!(got["signature"], submitted["signature"]);
    let listed = cli(&["list", "--state", "signed"]).expect("request list");
    assert!(listed["requests"].as_array().expect("requests").iter().any(|r| r["request_id"] == "cli-1"), "{listed}");
    let e = cli(&["cancel", "--request-id", "cli-1"]).expect_err("cancelled once signed");
    assert!(e.contains("request_not_cancellable"), "{e}");
    // Signed: no longer cancellable.
    let (status, e) = call(&client, "POST", "/v1/sign-requests/py-1:cancel", None);
    assert_eq!((status, e["error"]["code"].as_str()), (409, Some("request_not_cancellable")), "{e}");

    // A PSBT within the policy: signed, finalized, consensus-valid.
    let outputs = vec![(allowed.script_pubkey(), 150_000), (p2tr(&output_key), 48_000)];
    let unsigned = spend(&internal, &output_key, &[120_000, 80_000], &outputs);
    let body = json!({ "request_id": "psbt-1", "key": key, "psbt": unsigned.to_string() });
    let (status, _) = call(&client, "POST", "/v1/sign-requests", Some(body));
    assert_eq!(status, 201);
    let (_, done) = call(&client, "GET", "/v1/sign-requests/psbt-1?wait_seconds=30", None);
    assert_eq!(done["state"], "signed", "{done}\n{}", service.daemon.logs());
    let tx: Transaction = deserialize_hex(done["tx"].as_str().expect("tx")).expect("tx");
    assert_eq!(tx.compute_txid().to_string(), done["txid"].as_str().expect("txid"));
    assert_eq!(tx.compute_txid(), unsigned.unsigned_tx.compute_txid());
    let spent: Vec<_> = unsigned.inputs.iter().map(|i| i.witness_utxo.clone().expect("utxo")).collect();
    consensus_valid(&tx, &spent);
    assert_eq!(done["inputs"], json!([0, 1]));
    // Over the policy's limit: refused, with each node's reason.
    let over = spend(&internal, &output_key, &[300_000], &[(allowed.script_pubkey(), 290_000)]);
    let body = json!({ "request_id": "psbt-2", "key": key, "psbt": over.to_string() });
    call(&client, "POST", "/v1/sign-requests", Some(body));
    let (_, refused) = call(&client, "GET", "/v1/sign-requests/psbt-2?wait_seconds=30", None);
    assert_eq!(refused["state"], "refused", "{refused}");
    let reasons = refused["refusals"].as_array().expect("refusals");
    assert!(
        reasons.len() >= 2
            && reasons.iter().all(|r| r["reason"].as_str().is_some_and(|s| s.contains("max_sats_per_tx"))),
        "{refused}"
    );

    // Bad requests are refused before anything is stored.
    for (body, why) in [
        (json!({ "request_id": "bad id", "key": key, "digest": hex::encode([1u8; 32]) }), "id"),
        (json!({ "request_id": "x", "key": key, "digest": "00" }), "digest"),
        (json!({ "request_id": "x", "key": key }), "neither"),
        (json!({ "request_id": "x", "key": key, "digest": hex::encode([1u8; 32]), "extra": 1 }), "unknown field"),
    ] {
        let (status, e) = call(&client, "POST", "/v1/sign-requests", Some(body));
        assert_eq!((status, e["error"]["code"].as_str()), (400, Some("request_invalid")), "{why}: {e}");
    }
    for path in ["/v1/sign-requests/py-1?wait_seconds=x", "/v1/sign-requests?page_size=-1"] {
        let (status, e) = call(&client, "GET", path, None);
        assert_eq!((status, e["error"]["code"].as_str()), (400, Some("request_invalid")), "{path}: {e}");
    }
    let (status, e) = call(&client, "GET", "/v1/sign-requests/nope", None);
    assert_eq!((status, e["error"]["code"].as_str()), (404, Some("request_unknown")));
    // Health counts the open requests: none now that every request so far is final.
    let (status, health) = call(&client, "GET", "/healthz", None);
    assert_eq!((status, &health["requests"]), (200, &json!({ "pending": 0, "running": 0 })), "{health}");

    // Nodes down and a key the service has not used: the request waits, pending, and is
    // cancelled before any signing request; then nothing is signed for it.
    let second = c.keygen()["key"].as_str().expect("key").to_string();
    for i in 1..=3 {
        c.kill(i);
    }
    // Waited for a second: not final then, answered as it is.
    let t = std::time::Instant::now();
    let (status, pending) =
        call(&client, "POST", "/v1/sign-requests?wait_seconds=1", Some(digest_body("wait-1", &second, 3)));
    assert!(t.elapsed() >= std::time::Duration::from_secs(1), "answered before the wait ended: {pending}");
    // Accepted: pending, or running when a free worker took it at once (claimed in the accepting
    // commit; with its key's material not fetched yet, nothing was sent).
    assert_eq!(status, 201);
    assert!(pending["state"] == "pending" || pending["state"] == "running", "{pending}");
    let (_, health) = call(&client, "GET", "/healthz", None);
    let open = ["pending", "running"].map(|s| health["requests"][s].as_u64().expect("count"));
    assert_eq!(open.iter().sum::<u64>(), 1, "{health}");
    std::thread::sleep(std::time::Duration::from_secs(2));
    let (status, cancelled) = call(&client, "POST", "/v1/sign-requests/wait-1:cancel", None);
    assert_eq!((status, cancelled["state"].as_str()), (200, Some("cancelled")), "{cancelled}");
    // A key the service holds: its signing starts, finds every signer unreachable, and the
    // request is retried (not failed), no longer cancellable.
    call(&client, "POST", "/v1/sign-requests", Some(digest_body("retry-1", &key, 5)));
    std::thread::sleep(std::time::Duration::from_secs(2));
    let (_, retried) = call(&client, "GET", "/v1/sign-requests/retry-1", None);
    assert!(retried["state"] == "pending" || retried["state"] == "running", "{retried}");
    let (status, e) = call(&client, "POST", "/v1/sign-requests/retry-1:cancel", None);
    assert_eq!((status, e["error"]["code"].as_str()), (409, Some("request_not_cancellable")), "{e}");
    // Another waits while the service is killed; after its restart, with the nodes back, it is signed.
    call(&client, "POST", "/v1/sign-requests", Some(digest_body("wait-2", &second, 4)));
    drop(service);
    c.up(&[]).expect("nodes up");
    let service =
        Service::start(work.path(), &c.file(), &store, &["--dev-plaintext", "--metrics-listen", "127.0.0.1:0"]);
    let client = ServiceClient::new(&service.url, None).expect("client");
    let (_, resumed) = call(&client, "GET", "/v1/sign-requests/wait-2?wait_seconds=40", None);
    assert_eq!(resumed["state"], "signed", "{resumed}\n{}", service.daemon.logs());
    assert!(verifies(&resumed, 4));
    let (_, retried) = call(&client, "GET", "/v1/sign-requests/retry-1?wait_seconds=40", None);
    assert_eq!(retried["state"], "signed", "{retried}");
    assert!(verifies(&retried, 5));
    let (_, cancelled) = call(&client, "GET", "/v1/sign-requests/wait-1", None);
    assert_eq!((cancelled["state"].as_str(), cancelled.get("signature")), (Some("cancelled"), None));
    // The list pages through this client's requests.
    let (_, page) = call(&client, "GET", "/v1/sign-requests?page_size=2", None);
    assert_eq!(page["requests"].as_array().map(Vec::len), Some(2));
    let token = page["next_page_token"].as_str().expect("more").to_string();
    let (_, rest) = call(&client, "GET", &format!("/v1/sign-requests?page_size=10&page_token={token}"), None);
    assert_eq!(rest["requests"].as_array().map(Vec::len), Some(6), "{rest}");
    let (_, signed) = call(&client, "GET", "/v1/sign-requests?state=signed", None);
    let ids: Vec<&str> =
        signed["requests"].as_array().expect("list").iter().filter_map(|r| r["request_id"].as_str()).collect();
    assert_eq!(ids, ["py-1", "post-wait", "cli-1", "psbt-1", "retry-1", "wait-2"]);
    // Metrics: open requests by state, outcomes by kind and state, and nothing that names a
    // request or a key.
    let metrics_at = service.daemon.ready.split_whitespace().find_map(|w| w.strip_prefix("metrics=")).expect("metrics");
    let metrics = scrape(metrics_at);
    assert!(metrics.contains("frostgate_service_requests{state=\"pending\"} 0"), "{metrics}");
    assert!(metrics.contains("frostgate_service_requests{state=\"running\"} 0"), "{metrics}");
    assert!(!metrics.contains("frostgate_service_requests{state=\"signed\""), "final states are counters: {metrics}");
    // Every wait has been answered: none of their change channels is left behind.
    assert!(metrics.contains("frostgate_service_requests_waited_for 0"), "{metrics}");
    assert!(
        metrics.contains("frostgate_service_requests_finished_total{kind=\"digest\",state=\"signed\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("frostgate_service_request_seconds_count{kind=\"digest\"} 2"), "{metrics}");
    // Every write to the (SQLite) log was in one group commit: the groups hold them all. A
    // write is counted in its group before its commit and timed after its answer: an idle
    // worker's claim may be between the two, so the metrics are read again until it is not.
    let value = |line: &str| line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).expect("a value");
    let counted = |m: &str| {
        let writes: f64 =
            m.lines().filter(|l| l.starts_with("frostgate_service_log_write_seconds_count{")).map(value).sum();
        let grouped = m.lines().find(|l| l.starts_with("frostgate_service_log_group_writes_sum ")).map(value);
        (writes, grouped.expect("groups"))
    };
    let mut tries = 0;
    let (writes, grouped) = loop {
        let (writes, grouped) = counted(&scrape(metrics_at));
        tries += 1;
        if writes == grouped || tries == 50 {
            break (writes, grouped);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(writes >= 4.0 && grouped == writes, "{writes} writes, {grouped} in groups: {metrics}");
    for secret in ["wait-2", "py-1", key.as_str()] {
        assert!(!metrics.contains(secret), "metrics name {secret}");
    }
    // Every service metric the Grafana dashboard queries is one the service exposes.
    for name in frostgate_tests::dashboard_metrics("frostgate_service_") {
        assert!(metrics.contains(name.as_str()), "the dashboard queries {name}, which the service does not expose");
    }
}

/// `GET /metrics` at `addr`.
fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("metrics");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

fn pem(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = frostgate_host::api::tls::generate(name).expect("certificate");
    let (c, k) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    std::fs::write(&c, cert).expect("cert");
    std::fs::write(&k, key).expect("key");
    (c, k)
}

#[test]
fn clients_are_pinned_certificates_that_see_only_their_own_requests_and_keys() {
    let work = tempfile::tempdir().expect("dir");
    let c = DevCluster::start(&host_bin(), 3, 2, &["--dev-plaintext"]);
    let key = c.keygen()["key"].as_str().expect("key").to_string();
    let other = c.keygen()["key"].as_str().expect("key").to_string();
    // A key the service has not signed with yet: with the nodes down its requests wait, pending
    // (one it already holds the material of would start signing, and fail).
    let third = c.keygen()["key"].as_str().expect("key").to_string();
    let dir = work.path();
    let (service_cert, service_key) = pem(dir, "service");
    let (alice_cert, alice_key) = pem(dir, "alice");
    let (bob_cert, bob_key) = pem(dir, "bob");
    let (eve_cert, eve_key) = pem(dir, "eve");
    let config = dir.join("service.toml");
    std::fs::write(
        &config,
        format!(
            "[limits]\nmax_open_per_client = 2\nmax_calls_per_client = 2\nmax_body_bytes = 4096\n\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n\n[[clients]]\nname = \"alice\"\ncertificate = \"{}\"\nkeys = [\"{key}\", \"{third}\"]\nkinds = [\"digest\"]\n\n[[clients]]\nname = \"bob\"\ncertificate = \"{}\"\nkeys = [\"*\"]\n",
            service_cert.display(),
            service_key.display(),
            alice_cert.display(),
            bob_cert.display()
        ),
    )
    .expect("config");
    let service = Service::start(
        dir,
        &c.file(),
        &dir.join("requests.db"),
        &["--config", &config.display().to_string(), "--grpc-listen", "127.0.0.1:0"],
    );
    let as_client = |cert: &Path, key: &Path| {
        let files = TlsFiles { cert: cert.into(), key: key.into(), peers: vec![service_cert.clone()] };
        ServiceClient::new(&service.url, Some(&files)).expect("client")
    };
    let (alice, bob) = (as_client(&alice_cert, &alice_key), as_client(&bob_cert, &bob_key));
    // Python over HTTPS with alice's certificate.
    let out = python(&service.url, &digest_body("r1", &key, 1), Some((&alice_cert, &alice_key, &service_cert)));
    assert_eq!((out[0].as_u64(), out[2]["state"].as_str()), (Some(201), Some("signed")), "{out}");
    assert!(verifies(&out[2], 1));
    // Alice may not use another key, nor submit PSBTs.
    let (status, e) = call(&alice, "POST", "/v1/sign-requests", Some(digest_body("r2", &other, 1)));
    assert_eq!((status, e["error"]["code"].as_str()), (403, Some("client_not_authorized")), "{e}");
    let psbt = json!({ "request_id": "r3", "key": key, "psbt": "cHNidP8BAAoCAAAAAAAAAAAAAAA=" });
    let (status, e) = call(&alice, "POST", "/v1/sign-requests", Some(psbt));
    assert!(status == 403 || status == 400, "{status} {e}");
    // Bob neither sees nor cancels alice's r1, and may use the same id for his own request.
    let (status, _) = call(&bob, "GET", "/v1/sign-requests/r1", None);
    assert_eq!(status, 404);
    let (status, _) = call(&bob, "POST", "/v1/sign-requests/r1:cancel", None);
    assert_eq!(status, 404);
    let (status, _) = call(&bob, "POST", "/v1/sign-requests", Some(digest_body("r1", &other, 7)));
    assert_eq!(status, 201);
    let (_, bobs) = call(&bob, "GET", "/v1/sign-requests/r1?wait_seconds=30", None);
    assert_eq!(bobs["key"], other.as_str());
    assert!(verifies(&bobs, 7));
    let (_, alices) = call(&alice, "GET", "/v1/sign-requests", None);
    assert_eq!(alices["requests"].as_array().map(Vec::len), Some(1), "{alices}");
    // A certificate the service does not pin gets no connection.
    let eve = as_client(&eve_cert, &eve_key);
    assert!(rt().block_on(eve.call("GET", "/healthz", None)).is_err(), "an unpinned client was served");
    // The gRPC API over mutual TLS, with the same pinned certificates.
    rt().block_on(async {
        use frostgate_host::api::pb;
        use pb::signing_service_client::SigningServiceClient;
        let grpc = service.grpc.clone().expect("gRPC address");
        let files = |cert: &Path, key: &Path| TlsFiles {
            cert: cert.into(),
            key: key.into(),
            peers: vec![service_cert.clone()],
        };
        let connect = frostgate_host::coordinator::signer::connect;
        let channel = connect(&grpc, Some(&files(&alice_cert, &alice_key))).await.expect("alice's channel");
        let mut alice_grpc = SigningServiceClient::new(channel);
        let submit = |id: &str, key: &str, wait_seconds: u32| pb::SubmitRequest {
            request_id: id.into(),
            key: key.into(),
            target: Some(pb::submit_request::Target::Digest(pb::DigestTarget {
                digest: hex::encode([3u8; 32]),
                ..Default::default()
            })),
            labels: Default::default(),
            wait_seconds,
        };
        assert_eq!(alice_grpc.submit(submit("g1", &key, 0)).await.expect("submit").into_inner().request_id, "g1");
        let done = alice_grpc.get(pb::GetSignRequest { request_id: "g1".into(), wait_seconds: 30 }).await;
        let done = done.expect("get").into_inner();
        assert_eq!(done.state, "signed", "{done:?}");
        assert!(verifies(&json!({"signature": done.signature, "output_key": done.output_key}), 3));
        // Submitted and waited for in one call.
        let waited = alice_grpc.submit(submit("g3", &key, 30)).await.expect("submit").into_inner();
        assert_eq!(waited.state, "signed", "{waited:?}");
        assert!(verifies(&json!({"signature": waited.signature, "output_key": waited.output_key}), 3));
        let e = alice_grpc.submit(submit("g2", &other, 0)).await.expect_err("another key");
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
        // Bob does not see alice's g1.
        let channel = connect(&grpc, Some(&files(&bob_cert, &bob_key))).await.expect("bob's channel");
        let mut bob_grpc = SigningServiceClient::new(channel);
        let e = bob_grpc.get(pb::GetSignRequest { request_id: "g1".into(), wait_seconds: 0 }).await;
        assert_eq!(e.expect_err("not his").code(), tonic::Code::NotFound);
        // Eve's certificate is not pinned: no call goes through.
        let refused = match connect(&grpc, Some(&files(&eve_cert, &eve_key))).await {
            Err(_) => true,
            Ok(ch) => SigningServiceClient::new(ch).get(pb::GetSignRequest::default()).await.is_err(),
        };
        assert!(refused, "an unpinned client was served over gRPC");
    });
    // A body over the bound is refused before it is read as JSON.
    let big = json!({ "request_id": "big", "key": key, "psbt": "A".repeat(5000) });
    let (status, e) = call(&bob, "POST", "/v1/sign-requests", Some(big));
    assert_eq!((status, e["error"]["code"].as_str()), (400, Some("request_invalid")), "{e}");
    // Nodes down: requests stay open. Alice's flood stops at her bound; Bob is still served,
    // and signed once the nodes are back.
    for i in 1..=3 {
        c.kill(i);
    }
    for id in ["a1", "a2"] {
        let (status, _) = call(&alice, "POST", "/v1/sign-requests", Some(digest_body(id, &third, 9)));
        assert_eq!(status, 201);
    }
    let (status, e) = call(&alice, "POST", "/v1/sign-requests", Some(digest_body("a3", &third, 9)));
    assert_eq!((status, e["error"]["code"].as_str()), (429, Some("too_many_in_flight")), "{e}");
    let (status, _) = call(&bob, "POST", "/v1/sign-requests", Some(digest_body("b1", &third, 8)));
    assert_eq!(status, 201, "another client's flood does not stop bob");
    // Alice's two long polls are all the calls she may have served at once: a third is refused
    // at once (429), bob is still served, and alice again once her polls are answered.
    let polls: Vec<_> = ["a1", "a2"]
        .into_iter()
        .map(|id| {
            let alice = alice.clone();
            let path = format!("/v1/sign-requests/{id}?wait_seconds=4");
            std::thread::spawn(move || rt().block_on(alice.call("GET", &path, None)).expect("served"))
        })
        .collect();
    let refused = (0..30).find_map(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let (status, e) = call(&alice, "GET", "/v1/sign-requests/a1", None);
        (status == 429).then_some(e)
    });
    let e = refused.expect("a third call of alice's was served while two waited");
    assert_eq!(e["error"]["code"], "too_many_in_flight", "{e}");
    let (status, b1) = call(&bob, "GET", "/v1/sign-requests/b1", None);
    assert_eq!(status, 200, "alice's calls do not stop bob's: {b1}");
    for poll in polls {
        let (status, a) = poll.join().expect("poll");
        assert_eq!((status, a["state"].as_str().map(|s| s == "pending" || s == "running")), (200, Some(true)), "{a}");
    }
    let (status, a1) = call(&alice, "GET", "/v1/sign-requests/a1", None);
    assert_eq!(status, 200, "alice served again: {a1}");
    c.up(&[]).expect("nodes up");
    // Retried until signed (each retry waits for its signers' deadline on a loaded machine).
    let mut b1 = Value::Null;
    for _ in 0..3 {
        b1 = call(&bob, "GET", "/v1/sign-requests/b1?wait_seconds=40", None).1;
        if b1["state"] != "pending" && b1["state"] != "running" {
            break;
        }
    }
    assert_eq!(b1["state"], "signed", "{b1}\n{}", service.daemon.logs());
    assert!(verifies(&b1, 8));
}

#[test]
fn the_openapi_document_refuses_what_it_does_not_describe() {
    let view = json!({ "request_id": "a", "state": "signed", "key": "ab".repeat(32), "kind": "digest",
        "created_at_ms": 1, "updated_at_ms": 2, "signature": "cd".repeat(64), "output_key": "ef".repeat(32),
        "signers": [1, 2], "attempts": 1 });
    documented("GET", "/v1/sign-requests/a", None, 200, &view);
    let refused = |f: fn(&mut Value), status: u16| {
        let mut v = view.clone();
        f(&mut v);
        std::panic::catch_unwind(|| documented("GET", "/v1/sign-requests/a", None, status, &v)).is_err()
    };
    assert!(refused(|v| v["surprise"] = json!(1), 200), "an undocumented field");
    assert!(refused(|v| v["state"] = json!("done"), 200), "an undocumented state");
    assert!(refused(|v| drop(v.as_object_mut().map(|o| o.remove("key"))), 200), "a missing field");
    assert!(refused(|_| {}, 418), "an undocumented status");
    let error = json!({ "error": { "code": "request_conflict", "recovery": "fix_request", "message": "m" } });
    documented("POST", "/v1/sign-requests", None, 409, &error);
    assert!(std::panic::catch_unwind(|| documented("POST", "/v1/sign-requests", None, 409, &view)).is_err());
}

/// A gRPC client generated by Google's protoc (Python) against the service's `service.proto`.
#[test]
fn a_protoc_generated_python_client_uses_the_grpc_api() {
    let work = tempfile::tempdir().expect("dir");
    let c = DevCluster::start(&host_bin(), 3, 2, &["--dev-plaintext"]);
    let key = c.keygen()["key"].as_str().expect("key").to_string();
    let service = Service::start(
        work.path(),
        &c.file(),
        &work.path().join("requests.db"),
        &["--dev-plaintext", "--grpc-listen", "127.0.0.1:0"],
    );
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    let out = work.path().join("generated");
    std::fs::create_dir(&out).expect("out dir");
    let o = std::process::Command::new("python3")
        .arg(workspace.join("tests/python/service_client.py"))
        .arg(workspace.join("host/proto"))
        .arg(&out)
        .arg(service.grpc.as_deref().expect("grpc address"))
        .arg(&key)
        .output()
        .expect("python3");
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let seen: Value = serde_json::from_slice(&o.stdout).expect("json");
    assert!(seen["submitted_state"] == "pending" || seen["submitted_state"] == "running", "{seen}");
    let states = seen["watched_states"].as_array().expect("states");
    assert_eq!(states.last(), Some(&json!("signed")), "{seen}");
    assert!(verifies(&json!({"signature": seen["signature"], "output_key": seen["output_key"]}), 0xab), "{seen}");
    assert_eq!(
        seen["conflict"],
        json!({"grpc": "ALREADY_EXISTS", "code": "request_conflict", "recovery": "fix_request"})
    );
    assert_eq!(seen["unknown"]["grpc"], "NOT_FOUND", "{seen}");
    assert_eq!(seen["not_cancellable"]["grpc"], "FAILED_PRECONDITION", "{seen}");
    assert_eq!(seen["invalid"]["code"], "request_invalid", "{seen}");
    assert_eq!(seen["listed"], json!(["grpc-1"]));
    // The same request through the JSON API: one request, one signature.
    let client = ServiceClient::new(&service.url, None).expect("client");
    let (_, same) = call(&client, "GET", "/v1/sign-requests/grpc-1", None);
    assert_eq!(same["signature"], seen["signature"]);
}

/// `frostgate bench --service`: the same load through the service in the same run; every
/// request signed, none failed.
#[test]
fn the_bench_drives_the_same_load_through_the_service() {
    let o = std::process::Command::new(host_bin())
        .args(["bench", "--nodes", "3", "--threshold", "2", "--concurrency", "4", "--seconds", "2"])
        .args(["--service", "--no-pure", "--json"])
        .output()
        .expect("bench");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: Value = serde_json::from_slice(&o.stdout).expect("json");
    let service = &report["service"];
    assert!(service["requests"].as_u64().is_some_and(|n| n > 0), "{report}");
    assert_eq!(service["failures"], 0, "{report}");
    assert!(service["ratio_to_direct"].as_f64().is_some_and(|r| r > 0.0), "{report}");
    assert!(service["latency_ms"]["p50"].as_f64().is_some_and(|ms| ms > 0.0), "{report}");
}

/// `frostgate bench` that fails (here: its service's store unreachable) stops the nodes it
/// started: its cluster's directory goes with the run, and nodes left behind could not be
/// stopped by anyone.
#[test]
fn a_bench_that_fails_leaves_no_node_running() {
    let tmp = tempfile::tempdir().expect("tmp");
    let o = std::process::Command::new(host_bin())
        .env("TMPDIR", tmp.path())
        .args(["bench", "--nodes", "3", "--threshold", "2", "--concurrency", "2", "--seconds", "1"])
        .args(["--service", "--store", "postgres://frostgate@127.0.0.1:1/none", "--no-pure", "--json"])
        .output()
        .expect("bench");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && stderr.contains("store_unavailable"), "{stderr}");
    let ours = tmp.path().to_string_lossy().into_owned();
    let left: Vec<String> = std::fs::read_dir("/proc")
        .expect("proc")
        .flatten()
        .filter_map(|p| std::fs::read(p.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&ours))
        .collect();
    assert!(left.is_empty(), "left running: {left:?}");
}

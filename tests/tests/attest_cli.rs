//! `frostgate attest verify` as an operator runs it, on the real Nitro documents kept with the
//! attestation crate: exit 0 only when every given expectation holds, the failed check named.

use frostgate_tests::host_bin;
use std::process::Command;

const DOCS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../attest/tests/nitro");
const PCR0: &str = "d265a83faa7b4fa0d73b82b6d06253e894445922937d0ee5a74fe4891da9817611a71e71b98e5329232902de3cf419af";

fn attest(args: &[&str]) -> (i32, serde_json::Value) {
    let out = Command::new(host_bin()).args(["attest", "verify", "--json"]).args(args).output().expect("run");
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    });
    (out.status.code().expect("exit code"), json)
}

#[test]
fn a_production_document_verifies_at_its_time_and_not_today() {
    let doc = format!("{DOCS}/production-2023-01-18.cose");
    let pcr = format!("0={PCR0}");
    let (code, json) = attest(&["--doc", &doc, "--at", "1674047239", "--pcr", &pcr]);
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["verified"], true);
    assert_eq!(json["document"]["pcrs"]["0"], PCR0);
    assert_eq!(json["document"]["module_id"], "i-0ec0e572c8263d8ff-enc0185c4fd382eeb25");
    assert!(json["chain"][4].as_str().expect("root").contains("CN=aws.nitro-enclaves"), "{json}");
    // Today's clock: the leaf certificate expired in January 2023.
    let (code, json) = attest(&["--doc", &doc, "--pcr", &pcr]);
    assert_eq!((code, json["failed_check"].as_str()), (3, Some("chain")), "{json}");
    // A wrong PCR pin, a wrong nonce, another root.
    let wrong = format!("2={}", "11".repeat(48));
    let (code, json) = attest(&["--doc", &doc, "--at", "1674047239", "--pcr", &wrong]);
    assert_eq!((code, json["failed_check"].as_str()), (3, Some("pcr")), "{json}");
    let (code, json) = attest(&["--doc", &doc, "--at", "1674047239", "--nonce", "00"]);
    assert_eq!((code, json["failed_check"].as_str()), (3, Some("nonce")), "{json}");
    let dir = tempfile::tempdir().expect("dir");
    let other = dir.path().join("other.pem");
    let cert = rcgen::generate_simple_self_signed(vec!["other-root".into()]).expect("cert");
    std::fs::write(&other, cert.cert.pem()).expect("pem");
    let (code, json) = attest(&["--doc", &doc, "--at", "1674047239", "--root", other.to_str().expect("path")]);
    assert_eq!((code, json["failed_check"].as_str()), (3, Some("root")), "{json}");
}

#[test]
fn a_debug_mode_document_in_base64_is_refused_unless_allowed() {
    let doc = format!("{DOCS}/debug-mode-2023-09.b64");
    let (_, json) = attest(&["--doc", &doc]);
    let at = (json["document"]["timestamp_ms"].as_u64().expect("timestamp") / 1000).to_string();
    let (code, json) = attest(&["--doc", &doc, "--at", &at]);
    assert_eq!((code, json["failed_check"].as_str()), (3, Some("debug_mode")), "{json}");
    assert_eq!(json["debug_mode"], true);
    let (code, json) = attest(&["--doc", &doc, "--at", &at, "--allow-debug"]);
    assert_eq!(code, 0, "{json}");
}

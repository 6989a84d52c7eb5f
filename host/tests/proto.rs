//! The network API's contract (`proto/frostgate/v1/signer.proto`) against the boundary: every RPC
//! is a boundary request the host may forward, the host-only requests (store, commits, channel
//! handshake) are not on the network, and no message, field or RPC names a secret.

use frostgate_common::manifest::names_secret;
use frostgate_common::protocol::{Direction, Role, KINDS};

const PROTO: &str = include_str!("../proto/frostgate/v1/signer.proto");

/// Non-comment lines of the contract.
fn lines() -> impl Iterator<Item = &'static str> {
    PROTO.lines().map(|l| l.split("//").next().unwrap_or("").trim()).filter(|l| !l.is_empty())
}

fn rpcs() -> Vec<&'static str> {
    lines().filter_map(|l| l.strip_prefix("rpc ")).map(|l| l.split('(').next().unwrap_or("").trim()).collect()
}

/// Every message, enum, field, oneof and RPC name.
fn names() -> Vec<&'static str> {
    let mut out = Vec::new();
    for l in lines() {
        let words: Vec<&str> = l.split_whitespace().collect();
        match words.as_slice() {
            ["message" | "enum" | "oneof" | "service", name, ..] => out.push(*name),
            ["rpc", ..] => {
                out.extend(l.split(['(', ')', ' ']).filter(|w| !w.is_empty() && *w != "rpc" && *w != "returns"))
            }
            // `type name = N;` and `repeated type name = N;`
            [.., name, "=", _] => out.push(name),
            _ => {}
        }
    }
    out
}

/// The checked-in list of the network API's RPCs, in `signer.proto`'s order, one per line with
/// its request and reply messages: generated (`FROSTGATE_BLESS=1 cargo test -p frostgate-host
/// --test proto`) and reviewed like `common/BOUNDARY.md`; a diff of it is a change of the
/// network contract.
const PINNED: &str = include_str!("../proto/RPCS.txt");

#[test]
fn every_rpc_is_a_boundary_request_from_the_host() {
    let rpcs = rpcs();
    let rendered: String = rpc_signatures().iter().map(|(rpc, req, rep)| format!("{rpc}({req}) -> {rep}\n")).collect();
    let header = "# The network API's RPCs, in signer.proto's order (generated: FROSTGATE_BLESS=1 cargo test -p frostgate-host --test proto)\n";
    let rendered = format!("{header}{rendered}");
    if std::env::var_os("FROSTGATE_BLESS").is_some() {
        std::fs::write(concat!(env!("CARGO_MANIFEST_DIR"), "/proto/RPCS.txt"), &rendered).expect("bless");
    } else {
        assert_eq!(PINNED, rendered, "signer.proto's RPCs changed: review, then re-bless host/proto/RPCS.txt");
    }
    for rpc in &rpcs {
        let kind = KINDS.iter().find(|k| k.name == *rpc).unwrap_or_else(|| panic!("{rpc} is not a boundary kind"));
        assert_eq!(kind.role, Role::Request, "{rpc}");
        assert_eq!(kind.direction, Direction::HostToEnclave, "{rpc}");
    }
}

/// `rpc Name(.frostgate.v1.Request) returns (.frostgate.v1.Reply);` as (name, request, reply).
fn rpc_signatures() -> Vec<(String, String, String)> {
    lines()
        .filter_map(|l| l.strip_prefix("rpc "))
        .map(|l| {
            let parts: Vec<&str> = l.split(['(', ')', ' ', ';']).filter(|w| !w.is_empty() && *w != "returns").collect();
            let short = |t: &str| t.rsplit('.').next().unwrap_or(t).to_string();
            (parts[0].to_string(), short(parts[1]), short(parts[2]))
        })
        .collect()
}

#[test]
fn the_boundary_table_and_the_proto_agree_rpc_by_rpc() {
    use frostgate_common::protocol::Exposure;
    // From the table: every `Network` row, with the generated types its conversions use.
    let table: Vec<(String, String, String)> = frostgate_host::api::rpc::rpcs()
        .into_iter()
        .map(|r| {
            let short = |t: &str| t.rsplit("::").next().unwrap_or(t).to_string();
            (r.rpc.to_string(), short(r.request_pb), short(r.reply_pb))
        })
        .collect();
    let mut proto = rpc_signatures();
    let mut sorted = table.clone();
    proto.sort();
    sorted.sort();
    assert_eq!(sorted, proto, "the table's Network rows and signer.proto's RPCs differ");
    // And the table's exposure column says the same.
    let network: Vec<&str> =
        KINDS.iter().filter(|k| k.request.is_some_and(|r| r.exposure == Exposure::Network)).map(|k| k.name).collect();
    let mut from_proto: Vec<&str> = proto.iter().map(|(n, _, _)| n.as_str()).collect();
    let mut network_sorted = network.clone();
    from_proto.sort();
    network_sorted.sort();
    assert_eq!(network_sorted, from_proto);
    // Requests and replies are distinct message types (protoc resolves a bare name to an RPC).
    for (rpc, request, reply) in &proto {
        assert!(PROTO.contains(&format!("rpc {rpc}(.frostgate.v1.{request}) returns (.frostgate.v1.{reply})")));
    }
}

#[test]
fn every_kind_is_a_request_exactly_when_its_row_says_so() {
    for k in KINDS {
        assert_eq!(k.role == Role::Request, k.request.is_some(), "{}", k.name);
        if k.role == Role::Request {
            assert!(!frostgate_common::protocol::Message::reply_names(KINDS.iter().position(|x| x == k).unwrap_or(0))
                .is_empty());
        }
    }
}

#[test]
fn host_only_requests_are_not_on_the_network() {
    let rpcs = rpcs();
    for private in ["Hello", "StoreLoad", "PersistRecords", "Ping"] {
        assert!(!rpcs.contains(&private), "{private} must not be reachable from the network");
    }
}

#[test]
fn no_name_in_the_contract_denotes_a_secret() {
    let names = names();
    for expected in ["Signer", "Round2", "signature_share", "public_key_package", "ciphertext", "DkgBlame"] {
        assert!(names.contains(&expected), "the parser missed {expected}: {names:?}");
    }
    let bad: Vec<_> = names.iter().filter(|n| names_secret(n)).collect();
    assert!(bad.is_empty(), "contract names that denote secrets: {bad:?}");
}

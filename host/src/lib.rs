//! The frostgate host: everything outside the enclave, in three parts and a CLI.
//!
//! - [`node`]: the node daemon next to one enclave (enclave client, host store, metrics);
//!   it reaches the enclave only through [`node::enclave::EnclaveClient`], which speaks the
//!   boundary protocol and nothing else.
//! - [`coordinator`]: ROAST signing and DKG relaying over many nodes (cluster file, clients).
//! - [`api`]: the gRPC contract shared by both (proto, conversions, TLS, server and client glue
//!   generated from the boundary table).
//! - [`service`]: `frostgate serve`, the signing service for applications (request log,
//!   workers, JSON API).
//! - [`supervisor`]: the one way to start a child process and wait for its `READY` line (node,
//!   dev cluster, tests).
//!
//! The binary's CLI (`src/cli/`) is a thin layer over these.
#![forbid(unsafe_code)]

pub mod api;
pub mod coordinator;
pub mod node;
pub mod service;
pub mod supervisor;

/// Random bytes from the OS (ids for sessions, attempts, DKGs).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    use std::io::Read;
    let mut out = [0u8; N];
    // Reading the OS CSPRNG cannot fail on Linux short of a broken system; fail loudly then.
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut out))
        .unwrap_or_else(|e| panic!("/dev/urandom: {e}"));
    out
}

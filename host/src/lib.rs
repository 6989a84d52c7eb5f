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

/// Random bytes from the OS CSPRNG (`getrandom(2)`: no file opened per call) for ids of
/// sessions, attempts and DKGs.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    use rand_core::RngCore;
    let mut out = [0u8; N];
    // The OS CSPRNG cannot fail on Linux short of a broken system; `try_fill_bytes` would only
    // move the panic here.
    rand_core::OsRng.fill_bytes(&mut out);
    out
}

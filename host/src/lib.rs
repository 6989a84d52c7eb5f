//! The frostgate host: everything outside the enclave. It reaches the enclave only through
//! [`enclave::EnclaveClient`], which speaks the boundary protocol and nothing else.
#![forbid(unsafe_code)]

pub mod api;
pub mod cluster;
pub mod coordinator;
pub mod dkg_relay;
pub mod enclave;
pub mod metrics;
pub mod proxy;
pub mod signer;
pub mod store;
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

//! The frostgate host: everything outside the enclave. It reaches the enclave only through
//! [`enclave::EnclaveClient`], which speaks the boundary protocol and nothing else.
#![forbid(unsafe_code)]

pub mod enclave;
pub mod proxy;
pub mod store;

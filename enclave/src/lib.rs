//! The frostgate enclave: the only process in which key shares and nonces exist in plaintext.
//!
//! It serves the host over one channel (see `frostgate_common::protocol`). Every request is
//! handled by [`service::Service`]; [`server`] owns connections and refuses unauthorized peers.
#![forbid(unsafe_code)]

pub mod custody;
pub mod dkg;
pub mod keys;
pub mod logging;
pub mod markers;
pub mod rounds;
pub mod sealing;
pub mod server;
pub mod service;
pub mod store;

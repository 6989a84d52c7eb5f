//! The frostgate enclave: the only process in which key shares and nonces exist in plaintext.
//!
//! It serves the host over one channel (see `frostgate_common::protocol`). Every request is
//! handled by [`service::Service`]; [`server`] owns connections and refuses unauthorized peers.
#![forbid(unsafe_code)]

/// The development features compiled into this build, comma-separated; empty in a production
/// build. Reported in `Hello`, `Health` and `--version` so an operator can tell.
pub const DEV_FEATURES: &str = match (cfg!(feature = "dev-dealer"), cfg!(feature = "dev-fault-injection")) {
    (true, true) => "dev-dealer,dev-fault-injection",
    (true, false) => "dev-dealer",
    (false, true) => "dev-fault-injection",
    (false, false) => "",
};

/// `--version` text: the package version and the development features (`none` in production).
pub const VERSION: &str = match (cfg!(feature = "dev-dealer"), cfg!(feature = "dev-fault-injection")) {
    (true, true) => concat!(env!("CARGO_PKG_VERSION"), " (dev features: dev-dealer,dev-fault-injection)"),
    (true, false) => concat!(env!("CARGO_PKG_VERSION"), " (dev features: dev-dealer)"),
    (false, true) => concat!(env!("CARGO_PKG_VERSION"), " (dev features: dev-fault-injection)"),
    (false, false) => concat!(env!("CARGO_PKG_VERSION"), " (dev features: none)"),
};

pub mod audit;
pub mod backup;
pub mod config;
pub mod custody;
pub mod derive;
pub mod dkg;
pub mod epoch_statements;
pub mod hardening;
pub mod keys;
pub mod logging;
pub mod markers;
pub mod policy;
pub mod private_file;
pub mod psbt;
pub mod repair;
pub mod rounds;
pub mod sealing;
pub mod server;
pub mod service;
pub mod store;
pub mod taproot;

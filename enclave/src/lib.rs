//! The frostgate enclave: the only process in which key shares and nonces exist in plaintext.
//!
//! It serves the host over one channel (see `frostgate_common::protocol`). Every request is
//! handled by [`service::Service`]; [`server`] owns connections and refuses unauthorized peers.
#![forbid(unsafe_code)]

/// Every combination of the development features, indexed by their bits (dealer 1, fault
/// injection 2, attestation 4), as `$m!` takes them: `(names, version text)`.
macro_rules! dev_combinations {
    ($m:ident) => {
        $m![
            ("", "none"),
            ("dev-dealer", "dev-dealer"),
            ("dev-fault-injection", "dev-fault-injection"),
            ("dev-dealer,dev-fault-injection", "dev-dealer,dev-fault-injection"),
            ("dev-attestation", "dev-attestation"),
            ("dev-dealer,dev-attestation", "dev-dealer,dev-attestation"),
            ("dev-fault-injection,dev-attestation", "dev-fault-injection,dev-attestation"),
            ("dev-dealer,dev-fault-injection,dev-attestation", "dev-dealer,dev-fault-injection,dev-attestation")
        ]
    };
}

macro_rules! names {
    ($(($names:literal, $version:literal)),*) => {
        [$($names),*]
    };
}

macro_rules! versions {
    ($(($names:literal, $version:literal)),*) => {
        [$(concat!(env!("CARGO_PKG_VERSION"), " (dev features: ", $version, ")")),*]
    };
}

const DEV_INDEX: usize = (cfg!(feature = "dev-dealer") as usize)
    | (cfg!(feature = "dev-fault-injection") as usize) << 1
    | (cfg!(feature = "dev-attestation") as usize) << 2;

/// The development features compiled into this build, comma-separated; empty in a production
/// build. Reported in `Hello`, `Health` and `--version` so an operator can tell.
pub const DEV_FEATURES: &str = dev_combinations!(names)[DEV_INDEX];

/// `--version` text: the package version and the development features (`none` in production).
pub const VERSION: &str = dev_combinations!(versions)[DEV_INDEX];

pub mod attestation;
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

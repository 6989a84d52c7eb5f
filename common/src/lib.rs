//! What the host and the enclave must agree on, and nothing secret.
//!
//! Invariant: no type in this crate can hold a key share, a nonce, a DKG secret package or a PIN.
//! The crate depends on no crate that defines such types, and `tests/hygiene.rs` checks every
//! type reachable from the boundary protocol by name.
#![forbid(unsafe_code)]

pub mod bounded;
pub mod channel;
pub mod error;
pub mod exit;
pub mod faults;
pub mod frame;
pub mod ids;
pub mod limits;
pub mod manifest;
pub mod parent;
pub mod privileges;
pub mod protocol;
pub mod transport;

pub use error::{Error, ErrorCode, RecoveryClass};

//! Public-data rules that the enclave and the coordinator must compute alike, in one place: the
//! BIP341 tweak of a FROST public key package ([`taproot`]) and unhardened BIP32 derivation of a
//! group key's child package ([`derivation`]), and the session ids of a signing service request
//! ([`request`]). Both sides link this crate; neither trusts the
//! other's result: each computes it itself.
//!
//! Invariant: nothing here takes or returns a secret (shares, nonces): only public key packages,
//! public points and public tweak scalars. The enclave applies a tweak to a share itself.
#![forbid(unsafe_code)]

pub mod derivation;
pub mod request;
pub mod taproot;

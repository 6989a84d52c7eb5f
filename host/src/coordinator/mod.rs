//! The coordinator side of the host: what a wallet or operator runs to drive a cluster of signer
//! nodes over their network API. It holds no secret and trusts no single node.
//!
//! - [`attestation`]: a node's TEE attestation checked against its pins.
//! - [`cluster`]: the operator's cluster file (nodes, threshold, TLS pins, attestation pins).
//! - [`derivation`]: BIP32/BIP328 xpub, descriptor and addresses of a group key.
//! - [`signer`]: a typed gRPC client of one node.
//! - [`roast`]: ROAST signing with evidence against misbehaving nodes (a core without I/O and
//!   its gRPC driver).
//! - [`session`]: one signing session object ([`Signing`]): every signing goes through it, and
//!   its `finish` closes what the signings left open.
//! - [`dkg_relay`]: relays a DKG between the enclaves (an untrusted relay by design).
//! - [`psbt`]: which inputs a key signs, their sighashes, the signed and finalized PSBT.
//! - [`taproot`]: the BIP341 tweak rule and its cache.

pub mod attestation;
pub mod cluster;
pub mod derivation;
pub mod dkg_relay;
pub mod psbt;
pub mod roast;
pub mod session;
pub mod signer;
pub mod taproot;

pub use roast::{libsecp_verifies, Evidence, KeyMaterial, Reason, Settings, SignRequest, Signed, Step};
pub use session::{Signer, Signing};

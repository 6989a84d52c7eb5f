//! Sealed blobs, as the rest of the enclave uses them: secrets that must survive a restart,
//! sealed inside the HSM under the key-encryption key in the custody profile's format
//! (`custody::blobs` has the formats and their invariants).

pub use crate::custody::blobs::{SealContext, SealedKind, MAX_PLAINTEXT};
use crate::custody::Custody;
use frostgate_common::error::Error;
use zeroize::Zeroizing;

/// Seals `plaintext` under the token's key-encryption key, in the custody profile's format.
pub fn seal(custody: &Custody, context: &SealContext, plaintext: &[u8]) -> Result<Vec<u8>, Error> {
    crate::custody::blobs::seal(custody.vault(), context, plaintext)
}

/// Unseals a blob for `context`. Any failure is `unseal_failed`, whatever the cause.
pub fn unseal(custody: &Custody, context: &SealContext, blob: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
    crate::custody::blobs::unseal(custody.vault(), context, blob)
}

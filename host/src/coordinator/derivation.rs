//! Many addresses from one DKG: unhardened BIP32 derivation of a FROST group key, following
//! BIP328's convention for aggregate keys (the group key's compressed point as the xpub's key,
//! BIP328's fixed chain code, depth 0, parent fingerprint 0), the wallet descriptor
//! `tr(XPUB/<0;1>/*)` with its BIP380 checksum, and the addresses at `<0|1>/i`.
//!
//! Invariant: only unhardened steps exist here (a hardened child needs a secret no one holds);
//! every child key is `P + d*G` for a public `d`, which each enclave can add to its share.

use bitcoin::bip32::{ChainCode, ChildNumber, Fingerprint, Xpub};
use bitcoin::secp256k1::{PublicKey, Secp256k1};
use bitcoin::{Address, Network, NetworkKind};
use frostgate_common::error::{Error, ErrorCode};

/// The group key (SEC1, compressed) as a BIP328 xpub for `network`.
pub fn xpub(group_key: &[u8], network: Network) -> Result<Xpub, Error> {
    let public_key = PublicKey::from_slice(group_key)
        .map_err(|e| Error::new(ErrorCode::InvalidEncoding, format!("group key: {e}")))?;
    Ok(Xpub {
        network: NetworkKind::from(network),
        depth: 0,
        parent_fingerprint: Fingerprint::default(),
        child_number: ChildNumber::Normal { index: 0 },
        public_key,
        chain_code: ChainCode::from(frostgate_common::limits::BIP328_CHAIN_CODE),
    })
}

/// `tr(XPUB/<0;1>/*)#checksum`: receive (0) and change (1) addresses, BIP86 key path.
pub fn descriptor(xpub: &Xpub) -> String {
    let body = format!("tr({xpub}/<0;1>/*)");
    let checksum = checksum(&body);
    format!("{body}#{checksum}")
}

/// The child key at `<change>/<index>` (unhardened).
pub fn child(xpub: &Xpub, change: bool, index: u32) -> Result<Xpub, Error> {
    let path = [ChildNumber::from_normal_idx(u32::from(change)), ChildNumber::from_normal_idx(index)];
    let path: Vec<ChildNumber> = path
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(|e| Error::new(ErrorCode::ConfigInvalid, format!("index {index}: {e}")))?;
    xpub.derive_pub(&Secp256k1::verification_only(), &path)
        .map_err(|e| Error::new(ErrorCode::ConfigInvalid, format!("derivation: {e}")))
}

/// The BIP86 address at `<change>/<index>`.
pub fn address(xpub: &Xpub, change: bool, index: u32, network: Network) -> Result<Address, Error> {
    let child = child(xpub, change, index)?;
    let (x, _) = child.public_key.x_only_public_key();
    Ok(Address::p2tr(&Secp256k1::verification_only(), x, None, network))
}

/// The group's public key package shifted to the child at `path` (verifying key and every
/// verifying share plus `d*G`, `d` the path's summed BIP32 tweaks): what the child's shares and
/// signatures verify against. The child must equal rust-bitcoin's BIP32 child, or this fails.
pub fn derive_public(
    public: &frost_secp256k1_tr::keys::PublicKeyPackage,
    path: &[u32],
) -> Result<frost_secp256k1_tr::keys::PublicKeyPackage, Error> {
    use frost_core::{Field, Group};
    use frost_secp256k1_tr::keys::{PublicKeyPackage, VerifyingShare};
    use frost_secp256k1_tr::{Secp256K1Group as G, Secp256K1ScalarField as F, VerifyingKey};
    let internal = |e: &dyn std::fmt::Display| Error::new(ErrorCode::Internal, format!("derivation: {e}"));
    let vk = public.verifying_key().serialize().map_err(|e| internal(&e))?;
    let mut xpub = xpub(&vk, Network::Regtest)?;
    let mut d = F::zero();
    let secp = Secp256k1::verification_only();
    for &i in path {
        let step = ChildNumber::from_normal_idx(i)
            .map_err(|_| Error::new(ErrorCode::DerivationInvalid, format!("step {i} is hardened")))?;
        let (t, _) = xpub.ckd_pub_tweak(step).map_err(|e| internal(&e))?;
        d += F::deserialize(&t.secret_bytes()).map_err(|e| internal(&e))?;
        xpub = xpub.ckd_pub(&secp, step).map_err(|e| internal(&e))?;
    }
    let shift = |p: &[u8]| -> Result<[u8; 33], Error> {
        let bytes: [u8; 33] = p.try_into().map_err(|_| internal(&"point length"))?;
        let point = G::deserialize(&bytes).map_err(|e| internal(&e))?;
        G::serialize(&(point + G::generator() * d)).map_err(|e| internal(&e))
    };
    let child = shift(&vk)?;
    if child != xpub.public_key.serialize() {
        return Err(internal(&"FROST and BIP32 disagree on the child"));
    }
    let mut shares = std::collections::BTreeMap::new();
    for (id, share) in public.verifying_shares() {
        let v = share.serialize().map_err(|e| internal(&e))?;
        shares.insert(*id, VerifyingShare::deserialize(&shift(&v)?).map_err(|e| internal(&e))?);
    }
    let verifying_key = VerifyingKey::deserialize(&child).map_err(|e| internal(&e))?;
    Ok(PublicKeyPackage::new(shares, verifying_key, public.min_signers()))
}

/// The BIP380 descriptor checksum (8 characters).
pub fn checksum(descriptor: &str) -> String {
    const INPUT: &str =
        "0123456789()[],'/*abcdefgh@:$%{}IJKLMNOPQRSTUVWXYZ&+-.;<=>?!^_|~ijklmnopqrstuvwxyzABCDEFGH`#\"\\ ";
    const CHARSET: &[u8] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";
    fn polymod(mut c: u64, val: u64) -> u64 {
        let c0 = c >> 35;
        c = ((c & 0x7ffffffff) << 5) ^ val;
        for (bit, g) in [0xf5dee51989, 0xa9fdca3312, 0x1bab10e32d, 0x3706b1677a, 0x644d626ffd].into_iter().enumerate() {
            if c0 & (1 << bit) != 0 {
                c ^= g;
            }
        }
        c
    }
    let (mut c, mut cls, mut clscount) = (1u64, 0u64, 0);
    for ch in descriptor.chars() {
        // Characters outside the set cannot occur in the descriptors built here.
        let pos = INPUT.find(ch).unwrap_or(0) as u64;
        c = polymod(c, pos & 31);
        cls = cls * 3 + (pos >> 5);
        clscount += 1;
        if clscount == 3 {
            c = polymod(c, cls);
            cls = 0;
            clscount = 0;
        }
    }
    if clscount > 0 {
        c = polymod(c, cls);
    }
    for _ in 0..8 {
        c = polymod(c, 0);
    }
    c ^= 1;
    (0..8).map(|j| CHARSET[((c >> (5 * (7 - j))) & 31) as usize] as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bip380_checksum_matches_the_specification_example() {
        // BIP380's example.
        assert_eq!(checksum("raw(deadbeef)"), "89f8spxm");
    }
}

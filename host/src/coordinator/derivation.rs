//! Many addresses from one DKG: unhardened BIP32 derivation of a FROST group key, following
//! BIP328's convention for aggregate keys (the group key's compressed point as the xpub's key,
//! BIP328's fixed chain code, depth 0, parent fingerprint 0), the wallet descriptor
//! `tr(XPUB/<0;1>/*)` with its BIP380 checksum, and the addresses at `<0|1>/i`.
//!
//! Invariant: only unhardened steps exist here (a hardened child needs a secret no one holds);
//! every child key is `P + d*G` for a public `d`, which each enclave can add to its share.

use bitcoin::bip32::{ChildNumber, Xpub};
use bitcoin::secp256k1::Secp256k1;
use bitcoin::{Address, Network, NetworkKind};
use frostgate_common::error::{Error, ErrorCode};

/// The group key (SEC1, compressed) as a BIP328 xpub for `network`.
pub fn xpub(group_key: &[u8], network: Network) -> Result<Xpub, Error> {
    frostgate_public::derivation::root_xpub(group_key, NetworkKind::from(network))
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

//! Many addresses from one DKG: the xpub (BIP328), the descriptor and the addresses `frostgate`
//! prints, checked against an independent parser and derivation (miniscript), for many indexes on
//! both branches, on a real cluster's DKG key and on odd-y group keys.

use frostgate_host::coordinator::derivation;
use frostgate_tests::dev_cluster::DevCluster;
use frostgate_tests::host_bin;
use miniscript::descriptor::{Descriptor, DescriptorPublicKey};
use std::str::FromStr;

/// Receive and change addresses of `descriptor` at `index`, by miniscript.
fn by_miniscript(descriptor: &str, index: u32) -> (String, String) {
    let d = Descriptor::<DescriptorPublicKey>::from_str(descriptor).expect("a valid descriptor (checksum included)");
    let singles = d.into_single_descriptors().expect("multipath");
    assert_eq!(singles.len(), 2);
    let at = |i: usize| {
        singles[i]
            .at_derivation_index(index)
            .expect("index")
            .address(bitcoin::Network::Regtest)
            .expect("address")
            .to_string()
    };
    (at(0), at(1))
}

#[test]
fn the_cluster_key_xpub_descriptor_and_addresses_match_an_independent_derivation() {
    let cluster = DevCluster::start(&host_bin(), 3, 2, &["--dev-plaintext"]);
    let key = cluster.keygen();
    let id = key["key"].as_str().expect("key");
    let x = cluster.run(&["xpub", "--cluster", &cluster.file(), "--key", id, "--json"]).expect("xpub");
    let xpub = bitcoin::bip32::Xpub::from_str(x["xpub"].as_str().expect("xpub")).expect("xpub parses");
    // BIP328: depth 0, no parent, the fixed chain code, the group key itself.
    assert_eq!((xpub.depth, xpub.parent_fingerprint), (0, bitcoin::bip32::Fingerprint::default()));
    assert_eq!(xpub.chain_code.to_bytes(), frostgate_common::limits::BIP328_CHAIN_CODE);
    assert_eq!(hex::encode(xpub.public_key.x_only_public_key().0.serialize()), id);
    assert_eq!(x["fingerprint"].as_str(), Some(xpub.fingerprint().to_string().as_str()));
    let descriptor = x["descriptor"].as_str().expect("descriptor");
    let file = cluster.file();
    for (index, change) in [(0, false), (1, false), (7, true), (1000, false), (2_147_483_647, true)] {
        let mut args = vec!["address", "--cluster", &file, "--key", id, "--json"];
        let i = index.to_string();
        args.extend(["--index", &i]);
        if change {
            args.push("--change");
        }
        let printed = cluster.run(&args).expect("address");
        let (receive, change_address) = by_miniscript(descriptor, index);
        let expected = if change { change_address } else { receive };
        assert_eq!(printed["address"].as_str(), Some(expected.as_str()), "index {index} change {change}");
        assert_eq!(printed["path"], format!("{}/{index}", u8::from(change)));
    }
    // The raw-digest path signs for a child too (the enclaves derive it from the path).
    let message = hex::encode(frostgate_tests::signing::random::<32>());
    let signed = cluster
        .run(&["sign", "--cluster", &file, "--key", id, "--message", &message, "--path", "0/5", "--json"])
        .expect("sign for 0/5");
    let (_, child_output) = frostgate_tests::psbt::child(&xpub, &[0, 5]);
    assert_eq!(signed["output_key"].as_str(), Some(hex::encode(child_output).as_str()));
    let sig: [u8; 64] = hex::decode(signed["signature"].as_str().expect("sig")).expect("hex").try_into().expect("64");
    let (r, s) = sig.split_at(32);
    let sig = frostgate_common::protocol::Bip340Signature { r: r.try_into().expect("r"), s: s.try_into().expect("s") };
    let msg: [u8; 32] = hex::decode(&message).expect("hex").try_into().expect("32");
    assert!(frostgate_tests::signing::libsecp_verifies(&sig, &msg, &child_output), "libsecp256k1 rejects it");
    let err = cluster
        .run(&["sign", "--cluster", &file, "--key", id, "--message", &message, "--path", "0/2147483648"])
        .expect_err("hardened");
    assert!(err.contains("config_invalid"), "{err}");
    // A hardened index does not exist for an aggregate key.
    let err = cluster
        .run(&["address", "--cluster", &cluster.file(), "--key", id, "--index", "2147483648"])
        .expect_err("hardened");
    assert!(err.contains("config_invalid"), "{err}");
}

#[test]
fn odd_and_even_group_keys_derive_the_same_as_miniscript_on_both_branches() {
    let secp = bitcoin::secp256k1::Secp256k1::new();
    let mut parities = std::collections::BTreeSet::new();
    let mut odd_children = 0;
    let mut n = 0u8;
    while parities.len() < 2 || n < 4 {
        n += 1;
        let kp = bitcoin::secp256k1::Keypair::from_seckey_slice(&secp, &[n; 32]).expect("key");
        let group = kp.public_key();
        parities.insert(group.serialize()[0]);
        let xpub = derivation::xpub(&group.serialize(), bitcoin::Network::Regtest).expect("xpub");
        let descriptor = derivation::descriptor(&xpub);
        for index in 0..100 {
            let (receive, change) = by_miniscript(&descriptor, index);
            let ours = derivation::address(&xpub, false, index, bitcoin::Network::Regtest).expect("address");
            assert_eq!(ours.to_string(), receive, "key {n} 0/{index}");
            let ours = derivation::address(&xpub, true, index, bitcoin::Network::Regtest).expect("address");
            assert_eq!(ours.to_string(), change, "key {n} 1/{index}");
            let child = derivation::child(&xpub, false, index).expect("child");
            odd_children += usize::from(child.public_key.serialize()[0] == 3);
        }
    }
    assert_eq!(parities.len(), 2, "both an even-y and an odd-y group key were covered");
    assert!(odd_children > 50, "odd-y children were covered ({odd_children})");
}

//! PSBTs for tests: spends of a group key's Taproot outputs, built with rust-bitcoin, and the
//! final transactions checked by Bitcoin Core's script interpreter in the tests.

use bitcoin::absolute::LockTime;
use bitcoin::hashes::Hash;
use bitcoin::key::TweakedPublicKey;
use bitcoin::psbt::Psbt;
use bitcoin::secp256k1::{Keypair, Secp256k1, XOnlyPublicKey};
use bitcoin::transaction::Version;
use bitcoin::{Address, Amount, Network, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid, Witness};

/// The P2TR script paying an x-only output key.
pub fn p2tr(output_key: &[u8; 32]) -> ScriptBuf {
    let key = XOnlyPublicKey::from_slice(output_key).expect("x-only key");
    ScriptBuf::new_p2tr_tweaked(TweakedPublicKey::dangerous_assume_tweaked(key))
}

/// A fresh regtest P2TR address (of a random key nobody here signs for).
pub fn random_address() -> Address {
    let secp = Secp256k1::new();
    let kp = Keypair::from_seckey_slice(&secp, &crate::signing::random::<32>()).expect("key");
    let (x, _) = kp.x_only_public_key();
    Address::p2tr_tweaked(TweakedPublicKey::dangerous_assume_tweaked(x), Network::Regtest)
}

/// A PSBT spending `inputs` (satoshis) from the key's BIP86 output to `outputs`; every input
/// carries `witness_utxo` and `tap_internal_key`.
pub fn spend(internal: &[u8; 32], output_key: &[u8; 32], inputs: &[u64], outputs: &[(ScriptBuf, u64)]) -> Psbt {
    let tx = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: inputs
            .iter()
            .map(|_| TxIn {
                previous_output: OutPoint { txid: Txid::from_byte_array(crate::signing::random()), vout: 0 },
                script_sig: ScriptBuf::new(),
                sequence: Sequence::MAX,
                witness: Witness::new(),
            })
            .collect(),
        output: outputs
            .iter()
            .map(|(script, sats)| TxOut { value: Amount::from_sat(*sats), script_pubkey: script.clone() })
            .collect(),
    };
    let mut psbt = Psbt::from_unsigned_tx(tx).expect("unsigned");
    let internal = XOnlyPublicKey::from_slice(internal).expect("internal key");
    for (input, sats) in psbt.inputs.iter_mut().zip(inputs) {
        input.witness_utxo = Some(TxOut { value: Amount::from_sat(*sats), script_pubkey: p2tr(output_key) });
        input.tap_internal_key = Some(internal);
    }
    psbt
}

/// Writes `psbt` (base64) into `dir` and returns the path.
pub fn write(dir: &std::path::Path, name: &str, psbt: &Psbt) -> String {
    let path = dir.join(name);
    std::fs::write(&path, psbt.to_string()).expect("write psbt");
    path.display().to_string()
}

/// The child of a BIP328 xpub at `path`: (x-only internal key, BIP86 output key), by rust-bitcoin.
pub fn child(xpub: &bitcoin::bip32::Xpub, path: &[u32]) -> ([u8; 32], [u8; 32]) {
    use bitcoin::key::TapTweak;
    let secp = Secp256k1::new();
    let path: Vec<bitcoin::bip32::ChildNumber> =
        path.iter().map(|i| bitcoin::bip32::ChildNumber::from_normal_idx(*i).expect("normal")).collect();
    let c = xpub.derive_pub(&secp, &path).expect("derive");
    let (x, _) = c.public_key.x_only_public_key();
    let (tweaked, _) = x.tap_tweak(&secp, None);
    (x.serialize(), tweaked.to_x_only_public_key().serialize())
}

/// The BIP371 origin of the child at `path` of the key with `fingerprint`.
fn origin(
    internal: &[u8; 32],
    fingerprint: bitcoin::bip32::Fingerprint,
    path: &[u32],
) -> (XOnlyPublicKey, (Vec<bitcoin::taproot::TapLeafHash>, (bitcoin::bip32::Fingerprint, bitcoin::bip32::DerivationPath)))
{
    let k = XOnlyPublicKey::from_slice(internal).expect("x-only");
    let path: bitcoin::bip32::DerivationPath = path
        .iter()
        .map(|i| bitcoin::bip32::ChildNumber::from_normal_idx(*i).expect("normal"))
        .collect::<Vec<_>>()
        .into();
    (k, (Vec::new(), (fingerprint, path)))
}

/// Marks input `n` as spending the child at `path` of the key with `fingerprint` (BIP371 fields).
pub fn mark_input(
    psbt: &mut Psbt,
    n: usize,
    internal: &[u8; 32],
    fingerprint: bitcoin::bip32::Fingerprint,
    path: &[u32],
) {
    let (k, o) = origin(internal, fingerprint, path);
    psbt.inputs[n].tap_internal_key = Some(k);
    psbt.inputs[n].tap_key_origins.insert(k, o);
}

/// Marks output `n` as paying the child at `path` (so the enclaves can prove it is change).
pub fn mark_output(
    psbt: &mut Psbt,
    n: usize,
    internal: &[u8; 32],
    fingerprint: bitcoin::bip32::Fingerprint,
    path: &[u32],
) {
    let (k, o) = origin(internal, fingerprint, path);
    psbt.outputs[n].tap_internal_key = Some(k);
    psbt.outputs[n].tap_key_origins.insert(k, o);
}

/// A PSBT spending one output of each child (`(path, sats)`), every input paying that child's
/// BIP86 output key, to `outputs`.
pub fn spend_children(xpub: &bitcoin::bip32::Xpub, inputs: &[(&[u32], u64)], outputs: &[(ScriptBuf, u64)]) -> Psbt {
    let secp = Secp256k1::new();
    let fingerprint = xpub.fingerprint();
    let (i0, o0) = child(xpub, inputs[0].0);
    let amounts: Vec<u64> = inputs.iter().map(|(_, s)| *s).collect();
    let mut psbt = spend(&i0, &o0, &amounts, outputs);
    for (n, (path, sats)) in inputs.iter().enumerate() {
        let (internal, output) = child(xpub, path);
        psbt.inputs[n].witness_utxo = Some(TxOut { value: Amount::from_sat(*sats), script_pubkey: p2tr(&output) });
        mark_input(&mut psbt, n, &internal, fingerprint, path);
    }
    let _ = secp;
    psbt
}

/// The enclave policy the in-process tests use: regtest, one allowed destination, a one-hour
/// window of `max_sats_per_window`.
pub fn window_policy(destination: &Address, max_sats_per_window: u64) -> frostgate_enclave::policy::Policy {
    let config: frostgate_enclave::policy::PolicyConfig = toml::from_str(&format!(
        "network = \"regtest\"\ndestinations = [\"{destination}\"]\nwindow_secs = 3600\nmax_sats_per_window = {max_sats_per_window}\n"
    ))
    .expect("policy");
    frostgate_enclave::policy::Policy::from_config(&config).expect("valid")
}

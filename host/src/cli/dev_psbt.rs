//! `frostgate dev psbt`: a PSBT spending a made-up output of a group key (for demos and tests
//! without a Bitcoin node): one input of `--amount` sats paying the key's BIP86 output, `--send`
//! sats to `--to`, the rest minus a 500-sat fee back to the key.

use super::out;
use bitcoin::hashes::Hash;
use bitcoin::key::TweakedPublicKey;
use bitcoin::psbt::Psbt;
use bitcoin::secp256k1::XOnlyPublicKey;
use bitcoin::{absolute, transaction, Address, Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid};
use clap::Args;
use frostgate_common::error::{Error, ErrorCode};
use std::str::FromStr;

#[derive(Debug, Args)]
pub struct PsbtArgs {
    /// The key id (x-only internal key, hex).
    #[arg(long)]
    key: String,
    /// The key's BIP86 output key (x-only, hex), as `keygen` prints it.
    #[arg(long)]
    output_key: String,
    /// Satoshis of the made-up output being spent.
    #[arg(long)]
    amount: u64,
    /// The recipient (an address of any network).
    #[arg(long)]
    to: String,
    /// Satoshis to the recipient.
    #[arg(long)]
    send: u64,
}

/// The fee the made-up transaction pays.
const FEE: u64 = 500;

fn xonly(what: &str, hex_key: &str) -> Result<XOnlyPublicKey, Error> {
    let bytes = hex::decode(hex_key).map_err(|_| Error::new(ErrorCode::ConfigInvalid, format!("{what}: not hex")))?;
    XOnlyPublicKey::from_slice(&bytes).map_err(|e| Error::new(ErrorCode::ConfigInvalid, format!("{what}: {e}")))
}

pub fn run(a: PsbtArgs) -> Result<(), Error> {
    let internal = xonly("--key", &a.key)?;
    let output = xonly("--output-key", &a.output_key)?;
    let to = Address::from_str(&a.to)
        .map_err(|e| Error::new(ErrorCode::ConfigInvalid, format!("--to: {e}")))?
        .assume_checked()
        .script_pubkey();
    let seed = format!("frostgate demo {} {} {}", a.key, a.amount, a.send);
    let psbt = synthetic(internal, output, a.amount, to, a.send, seed.as_bytes())?;
    out(&format!("{psbt}\n"));
    Ok(())
}

/// A one-input PSBT spending a made-up output (outpoint from `seed`) of `amount` sats paying
/// `output`, `send` sats to `to`, the rest minus the fee back to `output`.
pub fn synthetic(
    internal: XOnlyPublicKey,
    output: XOnlyPublicKey,
    amount: u64,
    to: ScriptBuf,
    send: u64,
    seed: &[u8],
) -> Result<Psbt, Error> {
    let own = ScriptBuf::new_p2tr_tweaked(TweakedPublicKey::dangerous_assume_tweaked(output));
    let change = amount
        .checked_sub(send)
        .and_then(|c| c.checked_sub(FEE))
        .ok_or_else(|| Error::new(ErrorCode::ConfigInvalid, "--send plus the 500-sat fee exceeds --amount"))?;
    let mut output = vec![TxOut { value: Amount::from_sat(send), script_pubkey: to }];
    if change > 0 {
        output.push(TxOut { value: Amount::from_sat(change), script_pubkey: own.clone() });
    }
    let tx = Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint {
                txid: Txid::from_byte_array(bitcoin::hashes::sha256::Hash::hash(seed).to_byte_array()),
                vout: 0,
            },
            sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
            ..TxIn::default()
        }],
        output,
    };
    let mut psbt = Psbt::from_unsigned_tx(tx).map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
    psbt.inputs[0].witness_utxo = Some(TxOut { value: Amount::from_sat(amount), script_pubkey: own });
    psbt.inputs[0].tap_internal_key = Some(internal);
    Ok(psbt)
}

#[derive(Debug, Args)]
pub struct AddressArgs {
    /// Any text: the same seed gives the same address.
    #[arg(long)]
    seed: String,
}

/// `frostgate dev address`: a regtest P2TR address of a key derived from `--seed` (demo
/// recipients; nobody should fund it).
pub fn address(a: AddressArgs) -> Result<(), Error> {
    out(&format!("{}\n", seeded_address(&a.seed)?));
    Ok(())
}

/// The regtest P2TR address of the key whose secret is SHA-256(`seed`).
pub fn seeded_address(seed: &str) -> Result<Address, Error> {
    let secp = bitcoin::secp256k1::Secp256k1::new();
    let secret = bitcoin::hashes::sha256::Hash::hash(seed.as_bytes()).to_byte_array();
    let kp = bitcoin::secp256k1::Keypair::from_seckey_slice(&secp, &secret)
        .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
    let (x, _) = kp.x_only_public_key();
    Ok(Address::p2tr(&secp, x, None, bitcoin::Network::Regtest))
}

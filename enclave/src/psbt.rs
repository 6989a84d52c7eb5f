//! A PSBT input to sign, checked by the enclave itself: the enclave parses the PSBT (BIP174 v0
//! with the BIP371 Taproot fields), proves the input spends this key's output, computes the
//! BIP341 sighash and what the transaction spends. The caller never supplies a digest on this path.
//!
//! Invariants: every input carries `witness_utxo` (the sighash commits to all spent amounts and
//! scripts); the signed input's `tap_internal_key` is this key's internal key and its
//! `witness_utxo` pays the output key this enclave derives (BIP86 without `tap_merkle_root`);
//! only `SIGHASH_DEFAULT` is signed; any malformed or foreign input is a typed error, never a panic.

use crate::derive::Derived;
use crate::keys::KeyRecord;
use crate::policy::Spend;
use bitcoin::bip32::{ChildNumber, DerivationPath, Fingerprint};
use bitcoin::hashes::Hash;
use bitcoin::key::TweakedPublicKey;
use bitcoin::psbt::Psbt;
use bitcoin::secp256k1::XOnlyPublicKey;
use bitcoin::sighash::{Prevouts, SighashCache, TapSighashType};
use bitcoin::{ScriptBuf, TxOut};
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::protocol::TaprootMode;
use std::collections::BTreeSet;

/// What the enclave binds a PSBT session to.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The transaction id (of the unsigned transaction).
    pub txid: [u8; 32],
    /// The BIP341 key-spend sighash of the input (SIGHASH_DEFAULT): the message signed.
    pub sighash: [u8; 32],
    /// The Taproot mode the input's output key was derived with.
    pub mode: TaprootMode,
    /// The x-only output key.
    pub output_key: [u8; 32],
    /// What the transaction spends, for the policy.
    pub spend: Spend,
    /// For an input of a derived key: the derivation (from `tap_key_origins`).
    pub derived: Option<Derived>,
}

fn invalid(why: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::PsbtInvalid, why.to_string())
}

/// The P2TR script paying x-only `output_key`.
pub fn p2tr_script(output_key: &[u8; 32]) -> Result<ScriptBuf, Error> {
    let key = XOnlyPublicKey::from_slice(output_key).map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
    Ok(ScriptBuf::new_p2tr_tweaked(TweakedPublicKey::dangerous_assume_tweaked(key)))
}

/// Parses `bytes` and checks input `index` against `key`.
pub fn check(bytes: &[u8], index: u32, key: &KeyRecord) -> Result<Checked, Error> {
    let psbt = Psbt::deserialize(bytes).map_err(|e| invalid(format!("not a PSBT: {e}")))?;
    let tx = &psbt.unsigned_tx;
    let i = index as usize;
    if i >= psbt.inputs.len() || i >= tx.input.len() {
        return Err(invalid(format!("input {index} does not exist ({} inputs)", tx.input.len())));
    }
    let mut seen = BTreeSet::new();
    for (n, txin) in tx.input.iter().enumerate() {
        if !seen.insert(txin.previous_output) {
            return Err(invalid(format!("input {n} spends {} a second time", txin.previous_output)));
        }
    }
    let utxos: Vec<TxOut> = psbt
        .inputs
        .iter()
        .enumerate()
        .map(|(n, input)| input.witness_utxo.clone().ok_or_else(|| invalid(format!("input {n}: witness_utxo missing"))))
        .collect::<Result<_, _>>()?;
    let input = &psbt.inputs[i];
    if let Some(t) = input.sighash_type {
        if t.taproot_hash_ty().ok() != Some(TapSighashType::Default) {
            return Err(Error::new(
                ErrorCode::PolicyViolation,
                format!("sighash_type: input {index} asks for {t}; only SIGHASH_DEFAULT is signed"),
            ));
        }
    }
    let internal = input.tap_internal_key.ok_or_else(|| invalid(format!("input {index}: tap_internal_key missing")))?;
    let fingerprint = crate::derive::fingerprint(&key.public)?;
    let derived = if internal.serialize() == *key.key_id.as_bytes() {
        None
    } else {
        // A derived key: the path comes from the PSBT, the tweak is derived here from it.
        let (_, (fp, path)) = input.tap_key_origins.get(&internal).ok_or_else(|| {
            Error::new(
                ErrorCode::PsbtWrongKey,
                format!("input {index}: tap_internal_key {internal} is not key {} nor one of its children", key.key_id),
            )
        })?;
        let d = derive_child(key, fingerprint, fp, path)?;
        if d.key_id.as_bytes() != &internal.serialize() {
            return Err(Error::new(
                ErrorCode::PsbtWrongKey,
                format!("input {index}: path {path} of key {} does not lead to {internal}", key.key_id),
            ));
        }
        Some(d)
    };
    let public = derived.as_ref().map(|d| &d.public).unwrap_or(&key.public);
    let mode = match input.tap_merkle_root {
        Some(root) => TaprootMode::ScriptTree { merkle_root: root.to_byte_array() },
        None => TaprootMode::Bip86,
    };
    let output_key = crate::taproot::output_key(public, &mode)?;
    if utxos[i].script_pubkey != p2tr_script(&output_key)? {
        return Err(Error::new(
            ErrorCode::PsbtWrongKey,
            format!("input {index}: witness_utxo does not pay this key's output key"),
        ));
    }
    let sighash = SighashCache::new(tx)
        .taproot_key_spend_signature_hash(i, &Prevouts::All(&utxos), TapSighashType::Default)
        .map_err(|e| invalid(format!("sighash: {e}")))?;
    let inputs = utxos.iter().try_fold(0u64, |a, u| a.checked_add(u.value.to_sat()));
    let outputs = tx.output.iter().try_fold(0u64, |a, o| a.checked_add(o.value.to_sat()));
    let (Some(inputs), Some(outputs)) = (inputs, outputs) else {
        return Err(invalid("amounts overflow"));
    };
    let fee =
        inputs.checked_sub(outputs).ok_or_else(|| invalid(format!("outputs ({outputs}) exceed inputs ({inputs})")))?;
    // Change: outputs paying this key (BIP86), the very script this input spends, or a BIP86
    // child of this key whose path the PSBT's output fields prove.
    let mut own = vec![
        p2tr_script(&crate::taproot::output_key(&key.public, &TaprootMode::Bip86)?)?,
        utxos[i].script_pubkey.clone(),
    ];
    for (n, out) in psbt.outputs.iter().enumerate() {
        let Some(k) = out.tap_internal_key else { continue };
        let Some((_, (fp, path))) = out.tap_key_origins.get(&k) else { continue };
        if *fp != Fingerprint::from(fingerprint) {
            continue;
        }
        let d =
            derive_child(key, fingerprint, fp, path).map_err(|e| invalid(format!("output {n}: {}", e.message())))?;
        if d.key_id.as_bytes() == &k.serialize() {
            own.push(p2tr_script(&crate::taproot::output_key(&d.public, &TaprootMode::Bip86)?)?);
        }
    }
    let external: Vec<(ScriptBuf, u64)> = tx
        .output
        .iter()
        .filter(|o| !own.contains(&o.script_pubkey))
        .map(|o| (o.script_pubkey.clone(), o.value.to_sat()))
        .collect();
    let sats = external.iter().map(|(_, v)| *v).sum();
    Ok(Checked {
        txid: tx.compute_txid().to_byte_array(),
        sighash: sighash.to_byte_array(),
        mode,
        output_key,
        spend: Spend { external, sats, fee },
        derived,
    })
}

/// The child of `key` at `path`, if `fp` is this key's fingerprint and every step unhardened.
fn derive_child(
    key: &KeyRecord,
    fingerprint: [u8; 4],
    fp: &Fingerprint,
    path: &DerivationPath,
) -> Result<Derived, Error> {
    if fp.to_bytes() != fingerprint {
        return Err(Error::new(ErrorCode::PsbtWrongKey, format!("fingerprint {fp} is not key {}'s", key.key_id)));
    }
    let steps: Vec<u32> = path
        .into_iter()
        .map(|c| match c {
            ChildNumber::Normal { index } => Ok(*index),
            ChildNumber::Hardened { .. } => {
                Err(Error::new(ErrorCode::DerivationInvalid, format!("path {path} has a hardened step")))
            }
        })
        .collect::<Result<_, _>>()?;
    crate::derive::derive(&key.public, &steps)
}

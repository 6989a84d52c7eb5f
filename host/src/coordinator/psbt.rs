//! The coordinator's side of PSBT signing: which inputs a key can sign, the sighash each enclave
//! must compute identically (computed here too, with rust-bitcoin), and the signed PSBT.
//!
//! Invariant: the coordinator never asks an enclave to sign a digest on this path; it sends the
//! PSBT and the input, and uses an enclave's session only if the enclave computed this sighash.

use super::roast::{PsbtInput, SignRequest};
use bitcoin::hashes::Hash;
use bitcoin::psbt::Psbt;
use bitcoin::sighash::{Prevouts, SighashCache, TapSighashType};
use bitcoin::{taproot, Transaction, TxOut, Witness};
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::ids::KeyId;
use frostgate_common::protocol::{Bip340Signature, RequestTag, TaprootMode};
use std::str::FromStr;
use std::sync::Arc;

fn invalid(why: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::PsbtInvalid, why.to_string())
}

/// Reads a PSBT from base64 text (as Bitcoin Core writes it) or from its binary serialization.
pub fn parse(bytes: &[u8]) -> Result<Psbt, Error> {
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.trim().is_empty() && !bytes.starts_with(b"psbt\xff") => {
            Psbt::from_str(text.trim()).map_err(|e| invalid(format!("not a base64 PSBT: {e}")))
        }
        _ => Psbt::deserialize(bytes).map_err(|e| invalid(format!("not a PSBT: {e}"))),
    }
}

/// One signing request per input whose `tap_internal_key` is `key` or, by `tap_key_origins` with
/// this key's fingerprint, one of its unhardened children (the enclaves re-check all of it).
/// With `request`, each is a session of that signing service request.
pub fn requests(
    psbt: &Psbt,
    key: &KeyId,
    group_key: &[u8],
    request: Option<&RequestTag>,
) -> Result<Vec<(usize, SignRequest)>, Error> {
    let fingerprint = super::derivation::xpub(group_key, bitcoin::Network::Regtest)?.fingerprint();
    let utxos: Vec<TxOut> = psbt
        .inputs
        .iter()
        .enumerate()
        .map(|(n, i)| i.witness_utxo.clone().ok_or_else(|| invalid(format!("input {n}: witness_utxo missing"))))
        .collect::<Result<_, _>>()?;
    let bytes = Arc::new(psbt.serialize());
    let mut cache = SighashCache::new(&psbt.unsigned_tx);
    let mut out = Vec::new();
    for (n, input) in psbt.inputs.iter().enumerate() {
        let Some(internal) = input.tap_internal_key else { continue };
        let path: Vec<u32> = if internal.serialize() == *key.as_bytes() {
            Vec::new()
        } else {
            match input.tap_key_origins.get(&internal) {
                Some((_, (fp, path))) if *fp == fingerprint => path
                    .into_iter()
                    .map(|c| match c {
                        bitcoin::bip32::ChildNumber::Normal { index } => Ok(*index),
                        _ => Err(Error::new(ErrorCode::DerivationInvalid, format!("input {n}: hardened path {path}"))),
                    })
                    .collect::<Result<_, _>>()?,
                _ => continue,
            }
        };
        let sighash = cache
            .taproot_key_spend_signature_hash(n, &Prevouts::All(&utxos), TapSighashType::Default)
            .map_err(|e| invalid(format!("input {n}: sighash: {e}")))?;
        let mode = match input.tap_merkle_root {
            Some(root) => TaprootMode::ScriptTree { merkle_root: root.to_byte_array() },
            None => TaprootMode::Bip86,
        };
        let index = u32::try_from(n).map_err(|_| invalid("too many inputs"))?;
        out.push((
            n,
            SignRequest {
                key: *key,
                message: sighash.to_byte_array(),
                mode,
                psbt: Some(PsbtInput { psbt: bytes.clone(), input: index }),
                path,
                request: request.cloned(),
            },
        ));
    }
    if out.is_empty() {
        return Err(Error::new(ErrorCode::PsbtWrongKey, format!("no input of this PSBT spends key {key}")));
    }
    Ok(out)
}

/// Puts a BIP340 signature (SIGHASH_DEFAULT) into input `n`.
pub fn fill(psbt: &mut Psbt, n: usize, signature: &Bip340Signature) -> Result<(), Error> {
    let sig = bitcoin::secp256k1::schnorr::Signature::from_slice(&signature.to_bytes())
        .map_err(|e| Error::new(ErrorCode::Internal, e.to_string()))?;
    let input = psbt.inputs.get_mut(n).ok_or_else(|| invalid(format!("input {n} does not exist")))?;
    input.tap_key_sig = Some(taproot::Signature { signature: sig, sighash_type: TapSighashType::Default });
    Ok(())
}

/// Finalizes every input that has a key-path signature (BIP174 finalizer, BIP371 fields) and
/// extracts the transaction; an input without one is an error.
pub fn finalize(psbt: &mut Psbt) -> Result<Transaction, Error> {
    for (n, input) in psbt.inputs.iter_mut().enumerate() {
        let sig = input.tap_key_sig.ok_or_else(|| invalid(format!("input {n} is not signed")))?;
        input.final_script_witness = Some(Witness::from_slice(&[sig.to_vec()]));
        input.partial_sigs.clear();
        input.sighash_type = None;
        input.redeem_script = None;
        input.witness_script = None;
        input.bip32_derivation.clear();
        input.tap_key_sig = None;
        input.tap_script_sigs.clear();
        input.tap_scripts.clear();
        input.tap_key_origins.clear();
        input.tap_internal_key = None;
        input.tap_merkle_root = None;
    }
    psbt.clone().extract_tx().map_err(|e| invalid(format!("extract: {e}")))
}

/// What [`sign_inputs`] signed.
#[derive(Debug, Clone, Default)]
pub struct SignedInputs {
    /// The inputs signed, in order.
    pub inputs: Vec<usize>,
    /// The signers of the last signature.
    pub signers: Vec<u16>,
    /// Attempts made over all inputs.
    pub attempts: u32,
}

/// Signs every input of `psbt` that `key` (the signer's key) spends (one ROAST signing each, in input
/// order, each enclave computing the sighash itself) and puts the signatures in. The first
/// failure ends it, naming the input; the inputs signed before stay filled in. With `request`,
/// every input's session is one of that signing service request.
pub async fn sign_inputs(
    signer: &super::Signer,
    psbt: &mut Psbt,
    key: &KeyId,
    request: Option<&RequestTag>,
) -> Result<SignedInputs, (Error, Vec<super::Evidence>)> {
    let group_key = signer.material().group_key().map_err(|e| (e, Vec::new()))?;
    let requests = requests(psbt, key, &group_key, request).map_err(|e| (e, Vec::new()))?;
    let mut done = SignedInputs::default();
    for (n, request) in requests {
        let s = signer
            .sign(request)
            .await
            .map_err(|(e, ev)| (Error::new(e.code(), format!("input {n}: {}", e.message())), ev))?;
        fill(psbt, n, &s.bip340).map_err(|e| (e, Vec::new()))?;
        done.inputs.push(n);
        done.signers = s.signers;
        done.attempts += s.attempts;
    }
    Ok(done)
}

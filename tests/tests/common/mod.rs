//! Checks shared by integration tests (each test file that needs one declares `mod common;`).

use bitcoin::Transaction;

/// Checks every input of `tx` with libbitcoinconsensus (Core 26.0), Taproot rules on.
pub fn consensus_valid(tx: &Transaction, spent: &[bitcoin::TxOut]) {
    let bytes = bitcoin::consensus::encode::serialize(tx);
    let utxos: Vec<bitcoinconsensus::Utxo> = spent
        .iter()
        .map(|o| bitcoinconsensus::Utxo {
            script_pubkey: o.script_pubkey.as_bytes().as_ptr(),
            script_pubkey_len: o.script_pubkey.len() as u32,
            value: o.value.to_sat() as i64,
        })
        .collect();
    for (i, o) in spent.iter().enumerate() {
        bitcoinconsensus::verify_with_flags(
            o.script_pubkey.as_bytes(),
            o.value.to_sat(),
            &bytes,
            Some(&utxos),
            i,
            bitcoinconsensus::VERIFY_ALL_PRE_TAPROOT | bitcoinconsensus::VERIFY_TAPROOT,
        )
        .unwrap_or_else(|e| panic!("input {i} rejected by Bitcoin Core's interpreter: {e:?}"));
    }
}

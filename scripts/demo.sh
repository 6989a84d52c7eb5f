#!/usr/bin/env bash
# The main job: a local 3-node, 2-of-3 frostgate cluster on fresh SoftHSM tokens. It runs a DKG
# between the enclaves, signs a Taproot (BIP341) sighash with ROAST, verifies the signature with
# libsecp256k1, signs a PSBT that every enclave checks against its operator's spending policy
# (and shows one the policy refuses, with the audit trail), then kills one node and signs again
# with the remaining two.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
echo "== building (production feature set: each binary with -p, no development feature)"
cargo build --quiet --locked -p frostgate-enclave -p frostgate-host --bins
fg=target/debug/frostgate

work=$(mktemp -d -t frostgate-demo-XXXXXX)
# Run as root, the cluster's enclaves and hosts run as two other users: they must reach it.
chmod 755 "$work"
cluster="$work/cluster"
cleanup() {
  "$fg" dev cluster down --dir "$cluster" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
# One field of frostgate's one-line JSON output (strings, numbers or flat arrays).
json() { sed -n "s/.*\"$1\":\(\"[^\"]*\"\|\[[^]]*\]\|[0-9]*\).*/\1/p" | tr -d '"'; }

echo "== 3 nodes, 2-of-3, each with its own ${FROSTGATE_TOKEN:-softhsm} token (in $work), gRPC API with mutual TLS"
# The operators' spending policy, written into every enclave.toml: one allowed recipient, at most
# 100,000 sats per transaction and 150,000 per day for the key whichever two nodes sign (each
# enclave enforces its 2-of-3 share, 100,000), fee at most 5,000 sats. Raw digests stay allowed
# for the first signing below.
allowed=$("$fg" dev address --seed allowed)
stranger=$("$fg" dev address --seed stranger)
cat > "$work/policy.toml" <<POLICY
[policy]
network = "regtest"
allow_raw_digest = true
destinations = ["$allowed"]
max_sats_per_tx = 100000
window_secs = 86400
max_sats_per_window = 150000
max_fee_sats = 5000
POLICY
# FROSTGATE_TOKEN=tpm2 (or kryoptic, opencryptoki) runs the demo on that kind of token instead.
"$fg" dev cluster init --dir "$cluster" --nodes 3 --threshold 2 --tls --policy "$work/policy.toml" \
  --token "${FROSTGATE_TOKEN:-softhsm}"
"$fg" dev cluster up --dir "$cluster"
"$fg" status --cluster "$cluster/cluster.toml"

echo "== distributed key generation between the enclaves"
key_json=$("$fg" keygen --cluster "$cluster/cluster.toml" --network regtest --json)
key=$(echo "$key_json" | json key)
output_key=$(echo "$key_json" | json output_key)
address=$(echo "$key_json" | json address)
echo "key id (internal key): $key"
echo "output key (BIP86):    $output_key"
echo "address (regtest):     $address"

echo "== signing a BIP341 key-path sighash with ROAST"
sighash=$("$fg" dev sighash --output-key "$output_key" --amount 100000)
echo "sighash:   $sighash"
sig_json=$("$fg" sign --cluster "$cluster/cluster.toml" --key "$key" --message "$sighash" --json)
signature=$(echo "$sig_json" | json signature)
echo "signature: $signature"
echo "signers:   $(echo "$sig_json" | json signers)"
"$fg" verify --output-key "$output_key" --message "$sighash" --signature "$signature"

echo "== signing a PSBT: each enclave parses it, computes the sighash itself and applies its policy"
"$fg" dev psbt --key "$key" --output-key "$output_key" --amount 120000 --to "$allowed" --send 80000 > "$work/pay.psbt"
psbt_json=$("$fg" sign-psbt --cluster "$cluster/cluster.toml" --key "$key" --psbt "$work/pay.psbt" --finalize --json)
echo "txid:      $(echo "$psbt_json" | json txid)"
echo "raw tx:    $(echo "$psbt_json" | json tx | cut -c1-64)..."
echo "== a PSBT paying a recipient the policy does not allow is refused by every enclave"
"$fg" dev psbt --key "$key" --output-key "$output_key" --amount 120000 --to "$stranger" --send 80000 > "$work/steal.psbt"
if "$fg" sign-psbt --cluster "$cluster/cluster.toml" --key "$key" --psbt "$work/steal.psbt" --finalize 2> "$work/refused.txt"; then
  echo "the policy did not refuse" >&2
  exit 1
fi
cat "$work/refused.txt"
grep -q policy_violation "$work/refused.txt"
echo "== node 2's audit trail (every decision, kept in its MAC-chained, HSM-anchored store)"
"$fg" audit --cluster "$cluster/cluster.toml" --node 2
echo "== killing node 1 (a signer above), signing again with the remaining two"
kill -9 "$(cat "$cluster/node1/host.pid")" "$(cat "$cluster/node1/enclave.pid")"
"$fg" status --cluster "$cluster/cluster.toml"
sig_json=$("$fg" sign --cluster "$cluster/cluster.toml" --key "$key" --message "$sighash" --timeout-ms 5000 --json)
signature=$(echo "$sig_json" | json signature)
echo "signature: $signature"
echo "signers:   $(echo "$sig_json" | json signers)"
"$fg" verify --output-key "$output_key" --message "$sighash" --signature "$signature"
echo "== demo OK"

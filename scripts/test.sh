#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it: setup, formatting, lints, every test.
# Each test creates its own SoftHSM token directory under a temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
# CI builds once from a clean clone: incremental caches would only cost disk (they were a third of it).
export CARGO_INCREMENTAL=0
results=$(mktemp -t frostgate-test-results-XXXXXX)
# openCryptoki's slot daemon is machine-wide: stopped at the end only if this run started it.
slotd_before=$(pgrep -x pkcsslotd || true)
# Every frostgate process this run started must be gone at the end, whatever failed, and so must
# every token daemon of its development clusters (swtpm, tpm2-abrmd and D-Bus under a node's
# enclave/tpm/) and every private PostgreSQL server of its tests: any left is reported, killed,
# and fails the run.
leftovers() {
  local status=$?
  rm -f "$results"
  local left
  left=$( (pgrep -af "$PWD/target/[^ ]*/frostgate"; pgrep -af '^(swtpm|tpm2-abrmd|dbus-daemon) .*/enclave/tpm/';
           pgrep -af 'postgres .*-D [^ ]*frostgate-pg') || true)
  if [ -n "$left" ]; then
    echo "FAIL: processes left running after the suite:" >&2
    echo "$left" >&2
    pkill -KILL -f "$PWD/target/[^ ]*/frostgate" || true
    pkill -KILL -f '^(swtpm|tpm2-abrmd|dbus-daemon) .*/enclave/tpm/' || true
    pkill -KILL -f 'postgres .*-D [^ ]*frostgate-pg' || true
    status=1
  fi
  if [ -z "$slotd_before" ]; then
    pkill -x pkcsslotd || true
  fi
  exit "$status"
}
trap leftovers EXIT
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --all-features -- -D warnings
echo "== cargo build (binaries used by the integration tests)"
cargo build --workspace --bins --all-features
echo "== cargo test"
cargo test --workspace --all-features 2>&1 | tee -a "$results"
echo "== enclave unit tests of a production feature set (no development features)"
cargo test -p frostgate-enclave --lib 2>&1 | tee -a "$results"
echo "== custody tests on a second PKCS#11 implementation (kryoptic)"
scripts/kryoptic.sh 2>&1 | tee -a "$results"
echo "== the commit protocol's model, checked exhaustively by spin (scripts/model/)"
model=$(scripts/model.sh 2>&1) || { echo "$model"; exit 1; }
tail -n 1 <<<"$model"
echo "== the main job (scripts/demo.sh) from this checkout"
scripts/demo.sh
# One plain closing line over every cargo test run above.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "summary: %d passed, %d failed\n", p, f }' "$results"

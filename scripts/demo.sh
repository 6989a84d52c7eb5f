#!/usr/bin/env bash
# The main job, on the embedded defaults: build frostgate, start an enclave process, and show
# the host/enclave handshake. (Later issues grow this into the multi-node signing demo.)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
echo "== building"
cargo build --quiet --workspace --bins
bin=target/debug

work=$(mktemp -d -t frostgate-demo-XXXXXX)
enclave_pid=""
cleanup() {
  [ -n "$enclave_pid" ] && kill "$enclave_pid" 2>/dev/null && wait "$enclave_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== starting the enclave (socket in $work)"
coproc ENCLAVE { exec "$bin/frostgate-enclave" serve --listen "unix:$work/enclave.sock" 2>"$work/enclave.log"; }
enclave_pid=$ENCLAVE_PID
read -r -t 30 ready <&"${ENCLAVE[0]}" || { echo "enclave did not start"; cat "$work/enclave.log"; exit 1; }
echo "   $ready"

echo "== host -> enclave handshake"
"$bin/frostgate" enclave status --connect "unix:$work/enclave.sock"
echo "== the same, as JSON"
"$bin/frostgate" enclave status --connect "unix:$work/enclave.sock" --json

echo "== stopping the enclave (SIGTERM)"
kill -TERM "$enclave_pid"
wait "$enclave_pid" && echo "   enclave exited cleanly"
enclave_pid=""
echo "== demo OK"

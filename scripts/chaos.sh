#!/usr/bin/env bash
# Chaos soak of a local cluster (issue 19): continuous digest and PSBT signing while nodes,
# enclaves, hosts and coordinators are SIGKILLed and crashed at the commit protocol's fault
# points; an outside detector in front of every node checks every share and signature.
#   scripts/chaos.sh --cycles N [--nodes 3 --threshold 2] [--seed S] [--coordinators 3] [--verbose] [--json]
# Prints one summary line; exits non-zero on any violation. Development builds only (it needs
# the dealer-free DKG, plaintext loopback API and fault injection of the dev features).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
cargo build --quiet --locked --all-features --bins -p frostgate-enclave -p frostgate-host -p frostgate-tests
exec target/debug/frostgate-chaos "$@"

#!/usr/bin/env bash
# Coverage-guided fuzzing (issue 19) with cargo fuzz (libFuzzer, nightly toolchain):
#   scripts/fuzz.sh [--runs N | --time SECONDS] [TARGET...]
# Targets: frame grpc store config psbt (all by default). Each run starts from, and adds to, the
# kept corpus under fuzz/corpus/<target>/ (minimized afterwards with `cargo fuzz cmin`); a crash
# stops the run and leaves its input under fuzz/artifacts/<target>/. The stable suite replays the
# corpus (tests/tests/fuzz_corpus.rs). Prints one line per target: executions, coverage, corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=10000000
time_limit=0
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --time) time_limit=$2; runs=-1; shift 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=(frame grpc store config psbt)
scripts/setup.sh >/dev/null
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz@0.13.2
cd fuzz
cargo +nightly fuzz build
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  log=$(mktemp)
  start=$(date +%s)
  cargo +nightly fuzz run "$t" "corpus/$t" -- -runs="$runs" -max_total_time="$time_limit" \
    -max_len=65536 -print_final_stats=1 >"$log" 2>&1 || { tail -40 "$log"; echo "FAIL: $t crashed (input under fuzz/artifacts/$t/)"; exit 1; }
  secs=$(( $(date +%s) - start ))
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo '?')
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo '?')
  cargo +nightly fuzz cmin "$t" "corpus/$t" >/dev/null 2>&1
  echo "fuzz: target=$t execs=$execs seconds=$secs cov=$cov ft=$ft corpus=$(ls "corpus/$t" | wc -l) crashes=0"
  rm -f "$log"
done

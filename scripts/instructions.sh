#!/usr/bin/env bash
# CPU instructions per signature, counted by valgrind's callgrind (identical from run to run,
# whatever else the machine does; wall time on shared machines is not). For each cluster size:
#   - the whole cluster: every enclave and host of a fresh dev cluster (plaintext loopback API)
#     and the coordinator (`frostgate bench --no-pure`, concurrency 1), all under callgrind;
#     run with N1 and N2 signatures, (total(N2) - total(N1)) / (N2 - N1) cancels start-up and DKG;
#   - pure frost-secp256k1-tr (`frostgate bench --pure-only`, in one process), the same way.
# Usage: scripts/instructions.sh [--sizes "3:2 5:3 10:7"] [--n1 5] [--n2 15]
# Prints a markdown table (BENCHMARKS.md). Needs valgrind (installed if missing). Slow: every
# process runs ~50x slower under callgrind.
set -euo pipefail
cd "$(dirname "$0")/.."

sizes="3:2 5:3"
n1=5
n2=15
while [ $# -gt 0 ]; do
  case "$1" in
    --sizes) sizes="$2"; shift 2 ;;
    --n1) n1="$2"; shift 2 ;;
    --n2) n2="$2"; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

if ! command -v valgrind >/dev/null; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq valgrind >/dev/null
fi
# Production feature set, each binary built on its own (no development feature unified in).
cargo build --quiet --release -p frostgate-host
cargo build --quiet --release -p frostgate-enclave
bin="$PWD/target/release/frostgate"

work=$(mktemp -d -t frostgate-instructions-XXXXXX)
chmod 1777 "$work"
trap 'rm -rf "$work"' EXIT

# Sum of the instruction counts (Ir) of every callgrind profile in a directory.
total() {
  local sum=0 v
  for f in "$1"/*.cg; do
    v=$(awk '/^(summary|totals):/ { print $2; exit }' "$f")
    sum=$((sum + ${v:-0}))
  done
  echo "$sum"
}

# Sum of Ir over the profiles of one kind of process: enclave, host or coordinator.
kind_total() { # dir kind
  local sum=0 v cmd
  for f in "$1"/*.cg; do
    cmd=$(awk '/^cmd:/ { print; exit }' "$f")
    case "$2:$cmd" in
      enclave:*frostgate-enclave*) ;;
      coordinator:*" bench "*) ;;
      host:*frostgate-enclave*|host:*" bench "*) continue ;;
      host:*) ;;
      *) continue ;;
    esac
    v=$(awk '/^(summary|totals):/ { print $2; exit }' "$f")
    sum=$((sum + ${v:-0}))
  done
  echo "$sum"
}

# As root a dev cluster runs each node as two users, and callgrind could not write the profiles of
# processes that dropped to them: run the measurement as an unprivileged user instead.
as_user=()
[ "$(id -u)" -eq 0 ] && as_user=(runuser -u nobody -- env TMPDIR=/tmp)

cluster_run() { # nodes threshold count -> total Ir of the cluster and the coordinator
  local dir="$work/cluster-$1-$2-$3"
  mkdir -p "$dir" && chmod 1777 "$dir"
  local cg="valgrind --tool=callgrind --callgrind-out-file=$dir/%p.cg"
  "${as_user[@]}" env FROSTGATE_DEV_WRAP="$cg" $cg "$bin" bench --nodes "$1" --threshold "$2" --concurrency 1 --count "$3" --no-pure --json \
    >"$dir/bench.json" 2>"$dir/bench.log" || { tail -20 "$dir/bench.log" >&2; exit 1; }
  total "$dir"
}

pure_run() { # nodes threshold count -> total Ir
  local dir="$work/pure-$1-$2-$3"
  mkdir -p "$dir"
  valgrind --tool=callgrind --callgrind-out-file="$dir/%p.cg" "$bin" bench --nodes "$1" --threshold "$2" \
    --concurrency 1 --count "$3" --pure-only --json >"$dir/out.json" 2>"$dir/log" || { tail -20 "$dir/log" >&2; exit 1; }
  total "$dir"
}

split=""
echo "| cluster | frostgate instructions / signature (all processes) | pure frost-secp256k1-tr | ratio |"
echo "|---|---|---|---|"
for size in $sizes; do
  n=${size%%:*}; t=${size##*:}
  c1=$(cluster_run "$n" "$t" "$n1"); c2=$(cluster_run "$n" "$t" "$n2")
  p1=$(pure_run "$n" "$t" "$n1"); p2=$(pure_run "$n" "$t" "$n2")
  per=$(( (c2 - c1) / (n2 - n1) )); pure=$(( (p2 - p1) / (n2 - n1) ))
  ratio=$(awk -v a="$per" -v b="$pure" 'BEGIN { printf "%.1f", a / b }')
  printf '| %s-of-%s | %s | %s | %sx |\n' "$t" "$n" "$(numfmt --grouping "$per")" "$(numfmt --grouping "$pure")" "$ratio"
  split="$split| $t-of-$n"
  for kind in enclave host coordinator; do
    k1=$(kind_total "$work/cluster-$n-$t-$n1" "$kind"); k2=$(kind_total "$work/cluster-$n-$t-$n2" "$kind")
    split="$split | $(( (k2 - k1) / (n2 - n1) ))"
  done
  split="$split |"$'\n'
done
echo
echo "| cluster | all enclaves | all hosts | coordinator |"
echo "|---|---|---|---|"
printf '%s' "$split"

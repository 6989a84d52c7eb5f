#!/usr/bin/env bash
# Model-checks frostgate's commit protocol (scripts/model/commit.pml) with spin, exhaustively.
# See scripts/model/README.md for what the model covers.
#
# Each run below names the properties checked, the model variant, the fault budget and what
# must come out:
#   pass  exhaustive search, no violation
#   FAIL  the checker must find this violation (a known finding of the code as it is, or a
#         deliberately broken variant that shows the property is not vacuous); its
#         counterexample is printed
# Any other outcome (an unexpected violation, a missing one, an incomplete search) makes the
# script exit non-zero.  Works in a temporary directory; leaves no file behind.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
model="$here/model/commit.pml"

if ! command -v spin >/dev/null 2>&1; then
  echo "spin is missing: installing it (apt-get)"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get install -y spin >/dev/null 2>&1 || { $sudo apt-get update >/dev/null && $sudo apt-get install -y spin >/dev/null; }
fi
command -v gcc >/dev/null 2>&1 || { echo "error: gcc is required" >&2; exit 2; }
echo "$(spin -V)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$model" "$work/commit.pml"
cd "$work"

started=$(date +%s)
spin -a commit.pml >/dev/null
# One pan for every run: the configuration is read from the environment (MODEL_*).
# -DCOLLAPSE compresses stored states (still exhaustive); -DMEMLIM caps memory at 1 GiB.
gcc -O2 -w -DSAFETY -DNOFAIR -DCOLLAPSE -DMEMLIM=1024 -o pan pan.c
echo "pan compiled in $(( $(date +%s) - started ))s"

# run: id, property bits, variant bits, fault budget, round-2 requests, names, expectation
# property bits: P1 1, P2a 2, P2b 4, P3 8, P4 16, P5 32
# variant bits:  attacker 1, compaction 2, FIX_LOAD 4, FIX_SNAPSHOT 8,
#                BROKEN_RELEASE_BEFORE_DURABLE 16, BROKEN_RELEASE_BEFORE_ANCHOR 32
status=0
printf '\n%-3s %-17s %-34s %6s %4s %9s %6s %7s  %s\n' run properties variant faults reqs states depth time result
run() {
  local id=$1 props=$2 variant=$3 maxf=$4 maxr=$5 pnames=$6 vnames=$7 expect=$8 pattern=${9:-}
  local out errors states depth secs verdict
  export MODEL_PROPS=$props MODEL_VARIANT=$variant MODEL_MAXF=$maxf MODEL_MAXR=$maxr
  out=$(./pan -m200000 2>&1) || true
  errors=$(sed -n 's/.*errors: \([0-9]*\).*/\1/p' <<<"$out" | head -1)
  states=$(sed -n 's/^ *\([0-9]*\) states, stored.*/\1/p' <<<"$out" | head -1)
  depth=$(sed -n 's/.*depth reached \([0-9]*\).*/\1/p' <<<"$out" | head -1)
  secs=$(sed -n 's/^pan: elapsed time \([0-9.e+-]*\) seconds.*/\1/p' <<<"$out" | head -1)
  if grep -qE 'max search depth too small|MEMLIM|out of memory' <<<"$out"; then
    verdict="UNEXPECTED: incomplete search"; status=1
  elif [ "$expect" = pass ] && [ "${errors:-x}" = 0 ]; then
    verdict="pass (exhaustive, no violation)"
  elif [ "$expect" = fail ] && [ "${errors:-0}" != 0 ] && grep -qF -- "$pattern" <<<"$out"; then
    verdict="violation found, as expected"
  else
    verdict="UNEXPECTED (errors: ${errors:-?})"; status=1
  fi
  printf '%-3s %-17s %-34s %6s %4s %9s %6s %6ss  %s\n' "$id" "$pnames" "$vnames" "$maxf" "$maxr" "${states:-?}" "${depth:-?}" "${secs:-?}" "$verdict"
  if [ "${errors:-0}" != 0 ]; then
    grep -m1 'assertion violated' <<<"$out" | sed 's/^/       /'
    if [ -f commit.pml.trail ]; then
      ./pan -r 2>&1 \
        | sed -n 's/^EV //p' | grep -v '^config' | sed 's/^/       | /'
      rm -f commit.pml.trail
    fi
  fi
}

echo
echo "-- the code as it is: the guarantees that hold"
run 1  27 1  2 3 "P1 P2a P3 P4"     "code; attacker"                  pass
run 2  11 2  2 3 "P1 P2a P3"        "code; compaction"                pass
run 3  11 3  1 2 "P1 P2a P3"        "code; attacker, compaction"      pass
echo
echo "-- the code as it is: findings (counterexamples)"
run F1 4  0  0 3 "P2b"              "code; no fault at all"           fail "assertion violated attacked"
run F2 16 2  1 3 "P4"               "code; compaction"                fail "(released)||mk"
run F3 32 0  1 3 "P5"               "code"                            fail "m_prev==rmac[hi]"
echo
echo "-- the proposed fixes (FIX_LOAD for F1, FIX_SNAPSHOT for F2)"
run 4  31 14 2 3 "P1 P2a P2b P3 P4" "fixes; compaction"               pass
run 5  31 15 1 3 "P1 P2a P2b P3 P4" "fixes; attacker, compaction"     pass
echo
echo "-- deliberately broken variants: the checker must catch them"
run X1 1  16 1 3 "P1"               "release before durable"          fail "relpkg==p"
run X2 16 33 1 3 "P4"               "release before anchor; attacker" fail "(released)||mk"

echo
echo "total $(( $(date +%s) - started ))s"
if [ "$status" -ne 0 ]; then
  echo "model check: UNEXPECTED OUTCOME" >&2
  exit 1
fi
echo "model check: every outcome as expected"

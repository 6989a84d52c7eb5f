#!/usr/bin/env bash
# Model-checks frostgate's commit protocol (scripts/model/commit.pml) with spin, exhaustively.
# See scripts/model/README.md for what the model covers.
#
# Each run below names the properties checked, the model variant, the fault budget and what
# must come out:
#   pass  exhaustive search, no violation
#   FAIL  the checker must find this violation (a residual of the code as it is, a pre-fix
#         behaviour kept as a variant, or a deliberately broken variant: each shows that its
#         property is not vacuous); its counterexample is printed
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

# run: id, property bits, variant bits, fault budget, round-2 requests, names, expectation, the
# assertion a FAIL must hit
# property bits: P1 1, P2a 2, P2b 4, P3 8, P4 16, P5 32, P5s 64, P6 128, P7 256
# variant bits:  attacker 1, compaction 2, PRE_FIX_LIVE 4, PRE_FIX_HOLD 8, PRE_FIX_SEED 16,
#                PRE_FIX_ADOPT 32, PRE_FIX_REFUSAL 64, PRE_FIX_SNAPSHOT 128,
#                BROKEN_RELEASE_BEFORE_DURABLE 256, BROKEN_RELEASE_BEFORE_ANCHOR 512
# PRE_FIX_LOAD = 4|8|16|32 (the load path of 1951a03)
status=0
runs=0
unexpected=""
printf '\n%-3s %-24s %-34s %6s %4s %9s %6s %7s  %s\n' run properties variant faults reqs states depth time result
run() {
  local id=$1 props=$2 variant=$3 maxf=$4 maxr=$5 pnames=$6 vnames=$7 expect=$8 pattern=${9:-}
  local out errors states depth secs verdict
  export MODEL_PROPS=$props MODEL_VARIANT=$variant MODEL_MAXF=$maxf MODEL_MAXR=$maxr
  out=$(./pan -m200000 2>&1) || true
  errors=$(sed -n 's/.*errors: \([0-9]*\).*/\1/p' <<<"$out" | head -1)
  states=$(sed -n 's/^ *\([0-9]*\) states, stored.*/\1/p' <<<"$out" | head -1)
  depth=$(sed -n 's/.*depth reached \([0-9]*\).*/\1/p' <<<"$out" | head -1)
  secs=$(sed -n 's/^pan: elapsed time \([0-9.e+-]*\) seconds.*/\1/p' <<<"$out" | head -1)
  runs=$((runs + 1))
  if grep -qE 'max search depth too small|MEMLIM|out of memory' <<<"$out"; then
    verdict="UNEXPECTED: incomplete search"; status=1; unexpected="$unexpected $id"
  elif [ "$expect" = pass ] && [ "${errors:-x}" = 0 ]; then
    verdict="pass (exhaustive, no violation)"
  elif [ "$expect" = fail ] && [ "${errors:-0}" != 0 ] && grep -qF -- "$pattern" <<<"$out"; then
    verdict="violation found, as expected"
  else
    verdict="UNEXPECTED (errors: ${errors:-?})"; status=1; unexpected="$unexpected $id"
  fi
  printf '%-3s %-24s %-34s %6s %4s %9s %6s %6ss  %s\n' "$id" "$pnames" "$vnames" "$maxf" "$maxr" "${states:-?}" "${depth:-?}" "${secs:-?}" "$verdict"
  if [ "${errors:-0}" != 0 ]; then
    { grep -m1 'assertion violated' <<<"$out" || true; } | sed 's/^/       /'
    if [ -f commit.pml.trail ]; then
      { ./pan -r 2>&1 || true; } \
        | sed -n 's/^EV //p' | { grep -v '^config' || true; } | sed 's/^/       | /'
      rm -f commit.pml.trail
    fi
  fi
}

all="P1 P2a P2b P3 P4 P5 P6 P7"
echo
echo "-- the code: the guarantees hold"
run 1  447 1   2 3 "$all" "code; attacker"                    pass
run 2  447 2   2 3 "$all" "code; compaction"                  pass
run 3  447 3   1 3 "$all" "code; attacker, compaction"        pass
echo
echo "-- the code: what remains (recovered; see README), counterexamples"
run R1 64  0   1 3 "P5s"  "code"                              fail "m_prev==rmac[hi]"
echo
echo "-- pre-fix behaviours (each reverts one fix): the checker must catch them"
run F1 4   60  0 3 "P2b"  "PRE_FIX_LOAD (1951a03), no fault"  fail "assertion violated attacked"
run F1h 4  8   1 3 "P2b"  "PRE_FIX_HOLD only"                 fail "assertion violated attacked"
run F2 16  130 1 3 "P4"   "PRE_FIX_SNAPSHOT; compaction"      fail "(released)||mk"
run F3 32  64  1 3 "P5"   "PRE_FIX_REFUSAL"                   fail "(stuck)||attacked"
run F4 128 16  1 3 "P6"   "PRE_FIX_SEED"                      fail "aver!=a_first"
run F5 256 1024 1 1 "P7"  "PRE_FIX_CLOSED"                    fail "ad_conn==connid"
echo
echo "-- pre-fix behaviours the model does not tell apart (see README)"
run 4  447 6   2 3 "$all" "PRE_FIX_LIVE only; compaction"     pass
run 5  191 34  2 3 "P1 P2a P2b P3 P4 P5 P6" "PRE_FIX_ADOPT only; compaction" pass
echo
echo "-- deliberately broken variants: the checker must catch them"
run X1 1   256 1 3 "P1"   "release before durable"            fail "relpkg==p"
run X2 16  513 1 3 "P4"   "release before anchor; attacker"   fail "(released)||mk"

echo
echo "total $(( $(date +%s) - started ))s"
if [ "$status" -ne 0 ]; then
  echo "model: UNEXPECTED OUTCOME in run(s)$unexpected ($runs runs)" >&2
  exit 1
fi
echo "model: $runs runs as expected (code: P1-P7 hold; residual R1 shown; broken and pre-fix variants caught)"

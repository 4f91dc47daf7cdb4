#!/usr/bin/env bash
# Generates, compiles and runs a Spin verifier for one model and one bound,
# and checks the outcome.
#
# Usage: check.sh MODEL.pml EXPECT NAME [-DNAME=VALUE ...] [-O2] [-MMIB] [-XTEXT]
#   EXPECT  pass: the exhaustive search must finish with no error;
#           fail: Spin must find a violation (a deliberately broken variant);
#                 the counterexample's first lines are printed.
#   -X...   with fail: the violation Spin reports must contain TEXT (e.g. the
#           failed assertion's expression), so that a broken variant fails
#           for the reason it was made for, not for another
#   -D...   the bound and variant, passed to `spin -a` (see the model's header)
#   -O...   optimisation of the verifier (default -O0: it compiles in 2 s
#           instead of 15 s, and small searches finish sooner that way; give
#           -O2 for searches of more than a few million states)
#   -M...   the verifier's memory limit in MiB (default 4096); a search that
#           reaches it is incomplete, and fails a pass check
# Environment: SHMBUS_SPIN_MEMLIM (MiB, overrides -M), SHMBUS_SPIN_DEPTH
# (default 3000000), CC (default cc).
# Prints one summary line: states stored, transitions, depth, errors, time.
set -uo pipefail
model="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
expect="$2" name="$3"
shift 3
defines=()
opt=-O0
memlim=4096
want=""
for a in "$@"; do
  case "$a" in
    -O*) opt="$a" ;;
    -M*) memlim="${a#-M}" ;;
    -X*) want="${a#-X}" ;;
    *) defines+=("$a") ;;
  esac
done
memlim="${SHMBUS_SPIN_MEMLIM:-$memlim}"
depth="${SHMBUS_SPIN_DEPTH:-3000000}"

command -v spin >/dev/null || { echo "model $name: spin is not installed (apt-get install spin)"; exit 1; }
work="$(mktemp -d "${TMPDIR:-/tmp}/shmbus-spin.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 1

if ! spin -a "${defines[@]}" "$model" > spin.log 2>&1; then
  echo "model $name: spin -a failed:"; cat spin.log; exit 1
fi
# SAFETY: assertions and end states only; COLLAPSE: compressed state storage.
if ! "${CC:-cc}" "$opt" -w -DSAFETY -DCOLLAPSE -DMEMLIM="$memlim" -o pan pan.c > cc.log 2>&1; then
  echo "model $name: compiling the verifier failed:"; cat cc.log; exit 1
fi
./pan -m"$depth" -n > pan.log 2>&1
rc=$?

field() { sed -nE "s/$1/\\1/p" pan.log | head -1; }
states=$(field '^ *([0-9.e+]+) states, stored.*')
trans=$(field '^ *([0-9.e+]+) transitions.*')
dep=$(field '.*depth reached ([0-9]+).*')
errors=$(field '.*errors: ([0-9]+).*')
secs=$(field '^pan: elapsed time ([0-9.e+]+) seconds.*')
echo "model $name: ${defines[*]}: states stored ${states:-?}, transitions ${trans:-?}, depth ${dep:-?}, errors ${errors:-?}, ${secs:-?} s"

# pan stops at -DMEMLIM with "reached -DMEMLIM bound" (and "Search not
# completed", which a search stopped at its first error prints too), yet
# reports errors: 0: a pass check must not count that.
if grep -q "out of memory\|aborted\|reached -DMEMLIM bound" pan.log; then
  echo "model $name: the search ran out of memory, so it is incomplete (raise -M or SHMBUS_SPIN_MEMLIM, or lower the bound)"; tail -20 pan.log; exit 1
fi
if grep -q "max search depth too small" pan.log; then
  echo "model $name: the search was cut by its depth limit (raise SHMBUS_SPIN_DEPTH)"; exit 1
fi

case "$expect" in
  pass)
    if [ "$rc" -ne 0 ] || [ "${errors:-x}" != "0" ]; then
      echo "model $name: VIOLATION"; grep -E "pan:|assertion|invalid end" pan.log | head -5
      if ls ./*.trail >/dev/null 2>&1; then
        echo "counterexample (last steps):"
        spin -t -p -g "${defines[@]}" "$model" 2>&1 | tail -40
      fi
      exit 1
    fi ;;
  fail)
    if [ "${errors:-0}" = "0" ]; then
      echo "model $name: expected Spin to find a violation, found none"; exit 1
    fi
    if [ -n "$want" ] && ! grep -E "^pan:[0-9]" pan.log | grep -qF -- "$want"; then
      echo "model $name: Spin found a violation, but not the expected one ($want):"
      grep -E "^pan:[0-9]" pan.log | head -3; exit 1
    fi
    echo "model $name: violation found, as expected:"
    grep -E "^pan:[0-9]" pan.log | head -3 ;;
  *) echo "check.sh: EXPECT must be pass or fail"; exit 2 ;;
esac

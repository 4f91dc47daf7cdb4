#!/usr/bin/env bash
# Instructions per publish and per poll: the CPU budget of the hot paths,
# counted by callgrind in one thread (bench/insn_driver.cpp), so the figures
# are exact and the same on a busy machine as on a quiet one.
#
#   scripts/insn.sh [--no-build] [--driver PATH] [--ops N] [--json FILE]
#
#   --no-build     use the driver already in the build directory
#   --driver PATH  use this driver binary (implies --no-build; the tests)
#   --ops N      operations per measured function (default 100000)
#   --json FILE  also write the figures as JSON (scripts/bench.sh puts them
#                in the report)
#
# For each measured function of the driver (publish 64 B and 8 B, copy-out
# poll 64 B and 8 B, and whatever the driver's table lists), one callgrind
# run collects only inside that function (--toggle-collect), library calls
# included; the script prints the instructions per operation, less the
# driver's loop overhead (the same loop with an empty body), e.g.
#   publish 64B: 287 insn/op
# Under valgrind, clock_gettime is a system call, not the vDSO: a clock read
# counts as its glibc wrapper only (about 10 instructions; the vDSO's own
# are about 30-50 more, and time, not counted here).
#
# Environment: BUILD_DIR (default build-bench, as scripts/bench.sh),
# BUILD_TYPE (default RelWithDebInfo).
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=1
DRIVER=""
OPS=100000
JSON=""
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) BUILD=0 ;;
    --driver) DRIVER="$2"; BUILD=0; shift ;;
    --ops) OPS="$2"; shift ;;
    --json) JSON="$2"; shift ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "insn.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

BUILD_DIR="${BUILD_DIR:-build-bench}"
BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}"
DRIVER="${DRIVER:-$BUILD_DIR/bench/shmbus_insn_driver}"

command -v valgrind >/dev/null || { echo "insn.sh: valgrind is not installed (scripts/setup.sh installs it)" >&2; exit 1; }
if [ "$BUILD" = 1 ]; then
  cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE="$BUILD_TYPE" -DSHMBUS_BUILD_BENCHMARKS=ON \
    -DSHMBUS_BUILD_EXAMPLES=OFF -DSHMBUS_BUILD_TOOLS=OFF >/dev/null
  cmake --build "$BUILD_DIR" -j "${JOBS:-$(nproc)}" --target shmbus_insn_driver >/dev/null
fi
[ -x "$DRIVER" ] || { echo "insn.sh: $DRIVER is missing (drop --no-build)" >&2; exit 1; }

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# A native run first: the driver checks every message, and lists its functions.
"$DRIVER" --ops "$OPS" > "$TMP/ops.txt"

# One callgrind run per function: "Collected" is then that function's total.
while read -r _ fn _; do
  valgrind --tool=callgrind --callgrind-out-file="$TMP/$fn.cg" --collect-atstart=no \
    --toggle-collect="$fn" "$DRIVER" --ops "$OPS" > /dev/null 2> "$TMP/$fn.err" ||
    { cat "$TMP/$fn.err" >&2; echo "insn.sh: the callgrind run of $fn failed" >&2; exit 1; }
  sed -n 's/^==[0-9]*== Collected : \([0-9]*\)$/\1/p' "$TMP/$fn.err" > "$TMP/$fn.ir"
  [ -s "$TMP/$fn.ir" ] || { echo "insn.sh: no instruction count for $fn in callgrind's output" >&2; exit 1; }
done < "$TMP/ops.txt"

PY=/usr/bin/python3
[ -x "$PY" ] || PY="$(command -v python3)"
"$PY" - "$TMP" "$OPS" "$(valgrind --version)" "$JSON" <<'EOF'
import json, os, sys
tmp, ops, version, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
rows = []
for line in open(os.path.join(tmp, "ops.txt")):
    _, fn, role, n, label = line.rstrip("\n").split(" ", 4)
    ir = int(open(os.path.join(tmp, fn + ".ir")).read().split()[0])
    rows.append({"function": fn, "role": role, "label": label, "ops": int(n), "ir": ir, "ir_per_op": ir / int(n)})
loop = next(r["ir_per_op"] for r in rows if r["role"] == "loop")
print(f"instructions per operation (callgrind, one thread, {ops} operations each; "
      f"less the loop overhead of {loop:.1f}):")
for r in rows:
    if r["role"] != "loop":
        r["insn_per_op"] = r["ir_per_op"] - loop
        print(f"  {r['label']}: {r['insn_per_op']:.0f} insn/op")
if out:
    with open(out, "w") as f:
        json.dump({"program": "insn", "valgrind": version, "ops": ops, "loop_insn_per_op": loop,
                   "results": [r for r in rows if r["role"] != "loop"]}, f, indent=1)
        f.write("\n")
EOF

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
# poll 64 B and 8 B, and whatever the driver's table lists), the script
# prints two figures per operation, for each timestamp source a publisher
# may use (tsc: counter ticks, SHMBUS_TSC=1; realtime: its fallback,
# SHMBUS_TSC=0):
# "In the call" counts from the public call's entry to its return, library
# calls included (a callgrind run that collects only inside that call, with
# only that function run): the budget the hot-path targets are about.
# "With the caller" counts the whole measured loop (a run that collects only
# inside the driver's function), less the loop overhead (the same loop with
# an empty body): it adds the caller's side, building the arguments (a
# default MessageMeta, a Message), the call and the check of the result.
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

# Two callgrind runs per function: "Collected" is then, in the first, that
# function's total (the caller's loop and the calls), and in the second,
# with only that function run, the total inside the public call it measures.
# Both timestamp sources a publisher may use: the counter (SHMBUS_TSC=1, the
# default source where the kernel trusts the counter) and the realtime clock
# (SHMBUS_TSC=0, its fallback elsewhere).
collected() {  # FILE.err -> FILE.ir, or fail
  sed -n 's/^==[0-9]*== Collected : \([0-9]*\)$/\1/p' "$1.err" > "$1.ir"
  [ -s "$1.ir" ] && [ "$(cat "$1.ir")" != 0 ] || { echo "insn.sh: no instruction count in $1.err" >&2; exit 1; }
}
for src in tsc realtime; do
  tsc=1
  [ "$src" = realtime ] && tsc=0
  while read -r _ fn role _ api _; do
    f="$TMP/$src.$fn"
    SHMBUS_TSC=$tsc valgrind --tool=callgrind --callgrind-out-file="$f.cg" --collect-atstart=no \
      --toggle-collect="$fn" "$DRIVER" --ops "$OPS" > /dev/null 2> "$f.err" ||
      { cat "$f.err" >&2; echo "insn.sh: the callgrind run of $fn ($src) failed" >&2; exit 1; }
    collected "$f"
    [ "$role" = loop ] && continue
    SHMBUS_TSC=$tsc valgrind --tool=callgrind --callgrind-out-file="$f.api.cg" --collect-atstart=no \
      --toggle-collect="$api" "$DRIVER" --ops "$OPS" --only "$fn" > "$f.api.ops" 2> "$f.api.err" ||
      { cat "$f.api.err" >&2; echo "insn.sh: the callgrind run of $api for $fn ($src) failed" >&2; exit 1; }
    collected "$f.api"
  done < "$TMP/ops.txt"
done

PY=/usr/bin/python3
[ -x "$PY" ] || PY="$(command -v python3)"
"$PY" - "$TMP" "$OPS" "$(valgrind --version)" "$JSON" <<'EOF'
import json, os, sys
tmp, ops, version, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def read_ir(name):
    return int(open(os.path.join(tmp, name + ".ir")).read().split()[0])
rows = []
loops = {}
for src in ("tsc", "realtime"):
    for line in open(os.path.join(tmp, "ops.txt")):
        _, fn, role, n, api, label = line.rstrip("\n").split(" ", 5)
        ir = read_ir(f"{src}.{fn}")
        row = {"function": fn, "role": role, "label": label, "timestamps": src, "ops": int(n), "ir": ir,
               "ir_per_op": ir / int(n)}
        if role == "loop":
            loops[src] = row["ir_per_op"]
            continue
        only = open(os.path.join(tmp, f"{src}.{fn}.api.ops")).read().split()
        row["api"] = api
        row["api_ops"] = int(only[3])
        row["api_ir"] = read_ir(f"{src}.{fn}.api")
        row["in_call_per_op"] = row["api_ir"] / row["api_ops"]
        row["insn_per_op"] = row["ir_per_op"] - loops[src]
        rows.append(row)
loop = loops["tsc"]
print(f"instructions per operation (callgrind, one thread, {ops} operations each):")
print("  in the call: from the public call's entry to its return, library calls included")
print(f"  with the caller: the measured loop, less its overhead of {loop:.1f} (the empty loop)")
print("  timestamps: tsc = counter ticks (the default source where the kernel trusts the counter),")
print("  realtime = CLOCK_REALTIME (its fallback; under valgrind a clock read counts as its glibc wrapper)")
print(f"  {'operation':<22} {'tsc: in call':>12} {'with caller':>12} {'realtime: in call':>18} {'with caller':>12}")
by = {(r["timestamps"], r["label"]): r for r in rows}
for r in rows:
    if r["timestamps"] != "tsc":
        continue
    q = by[("realtime", r["label"])]
    print(f"  {r['label']:<22} {r['in_call_per_op']:>12.0f} {r['insn_per_op']:>12.0f} "
          f"{q['in_call_per_op']:>18.0f} {q['insn_per_op']:>12.0f}")
if out:
    with open(out, "w") as f:
        json.dump({"program": "insn", "valgrind": version, "ops": ops, "loop_insn_per_op": loop,
                   "results": rows}, f, indent=1)
        f.write("\n")
EOF

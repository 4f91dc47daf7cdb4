#!/usr/bin/env bash
# Runs every shmbus benchmark and writes the report: one command.
#
#   scripts/bench.sh [--quick] [--out DIR] [--update-docs] [--no-build]
#
#   (default)      the full suite, about 10 minutes on 2 cores:
#                  ping-pong (floor, the minimal SPSC ring, shmbus, every
#                  baseline) at 8 B .. 64 KiB, 10^5 timed round trips per
#                  transport and size; the sleeping run (blocking waiters
#                  against eventfd); throughput, fan-out and group scenarios;
#                  micro-benchmarks; instructions per publish and per poll
#                  (scripts/insn.sh, where valgrind is installed).
#   --quick        the same programs with small counts (about a minute): to try
#                  things out, not to quote.
#   --out DIR      where the JSON, results.md and the PNGs go
#                  (default build-bench/results).
#   --update-docs  also copy the PNGs to docs/img/ and replace the results
#                  section of docs/benchmarks.md with this run's tables.
#   --no-build     use the binaries already in the build directory.
#
# Environment: BUILD_DIR (default build-bench), BUILD_TYPE (default
# RelWithDebInfo, as the library's own default), PINGPONG_SIZES,
# PINGPONG_ROUNDS, SLEEP_GAP_US, BENCH_NICE (default -20: the benchmarks run
# at this nice value, in a session (autogroup) of their own, where allowed, so
# that other work on a shared machine preempts them less; every transport
# alike; 0 disables), ARCHIVE_DIR (default /var/tmp: where the archive
# benchmark writes; put it on the disk an archive would use).
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
UPDATE_DOCS=0
BUILD=1
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --update-docs) UPDATE_DOCS=1 ;;
    --no-build) BUILD=0 ;;
    --out) OUT="$2"; shift ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "bench.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

BUILD_DIR="${BUILD_DIR:-build-bench}"
BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}"
OUT="${OUT:-$BUILD_DIR/results}"
JOBS="${JOBS:-$(nproc)}"

# Debian's matplotlib installs for the system interpreter, whatever python3
# comes first on PATH.
PY=/usr/bin/python3
[ -x "$PY" ] || PY="$(command -v python3)"

if [ "$BUILD" = 1 ]; then
  bash scripts/setup.sh
  if ! "$PY" -c 'import matplotlib' 2>/dev/null; then
    echo "bench.sh: installing python3-matplotlib for the plots"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y -qq --no-install-recommends python3-matplotlib >/dev/null ||
      { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends python3-matplotlib >/dev/null; }
  fi
  # Only the library and the benchmarks: nothing else can break this build.
  cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE="$BUILD_TYPE" -DSHMBUS_BUILD_BENCHMARKS=ON \
    -DSHMBUS_BUILD_EXAMPLES=OFF -DSHMBUS_BUILD_TOOLS=OFF >/dev/null
  for t in shmbus_pingpong shmbus_throughput shmbus_micro_bench shmbus_insn_driver shmbus_archive_bench; do
    cmake --build "$BUILD_DIR" -j "$JOBS" --target "$t" >/dev/null
  done
fi
BIN="$BUILD_DIR/bench"
for b in shmbus_pingpong shmbus_throughput shmbus_micro_bench shmbus_archive_bench; do
  [ -x "$BIN/$b" ] || { echo "bench.sh: $BIN/$b is missing (drop --no-build)" >&2; exit 1; }
done

mkdir -p "$OUT"
if [ "$QUICK" = 1 ]; then
  SIZES="${PINGPONG_SIZES:-64,4096}"
  ROUNDS="${PINGPONG_ROUNDS:-20000}"; WARMUP=2000
  SLEEP_ROUNDS=5000
  TP_ARGS=(--quick)
  MICRO_ARGS=(--benchmark_min_time=0.05)
  INSN_OPS=20000
  ARCHIVE_ARGS=(--quick)
else
  SIZES="${PINGPONG_SIZES:-8,64,512,4096,65536}"
  ROUNDS="${PINGPONG_ROUNDS:-100000}"; WARMUP=10000
  SLEEP_ROUNDS=100000
  TP_ARGS=()
  MICRO_ARGS=(--benchmark_min_time=0.1 --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
              --benchmark_enable_random_interleaving=true)
  INSN_OPS=100000
  ARCHIVE_ARGS=()
fi
GAP="${SLEEP_GAP_US:-200}"
NICE="${BENCH_NICE:--20}"
# Priority: the kernel groups tasks by session (autogroup), and nice only
# weighs tasks within a group, so each benchmark runs in a session of its own
# whose group gets the nice value too. Spinning benchmarks on a shared 2-core
# machine otherwise lose their CPU to other sessions for milliseconds at a time.
PRIO=0
if [ "$NICE" != 0 ] && [ "$(nice -n "$NICE" nice 2>/dev/null)" = "$NICE" ]; then
  PRIO=1
  echo "bench.sh: running the benchmarks at nice $NICE, each in its own session (autogroup)"
fi
prio() {
  if [ "$PRIO" = 1 ]; then
    setsid -w bash -c 'echo "$0" > /proc/self/autogroup 2>/dev/null; exec nice -n "$0" "$@"' "$NICE" "$@"
  else
    "$@"
  fi
}

read -r load1 _ < /proc/loadavg
echo "bench.sh: $(nproc) CPUs, load average $load1 at the start; results in $OUT"
if awk -v l="$load1" 'BEGIN { exit !(l > 0.5) }'; then
  echo "bench.sh: warning: the machine is busy (load $load1): spinning benchmarks share their CPUs" \
       "with other work; quote ratios, and re-run on a quiet machine for the record" >&2
fi
start=$(date +%s)

echo "== ping-pong latency: sizes $SIZES, $ROUNDS round trips per transport and size"
prio "$BIN/shmbus_pingpong" --rounds "$ROUNDS" --warmup "$WARMUP" --sizes "$SIZES" --json "$OUT/pingpong.json"

echo "== ping-pong, sleeping waiters (${GAP} us pause before each round trip)"
prio "$BIN/shmbus_pingpong" --rounds "$SLEEP_ROUNDS" --warmup $((SLEEP_ROUNDS / 10)) --size 64 --gap-us "$GAP" \
  --transports shmbus_block,eventfd,mc_blocking --json "$OUT/pingpong_sleep.json"

echo "== throughput"
prio "$BIN/shmbus_throughput" "${TP_ARGS[@]}" --json "$OUT/throughput.json"

echo "== disk archive (in ${ARCHIVE_DIR:-/var/tmp})"
prio "$BIN/shmbus_archive_bench" "${ARCHIVE_ARGS[@]}" --dir "${ARCHIVE_DIR:-/var/tmp}" --json "$OUT/archive.json"

echo "== micro-benchmarks"
prio "$BIN/shmbus_micro_bench" "${MICRO_ARGS[@]}" --benchmark_out="$OUT/micro.json" --benchmark_out_format=json

# Exact counts, not timings: no priority needed, and a busy machine gives the same.
rm -f "$OUT/insn.json"
if command -v valgrind >/dev/null && [ -x "$BIN/shmbus_insn_driver" ]; then
  echo "== instructions per operation (callgrind)"
  bash scripts/insn.sh --driver "$BIN/shmbus_insn_driver" --ops "$INSN_OPS" --json "$OUT/insn.json"
else
  echo "bench.sh: valgrind or $BIN/shmbus_insn_driver missing: no instruction counts (scripts/setup.sh installs valgrind)" >&2
fi

read -r load1 _ < /proc/loadavg
echo "== report ($(( $(date +%s) - start )) s of benchmarks; load average $load1 at the end)"
"$PY" bench/report.py --in "$OUT" --out "$OUT" --img-prefix ""

if [ "$UPDATE_DOCS" = 1 ]; then
  "$PY" bench/report.py --in "$OUT" --out "$OUT/docs" --img-prefix img/ >/dev/null
  mkdir -p docs/img
  cp "$OUT"/docs/*.png docs/img/
  "$PY" - "$OUT/docs/results.md" docs/benchmarks.md <<'EOF'
import sys
results = open(sys.argv[1]).read()
doc_path = sys.argv[2]
doc = open(doc_path).read()
begin, end = "<!-- results:begin -->", "<!-- results:end -->"
if begin not in doc or end not in doc:
    sys.exit(f"bench.sh: {doc_path} has no {begin} ... {end} section")
head, rest = doc.split(begin, 1)
_, tail = rest.split(end, 1)
open(doc_path, "w").write(head + begin + "\n" + results + end + tail)
print(f"bench.sh: updated {doc_path} and docs/img/")
EOF
fi
echo "bench.sh: done: $OUT/results.md"

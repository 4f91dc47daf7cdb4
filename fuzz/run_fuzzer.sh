#!/usr/bin/env bash
# Runs one libFuzzer target for a bounded time, from the checked-in seed
# corpus and regression inputs, and fails if it finds a crash, a leak, an
# out-of-bounds access, undefined behaviour or an input slower than the
# per-input timeout.
#
# Usage: run_fuzzer.sh FUZZER TARGET SECONDS FUZZ_SOURCE_DIR [libFuzzer args...]
#   FUZZER           the libFuzzer binary (shmbus_fuzz_<target>)
#   TARGET           header | channel | probe | archive (names the corpus directories)
#   SECONDS          -max_total_time
#   FUZZ_SOURCE_DIR  fuzz/ in the source tree (corpus/<target>, regressions/<target>)
# Environment:
#   SHMBUS_FUZZ_CORPUS  a directory that keeps the inputs the run discovers
#                       (default: a temporary directory, deleted afterwards)
#   SHMBUS_FUZZ_JOBS    parallel fuzzing processes (default 1)
# New inputs never go into the source tree: the checked-in corpus is read only.
# A crash leaves its input under the artifact directory printed below; copy
# it to fuzz/regressions/<target>/ once the bug is fixed.
set -uo pipefail
fuzzer="$1" target="$2" seconds="$3" src="$4"
shift 4

work="$(mktemp -d "${TMPDIR:-/tmp}/shmbus-fuzz-${target}.XXXXXX")"
corpus="${SHMBUS_FUZZ_CORPUS:-$work/corpus}"
mkdir -p "$corpus" "$work/artifacts"
dirs=("$corpus")
for d in "$src/corpus/$target" "$src/regressions/$target"; do
  [ -d "$d" ] && dirs+=("$d")
done

jobs="${SHMBUS_FUZZ_JOBS:-1}"
par=()
if [ "$jobs" -gt 1 ]; then par=(-fork="$jobs"); fi

echo "fuzz $target: ${seconds}s from ${dirs[*]}"
"$fuzzer" "${dirs[@]}" "${par[@]}" \
  -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
  -print_final_stats=1 -artifact_prefix="$work/artifacts/" "$@" 2>&1 | tail -n 200
rc=${PIPESTATUS[0]}

# A fuzzing process killed by a finding (or a timeout) leaves its private
# bus behind: remove the segments of fuzz buses whose process is gone.
for f in /dev/shm/shmbus.fz[0-9]*.* /dev/shm/shmbus-dedup.fz[0-9]*.*; do
  [ -e "$f" ] || continue
  pid="${f#*.fz}"; pid="${pid%%.*}"
  kill -0 "$pid" 2>/dev/null || rm -f "$f"
done

if [ "$rc" -ne 0 ]; then
  echo "fuzz $target: FAILED (exit $rc); reproducer(s) kept in $work/artifacts:"
  ls -l "$work/artifacts"
  echo "replay one with: $fuzzer $work/artifacts/<file>"
  exit 1
fi
rm -rf "$work"
echo "fuzz $target: no finding in ${seconds}s"

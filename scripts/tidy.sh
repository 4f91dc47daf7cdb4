#!/usr/bin/env bash
# Runs clang-tidy (the checks in .clang-tidy) on the library's sources: api/,
# bus/, shm/ and the headers they include from there and from include/shmbus/.
# Fails on any finding. Uses the `tidy` configure preset (build-tidy/, clang,
# the library only): it is configured, not built, for its compile_commands.json.
#   scripts/tidy.sh              all of the library
#   scripts/tidy.sh bus/ring     only the sources whose path matches a regex
set -euo pipefail
cd "$(dirname "$0")/.."

JOBS="${JOBS:-$(nproc)}"
RUN_CLANG_TIDY="${RUN_CLANG_TIDY:-run-clang-tidy}"
for tool in "$RUN_CLANG_TIDY" clang-tidy; do
  if ! command -v "$tool" >/dev/null; then
    echo "tidy: $tool not found; install the clang-tidy package (scripts/setup.sh)" >&2
    exit 2
  fi
done

cmake --preset tidy >/dev/null
root="$(pwd)"
files=("$root/(api|bus|shm)/.*\.cpp\$")
if [ $# -gt 0 ]; then
  files=()
  for f in "$@"; do files+=("$root/.*$f"); done
fi

log=build-tidy/tidy.log
status=0
"$RUN_CLANG_TIDY" -p build-tidy -quiet -j "$JOBS" "${files[@]}" >"$log" 2>&1 || status=$?

# One line per finding (a header's finding is reported once, not once per
# source that includes it), then the counts per check and per file.
# A function-size finding gets its length from the note that follows it.
findings="$(sed 's/\x1b\[[0-9;]*m//g' "$log" | awk '
  /^[^ ]+:[0-9]+:[0-9]+: (warning|error): .*\[[^]]+\]$/ { if (f != "") print f; f = $0; next }
  f != "" && / note: [0-9]+ lines including/ { sub(/.* note: /, ""); sub(/ including.*/, ""); f = f " (" $0 ")" }
  END { if (f != "") print f }' | sed "s|^$root/||" | sort -u)"
if [ -n "$findings" ]; then
  echo "$findings"
  echo "-- findings per check"
  echo "$findings" | sed -E 's/.*\[([a-z0-9.-]+)(,[^]]*)?\].*/\1/' | sort | uniq -c | sort -rn
  echo "-- findings per file"
  echo "$findings" | cut -d: -f1 | sort | uniq -c | sort -rn
  echo "tidy: $(echo "$findings" | wc -l) finding(s); full output in $log" >&2
  exit 1
fi
if [ "$status" -ne 0 ]; then
  # No finding parsed, yet clang-tidy failed: a compile error or a crash.
  tail -n 40 "$log" >&2
  echo "tidy: clang-tidy failed (exit $status) without a finding; full output in $log" >&2
  exit "$status"
fi
echo "tidy: no findings"

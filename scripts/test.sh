#!/usr/bin/env bash
# Installs what is missing, builds, and runs the default test tiers:
#   1. the normal build: unit, concurrency and multiprocess tests, the demo
#      smoke run and the benchmark smoke runs (every ctest label but `slow`);
#   2. ThreadSanitizer: the concurrency (threaded stress) tests;
#   3. AddressSanitizer + UBSan: the whole suite again (every program the
#      normal build makes, with every test but the Spin models, which check
#      Promela and not our C++);
#   4. libFuzzer: each fuzz target for 15 s.
# Opt-in slow tiers: SHMBUS_SLOW=1 scripts/test.sh (adds the `slow` label:
# 1000-trial crash soaks, the 10-minute torture soak and the large Spin
# models, in the normal build; the long fuzz runs). By hand:
#   ctest --test-dir build -L slow -LE soak    the 1000-trial tiers only
#   ctest --test-dir build -L soak             the 10-minute soak only
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

JOBS="${JOBS:-$(nproc)}"
LABEL_ARGS=(-LE slow)
if [ "${SHMBUS_SLOW:-0}" = "1" ]; then LABEL_ARGS=(); fi

build() {  # build DIR TARGETS [cmake args...]; TARGETS "all" or "a;b"
  local dir="$1" targets="$2"; shift 2
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
  if [ "$targets" = all ]; then
    cmake --build "$dir" -j "$JOBS"
  else
    local t
    for t in ${targets//;/ }; do cmake --build "$dir" -j "$JOBS" --target "$t"; done
  fi
}

echo "== normal build"
build build all
# Tests run one at a time: they spin, fork and time out on purpose, and a
# 2-core machine shared by parallel tests would only make them slower.
# Every ctest call here has --no-tests=error: a tier that selects no test
# fails instead of passing (docs/verification.md, section 3.2).
ctest --test-dir build --no-tests=error --output-on-failure "${LABEL_ARGS[@]}"

# The TSan and fuzz tiers build only the programs they run.
SAN_ARGS=(-DSHMBUS_BUILD_BENCHMARKS=OFF -DSHMBUS_BUILD_EXAMPLES=OFF -DSHMBUS_BUILD_TOOLS=OFF)

echo "== ThreadSanitizer: concurrency tests"
build build-tsan shmbus_stress_tests -DSHMBUS_SANITIZE=thread "${SAN_ARGS[@]}"
TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
  ctest --test-dir build-tsan --no-tests=error --output-on-failure -L concurrency

echo "== AddressSanitizer + UBSan: the whole suite"
# Library, tests, CLI, examples, demo, bridge, benchmarks (their smoke runs),
# the C API and package consumers (built with the same flags), the Python
# example (runtimes preloaded) and the fuzz regressions. Not the Spin models:
# they check Promela, not our code. The slow tiers (SHMBUS_SLOW=1) run in the
# normal build only.
build build-asan all -DSHMBUS_SANITIZE=address
ASAN_OPTIONS="detect_leaks=1 abort_on_error=0" UBSAN_OPTIONS="print_stacktrace=1" \
  ctest --test-dir build-asan --no-tests=error --output-on-failure -LE '^(model|model_long|slow)$'

echo "== libFuzzer (clang, ASan + UBSan): every fuzz target for 15 s"
# SHMBUS_SLOW=1 adds the long runs (label fuzz_long, SHMBUS_FUZZ_LONG_SECONDS
# per target, 1800 by default). docs/verification.md says what is fuzzed.
FUZZ_LABELS='^fuzz$'
if [ "${SHMBUS_SLOW:-0}" = "1" ]; then FUZZ_LABELS='^fuzz$|^fuzz_long$'; fi
build build-fuzz "shmbus_fuzz_header;shmbus_fuzz_channel;shmbus_fuzz_probe" \
  -DCMAKE_CXX_COMPILER=clang++ -DSHMBUS_BUILD_FUZZERS=ON "${SAN_ARGS[@]}"
ctest --test-dir build-fuzz --no-tests=error --output-on-failure -L "$FUZZ_LABELS"

echo "== all test tiers passed"

#!/usr/bin/env bash
# Installs what is missing, builds, and runs the test tiers, each with its
# CMake preset (CMakePresets.json: configure, build and test presets of one
# name, each in its own build directory):
#   normal  (preset default, build/): unit, concurrency and multiprocess
#           tests, the demo smoke run and the benchmark smoke runs (every
#           ctest label but `slow`);
#   tsan    (preset tsan, build-tsan/): ThreadSanitizer, the concurrency
#           (threaded stress) tests;
#   asan    (preset asan, build-asan/): AddressSanitizer + UBSan, the whole
#           suite again (every program the normal build makes, with every test
#           but the Spin models, which check Promela and not our C++);
#   fuzz    (preset fuzz, build-fuzz/): libFuzzer, each fuzz target for 15 s;
#   tidy    (preset tidy, build-tidy/): clang-tidy on the library
#           (scripts/tidy.sh); fails on any finding.
# All five by default (CI); name some to run only those:
#   scripts/test.sh tsan tidy
# Opt-in slow tiers: SHMBUS_SLOW=1 scripts/test.sh (adds the `slow` label:
# 1000-trial crash soaks, the 10-minute torture soak and the large Spin
# models, in the normal build; the long fuzz runs). By hand:
#   ctest --test-dir build -L slow -LE soak    the 1000-trial tiers only
#   ctest --test-dir build -L soak             the 10-minute soak only
# ccache: export CMAKE_CXX_COMPILER_LAUNCHER=ccache (and _C_) before a build
# directory's first configure; CMake reads them from the environment.
set -euo pipefail
cd "$(dirname "$0")/.."

ALL_TIERS=(normal tsan asan fuzz tidy)
TIERS=("$@")
if [ ${#TIERS[@]} -eq 0 ]; then TIERS=("${ALL_TIERS[@]}"); fi
for t in "${TIERS[@]}"; do
  case " ${ALL_TIERS[*]} " in
    *" $t "*) ;;
    *) echo "test.sh: unknown tier '$t' (tiers: ${ALL_TIERS[*]})" >&2; exit 2 ;;
  esac
done
want() { case " ${TIERS[*]} " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

bash scripts/setup.sh

JOBS="${JOBS:-$(nproc)}"
SLOW="${SHMBUS_SLOW:-0}"

# Configures PRESET and builds its build preset's targets (the TSan and fuzz
# presets name only the programs their tiers run).
build() {
  cmake --preset "$1" >/dev/null
  cmake --build --preset "$1" -j "$JOBS"
}

# Tests run one at a time: they spin, fork and time out on purpose, and a
# 2-core machine shared by parallel tests would only make them slower.
# Every test preset has noTestsAction "error" (ctest --no-tests=error): a tier
# that selects no test fails instead of passing (docs/verification.md, 3.2).

if want normal; then
  echo "== normal build"
  build default
  if [ "$SLOW" = "1" ]; then ctest --preset slow; else ctest --preset default; fi
fi

if want tsan; then
  echo "== ThreadSanitizer: concurrency tests"
  build tsan
  ctest --preset tsan
fi

if want asan; then
  echo "== AddressSanitizer + UBSan: the whole suite"
  # Library, tests, CLI, examples, demo, bridge, benchmarks (their smoke runs),
  # the C API and package consumers (built with the same flags), the Python
  # example (runtimes preloaded) and the fuzz regressions. Not the Spin models:
  # they check Promela, not our code. The slow tiers (SHMBUS_SLOW=1) run in the
  # normal build only.
  build asan
  ctest --preset asan
fi

if want fuzz; then
  echo "== libFuzzer (clang, ASan + UBSan): every fuzz target for 15 s"
  # SHMBUS_SLOW=1 adds the long runs (label fuzz_long, SHMBUS_FUZZ_LONG_SECONDS
  # per target, 1800 by default). docs/verification.md says what is fuzzed.
  build fuzz
  if [ "$SLOW" = "1" ]; then ctest --preset fuzz-long; else ctest --preset fuzz; fi
fi

if want tidy; then
  echo "== clang-tidy: the library (.clang-tidy)"
  JOBS="$JOBS" bash scripts/tidy.sh
fi

echo "== test tiers passed: ${TIERS[*]}"

#!/usr/bin/env bash
# Installs what is missing, builds, and runs the demo: publisher and
# subscriber processes on one channel per backpressure policy, each checking
# order and counting losses, then the channels' counters.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "${JOBS:-$(nproc)}" --target shmbus_demo
exec ./build/examples/shmbus_demo "$@"

#!/usr/bin/env bash
# Installs what is missing, builds, and runs the demo: publisher and
# subscriber processes on one channel per backpressure policy, each checking
# order and counting losses, then a worker group with a DLQ. It ends on a
# live bus (a publisher, a fast and a lagging subscriber, a worker group and
# a dead letter) watched with the `shmbus` probe: ls, stat, watch, check and
# dlq list.
#   scripts/demo.sh            the full demo
#   scripts/demo.sh --quick    fewer messages
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
for t in shmbus_demo shmbus_live_demo shmbus_cli; do
  cmake --build build -j "${JOBS:-$(nproc)}" --target "$t"
done

./build/examples/shmbus_demo "$@"

SHMBUS=./build/tools/shmbus
BUS="demo-live-$$"
echo
echo "== the probe on a live bus"
coproc LIVE { ./build/examples/shmbus_live_demo --bus "$BUS"; }
live_pid=$LIVE_PID   # bash unsets LIVE_PID when the coprocess ends
live_in=${LIVE[1]}
trap 'kill "${live_pid:-}" 2>/dev/null || true' EXIT
if ! read -r line <&"${LIVE[0]}"; then
  echo "demo: the live demo did not start"; exit 1
fi
echo "$line"
show() { echo; echo "\$ shmbus $*"; "$SHMBUS" "$@"; }
show ls --bus "$BUS"
show stat live --bus "$BUS"
show watch live --bus "$BUS" --interval 1 --count 3 --no-clear
set +e
show check --bus "$BUS" --max-lag 1000,100000 --max-dlq 0
echo "(check exit code: $?: 0 ok, 1 warning, 2 critical)"
set -e
show dlq list billing --bus "$BUS"
exec {live_in}>&-
wait "$live_pid"
trap - EXIT
echo
echo "demo: the live bus was stopped and removed"

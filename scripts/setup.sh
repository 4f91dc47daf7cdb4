#!/usr/bin/env bash
# Installs the Debian packages shmbus needs to build, test and benchmark.
# Idempotent: packages already present are not fetched again. Needs root (or sudo).
set -euo pipefail

PACKAGES=(
  build-essential cmake g++ pkg-config
  libboost-dev            # Boost.Interprocess (segments, mapping)
  catch2                  # tests (Catch2 v2)
  libbenchmark-dev        # microbenchmarks
  libconcurrentqueue-dev  # moodycamel baseline
  libcli11-dev            # CLI parsing for the probe
  nlohmann-json3-dev      # JSON output
  libfmt-dev              # formatting
  libzmq3-dev             # ZeroMQ ipc:// baseline
  python3                 # the probe test parses its JSON output
  clang libclang-rt-14-dev  # libFuzzer targets (fuzz/)
  clang-tidy clang-format  # scripts/tidy.sh (.clang-tidy); .clang-format
  spin                    # model checks of the publish and lease protocols (model/)
  python3-matplotlib      # scripts/bench.sh draws its plots (run with /usr/bin/python3)
  prometheus              # promtool: the probe test checks its exposition text
  curl                    # the probe test scrapes `shmbus metrics`
  libhiredis-dev          # `shmbus bridge` to and from Redis Streams
  libcpp-httplib-dev      # `shmbus metrics` serves HTTP (concurrent connections, timeouts)
  redis-server redis-tools  # the bridge's tests run a real Redis
  valgrind                # scripts/insn.sh: instructions per publish and per poll (callgrind)
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Wait for another apt/dpkg run rather than failing on its lock.
APT=(apt-get -o DPkg::Lock::Timeout=600)
$SUDO "${APT[@]}" update -qq
$SUDO "${APT[@]}" install -y -qq --no-install-recommends "${missing[@]}"

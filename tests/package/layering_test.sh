#!/usr/bin/env bash
# Layering: bus/ and shm/ take from include/shmbus only the value types (no
# handle, no Channel), and shm/ only Result/Error and Trust; the public
# headers include no internal header. Usage: layering_test.sh SOURCE_DIR
set -euo pipefail
SRC="$1"
fail() { echo "FAIL: $*" >&2; exit 1; }

bus_ok='shmbus/(types|result|trust|stats|dedup_types|archive_types)\.hpp'
shm_ok='shmbus/(result|trust)\.hpp'
check() {  # check DIR ALLOWED_REGEX
  local dir="$1" ok="$2" hit
  while IFS= read -r hit; do
    [[ "${hit#*#include <}" =~ ^($ok)\> ]] || fail "$hit: $dir/ may include from include/ only <$ok>"
  done < <(grep -rnE '#include <shmbus/' "$SRC/$dir" --include='*.hpp' --include='*.cpp' || true)
}
check bus "$bus_ok"
check shm "$shm_ok"
if grep -rnE '#include +"' "$SRC/include"; then fail "a public header includes a header by a quoted (internal) path"; fi
echo "ok: bus/ and shm/ include only the public value types"

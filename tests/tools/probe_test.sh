#!/usr/bin/env bash
# CLI test of the shmbus probe against a real channel.
# Usage: probe_test.sh PATH/TO/shmbus PATH/TO/shmbus_probe_fixture
set -u
SHMBUS="$1"
FIXTURE="$2"
BUS="probetest$$"
CH="orders"
fails=0
check() {  # check DESCRIPTION COMMAND...
  local what="$1"; shift
  if "$@"; then echo "ok: $what"; else echo "FAIL: $what"; fails=$((fails + 1)); fi
}
cleanup() { "$FIXTURE" "$BUS" "$CH" --remove >/dev/null 2>&1 || true; }
trap cleanup EXIT

"$FIXTURE" "$BUS" "$CH" || { echo "FAIL: fixture could not create the channel"; exit 1; }

out=$("$SHMBUS" ls --bus "$BUS"); rc=$?
echo "$out"
check "ls exits 0" test "$rc" -eq 0
check "ls lists the channel" grep -q "^$CH " <<<"$out"

json=$("$SHMBUS" ls --bus "$BUS" --json); rc=$?
check "ls --json exits 0" test "$rc" -eq 0
check "ls --json schema" python3 -c '
import json, sys
d = json.load(sys.stdin)
assert d["bus"] == sys.argv[1], d
(c,) = [c for c in d["channels"] if c["name"] == sys.argv[2]]
assert c["ok"] is True and c["head"] == 10 and c["subscribers"] == 1 and c["publishers"] >= 0, c
' "$BUS" "$CH" <<<"$json"

out=$("$SHMBUS" stat "$CH" --bus "$BUS"); rc=$?
echo "$out"
check "stat exits 0" test "$rc" -eq 0
check "stat table shows the lagger" grep -q "^lagger " <<<"$out"

json=$("$SHMBUS" stat "$CH" --bus "$BUS" --json); rc=$?
check "stat --json exits 0" test "$rc" -eq 0
check "stat --json: head 10, lagger lag 7" python3 -c '
import json, sys
d = json.load(sys.stdin)
assert d["name"] == sys.argv[1] and d["head"] == 10, d
(s,) = [s for s in d["subscribers"] if s["name"] == "lagger"]
assert s["lag"] == 7 and s["cursor"] == 3 and s["durable"] is True, s
# producer counters are summed over current publisher entries; the fixture
# publisher has exited, so they are not checked here.
assert set(d["producer"]) >= {"published", "rejected", "timeouts", "blocked_ns", "abandoned"}
' "$CH" <<<"$json"

"$SHMBUS" stat no_such_channel --bus "$BUS" >/dev/null 2>err.$$; rc=$?
check "unknown channel exits 2" test "$rc" -eq 2
check "unknown channel says so on stderr" grep -q "no channel 'no_such_channel'" err.$$
rm -f err.$$

help_ok() { "$SHMBUS" "$@" --help >/dev/null; }
for c in ls stat; do
  check "$c --help" help_ok "$c"
done
check "top-level --help" help_ok

if [ "$fails" -ne 0 ]; then echo "$fails check(s) failed"; exit 1; fi
echo "all probe checks passed"

#!/usr/bin/env bash
# CLI test of `shmbus replay`, `tail --from` and `peek --from` on a channel
# whose ring (16 slots) holds only the last 16 of 100 messages and whose
# archive holds all of them: by sequence, by time, earliest, JSON, the
# switch from the archive to the ring, and what is printed when the archive
# is gone.
# Usage: replay_test.sh PATH/TO/shmbus PATH/TO/replay_fixture
set -u
SHMBUS="$1"
FIXTURE="$2"
BUS="replaytest$$"
CH="events"
TMP=$(mktemp -d)
T0=1700000000
fails=0
check() {  # check DESCRIPTION COMMAND...
  local what="$1"; shift
  if "$@"; then echo "ok: $what"; else echo "FAIL: $what"; fails=$((fails + 1)); fi
}
run() {  # run CMD...: sets out, err, rc
  out=$("$@" 2>"$TMP/err"); rc=$?; err=$(cat "$TMP/err")
}
seqs() {  # the sequences of text lines "#N ..." on stdin, space-separated
  sed -n 's/^#\([0-9]*\) .*/\1/p' | tr '\n' ' ' | sed 's/ $//'
}
cleanup() {
  "$FIXTURE" "$BUS" "$CH" --remove >/dev/null 2>&1
  rm -rf "$TMP"
}
trap cleanup EXIT

"$FIXTURE" "$BUS" "$CH" "$TMP/archive" || { echo "FAIL: fixture could not create the channel"; exit 1; }

run "$SHMBUS" replay "$CH" --bus "$BUS" --from 0 --to 9
check "replay --from 0 --to 9 exits 0" test "$rc" -eq 0
check "replay --from 0 --to 9 prints #0..#9 from the archive" test "$(seqs <<<"$out")" = "$(seq -s ' ' 0 9)"
check "replay prints the payloads" grep -q '^#3 .* msg-3$' <<<"$out"
check "replay says nothing was skipped" test -z "$err"

run "$SHMBUS" replay "$CH" --bus "$BUS" --from earliest
check "replay --from earliest prints all 100, archive then ring" test "$(seqs <<<"$out")" = "$(seq -s ' ' 0 99)"

run "$SHMBUS" replay "$CH" --bus "$BUS" --from 80 --to 89
check "replay across the switch to the ring (the ring holds 84..99)" test "$(seqs <<<"$out")" = "$(seq -s ' ' 80 89)"

run "$SHMBUS" replay "$CH" --bus "$BUS" --from "@$((T0 + 50))" --to "@$((T0 + 54))" --json
check "replay by time exits 0" test "$rc" -eq 0
check "replay --from/--to TIME --json prints sequences 50..54" \
  test "$(python3 -c 'import json, sys; print(" ".join(str(json.loads(l)["sequence"]) for l in sys.stdin))' <<<"$out")" = "50 51 52 53 54"
check "replay --json carries the payload" grep -q '"payload":"msg-52"' <<<"$out"

run "$SHMBUS" replay "$CH" --bus "$BUS" --from 95 --to latest
check "replay --to latest stops at the head" test "$(seqs <<<"$out")" = "95 96 97 98 99"

run "$SHMBUS" tail "$CH" --bus "$BUS" --from 10
check "tail --from 10 prints 10..99 through the archive" test "$(seqs <<<"$out")" = "$(seq -s ' ' 10 99)"

run "$SHMBUS" peek "$CH" --bus "$BUS" --from 5 -n 3
check "peek --from 5 -n 3 reads the archive" test "$(seqs <<<"$out")" = "5 6 7"
check "peek --from an old sequence does not warn with an archive" test -z "$err"

run "$SHMBUS" replay "$CH" --bus "$BUS" --from 0 --to 99x
check "replay refuses a bad --to" test "$rc" -ne 0

# Without the archive, only the ring is left: the gap is said, not hidden.
rm -rf "$TMP/archive"
run "$SHMBUS" replay "$CH" --bus "$BUS" --from 0
check "replay without the archive prints what the ring holds" test "$(seqs <<<"$out")" = "$(seq -s ' ' 84 99)"
check "replay without the archive says 84 were skipped" grep -q "skipped 84 message(s) from #0" <<<"$err"

echo "$fails failure(s)"
[ "$fails" -eq 0 ]

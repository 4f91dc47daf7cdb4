#!/usr/bin/env bash
# CLI test of `shmbus archive`: run (attached before anything is published,
# stopped by SIGTERM with exit 0), stat (text and JSON, with the channel's
# head and the archiver's lag), verify on a good archive, on one with a
# damaged record in the middle (names the file and offset, exit 1) and on a
# torn tail, prune, and bad input.
# Usage: archive_test.sh PATH/TO/shmbus
set -u
SHMBUS="$1"
BUS="arctest$$"
CH="events"
TMP=$(mktemp -d)
ARC="$TMP/arc"
fails=0
check() {  # check DESCRIPTION COMMAND...
  local what="$1"; shift
  if "$@"; then echo "ok: $what"; else echo "FAIL: $what"; fails=$((fails + 1)); fi
}
run() {  # run CMD...: sets out, err, rc
  out=$("$@" 2>"$TMP/err"); rc=$?; err=$(cat "$TMP/err")
}
wait_for() {  # wait_for PATTERN CMD...: until CMD's output matches (bounded: 20 s)
  local pattern="$1"; shift
  for _ in $(seq 1 200); do
    "$@" 2>/dev/null | grep -q -- "$pattern" && return 0
    sleep 0.1
  done
  return 1
}
cleanup() {
  [ -n "${ARC_PID:-}" ] && kill -9 "$ARC_PID" 2>/dev/null
  "$SHMBUS" rm "$CH" --bus "$BUS" >/dev/null 2>&1
  rm -f "/dev/shm/shmbus.$BUS."*
  rm -rf "$TMP"
}
trap cleanup EXIT

run "$SHMBUS" create "$CH" --bus "$BUS" --capacity 64
check "create exits 0" test "$rc" -eq 0

# ---- run: the archiver attaches first, then messages are published ----------
"$SHMBUS" archive run "$CH" --bus "$BUS" --dir "$ARC" --fsync batch --segment-mb 1 2>"$TMP/run.err" &
ARC_PID=$!
check "archiver attaches" wait_for "^archiver: active" "$SHMBUS" archive stat "$CH" --bus "$BUS" --dir "$ARC"
seq 1 500 | "$SHMBUS" publish "$CH" --bus "$BUS" --timeout 10
check "publish of 500 lines exits 0" test $? -eq 0
check "the archive reaches the head" wait_for "^sequences: 0..499 (end 500)" "$SHMBUS" archive stat "$CH" --bus "$BUS"  --dir "$ARC"
kill -TERM "$ARC_PID"
wait "$ARC_PID"; rc=$?
ARC_PID=
check "run exits 0 on SIGTERM" test "$rc" -eq 0
check "run reports what it archived" grep -q "archived 500 messages" "$TMP/run.err"

# ---- stat ---------------------------------------------------------------------
run "$SHMBUS" archive stat "$CH" --bus "$BUS" --dir "$ARC"; echo "$out"
check "stat exits 0" test "$rc" -eq 0
check "stat shows the range" grep -q "^sequences: 0..499 (end 500)" <<<"$out"
check "stat shows one file" grep -q "^files: 1$" <<<"$out"
check "stat shows the head and nothing unarchived" grep -q "^channel head: 500 (0 not yet archived)" <<<"$out"
check "stat shows the detached archiver without lag" grep -q "^archiver: detached.*cursor 500, lag 0" <<<"$out"
check "stat shows first and last times" grep -q "^last time: 20" <<<"$out"
run "$SHMBUS" archive stat --dir "$ARC" --json
check "stat --json exits 0" test "$rc" -eq 0
check "stat --json has the range" python3 -c "import json, sys
d = json.load(sys.stdin)
assert d['first_sequence'] == 0 and d['end_sequence'] == 500 and d['files'] == 1, d" <<<"$out"
run "$SHMBUS" archive stat
check "stat without CHANNEL or --dir is an error" test "$rc" -ne 0

# ---- verify -------------------------------------------------------------------
run "$SHMBUS" archive verify --dir "$ARC"; echo "$out"
check "verify of a good archive exits 0" test "$rc" -eq 0
check "verify counts every record" grep -q "^ok: 500 records in 1 files, sequences 0..499, 0 gaps" <<<"$out"

SEG=$(ls "$ARC"/*.seg)
mkdir "$TMP/bad"; cp "$SEG" "$TMP/bad/"
BAD="$TMP/bad/$(basename "$SEG")"
SIZE=$(stat -c %s "$BAD")
python3 - "$BAD" "$((SIZE / 2))" <<'PY'
import sys
path, at = sys.argv[1], int(sys.argv[2])
with open(path, 'r+b') as f:
    f.seek(at)
    b = f.read(1)
    f.seek(at)
    f.write(bytes([b[0] ^ 0x40]))
PY
run "$SHMBUS" archive verify --dir "$TMP/bad"; echo "$err"
check "verify of a damaged record exits 1" test "$rc" -eq 1
check "verify names the damaged file and offset" grep -q "BAD: archive file '$BAD' at offset [0-9]*: record checksum mismatch" <<<"$err"

mkdir "$TMP/torn"; cp "$SEG" "$TMP/torn/"
TORN="$TMP/torn/$(basename "$SEG")"
truncate -s "$((SIZE - 3))" "$TORN"
run "$SHMBUS" archive verify --dir "$TMP/torn"; echo "$err"
check "verify of a torn tail exits 1" test "$rc" -eq 1
check "verify names the torn file and offset" grep -q "BAD: archive file '$TORN' at offset [0-9]*: .*torn tail" <<<"$err"

run "$SHMBUS" archive verify --dir "$TMP/none"
check "verify of a missing directory exits 2" test "$rc" -eq 2

# ---- prune --------------------------------------------------------------------
run "$SHMBUS" archive prune --dir "$ARC" --max-bytes 1; echo "$out"
check "prune exits 0" test "$rc" -eq 0
check "prune never removes the newest file" grep -q "^removed 0 files" <<<"$out"
run "$SHMBUS" archive prune --dir "$ARC"
check "prune without a limit is an error" test "$rc" -eq 1

# ---- bad input ----------------------------------------------------------------
run "$SHMBUS" archive run "$CH" --bus "$BUS" --dir "$ARC" --fsync sometimes
check "run refuses a bad --fsync" test "$rc" -eq 1
run "$SHMBUS" archive run "$CH" --bus "$BUS"
check "run without a directory is an error" test "$rc" -eq 1
check "run says why" grep -q "no archive directory" <<<"$err"

echo "$fails failures"
[ "$fails" -eq 0 ]

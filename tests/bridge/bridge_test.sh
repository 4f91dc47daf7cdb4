#!/usr/bin/env bash
# Test of `shmbus bridge` against a real redis-server on 127.0.0.1: the
# bridge is killed with SIGKILL mid-stream and restarted, in both directions,
# and nothing may be lost (duplicates are reported: at-least-once).
# Usage: bridge_test.sh PATH/TO/shmbus PATH/TO/shmbus_bridge_helper
#
# Waits poll a state (stream length, channel head, a log line, a file) with a
# bounded deadline; none assumes that another process got somewhere in time.
set -u
SHMBUS="$1"
HELPER="$2"
HERE="$(cd "$(dirname "$0")" && pwd)"
fails=0
check() {  # check DESCRIPTION COMMAND...
  local what="$1"; shift
  if "$@"; then echo "ok: $what"; else echo "FAIL: $what"; fails=$((fails + 1)); fi
}
die() { echo "FAIL: $*"; exit 1; }

# redis-server is part of the test setup (scripts/setup.sh): missing, the
# test fails rather than skips.
for tool in redis-server redis-cli python3; do
  command -v "$tool" >/dev/null || die "$tool is not installed (scripts/setup.sh installs redis-server, redis-tools, python3)"
done

TMP=$(mktemp -d /tmp/shmbus-bridge-test.XXXXXX)
BUS="bridgetest$$"
CHANNELS=()
PIDS=()        # background processes this script started
REDIS_PID=""
BRIDGE=""
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  if [ -n "$REDIS_PID" ]; then kill -9 "$REDIS_PID" 2>/dev/null; fi
  wait 2>/dev/null
  for c in "${CHANNELS[@]}"; do "$HELPER" remove "$BUS" "$c" >/dev/null 2>&1; done
  rm -rf "$TMP"
}
trap cleanup EXIT

wait_for() {  # wait_for SECONDS COMMAND...: polls COMMAND until it succeeds
  local end=$((SECONDS + $1)); shift
  until "$@"; do
    [ "$SECONDS" -ge "$end" ] && return 1
    sleep 0.05
  done
}
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --- redis-server on a free port, password-protected, no persistence ------
PW="pw$$x$RANDOM"
export SHMBUS_REDIS_PASSWORD="$PW" REDISCLI_AUTH="$PW"
R() { redis-cli -h 127.0.0.1 -p "$PORT" "$@"; }
redis_up() { kill -0 "$REDIS_PID" 2>/dev/null && [ "$(R ping 2>/dev/null)" = PONG ]; }
for attempt in 1 2 3 4 5; do
  PORT=$(free_port)
  redis-server --bind 127.0.0.1 --port "$PORT" --dir "$TMP" --save '' --appendonly no \
    --requirepass "$PW" --logfile "$TMP/redis.log" &
  REDIS_PID=$!
  if wait_for 10 redis_up; then break; fi
  kill -9 "$REDIS_PID" 2>/dev/null; wait "$REDIS_PID" 2>/dev/null; REDIS_PID=""
done
[ -n "$REDIS_PID" ] || die "redis-server did not start (see its log)"
REDIS="127.0.0.1:$PORT"
echo "redis-server $(redis-server --version | awk '{print $3}') on $REDIS"

make_channel() {  # make_channel NAME CAPACITY SLOT POLICY
  "$HELPER" create "$BUS" "$1" "$2" "$3" "$4" || die "cannot create channel $1"
  CHANNELS+=("$1")
}
start_bridge() {  # start_bridge LOG ARGS...: runs `shmbus bridge ARGS` in the background
  local log="$1"; shift
  "$SHMBUS" bridge "$@" 2>"$log" &
  BRIDGE=$!
  PIDS+=("$BRIDGE")
}
kill9_bridge() { kill -9 "$BRIDGE"; wait "$BRIDGE" 2>/dev/null; }
xlen_at_least() { [ "$(R xlen "$1")" -ge "$2" ]; }
head_at_least() { [ "$("$HELPER" head "$BUS" "$1")" -ge "$2" ]; }
logged() { grep -q "$2" "$1"; }

# Checks the stream's entries: every sequence FIRST..LAST present, payload
# "m-<seq>", key seq+1, message id 1000000000+seq, type 7. Prints the
# duplicates it found.
check_stream() {  # check_stream KEY FIRST LAST
  R --json xrange "$1" - + >"$TMP/xrange.json"
  python3 - "$TMP/xrange.json" "$2" "$3" <<'EOF'
import json, sys
entries = json.load(open(sys.argv[1]))
first, last = int(sys.argv[2]), int(sys.argv[3])
seen = {}
bad = 0
for eid, fields in entries:
    f = dict(zip(fields[0::2], fields[1::2]))
    s = int(f["sequence"])
    if (f["data"] != "m-%d" % s or int(f["key"]) != s + 1 or int(f["id"]) != 1000000000 + s
            or int(f["type"]) != 7 or not (first <= s <= last)):
        bad += 1
        if bad <= 5: print("  bad entry", eid, f)
    seen[s] = seen.get(s, 0) + 1
missing = [s for s in range(first, last + 1) if s not in seen]
dups = sum(c - 1 for c in seen.values())
print("  stream: %d entries, %d distinct sequences, %d duplicates, %d missing, %d bad"
      % (len(entries), len(seen), dups, len(missing), bad))
if missing: print("  first missing:", missing[:10])
sys.exit(0 if not missing and bad == 0 else 1)
EOF
}
resumed_at() { sed -n 's/.*resuming at sequence \([0-9]*\).*/\1/p' "$1" | head -1; }
drop_connection() {  # drop_connection NAME: the server closes the connections named NAME
  local ids id
  ids=$(R client list | sed -n "s/^id=\([0-9]*\) .* name=$1 .*/\1/p")
  [ -n "$ids" ] || return 1
  for id in $ids; do R client kill id "$id" >/dev/null; done
}

# === 1. channel -> stream, killed three times mid-stream ====================
# The publisher runs until told to stop, so every kill lands before the
# stream ends, whatever the machine's speed. The checkpoint gates the block
# channel: the publisher waits for the bridge (and for its restarts) instead
# of overwriting what was not forwarded yet.
make_channel out 256 256 block
TO_ARGS=(to-redis out --bus "$BUS" --stream out --redis "$REDIS" --batch 64)
start_bridge "$TMP/to1.log" "${TO_ARGS[@]}"
wait_for 10 logged "$TMP/to1.log" "resuming at sequence" || die "to-redis did not start: $(cat "$TMP/to1.log")"
"$HELPER" publish-until "$BUS" out 5000000 >"$TMP/published" &
PUB=$!
PIDS+=("$PUB")
for k in 1 2 3; do
  wait_for 120 xlen_at_least out $((k * 5000)) || die "stream 'out' stuck at $(R xlen out) before kill $k"
  kill9_bridge
  at_kill=$(R xlen out)
  start_bridge "$TMP/to$((k + 1)).log" "${TO_ARGS[@]}"
  wait_for 10 logged "$TMP/to$((k + 1)).log" "resuming at sequence" || die "to-redis restart $k failed: $(cat "$TMP/to$((k + 1)).log")"
  r=$(resumed_at "$TMP/to$((k + 1)).log")
  now_len=$(R xlen out)
  echo "  kill $k: stream held $at_kill entries; the restart resumed at sequence $r"
  # Where the stream ended (a batch sent just before the kill may land after
  # at_kill was read, so r lies between the two lengths).
  check "to-redis restart $k resumed where the stream ended" \
    test "$r" -ge "$at_kill" -a "$r" -le "$now_len" -a "$r" -gt 0
done
# The server drops the bridge's connection mid-stream: it reconnects, asks
# the stream whether its last batch got through, and goes on.
len_before=$(R xlen out)
wait_for 10 drop_connection shmbus-bridge-to-redis || die "no connection named shmbus-bridge-to-redis"
check "to-redis reconnects and resynchronises after its connection is dropped" \
  wait_for 30 logged "$TMP/to4.log" "resynchronised with the stream"
check "to-redis goes on forwarding after the reconnect" wait_for 60 xlen_at_least out $((len_before + 5000))
"$SHMBUS" bridge remove-checkpoint out --bus "$BUS" --stream out 2>"$TMP/rm.log"; rc=$?
check "remove-checkpoint refuses while a live bridge holds it (exit 1)" test "$rc" -eq 1
check "remove-checkpoint says the checkpoint is busy" logged "$TMP/rm.log" "busy"
kill -TERM "$PUB"; wait "$PUB"; rc=$?
N=$(cat "$TMP/published")
check "publisher stopped cleanly after $N messages" test "$rc" -eq 0 -a "$N" -gt 15000
check "stream 'out' reaches $N entries" wait_for 120 xlen_at_least out "$N"
kill -TERM "$BRIDGE"; wait "$BRIDGE"; rc=$?
check "to-redis exits 0 on SIGTERM" test "$rc" -eq 0
check "every sequence 0..$((N - 1)) is in the stream, intact" check_stream out 0 $((N - 1))
cat "$TMP/to4.log"

# === 2. the bridge's own checkpoint survives a deleted stream ==============
R del out >/dev/null
"$SHMBUS" bridge to-redis out --bus "$BUS" --stream out --redis "$REDIS" --idle-exit 300 2>"$TMP/c1.log"; rc=$?
check "to-redis with --idle-exit exits 0" test "$rc" -eq 0
check "a deleted stream is not refilled from the channel (checkpoint at $N)" \
  test "$(R xlen out)" -eq 0 -a "$(resumed_at "$TMP/c1.log")" -eq "$N"
"$HELPER" publish "$BUS" out "$N" 10 || die "publish 10 more"
"$SHMBUS" bridge to-redis out --bus "$BUS" --stream out --redis "$REDIS" --count 10 2>"$TMP/c2.log"; rc=$?
check "to-redis --count 10 exits 0" test "$rc" -eq 0
check "only the 10 new messages were forwarded" check_stream out "$N" $((N + 9))

# === 3. a gap is reported and counted, not silent ===========================
make_channel gap 64 256 drop_oldest
"$SHMBUS" bridge to-redis gap --bus "$BUS" --stream gap --redis "$REDIS" --idle-exit 200 2>"$TMP/g1.log"
check "to-redis on an empty channel creates its checkpoint at 0" test "$(resumed_at "$TMP/g1.log")" = 0
"$HELPER" publish "$BUS" gap 0 200 || die "publish to gap"
"$SHMBUS" bridge to-redis gap --bus "$BUS" --stream gap --redis "$REDIS" --idle-exit 300 2>"$TMP/g2.log"; rc=$?
cat "$TMP/g2.log"
check "to-redis over a gap exits 0" test "$rc" -eq 0
check "the gap is reported with its size" logged "$TMP/g2.log" "gap: 136 message(s) lost before sequence 136"
check "the summary counts the loss" logged "$TMP/g2.log" "1 gap(s), 136 message(s) lost"
check "what the ring still held was forwarded" check_stream gap 136 199

# A retired bridge's checkpoint can be removed (it gates the channel), once.
"$SHMBUS" bridge remove-checkpoint gap --bus "$BUS" --stream gap 2>"$TMP/rm.log"; rc=$?
check "remove-checkpoint exits 0" test "$rc" -eq 0
"$SHMBUS" bridge remove-checkpoint gap --bus "$BUS" --stream gap 2>"$TMP/rm.log"; rc=$?
check "remove-checkpoint of a removed checkpoint exits 2" test "$rc" -eq 2
check "remove-checkpoint says what is missing" logged "$TMP/rm.log" "no durable subscriber 'redis-gap'"

# === 4. --maxlen trims the stream ============================================
make_channel trim 1024 256 block
"$HELPER" publish "$BUS" trim 0 500 || die "publish to trim"
"$SHMBUS" bridge to-redis trim --bus "$BUS" --stream trim --redis "$REDIS" --maxlen 100 --count 500 --quiet 2>"$TMP/t.log"; rc=$?
check "to-redis --maxlen exits 0" test "$rc" -eq 0
check "--maxlen 100 keeps the last 100 entries" check_stream trim 400 499

# === 5. stream -> channel, killed three times mid-stream =====================
# A feeder XADDs (through redis-cli --pipe) until told to stop, so every kill
# lands before the stream ends; it writes how many it sent when it stops.
# Load shape (not synchronisation): the feeder is paced and the collector
# reads slowly, so the bridge is gated by the channel and usually holds a
# batch it has read but not acked.
make_channel inch 256 256 block
mkfifo "$TMP/feed"
R --pipe <"$TMP/feed" >"$TMP/pipe.out" 2>&1 &
PIPE=$!
PIDS+=("$PIPE")
python3 "$HERE/feed_stream.py" in "$TMP/fed" 2000000 100 >"$TMP/feed" &
FEED=$!
PIDS+=("$FEED")
# The collector subscribes first: it gates the channel, so the bridge's
# publishes wait for it (and retry) rather than overwrite. It learns the
# total from $TMP/fed once the feeder stops.
"$HELPER" collect "$BUS" inch "$TMP/fed" "$TMP/ready" 240 50 >"$TMP/collect.out" &
COL=$!
PIDS+=("$COL")
wait_for 10 test -e "$TMP/ready" || die "collector did not start"
FROM_ARGS=(from-redis inch --bus "$BUS" --stream in --group grp --redis "$REDIS" --batch 50)
start_bridge "$TMP/from1.log" "${FROM_ARGS[@]}" --consumer c1 --create-group
pending_of() {  # pending_of CONSUMER: its pending entries in group grp
  R --json xpending in grp | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(sum(int(c) for name, c in (d[3] or []) if name == sys.argv[1]))' "$1"
}
c1_pending() { [ "$(pending_of c1)" -gt 0 ]; }
for k in 1 2 3; do
  wait_for 120 head_at_least inch $((k * 5000)) || die "channel inch stuck before kill $k"
  # Each kill must land while c1 holds a batch it has read and not acked
  # (pending after the kill); a kill that found it between batches is
  # followed by a restart and another kill.
  tries=0
  while :; do
    tries=$((tries + 1))
    wait_for 30 c1_pending || die "c1 never held pending entries before kill $k"
    kill9_bridge
    c1_left=$(pending_of c1)
    [ "$c1_left" -gt 0 ] && break
    [ "$tries" -ge 50 ] && die "kill $k never landed mid-batch in 50 tries"
    start_bridge "$TMP/from$k.retry.log" "${FROM_ARGS[@]}" --consumer c1
  done
  echo "  kill $k (try $tries): channel head $("$HELPER" head "$BUS" inch), stream length $(R xlen in), c1 pending $c1_left"
  if [ "$k" -lt 3 ]; then
    start_bridge "$TMP/from$((k + 1)).log" "${FROM_ARGS[@]}" --consumer c1
  else
    # Another consumer takes over: XAUTOCLAIM picks up what c1 left pending.
    start_bridge "$TMP/from4.log" "${FROM_ARGS[@]}" --consumer c2 --claim-idle 200
  fi
done
head_before=$("$HELPER" head "$BUS" inch)
wait_for 10 drop_connection shmbus-bridge-from-redis || die "no connection named shmbus-bridge-from-redis"
check "from-redis reconnects after its connection is dropped" \
  wait_for 30 logged "$TMP/from4.log" "reconnected to Redis"
check "from-redis goes on publishing after the reconnect" wait_for 60 head_at_least inch $((head_before + 5000))
kill -TERM "$FEED"; wait "$FEED"
wait "$PIPE"; check "the feeder's XADDs all succeeded" grep -q "errors: 0" "$TMP/pipe.out"
M=$(cat "$TMP/fed")
check "stream 'in' holds the $M entries fed" test "$(R xlen in)" -eq "$M"
wait "$COL"; rc=$?
echo "  collector: $(cat "$TMP/collect.out")"
check "all $M stream entries reached the channel (collector)" test "$rc" -eq 0
pending_total() { [ "$(R --json xpending in grp | python3 -c 'import json,sys; print(json.load(sys.stdin)[0])')" -eq 0 ]; }
check "XPENDING drains to 0" wait_for 60 pending_total
check "c1's pending entries ($c1_left at its last kill) were claimed by c2" test "$(pending_of c1)" -eq 0
kill -TERM "$BRIDGE"; wait "$BRIDGE"; rc=$?
check "from-redis exits 0 on SIGTERM" test "$rc" -eq 0
cat "$TMP"/from[234].log
check "c2 reports the entries it claimed" grep -Eq "[1-9][0-9]* claimed from other consumers" "$TMP/from4.log"
check "restarted c1 re-published its pending entries" grep -q "re-published [1-9][0-9]* pending" "$TMP/from2.log"

# === 6. entries that cannot be published stay pending, reported ===============
make_channel small 64 256 block
R xadd odd '*' data e-0 key 1 id 1000000000 >/dev/null
R xadd odd '*' data "$(head -c 1000 /dev/zero | tr '\0' x)" key 3 >/dev/null
R xadd odd '*' key 4 note no-data >/dev/null
R xadd odd '*' data e-1 key 2 type notanumber >/dev/null
R xadd odd '*' data e-1 key 2 id 1000000001 >/dev/null
rm -f "$TMP/ready"
"$HELPER" collect "$BUS" small 2 "$TMP/ready" 60 >"$TMP/collect2.out" &
COL=$!
PIDS+=("$COL")
wait_for 10 test -e "$TMP/ready" || die "collector 2 did not start"
"$SHMBUS" bridge from-redis small --bus "$BUS" --stream odd --group g --create-group \
  --redis "$REDIS" --idle-exit 300 2>"$TMP/odd.log"; rc=$?
wait "$COL"; crc=$?
cat "$TMP/odd.log"
check "from-redis with bad entries exits 0" test "$rc" -eq 0
check "the good entries were published" test "$crc" -eq 0
check "the 3 bad entries stay pending" test "$(R --json xpending odd g | python3 -c 'import json,sys; print(json.load(sys.stdin)[0])')" -eq 3
check "a too-large entry is reported" logged "$TMP/odd.log" "1000 payload bytes"
check "an entry without data is reported" logged "$TMP/odd.log" "no 'data' field"
check "a bad number is reported" logged "$TMP/odd.log" "field 'type' is not a valid number"

# === 7. clear errors, with exit codes ========================================
expect_exit() {  # expect_exit DESCRIPTION CODE PATTERN ARGS...
  local what="$1" code="$2" pattern="$3"; shift 3
  "$SHMBUS" bridge "$@" 2>"$TMP/err.log" >/dev/null; local rc=$?
  check "$what: exit $code (got $rc)" test "$rc" -eq "$code"
  check "$what: says '$pattern'" grep -q "$pattern" "$TMP/err.log"
}
closed=$(free_port)
expect_exit "unreachable Redis" 3 "cannot connect to Redis at 127.0.0.1:$closed" \
  to-redis out --bus "$BUS" --stream x --redis "127.0.0.1:$closed"
expect_exit "unreachable Redis (from-redis)" 3 "cannot connect to Redis" \
  from-redis inch --bus "$BUS" --stream in --group grp --redis "127.0.0.1:$closed"
SHMBUS_REDIS_PASSWORD=wrong expect_exit "wrong password" 3 "refused AUTH" \
  to-redis out --bus "$BUS" --stream x --redis "$REDIS"
expect_exit "unknown channel" 2 "no channel 'nosuch'" \
  to-redis nosuch --bus "$BUS" --stream x --redis "$REDIS"
expect_exit "unknown channel (from-redis)" 2 "no channel 'nosuch'" \
  from-redis nosuch --bus "$BUS" --stream in --group grp --redis "$REDIS"
R set notastream hello >/dev/null
expect_exit "a key that is not a stream" 1 "holds another type, not a stream" \
  to-redis out --bus "$BUS" --stream notastream --redis "$REDIS"
expect_exit "a key that is not a stream (from-redis)" 1 "holds another type, not a stream" \
  from-redis inch --bus "$BUS" --stream notastream --group g --create-group --redis "$REDIS"
expect_exit "a missing consumer group" 2 "no consumer group 'nogroup'" \
  from-redis inch --bus "$BUS" --stream in --group nogroup --redis "$REDIS"
expect_exit "a malformed --redis" 1 "bad --redis" \
  to-redis out --bus "$BUS" --stream x --redis "127.0.0.1:99999"
"$SHMBUS" bridge to-redis --help >/dev/null; check "bridge to-redis --help" test $? -eq 0
"$SHMBUS" bridge from-redis --help >/dev/null; check "bridge from-redis --help" test $? -eq 0
"$SHMBUS" bridge remove-checkpoint --help >/dev/null; check "bridge remove-checkpoint --help" test $? -eq 0

if [ "$fails" -ne 0 ]; then
  echo "$fails check(s) failed"
  exit 1
fi
echo "all bridge checks passed"

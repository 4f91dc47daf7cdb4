#!/usr/bin/env bash
# CLI test of `shmbus` against real channels made by a fixture process: a
# lagging durable subscriber, a group with a dead (SIGKILLed) consumer and a
# DLQ entry, and a live publisher and subscriber held by another process.
# Checks tables, parsed JSON, promtool's verdict on the Prometheus text, a
# curl scrape of `shmbus metrics`, check's exit codes, peek/tail/publish/
# subscribe, dlq list/show/redrive, create/rm/gc, and bad input.
# Usage: probe_test.sh PATH/TO/shmbus PATH/TO/shmbus_probe_fixture
set -u
SHMBUS="$1"
FIXTURE="$2"
BUS="probetest$$"
CH="orders"
TMP=$(mktemp -d)
fails=0
check() {  # check DESCRIPTION COMMAND...
  local what="$1"; shift
  if "$@"; then echo "ok: $what"; else echo "FAIL: $what"; fails=$((fails + 1)); fi
}
json_check() {  # json_check DESCRIPTION PYTHON-ASSERTIONS (stdin: the JSON; d = parsed)
  local what="$1" code="$2"
  check "$what" python3 -c "import json, sys
d = json.load(sys.stdin)
$code" <<<"$json"
}
run() {  # run CMD...: sets out, rc
  out=$("$@" 2>"$TMP/err"); rc=$?
}
cleanup() {
  [ -n "${HOLD_PID:-}" ] && kill "$HOLD_PID" 2>/dev/null
  [ -n "${METRICS_PID:-}" ] && kill "$METRICS_PID" 2>/dev/null
  [ -n "${TAIL_PID:-}" ] && kill "$TAIL_PID" 2>/dev/null
  for c in "$CH" scratch broken badcap; do "$FIXTURE" "$BUS" "$c" --remove >/dev/null 2>&1; done
  rm -f "/dev/shm/shmbus.$BUS."* "/dev/shm/shmbus.${BUS}last."*
  rm -rf "$TMP"
}
trap cleanup EXIT

"$FIXTURE" "$BUS" "$CH" || { echo "FAIL: fixture could not create the channel"; exit 1; }
# A live publisher and subscriber, held until we close the fixture's stdin.
coproc HOLD { "$FIXTURE" "$BUS" "$CH" --hold; }
HOLD_PID=$HOLD_PID
read -r ready <&"${HOLD[0]}"
check "hold fixture is ready" test "$ready" = ready

# ---- ls / stat: table and JSON ----------------------------------------------
run "$SHMBUS" ls --bus "$BUS"; echo "$out"
check "ls exits 0" test "$rc" -eq 0
check "ls lists the channel" grep -q "^$CH " <<<"$out"
check "ls lists the DLQ channel" grep -q "^$CH-dlq " <<<"$out"

run "$SHMBUS" ls --bus "$BUS" --json; json=$out
check "ls --json exits 0" test "$rc" -eq 0
json_check "ls --json: head 10, 2 subscribers, 1 group, owners 2/3 alive" "
(c,) = [c for c in d['channels'] if c['name'] == '$CH']
assert d['schema_version'] == 1 and d['bus'] == '$BUS', d
assert c['ok'] is True and c['head'] == 10 and c['subscribers'] == 2 and c['groups'] == 1, c
assert c['owners_alive'] == 2 and c['owners_total'] == 3, c"

run "$SHMBUS" stat "$CH" --bus "$BUS"; echo "$out"
check "stat exits 0" test "$rc" -eq 0
check "stat table shows the lagger" grep -Eq "^lagger +detached +0 +no +3 +7 " <<<"$out"
check "stat table shows the group with its DLQ depth" grep -Eq "^workers .* orders-dlq +1$" <<<"$out"

run "$SHMBUS" stat "$CH" --bus "$BUS" --json; json=$out
check "stat --json exits 0" test "$rc" -eq 0
json_check "stat --json: lagger, live publisher, group with dead consumer and DLQ entry" "
assert d['name'] == '$CH' and d['head'] == 10 and d['oldest'] == 0, d
(s,) = [s for s in d['subscribers'] if s['name'] == 'lagger']
assert s['lag'] == 7 and s['cursor'] == 3 and s['durable'] is True and s['alive'] is False, s
(p,) = d['publishers']
assert p['alive'] is True and p['pid'] > 0, p
(g,) = d['groups']
assert g['name'] == 'workers' and g['floor'] == 2 and g['next'] == 3 and g['in_flight'] == 1, g
assert g['acked'] == 1 and g['dead_lettered'] == 1, g
assert g['consumers_alive'] == 0 and g['consumers_total'] == 1, g
assert g['dlq'] == {'name': '$CH-dlq', 'exists': True, 'depth': 1}, g['dlq']"

# ---- Prometheus: promtool and an HTTP scrape ---------------------------------
"$SHMBUS" stat "$CH" --bus "$BUS" --prometheus >"$TMP/stat.prom"
check "stat --prometheus passes promtool check metrics" promtool check metrics <"$TMP/stat.prom"
check "stat --prometheus: lagger lag 7" grep -qx "shmbus_subscriber_lag{bus=\"$BUS\",channel=\"$CH\",subscriber=\"lagger\"} 7" "$TMP/stat.prom"
check "stat --prometheus: DLQ depth 1" grep -qx "shmbus_group_dlq_depth{bus=\"$BUS\",channel=\"$CH\",group=\"workers\"} 1" "$TMP/stat.prom"
"$SHMBUS" ls --bus "$BUS" --prometheus >"$TMP/ls.prom"
check "ls --prometheus passes promtool check metrics" promtool check metrics <"$TMP/ls.prom"

mkfifo "$TMP/metrics.out"
"$SHMBUS" metrics --listen 127.0.0.1:0 --bus "$BUS" >"$TMP/metrics.out" &
METRICS_PID=$!
exec {MFD}<"$TMP/metrics.out"
read -r line <&"$MFD"
url=$(grep -o 'http://[^ ]*' <<<"$line")
check "metrics says where it serves" test -n "$url"
curl -sf "$url" >"$TMP/scrape.prom"
check "curl scrape of /metrics succeeds" test -s "$TMP/scrape.prom"
check "the scrape passes promtool check metrics" promtool check metrics <"$TMP/scrape.prom"
check "the scrape holds the group's in-flight leases" grep -qx "shmbus_group_in_flight{bus=\"$BUS\",channel=\"$CH\",group=\"workers\"} 1" "$TMP/scrape.prom"
code=$(curl -s -o /dev/null -w '%{http_code}' "${url%/metrics}/other")
check "other paths answer 404" test "$code" = 404
kill -TERM "$METRICS_PID"; wait "$METRICS_PID"; rc=$?; METRICS_PID=
check "metrics exits 0 on SIGTERM" test "$rc" -eq 0
exec {MFD}<&-

# ---- check: exit codes --------------------------------------------------------
run "$SHMBUS" check --bus "$BUS" --max-lag 100 --max-dlq 5 --max-oldest-unacked 3600
check "check ok exits 0" test "$rc" -eq 0
check "check ok says OK" grep -q "^OK " <<<"$out"
run "$SHMBUS" check --bus "$BUS" --max-lag 5,100 --channel "$CH"
check "check lag warning exits 1" test "$rc" -eq 1
check "check names the lagging subscriber" grep -q "^WARNING $CH: subscriber lagger lag 7 > 5" <<<"$out"
run "$SHMBUS" check --bus "$BUS" --max-dlq 0
check "check DLQ critical exits 2" test "$rc" -eq 2
check "check names the DLQ" grep -q "^CRITICAL $CH: group workers DLQ $CH-dlq depth 1 > 0" <<<"$out"
run "$SHMBUS" check --bus "$BUS" --max-lag 0 --channel "$CH" --channel "$CH-dlq"
check "check --max-lag leaves the DLQ's letters to --max-dlq" bash -c '! grep -q "subscriber dlq lag" <<<"$1"' _ "$out"
check "check --max-lag still judges the other subscribers" grep -q "^CRITICAL $CH: subscriber lagger lag 7 > 0" <<<"$out"
run "$SHMBUS" check --bus "$BUS" --max-lag 0 --channel "$CH-dlq"
check "check of the DLQ alone judges its retainer's lag" grep -q "^CRITICAL $CH-dlq: subscriber dlq lag 1 > 0" <<<"$out"
run "$SHMBUS" check --bus "$BUS" --dead-owners
check "check --dead-owners exits 1" test "$rc" -eq 1
check "check names the dead consumer" grep -q "^WARNING $CH: group workers consumer #[0-9]* owner pid [0-9]* is dead" <<<"$out"
run "$SHMBUS" check --bus "$BUS" --max-lag banana
check "check with a bad threshold exits 3" test "$rc" -eq 3

# ---- watch ------------------------------------------------------------------
run "$SHMBUS" watch "$CH" --bus "$BUS" --interval 0.05 --count 2 --json
check "watch --json exits 0" test "$rc" -eq 0
check "watch --json prints one frame per refresh" test "$(wc -l <<<"$out")" -eq 2
json=$(tail -n 1 <<<"$out")
json_check "watch frame: channel, lagger lag, group backlog, rates" "
(c,) = d['channels']
assert c['name'] == '$CH' and c['head'] == 10 and c['publish_rate'] == 0, c
(s,) = [s for s in c['subscribers'] if s['name'] == 'lagger']
assert s['lag'] == 7 and s['lag_growth'] == 0, s
(g,) = c['groups']
assert g['name'] == 'workers' and g['unfinished'] == 8 and g['ack_rate'] == 0, g"
run "$SHMBUS" watch --all --bus "$BUS" --interval 0.05 --count 1
check "watch --all table exits 0" test "$rc" -eq 0
check "watch --all shows both channels" grep -q "^$CH-dlq " <<<"$out"

# ---- peek / tail (no cursor moves) ------------------------------------------
run "$SHMBUS" peek "$CH" --bus "$BUS" --from 2 -n 3
check "peek prints 3 messages from #2" test "$(grep -c '^#' <<<"$out")" -eq 3
check "peek text shows the payload" grep -q "^#2 .* len=9  message 2$" <<<"$out"
run "$SHMBUS" peek "$CH" --bus "$BUS" --from earliest -n 0 --format json; json=$(head -n 1 <<<"$out")
check "peek -n 0 reads up to the head" test "$(wc -l <<<"$out")" -eq 10
json_check "peek --format json" "assert d['sequence'] == 0 and d['payload'] == 'message 0' and d['length'] == 9, d"
run "$SHMBUS" peek "$CH" --bus "$BUS" --from 9 --format hex
check "peek --format hex dumps bytes" grep -q "6d 65 73 73 61 67 65 20 39" <<<"$out"
run "$SHMBUS" peek "$CH" --bus "$BUS" --from -1h -n 1
check "peek --from -1h starts at the oldest message" grep -q "^#0 " <<<"$out"
run "$SHMBUS" peek "$CH" --bus "$BUS" --from yesterday
check "peek with a bad --from exits 1 and says why" test "$rc" -eq 1 -a -n "$(grep 'bad start position' "$TMP/err")"
run "$SHMBUS" tail "$CH" --bus "$BUS" -n 2
check "tail -n 2 prints the last two" test "$(grep -c '^#' <<<"$out")" -eq 2 -a -n "$(grep '^#9 ' <<<"$out")"
json=$("$SHMBUS" stat "$CH" --bus "$BUS" --json)
json_check "peek and tail moved no cursor" "
(s,) = [s for s in d['subscribers'] if s['name'] == 'lagger']
assert s['cursor'] == 3 and d['groups'][0]['next'] == 3, d"

# tail -f follows new messages; publish feeds them from the shell. tail
# prints the last message first: once that line is read it has taken the
# head, so what is published next is new to it.
mkfifo "$TMP/tail.out"
"$SHMBUS" tail "$CH" --bus "$BUS" -n 1 -f >"$TMP/tail.out" &
TAIL_PID=$!
exec {TFD}<"$TMP/tail.out"
read -r -t 30 line <&"$TFD"
check "tail -f starts with the last message" grep -q "^#9 " <<<"$line"
printf 'alpha\nbeta\ngamma\n' | "$SHMBUS" publish "$CH" --bus "$BUS" --key 7 2>"$TMP/err"
check "publish says what it published" grep -q "3 message(s) published" "$TMP/err"
got=()
for i in 1 2 3; do read -r -t 30 line <&"$TFD"; got+=("$line"); done
check "tail -f printed the published lines in order" \
  test "${got[0]##* }${got[1]##* }${got[2]##* }" = "alphabetagamma"
check "tail -f shows the key" grep -q "key=7" <<<"${got[0]}"
kill -TERM "$TAIL_PID"; wait "$TAIL_PID"; rc=$?; TAIL_PID=
check "tail -f exits 0 on SIGTERM" test "$rc" -eq 0
exec {TFD}<&-

# ---- subscribe: as a durable subscriber and through a group ------------------
run "$SHMBUS" subscribe "$CH" --bus "$BUS" --name reader --from earliest -n 13
check "subscribe reads 13 messages" test "$(grep -c '^#' <<<"$out")" -eq 13
run "$SHMBUS" subscribe "$CH" --bus "$BUS" --group shell --from earliest -n 13 --format json
check "subscribe --group receives 13 messages" test "$(wc -l <<<"$out")" -eq 13
json=$("$SHMBUS" stat "$CH" --bus "$BUS" --json)
json_check "subscribe left a durable cursor at 13 and group 'shell' acked 13" "
(s,) = [s for s in d['subscribers'] if s['name'] == 'reader']
assert s['cursor'] == 13 and s['durable'] is True, s
(g,) = [g for g in d['groups'] if g['name'] == 'shell']
assert g['acked'] == 13 and g['floor'] == 13, g"

# ---- dlq list / show / redrive -------------------------------------------------
run "$SHMBUS" dlq list workers --bus "$BUS"; echo "$out"
check "dlq list exits 0" test "$rc" -eq 0
check "dlq list shows the rejected message" grep -Eq "^0 +$CH +1 +workers +1 +rejected .* message 1$" <<<"$out"
run "$SHMBUS" dlq list workers --bus "$BUS" --json; json=$out
json_check "dlq list --json" "
(l,) = d['dead_letters']
assert l['original_sequence'] == 1 and l['reason'] == 'rejected' and l['group'] == 'workers', l"
run "$SHMBUS" dlq show workers 0 --bus "$BUS"
check "dlq show prints the original payload" grep -q "message 1$" <<<"$out"
check "dlq show prints the reason" grep -q "reason rejected" <<<"$out"
run "$SHMBUS" dlq show workers 5 --bus "$BUS"
check "dlq show of a missing letter exits 2" test "$rc" -eq 2
run "$SHMBUS" dlq list nosuchgroup --bus "$BUS"
check "dlq list of an unknown group exits 2" test "$rc" -eq 2
run "$SHMBUS" dlq redrive workers --bus "$BUS"
check "dlq redrive redrives one" grep -q "^redrove 1 dead letter(s) from $CH-dlq to $CH" <<<"$out"
json=$("$SHMBUS" stat "$CH" --bus "$BUS" --json)
json_check "after redrive: DLQ empty, message republished" "
assert d['head'] == 14, d
(g,) = [g for g in d['groups'] if g['name'] == 'workers']
assert g['dlq']['depth'] == 0, g"
run "$SHMBUS" peek "$CH" --bus "$BUS" --from 13 -n 1
check "the redriven message is the original payload" grep -q "message 1$" <<<"$out"

# ---- create / gc / rm ----------------------------------------------------------
run "$SHMBUS" create scratch --bus "$BUS" --capacity 16 --slot-size 128 --policy drop_oldest
check "create exits 0" test "$rc" -eq 0
run "$SHMBUS" create scratch --bus "$BUS"
check "create of an existing channel fails with a reason" test "$rc" -eq 1 -a -n "$(grep already_exists "$TMP/err")"
run "$SHMBUS" create bad --bus "$BUS" --capacity 1000
check "create with a bad capacity names the field" test "$rc" -eq 1 -a -n "$(grep -i capacity "$TMP/err")"
run "$SHMBUS" gc --bus "$BUS" --dry-run --min-age 0; echo "$out"
check "gc --dry-run would remove the unused channel" grep -q "^scratch: would remove" <<<"$out"
check "gc --dry-run would reclaim the dead consumer" grep -q "^$CH: would reclaim" <<<"$out"
check "gc --dry-run changed nothing" test -e "/dev/shm/shmbus.$BUS.scratch"
run "$SHMBUS" gc --bus "$BUS" --min-age 0; echo "$out"
check "gc removed the unused channel" test ! -e "/dev/shm/shmbus.$BUS.scratch"
json=$("$SHMBUS" stat "$CH" --bus "$BUS" --json)
json_check "gc freed the dead consumer and made its lease due" "
(g,) = [g for g in d['groups'] if g['name'] == 'workers']
assert g['consumers_total'] == 0 and g['dead_consumer_releases'] >= 1, g
assert g['in_flight'] == 0 and g['due'] == 1, g"

# ---- bad input ------------------------------------------------------------------
run "$SHMBUS" stat no_such_channel --bus "$BUS"
check "unknown channel exits 2" test "$rc" -eq 2
check "unknown channel says so on stderr" grep -q "no channel 'no_such_channel'" "$TMP/err"
# A copy of a good segment with another layout version (offset 8), and one
# with an impossible capacity (offset 68).
patch_copy() {  # patch_copy NAME OFFSET U32
  cp "/dev/shm/shmbus.$BUS.$CH" "/dev/shm/shmbus.$BUS.$1"
  python3 -c "import struct, sys
with open(sys.argv[1], 'r+b') as f:
    f.seek(int(sys.argv[2])); f.write(struct.pack('<I', int(sys.argv[3])))" "/dev/shm/shmbus.$BUS.$1" "$2" "$3"
}
patch_copy broken 8 99
patch_copy badcap 68 1000
run "$SHMBUS" ls --bus "$BUS"; echo "$out"
check "ls with corrupted segments exits 1" test "$rc" -eq 1
check "ls still lists the good channel" grep -Eq "^$CH +block +64 +256 +14 " <<<"$out"
check "ls says the version of the other layout" grep -q "^error: broken: version_mismatch: .*99" <<<"$out"
check "ls names the corrupted field" grep -q "^error: badcap: corrupted: .*capacity.*1000" <<<"$out"
run "$SHMBUS" stat broken --bus "$BUS"
check "stat of another version exits 1 and says so" test "$rc" -eq 1 -a -n "$(grep version_mismatch "$TMP/err")"
run "$SHMBUS" check --bus "$BUS"
check "check flags the corrupted segment as critical" test "$rc" -eq 2
if [ "$(id -u)" -eq 0 ] && command -v setpriv >/dev/null; then
  run setpriv --reuid=65534 --regid=65534 --clear-groups "$SHMBUS" stat "$CH" --bus "$BUS"
  check "another uid cannot read a 0600 channel, and is told so" \
    test "$rc" -eq 1 -a -n "$(grep -i 'permission' "$TMP/err")"
else
  echo "skip: permission check needs root (to switch to another uid)"
fi

# ---- rm ---------------------------------------------------------------------------
run "$SHMBUS" rm "$CH" --bus "$BUS" --subscriber reader
check "rm --subscriber forgets a durable cursor" grep -q "^removed durable subscriber 'reader'" <<<"$out"
run "$SHMBUS" rm "$CH" --bus "$BUS" --subscriber reader
check "rm --subscriber of an unknown name exits 2" test "$rc" -eq 2
run "$SHMBUS" rm "$CH" --bus "$BUS" --group shell
check "rm --group removes a group" grep -q "^removed group 'shell'" <<<"$out"
json=$("$SHMBUS" stat "$CH" --bus "$BUS" --json)
json_check "the forgotten subscriber and group are gone" "
assert not [s for s in d['subscribers'] if s['name'] == 'reader'], d['subscribers']
assert [g['name'] for g in d['groups']] == ['workers'], d['groups']"
run "$SHMBUS" rm "$CH" --bus "$BUS"
check "rm refuses while a live process uses the channel" test "$rc" -eq 1 -a -n "$(grep 'live processes' "$TMP/err")"
exec {HOLD[1]}>&-
wait "$HOLD_PID"; HOLD_PID=
run "$SHMBUS" rm "$CH" --bus "$BUS"
check "rm removes it once nobody uses it" test "$rc" -eq 0 -a ! -e "/dev/shm/shmbus.$BUS.$CH"

# ---- a message out of deliveries with no consumer alive ------------------------
# Its last attempt's consumer was killed and nobody is left to receive: stat,
# Prometheus and check --max-dlq count it as due for the DLQ, and gc moves it.
# (A bus of its own, so the gc runs above and below are not disturbed.)
BUS2="${BUS}last"
"$FIXTURE" "$BUS2" last --last-attempt || { echo "FAIL: fixture could not create the last-attempt channel"; fails=$((fails + 1)); }
run "$SHMBUS" stat last --bus "$BUS2"; echo "$out"
check "stat table has a DLQ_DUE column" grep -Eq "^GROUP .* DLQ_DUE " <<<"$out"
json=$("$SHMBUS" stat last --bus "$BUS2" --json)
json_check "stat --json: the dead consumer's last attempt is due for the DLQ, not in flight" "
(g,) = d['groups']
assert g['dlq_due'] == 1 and g['in_flight'] == 0 and g['due'] == 0, g
assert g['consumers_alive'] == 0 and g['dead_lettered'] == 0 and g['dlq']['depth'] == 0, g"
"$SHMBUS" stat last --bus "$BUS2" --prometheus >"$TMP/last.prom"
check "stat --prometheus: dlq_due 1" grep -qx "shmbus_group_dlq_due{bus=\"$BUS2\",channel=\"last\",group=\"workers\"} 1" "$TMP/last.prom"
check "stat --prometheus with dlq_due passes promtool" promtool check metrics <"$TMP/last.prom"
run "$SHMBUS" check --bus "$BUS2" --max-dlq 0
check "check --max-dlq fires on a message due for the DLQ (exit 2)" test "$rc" -eq 2
check "check --max-dlq counts depth + due" grep -q "^CRITICAL last: group workers DLQ last-dlq depth 0 + due 1 = 1 > 0" <<<"$out"
run "$SHMBUS" gc --bus "$BUS2" --keep-unused --dry-run; echo "$out"
check "gc --dry-run would move the due dead letter" grep -q "^last: would move 1 message(s) due for the DLQ" <<<"$out"
run "$SHMBUS" gc --bus "$BUS2" --keep-unused; echo "$out"
check "gc says it moved the due dead letter" grep -q "^last: moved 1 message(s) due for the DLQ to their DLQ" <<<"$out"
json=$("$SHMBUS" stat last --bus "$BUS2" --json)
json_check "after gc: dead-lettered, in the DLQ, nothing due" "
(g,) = d['groups']
assert g['dlq_due'] == 0 and g['dead_lettered'] == 1 and g['floor'] == 1 and g['dlq']['depth'] == 1, g"
run "$SHMBUS" dlq list workers --channel last --bus "$BUS2"; echo "$out"
check "the DLQ holds the message after 1 attempt, reason max_deliveries" grep -Eq "^0 +last +0 +workers +1 +max_deliveries " <<<"$out"
run "$SHMBUS" check --bus "$BUS2" --max-dlq 0
check "check --max-dlq still fires, now on the DLQ's depth" grep -q "^CRITICAL last: group workers DLQ last-dlq depth 1 > 0" <<<"$out"
# ---- peek --from a time older than the ring: the same warning as for a SEQ ----
run "$SHMBUS" create wrapped --bus "$BUS2" --capacity 4 --slot-size 128 --policy drop_oldest
seq 0 9 | "$SHMBUS" publish wrapped --bus "$BUS2" >/dev/null 2>&1
run "$SHMBUS" peek wrapped --bus "$BUS2" --from 2; echo "$out"
check "peek --from an overwritten SEQ warns" grep -q "^shmbus peek: #2 is no longer in the ring; starting at the oldest, #6" "$TMP/err"
run "$SHMBUS" peek wrapped --bus "$BUS2" --from -1d; echo "$out"; cat "$TMP/err"
check "peek --from a time older than the ring warns with the count" grep -q "^shmbus peek: messages since -1d are no longer all in the ring: up to 6 overwritten (#0 to #5); starting at the oldest, #6" "$TMP/err"
check "...and prints what the ring holds" test "$(wc -l <<<"$out")" -eq 4
"$FIXTURE" "$BUS2" last --remove >/dev/null 2>&1
rm -f "/dev/shm/shmbus.$BUS2."*

help_ok() { "$SHMBUS" "$@" --help >/dev/null; }
for c in ls stat watch check metrics peek tail publish subscribe create rm gc dlq "dlq list" "dlq show" "dlq redrive"; do
  # shellcheck disable=SC2086
  check "$c --help" help_ok $c
done
check "top-level --help" help_ok

if [ "$fails" -ne 0 ]; then echo "$fails check(s) failed"; exit 1; fi
echo "all probe checks passed"

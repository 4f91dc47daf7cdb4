#!/usr/bin/env bash
# CLI test of `shmbus` against real channels made by a fixture process: a
# lagging durable subscriber, a group with a dead (SIGKILLed) consumer and a
# DLQ entry, and a live publisher and subscriber held by another process.
# Checks tables, parsed JSON, promtool's verdict on the Prometheus text, a
# curl scrape of `shmbus metrics`, check's exit codes, peek/tail/publish/
# subscribe, dlq list/show/redrive, create/rm/gc (DLQs go with their channel,
# orphaned DLQs are collected), where a new group starts, numeric options
# out of range, a FIFO in place of a segment, and bad input.
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
  [ -n "${HOLDER:-}" ] && kill "$HOLDER" 2>/dev/null
  [ -n "${METRICS_PID:-}" ] && kill "$METRICS_PID" 2>/dev/null
  [ -n "${TAIL_PID:-}" ] && kill "$TAIL_PID" 2>/dev/null
  [ -n "${PUB_PID:-}" ] && kill "$PUB_PID" 2>/dev/null
  [ -n "${DLQSUB_PID:-}" ] && kill "$DLQSUB_PID" 2>/dev/null
  [ -n "${FOLLOW_PID:-}" ] && kill "$FOLLOW_PID" 2>/dev/null
  for c in "$CH" scratch broken badcap fresh kept goodnum; do "$FIXTURE" "$BUS" "$c" --remove >/dev/null 2>&1; done
  rm -f "/dev/shm/shmbus.$BUS."* "/dev/shm/shmbus.${BUS}last."*
  rm -rf "$TMP"
}
trap cleanup EXIT

"$FIXTURE" "$BUS" "$CH" || { echo "FAIL: fixture could not create the channel"; exit 1; }
# A live publisher and subscriber, held until we close the fixture's stdin.
coproc HOLD { "$FIXTURE" "$BUS" "$CH" --hold; }
# bash unsets HOLD_PID once the coproc exits (and may have reaped it by the
# time we wait): keep the pid under a name of our own.
HOLDER=$HOLD_PID
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
check "ls --prometheus: the DLQ's retainer is labelled" \
  grep -qx "shmbus_subscriber_lag{bus=\"$BUS\",channel=\"$CH-dlq\",subscriber=\"dlq\",role=\"dlq_retainer\"} 1" "$TMP/ls.prom"
check "ls --prometheus: other subscribers carry no role" \
  grep -qx "shmbus_subscriber_lag{bus=\"$BUS\",channel=\"$CH\",subscriber=\"lagger\"} 7" "$TMP/ls.prom"
"$SHMBUS" stat "$CH-dlq" --bus "$BUS" --prometheus >"$TMP/dlq.prom"
check "stat --prometheus of the DLQ alone labels its retainer" \
  grep -qx "shmbus_subscriber_lag{bus=\"$BUS\",channel=\"$CH-dlq\",subscriber=\"dlq\",role=\"dlq_retainer\"} 1" "$TMP/dlq.prom"

# Subscriber names that are not UTF-8 (the name words of two real entries
# overwritten with the same bytes, as a corrupted or hostile segment may hold
# them): the text stays valid for the whole bus, every series unique.
"$SHMBUS" create badname --bus "$BUS" --capacity 16 2>/dev/null
echo one | "$SHMBUS" publish badname --bus "$BUS" 2>/dev/null
"$SHMBUS" subscribe badname --bus "$BUS" --name victim1 --from earliest -n 1 >/dev/null
"$SHMBUS" subscribe badname --bus "$BUS" --name victim2 --from earliest -n 1 >/dev/null
check "two durable subscribers' names are overwritten with bytes that are not UTF-8" python3 - "/dev/shm/shmbus.$BUS.badname" <<'PY'
import struct, sys
with open(sys.argv[1], 'r+b') as f:
    hdr = f.read(4096)
    max_subscribers = struct.unpack_from('<I', hdr, 72)[0]
    subscribers_offset = struct.unpack_from('<Q', hdr, 112)[0]
    n = 0
    for i in range(max_subscribers):
        name_at = subscribers_offset + 256 * i + 32  # SubscriberEntry.name
        f.seek(name_at)
        if f.read(64).rstrip(b'\0') in (b'victim1', b'victim2'):
            f.seek(name_at)
            f.write(b'vic\xfftim\xc0"\\\n\xe2\x82'.ljust(64, b'\0'))
            n += 1
sys.exit(0 if n == 2 else 'victim1 and victim2 not found')
PY
"$SHMBUS" stat badname --bus "$BUS" --prometheus >"$TMP/badname.prom"
check "stat --prometheus with names that are not UTF-8 passes promtool check metrics" \
  promtool check metrics <"$TMP/badname.prom"
bad_label="subscriber=\"vic"$'\xef\xbf\xbd'"tim"$'\xef\xbf\xbd'"\\\"\\\\\\n"$'\xef\xbf\xbd'
check "the bad bytes are replaced, quote, backslash and newline escaped, the entries told apart" \
  test "$(grep -F "shmbus_subscriber_lag{" "$TMP/badname.prom" | grep -cF -e "$bad_label#0\"} 0" -e "$bad_label#1\"} 0")" -eq 2
"$SHMBUS" ls --bus "$BUS" --prometheus >"$TMP/ls-badname.prom"
check "ls --prometheus with names that are not UTF-8 passes promtool check metrics" \
  promtool check metrics <"$TMP/ls-badname.prom"
"$FIXTURE" "$BUS" badname --remove >/dev/null 2>&1

# Producer totals across a publisher's exit: a publisher attached (publish
# reading a FIFO) publishes 3 after an earlier one published 1 and exited;
# the totals keep both, also once this one exits; a later publisher's
# timeout stays counted after it exits.
prom_total() {  # prom_total FAMILY FILE: the value on channel mono
  awk -v k="$1{bus=\"$BUS\",channel=\"mono\"}" '$1 == k { print $2 }' "$2"
}
"$SHMBUS" create mono --bus "$BUS" --capacity 16 2>/dev/null
echo first | "$SHMBUS" publish mono --bus "$BUS" 2>/dev/null
"$SHMBUS" subscribe mono --bus "$BUS" --name holder --from earliest -n 1 >/dev/null  # holds the ring at 1
mkfifo "$TMP/pub.in"
"$SHMBUS" publish mono --bus "$BUS" <"$TMP/pub.in" 2>/dev/null &
PUB_PID=$!
exec {PFD}>"$TMP/pub.in"
printf 'a\nb\nc\n' >&"$PFD"
for _ in $(seq 300); do  # until the 3 lines are in (the head, from another family, says so)
  "$SHMBUS" stat mono --bus "$BUS" --prometheus >"$TMP/mono1.prom"
  [ "$(prom_total shmbus_channel_messages_total "$TMP/mono1.prom")" = 4 ] && break
  sleep 0.1
done
check "a live publisher published 3 after one that exited" test "$(prom_total shmbus_channel_messages_total "$TMP/mono1.prom")" = 4
check "published_total counts the exited publisher too" test "$(prom_total shmbus_producer_published_total "$TMP/mono1.prom")" = 4
exec {PFD}>&-
wait "$PUB_PID"; PUB_PID=
"$SHMBUS" stat mono --bus "$BUS" --prometheus >"$TMP/mono2.prom"
check "published_total stays at 4 after the live publisher exited" \
  test "$(prom_total shmbus_producer_published_total "$TMP/mono2.prom")" = 4
seq 1 14 | "$SHMBUS" publish mono --bus "$BUS" --timeout 0 2>/dev/null  # 13 fill the ring, the 14th times out
"$SHMBUS" ls --bus "$BUS" --prometheus >"$TMP/mono3.prom"
check "after a publisher that timed out exited: published_total 17" \
  test "$(prom_total shmbus_producer_published_total "$TMP/mono3.prom")" = 17
check "after a publisher that timed out exited: timeouts_total 1" \
  test "$(prom_total shmbus_producer_timeouts_total "$TMP/mono3.prom")" = 1
check "blocked_seconds_total is still there after the publishers exited" \
  test -n "$(prom_total shmbus_producer_blocked_seconds_total "$TMP/mono3.prom")"
"$FIXTURE" "$BUS" mono --remove >/dev/null 2>&1

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
check "peek text shows the message id" grep -q "^#2 .* id=5002 len=9 " <<<"$out"
run "$SHMBUS" peek "$CH" --bus "$BUS" --from earliest -n 0 --format json; json=$(head -n 1 <<<"$out")
check "peek -n 0 reads up to the head" test "$(wc -l <<<"$out")" -eq 10
json_check "peek --format json" "assert d['sequence'] == 0 and d['payload'] == 'message 0' and d['length'] == 9, d
assert d['id'] == 5000 and d['key'] == 0, d"
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
printf 'alpha\nbeta\ngamma\n' | "$SHMBUS" publish "$CH" --bus "$BUS" --key 7 --id 900 2>"$TMP/err"
check "publish says what it published" grep -q "3 message(s) published" "$TMP/err"
got=()
for i in 1 2 3; do read -r -t 30 line <&"$TFD"; got+=("$line"); done
check "tail -f printed the published lines in order" \
  test "${got[0]##* }${got[1]##* }${got[2]##* }" = "alphabetagamma"
check "tail -f shows the key" grep -q "key=7" <<<"${got[0]}"
check "publish --id gives each line the next id" \
  test -n "$(grep "key=7 .*id=900 " <<<"${got[0]}")" -a -n "$(grep "key=7 .*id=902 " <<<"${got[2]}")"
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
assert l['original_sequence'] == 1 and l['reason'] == 'rejected' and l['group'] == 'workers', l
assert l['id'] == 5001 and l['key'] == 0, l"
run "$SHMBUS" dlq show workers 0 --bus "$BUS"
check "dlq show prints the original payload" grep -q "message 1$" <<<"$out"
check "dlq show prints the reason" grep -q "reason rejected" <<<"$out"
check "dlq show prints the message id the DLQ kept" grep -q "id=5001 " <<<"$out"
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
check "the redriven message keeps its message id" grep -q "^#13 .* id=5001 " <<<"$out"

# ---- create / gc / rm ----------------------------------------------------------
run "$SHMBUS" create scratch --bus "$BUS" --capacity 16 --slot-size 128 --policy drop_oldest
check "create exits 0" test "$rc" -eq 0
run "$SHMBUS" create scratch --bus "$BUS"
check "create of an existing channel fails with a reason" test "$rc" -eq 1 -a -n "$(grep already_exists "$TMP/err")"
run "$SHMBUS" create bad --bus "$BUS" --capacity 1000
check "create with a bad capacity names the field" test "$rc" -eq 1 -a -n "$(grep -i capacity "$TMP/err")"
run "$SHMBUS" create stamped --bus "$BUS" --capacity 16 --timestamps realtime
check "create --timestamps realtime says so" grep -q "timestamps realtime" <<<"$out"
json=$("$SHMBUS" stat stamped --bus "$BUS" --json)
json_check "stat --json shows the timestamp source" "assert d['timestamps'] == 'realtime', d['timestamps']"
"$SHMBUS" rm stamped --bus "$BUS" >/dev/null
run "$SHMBUS" create stamped --bus "$BUS" --timestamps sundial
check "create with a bad --timestamps names the choices" test "$rc" -eq 1 -a -n "$(grep "tsc, realtime or none" "$TMP/err")"
run "$SHMBUS" gc --bus "$BUS" --dry-run --min-age 0; echo "$out"
check "gc --dry-run would remove the unused channel" grep -q "^scratch: would remove" <<<"$out"
check "gc --dry-run would reclaim the dead consumer" grep -q "^$CH: would reclaim" <<<"$out"
check "gc --dry-run changed nothing" test -e "/dev/shm/shmbus.$BUS.scratch"
check "gc --dry-run leaves a DLQ whose source channel exists" bash -c '! grep -q "^$1-dlq:.*remove" <<<"$2"' _ "$CH" "$out"
run "$SHMBUS" gc --bus "$BUS" --min-age 0; echo "$out"
check "gc removed the unused channel" test ! -e "/dev/shm/shmbus.$BUS.scratch"
json=$("$SHMBUS" stat "$CH" --bus "$BUS" --json)
json_check "gc freed the dead consumer and made its lease due" "
(g,) = [g for g in d['groups'] if g['name'] == 'workers']
assert g['consumers_total'] == 0 and g['dead_consumer_releases'] >= 1, g
assert g['in_flight'] == 0 and g['due'] == 1, g"

# ---- a new group starts where the API starts (earliest) --------------------------
run "$SHMBUS" create fresh --bus "$BUS" --capacity 16
printf 'one\ntwo\nthree\n' | "$SHMBUS" publish fresh --bus "$BUS" 2>/dev/null
# Without the fix the group starts at the latest message and sees nothing:
# --idle-exit only ends that wait.
run "$SHMBUS" subscribe fresh --bus "$BUS" --group newgrp -n 3 --idle-exit 10
check "subscribe --group without --from starts a new group at the earliest message" \
  test "$rc" -eq 0 -a "$(grep -c '^#' <<<"$out")" -eq 3 -a -n "$(grep '^#0 .*  one$' <<<"$out")"
run "$SHMBUS" subscribe fresh --bus "$BUS" --idle-exit 0.2
check "subscribe without --group or --from starts at the latest message (as SubscribeOptions)" \
  test "$rc" -eq 0 -a -z "$out"
check "subscribe --help says where each starts" \
  bash -c '"$1" subscribe --help | tr -s " \n" " " | grep -q "latest for a subscriber, earliest for a group"' _ "$SHMBUS"

# ---- a DLQ goes with its channel (unless --keep-dlq); gc collects orphaned DLQs ----
check "joining a group made the DLQ channel" test -e "/dev/shm/shmbus.$BUS.fresh-dlq"
# A live reader of the DLQ makes rm refuse (the DLQ would go too). Wait for
# its table entry to show before trying.
"$SHMBUS" subscribe fresh-dlq --bus "$BUS" >/dev/null 2>&1 &
DLQSUB_PID=$!
for _ in $(seq 200); do
  "$SHMBUS" stat fresh-dlq --bus "$BUS" | grep -Eq "^- +active +$DLQSUB_PID +yes " && break
  sleep 0.05
done
run "$SHMBUS" rm fresh --bus "$BUS"
check "rm refuses while a live process uses the channel's DLQ, and says how to go on" \
  test "$rc" -eq 1 -a -e "/dev/shm/shmbus.$BUS.fresh" -a -n "$(grep "DLQ channel 'fresh-dlq' has 1 entries owned by live processes; --keep-dlq" "$TMP/err")"
kill -TERM "$DLQSUB_PID"; wait "$DLQSUB_PID"; DLQSUB_PID=
run "$SHMBUS" rm fresh --bus "$BUS"; echo "$out"
check "rm exits 0" test "$rc" -eq 0
check "rm removed the channel" test ! -e "/dev/shm/shmbus.$BUS.fresh"
check "rm removed its group's DLQ and says so" \
  test ! -e "/dev/shm/shmbus.$BUS.fresh-dlq" -a -n "$(grep '^removed DLQ channel fresh-dlq of channel fresh' <<<"$out")"
run "$SHMBUS" create kept --bus "$BUS" --capacity 16
run "$SHMBUS" subscribe kept --bus "$BUS" --group g1 --idle-exit 0.1
run "$SHMBUS" rm kept --bus "$BUS" --keep-dlq
check "rm --keep-dlq keeps the DLQ" test "$rc" -eq 0 -a ! -e "/dev/shm/shmbus.$BUS.kept" -a -e "/dev/shm/shmbus.$BUS.kept-dlq"
run "$SHMBUS" gc --bus "$BUS" --min-age 3600; echo "$out"
check "gc --min-age leaves a younger orphaned DLQ" test -e "/dev/shm/shmbus.$BUS.kept-dlq"
run "$SHMBUS" gc --bus "$BUS" --min-age 0 --dry-run; echo "$out"
check "gc --dry-run would remove the orphaned DLQ" grep -q "^kept-dlq: would remove orphaned DLQ (source kept is gone" <<<"$out"
check "gc --dry-run left the orphaned DLQ" test -e "/dev/shm/shmbus.$BUS.kept-dlq"
run "$SHMBUS" gc --bus "$BUS" --min-age 0; echo "$out"
check "gc removed the orphaned DLQ" test "$rc" -eq 0 -a ! -e "/dev/shm/shmbus.$BUS.kept-dlq"
check "gc says it removed the orphaned DLQ" grep -q "^kept-dlq: remove orphaned DLQ (source kept is gone" <<<"$out"
check "gc left the DLQ whose source exists" test -e "/dev/shm/shmbus.$BUS.$CH-dlq"

# ---- numbers: negative, nan, inf and out-of-range values are refused ----------------
bad_number() {  # bad_number RC OPTION COMMAND...: exits RC, names OPTION and its range MIN..MAX
  local want="$1" opt="$2"; shift 2
  # (timeout: an accepted bad value can mean waiting for ever)
  out=$(timeout 10 "$SHMBUS" "$@" </dev/null 2>"$TMP/err"); rc=$?
  test "$rc" -eq "$want" && grep -Eq -- "$opt.* in [0-9.]+\.\.[0-9.e+]+" "$TMP/err"
}
for v in -1 nan inf 1e30; do
  check "create --unblock-timeout $v" bad_number 1 --unblock-timeout create badnum --bus "$BUS" --unblock-timeout "$v"
  check "create --eviction-timeout $v" bad_number 1 --eviction-timeout create badnum --bus "$BUS" --eviction-timeout "$v"
  check "create --capacity $v" bad_number 1 --capacity create badnum --bus "$BUS" --capacity "$v"
  check "create --max-groups $v" bad_number 1 --max-groups create badnum --bus "$BUS" --max-groups "$v"
  check "publish --timeout $v" bad_number 1 --timeout publish "$CH" --bus "$BUS" --timeout "$v"
  check "publish --key $v" bad_number 1 --key publish "$CH" --bus "$BUS" --key "$v"
  check "publish --id $v" bad_number 1 --id publish "$CH" --bus "$BUS" --id "$v"
  check "subscribe --idle-exit $v" bad_number 1 --idle-exit subscribe "$CH" --bus "$BUS" --idle-exit "$v"
  check "subscribe -n $v" bad_number 1 --count subscribe "$CH" --bus "$BUS" -n "$v"
  check "peek -n $v" bad_number 1 --count peek "$CH" --bus "$BUS" -n "$v"
  check "tail --idle-exit $v" bad_number 1 --idle-exit tail "$CH" --bus "$BUS" -f --idle-exit "$v"
  check "watch --interval $v" bad_number 1 --interval watch "$CH" --bus "$BUS" --interval "$v"
  check "watch --count $v" bad_number 1 --count watch "$CH" --bus "$BUS" --count "$v"
  check "check --max-lag $v" bad_number 3 --max-lag check --bus "$BUS" --max-lag "$v"
  check "check --max-oldest-unacked 1,$v" bad_number 3 --max-oldest-unacked check --bus "$BUS" --max-oldest-unacked "1,$v"
  check "gc --min-age $v" bad_number 1 --min-age gc --bus "$BUS" --dry-run --min-age "$v"
  check "dlq show $v" bad_number 1 DLQ_SEQ dlq show workers "$v" --bus "$BUS"
  check "dlq redrive --max $v" bad_number 1 --max dlq redrive workers --bus "$BUS" --max "$v"
  check "bridge to-redis --reconnect-timeout $v" \
    bad_number 1 --reconnect-timeout bridge to-redis "$CH" --bus "$BUS" --stream s --reconnect-timeout "$v"
  check "bridge from-redis --block-ms $v" \
    bad_number 1 --block-ms bridge from-redis "$CH" --bus "$BUS" --stream s --group g --block-ms "$v"
done
check "create --capacity past 2^64" bad_number 1 --capacity create badnum --bus "$BUS" --capacity 99999999999999999999
check "publish --key past 2^64" bad_number 1 --key publish "$CH" --bus "$BUS" --key 18446744073709551616
check "bridge --db -1" bad_number 1 --db bridge to-redis "$CH" --bus "$BUS" --stream s --db -1
check "metrics --listen with a bad port" bad_number 1 --listen metrics --bus "$BUS" --listen 127.0.0.1:65536
check "metrics --listen with a port followed by junk" bad_number 1 --listen metrics --bus "$BUS" --listen 127.0.0.1:80x
check "create --mode -1" bad_number 1 --mode create badnum --bus "$BUS" --mode -1
check "no refused create made a channel" test ! -e "/dev/shm/shmbus.$BUS.badnum"
run "$SHMBUS" create goodnum --bus "$BUS" --unblock-timeout 0.5 --eviction-timeout 2.5 --capacity 16
check "create takes fractional seconds in range" test "$rc" -eq 0
run "$SHMBUS" rm goodnum --bus "$BUS"

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
# A FIFO where a segment should be: an open of it would block for ever.
mkfifo "/dev/shm/shmbus.$BUS.jobs"
for c in stat peek tail; do
  run timeout 10 "$SHMBUS" "$c" jobs --bus "$BUS"
  check "$c of a FIFO does not block" test "$rc" -ne 124
  check "$c of a FIFO exits 1 and says what it is" test "$rc" -eq 1 -a -n "$(grep "is a FIFO" "$TMP/err")"
done
run timeout 10 "$SHMBUS" ls --bus "$BUS"; echo "$out"
check "ls with a FIFO on the bus does not block" test "$rc" -ne 124
check "ls with a FIFO on the bus still lists the good channel" grep -Eq "^$CH +block " <<<"$out"
# Needs Channel::list to report entries that are not regular files (the
# library change in shm/segment.cpp); fails until that is merged.
check "ls reports the FIFO and goes on" grep -q "^error: jobs: .*is a FIFO" <<<"$out"
run timeout 10 "$SHMBUS" rm jobs --bus "$BUS" --force
check "rm --force of a FIFO does not block" test "$rc" -ne 124
check "rm --force removes the FIFO" test "$rc" -eq 0 -a ! -e "/dev/shm/shmbus.$BUS.jobs"
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
wait "$HOLDER" 2>/dev/null || true; HOLDER=
run "$SHMBUS" rm "$CH" --bus "$BUS" --keep-dlq
check "rm removes it once nobody uses it" test "$rc" -eq 0 -a ! -e "/dev/shm/shmbus.$BUS.$CH"
check "rm --keep-dlq kept its DLQ" test -e "/dev/shm/shmbus.$BUS.$CH-dlq"
rm -f "/dev/shm/shmbus.$BUS.broken" "/dev/shm/shmbus.$BUS.badcap"
run "$SHMBUS" gc --bus "$BUS" --min-age 0; echo "$out"
check "gc removes an orphaned DLQ whose dead letters name the gone source" \
  test "$rc" -eq 0 -a ! -e "/dev/shm/shmbus.$BUS.$CH-dlq" -a -n "$(grep "^$CH-dlq: remove orphaned DLQ (source $CH is gone" <<<"$out")"

# Removal and truncation under live followers (issue: removal under live
# users; a shrunk segment). A follower that only peeks has no table entry,
# but it has the channel open: gc keeps the channel, rm refuses without
# --force, and once it is removed (or truncated) the follower stops with a
# message instead of following a dead segment for ever.
follow_start() {  # follow_start CHANNEL CMD...: starts CMD, waits for its first line
  local chan="$1"; shift
  rm -f "$TMP/follow.out"; mkfifo "$TMP/follow.out"
  timeout 60 "$@" >"$TMP/follow.out" 2>"$TMP/follow.err" &
  FOLLOW_PID=$!
  exec {FFD}<"$TMP/follow.out"
  read -r -t 30 line <&"$FFD"
  check "$chan: the follower printed its first message" grep -q "first" <<<"$line"
}
follow_end() {  # follow_end: waits for the follower; sets rc
  wait "$FOLLOW_PID"; rc=$?; FOLLOW_PID=
  exec {FFD}<&-
}
"$SHMBUS" create followed --bus "$BUS" >/dev/null
echo first | "$SHMBUS" publish followed --bus "$BUS" 2>/dev/null
follow_start followed "$SHMBUS" tail followed --bus "$BUS" -n 1 -f
run "$SHMBUS" gc --bus "$BUS" --min-age 0
check "gc keeps a channel open in a live process with no table entry" \
  test -e "/dev/shm/shmbus.$BUS.followed" -a -n "$(grep '^followed: kept (open in a live process)' <<<"$out")"
run "$SHMBUS" rm followed --bus "$BUS"
check "rm refuses a channel open in a live process" test "$rc" -eq 1 -a -n "$(grep 'open in a live process' "$TMP/err")"
run "$SHMBUS" rm followed --bus "$BUS" --force
check "rm --force removes it anyway" test "$rc" -eq 0 -a ! -e "/dev/shm/shmbus.$BUS.followed"
follow_end
check "tail -f stops when its channel is removed (not a hang: 124)" test "$rc" -eq 1
check "tail -f says the channel was removed" grep -q "'followed' was removed" "$TMP/follow.err"

"$SHMBUS" create followed --bus "$BUS" >/dev/null
echo first | "$SHMBUS" publish followed --bus "$BUS" 2>/dev/null
follow_start followed "$SHMBUS" subscribe followed --bus "$BUS" --name keeper --from earliest
run "$SHMBUS" rm followed --bus "$BUS" --force
follow_end
check "subscribe stops when its channel is removed" test "$rc" -eq 1
check "subscribe says the channel was removed" grep -q "'followed' was removed" "$TMP/follow.err"

"$SHMBUS" create followed --bus "$BUS" >/dev/null
echo first | "$SHMBUS" publish followed --bus "$BUS" 2>/dev/null
follow_start followed "$SHMBUS" tail followed --bus "$BUS" -n 1 -f
truncate -s 4096 "/dev/shm/shmbus.$BUS.followed"
follow_end
check "tail -f survives its segment being truncated and stops (no SIGBUS: 135)" test "$rc" -eq 1
check "tail -f says the segment was truncated" grep -q "'followed' lost its pages" "$TMP/follow.err"
run "$SHMBUS" stat followed --bus "$BUS"
check "stat of a truncated channel is an error, not a crash" test "$rc" -eq 1
rm -f "/dev/shm/shmbus.$BUS.followed"

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

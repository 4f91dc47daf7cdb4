#!/usr/bin/env bash
# Test of the `shmbus metrics` HTTP server against clients that misbehave:
# idle connections, a client that asks for /metrics and never reads the
# answer, a flood past --max-connections; an IPv6 listen address; the warning
# for an address reachable from other hosts; bad options. Every scrape runs
# under `curl --max-time`, a generous bound that only detects a hang.
# Usage: metrics_test.sh PATH/TO/shmbus PATH/TO/shmbus_probe_fixture
set -u
SHMBUS="$1"
FIXTURE="$2"
# Long bus and channel names (63 characters, the most) make a large page.
BUS=$(printf 'metricstest%s_%063d' "$$" 0 | cut -c1-63)
CH="orders"
WIDE=$(printf 'wide%059d' 0)
TMP=$(mktemp -d)
fails=0
check() {  # check DESCRIPTION COMMAND...
  local what="$1"; shift
  if "$@"; then echo "ok: $what"; else echo "FAIL: $what"; fails=$((fails + 1)); fi
}
cleanup() {
  [ -n "${METRICS_PID:-}" ] && kill "$METRICS_PID" 2>/dev/null
  [ -n "${PEER_PID:-}" ] && kill "$PEER_PID" 2>/dev/null
  "$FIXTURE" "$BUS" "$CH" --remove >/dev/null 2>&1
  "$FIXTURE" "$BUS" "$WIDE" --remove >/dev/null 2>&1
  rm -f "/dev/shm/shmbus.$BUS."*
  rm -rf "$TMP"
}
trap cleanup EXIT

# A peer that holds sockets open until its stdin closes.
#   peer.py HOST PORT idle N   N connections that send nothing
#   peer.py HOST PORT stuck N  N connections with a tiny receive buffer that
#                              send GET /metrics and stop reading once an
#                              answer has begun
cat >"$TMP/peer.py" <<'EOF'
import select, socket, sys
host, port, mode, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
family = socket.AF_INET6 if ':' in host else socket.AF_INET
socks = []
for _ in range(n):
    s = socket.socket(family, socket.SOCK_STREAM)
    if mode == 'stuck':
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
    s.connect((host, port))
    socks.append(s)
if mode == 'stuck':
    for s in socks:
        s.sendall(b'GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n')
    select.select(socks, [], [])  # the server is writing an answer
print('ready', flush=True)
sys.stdin.read()
EOF
# listen_backlog PORT: connections waiting in the listening socket's accept
# queue (rx_queue of a LISTEN entry in /proc/net/tcp or tcp6), -1 if none.
listen_backlog() {
  local hex queues
  hex=$(printf '%04X' "$1")
  queues=$(awk -v p=":$hex" '$2 ~ (p "$") && $4 == "0A" {print $5; exit}' /proc/net/tcp /proc/net/tcp6)
  if [ -n "$queues" ]; then echo $((16#${queues#*:})); else echo -1; fi
}

start_metrics() {  # start_metrics ARGS...: sets METRICS_PID, url, port, host
  rm -f "$TMP/metrics.out"
  mkfifo "$TMP/metrics.out"
  "$SHMBUS" metrics --bus "$BUS" "$@" >"$TMP/metrics.out" 2>"$TMP/metrics.err" &
  METRICS_PID=$!
  exec {MFD}<"$TMP/metrics.out"
  line=""
  read -r line <&"$MFD"
  url=$(grep -o 'http://[^ ]*' <<<"$line")
  port=$(sed -E 's|.*:([0-9]+)/metrics$|\1|' <<<"$url")
  host=$(sed -E 's|^http://\[?([^]/]*)\]?:[0-9]+/metrics$|\1|' <<<"$url")
}
stop_metrics() {  # sets rc
  kill -TERM "$METRICS_PID"; wait "$METRICS_PID"; rc=$?; METRICS_PID=
  exec {MFD}<&-
}
start_peer() {  # start_peer HOST PORT MODE N: returns once the peer is ready
  rm -f "$TMP/peer.in" "$TMP/peer.out"
  mkfifo "$TMP/peer.in" "$TMP/peer.out"
  python3 "$TMP/peer.py" "$@" <"$TMP/peer.in" >"$TMP/peer.out" &
  PEER_PID=$!
  exec {PEER_IN}>"$TMP/peer.in" {PEER_OUT}<"$TMP/peer.out"
  peer_ready=""
  read -r peer_ready <&"$PEER_OUT"
}
stop_peer() {
  exec {PEER_IN}>&- {PEER_OUT}<&-
  wait "$PEER_PID"; PEER_PID=
}
scrape() {  # scrape URL FILE: a scrape that a wedged server would fail
  # 20 s: a generous bound (a sanitizer build on a busy machine takes a few
  # seconds for the 5 MB page) that still catches a server serving one
  # connection at a time (2 s for each of 20 idle sockets) or stuck on one.
  curl -sfg --max-time 20 "$1" >"$2" && promtool check metrics <"$2"
}

"$FIXTURE" "$BUS" "$CH" || { echo "FAIL: fixture could not create the channel"; exit 1; }
# ---- IPv4 loopback: idle and stuck clients ------------------------------------
start_metrics --listen 127.0.0.1:0
check "metrics says where it serves" test -n "$url" -a -n "$port"
check "no exposure warning on loopback" test ! -s "$TMP/metrics.err"
check "a plain scrape passes promtool" scrape "$url" "$TMP/plain.prom"

start_peer "$host" "$port" idle 20
check "20 idle connections are open" test "$peer_ready" = ready
check "a scrape succeeds while 20 idle connections are open" scrape "$url" "$TMP/idle.prom"
stop_peer

# A channel with 4096 durable subscribers: a page of about 5 MB, more than
# the socket buffers between the server and a client that stops reading can
# hold (the kernel grows a TCP send buffer up to tcp_wmem's maximum).
check "the wide channel is created" "$FIXTURE" "$BUS" "$WIDE" --wide 4096
wmem_max=$(awk '{print $3}' /proc/sys/net/ipv4/tcp_wmem)
check "a scrape of the wide channel passes promtool" scrape "$url" "$TMP/wide.prom"
check "the page is larger than a socket's largest send buffer ($wmem_max bytes)" \
  test "$(wc -c <"$TMP/wide.prom")" -gt "$wmem_max"
start_peer "$host" "$port" stuck 1
check "a client asked for /metrics and stopped reading" test "$peer_ready" = ready
check "a scrape succeeds while a client does not read its answer" scrape "$url" "$TMP/stuck.prom"
check "a second scrape succeeds too" scrape "$url" "$TMP/stuck2.prom"
stop_peer
check "the wide channel is removed" "$FIXTURE" "$BUS" "$WIDE" --remove

timeout 10 "$SHMBUS" metrics --bus "$BUS" --listen "127.0.0.1:$port" >/dev/null 2>"$TMP/twice.err"; rc=$?
check "a second server on the same port fails (exit 1, says why)" \
  test "$rc" -eq 1 -a -n "$(grep 'cannot listen on 127.0.0.1:' "$TMP/twice.err")"
code=$(curl -s --max-time 20 -o /dev/null -w '%{http_code}' "${url%/metrics}/other")
check "other paths answer 404" test "$code" = 404
code=$(curl -s --max-time 20 -o /dev/null -w '%{http_code}' -X POST "$url")
check "POST answers 405" test "$code" = 405
stop_metrics
check "metrics exits 0 on SIGTERM" test "$rc" -eq 0

# ---- the bound: --max-connections 2 -------------------------------------------
# --timeout 60 keeps the idle connections for as long as the test looks.
start_metrics --listen 127.0.0.1:0 --max-connections 2 --timeout 60
start_peer "$host" "$port" idle 5
check "5 idle connections are open" test "$peer_ready" = ready
# Two are served (a thread each), the accept thread holds the third until a
# slot frees, and two wait in the kernel's accept queue.
deadline=$((SECONDS + 20))
while [ "$(listen_backlog "$port")" != 2 ] && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.05; done
check "past --max-connections connections wait in the listen backlog" test "$(listen_backlog "$port")" = 2
threads=$(awk '/^Threads:/ {print $2}' "/proc/$METRICS_PID/status")
check "2 connections hold 2 threads besides main and the signal thread (saw $threads)" test "$threads" -le 4
stop_peer
check "a scrape succeeds once the idle connections are gone" scrape "$url" "$TMP/bound.prom"
stop_metrics
check "metrics --max-connections 2 exits 0 on SIGTERM" test "$rc" -eq 0

# ---- IPv6 ------------------------------------------------------------------------
if grep -q '^00000000000000000000000000000001 .* lo$' /proc/net/if_inet6 2>/dev/null; then
  start_metrics --listen '[::1]:0'
  check "[::1]:0 serves on http://[::1]:PORT" grep -q '^http://\[::1\]:[0-9]*/metrics$' <<<"$url"
  check "a scrape over IPv6 passes promtool" scrape "$url" "$TMP/v6.prom"
  check "no exposure warning on [::1]" test ! -s "$TMP/metrics.err"
  stop_metrics
  check "metrics on [::1] exits 0 on SIGTERM" test "$rc" -eq 0

  start_metrics --listen '[::]:0'
  check "[::]:0 warns that it exposes the bus" grep -q 'exposes the bus to the network' "$TMP/metrics.err"
  check "a scrape of [::]:PORT through ::1 succeeds" scrape "http://[::1]:$port/metrics" "$TMP/v6any.prom"
  stop_metrics
else
  echo "note: no IPv6 loopback (/proc/net/if_inet6 has no ::1 on lo): IPv6 checks skipped"
fi

# ---- every interface: the warning ---------------------------------------------------
start_metrics --listen 0.0.0.0:0
check "0.0.0.0:0 warns that it exposes the bus" grep -q 'warning: --listen 0.0.0.0:0 .*exposes the bus to the network' "$TMP/metrics.err"
check "a scrape of 0.0.0.0:PORT through 127.0.0.1 succeeds" scrape "http://127.0.0.1:$port/metrics" "$TMP/any.prom"
stop_metrics

# ---- bad options -------------------------------------------------------------------
bad() {  # bad EXPECTED-STDERR-REGEX ARGS...: exits 1 at once, naming the option
  local want="$1"; shift
  timeout 10 "$SHMBUS" metrics --bus "$BUS" "$@" >/dev/null 2>"$TMP/bad.err"
  local brc=$?
  [ "$brc" -eq 1 ] && grep -qE -- "$want" "$TMP/bad.err"
}
check "--timeout nan is refused" bad '--timeout: nan is not a number of seconds in 0.1..300' --listen 127.0.0.1:0 --timeout nan
check "--timeout inf is refused" bad 'is not a number of seconds in 0.1..300' --listen 127.0.0.1:0 --timeout inf
check "--timeout -1 is refused" bad 'is not a number of seconds in 0.1..300' --listen 127.0.0.1:0 --timeout -1
check "--timeout 0 is refused" bad 'is not a number of seconds in 0.1..300' --listen 127.0.0.1:0 --timeout 0
check "--timeout 301 is refused" bad 'is not a number of seconds in 0.1..300' --listen 127.0.0.1:0 --timeout 301
check "--max-connections 0 is refused" bad 'is not an integer in 1..1024' --listen 127.0.0.1:0 --max-connections 0
check "--max-connections -3 is refused" bad 'is not an integer in 1..1024' --listen 127.0.0.1:0 --max-connections -3
check "--max-connections 5000 is refused" bad 'is not an integer in 1..1024' --listen 127.0.0.1:0 --max-connections 5000
check "a port past 65535 is refused" bad 'port must be a number in 0..65535' --listen 127.0.0.1:70000
check "a host name is refused" bad 'expected an IPv4 address' --listen localhost:0
check "an unbracketed IPv6 address is refused" bad 'expected an IPv4 address' --listen ::1:0
check "a bad IPv6 address is refused" bad 'is not an IPv6 address' --listen '[::g]:0'

if [ "$fails" -ne 0 ]; then echo "$fails check(s) failed"; exit 1; fi
echo "all metrics checks passed"

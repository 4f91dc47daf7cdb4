#!/usr/bin/env bash
# Runs the examples of examples/ as a user would, and checks what they did.
#
#   examples_test.sh hello PATH/hello_publisher PATH/hello_subscriber
#   examples_test.sh backpressure PATH/backpressure
#   examples_test.sh order-pipeline PATH/order_pipeline PATH/shmbus
#
# order-pipeline is the walkthrough of examples/order_pipeline.cpp: an
# archiver (`shmbus archive run`) keeps every order on disk; billing (four
# workers, a per_key group: each account's orders in order) and email (one)
# consume 200 orders; three billing workers are kill -9ed at chosen points
# (holding an order before charging it; after charging; after complete(),
# before the ack); the poison order lands in the DLQ, `shmbus check` and
# `shmbus dlq list` show it, billing is restarted with the fix and `shmbus
# dlq redrive` sends it back; 600 more orders wrap the 512-slot ring;
# analytics then replays everything from the oldest order, the first ones
# from the archive; verify checks the ledger. Every wait is on an event: a
# line on a FIFO, a process's exit, or a group's or the archiver's state
# (order_pipeline await).
set -u
CASE="${1:-}"
TMP=$(mktemp -d)
BUS="examples$$"
fails=0
PIDS=()

check() {  # check DESCRIPTION COMMAND...
  local what="$1"; shift
  if "$@"; then echo "ok: $what"; else echo "FAIL: $what"; fails=$((fails + 1)); fi
}
run() {  # run CMD...: sets out (stdout and stderr), rc; echoes the output
  out=$("$@" 2>&1); rc=$?
  printf '%s\n' "$out"
}
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  rm -f "/dev/shm/shmbus.$BUS."* "/dev/shm/shmbus-dedup.$BUS."*
  rm -rf "$TMP"
}
trap cleanup EXIT
finish() {
  if [ "$fails" -eq 0 ]; then echo "PASS: $CASE"; exit 0; fi
  echo "$fails check(s) failed in $CASE"; exit 1
}

# ---- hello: the quick-start pair, in both orders ------------------------------
case_hello() {
  local pub="$1" sub="$2"
  # Publisher first: the subscriber starts at the oldest message and still sees all.
  run "$pub" "$BUS"
  check "hello_publisher exits 0" test "$rc" -eq 0
  run "$sub" "$BUS"
  check "hello_subscriber exits 0" test "$rc" -eq 0
  check "subscriber read 10 greetings in order, then bye" \
    test "$(grep -c '^#[0-9]* key=[0-9]*: hello #' <<<"$out")" -eq 10 -a "$(tail -n1 <<<"$out")" = "#10 key=11: bye"
  check "hello #1 is sequence 0, hello #10 sequence 9" grep -q '^#9 key=10: hello #10$' <<<"$out"
  rm -f "/dev/shm/shmbus.$BUS."*
  # Subscriber first: it waits (on the futex) until the publisher comes.
  "$sub" "$BUS" >"$TMP/sub.out" 2>&1 &
  local sp=$!; PIDS+=("$sp")
  run "$pub" "$BUS"
  check "hello_publisher (second run) exits 0" test "$rc" -eq 0
  wait "$sp"; local src=$?
  cat "$TMP/sub.out"
  check "a subscriber started first exits 0 after bye" test "$src" -eq 0
  check "it read all 11 messages" test "$(grep -c '^#' "$TMP/sub.out")" -eq 11
}

# ---- backpressure: block vs drop_oldest vs reject ----------------------------
case_backpressure() {
  local bp="$1"
  run "$bp" --messages 3000 --capacity 64 --work-us 20
  check "backpressure exits 0 (each policy's invariant holds)" test "$rc" -eq 0
  check "block: nothing lost" grep -Eq '^block +delivered == published == offered +holds$' <<<"$out"
  check "drop_oldest: delivered + lost == published" \
    grep -Eq '^drop_oldest +delivered \+ lost == published +holds$' <<<"$out"
  check "reject: delivered == published" grep -Eq '^reject +delivered == published, \+ shed == offered +holds$' <<<"$out"
  check "the table shows every counter" grep -Eq '^subscriber: lost +0 +[0-9]+ +0$' <<<"$out"
  run "$bp" --capacity 1000
  check "a capacity that is not a power of two is refused" test "$rc" -ne 0
  check "...with the reason" grep -q "power of two" <<<"$out"
}

# ---- order pipeline ---------------------------------------------------------------
case_order_pipeline() {
  local op="$1" cli="$2"
  local dir="$TMP/run" n=200 n2=800 poison=20
  local freezes=(--freeze 7:after-charge --freeze 13:after-complete --freeze 9:before-charge)
  mkdir -p "$dir"
  run "$op" setup --bus "$BUS" --dir "$dir"
  check "setup exits 0" test "$rc" -eq 0
  check "...with the archive directory $dir/archive" grep -qF "archive $dir/archive)" <<<"$out"

  # The archiver, a process of its own, from before the first order: every
  # order goes to $dir/archive too. Under `block` it holds the service back
  # rather than miss an order.
  "$cli" archive run orders --bus "$BUS" >"$dir/archiver.out" 2>&1 &
  local archiver=$!; PIDS+=("$archiver")
  run "$op" await --bus "$BUS" --archiver --timeout 60
  check "the archiver attached to orders" test "$rc" -eq 0

  # The workers tell this FIFO when they stop at a --freeze point. Opened
  # read-write here, so their open() and write() never block.
  mkfifo "$dir/events.fifo"
  exec 3<>"$dir/events.fifo"
  local billing=() email p i
  for i in 1 2 3 4; do
    "$op" billing --bus "$BUS" --dir "$dir" "${freezes[@]}" --events "$dir/events.fifo" \
      >"$dir/billing-$i.out" 2>&1 &
    billing+=($!); PIDS+=($!)
  done
  "$op" email --bus "$BUS" --dir "$dir" >"$dir/email.out" 2>&1 &
  email=$!; PIDS+=("$email")

  run "$op" service --bus "$BUS" --orders "$n" --poison "$poison"
  check "the order service published $n orders" test "$rc" -eq 0

  # Three billing workers stop: one after charging order 7, one after
  # complete()ing order 13, one holding order 9 before charging it (its
  # account's later orders must wait for its redelivery: billing is
  # per_key). kill -9 each where it stands.
  local killed=() word fpid forder fpoint st holder=""
  for i in 1 2 3; do
    if read -r -t 60 word fpid forder fpoint <&3 && [ "$word" = frozen ]; then
      if [ "$fpoint" = before-charge ]; then holder=$fpid; continue; fi
      echo "kill -9 billing worker $fpid (order $forder, $fpoint)"
      kill -9 "$fpid"
      wait "$fpid"; st=$?
      check "billing worker $fpid died of SIGKILL" test "$st" -eq 137
      killed+=("$fpid")
    else
      check "a billing worker reported its freeze" false
    fi
  done
  # Order 9's account (umbrella: ids 4, 9, 14, ... 199) waits for it: every
  # other order is billed (200 - order 9 - its 38 successors - the poison,
  # dead-lettered = 160 acks) while the holder lives. Only then kill it:
  # its redelivery must still come before the account's later orders (in an
  # unordered group they would be billed by now, and the statement check of
  # verify fails).
  check "a billing worker froze holding order 9" test -n "$holder"
  run "$op" await --bus "$BUS" --group billing --acked 160 --timeout 60
  check "billing acked every order but order 9's account's while it was held" test "$rc" -eq 0
  echo "kill -9 billing worker $holder (order 9, before-charge)"
  kill -9 "$holder"
  wait "$holder"; st=$?
  check "billing worker $holder died of SIGKILL" test "$st" -eq 137
  killed+=("$holder")
  local live=()
  for p in "${billing[@]}"; do [[ " ${killed[*]} " == *" $p "* ]] || live+=("$p"); done
  check "one billing worker is left" test "${#live[@]}" -eq 1

  run "$op" await --bus "$BUS" --group billing --head "$n" --timeout 60
  check "billing finished every order (the killed workers' orders redelivered)" test "$rc" -eq 0
  run "$op" await --bus "$BUS" --group email --head "$n" --timeout 60
  check "email finished every order" test "$rc" -eq 0

  # The poison order is in the DLQ: the alert fires, the operator looks.
  run "$cli" check --bus "$BUS" --max-dlq 0
  check "shmbus check --max-dlq 0 is critical (exit 2)" test "$rc" -eq 2
  check "...naming the DLQ" grep -q "group billing DLQ orders-dlq depth 1 > 0" <<<"$out"
  run "$cli" dlq list billing --bus "$BUS"
  check "shmbus dlq list exits 0" test "$rc" -eq 0
  check "...and shows order $poison, rejected after 1 attempt" \
    grep -Eq "^0 +orders +[0-9]+ +billing +1 +rejected .*OrderPlaced id=$poison customer" <<<"$out"
  run "$cli" dlq show billing 0 --bus "$BUS"
  check "shmbus dlq show prints the order with its negative amount" \
    grep -q "OrderPlaced id=$poison customer=[a-z]* amount_cents=-" <<<"$out"

  # The fix: billing restarted with a version that accepts refunds.
  for p in "${live[@]}"; do
    kill -TERM "$p"; wait "$p"; st=$?
    check "old billing worker $p stops cleanly on SIGTERM" test "$st" -eq 0
  done
  billing=()
  for i in 4 5; do
    "$op" billing --bus "$BUS" --dir "$dir" --accept-refunds >"$dir/billing-$i.out" 2>&1 &
    billing+=($!); PIDS+=($!)
  done

  run "$cli" dlq redrive billing --bus "$BUS"
  check "shmbus dlq redrive moves the order back" grep -q "^redrove 1 dead letter(s) from orders-dlq to orders$" <<<"$out"
  run "$op" await --bus "$BUS" --group billing --head "$((n + 1))" --timeout 60
  check "billing (fixed) finished the redriven order" test "$rc" -eq 0
  run "$op" await --bus "$BUS" --group email --head "$((n + 1))" --timeout 60
  check "email finished the redriven copy too" test "$rc" -eq 0
  run "$cli" dlq list billing --bus "$BUS"
  check "shmbus dlq list (after the redrive) exits 0" test "$rc" -eq 0
  check "...lists the DLQ of billing" grep -q "^DLQ orders-dlq of group billing on channel orders$" <<<"$out"
  check "...and the DLQ is empty now" test "$(grep -c 'OrderPlaced' <<<"$out")" -eq 0
  # The archiver is a subscriber too: --max-lag 0 holds once it has
  # archived the redriven order as well.
  run "$op" await --bus "$BUS" --archiver --head "$((n + 1))" --timeout 60
  check "the archiver archived all $((n + 1)) messages" test "$rc" -eq 0
  run "$cli" check --bus "$BUS" --max-dlq 0 --max-lag 0 --archiver-down --max-archive-lag 0
  check "shmbus check is OK again (exit 0)" test "$rc" -eq 0
  run "$cli" gc --bus "$BUS" --keep-unused
  check "shmbus gc --keep-unused exits 0" test "$rc" -eq 0

  # A second wave, orders 201..800, to the fixed workers: 801 messages in
  # all, more than the ring's 512 slots, so the ring wraps and its oldest
  # orders are then on disk only.
  run "$op" service --bus "$BUS" --orders "$n2" --from "$((n + 1))" --poison "$poison"
  check "the order service published orders $((n + 1))..$n2" test "$rc" -eq 0
  run "$op" await --bus "$BUS" --group billing --head "$((n2 + 1))" --timeout 60
  check "billing finished the second wave" test "$rc" -eq 0
  run "$op" await --bus "$BUS" --group email --head "$((n2 + 1))" --timeout 60
  check "email finished the second wave" test "$rc" -eq 0

  for p in "${billing[@]}" "$email"; do
    kill -TERM "$p"; wait "$p"; st=$?
    check "worker $p stops cleanly on SIGTERM" test "$st" -eq 0
  done
  echo "--- worker logs"
  cat "$dir"/billing-*.out "$dir/email.out"
  echo "---"

  run "$op" await --bus "$BUS" --archiver --head "$((n2 + 1))" --timeout 60
  check "the archiver archived all $((n2 + 1)) messages" test "$rc" -eq 0
  run "$cli" archive stat orders --bus "$BUS"
  check "shmbus archive stat: the archive holds sequences 0..$n2" grep -q "^sequences: 0..$n2 (end $((n2 + 1)))$" <<<"$out"
  check "...and the archiver is attached with lag 0" grep -q "^archiver: active, cursor $((n2 + 1)), lag 0$" <<<"$out"

  # Analytics arrives late and replays from the oldest order. The ring holds
  # only the newest 512 of the 801 messages (sequences 289..800): the older
  # ones come from the archive, then reading switches to the ring.
  local ring_oldest=$((n2 + 1 - 512))
  run "$op" analytics --bus "$BUS" --orders "$n2" --poison "$poison"
  check "analytics saw every order and the totals match" test "$rc" -eq 0
  check "...starting at sequence 0, older than the ring" \
    grep -q "^analytics: started at sequence 0; reading up to $((n2 + 1)) (the ring holds $ring_oldest..$n2 (512)" <<<"$out"
  check "...the first $ring_oldest from the archive, the rest from the ring, none lost or repeated at the switch" \
    grep -q "^analytics: read sequences 0..$((ring_oldest - 1)) ($ring_oldest) from the archive, then $ring_oldest..$n2 (512) from the ring; every sequence once, in order$" <<<"$out"
  check "...counting the redriven order once" grep -q "$((n2 + 1)) messages, $n2 distinct orders, 1 seen twice" <<<"$out"
  run "$op" analytics --bus "$BUS" --orders "$n2" --poison "$poison"
  check "a second analytics run resumes its durable cursor at the head" \
    grep -q "^analytics: resumed at sequence $((n2 + 1))" <<<"$out"
  check "...and finds nothing new, nothing lost" grep -q "^analytics: 0 new messages, 0 distinct orders, lost 0" <<<"$out"

  run "$op" verify --bus "$BUS" --dir "$dir" --orders "$n2" --poison "$poison" "${freezes[@]}"
  check "verify: one charge per order, no double billing, DLQ redriven" test "$rc" -eq 0

  # The archiver stops on SIGTERM after a final sync; then the files are
  # checked record by record: every sequence 0..800, no gap.
  kill -TERM "$archiver"; wait "$archiver"; st=$?
  check "the archiver stops cleanly on SIGTERM" test "$st" -eq 0
  echo "--- archiver log"
  cat "$dir/archiver.out"
  echo "---"
  check "...having archived all $((n2 + 1)) messages, none lost" \
    grep -q "archived $((n2 + 1)) messages (.*), up to sequence $((n2 + 1)); 0 lost in 0 gaps" "$dir/archiver.out"
  run "$cli" archive verify --dir "$dir/archive"
  check "shmbus archive verify: every record good, sequences 0..$n2, no gap" \
    grep -q "^ok: $((n2 + 1)) records in [0-9]* files, sequences 0..$n2, 0 gaps$" <<<"$out"
  run "$op" cleanup --bus "$BUS"
  check "cleanup exits 0" test "$rc" -eq 0
  check "no segment of the bus is left" test -z "$(compgen -G "/dev/shm/shmbus.$BUS.*"; compgen -G "/dev/shm/shmbus-dedup.$BUS.*")"
}

case "$CASE" in
  hello) [ $# -eq 3 ] || { echo "usage: $0 hello PUBLISHER SUBSCRIBER"; exit 2; }; case_hello "$2" "$3" ;;
  backpressure) [ $# -eq 2 ] || { echo "usage: $0 backpressure BACKPRESSURE"; exit 2; }; case_backpressure "$2" ;;
  order-pipeline) [ $# -eq 3 ] || { echo "usage: $0 order-pipeline ORDER_PIPELINE SHMBUS"; exit 2; }
    case_order_pipeline "$2" "$3" ;;
  *) echo "usage: $0 hello|backpressure|order-pipeline PROGRAMS..."; exit 2 ;;
esac
finish

#!/usr/bin/env bash
# Runs the examples of examples/ as a user would, and checks what they did.
#
#   examples_test.sh hello PATH/hello_publisher PATH/hello_subscriber
#   examples_test.sh backpressure PATH/backpressure
#   examples_test.sh order-pipeline PATH/order_pipeline PATH/shmbus
#
# order-pipeline is the walkthrough of examples/order_pipeline.cpp: billing
# (four workers, a per_key group: each account's orders in order) and email
# (one) consume 200 orders; three billing workers are kill -9ed at chosen
# points (holding an order before charging it; after charging; after
# complete(), before the ack); the poison order lands in the DLQ, `shmbus check` and `shmbus dlq
# list` show it, billing is restarted with the fix and `shmbus dlq redrive`
# sends it back; analytics then replays everything from the oldest order;
# verify checks the ledger. Every wait is on an event: a line on a FIFO, a
# process's exit, or a group's state (order_pipeline await).
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
  local dir="$TMP/run" n=200 poison=20
  local freezes=(--freeze 7:after-charge --freeze 13:after-complete --freeze 9:before-charge)
  mkdir -p "$dir"
  run "$op" setup --bus "$BUS" --dir "$dir"
  check "setup exits 0" test "$rc" -eq 0

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
  local killed=() line word fpid forder fpoint st holder=""
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
  run "$cli" check --bus "$BUS" --max-dlq 0 --max-lag 0
  check "shmbus check is OK again (exit 0)" test "$rc" -eq 0
  run "$cli" gc --bus "$BUS" --keep-unused
  check "shmbus gc --keep-unused exits 0" test "$rc" -eq 0

  for p in "${billing[@]}" "$email"; do
    kill -TERM "$p"; wait "$p"; st=$?
    check "worker $p stops cleanly on SIGTERM" test "$st" -eq 0
  done
  echo "--- worker logs"
  cat "$dir"/billing-*.out "$dir/email.out"
  echo "---"

  # Analytics arrives late and replays from the oldest order.
  run "$op" analytics --bus "$BUS" --orders "$n" --poison "$poison"
  check "analytics saw every order and the totals match" test "$rc" -eq 0
  check "...counting the redriven order once" grep -q "201 messages, 200 distinct orders, 1 seen twice" <<<"$out"
  run "$op" analytics --bus "$BUS" --orders "$n" --poison "$poison"
  check "a second analytics run resumes its durable cursor at the head" grep -q "^analytics: resumed at sequence 201" <<<"$out"

  run "$op" verify --bus "$BUS" --dir "$dir" --orders "$n" --poison "$poison" "${freezes[@]}"
  check "verify: one charge per order, no double billing, DLQ redriven" test "$rc" -eq 0
  run "$op" cleanup --bus "$BUS"
  check "cleanup exits 0" test "$rc" -eq 0
  check "no segment of the bus is left" test -z "$(ls /dev/shm | grep -F "shmbus.$BUS." ; ls /dev/shm | grep -F "shmbus-dedup.$BUS.")"
}

case "$CASE" in
  hello) [ $# -eq 3 ] || { echo "usage: $0 hello PUBLISHER SUBSCRIBER"; exit 2; }; case_hello "$2" "$3" ;;
  backpressure) [ $# -eq 2 ] || { echo "usage: $0 backpressure BACKPRESSURE"; exit 2; }; case_backpressure "$2" ;;
  order-pipeline) [ $# -eq 3 ] || { echo "usage: $0 order-pipeline ORDER_PIPELINE SHMBUS"; exit 2; }
    case_order_pipeline "$2" "$3" ;;
  *) echo "usage: $0 hello|backpressure|order-pipeline PROGRAMS..."; exit 2 ;;
esac
finish

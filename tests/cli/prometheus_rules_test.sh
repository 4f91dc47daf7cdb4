#!/usr/bin/env bash
# The alerting rules in contrib/prometheus: promtool accepts them, their unit
# tests pass (shmbus.rules.test.yml), and every alert name the docs mention
# is one the file defines (one name per alert everywhere).
# Usage: prometheus_rules_test.sh SOURCE_DIR
set -u
SRC="$1"
DIR="$SRC/contrib/prometheus"
fails=0
check() {  # check DESCRIPTION COMMAND...
  local what="$1"; shift
  if "$@"; then echo "ok: $what"; else echo "FAIL: $what"; fails=$((fails + 1)); fi
}
check "promtool check rules accepts shmbus.rules.yml" promtool check rules "$DIR/shmbus.rules.yml"
# rule_files in the test file are relative to it.
check "promtool test rules passes shmbus.rules.test.yml" \
  bash -c 'cd "$1" && promtool test rules shmbus.rules.test.yml' _ "$DIR"
defined=$(grep -oE '^ *- alert: Shmbus[A-Za-z]+' "$DIR/shmbus.rules.yml" | sed 's/.*alert: //' | sort -u)
check "the rules file defines alerts" test -n "$defined"
# Alert names in the docs: Shmbus followed by a capitalised word (the C API's
# ShmbusError is a Python exception, not an alert).
mentioned=$(grep -ohE '\bShmbus[A-Z][A-Za-z]+' "$SRC/README.md" "$SRC"/docs/*.md | grep -vx 'ShmbusError' | sort -u)
for name in $mentioned; do
  check "docs name alert $name, which the rules file defines" grep -qx "$name" <<<"$defined"
done
for name in $defined; do
  check "docs/operations.md says what to do on $name" grep -q "$name" "$SRC/docs/operations.md"
  check "the unit tests exercise $name" grep -q "alertname: $name\$" "$DIR/shmbus.rules.test.yml"
done
if [ "$fails" -ne 0 ]; then echo "$fails check(s) failed"; exit 1; fi
echo "all rules checks passed"

#!/bin/sh
# Fails when a test case name of the Catch2 binary $1 holds a ';':
# catch_discover_tests and ctest split such a name into two tests that match
# no test case (and so run nothing). Exit 77 (skipped) if $1 is not built.
exe="$1"
if [ ! -x "$exe" ]; then
  echo "$exe is not built: skipped"
  exit 77
fi
names=$("$exe" --list-test-names-only)  # exits with the number of tests
if [ -z "$names" ]; then
  echo "FAIL: $exe --list-test-names-only listed no test"
  exit 1
fi
bad=$(printf '%s\n' "$names" | grep ';')
if [ -n "$bad" ]; then
  echo "FAIL: test case names of $exe must not contain ';' (ctest splits them and runs nothing):"
  printf '%s\n' "$bad"
  exit 1
fi
echo "ok: $(printf '%s\n' "$names" | wc -l) test case names of $exe, none with ';'"

#!/usr/bin/env bash
# Packaging test: builds and runs tests/package/consumer, an outside project
# that uses shmbus, the two ways users get it.
#   installed:    `cmake --install` of the (already built) tree into a fresh
#                 prefix; checks the installed files (only include/shmbus, each
#                 header compiling alone on -I<prefix>/include); builds the consumer with
#                 find_package(shmbus) (static and shared targets, a C program)
#                 and with pkg-config (C and C++, shared and static); runs all.
#   subdirectory: builds the consumer with add_subdirectory(<source tree>).
# Usage: install_test.sh MODE WORKDIR BUILD_DIR SOURCE_DIR VERSION CMAKE CC CXX [SANITIZER_FLAGS]
#   SANITIZER_FLAGS: the flags of a sanitizer build of BUILD_DIR (one word
#   list); the consumers are compiled and linked with them too.
set -euo pipefail
# grep in a pipe reads all of its input (no -q): with pipefail, a writer cut
# off by an early exit would fail the pipe with SIGPIPE.

MODE="$1" WORK="$2" BUILD="$3" SRC="$4" VERSION="$5" CMAKE="$6" CC="$7" CXX="$8"
SAN="${9:-}"
read -r -a SAN_FLAGS <<<"$SAN"
# The same flags for a CMake-built consumer.
CMAKE_SAN_ARGS=(-DCMAKE_C_FLAGS="$SAN" -DCMAKE_CXX_FLAGS="$SAN"
                -DCMAKE_EXE_LINKER_FLAGS="$SAN" -DCMAKE_SHARED_LINKER_FLAGS="$SAN")
CONSUMER="$SRC/tests/package/consumer"
BUS="shmbuspkg$$"
JOBS="${JOBS:-2}"

fail() { echo "FAIL: $*" >&2; exit 1; }
step() { echo "== $*"; }
cleanup() {  # channels a failed run may have left behind
  rm -f /dev/shm/shmbus."$BUS".* 2>/dev/null || true
}
trap cleanup EXIT

rm -rf "$WORK"
mkdir -p "$WORK"

# Runs a consumer binary on its own channel and checks what it printed.
run_consumer() {  # run_consumer BINARY EXPECTED_OUTPUT_PREFIX
  local bin="$1" want="$2" out
  out=$("$bin" "$BUS" "ch-$(basename "$bin")") || fail "$bin exited $?"
  echo "$out"
  [[ "$out" == "$want"* ]] || fail "$bin printed '$out', expected '$want...'"
}

# Every installed header is self-contained: it compiles alone, in a TU of its
# own, with nothing but the standard library and the installed include dir on
# the include path (C headers as C99, C11 and C++20; C++ headers as C++20),
# and includes nothing but standard headers and other installed ones.
check_headers() {  # check_headers INCLUDE_DIR
  local inc="$1" h rel line name n=0
  local c_std='assert|complex|ctype|errno|fenv|float|inttypes|iso646|limits|locale|math|setjmp|signal'
  c_std+='|stdalign|stdarg|stdatomic|stdbool|stddef|stdint|stdio|stdlib|stdnoreturn|string|tgmath|threads|time'
  c_std+='|uchar|wchar|wctype'
  local tu="$WORK/header_tu"
  mkdir -p "$tu"
  while IFS= read -r -d '' h; do
    rel="${h#"$inc"/}"
    while IFS= read -r line; do
      if [[ "$line" =~ ^[[:space:]]*#[[:space:]]*include[[:space:]]*\<([^>]+)\> ]]; then
        name="${BASH_REMATCH[1]}"
        if [[ "$name" == shmbus/* ]]; then
          [ -e "$inc/$name" ] || fail "<$rel> includes <$name>, which is not installed"
        elif [[ "$name" =~ ^[a-z_]+$ || "$name" =~ ^($c_std)\.h$ ]]; then
          :  # a standard header
        else
          fail "<$rel> includes <$name>: installed headers may include only standard and <shmbus/...> headers"
        fi
      elif [[ "$line" =~ ^[[:space:]]*#[[:space:]]*include ]]; then
        fail "<$rel> has '$line': installed headers include only <...> standard and <shmbus/...> headers"
      fi
    done <"$h"
    case "$rel" in
      *.h)
        printf '#include <%s>\n' "$rel" >"$tu/t.c"
        for std in c99 c11; do
          "$CC" -std="$std" -Wall -Wextra -Wpedantic -Werror -fsyntax-only -I"$inc" "$tu/t.c" \
            || fail "<$rel> does not compile alone as $std"
        done
        "$CXX" -std=c++20 -Wall -Wextra -Wpedantic -Werror -fsyntax-only -x c++ -I"$inc" "$tu/t.c" \
          || fail "<$rel> does not compile alone as C++20"
        ;;
      *.hpp)
        printf '#include <%s>\n' "$rel" >"$tu/t.cpp"
        "$CXX" -std=c++20 -Wall -Wextra -Wpedantic -Werror -fsyntax-only -I"$inc" "$tu/t.cpp" \
          || fail "<$rel> does not compile alone as C++20"
        ;;
      *) fail "unexpected installed file include/$rel" ;;
    esac
    n=$((n + 1))
  done < <(find "$inc" -type f -print0 | sort -z)
  [ "$n" -gt 0 ] || fail "no headers under $inc"
  echo "$n installed headers compile alone"
}

if [ "$MODE" = "installed" ]; then
  PREFIX="$WORK/prefix"
  step "cmake --install $BUILD --prefix $PREFIX"
  "$CMAKE" --install "$BUILD" --prefix "$PREFIX" >"$WORK/install.log" \
    || { cat "$WORK/install.log"; fail "cmake --install (build 'all' first)"; }

  step "installed files"
  LIBDIR=$(dirname "$(find "$PREFIX" -name shmbusConfig.cmake -print -quit)")
  LIBDIR="${LIBDIR%/cmake/shmbus}"
  [ -d "$LIBDIR" ] || fail "no shmbusConfig.cmake under $PREFIX"
  for f in include/shmbus/shmbus.h include/shmbus/shmbus.hpp include/shmbus/channel.hpp \
           include/shmbus/types.hpp include/shmbus/result.hpp bin/shmbus; do
    [ -e "$PREFIX/$f" ] || fail "missing $PREFIX/$f"
  done
  # include/shmbus is the whole contract: the library's internals (bus/, shm/,
  # api/) are not installed.
  others=$(find "$PREFIX/include" -mindepth 1 -maxdepth 1 ! -name shmbus)
  [ -z "$others" ] || fail "installed besides include/shmbus: $others"
  for f in libshmbus.a libshmbus.so cmake/shmbus/shmbusConfig.cmake \
           cmake/shmbus/shmbusConfigVersion.cmake cmake/shmbus/shmbusTargets.cmake pkgconfig/shmbus.pc; do
    [ -e "$LIBDIR/$f" ] || fail "missing $LIBDIR/$f"
  done
  check_headers "$PREFIX/include"
  soname=$(objdump -p "$LIBDIR/libshmbus.so" | awk '/SONAME/ {print $2}')
  [ -e "$LIBDIR/$soname" ] || fail "the SONAME link $soname is not installed"
  echo "SONAME $soname"
  # The package needs no Boost: the exported targets name only Threads.
  if grep -q "Boost" "$LIBDIR"/cmake/shmbus/*.cmake; then fail "the installed package refers to Boost"; fi
  "$PREFIX/bin/shmbus" --help >/dev/null || fail "the installed CLI does not run"
  "$PREFIX/bin/shmbus" ls --bus "$BUS" >/dev/null || fail "the installed CLI cannot list a bus"

  step "find_package(shmbus) consumer"
  "$CMAKE" -S "$CONSUMER" -B "$WORK/consumer" -DCMAKE_PREFIX_PATH="$PREFIX" \
    -DCMAKE_C_COMPILER="$CC" -DCMAKE_CXX_COMPILER="$CXX" -DCMAKE_BUILD_TYPE=Release \
    -DSHMBUS_EXPECTED_VERSION="$VERSION" "${CMAKE_SAN_ARGS[@]}" >"$WORK/configure.log" \
    || { cat "$WORK/configure.log"; fail "configure with find_package"; }
  grep -q "shmbus $VERSION from $LIBDIR/cmake/shmbus" "$WORK/configure.log" \
    || { cat "$WORK/configure.log"; fail "find_package did not pick the installed package"; }
  "$CMAKE" --build "$WORK/consumer" -j "$JOBS" || fail "build with find_package"
  ldd "$WORK/consumer/consumer_shared" | grep -F "$LIBDIR/libshmbus.so" >/dev/null \
    || { ldd "$WORK/consumer/consumer_shared"; fail "consumer_shared does not load the installed libshmbus.so"; }
  if ldd "$WORK/consumer/consumer_static" | grep libshmbus >/dev/null; then fail "consumer_static loads libshmbus.so"; fi
  run_consumer "$WORK/consumer/consumer_static" "C++ consumer ok"
  run_consumer "$WORK/consumer/consumer_shared" "C++ consumer ok"
  run_consumer "$WORK/consumer/consumer_c" "C consumer ok"

  step "pkg-config consumers"
  export PKG_CONFIG_PATH="$LIBDIR/pkgconfig"
  [ "$(pkg-config --modversion shmbus)" = "$VERSION" ] || fail "pkg-config --modversion"
  read -r -a CFLAGS <<<"$(pkg-config --cflags shmbus)"
  read -r -a LIBS <<<"$(pkg-config --libs shmbus)"
  pc_libdir=$(pkg-config --variable=libdir shmbus)
  [ "$(realpath "$pc_libdir")" = "$(realpath "$LIBDIR")" ] || fail "pkg-config libdir $pc_libdir is not $LIBDIR"
  "$CC" -std=c11 -Wall -Wextra -Werror "${SAN_FLAGS[@]}" "${CFLAGS[@]}" "$CONSUMER/main.c" -o "$WORK/pc_c" "${LIBS[@]}" \
    -Wl,-rpath,"$pc_libdir" || fail "C build with pkg-config"
  "$CXX" -std=c++20 -Wall -Wextra -Werror "${SAN_FLAGS[@]}" "${CFLAGS[@]}" -DSHMBUS_EXPECTED_VERSION="\"$VERSION\"" \
    "$CONSUMER/main.cpp" -o "$WORK/pc_cxx" "${LIBS[@]}" -Wl,-rpath,"$pc_libdir" || fail "C++ build with pkg-config"
  # Static: libshmbus.a, then what `pkg-config --static` adds for it (Libs.private).
  private=()
  for flag in $(pkg-config --static --libs shmbus); do
    case "$flag" in -lshmbus|-L*) ;; *) private+=("$flag") ;; esac
  done
  "$CC" -std=c11 "${SAN_FLAGS[@]}" "${CFLAGS[@]}" "$CONSUMER/main.c" -o "$WORK/pc_c_static" "$pc_libdir/libshmbus.a" \
    "${private[@]}" || fail "static C build with pkg-config's Libs.private (${private[*]})"
  if ldd "$WORK/pc_c_static" | grep libshmbus >/dev/null; then fail "pc_c_static loads libshmbus.so"; fi
  run_consumer "$WORK/pc_c" "C consumer ok"
  run_consumer "$WORK/pc_cxx" "C++ consumer ok"
  run_consumer "$WORK/pc_c_static" "C consumer ok"

elif [ "$MODE" = "subdirectory" ]; then
  step "add_subdirectory($SRC) consumer"
  # -O0 without debug info: this builds the whole library again, so keep it quick.
  "$CMAKE" -S "$CONSUMER" -B "$WORK/consumer" -DSHMBUS_CONSUMER_MODE=add_subdirectory \
    -DSHMBUS_SOURCE_DIR="$SRC" -DCMAKE_C_COMPILER="$CC" -DCMAKE_CXX_COMPILER="$CXX" \
    -DCMAKE_BUILD_TYPE=Quick -DCMAKE_CXX_FLAGS_QUICK=-O0 -DCMAKE_C_FLAGS_QUICK=-O0 \
    -DSHMBUS_EXPECTED_VERSION="$VERSION" "${CMAKE_SAN_ARGS[@]}" >"$WORK/configure.log" \
    || { cat "$WORK/configure.log"; fail "configure with add_subdirectory"; }
  # A subproject builds no tests, benchmarks, tools or examples, and installs nothing.
  for t in shmbus_unit_tests shmbus_cli shmbus_demo; do
    if "$CMAKE" --build "$WORK/consumer" --target help | grep -w "$t" >/dev/null; then
      fail "the subproject defines $t"
    fi
  done
  "$CMAKE" --build "$WORK/consumer" -j "$JOBS" || fail "build with add_subdirectory"
  ldd "$WORK/consumer/consumer_shared" | grep -F "$WORK/consumer/shmbus/libshmbus.so" >/dev/null \
    || { ldd "$WORK/consumer/consumer_shared"; fail "consumer_shared does not load the subproject's libshmbus.so"; }
  run_consumer "$WORK/consumer/consumer_static" "C++ consumer ok"
  run_consumer "$WORK/consumer/consumer_shared" "C++ consumer ok"
  run_consumer "$WORK/consumer/consumer_c" "C consumer ok"
else
  fail "unknown mode '$MODE' (installed or subdirectory)"
fi

rm -rf "$WORK"  # passed: leave nothing behind (a failure keeps it to look at)
echo "ok: $MODE"

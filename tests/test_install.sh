#!/bin/bash
# SPDX-License-Identifier: MIT
# test_install.sh BUILD_DIR PRELOAD_HOST (issue 5): `cmake --install` into a temporary
# prefix gives the two libraries, memsave.h, the memsave command, a CMake package and a
# pkg-config file; `memsave ab` runs from there, and again after the tree is moved
# (relocatable); a C program builds against the package and against pkg-config.
set -u
build=$1 host=$2
. "$(dirname "$0")/checks.sh"

out=$(cmake --install "$build" --prefix "$tmp/prefix" 2>&1); rc=$?
expect_eq "cmake --install succeeds" "$rc" "0"
libdir=$(cd "$tmp/prefix" && dirname "$(find . -name libmemsave.so | head -1)")
libdir=${libdir#./}
for f in bin/memsave "$libdir/libmemsave.so" "$libdir/libmemsave_hooks.so" include/memsave.h \
         "$libdir/cmake/memsave/memsaveConfig.cmake" "$libdir/cmake/memsave/memsaveConfigVersion.cmake" \
         "$libdir/cmake/memsave/memsaveTargets.cmake" "$libdir/pkgconfig/memsave.pc"; do
  if [ -e "$tmp/prefix/$f" ]; then pass "installed $f"; else fail "installed $f" "missing"; fi
done
if [ -e "$tmp/prefix/include/hooks_abi.h" ] || [ -e "$tmp/prefix/include/internal.h" ]; then
  fail "only memsave.h is installed" "$(ls "$tmp/prefix/include")"
else
  pass "only memsave.h is installed"
fi

# The installed command finds the installed library, which loads the installed hooks.
ab() { "$1/bin/memsave" ab --json -- "$host" >"$tmp/ab.json" 2>"$tmp/ab.err"; }
check_ab() {
  local rc=$1 where=$2
  expect_eq "memsave ab from $where: exit 0" "$rc" "0"
  if /usr/bin/python3 -c "import json, sys; d = json.load(open(sys.argv[1])); \
assert d['families']['conv']['substituted'] == 1 and d['b']['runs'][0]['reports'] == 1, d" "$tmp/ab.json" 2>"$tmp/py.err"
  then pass "memsave ab from $where: the hooks ran"; else fail "memsave ab from $where: the hooks ran" "$(cat "$tmp/py.err" "$tmp/ab.err")"; fi
}
ab "$tmp/prefix"; check_ab $? "the prefix"
mv "$tmp/prefix" "$tmp/moved"
ab "$tmp/moved"; check_ab $? "a moved prefix"
out=$(MEMSAVE_VERBOSE=1 "$tmp/moved/bin/memsave" run -- "$host" 2>&1 >/dev/null)
expect_has "the installed hooks are the ones loaded" "$out" "hooks registered from $tmp/moved/.*libmemsave_hooks.so"

# A C program using the C ABI, built against the CMake package and against pkg-config.
cat >"$tmp/app.c" <<'C'
#include <stdio.h>
#include <memsave.h>
int main(void) {
  struct memsave_stats st;
  printf("version %s stats %d\n", memsave_version(), memsave_get_stats(&st, sizeof st));
  return 0;
}
C
cat >"$tmp/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.18)
project(app C)
find_package(memsave 0.1 REQUIRED)
add_executable(app app.c)
target_link_libraries(app PRIVATE memsave::memsave)
CMAKE
if cmake -S "$tmp" -B "$tmp/app-build" -DCMAKE_PREFIX_PATH="$tmp/moved" >"$tmp/cmake.log" 2>&1 &&
   cmake --build "$tmp/app-build" >>"$tmp/cmake.log" 2>&1; then
  expect_eq "find_package(memsave): the program runs" "$(LD_PRELOAD=$pre "$tmp/app-build/app")" "version 0.1.0 stats 0"
else
  fail "find_package(memsave): configure and build" "$(tail -20 "$tmp/cmake.log")"
fi
command -v pkg-config >/dev/null || fail "pkg-config" "pkg-config is not installed (Debian: pkg-config)"
flags=$(PKG_CONFIG_PATH="$tmp/moved/$libdir/pkgconfig" pkg-config --cflags --libs memsave)
expect_has "pkg-config: flags point into the moved prefix" "$flags" "-I$tmp/moved/.*include"
if cc "$tmp/app.c" -o "$tmp/app-pc" $flags 2>"$tmp/cc.log"; then
  expect_eq "pkg-config: the program runs" "$(LD_PRELOAD=$pre LD_LIBRARY_PATH="$tmp/moved/$libdir" "$tmp/app-pc")" "version 0.1.0 stats 0"
else
  fail "pkg-config: compile" "$(cat "$tmp/cc.log")"
fi

[ "$failures" -eq 0 ] && echo "all install checks passed"
exit $((failures > 0))

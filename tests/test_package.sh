#!/bin/bash
# SPDX-License-Identifier: MIT
# test_package.sh SRCDIR BUILD_DIR PRELOAD_HOST (issue 16): scripts/package.sh makes the
# Debian package; it pins the LibTorch package the hooks link, installs with dpkg -i, works
# from the installed paths (memsave ab, a preloaded Python, the Python module's tests,
# pkg-config, the man page), and dpkg -r, then -P, leave nothing behind. Needs root and dpkg (skipped
# otherwise, exit 77); refuses to run over a libmemsave package it did not install.
set -u
src=$1 build=$2 host=$3
. "$(dirname "$0")/checks.sh"
unset PYTHONDONTWRITEBYTECODE  # Python writes memsave.py's byte code, as on a user's machine

if [ "$(id -u)" != 0 ] || ! command -v dpkg >/dev/null; then
  echo "skipped: needs root and dpkg"
  exit 77
fi
status() {  # dpkg's state of libmemsave; not-installed also when dpkg never heard of it
  local s
  s=$(dpkg-query -W -f='${db:Status-Status}' libmemsave 2>/dev/null)
  echo "${s:-not-installed}"
}
case "$(status)" in
  not-installed | config-files) ;;  # config-files: removed, files gone (see below)
  *) echo "FAIL a libmemsave package is already installed ($(status)); this test installs and removes" \
          "its own: remove it first (dpkg -r libmemsave)"
     exit 1 ;;
esac
installed_by_us=0
trap '[ $installed_by_us = 0 ] || dpkg -P libmemsave >/dev/null 2>&1; rm -rf "$tmp"' EXIT

# The package.
deb=$("$src/scripts/package.sh" "$build" 2>"$tmp/package.err"); rc=$?
expect_eq "package.sh succeeds" "$rc" "0"
[ $rc = 0 ] && [ -f "$deb" ] || { echo "$deb"; tail -30 "$tmp/package.err"; exit 1; }
arch=$(dpkg --print-architecture)
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)
version=$(sed -n 's/^project(libmemsave VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")
expect_eq "the package's file name" "$(basename "$deb")" "libmemsave_${version}_${arch}.deb"

# Depends: exactly the runtime package of the libtorch_cpu the built hooks resolve.
torch_cpu=$(ldd "$build/libmemsave_hooks.so" | sed -n 's/^\s*libtorch_cpu\.so[^ ]* => \([^ ]*\) .*/\1/p')
torch_pkg=$(dpkg-query -S "$(readlink -f "$torch_cpu")" | cut -d: -f1)
torch_version=$(dpkg-query -W -f='${Version}' "$torch_pkg")
depends=$(dpkg-deb -f "$deb" Depends)
expect_has "Depends pins $torch_pkg (= $torch_version)" "$depends" "\(^\|, \)$torch_pkg (= $torch_version)\(,\|$\)"
expect_has "Depends names libunwind (dpkg-shlibdeps)" "$depends" "libunwind"

# The files, where Debian puts them.
dpkg-deb -c "$deb" | awk '{print substr($6, 2)}' | sed 's,/$,,' | grep . >"$tmp/files"
for f in /usr/bin/memsave "/usr/lib/$multiarch/libmemsave.so" "/usr/lib/$multiarch/libmemsave_hooks.so" \
         /usr/include/memsave.h "/usr/lib/$multiarch/cmake/memsave/memsaveConfig.cmake" \
         "/usr/lib/$multiarch/pkgconfig/memsave.pc" /usr/lib/python3/dist-packages/memsave.py \
         /usr/share/man/man1/memsave.1.gz; do
  if grep -qx -- "$f" "$tmp/files"; then pass "the package has $f"; else fail "the package has $f" "$(cat "$tmp/files")"; fi
done
# What exists before the install, to check after the removal that only that is left.
while read -r f; do [ -e "$f" ] && echo "$f"; done <"$tmp/files" >"$tmp/before"

out=$(dpkg -i "$deb" 2>&1); rc=$?
installed_by_us=1
expect_eq "dpkg -i succeeds" "$rc" "0"
[ $rc = 0 ] || { echo "$out"; exit 1; }

# The installed command, library and hooks.
out=$(cd "$tmp" && /usr/bin/memsave ab --json -- "$host" 2>"$tmp/ab.err" >"$tmp/ab.json"); rc=$?
expect_eq "installed memsave ab: exit 0" "$rc" "0"
if /usr/bin/python3 -c "import json, sys; d = json.load(open(sys.argv[1])); \
assert d['families']['conv']['substituted'] == 1 and d['b']['runs'][0]['reports'] == 1, d" "$tmp/ab.json" 2>"$tmp/py.err"
then pass "installed memsave ab: the hooks ran"; else fail "installed memsave ab: the hooks ran" "$(cat "$tmp/py.err" "$tmp/ab.err")"; fi
lib=/usr/lib/$multiarch/libmemsave.so
out=$(cd "$tmp" && MEMSAVE_VERBOSE=1 LD_PRELOAD=$lib /usr/bin/python3 -c \
      'import torch, memsave; print("active", memsave.active(), memsave.__file__)' 2>&1)
expect_has "preloaded python: hooks from the installed path" "$out" "hooks registered from /usr/lib/$multiarch/libmemsave_hooks.so"
expect_has "preloaded python: the installed module, active" "$out" "active True /usr/lib/python3/dist-packages/memsave.py"
for mode in preloaded plain; do
  preload=$([ $mode = preloaded ] && echo "$lib")
  out=$(cd "$tmp" && env ${preload:+LD_PRELOAD=$preload} /usr/bin/python3 "$src/tests/test_python_module.py" $mode "$lib" --installed 2>&1)
  rc=$?
  expect_eq "the Python module's tests ($mode) on the installed module" "$rc" "0"
  [ $rc = 0 ] || echo "$out"
done
flags=$(pkg-config --cflags --libs memsave 2>&1)
expect_has "pkg-config finds the installed memsave.pc" "$flags" "-lmemsave"
printf '#include <memsave.h>\n#include <stdio.h>\nint main(void) { puts(memsave_version()); return 0; }\n' >"$tmp/app.c"
if cc "$tmp/app.c" -o "$tmp/app" $flags 2>"$tmp/cc.err"; then
  expect_eq "a program built with pkg-config runs" "$("$tmp/app")" "$version"
else
  fail "a program built with pkg-config compiles" "$(cat "$tmp/cc.err")"
fi
expect_has "the man page" "$(gzip -dc /usr/share/man/man1/memsave.1.gz)" '^\.TH MEMSAVE 1'

pyc=$(ls /usr/lib/python3/dist-packages/__pycache__/memsave.* 2>/dev/null)
expect_has "Python wrote byte code of the installed memsave.py (removed by prerm)" "$pyc" "memsave\.cpython"

# Removal: every file the package brought is gone, and Python's byte code. dpkg keeps the
# package as config-files until purged because it has a postrm (CPack's ldconfig call);
# the purge then leaves no trace in dpkg's database either.
out=$(dpkg -r libmemsave 2>&1); rc=$?
expect_eq "dpkg -r succeeds" "$rc" "0"
left=$(while read -r f; do [ -e "$f" ] && ! grep -qx -- "$f" "$tmp/before" && echo "$f"; done <"$tmp/files")
expect_eq "nothing of the package is left" "$left" ""
expect_eq "no byte code of memsave.py is left" "$(ls /usr/lib/python3/dist-packages/__pycache__/memsave.* 2>/dev/null)" ""
expect_eq "dpkg -r: only dpkg's record is left" "$(status)" "config-files"
out=$(dpkg -P libmemsave 2>&1); rc=$?
expect_eq "dpkg -P succeeds" "$rc" "0"
installed_by_us=0
expect_eq "the package is not known to dpkg any more" "$(status)" "not-installed"
expect_eq "no file of dpkg's about it" "$(ls /var/lib/dpkg/info/libmemsave.* 2>/dev/null)" ""

[ "$failures" -eq 0 ] && echo "all package checks passed"
exit $((failures > 0))

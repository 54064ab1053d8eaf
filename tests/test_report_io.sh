#!/bin/bash
# SPDX-License-Identifier: MIT
# test_report_io.sh LIBMEMSAVE PRELOAD_HOST (issue 15): a report or timeline that cannot be
# written, in every way we know: /dev/full, a missing directory, a path under a file, a
# directory, a name too long, %p expanding past the buffer, a read-only file system, a
# directory the user may not write (run as nobody), a full disk (a full tmpfs). Each gives
# exactly one `memsave:` line on stderr, a warning naming the path and the error, and the
# host runs to its end with its own status and output. The last three need a private mount
# namespace (unshare -m, as root) or setpriv; without them they are skipped, and say so.
set -u
lib=$1 host=$2
. "$(dirname "$0")/checks.sh"
stock=$("$host" | grep checksum)

# io NAME VAR VALUE ERROR [RUN...]: the host under the preload with VAR=VALUE; one memsave
# line, a warning about VALUE's path with ERROR; the host's own output unchanged. RUN... runs
# the host (default: directly) and gets the environment through env.
io() {
  local name=$1 var=$2 value=$3 error=$4; shift 4
  local out rc what=report
  [ "$var" = MEMSAVE_TIMELINE ] && what=timeline
  out=$("${@:-env}" "$var=$value" "LD_PRELOAD=$pre$lib" "$host" 2>&1); rc=$?
  expect_eq "$name: host exits 0" "$rc" "0"
  expect_eq "$name: the host's output" "$(grep checksum <<<"$out")" "$stock"
  expect_eq "$name: exactly one memsave line" "$(grep -c 'memsave:' <<<"$out")" "1"
  local line; line=$(grep 'memsave:' <<<"$out")
  expect_has "$name: a warning" "$line" "^memsave: warning: "
  local shown=${value%%\%p*}  # up to the first %p, at most 200 bytes (a long path is shown by its ends)
  expect_has "$name: names the path" "$line" "${shown:0:200}"
  expect_has "$name: names the error" "$line" "$error"
}

touch "$tmp/file"
mkdir "$tmp/dir"
long=$(printf 'x%.0s' $(seq 300))
many=$(printf '%%p%.0s' $(seq 600))  # 600 pids: too long for the 4200-byte path buffer
for var in MEMSAVE_REPORT MEMSAVE_TIMELINE; do
  for ext in txt json; do
    [ "$var" = MEMSAVE_TIMELINE ] && [ "$ext" = json ] && continue
    io "$var /dev/full ($ext)" $var /dev/full "No space left on device"
    io "$var missing directory ($ext)" $var "$tmp/missing/r.$ext" "No such file or directory"
    io "$var under a file ($ext)" $var "$tmp/file/r.$ext" "Not a directory"
    io "$var name too long ($ext)" $var "$tmp/$long.$ext" "File name too long"
  done
  io "$var a directory" $var "$tmp/dir/" "Is a directory"
  io "$var %p past the buffer" $var "$tmp/$many" "File name too long"
done
expect_eq "nothing was written" "$(find "$tmp" -newer "$tmp/file" -type f | wc -l)" "0"

# A read-only file system and a full disk: tmpfs mounts in a private mount namespace.
if unshare -m true 2>/dev/null; then
  # in_mount SIZE MODE: runs "$@" in a namespace with a tmpfs of SIZE at $tmp/mnt, mounted
  # with MODE (ro, or rw after filling it).
  cat >"$tmp/in_mount.sh" <<'SH'
mnt=$1 size=$2 mode=$3; shift 3
mount -t tmpfs -o size=$size tmpfs "$mnt" || exit 99
if [ "$mode" = full ]; then dd if=/dev/zero of="$mnt/fill" bs=4k 2>/dev/null; fi
[ "$mode" = ro ] && mount -o remount,ro "$mnt"
exec "$@"
SH
  mkdir "$tmp/mnt"
  for var in MEMSAVE_REPORT MEMSAVE_TIMELINE; do
    io "$var read-only file system" $var "$tmp/mnt/r.txt" "Read-only file system" \
      unshare -m bash "$tmp/in_mount.sh" "$tmp/mnt" 64k ro env
    io "$var full disk" $var "$tmp/mnt/r-%p.json" "No space left on device" \
      unshare -m bash "$tmp/in_mount.sh" "$tmp/mnt" 64k full env
  done
else
  echo "skip read-only file system and full disk: unshare -m is not permitted here"
fi

# A directory the user may not write: as nobody (root may write anywhere).
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
  mkdir -m 0755 "$tmp/ro-dir"
  chmod 0755 "$tmp"
  for var in MEMSAVE_REPORT MEMSAVE_TIMELINE; do
    io "$var permission denied" $var "$tmp/ro-dir/r.txt" "Permission denied" \
      setpriv --reuid=65534 --regid=65534 --clear-groups env
  done
else
  echo "skip permission denied: needs root and setpriv"
fi

echo "$failures failure(s)"
[ "$failures" -eq 0 ]

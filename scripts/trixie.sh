#!/bin/bash
# SPDX-License-Identifier: MIT
# trixie.sh [chroot|test]: build the whole test suite against LibTorch 2.6 in a Debian 13
# (trixie) chroot, from a Debian 12 machine, as root.
#
#   chroot  create or update the chroot only (idempotent: a complete chroot is reused)
#   test    (default) the same, then configure, build and run ctest inside it
#
# The chroot lives in $MEMSAVE_TRIXIE_ROOT (default /var/cache/libmemsave/trixie, about
# 2 GB). The source tree is bind-mounted read-only at /src; the build goes to /build inside
# the chroot. All mounts are made in a private mount namespace (unshare), so they vanish
# when the script ends, however it ends; the host's mount table is never touched.
#
# Environment: MEMSAVE_TRIXIE_ROOT, MEMSAVE_TRIXIE_MIRROR (default http://deb.debian.org/debian),
# MEMSAVE_TRIXIE_JOBS (build parallelism, default nproc), CTEST_ARGS (extra ctest arguments).
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
mode=${1:-test}
root=${MEMSAVE_TRIXIE_ROOT:-/var/cache/libmemsave/trixie}
mirror=${MEMSAVE_TRIXIE_MIRROR:-http://deb.debian.org/debian}
jobs=${MEMSAVE_TRIXIE_JOBS:-$(nproc)}
packages=(build-essential cmake libtorch-dev python3-torch python3-torchvision googletest libgtest-dev
          libunwind-dev pkg-config)

case "$mode" in chroot | test) ;; *) echo "usage: $0 [chroot|test]" >&2; exit 2 ;; esac
if [ "$(id -u)" != 0 ]; then echo "trixie.sh: run as root (debootstrap, chroot and mounts need it)" >&2; exit 2; fi
case "$root" in "$src" | "$src"/*) echo "trixie.sh: MEMSAVE_TRIXIE_ROOT must be outside the source tree" >&2; exit 2 ;; esac

# Re-run in a private mount namespace: every mount below dies with this process.
if [ -z "${MEMSAVE_TRIXIE_NS:-}" ]; then
  exec env MEMSAVE_TRIXIE_NS=1 unshare --mount --propagation private -- bash "$0" "$@"
fi

log() { printf 'trixie: %s\n' "$*"; }
elapsed() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

mounted=()
cleanup() {
  local i
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount "${mounted[$i]}" 2>/dev/null || umount -l "${mounted[$i]}" || true; done
}
trap cleanup EXIT
mnt() {  # mnt TARGET MOUNT-ARGS...: mount and remember it for cleanup
  local target=$1
  shift
  mkdir -p "$target"
  mount "$@" "$target"
  mounted+=("$target")
}
in_chroot() { chroot "$root" /usr/bin/env -i HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }

mkdir -p "$(dirname "$root")"
exec 9>"$root.lock"
flock 9  # one run per chroot at a time

# 1. The base system. The marker is written only after debootstrap succeeded; a partial
#    tree from an interrupted run is removed and made again.
t0=$(date +%s)
if [ ! -e "$root/.memsave-debootstrap-done" ]; then
  if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap debian-archive-keyring >/dev/null
  fi
  # Only a tree this script started is ever removed (a mistyped MEMSAVE_TRIXIE_ROOT is not).
  if [ -d "$root" ] && [ -n "$(ls -A "$root")" ] && [ ! -e "$root/.memsave-root" ]; then
    echo "trixie.sh: $root is not empty and was not made by this script; choose another MEMSAVE_TRIXIE_ROOT" >&2
    exit 2
  fi
  rm -rf "$root"
  mkdir -p "$root"
  touch "$root/.memsave-root"
  log "debootstrap trixie from $mirror into $root"
  debootstrap --variant=minbase trixie "$root" "$mirror" >"$root.debootstrap.log" 2>&1 || {
    tail -n 30 "$root.debootstrap.log" >&2
    exit 1
  }
  touch "$root/.memsave-debootstrap-done"
fi

# 2. The packages, when the list changed or was never installed completely.
want="${packages[*]}"
if [ "$(cat "$root/.memsave-packages" 2>/dev/null)" != "$want" ]; then
  log "installing ${packages[*]}"
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"  # no services start in the chroot
  chmod +x "$root/usr/sbin/policy-rc.d"
  cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
  mnt "$root/proc" -t proc proc
  mnt "$root/dev/pts" --bind /dev/pts  # apt's terminal log wants a pty
  in_chroot DEBIAN_FRONTEND=noninteractive apt-get update -qq
  in_chroot DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
  in_chroot apt-get clean
  printf '%s' "$want" >"$root/.memsave-packages"
  cleanup
  mounted=()
fi
t1=$(date +%s)
log "chroot ready in $(elapsed $((t1 - t0))) ($(du -sh "$root" 2>/dev/null | cut -f1)); $(in_chroot dpkg-query -W -f='libtorch-dev ${Version}' libtorch-dev)"
[ "$mode" = chroot ] && exit 0

# 3. Configure, build and test inside. /dev/shm is a fresh tmpfs (multiprocessing and
#    torch.distributed want one); /src is read-only so the build cannot write into the tree.
cp /etc/hosts "$root/etc/hosts" 2>/dev/null || true  # this machine's name, for torch.distributed
mnt "$root/proc" -t proc proc
mnt "$root/sys" -t sysfs sysfs
mnt "$root/dev" --bind /dev
mnt "$root/dev/pts" --bind /dev/pts
mnt "$root/dev/shm" -t tmpfs -o mode=1777 shm
mnt "$root/tmp" -t tmpfs -o mode=1777 tmp
mnt "$root/src" --bind "$src"
mount -o remount,bind,ro "$root/src"
in_chroot sh -c "cmake -S /src -B /build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/build.configure.log 2>&1 || { cat /build.configure.log; exit 1; }"
in_chroot cmake --build /build -j"$jobs"
t2=$(date +%s)
log "built in $(elapsed $((t2 - t1)))"
set +e
# shellcheck disable=SC2086
in_chroot sh -c "cd /build && ctest --output-on-failure -j1 ${CTEST_ARGS:-}"
rc=$?
set -e
t3=$(date +%s)
log "ctest exit $rc in $(elapsed $((t3 - t2))); total $(elapsed $((t3 - t0)))"
exit $rc

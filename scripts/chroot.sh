#!/bin/bash
# SPDX-License-Identifier: MIT
# chroot.sh SUITE [chroot|test|run CMD...]: build the whole test suite against the LibTorch of
# a newer Debian in a chroot of that release, from a Debian 12 machine, as root.
#
#   SUITE   trixie  Debian 13, LibTorch 2.6 (scripts/trixie.sh)
#           sid     Debian unstable, LibTorch 2.14 (scripts/sid.sh)
#   chroot  create or update the chroot only (idempotent: a complete chroot is reused)
#   test    (default) the same, then configure, build and run ctest inside it
#   run     the same mounts, then CMD inside the chroot (scripts/gpu-check.sh --dry-run);
#           MEMSAVE_<SUITE>_OUT, a directory of this machine, is mounted writable at /out
#
# The chroot lives in $MEMSAVE_<SUITE>_ROOT (default /var/cache/libmemsave/SUITE, about
# 2 GB). The source tree is bind-mounted read-only at /src; the build goes to /build inside
# the chroot. All mounts are made in a private mount namespace (unshare), so they vanish
# when the script ends, however it ends; the host's mount table is never touched.
#
# The chroot's apt sources take the mirror and the security mirror from the host's apt
# sources (scripts/apt_mirrors.sh: /etc/apt/sources.list, sources.list.d/*.list and
# *.sources), so a host behind its own mirror or proxy keeps using it. trixie gets trixie,
# trixie-updates when the host uses updates, and trixie-security. sid has neither updates
# nor security suites; and its apt is told Acquire::Check-Valid-Until "false", because a
# mirror's snapshot of unstable may outlive its Release file's Valid-Until.
#
# Environment, <SUITE> being TRIXIE or SID: MEMSAVE_<SUITE>_ROOT, MEMSAVE_<SUITE>_MIRROR and
# MEMSAVE_<SUITE>_SECURITY_MIRROR (override the host's mirrors), MEMSAVE_<SUITE>_APT_ETC (the
# host's apt folder, default /etc/apt), MEMSAVE_<SUITE>_JOBS (build parallelism, default
# nproc), MEMSAVE_<SUITE>_BUILD (the build folder inside the chroot, default /build; one per
# source tree keeps their builds incremental), MEMSAVE_<SUITE>_POISON (nan or max: the
# equality tests run with MEMSAVE_POISON set to it, tests/CMakeLists.txt's
# MEMSAVE_TEST_POISON; default empty, off), CTEST_ARGS (extra ctest arguments),
# CTEST_JOBS (ctest parallelism, default nproc: tests/CMakeLists.txt serialises the tests
# that must run alone).
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
suite=${1:-}
case "$suite" in trixie | sid) ;; *) echo "usage: $0 trixie|sid [chroot|test|run CMD...]" >&2; exit 2 ;; esac
shift
mode=${1:-test}
me="$suite.sh"
SUITE=${suite^^}
# setting NAME [DEFAULT]: $MEMSAVE_<SUITE>_NAME, else DEFAULT
setting() { local v="MEMSAVE_${SUITE}_$1"; printf '%s' "${!v:-${2:-}}"; }
root=$(setting ROOT "/var/cache/libmemsave/$suite")
jobs=$(setting JOBS "$(nproc)")
build=$(setting BUILD /build)
case "$build" in /?*) ;; *) echo "$me: MEMSAVE_${SUITE}_BUILD must be an absolute path inside the chroot" >&2; exit 2 ;; esac
poison=$(setting POISON)
case "$poison" in "" | nan | max) ;; *) echo "$me: MEMSAVE_${SUITE}_POISON must be nan, max or empty" >&2; exit 2 ;; esac
# file: CPack finds shared objects with it (package.sh); python3-dev, python3-setuptools:
# torch.compile's inductor builds its C++ kernels with them (test_compiled_autograd --inductor);
# jq: bench/run.sh reads memsave ab's JSON with it; python3-venv, python3-pip,
# python3-scikit-build-core: pip's build of libmemsave (scripts/pip-check.sh).
packages=(build-essential cmake libtorch-dev python3-torch python3-torchvision googletest libgtest-dev
          libunwind-dev pkg-config file python3-dev python3-setuptools jq
          python3-venv python3-pip python3-scikit-build-core)

case "$mode" in chroot | test) ;; run) [ $# -gt 1 ] || { echo "usage: $0 run CMD..." >&2; exit 2; } ;;
  *) echo "usage: $0 $suite [chroot|test|run CMD...]" >&2; exit 2 ;; esac
# The mirrors: the overrides, else the host's apt sources for the host's release.
. "$src/scripts/apt_mirrors.sh"
apt_etc=$(setting APT_ETC /etc/apt)
host_codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
host_mirrors=$(memsave_apt_mirrors "$apt_etc" "$host_codename")
mirror=$(setting MIRROR "$(sed -n 's/^mirror //p' <<<"$host_mirrors")")
security=$(setting SECURITY_MIRROR "$(sed -n 's/^security //p' <<<"$host_mirrors")")
updates=$(sed -n 's/^updates //p' <<<"$host_mirrors")
# Unstable has neither a security nor an updates suite.
[ "$suite" = sid ] && security= && updates=no
if [ -z "$mirror" ]; then
  echo "$me: no Debian mirror for ${host_codename:-this release} in the host's apt sources ($apt_etc/sources.list," \
       "sources.list.d/*.list, *.sources); set MEMSAVE_${SUITE}_MIRROR=URL (and MEMSAVE_${SUITE}_SECURITY_MIRROR)" >&2
  exit 2
fi
if [ "$(id -u)" != 0 ]; then echo "$me: run as root (debootstrap, chroot and mounts need it)" >&2; exit 2; fi
case "$root" in "$src" | "$src"/*) echo "$me: MEMSAVE_${SUITE}_ROOT must be outside the source tree" >&2; exit 2 ;; esac

# Re-run in a private mount namespace: every mount below dies with this process.
if [ -z "${MEMSAVE_CHROOT_NS:-}" ]; then
  exec env MEMSAVE_CHROOT_NS=1 unshare --mount --propagation private -- bash "$0" "$suite" "$@"
fi

log() { printf '%s: %s\n' "$suite" "$*"; }
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
flock 9  # one run at a time makes or updates the chroot; builds (each in its own folder) then run side by side

# 1. The base system. The marker is written only after debootstrap succeeded; a partial
#    tree from an interrupted run is removed and made again.
t0=$(date +%s)
if [ ! -e "$root/.memsave-debootstrap-done" ]; then
  if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap debian-archive-keyring >/dev/null
  fi
  # Only a tree this script started is ever removed (a mistyped MEMSAVE_<SUITE>_ROOT is not).
  if [ -d "$root" ] && [ -n "$(ls -A "$root")" ] && [ ! -e "$root/.memsave-root" ]; then
    echo "$me: $root is not empty and was not made by this script; choose another MEMSAVE_${SUITE}_ROOT" >&2
    exit 2
  fi
  rm -rf "$root"
  mkdir -p "$root"
  touch "$root/.memsave-root"
  log "debootstrap $suite from $mirror into $root"
  debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$root.debootstrap.log" 2>&1 || {
    tail -n 30 "$root.debootstrap.log" >&2
    exit 1
  }
  touch "$root/.memsave-debootstrap-done"
fi

# 2. The chroot's apt sources, from the mirrors above (debootstrap's sources.list named the
#    mirror only); then the packages, when the list or the sources changed or were never
#    installed completely.
{
  printf 'Types: deb\nURIs: %s\nSuites: %s%s\nComponents: main\n' "$mirror" "$suite" "$([ "$updates" = yes ] && echo " $suite-updates")"
  [ -z "$security" ] || printf '\nTypes: deb\nURIs: %s\nSuites: %s-security\nComponents: main\n' "$security" "$suite"
} >"$root/etc/apt/sources.list.d/debian.sources.new"
if ! cmp -s "$root/etc/apt/sources.list.d/debian.sources.new" "$root/etc/apt/sources.list.d/debian.sources"; then
  log "apt sources: $suite from $mirror${security:+, $suite-security from $security}$([ "$updates" = yes ] && echo ", $suite-updates")"
  [ -n "$security" ] || [ "$suite" = sid ] ||
    log "no security mirror in the host's apt sources: the chroot gets no $suite-security (MEMSAVE_${SUITE}_SECURITY_MIRROR)"
fi
mv "$root/etc/apt/sources.list.d/debian.sources.new" "$root/etc/apt/sources.list.d/debian.sources"
rm -f "$root/etc/apt/sources.list"
if [ "$suite" = sid ]; then
  printf 'Acquire::Check-Valid-Until "false";\n' >"$root/etc/apt/apt.conf.d/99memsave-valid-until"
fi
apt_conf=$(cat "$root"/etc/apt/apt.conf.d/99memsave-* 2>/dev/null || true)
want="${packages[*]} $(cksum <"$root/etc/apt/sources.list.d/debian.sources")${apt_conf:+ $(cksum <<<"$apt_conf")}"
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
flock -u 9

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
if [ "$mode" = run ]; then
  shift
  out=$(setting OUT)
  [ -n "$out" ] && mnt "$root/out" --bind "$out"
  set +e
  in_chroot "$@"
  rc=$?
  set -e
  exit $rc
fi
in_chroot sh -c "cmake -S /src -B '$build' -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMEMSAVE_TEST_POISON='$poison' >'$build.configure.log' 2>&1 || { cat '$build.configure.log'; exit 1; }"
in_chroot cmake --build "$build" -j"$jobs"
t2=$(date +%s)
log "built in $(elapsed $((t2 - t1)))"
set +e
# shellcheck disable=SC2086
in_chroot sh -c "cd '$build' && ctest --output-on-failure -j${CTEST_JOBS:-$(nproc)} ${CTEST_ARGS:-}"
rc=$?
set -e
t3=$(date +%s)
log "ctest exit $rc in $(elapsed $((t3 - t2))); total $(elapsed $((t3 - t0)))"
exit $rc

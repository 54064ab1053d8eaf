#!/bin/bash
# SPDX-License-Identifier: MIT
# test_apt_mirrors.sh SRCDIR (issue 16): scripts/apt_mirrors.sh, which trixie.sh uses to take
# the chroot's mirrors from the host's apt sources, over fixture sources (reserved
# *.example names): deb822 and one-line files, [options], comments, disabled entries,
# deb-src, third-party repositories, no security; and trixie.sh's refusal without a mirror.
set -u
src=$1
. "$(dirname "$0")/checks.sh"

mirrors() { "$src/scripts/apt_mirrors.sh" "$tmp/$1" bookworm 2>&1 | tr '\n' ';'; }
fixture() { mkdir -p "$tmp/$1/sources.list.d"; cat >"$tmp/$1/$2"; }

# deb822 as Debian 12 installs it, after a disabled stanza, a deb-src one, a third-party
# repository with component main, and with a URI list continued on the next line.
fixture deb822 sources.list.d/aaa-nodesource.sources <<'EOF'
Types: deb
URIs: https://node.example/node_20.x
Suites: nodistro
Components: main
EOF
fixture deb822 sources.list.d/debian.sources <<'EOF'
# Disabled: not this one.
Types: deb
URIs: http://disabled.example/debian
Suites: bookworm
Components: main
Enabled: no

Types: deb-src
URIs: http://source.example/debian
Suites: bookworm
Components: main

Types: deb
# a comment inside the stanza
URIs: http://mirror.example/debian/
 http://second.example/debian
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

types: deb
uris: http://security.example/debian-security
suites: bookworm-security
components: main
EOF
expect_eq "deb822: mirror, security, updates" "$(mirrors deb822)" \
  "mirror http://mirror.example/debian;security http://security.example/debian-security;updates yes;"

# One-line sources.list with options, comments and commented-out entries, no security.
fixture oneline sources.list <<'EOF'
# deb http://commented.example/debian bookworm main
deb-src http://source.example/debian bookworm main
deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.example/debian bookworm main # trailing
EOF
expect_eq "one-line with [options], no security, no updates" "$(mirrors oneline)" "mirror http://mirror.example/debian;updates no;"

# A third-party repository whose suite is the codename (component not main) and a cdrom
# come first; [ options ] with spaces; the old security suite name; a .list file.
fixture mixed sources.list <<'EOF'
deb cdrom:[Debian GNU/Linux 12]/ bookworm main
deb [ arch=amd64 signed-by=/etc/apt/keyrings/vendor.gpg ] https://vendor.example/linux/debian bookworm stable
deb [ signed-by=/usr/share/keyrings/debian-archive-keyring.gpg ] https://mirror.example/debian bookworm main non-free-firmware
EOF
fixture mixed sources.list.d/security.list <<'EOF'
deb http://security.example/debian-security bookworm/updates main
deb http://mirror.example/debian bookworm-updates main
EOF
expect_eq "one-line: vendor and cdrom skipped, old security name, .list file" "$(mirrors mixed)" \
  "mirror https://mirror.example/debian;security http://security.example/debian-security;updates yes;"

# sources.list comes before sources.list.d, as apt reads them.
fixture both sources.list <<<'deb http://first.example/debian bookworm main'
fixture both sources.list.d/debian.sources <<<$'Types: deb\nURIs: http://second.example/debian\nSuites: bookworm\nComponents: main'
expect_eq "sources.list before sources.list.d" "$(mirrors both)" "mirror http://first.example/debian;updates no;"

# Another release's entries are not this host's.
fixture other sources.list <<<'deb http://mirror.example/debian bullseye main'
expect_eq "another codename gives nothing" "$(mirrors other)" "updates no;"
mkdir -p "$tmp/empty"
expect_eq "no sources at all gives nothing" "$(mirrors empty)" "updates no;"

# trixie.sh fails before doing anything when neither the host nor the override gives one.
# MEMSAVE_TRIXIE_ROOT inside the tree: should the check ever be passed, trixie.sh still stops.
out=$(MEMSAVE_TRIXIE_APT_ETC=$tmp/empty MEMSAVE_TRIXIE_ROOT=$src "$src/scripts/trixie.sh" chroot 2>&1); rc=$?
expect_eq "trixie.sh without a mirror: exit 2" "$rc" "2"
expect_has "trixie.sh without a mirror: says so" "$out" "no Debian mirror for .* in the host's apt sources .*MEMSAVE_TRIXIE_MIRROR"
# sid.sh (the same script, another suite) reads its own settings.
out=$(MEMSAVE_SID_APT_ETC=$tmp/empty MEMSAVE_SID_ROOT=$src "$src/scripts/sid.sh" chroot 2>&1); rc=$?
expect_eq "sid.sh without a mirror: exit 2" "$rc" "2"
expect_has "sid.sh without a mirror: says so" "$out" "sid.sh: no Debian mirror for .* MEMSAVE_SID_MIRROR"
out=$("$src/scripts/chroot.sh" bookworm chroot 2>&1); rc=$?
expect_eq "chroot.sh with an unknown suite: exit 2" "$rc" "2"

[ "$failures" -eq 0 ] && echo "all apt mirror checks passed"
exit $((failures > 0))

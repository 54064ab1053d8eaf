#!/bin/bash
# SPDX-License-Identifier: MIT
# trixie.sh [chroot|test|run CMD...]: the test suite against Debian 13 (trixie), LibTorch 2.6, in a chroot
# (scripts/chroot.sh trixie, which documents the modes and the MEMSAVE_TRIXIE_* settings).
exec "$(dirname "$0")/chroot.sh" trixie "$@"

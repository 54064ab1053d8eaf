#!/bin/bash
# SPDX-License-Identifier: MIT
# sid.sh [chroot|test|run CMD...]: the test suite against Debian unstable (sid), LibTorch 2.14, in a chroot
# (scripts/chroot.sh sid, which documents the modes and the MEMSAVE_SID_* settings).
exec "$(dirname "$0")/chroot.sh" sid "$@"

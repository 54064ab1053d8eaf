#!/bin/bash
# SPDX-License-Identifier: MIT
# pip-check.sh [PYTHON]: pip's route, as a user takes it, checked end to end (issue 25): in a
# virtual environment made by PYTHON (default python3) with --system-site-packages, so that
# the system's torch stands in for a pip one,
#   0. tests/test_pip_pin.py (the wheel's torch requirement);
#   1. `pip install --no-build-isolation` of this source folder (pyproject.toml): libmemsave
#      built against that torch;
#   2. the `memsave` command on the environment's PATH, `python -m memsave`, and
#      memsave.library_path() inside the environment;
#   3. a preloaded training step (examples/finetune.py) whose report says the hooks are active,
#      and `memsave ab --check-output` on it: outputs identical to stock's;
#   4. the refusals: the command, once the environment's torch is another than the one it was
#      built for (a planted torch metadata folder); the build, when torch cannot be imported;
#   5. `pip uninstall`: the command and the module are gone.
# No network (pip is told not to use it), no root. Needs the venv module, pip, CMake, a C/C++
# compiler and scikit-build-core in PYTHON. CI runs it in the Debian 13 and unstable chroots
# (scripts/trixie.sh, scripts/sid.sh run bash /src/scripts/pip-check.sh).
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
python=${1:-python3}
work=$(mktemp -d /tmp/memsave-pip.XXXXXX)
trap 'rm -rf "$work"' EXIT
venv=$work/venv
say() { echo "pip-check: $*"; }
fail() { echo "pip-check: FAILED: $*" >&2; exit 1; }
export PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}

"$python" -m venv --system-site-packages "$venv"
# 0. The wheel's torch requirement on fake environments (python/pip/memsave_torch_pin.py).
"$venv/bin/python" "$src/tests/test_pip_pin.py" >"$work/pin.txt" || { cat "$work/pin.txt"; fail "tests/test_pip_pin.py"; }
say "$(tail -1 "$work/pin.txt")"
say "torch $("$venv/bin/python" -c 'import torch; print(torch.__version__)' 2>/dev/null) in a venv of $("$python" --version)"
t0=$(date +%s)
"$venv/bin/pip" install -q --no-build-isolation "$src" || fail "pip install"
say "pip install --no-build-isolation: $(( $(date +%s) - t0 )) s"

# 2. The command, the module and the library, all inside the environment.
[ -x "$venv/bin/memsave" ] || fail "no memsave command in $venv/bin"
version=$("$venv/bin/memsave" --version) || fail "memsave --version"
[ "$("$venv/bin/python" -m memsave --version)" = "$version" ] || fail "python -m memsave --version differs"
library=$(cd /tmp && "$venv/bin/python" -c 'import memsave; print(memsave.library_path())')
case "$library" in "$venv"/lib/python3*/site-packages/memsave/lib/libmemsave.so) ;;
  *) fail "memsave.library_path() is $library, not inside $venv" ;; esac
say "$version; memsave.library_path(): ${library#"$venv"/}"

# 3. A preloaded training step, then the A/B with outputs compared.
report=$work/report.txt
(cd /tmp && LD_PRELOAD=$library MEMSAVE_REPORT="$report" "$venv/bin/python" "$src/examples/finetune.py" --steps 2) >/dev/null
grep -q 'hooks active' "$report" || { cat "$report"; fail "the preloaded step's report does not say 'hooks active'"; }
grep -Eq '^memsave:   conv +on +[1-9]' "$report" || { cat "$report"; fail "no convolution substituted"; }
ab=$work/ab.txt
(cd /tmp && "$venv/bin/memsave" ab --check-output -- "$venv/bin/python" "$src/examples/finetune.py") | tee "$ab"
grep -q '^output of A and B: identical' "$ab" || fail "memsave ab --check-output"

# 4. Refusals. A torch metadata folder of another version, first on the environment's path,
# stands for a torch upgraded after the install: the command refuses and says what to do.
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
mkdir "$site/torch-0.0.1.dist-info"
printf 'Metadata-Version: 2.1\nName: torch\nVersion: 0.0.1\n' >"$site/torch-0.0.1.dist-info/METADATA"
built_for=$("$venv/bin/python" -c 'import memsave._build as b; print(b.TORCH_DISTRIBUTION)')
if [ -n "$built_for" ]; then
  rc=0
  "$venv/bin/memsave" --version >/dev/null 2>"$work/refusal.txt" || rc=$?
  [ "$rc" = 125 ] && grep -q "built for torch $built_for, but this environment has torch 0.0.1" "$work/refusal.txt" ||
    { cat "$work/refusal.txt"; fail "memsave with another torch: status $rc, not 125 with the reason"; }
  say "another torch: $(head -c 160 "$work/refusal.txt")..."
else
  say "the build's torch had no distribution metadata: the command cannot compare (the hooks still do)"
fi
rm -r "$site/torch-0.0.1.dist-info"
# A torch that cannot be imported: the build stops at configure and says what to do.
mkdir -p "$work/broken/torch"
echo 'raise ImportError("planted by pip-check")' >"$work/broken/torch/__init__.py"
rc=0
PYTHONPATH=$work/broken "$venv/bin/pip" install -q --no-build-isolation --force-reinstall --no-deps "$src" \
  >"$work/broken.txt" 2>&1 || rc=$?
[ "$rc" != 0 ] && grep -q 'cannot import torch' "$work/broken.txt" && grep -q -- '--no-build-isolation' "$work/broken.txt" ||
  { tail -30 "$work/broken.txt"; fail "a build without torch: status $rc, without the reason"; }
say "a build without torch: $(grep -m1 -o 'cannot import torch[^.]*' "$work/broken.txt")"

# 5. Uninstall.
"$venv/bin/pip" uninstall -q -y memsave
[ ! -e "$venv/bin/memsave" ] || fail "memsave still in $venv/bin after pip uninstall"
! (cd /tmp && "$venv/bin/python" -c 'import memsave, os; assert "'"$venv"'" in os.path.abspath(memsave.__file__)') 2>/dev/null ||
  fail "memsave still importable from $venv after pip uninstall"
say "done: install, command, module, preloaded step, ab --check-output, refusals, uninstall"

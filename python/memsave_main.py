# SPDX-License-Identifier: MIT
"""The `memsave` command that pip installs (pyproject.toml, [project.scripts]; also
`python -m memsave`). It checks that this environment still has the torch this copy of
libmemsave was built for, then runs the C command (bin/memsave in this package; docs/cli.md)
with the same arguments. Installed as memsave/__main__.py (cmake/Wheel.cmake)."""
import os
import sys
from typing import List, Optional

# `memsave`'s status when memsave itself failed (docs/cli.md).
_FAILED = 125


def torch_mismatch() -> Optional[str]:
    """Why the torch here is not the one this copy was built for, or None when it is (or when
    the build's torch had no distribution metadata to compare with: the hooks then check the
    LibTorch they are loaded into, and refuse a foreign one with a warning)."""
    from . import _build
    want = _build.TORCH_DISTRIBUTION
    if not want:
        return None
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # Python 3.7
        return None
    try:
        have = version("torch")
    except PackageNotFoundError:
        return f"built for torch {want}, but this environment has no torch"
    return None if have == want else f"built for torch {want}, but this environment has torch {have}"


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    why = torch_mismatch()
    if why:
        print(f"memsave: error: {why}. libmemsave's hooks load only into the torch they were built "
              "against; rebuild it here: pip install --no-build-isolation --force-reinstall "
              "<libmemsave's source folder>", file=sys.stderr)
        return _FAILED
    exe = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bin", "memsave")
    try:
        os.execv(exe, ["memsave"] + list(argv))
    except OSError as e:
        print(f"memsave: error: cannot run {exe}: {e.strerror}", file=sys.stderr)
    return _FAILED


if __name__ == "__main__":
    sys.exit(main())

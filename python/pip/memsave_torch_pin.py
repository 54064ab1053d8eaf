# SPDX-License-Identifier: MIT
"""The wheel's dependency on the torch it is built against (pyproject.toml,
[tool.scikit-build.metadata.dependencies]; scikit-build-core loads this file from
python/pip at build time).

libmemsave's hooks are C++ linked against one LibTorch, and load only into that one. The wheel
therefore requires exactly the torch distribution that the building Python has
("torch==2.6.0+debian", "torch==2.11.0+cu130"): pip refuses to install the wheel where another
torch is, and warns when that torch is later replaced. A torch without distribution metadata
(on PYTHONPATH only) gives no requirement; the `memsave` command and the hooks still check.
No torch at all stops the build here, with what to do."""
import sys


def _torch_distribution():
    """The version pip knows torch by, "" when torch imports without metadata."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("torch")
    except PackageNotFoundError:
        pass
    try:
        import torch  # noqa: F401
    except Exception as e:
        raise RuntimeError(
            f"memsave: this Python cannot import torch ({type(e).__name__}: {e}). libmemsave is built "
            "against the torch of the Python that builds it: install torch in this environment "
            "first, then run `pip install --no-build-isolation .` there (without "
            "--no-build-isolation pip builds in a fresh environment that has no torch).") from None
    return ""


def _unmet_requirements(dist):
    """The requirements in the closure of distribution `dist` that this environment does not
    meet, as pip would see them once it has to resolve `dist` (extras left out)."""
    from importlib.metadata import PackageNotFoundError, requires, version
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    unmet, seen, todo = [], set(), [dist]
    while todo:
        name = todo.pop()
        if canonicalize_name(name) in seen:
            continue
        seen.add(canonicalize_name(name))
        for line in requires(name) or []:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            try:
                have = version(req.name)
            except PackageNotFoundError:
                unmet.append(f"{name} needs {req} (not installed)")
                continue
            if not req.specifier.contains(have, prereleases=True):
                unmet.append(f"{name} needs {req} ({have} installed)")
            todo.append(req.name)
    return unmet


def dynamic_metadata(field, settings=None):
    if field != "dependencies":
        raise ValueError(f"memsave_torch_pin provides dependencies, not {field}")
    torch = _torch_distribution()
    if not torch:
        return []
    # A distribution's torch whose metadata its own packages do not meet (Debian 13's
    # python3-torch names sympy==1.13.1 beside Debian's sympy 1.13.3; unstable's sympy names an
    # mpmath below 1.4 beside mpmath 1.4): naming that torch would make pip try to download
    # what it lacks. The `memsave` command still checks the torch.
    unmet = _unmet_requirements("torch")
    if unmet:
        print(f"memsave: torch {torch}'s own requirements are not met in this environment "
              f"({'; '.join(unmet)}), so the wheel does not name it as a dependency; the memsave "
              "command checks that torch instead", file=sys.stderr)
        return []
    return [f"torch=={torch}"]

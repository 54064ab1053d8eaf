# SPDX-License-Identifier: MIT
"""python/pip/memsave_torch_pin.py, the wheel's dependency on the torch it is built against,
on fake environments (distribution metadata folders on an otherwise empty path):
  - torch whose requirements are met, directly and transitively, markers and extras left
    out: the wheel names torch==<that version>;
  - torch whose own requirement, or a requirement of one of them, is not met (Debian's
    python3-torch): no dependency, and a message that says why;
  - no torch metadata but an importable torch: no dependency;
  - no torch at all: the build stops with what to do (--no-build-isolation).
Needs `packaging` (scikit-build-core's own dependency): scripts/pip-check.sh runs it with the
virtual environment's Python it builds with."""
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PIN = os.path.join(HERE, "..", "python", "pip")


def dist(site, name, version, requires=()):
    folder = os.path.join(site, f"{name}-{version}.dist-info")
    os.makedirs(folder)
    with open(os.path.join(folder, "METADATA"), "w") as f:
        f.write(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        for r in requires:
            f.write(f"Requires-Dist: {r}\n")


def pin(site, torch_module=None):
    """dynamic_metadata("dependencies") with only `site`, the pin module and packaging on the
    path: (result or the error's text, what it printed on stderr)."""
    import packaging
    tools = tempfile.mkdtemp()
    os.symlink(os.path.dirname(packaging.__file__), os.path.join(tools, "packaging"))
    if torch_module is not None:
        os.makedirs(os.path.join(site, "torch"))
        with open(os.path.join(site, "torch", "__init__.py"), "w") as f:
            f.write(torch_module)
    code = ("import memsave_torch_pin as p\ntry:\n print(p.dynamic_metadata('dependencies'))\n"
            "except RuntimeError as e:\n print('error:', e)\n")
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": os.pathsep.join([site, PIN, tools])}, check=True)
    return out.stdout.strip(), out.stderr.strip()


failures = []


def check(what, got, want_out, want_err=""):
    out, err = got
    ok = out == want_out and want_err in err and (want_err or not err)
    print(f"{'ok' if ok else 'FAIL'}: {what}: {out!r} {err[:120]!r}")
    if not ok:
        failures.append(what)


def site():
    return tempfile.mkdtemp()


s = site()
dist(s, "torch", "9.9.0+cpu", ["dep>=1.0", 'absent; extra == "opt"', 'absent; python_version < "3"'])
dist(s, "dep", "1.2", ["sub<2"])
dist(s, "sub", "1.5")
check("requirements met, markers and extras left out", pin(s), "['torch==9.9.0+cpu']")

s = site()
dist(s, "torch", "9.9.0", ["dep==1.0"])
dist(s, "dep", "1.2")
check("a requirement of torch not met", pin(s), "[]", "torch needs dep==1.0 (1.2 installed)")

s = site()
dist(s, "torch", "9.9.0", ["Dep>=1.0"])
dist(s, "dep", "1.2", ["sub<2"])
dist(s, "sub", "2.1")
check("a requirement of a requirement not met", pin(s), "[]", "needs sub<2 (2.1 installed)")

s = site()
dist(s, "torch", "9.9.0", ["missing"])
check("a requirement not installed", pin(s), "[]", "torch needs missing (not installed)")

check("torch importable without metadata", pin(site(), "__version__ = '9.9'\n"), "[]")

out, err = pin(site())
ok = out.startswith("error: memsave: this Python cannot import torch") and "--no-build-isolation" in out
print(f"{'ok' if ok else 'FAIL'}: no torch: {out[:100]!r}")
if not ok:
    failures.append("no torch")

print("test_pip_pin:", "FAILED " + ", ".join(failures) if failures else "passed")
sys.exit(1 if failures else 0)

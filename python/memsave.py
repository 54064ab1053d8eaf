# SPDX-License-Identifier: MIT
"""memsave: libmemsave's C ABI (memsave.h) from Python, with ctypes only.

libmemsave works from LD_PRELOAD; this module does not load it, it talks to the copy already
in the process. Without the preload it imports, active() is False, stats() and peak() are
None, and disabled() changes nothing.

    import torch, memsave
    memsave.active()                 # True under LD_PRELOAD=libmemsave.so (after import torch)
    with memsave.disabled():         # ops recorded inside get stock's nodes
        y = frozen_backbone(x)
    memsave.stats().substituted["conv"], memsave.peak()
    subprocess.run(cmd, env=memsave.preload_env())   # a child with the library preloaded
"""
import contextlib
import ctypes
import dataclasses
import os
import sys
from typing import Dict, Optional

__all__ = ["active", "stats", "Stats", "peak", "reset_peak", "disabled", "preload_env", "library_path"]

_LIBRARY = "libmemsave.so"
_SLOTS = 8  # MEMSAVE_FAMILY_SLOTS


class _CStats(ctypes.Structure):
    """struct memsave_stats as this module knows it (memsave.h; fields are only ever added
    at the end, and the library fills the prefix both sides know)."""
    _fields_ = [
        ("size", ctypes.c_uint64),
        ("substituted", ctypes.c_uint64 * _SLOTS),
        ("fallbacks", ctypes.c_uint64 * _SLOTS),
        ("passthrough", ctypes.c_uint64 * _SLOTS),
        ("bytes_kept", ctypes.c_uint64),
        ("bytes_stock", ctypes.c_uint64),
        ("cpu_current_bytes", ctypes.c_uint64),
        ("cpu_peak_bytes", ctypes.c_uint64),
        ("cpu_peak_total_bytes", ctypes.c_uint64),
        ("activation_bytes_kept", ctypes.c_uint64),
        ("activation_bytes_stock", ctypes.c_uint64),
        ("parameter_bytes_kept", ctypes.c_uint64),
        ("parameter_bytes_stock", ctypes.c_uint64),
        ("recomputed_bytes", ctypes.c_uint64),
        ("activation_bytes_kept_peak", ctypes.c_uint64),
        ("activation_bytes_stock_peak", ctypes.c_uint64),
        ("activation_bytes_kept_live", ctypes.c_uint64),
        ("activation_bytes_stock_live", ctypes.c_uint64),
    ]


@dataclasses.dataclass(frozen=True)
class Stats:
    """This process's statistics (struct memsave_stats, same field names). The per-family
    arrays are dicts keyed by family name ("conv", "relu", ...). A field the loaded library
    is too old to fill is None. Byte figures are tensor bytes, not RSS."""
    size: int
    substituted: Dict[str, int]
    fallbacks: Dict[str, int]
    passthrough: Dict[str, int]
    bytes_kept: Optional[int]
    bytes_stock: Optional[int]
    cpu_current_bytes: Optional[int]
    cpu_peak_bytes: Optional[int]
    cpu_peak_total_bytes: Optional[int]
    activation_bytes_kept: Optional[int] = None
    activation_bytes_stock: Optional[int] = None
    parameter_bytes_kept: Optional[int] = None
    parameter_bytes_stock: Optional[int] = None
    recomputed_bytes: Optional[int] = None
    # The activations kept at once (the fields above are sums over the run): the most over
    # the run, ours and stock's, and now; a node counts from its forward until backward
    # releases what it keeps or the node is destroyed.
    activation_bytes_kept_peak: Optional[int] = None
    activation_bytes_stock_peak: Optional[int] = None
    activation_bytes_kept_live: Optional[int] = None
    activation_bytes_stock_live: Optional[int] = None


def _abi():
    """The library's functions when libmemsave.so is in the process (preloaded or linked),
    else None. Looked up in the global namespace, never loaded by this module: loaded late,
    it would miss LibTorch's arrival."""
    lib = ctypes.CDLL(None)
    try:
        lib.memsave_get_stats.argtypes = [ctypes.POINTER(_CStats), ctypes.c_size_t]
    except AttributeError:
        return None
    lib.memsave_family_name.restype = ctypes.c_char_p
    lib.memsave_set_enabled.argtypes = [ctypes.c_int]
    return lib


def active() -> bool:
    """True when libmemsave's hooks are installed in this process: the library is preloaded,
    LibTorch is loaded (import torch) and MEMSAVE is not 0."""
    lib = _abi()
    return lib is not None and lib.memsave_is_active() == 1


def stats() -> Optional[Stats]:
    """The statistics, or None when libmemsave.so is not in the process. Under MEMSAVE=0
    the library still counts tensor bytes; the node counters stay 0."""
    lib = _abi()
    if lib is None:
        return None
    raw = _CStats()
    if lib.memsave_get_stats(ctypes.byref(raw), ctypes.sizeof(raw)) != 0:
        return None
    names = {}
    for i in range(_SLOTS):
        name = lib.memsave_family_name(i)
        if name:
            names[i] = name.decode()
    values = {"size": raw.size}
    for field, ctype in _CStats._fields_[1:]:
        filled = getattr(_CStats, field).offset + ctypes.sizeof(ctype) <= raw.size
        value = getattr(raw, field) if filled else None
        if isinstance(value, ctypes.Array):
            value = {name: value[i] for i, name in names.items()}
        values[field] = value
    return Stats(**values)


def peak() -> Optional[int]:
    """Peak CPU tensor bytes since the start or the last reset_peak(); None without the library."""
    s = stats()
    return None if s is None else s.cpu_peak_bytes


def reset_peak() -> None:
    """Sets the peak to the tensor bytes alive now, to measure one phase (the report at exit
    and Stats.cpu_peak_total_bytes keep the whole run's). Does nothing without the library."""
    lib = _abi()
    if lib is not None:
        lib.memsave_reset_peak()


@contextlib.contextmanager
def disabled():
    """Operators recorded inside the block get stock's autograd nodes; the previous state
    comes back on exit, also when the block raises. Nodes already built keep their kind, and
    a backward run later goes through whichever nodes were recorded.

    The switch is process-wide (memsave_set_enabled), not per thread: other threads that
    record operators meanwhile get stock's nodes too, and blocks that overlap in time on
    different threads restore in their own order. Nested blocks are fine. Without the
    library it does nothing."""
    lib = _abi()
    if lib is None:
        yield
        return
    previous = lib.memsave_set_enabled(0)
    try:
        yield
    finally:
        lib.memsave_set_enabled(previous)


def library_path() -> Optional[str]:
    """The path of libmemsave.so: the copy mapped into this process, else the installed one
    (pip's package: memsave/lib/; Debian's or `cmake --install`'s tree: the multiarch library
    directory of the prefix this module is installed in), else None."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.rstrip("\n").split(None, 5)[-1]
                if os.path.basename(path) == _LIBRARY:
                    return path
    except OSError:
        pass
    here = os.path.dirname(os.path.abspath(__file__))
    # pip's package (cmake/Wheel.cmake): memsave/__init__.py, memsave/lib/libmemsave.so.
    if os.path.basename(__file__) == "__init__.py":
        candidate = os.path.join(here, "lib", _LIBRARY)
        return candidate if os.path.isfile(candidate) else None
    # Installed: PREFIX/lib/python3/dist-packages/memsave.py, PREFIX/lib/<multiarch>/libmemsave.so.
    libdir = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for sub in (getattr(sys.implementation, "_multiarch", ""), ""):
        candidate = os.path.join(libdir, sub, _LIBRARY)
        if os.path.isfile(candidate):
            return candidate
    return None


def preload_env(env=None, library=None) -> Dict[str, str]:
    """A copy of env (default os.environ) whose LD_PRELOAD starts with libmemsave.so, for
    subprocess and launchers. An existing LD_PRELOAD is kept after it, as `memsave run`
    does. When LD_PRELOAD already names a libmemsave.so the copy is returned unchanged: the
    library is never preloaded twice. library defaults to library_path(); FileNotFoundError
    when there is none."""
    out = dict(os.environ if env is None else env)
    entries = out.get("LD_PRELOAD", "").replace(":", " ").split()
    if any(os.path.basename(e) == _LIBRARY for e in entries):
        return out
    library = library or library_path()
    if library is None or not os.path.isfile(library):
        raise FileNotFoundError(f"memsave: {_LIBRARY} not found (not in this process, not installed"
                                f"{'' if library is None else ', not at ' + library})")
    out["LD_PRELOAD"] = ":".join([library] + entries)
    return out

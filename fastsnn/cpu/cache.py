"""Numba's disk cache of compiled CPU kernels: is a kernel's compiled code already there?

A kernel compiles on its first call in a process unless numba's disk cache holds it (the first run
on a machine compiles for ~30 s). These helpers read numba's cache index, so that a caller can say
"compiling" before the pause instead of after it.
"""

from __future__ import annotations

from types import ModuleType

from numba.core.dispatcher import Dispatcher


def is_cached(kernel) -> bool:
    """Whether numba's disk cache holds compiled code for ``kernel`` (a ``cpu_kernel`` dispatcher)."""
    try:  # numba's index of compiled signatures; empty when absent or stale
        return bool(kernel._cache._cache_file._load_index())
    except AttributeError:  # not a dispatcher with a disk cache
        return False


def disk_kernels(module: ModuleType) -> list[Dispatcher]:
    """The module's kernels that numba caches on disk (not the inlined helpers beside them)."""
    return [k for k in vars(module).values() if isinstance(k, Dispatcher) and hasattr(k._cache, "_cache_file")]


def module_cached(module: ModuleType) -> bool:
    """Whether any kernel of ``module`` is cached: a caller need not call all of them (the spike
    projection picks its path by density), and they compile together on a first run."""
    return any(is_cached(k) for k in disk_kernels(module))

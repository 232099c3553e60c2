"""Numba's disk cache of the CPU kernels, keyed on every source a kernel compiles from.

numba alone stamps a cached kernel with the file that defines it; but a kernel compiles into its
own machine code the helpers it calls and the constants it reads from other modules (the row copies
of ``rows.py``, the intrinsics of ``vectors.py`` and ``ops/spikes/simd.py``, the neuron codes of
``neuron.py``), so after an edit there (a ``git pull`` in an editable install) numba kept loading
the old code: silently wrong results. :class:`KernelCache` stamps a kernel with a digest of its
file and of every fastsnn module that file imports, transitively (:func:`kernel_sources`: a kernel
can only reach code through its module's imports), and of the numba and llvmlite versions. numba
itself adds the Python version (the file name) and the CPU: an entry is looked up by the target
triple, CPU name and CPU features (``codegen.magic_tuple()``), so a cache shared by machines holds
one entry per CPU. A stale entry is a miss: the kernel compiles and replaces it.

Where: ``NUMBA_CACHE_DIR`` if set, else ``__pycache__`` beside the kernel's file, else numba's user
cache folder (``~/.cache/numba``), else ``<tmp>/fastsnn-numba-<uid>``, the first one writable (on a
read-only install with a read-only home, the last). An index that cannot be read (truncated, foreign)
is a miss. A cache that cannot be written (a full disk) is turned off: the kernel compiles in every
process, and one warning per process says so, as it does when no folder is writable at all
(:func:`persistent`).

:func:`is_cached` and :func:`module_cached` read the index, so that a run can say "compiling" before
the pause instead of after it.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import os
import tempfile
import warnings
from pathlib import Path
from types import ModuleType

import llvmlite
import numba
from numba.core.caching import (CompileResultCacheImpl, FunctionCache, IndexDataCacheFile, InTreeCacheLocator,
                                UserProvidedCacheLocator, UserWideCacheLocator)
from numba.core.dispatcher import Dispatcher

ROOT = Path(__file__).resolve().parent.parent  # the fastsnn package
PACKAGE = ROOT.name


def _module_file(name: str) -> Path | None:
    """The source file of fastsnn module ``name`` (a dotted name), or None when it is not one."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = ROOT.joinpath(*parts[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imported_files(path: Path) -> set[Path]:
    """The fastsnn files that ``path``'s import statements (at any depth) name."""
    try:  # the package that relative imports start from (an __init__.py's is its own folder)
        package = [PACKAGE, *path.relative_to(ROOT).parent.parts]
    except ValueError:  # a file outside fastsnn: only its imports of fastsnn by full name count
        package = []
    names = []
    for node in ast.walk(ast.parse(path.read_bytes())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = ".".join((package[:len(package) - node.level + 1] if node.level else [])
                              + ([node.module] if node.module else []))
            names += [target] + [f"{target}.{alias.name}" for alias in node.names]  # a name may be a submodule
    return {file for file in map(_module_file, names) if file is not None}


@functools.cache
def kernel_sources(path: str) -> tuple[Path, ...]:
    """The file ``path`` (in fastsnn) and every fastsnn file it imports, transitively, sorted."""
    seen, todo = set(), [Path(path).resolve()]
    while todo:
        file = todo.pop()
        if file not in seen:
            seen.add(file)
            todo += _imported_files(file)
    return tuple(sorted(seen))


@functools.cache
def source_stamp(path: str) -> str:
    """SHA-256 of the numba and llvmlite versions and of :func:`kernel_sources` (``path``): names and bytes,
    read once per process (the code this process compiles is the code it imported)."""
    digest = hashlib.sha256(f"numba {numba.__version__} llvmlite {llvmlite.__version__}\n".encode())
    for file in kernel_sources(path):
        data = file.read_bytes()
        name = file.relative_to(ROOT).as_posix() if file.is_relative_to(ROOT) else str(file)
        digest.update(f"{name} {len(data)}\n".encode())
        digest.update(data)
    return digest.hexdigest()


class _Stamped:
    """A numba cache locator whose source stamp is :func:`source_stamp` instead of the one file's hash."""

    def get_source_stamp(self):
        return source_stamp(self._py_file)


class _UserProvided(_Stamped, UserProvidedCacheLocator):
    pass


class _InTree(_Stamped, InTreeCacheLocator):
    pass


class _UserWide(_Stamped, UserWideCacheLocator):
    pass


class _TempUser(_Stamped, UserWideCacheLocator):
    """``<tmp>/fastsnn-numba-<uid>``: a folder only this user may write, for when home is read-only too.
    One that another user made (or made writable to others) is refused: it could hold planted code."""

    def __init__(self, py_func, py_file):
        super().__init__(py_func, py_file)
        self._root = Path(tempfile.gettempdir()) / f"fastsnn-numba-{os.getuid()}"
        self._cache_path = str(self._root / self.get_suitable_cache_subpath(py_file))

    def ensure_cache_path(self):
        self._root.mkdir(mode=0o700, exist_ok=True)
        st = self._root.lstat()
        if self._root.is_symlink() or st.st_uid != os.getuid() or st.st_mode & 0o022:
            raise PermissionError(f"{self._root} is not this user's own folder")
        super().ensure_cache_path()


class _Impl(CompileResultCacheImpl):
    _locator_classes = [_UserProvided, _InTree, _UserWide, _TempUser]


_persistent = True


def persistent() -> bool:
    """Whether this process keeps the kernels it compiles on disk: False once no folder was writable or a
    cache failed (the kernels then compile in every process)."""
    return _persistent


def _warn_once(message: str) -> None:
    global _persistent
    if _persistent:
        _persistent = False
        warnings.warn(f"fastsnn: {message}; CPU kernels compile in every process (~30 s); set NUMBA_CACHE_DIR "
                      "to a writable folder with free space to keep them", RuntimeWarning, stacklevel=2)


class _Index(IndexDataCacheFile):
    """numba's index of a kernel's cached signatures; one that cannot be read (truncated, foreign) is empty,
    and the next save replaces it."""

    def _load_index(self):
        try:
            return super()._load_index()
        except Exception:  # whatever is wrong with the file (even a folder in its place), the kernel compiles
            return {}


class KernelCache(FunctionCache):
    """numba's per-kernel disk cache, stamped with :func:`source_stamp`. An entry that cannot be read is a
    miss; a cache that cannot be written turns itself off (the kernel compiles in every process) with one
    warning per process."""

    _impl_class = _Impl

    def __init__(self, py_func):
        super().__init__(py_func)
        self._cache_file = _Index(self._cache_path, self._impl.filename_base, self._impl.locator.get_source_stamp())

    def load_overload(self, sig, target_context):
        try:
            return super().load_overload(sig, target_context)
        except Exception:  # a damaged entry: the kernel compiles, and saving it replaces the entry
            return None

    def save_overload(self, sig, data):
        try:
            super().save_overload(sig, data)
        except OSError as err:  # a full disk, a read-only folder, a folder where the index should be
            self.disable()
            _warn_once(f"the kernel cache in {self.cache_path} cannot be written ({err})")


def cached_kernel(dispatcher: Dispatcher) -> Dispatcher:
    """Give ``dispatcher`` (compiled without numba's own cache) a :class:`KernelCache`; without any writable
    folder it stays uncached, with one warning."""
    try:
        dispatcher._cache = KernelCache(dispatcher.py_func)  # what Dispatcher.enable_caching sets
    except RuntimeError:  # numba's "no locator available": every folder of the module docstring failed
        _warn_once("no writable folder for the kernel cache (NUMBA_CACHE_DIR, __pycache__ beside the kernels, "
                   f"the user's cache folder, {tempfile.gettempdir()}/fastsnn-numba-{os.getuid()})")
    return dispatcher


def is_cached(kernel) -> bool:
    """Whether the disk cache holds compiled code for ``kernel`` (a ``cpu_kernel`` dispatcher)."""
    try:  # numba's index of compiled signatures; empty when absent or stale
        return bool(kernel._cache._enabled and kernel._cache._cache_file._load_index())
    except AttributeError:  # not a dispatcher with a disk cache
        return False


def disk_kernels(module: ModuleType) -> list[Dispatcher]:
    """The module's kernels that are cached on disk (not the inlined helpers beside them)."""
    return [k for k in vars(module).values() if isinstance(k, Dispatcher) and isinstance(k._cache, KernelCache)]


def module_cached(module: ModuleType) -> bool:
    """Whether any kernel of ``module`` is cached: a caller need not call all of them (the spike
    projection picks its path by density), and they compile together on a first run."""
    return any(is_cached(k) for k in disk_kernels(module))

"""The disk cache of the numba kernels (``fastsnn/cpu/cache.py``): keyed on every source a kernel compiles
from, usable on a read-only install, and never the reason a kernel call fails.

Each test copies the package to a temporary folder and runs the smallest kernel (the leaky readout's
forward, ~3 s to compile) in fresh processes, as a user's successive runs would."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ALPHA = 0.5

# the readout membrane u_{t+1} = alpha u_t + h_t at h = 1, summed over (2, 5, 3); the kernel's cache statistics
PROBE = f"""
import numpy as np
from fastsnn.ops.readout.cpu import leaky_readout_fwd_kernel as kernel
h = np.ones((2, 5, 3), np.float32); u = np.zeros_like(h)
kernel(h, np.full(3, {ALPHA}, np.float32), 3, u)
print(float(u.sum()), sum(kernel.stats.cache_hits.values()), sum(kernel.stats.cache_misses.values()))
"""


def readout_sum(alpha: float) -> float:
    u, total = 0.0, 0.0
    for _ in range(5):
        total += u
        u = alpha * u + 1.0
    return 2 * 3 * total


def copy_install(folder: Path) -> Path:
    """A copy of the package's sources (no compiled files) in ``folder``."""
    shutil.copytree(ROOT / "fastsnn", folder / "fastsnn", ignore=shutil.ignore_patterns("__pycache__", "kernels"))
    return folder


@pytest.fixture
def install(tmp_path) -> Path:
    return copy_install(tmp_path / "site")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> tuple[Path, Path]:
    """(an install, a NUMBA_CACHE_DIR holding its compiled probe kernel), shared: copy the cache to change it."""
    folder = tmp_path_factory.mktemp("compiled")
    install = copy_install(folder / "site")
    assert probe(install, NUMBA_CACHE_DIR=str(folder / "numba"))[:3] == (readout_sum(ALPHA), 0, 1)
    return install, folder / "numba"


def probe(install: Path, **env) -> tuple[float, int, int, str]:
    """(result, cache hits, cache misses, stderr) of PROBE in a fresh process importing ``install``."""
    env = {**os.environ, "PYTHONPATH": str(install), **env}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, cwd=install,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    result, hits, misses = out.stdout.split()
    return float(result), int(hits), int(misses), out.stderr


def test_an_edited_helper_recompiles_the_kernels_that_inline_it(install, tmp_path):
    """numba keyed the cache on the kernel's own file: after an edit of rows.py (a `git pull`) the readout
    kept running the old, inlined ``staged``."""
    cache = {"NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    assert probe(install, **cache)[:3] == (readout_sum(ALPHA), 0, 1)
    assert probe(install, **cache)[:3] == (readout_sum(ALPHA), 1, 0)  # cached
    rows = install / "fastsnn" / "cpu" / "rows.py"
    old = "    buf[: src.shape[0]] = src\n"
    assert rows.read_text().count(old) == 1
    rows.write_text(rows.read_text().replace(old, "    buf[: src.shape[0]] = src * src.dtype.type(0.5)\n"))
    assert probe(install, **cache)[:3] == (readout_sum(ALPHA / 2), 0, 1)  # alpha staged halved: compiled afresh


def test_the_stamp_covers_the_imported_sources_and_versions(monkeypatch):
    import llvmlite
    import numba

    from fastsnn.cpu import cache
    from fastsnn.ops.readout import cpu as readout_cpu
    from fastsnn.ops.spikes import cpu as spikes_cpu

    names = {p.relative_to(cache.ROOT).as_posix() for p in cache.kernel_sources(spikes_cpu.__file__)}
    assert {"ops/spikes/cpu.py", "ops/spikes/simd.py", "cpu/vectors.py", "cpu/__init__.py", "cpu/rows.py"} <= names
    assert not names & {"nn.py", "experiment/cli.py", "ops/readout/cpu.py"}  # an unrelated edit keeps the cache
    stamp = cache.source_stamp.__wrapped__(readout_cpu.__file__)  # computed now, not the process's memo
    assert stamp == cache.source_stamp(readout_cpu.__file__)
    assert readout_cpu.leaky_readout_fwd_kernel._cache._cache_file._source_stamp == stamp
    for module in (numba, llvmlite):
        with monkeypatch.context() as patch:
            patch.setattr(module, "__version__", "0.0.0")
            assert cache.source_stamp.__wrapped__(readout_cpu.__file__) != stamp, module


def unwritable(install: Path, tmp_path: Path) -> dict:
    """An install and a home no cache can be written in (files where their cache folders would go, which
    stops root too), and a fresh temporary folder: the environment of a read-only install."""
    for folder in [install / "fastsnn", *(install / "fastsnn").rglob("*")]:
        if folder.is_dir():
            (folder / "__pycache__").write_text("")
    (tmp_path / "home").write_text("")
    (tmp_path / "tmp").mkdir()
    return {"HOME": str(tmp_path / "home"), "XDG_CACHE_HOME": str(tmp_path / "home" / "cache"),
            "TMPDIR": str(tmp_path / "tmp"), "NUMBA_CACHE_DIR": ""}


def train(install: Path, tmp_path: Path, env: dict) -> str:
    """stderr of a small `fastsnn train` (reference backend: only the stimulus kernel to compile) of ``install``."""
    flags = ["--hidden", "8", "--train-batches", "1", "--test-batches", "1", "--epochs", "1", "--batch-size", "16",
             "--anf-per-ear", "10", "--threads", "1", "--backend", "reference", "--out", str(tmp_path / "run"),
             "--overwrite"]
    out = subprocess.run([sys.executable, "-m", "fastsnn", "train", *flags], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(install), **env}, cwd=install, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stderr


def test_a_read_only_install_caches_in_a_folder_of_the_user(install, tmp_path):
    """Each run compiled again (~37 s) and said "first run only"."""
    env = unwritable(install, tmp_path)
    assert "compiling CPU kernels (first run only, ~30 s)" in train(install, tmp_path, env)
    err = train(install, tmp_path, env)
    assert "compiling" not in err and "Warning" not in err, err
    own = tmp_path / "tmp" / f"fastsnn-numba-{os.getuid()}"
    assert own.stat().st_mode & 0o777 == 0o700 and any(own.rglob("*.nbi"))


def test_a_temporary_folder_open_to_others_is_not_used(install, tmp_path):
    """Another user could have planted compiled code there: compile in every run instead, and say so."""
    env = unwritable(install, tmp_path)
    (tmp_path / "tmp" / f"fastsnn-numba-{os.getuid()}").mkdir()
    os.chmod(tmp_path / "tmp" / f"fastsnn-numba-{os.getuid()}", 0o777)
    err = train(install, tmp_path, env)
    assert err.count("RuntimeWarning: fastsnn: no writable folder for the kernel cache") == 1, err
    assert "compiling CPU kernels (no kernel cache: every run, ~30 s)" in err, err
    assert not any((tmp_path / "tmp").rglob("*.nbi"))


@pytest.mark.parametrize("damage", ["folder", "garbage"])
def test_a_broken_cache_never_fails_a_kernel_call(damage, compiled, tmp_path):
    """A cache whose index cannot be written (here a folder in its place; a full disk fails the same way:
    the probe saw every kernel call fail with ENOSPC) runs the kernel uncached with one warning; an index
    that cannot be read is a miss, then rewritten."""
    install, cache = compiled[0], tmp_path / "numba"
    shutil.copytree(compiled[1], cache)
    (index,) = cache.rglob("*.nbi")
    index.unlink()
    if damage == "folder":
        index.mkdir()
    else:
        index.write_bytes(b"\x80\x04not a pickle")
    result, hits, misses, err = probe(install, NUMBA_CACHE_DIR=str(cache))
    assert (result, hits, misses) == (readout_sum(ALPHA), 0, 1)
    if damage == "folder":
        assert err.count("RuntimeWarning: fastsnn: the kernel cache in") == 1 and "cannot be written" in err, err
    else:
        assert "Warning" not in err, err
        assert probe(install, NUMBA_CACHE_DIR=str(cache))[:3] == (readout_sum(ALPHA), 1, 0)

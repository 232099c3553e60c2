"""Crash-safe files: atomic replacement and folder locks.

A file written through :func:`replacing` or :func:`atomic_write` appears whole or not at all: the data
goes to a hidden temporary name in the same folder (``.tmp-<pid>-<name>``), is flushed to disk, then
renamed over the target. A :func:`locked` folder is held by one process at a time through ``flock`` on
its ``.lock`` file; the kernel releases the lock when the process dies, however it dies.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

TMP_PREFIX = ".tmp-"


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix) to write; when the block succeeds, sync it
    to disk and rename it onto ``path``. The temporary file never outlives the block."""
    path = Path(path)
    tmp = path.with_name(f"{TMP_PREFIX}{os.getpid()}-{path.name}")
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: Path, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text)


@contextmanager
def locked(folder: Path, holder: str) -> Iterator[None]:
    """Hold the exclusive lock of ``folder`` while the block runs; ``folder/.lock`` records the pid.

    Raises ``ValueError`` naming ``holder`` (who else would hold it) and its pid when it is taken.
    """
    with open(Path(folder) / ".lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise ValueError(f"{folder} is in use by {holder} (pid {f.read().strip() or '?'})") from None
        f.truncate(0)
        f.write(f"{os.getpid()}\n")
        f.flush()
        yield

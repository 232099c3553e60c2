"""Crash-safe files: atomic replacement and folder locks.

A file written through :func:`replacing` or :func:`atomic_write` appears whole or not at all: the data
goes to a hidden temporary name in the same folder (``.tmp-<pid>-<name>``), is flushed to disk, then
renamed over the target; a write that fails on a full disk says which disk and file. A :func:`locked`
folder is held by one process at a time through ``flock`` on its ``.lock`` file (never a link); the
kernel releases the lock when the process dies, however it dies, and the next holder removes the
temporary files that dead processes left there.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

TMP_PREFIX = ".tmp-"
LOCK = ".lock"


def _no_space(err: BaseException | None) -> OSError | None:
    """The ENOSPC or EDQUOT ``OSError`` that ``err`` is, or that caused it or was being handled when it was
    raised; None if there is none."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix) to write; when the block succeeds, sync it
    to disk and rename it onto ``path``. The temporary file never outlives the block. A full disk (an
    ``OSError`` ENOSPC or EDQUOT from the writer, or behind what it raised: ``torch.save`` reports its own
    writer's failures as "unexpected pos", a Python file object's as the ``OSError``) raises one naming
    the disk and the file."""
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
    except Exception as err:
        full = _no_space(err)
        if full is None:
            raise
        raise OSError(full.errno, f"{full.strerror} (the disk of {path.parent}, writing {path.name})") from err
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: Path, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text)


def _dead(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's live process
        return False
    return False


def _remove_stale_tmp(folder: Path) -> None:
    """Remove the temporary files of :func:`replacing` in ``folder`` whose writer is dead (a kill mid-write)."""
    for path in Path(folder).glob(TMP_PREFIX + "*"):
        match = re.match(re.escape(TMP_PREFIX) + r"(\d+)-", path.name)
        if match and _dead(int(match[1])):
            path.unlink(missing_ok=True)


@contextmanager
def locked(folder: Path, holder: str) -> Iterator[None]:
    """Hold the exclusive lock of ``folder`` while the block runs; ``folder/.lock`` records the pid and
    ``holder`` (what this process is: "a fastsnn run"). Dead writers' temporary files are removed first.

    Raises ``ValueError`` naming the process that holds it (as its ``.lock`` says) when it is taken, and when
    ``.lock`` is a link (writing the pid through it would overwrite another file).
    """
    path = Path(folder) / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as err:
        if err.errno != errno.ELOOP:
            raise
        raise ValueError(f"{path} is a symbolic link; fastsnn locks {folder} with a file of its own: remove the "
                         "link") from None
    with os.fdopen(fd, "r+") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            raise ValueError(f"{path} is not a plain file of its own (a hard link or a device); fastsnn locks "
                             f"{folder} with a file of its own: remove it")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid, _, who = f.read().strip().partition(" ")
            raise ValueError(f"{folder} is in use by {who or 'another process'} (pid {pid or '?'})") from None
        f.truncate(0)
        f.write(f"{os.getpid()} {holder}\n")
        f.flush()
        _remove_stale_tmp(folder)
        yield

"""The CPU thread count: fixed, or adapted to the cores that other processes leave free.

OpenMP threads wait for each other at the end of every parallel region. When another process
holds one of the cores, the thread that shares that core is descheduled for whole time slices
and every region waits for it: on the 2-core AMD EPYC with one core kept busy, an epoch of the
seed network took 2.0 s with 2 threads against 0.69 s with 1 (``bench/threads.py``). A run
that uses only the cores nobody else wants keeps its speed on a busy machine.

:func:`set_threads` ``("auto")`` turns on :class:`AutoThreads`: every ``interval`` seconds (at
the next kernel launch, :func:`fastsnn.cpu.sync_threads`) it reads how much CPU time the other
processes took on this process's cores (Linux ``/proc/stat`` less this process's own time) and
sets torch's thread count (which numba's follows) to the cores left free, rounded, between 1 and
the count torch had when it was turned on. It drops at once and rises only when two readings in
a row agree, so a short burst does not make it flap. Where ``/proc/stat`` cannot be read (not
Linux), the count stays fixed.

Changing the thread count does not change results: every fastsnn CPU kernel splits its work by
the shapes alone, and the torch operations a run uses were checked to give the same bits with 1
and 2 threads (``tests/test_threads.py``).
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager

import torch

INTERVAL_S = 0.25


def _cores() -> list[int]:
    """The CPUs this process may run on."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def _physical_share(cpus: list[int]) -> float:
    """Physical cores per logical CPU among ``cpus`` (0.5 with two hardware threads a core; 1 if unknown)."""
    cores = set()
    for c in cpus:
        try:
            with open(f"/sys/devices/system/cpu/cpu{c}/topology/thread_siblings_list") as f:
                cores.add(f.read().strip())
        except OSError:
            return 1.0
    return len(cores) / len(cpus) if cpus else 1.0


def busy_seconds(cpus: list[int], path: str = "/proc/stat") -> float | None:
    """CPU seconds spent not idle on ``cpus`` since boot, by all processes (steal included: time the
    hypervisor gave to another machine is not ours either); None where ``path`` cannot be read."""
    wanted = {f"cpu{c}" for c in cpus}
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    ticks = 0
    for line in lines:
        name, _, rest = line.partition(" ")
        if name in wanted:
            values = [int(v) for v in rest.split()]
            ticks += sum(values[:8]) - values[3] - values[4]  # user..steal, less idle and iowait
    return ticks / os.sysconf("SC_CLK_TCK")


class AutoThreads:
    """Follows the free cores: :meth:`poll` sets torch's thread count to them at most every
    ``interval`` seconds. ``maximum``: the largest count it sets (torch's when constructed)."""

    def __init__(self, maximum: int | None = None, interval: float = INTERVAL_S, stat_path: str = "/proc/stat"):
        self.cpus = _cores()
        self.share = _physical_share(self.cpus)
        self.maximum = max(1, min(maximum or torch.get_num_threads(), len(self.cpus)))
        self.interval = interval
        self.stat_path = stat_path
        self.threads = self.maximum
        self.lowest = self.threads  # the fewest threads it has set, for a run's metrics
        self._pending = None
        self._last = self._reading()
        torch.set_num_threads(self.threads)

    def _reading(self) -> tuple[float, float, float] | None:
        busy = busy_seconds(self.cpus, self.stat_path)
        return None if busy is None else (time.monotonic(), busy, time.process_time())

    def free_cores(self, before: tuple[float, float, float], after: tuple[float, float, float]) -> float:
        """Physical cores of this process's CPUs that other processes left unused between two readings."""
        wall = after[0] - before[0]
        others = (after[1] - before[1]) - (after[2] - before[2])
        return (len(self.cpus) - max(0.0, others) / wall) * self.share

    def poll(self) -> int:
        """The thread count to use now; re-reads the load once ``interval`` seconds have passed."""
        if self._last is None or time.monotonic() - self._last[0] < self.interval:
            return self.threads
        now = self._reading()
        if now is None:
            return self.threads
        target = max(1, min(self.maximum, int(self.free_cores(self._last, now) + 0.5)))
        self._last = now
        if target < self.threads or (target > self.threads and self._pending == target):
            self.threads = target
            self.lowest = min(self.lowest, target)
            torch.set_num_threads(target)
        self._pending = target if target > self.threads else None
        return self.threads


_auto: AutoThreads | None = None


def check_threads(threads: int | str) -> None:
    """Raise ``ValueError`` unless ``threads`` is ``"auto"`` or a count from 1 to the CPUs this process may run
    on (more only oversubscribes the cores; 20000 made libgomp abort, 100000 crashed)."""
    if threads == "auto":
        return
    cpus = len(_cores())
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= cpus:
        raise ValueError(f"threads must be 'auto' or an integer from 1 to {cpus} (the CPUs this process may run on), "
                         f"got {threads!r}")


def set_threads(threads: int | str) -> None:
    """``"auto"``: follow the free cores (:class:`AutoThreads`, up to torch's current count);
    an integer from 1 to the CPUs of this process (:func:`check_threads`): that many, fixed
    (``torch.set_num_threads``)."""
    global _auto
    check_threads(threads)
    if threads == "auto":
        _auto = AutoThreads()
        return
    _auto = None
    torch.set_num_threads(threads)


@contextmanager
def using_threads(threads: int | str):
    """:func:`set_threads` for the ``with`` block; the count (and mode) before it comes back after."""
    global _auto
    before = _auto, torch.get_num_threads()
    set_threads(threads)
    try:
        yield auto_threads()
    finally:
        _auto = before[0]
        torch.set_num_threads(before[1])


def auto_threads() -> AutoThreads | None:
    """The running :class:`AutoThreads`, or None when the count is fixed."""
    return _auto


def poll() -> None:
    """Let :class:`AutoThreads` adjust the count, when it is on (called before every kernel launch)."""
    if _auto is not None:
        _auto.poll()

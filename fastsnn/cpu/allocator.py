"""Keep freed tensor memory in the process, so that the next step's tensors do not fault it back in.

glibc's malloc hands blocks over 128 KiB-32 MiB to ``mmap`` and trims the top of its heap when more
than twice that is free; a training step that allocates and frees tens of megabytes of (B, T, N)
tensors then takes every page of them back from the kernel, zeroed, on each step. On the 2-core
AMD EPYC (a VM) one such fault costs ~1 us: ~3 ms for a 12 MB tensor, as long as a bigbatch LIF
layer's whole forward + backward. jemalloc and tcmalloc retain freed memory by design; this asks
glibc to do the same. The CPU kernels' own outputs already avoid it (:mod:`fastsnn.cpu.buffers`);
this covers every other tensor of a step (torch's matmuls, activations, optimiser state).

It changes the whole process's allocator, so the library never calls it by itself: a user's
training script may, and ``python -m bench.peers --malloc retain`` does (for both sides of the
comparison alike).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

# mallopt parameters (<malloc.h>)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_THRESHOLD = 1 << 30  # bytes free at the heap's top before glibc returns them to the OS

_retained: bool | None = None


def retain_freed_memory() -> bool:
    """Serve every allocation from glibc's heap (no ``mmap`` per block) and return freed memory to the
    OS only when more than TRIM_THRESHOLD (1 GiB) of it lies at the heap's top. Idempotent.

    Returns True where it took effect; False where the C library is not glibc (macOS, musl,
    Windows), which is then left as it is.
    """
    global _retained
    if _retained is not None:
        return _retained
    _retained = False
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _retained = bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _retained


def retained() -> bool:
    """Whether :func:`retain_freed_memory` took effect in this process."""
    return bool(_retained)

"""A cache of the CPU kernels' large output buffers: each call's outputs reuse memory already mapped.

glibc's malloc returns a freed block of more than 128 KiB-32 MiB to the kernel (``munmap``, or a
trim of its heap's top), and the next tensor of that size takes every page back, zeroed, one page
fault at a time: ~1 us a page on the 2-core AMD EPYC VM, ~3 ms for one (1024, 100, 30) float32
tensor, against ~4 ms for a whole bigbatch LIF layer's forward and backward. A training loop
frees and allocates the same shapes every step, so the kernels' outputs (spikes, saved state,
input gradients) come from here instead: buffers that earlier outputs held, once nothing refers
to them any more, as PyTorch's CUDA caching allocator does for device memory.

A buffer is a numpy array; the tensor handed out is ``torch.from_numpy`` of a view of it, whose
storage holds that view, which holds the buffer. While any tensor, view or saved tensor shares
the storage, the buffer's reference count says so, and it is not handed out again. Such tensors
behave as any CPU tensor, except that their storage cannot be resized (``resize_`` to a larger
size raises).

Free buffers are kept up to ``FASTSNN_CPU_CACHE_MB`` MiB (default 512; 0 turns the cache off),
the oldest dropped first, checked at each allocation (which leaves room for the buffer it hands
out); :func:`empty_cache` drops them all. Outputs under MIN_BYTES come from
``torch.empty``: glibc serves those from its heap without faults.
"""

from __future__ import annotations

import os
import sys
import threading

import numpy as np
import torch

MIN_BYTES = 1 << 18  # 256 KiB
PAGE = 4096


def _limit_from_env() -> int:
    raw = os.environ.get("FASTSNN_CPU_CACHE_MB", "512")
    try:
        mb = int(raw)
    except ValueError:
        raise ValueError(f"FASTSNN_CPU_CACHE_MB must be a whole number of MiB (0 turns the cache off), got {raw!r}")
    if mb < 0:
        raise ValueError(f"FASTSNN_CPU_CACHE_MB must be >= 0 (0 turns the cache off), got {mb}")
    return mb << 20


limit_bytes = _limit_from_env()
_lock = threading.Lock()
_buffers: list[np.ndarray] = []  # every buffer handed out and not dropped, oldest first: uint8 (nbytes,)
_NUMPY = {torch.float32: np.float32, torch.float64: np.float64, torch.uint8: np.uint8}


def _free(buffers: list[np.ndarray], i: int) -> bool:
    """Whether nothing but ``buffers`` refers to ``buffers[i]``."""
    return sys.getrefcount(buffers[i]) <= _FREE


def _free_refs() -> int:
    """The count :func:`_free` sees for a buffer that only its list holds."""
    probe = [np.empty(1, np.uint8)]
    return sys.getrefcount(probe[0])


_FREE = _free_refs()


def empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """``torch.empty(shape, dtype=dtype)`` on the CPU, from a free cached buffer of the same size
    (rounded up to 4 KiB pages) where there is one. Contents are undefined, as torch.empty's."""
    numel = 1
    for d in shape:
        numel *= d
    np_dtype = _NUMPY.get(dtype)
    nbytes = numel * dtype.itemsize
    if np_dtype is None or nbytes < MIN_BYTES or limit_bytes == 0:
        return torch.empty(shape, dtype=dtype)
    size = -(-nbytes // PAGE) * PAGE
    with _lock:
        buf = None
        for i in range(len(_buffers)):
            if _buffers[i].nbytes == size and _free(_buffers, i):
                buf = _buffers.pop(i)
                break
        if buf is None:
            buf = np.empty(size, np.uint8)
        _buffers.append(buf)  # most recently used last
        # room for buf once it comes back; buf is held by this frame too, so never taken for a free one
        _trim(max(0, limit_bytes - size))
    return torch.from_numpy(buf[:nbytes].view(np_dtype).reshape(shape))


def _trim(keep: int) -> None:
    """Drop the oldest free buffers until at most ``keep`` bytes of free ones remain (lock held)."""
    free = [i for i in range(len(_buffers)) if _free(_buffers, i)]
    total = sum(_buffers[i].nbytes for i in free)
    drop = []
    for i in free:  # oldest first
        if total <= keep:
            break
        drop.append(i)
        total -= _buffers[i].nbytes
    for i in reversed(drop):
        del _buffers[i]


def empty_cache() -> None:
    """Release every free cached buffer to the allocator (buffers still in use stay tracked)."""
    with _lock:
        _trim(0)


def cached_bytes() -> tuple[int, int]:
    """(bytes in cached buffers that tensors still use, bytes in free ones)."""
    with _lock:
        free = [_free(_buffers, i) for i in range(len(_buffers))]
        used = sum(b.nbytes for b, f in zip(_buffers, free) if not f)
        return used, sum(b.nbytes for b in _buffers) - used

"""Poisson spikes from hashed frozen noise: the CPU kernel behind ``IPDDataset.spikes``.

The same integer hash as the torch path in :mod:`fastsnn.experiment.stimulus` (murmur3's finaliser
without its last xor-shift, top 24 bits), fused with the comparison, so a batch is one pass
over memory instead of a dozen. Bit-identical to the torch path (``tests/test_stimulus.py``).
"""

from __future__ import annotations

import numpy as np
import torch
from numba import prange

from fastsnn.cpu import cpu_kernel, sync_threads

_M32 = np.uint64(0xFFFFFFFF)


@cpu_kernel
def poisson_spikes_kernel(keys, table, prob, out):
    """keys: (n,) int32; table: (T, I) int32; prob: (n, T, I) float32 -> out: (n, T, I) float32 0/1,
    ``out = (fmix32(key_s ^ table_ti) >> 8) < prob * 2^24``."""
    n, T, I = prob.shape
    m1, m2 = np.uint64(0x85EBCA6B), np.uint64(0xC2B2AE35)
    for s in prange(n):
        key = np.uint64(np.uint32(keys[s]))
        for t in range(T):
            for i in range(I):
                x = key ^ np.uint64(np.uint32(table[t, i]))
                x = ((x ^ (x >> np.uint64(16))) * m1) & _M32
                x = ((x ^ (x >> np.uint64(13))) * m2) & _M32
                out[s, t, i] = 1.0 if np.float64(x >> np.uint64(8)) < np.float64(prob[s, t, i]) * 16777216.0 else 0.0


def poisson_spikes(keys: torch.Tensor, table: torch.Tensor, prob: torch.Tensor) -> torch.Tensor:
    """keys (n,) int32, table (T, I) int32, prob (n, T, I) float32 -> (n, T, I) float32 spikes."""
    out = torch.empty(prob.shape, dtype=torch.float32)
    sync_threads()
    poisson_spikes_kernel(keys.contiguous().numpy(), table.contiguous().numpy(), prob.contiguous().numpy(),
                          out.numpy())
    return out

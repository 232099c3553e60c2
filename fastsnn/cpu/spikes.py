"""Bit packing of 0/1 spike arrays for ``fastsnn.ops.spikes`` (numba).

Eight consecutive rows share a byte per column, so both loops run along contiguous columns
and vectorise; rows of a group are taken in parallel.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import prange

from . import cpu_kernel, launch_block


@cpu_kernel
def pack_kernel(x, bits):
    """x: (M, K) float; bits: (ceil(M/8), K) uint8, bit j of bits[g, k] = x[8g + j, k] != 0."""
    m, k = x.shape
    for g in prange(bits.shape[0]):
        row = bits[g]
        row[:] = 0
        for j in range(min(8, m - 8 * g)):
            xr = x[8 * g + j]
            for i in range(k):
                row[i] |= np.uint8(xr[i] != 0) << np.uint8(j)


@cpu_kernel
def unpack_kernel(bits, x):
    """bits: (ceil(M/8), K) uint8 -> x: (M, K) 0/1."""
    m, k = x.shape
    for g in prange(bits.shape[0]):
        row = bits[g]
        for j in range(min(8, m - 8 * g)):
            xr = x[8 * g + j]
            for i in range(k):
                xr[i] = (row[i] >> np.uint8(j)) & np.uint8(1)


def pack_spikes_cpu(x: torch.Tensor) -> torch.Tensor:
    """(M, K) -> (ceil(M/8), K) uint8."""
    x = x.contiguous()
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    bits = torch.empty(-(-x.shape[0] // 8), x.shape[1], dtype=torch.uint8)
    launch_block(1, 1)
    pack_kernel(x.numpy(), bits.numpy())
    return bits


def unpack_spikes_cpu(bits: torch.Tensor, m: int, dtype: torch.dtype) -> torch.Tensor:
    """(ceil(M/8), K) uint8 -> (M, K) 0/1 of ``dtype``."""
    work = dtype if dtype in (torch.float32, torch.float64) else torch.float32
    x = torch.empty(m, bits.shape[1], dtype=work)
    launch_block(1, 1)
    unpack_kernel(bits.contiguous().numpy(), x.numpy())
    return x.to(dtype)

"""Bit packing of 0/1 spike arrays for ``fastsnn.ops.spikes`` (numba, parallel over rows)."""

from __future__ import annotations

import numpy as np
import torch
from numba import prange

from . import cpu_kernel, launch_block


@cpu_kernel
def pack_kernel(x, bits):
    """x: (M, K) float; bits: (M, ceil(K/8)) uint8, bit j of byte k = x[m, 8k + j] != 0."""
    m, k = x.shape
    for r in prange(m):
        for byte in range(bits.shape[1]):
            acc = 0
            for j in range(min(8, k - 8 * byte)):
                if x[r, 8 * byte + j] != 0:
                    acc |= 1 << j
            bits[r, byte] = acc


@cpu_kernel
def unpack_kernel(bits, x):
    """bits: (M, ceil(K/8)) uint8 -> x: (M, K) 0/1."""
    m, k = x.shape
    one, zero = x.dtype.type(1), x.dtype.type(0)
    for r in prange(m):
        for i in range(k):
            x[r, i] = one if (bits[r, i >> 3] >> (i & 7)) & 1 else zero


def pack_spikes_cpu(x: torch.Tensor) -> torch.Tensor:
    """(M, K) -> (M, ceil(K/8)) uint8."""
    x = x.contiguous()
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    bits = torch.empty(x.shape[0], -(-x.shape[1] // 8), dtype=torch.uint8)
    launch_block(1, 1)
    pack_kernel(x.numpy(), bits.numpy())
    return bits


def unpack_spikes_cpu(bits: torch.Tensor, k: int, dtype: torch.dtype) -> torch.Tensor:
    """(M, ceil(K/8)) uint8 -> (M, K) 0/1 of ``dtype``."""
    work = dtype if dtype in (torch.float32, torch.float64) else torch.float32
    x = torch.empty(bits.shape[0], k, dtype=work)
    launch_block(1, 1)
    unpack_kernel(bits.contiguous().numpy(), x.numpy())
    return x.to(dtype)

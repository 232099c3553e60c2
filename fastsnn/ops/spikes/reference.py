"""The spike projection's oracle: ``x @ w`` under autograd, and the bit packing in torch operations.

Bits: eight consecutive rows share a byte per column (``bits[g, k]`` bit j is ``x[8g + j, k]``).
These run on any device; the CPU and Triton backends pack with their own kernels, tested against them.
"""

from __future__ import annotations

import torch
from torch import Tensor

_SHIFTS = (1, 2, 4, 8, 16, 32, 64, 128)


def spike_matmul_ref(x: Tensor, w: Tensor) -> Tensor:
    """x (..., K) @ w (K, N) -> (..., N): the plain product every fast path equals up to summation order."""
    return x @ w


def pack_spikes_ref(x: Tensor) -> Tensor:
    """:func:`fastsnn.ops.spikes.pack_spikes` in torch ops: x (M, K), nonzero counting as 1 ->
    (ceil(M / 8), K) uint8."""
    m, k = x.shape
    bits = torch.zeros(-(-m // 8) * 8, k, dtype=torch.uint8, device=x.device)
    bits[:m] = x != 0
    weights = torch.tensor(_SHIFTS, dtype=torch.uint8, device=x.device)
    return (bits.view(-1, 8, k) * weights[:, None]).sum(1, dtype=torch.uint8)


def unpack_spikes_ref(bits: Tensor, m: int, dtype: torch.dtype) -> Tensor:
    """The inverse of :func:`pack_spikes_ref`: (ceil(M / 8), K) uint8 -> (M, K) 0/1 of ``dtype``."""
    weights = torch.tensor(_SHIFTS, dtype=torch.uint8, device=bits.device)
    return (bits[:, None, :] & weights[:, None]).ne(0).view(-1, bits.shape[1])[:m].to(dtype)

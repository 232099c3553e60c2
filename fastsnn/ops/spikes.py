"""Projection of 0/1 spikes, ``h = x @ w``, that keeps x as bits for the backward.

The weight gradient needs the input (``dw = x^T dh``); autograd over ``x @ w`` keeps it as
floats, 32 bits per spike. For spike inputs (the Poisson fibres, the LIF output) one bit
holds the same information. ``pack_spikes`` / ``unpack_spikes`` are custom ops (a numba
kernel on the CPU, torch ops elsewhere) so that ``torch.compile`` traces them.
"""

from __future__ import annotations

import torch
from torch import Tensor

_SHIFTS = (1, 2, 4, 8, 16, 32, 64, 128)


@torch.library.custom_op("fastsnn::pack_spikes", mutates_args=())
def pack_spikes(x: Tensor) -> Tensor:
    """x (M, K), 0/1 (anything nonzero counts as 1) -> (M, ceil(K / 8)) uint8; bit j of byte k is x[:, 8k + j]."""
    if x.device.type == "cpu":
        from ..cpu.spikes import pack_spikes_cpu

        return pack_spikes_cpu(x)
    return pack_spikes_torch(x)


def pack_spikes_torch(x: Tensor) -> Tensor:
    """:func:`pack_spikes` in torch ops, for any device."""
    m, k = x.shape
    bits = torch.zeros(m, -(-k // 8) * 8, dtype=torch.uint8, device=x.device)
    bits[:, :k] = x != 0
    weights = torch.tensor(_SHIFTS, dtype=torch.uint8, device=x.device)
    return (bits.view(m, -1, 8) * weights).sum(-1, dtype=torch.uint8)


@pack_spikes.register_fake
def _(x):
    return x.new_empty((x.shape[0], -(-x.shape[1] // 8)), dtype=torch.uint8)


@torch.library.custom_op("fastsnn::unpack_spikes", mutates_args=())
def unpack_spikes(bits: Tensor, k: int, dtype: torch.dtype) -> Tensor:
    """The inverse of :func:`pack_spikes`: (M, ceil(K / 8)) uint8 -> (M, K) 0/1 of ``dtype``."""
    if bits.device.type == "cpu":
        from ..cpu.spikes import unpack_spikes_cpu

        return unpack_spikes_cpu(bits, k, dtype)
    return unpack_spikes_torch(bits, k, dtype)


def unpack_spikes_torch(bits: Tensor, k: int, dtype: torch.dtype) -> Tensor:
    """:func:`unpack_spikes` in torch ops, for any device."""
    weights = torch.tensor(_SHIFTS, dtype=torch.uint8, device=bits.device)
    return (bits[:, :, None] & weights).ne(0).view(bits.shape[0], -1)[:, :k].to(dtype)


@unpack_spikes.register_fake
def _(bits, k, dtype):
    return bits.new_empty((bits.shape[0], k), dtype=dtype)


class SpikeMatmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor) -> Tensor:
        k = x.shape[-1]
        ctx.save_for_backward(pack_spikes(x.detach().reshape(-1, k)), w)
        ctx.x_shape, ctx.x_dtype = x.shape, x.dtype
        return x @ w

    @staticmethod
    def backward(ctx, grad: Tensor):
        bits, w = ctx.saved_tensors
        dx = dw = None
        if ctx.needs_input_grad[0]:
            dx = (grad @ w.t()).to(ctx.x_dtype)
        if ctx.needs_input_grad[1]:
            x = unpack_spikes(bits, ctx.x_shape[-1], grad.dtype)
            dw = (x.t() @ grad.reshape(-1, grad.shape[-1])).to(w.dtype)
        return dx, dw


def spike_matmul(x: Tensor, w: Tensor) -> Tensor:
    """x (..., K) 0/1 spikes @ w (K, N) -> (..., N), saving x as bits (K/8 bytes a row, not 4K).

    The gradient for x is exact whatever x holds; the gradient for w assumes x is 0/1 (a
    nonzero entry counts as 1).
    """
    return SpikeMatmul.apply(x, w)

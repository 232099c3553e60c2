"""Projection of 0/1 spikes, ``h = x @ w``, that keeps x as bits for the backward.

The weight gradient needs the input (``dw = x^T dh``); autograd over ``x @ w`` keeps it as
floats, 32 bits per spike. For spike inputs (the Poisson fibres, the LIF output) one bit
holds the same information. ``pack_spikes`` / ``unpack_spikes`` are custom ops (a numba
kernel on the CPU, torch ops elsewhere) so that ``torch.compile`` traces them; eagerly
their implementations are called directly, as in :mod:`fastsnn.ops.lif`. Eight
consecutive rows share a byte per column, so packing runs along contiguous memory.
"""

from __future__ import annotations

import torch
from torch import Tensor

_SHIFTS = (1, 2, 4, 8, 16, 32, 64, 128)


def _pack_spikes(x: Tensor) -> Tensor:
    """x (M, K), 0/1 (anything nonzero counts as 1) -> (ceil(M / 8), K) uint8; bit j of [g, k] is x[8g + j, k]."""
    if x.device.type == "cpu":
        from .cpu import pack_spikes_cpu

        return pack_spikes_cpu(x)
    return pack_spikes_torch(x)


def pack_spikes_torch(x: Tensor) -> Tensor:
    """:func:`pack_spikes` in torch ops, for any device."""
    m, k = x.shape
    bits = torch.zeros(-(-m // 8) * 8, k, dtype=torch.uint8, device=x.device)
    bits[:m] = x != 0
    weights = torch.tensor(_SHIFTS, dtype=torch.uint8, device=x.device)
    return (bits.view(-1, 8, k) * weights[:, None]).sum(1, dtype=torch.uint8)


pack_spikes = torch.library.custom_op("fastsnn::pack_spikes", _pack_spikes, mutates_args=())


@pack_spikes.register_fake
def _(x):
    return x.new_empty((-(-x.shape[0] // 8), x.shape[1]), dtype=torch.uint8)


def _unpack_spikes(bits: Tensor, m: int, dtype: torch.dtype) -> Tensor:
    """The inverse of :func:`pack_spikes`: (ceil(M / 8), K) uint8 -> (M, K) 0/1 of ``dtype``."""
    if bits.device.type == "cpu":
        from .cpu import unpack_spikes_cpu

        return unpack_spikes_cpu(bits, m, dtype)
    return unpack_spikes_torch(bits, m, dtype)


def unpack_spikes_torch(bits: Tensor, m: int, dtype: torch.dtype) -> Tensor:
    """:func:`unpack_spikes` in torch ops, for any device."""
    weights = torch.tensor(_SHIFTS, dtype=torch.uint8, device=bits.device)
    return (bits[:, None, :] & weights[:, None]).ne(0).view(-1, bits.shape[1])[:m].to(dtype)


unpack_spikes = torch.library.custom_op("fastsnn::unpack_spikes", _unpack_spikes, mutates_args=())


@unpack_spikes.register_fake
def _(bits, m, dtype):
    return bits.new_empty((m, bits.shape[1]), dtype=dtype)


class SpikeMatmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor) -> Tensor:
        rows = x.detach().reshape(-1, x.shape[-1])
        pack = pack_spikes if torch.compiler.is_compiling() else _pack_spikes
        ctx.save_for_backward(pack(rows), w)
        ctx.rows, ctx.x_dtype = rows.shape[0], x.dtype
        return x @ w

    @staticmethod
    def backward(ctx, grad: Tensor):
        bits, w = ctx.saved_tensors
        dx = dw = None
        if ctx.needs_input_grad[0]:
            dx = (grad @ w.t()).to(ctx.x_dtype)
        if ctx.needs_input_grad[1]:
            dw = _weight_grad(bits, grad.reshape(-1, grad.shape[-1]), ctx.rows).t().to(w.dtype)
        return dx, dw


def _weight_grad(bits: Tensor, grad: Tensor, rows: int) -> Tensor:
    """grad (M, N), bits of x (M, K) -> grad^T x (N, K).

    (dh^T x)^T, not x^T dh: BLAS runs the long reduction over rows about twice as fast with
    the narrow dh transposed (measured at seed size: 0.54 ms against 1.05 ms).
    """
    if torch.compiler.is_compiling():
        return grad.t() @ unpack_spikes(bits, rows, grad.dtype)
    if bits.device.type == "cpu" and grad.dtype in (torch.float32, torch.float64):
        from .cpu import spike_weight_grad_cpu

        return spike_weight_grad_cpu(bits, grad.contiguous())
    return grad.t() @ _unpack_spikes(bits, rows, grad.dtype)


def spike_matmul(x: Tensor, w: Tensor) -> Tensor:
    """x (..., K) 0/1 spikes @ w (K, N) -> (..., N), saving x as bits (1/32 of its float32 bytes).

    The gradient for x is exact whatever x holds; the gradient for w assumes x is 0/1 (a
    nonzero entry counts as 1). Without a gradient for w there is nothing to keep: a plain matmul.
    """
    if not (torch.is_grad_enabled() and w.requires_grad):
        return x @ w
    return SpikeMatmul.apply(x, w)

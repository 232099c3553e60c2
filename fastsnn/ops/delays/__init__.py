"""Learnable synaptic delays: ``delayed_projection``, a projection whose synapses each have a delay.

Here, in order: the forward and backward implementations (the kernel ``wk = W G`` built in torch
ops, the convolution over time by the numba kernels in ``cpu.py`` or the Triton kernels in
``fastsnn/kernels/delays.py``, and the chain rule from the kernel's gradient to the weights and
delays), the ``torch.library`` custom ops ``fastsnn::delayed_projection`` /
``fastsnn::delayed_projection_bwd`` that ``torch.compile`` traces, the eager
``DelayedProjectionFunction`` built from the same setup and backward, and the validated public
function. The oracle is ``reference.py``; equations and derivations: ``docs/semantics.md``
(Learnable delays).
"""

from __future__ import annotations

import numbers
from typing import Optional

import torch
from torch import Tensor

from .._common import (FLOAT_DTYPES, check_scalar, connected, empty_state, first_order, resolve_backend,
                       state_dtype, upcast)
from .reference import NORM_EPS, delay_taps, delayed_projection_ref

__all__ = ["delayed_projection", "DelayedProjectionFunction", "delayed_projection_ref", "delay_taps", "NORM_EPS"]


def _kernels(backend: str):
    """The launchers of a fast ``backend``: the numba ones (``cpu.py``) or the Triton ones
    (``fastsnn/kernels/delays.py``), imported on first use: ``import fastsnn`` imports neither."""
    if backend == "triton":
        from fastsnn.kernels import delays as triton_kernels

        return triton_kernels
    from . import cpu

    return cpu


def _kernel(weight: Tensor, delay: Tensor, sigma: Optional[float], max_delay: int,
            dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(w, d, G (I, O, K), wk = w G as (I, K, O) contiguous), all in ``dtype``, without a graph."""
    w, d = weight.detach().to(dtype), delay.detach().to(dtype)
    taps = delay_taps(d, sigma, max_delay)
    return w, d, taps, (w[..., None] * taps).permute(0, 2, 1).contiguous()


def _delayed_projection_fwd(x: Tensor, weight: Tensor, delay: Tensor, sigma: Optional[float], max_delay: int,
                            backend: str) -> Tensor:
    """x (B, T, I), weight and delay (I, O) -> h (B, T, O) in the state dtype."""
    *_, wk = _kernel(weight, delay, sigma, max_delay, state_dtype(x.dtype))
    return _kernels(backend).delays_fwd(x, wk)


def _delayed_projection_bwd(grad: Tensor, x: Tensor, weight: Tensor, delay: Tensor, sigma: Optional[float],
                            max_delay: int, need_dx: bool, need_dw: bool, need_dd: bool,
                            backend: str) -> tuple[Tensor, Tensor, Tensor]:
    """grad (B, T, O) state dtype -> (dx (B, T, I), dweight (I, O), ddelay (I, O)) in the state dtype; dx is an
    empty placeholder unless ``need_dx``, the others zeros where not needed (custom ops return no None).

    From the kernel's gradient ``dwk (I, O, K)``: ``dW = sum_k dwk G`` and, with ``r_k = k - D``,
    ``dD = W (sum_k dwk G r_k - dW sum_k G r_k) / sigma^2`` (0 for rounded delays).
    """
    w, d, taps, wk = _kernel(weight, delay, sigma, max_delay, grad.dtype)
    dx, dwk = _kernels(backend).delays_bwd(grad, x, wk, need_dx, need_dw or need_dd)
    dx = dx if dx is not None else empty_state(grad, grad.dtype)
    dw, dd = torch.zeros_like(w), torch.zeros_like(w)
    if dwk is not None:
        dwk = dwk.permute(0, 2, 1)  # (I, O, K)
        dw = (dwk * taps).sum(-1)
        if need_dd and sigma is not None:
            r = torch.arange(max_delay + 1, dtype=grad.dtype, device=grad.device) - d[..., None]
            dd = w * ((dwk * taps * r).sum(-1) - dw * (taps * r).sum(-1)) / sigma ** 2
    return dx, dw, dd


def _setup_context(ctx, inputs, output):
    x, weight, delay, sigma, max_delay, backend = inputs
    ctx.save_for_backward(x, weight, delay)
    ctx.args = (sigma, max_delay, backend)


def _backward(ctx, bwd, grad):
    x, weight, delay = ctx.saved_tensors
    sigma, max_delay, backend = ctx.args
    need_dx, need_dw, need_dd = ctx.needs_input_grad[:3]
    dx, dw, dd = first_order("fastsnn.delayed_projection", bwd, grad.to(state_dtype(x.dtype)).contiguous(), x, weight,
                             delay, sigma, max_delay, need_dx, need_dw, need_dd, backend)
    return (dx.to(x.dtype) if need_dx else None, dw.to(weight.dtype) if need_dw else None,
            dd.to(delay.dtype) if need_dd else None, None, None, None)


delayed_projection_bwd_op = torch.library.custom_op("fastsnn::delayed_projection_bwd", _delayed_projection_bwd,
                                                    mutates_args=())
delayed_projection_bwd_op.register_fake(
    lambda grad, x, weight, delay, sigma, max_delay, need_dx, need_dw, need_dd, backend: (
        torch.empty_like(x, dtype=grad.dtype) if need_dx else empty_state(grad, grad.dtype),
        torch.empty_like(weight, dtype=grad.dtype),
        torch.empty_like(weight, dtype=grad.dtype)))
delayed_projection_op = torch.library.custom_op("fastsnn::delayed_projection", _delayed_projection_fwd,
                                                mutates_args=())
delayed_projection_op.register_fake(lambda x, weight, delay, sigma, max_delay, backend: x.new_empty(
    (x.shape[0], x.shape[1], weight.shape[1]), dtype=state_dtype(x.dtype)))
delayed_projection_op.register_autograd(lambda ctx, grad: _backward(ctx, delayed_projection_bwd_op, grad),
                                        setup_context=_setup_context)


class DelayedProjectionFunction(torch.autograd.Function):
    """The eager twin of ``fastsnn::delayed_projection``."""

    @staticmethod
    def forward(ctx, x, weight, delay, sigma, max_delay, backend):
        output = _delayed_projection_fwd(x, weight, delay, sigma, max_delay, backend)
        _setup_context(ctx, (x, weight, delay, sigma, max_delay, backend), output)
        return output

    @staticmethod
    def backward(ctx, grad):
        return _backward(ctx, _delayed_projection_bwd, grad)


def _check(x, weight, delay, sigma, max_delay) -> Optional[float]:
    if not isinstance(x, torch.Tensor) or x.ndim != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a tensor of shape (B, T, in_features), got {shape}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"x must be float32, float64, bfloat16 or float16, got {x.dtype}")
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2 or weight.shape[0] != x.shape[2]:
        shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ValueError(f"weight must be a tensor of shape (in_features, out_features) = ({x.shape[2]}, O) for x "
                         f"of shape {tuple(x.shape)}, got {shape}")
    if not isinstance(delay, torch.Tensor) or delay.shape != weight.shape:
        shape = tuple(delay.shape) if isinstance(delay, torch.Tensor) else type(delay).__name__
        raise ValueError(f"delay must be a tensor of the weight's shape {tuple(weight.shape)}, got {shape}")
    for name, t in (("weight", weight), ("delay", delay)):
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"{name} is on {t.device} but x is on {x.device}; put both on one device")
    if isinstance(max_delay, bool) or not isinstance(max_delay, numbers.Integral) or max_delay < 0:
        raise ValueError(f"max_delay must be an integer >= 0 (steps), got {max_delay!r}")
    return None if sigma is None else check_scalar("sigma", sigma, lo=0.0)


def delayed_projection(x: Tensor, weight: Tensor, delay: Tensor, sigma: float | None = None, *, max_delay: int,
                       backend: str = "auto") -> Tensor:
    """A projection with a learnable delay per synapse: x (B, T, I) -> h (B, T, O), dtype of x.

    ``h[b, t, j] = sum_i sum_{k=0}^{max_delay} W_ij G_ij(k) x[b, t - k, i]`` (zero before t = 0), with
    ``weight`` W and ``delay`` D both (I, O); D is in steps. ``sigma`` (steps, > 0): ``G_ij`` is the
    Gaussian ``exp(-(k - D_ij)^2 / (2 sigma^2))`` over the taps, normalised to sum to 1 (as ``dcls``'s
    ``Dcls1d(version="gauss")``, whose ``SIG + 0.27`` is this sigma); weight and delay get gradients.
    ``sigma=None``: each delay is rounded to the nearest tap in [0, max_delay] (a one-hot kernel, for
    evaluation); the delay's gradient is then 0. The fast backends skip zero inputs (event-driven on
    the CPU), so 0/1 spikes cost in proportion to their count. Equations: ``docs/semantics.md``.
    """
    sigma = _check(x, weight, delay, sigma, max_delay)
    max_delay = int(max_delay)
    backend = resolve_backend(backend, x.device)
    if backend == "reference":
        state = state_dtype(x.dtype)
        out = delayed_projection_ref(upcast(x), weight.to(state), delay.to(state), sigma, max_delay).to(x.dtype)
        return connected(out, x, weight, delay)
    op = delayed_projection_op if torch.compiler.is_compiling() else DelayedProjectionFunction.apply
    return op(x.contiguous(), weight, delay, sigma, max_delay, backend).to(x.dtype)

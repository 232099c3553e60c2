"""The leaky readout: ``leaky_readout`` (membrane over time) and ``leaky_readout_sum`` (its time sum).

Here, in order, for each of the two: the implementation (dispatching to ``cpu.py`` or
``fastsnn/kernels/readout.py``), the ``torch.library`` custom ops that ``torch.compile`` traces,
the eager autograd Function built from the same setup and backward, and the validated public
function. The oracle is ``reference.py``.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._common import (as_reference_decay, check_h, connected, decay_tensor, first_order, resolve_backend,
                       state_dtype, upcast, zeros_if_none)
from .reference import leaky_readout_ref, leaky_readout_sum_ref

__all__ = ["leaky_readout", "leaky_readout_sum", "readout_time_weights", "LeakyReadoutFunction",
           "LeakyReadoutSumFunction", "leaky_readout_ref", "leaky_readout_sum_ref"]


def _kernels(backend: str):
    """The launchers of a fast ``backend``: the numba ones (``cpu.py``) or the Triton ones
    (``fastsnn/kernels/readout.py``), imported on first use: ``import fastsnn`` imports neither."""
    if backend == "triton":
        from fastsnn.kernels import readout as triton_kernels

        return triton_kernels
    from . import cpu

    return cpu


def readout_time_weights(alpha: float, steps: int) -> tuple[float, ...]:
    """c_k with sum_t u_t = sum_k c_k h_k for the leaky readout: c_{T-1} = 0, c_k = 1 + alpha c_{k+1}."""
    c = [0.0] * steps
    for k in range(steps - 2, -1, -1):
        c[k] = 1.0 + alpha * c[k + 1]
    return tuple(c)


# --- membrane over time ------------------------------------------------------------------------

def _leaky_readout_fwd(h: Tensor, alpha: Tensor, backend: str) -> Tensor:
    """h (B, T, C), alpha (C,) -> membrane u (B, T, C)."""
    return _kernels(backend).leaky_readout_fwd(h, alpha)


def _leaky_readout_bwd(grad_u: Tensor, u: Optional[Tensor], alpha: Tensor, need_dalpha: bool,
                       backend: str) -> tuple[Tensor, Tensor]:
    dh, dalpha = _kernels(backend).leaky_readout_bwd(grad_u, u, alpha, need_dalpha)
    return dh, zeros_if_none(dalpha, alpha)


def _leaky_readout_setup(ctx, inputs, output):
    h, alpha, backend = inputs
    ctx.save_for_backward(output if ctx.needs_input_grad[1] else None, alpha)  # u only for d/dalpha
    ctx.args = (backend, h.dtype)


def _leaky_readout_backward(ctx, bwd, grad_u):
    u, alpha = ctx.saved_tensors
    backend, h_dtype = ctx.args
    need_dalpha = ctx.needs_input_grad[1]
    u = u.to(alpha.dtype).contiguous() if need_dalpha else None
    dh, dalpha = first_order("fastsnn.leaky_readout", bwd, grad_u.to(alpha.dtype).contiguous(), u, alpha, need_dalpha,
                             backend)
    return dh.to(h_dtype), (dalpha if need_dalpha else None), None


leaky_readout_bwd_op = torch.library.custom_op("fastsnn::leaky_readout_bwd", _leaky_readout_bwd, mutates_args=())
leaky_readout_bwd_op.register_fake(lambda grad_u, u, alpha, need_dalpha, backend:
                                   (torch.empty_like(grad_u), torch.empty_like(alpha)))
leaky_readout_op = torch.library.custom_op("fastsnn::leaky_readout", _leaky_readout_fwd, mutates_args=())
leaky_readout_op.register_fake(lambda h, alpha, backend: torch.empty_like(h))
leaky_readout_op.register_autograd(lambda ctx, grad: _leaky_readout_backward(ctx, leaky_readout_bwd_op, grad),
                                   setup_context=_leaky_readout_setup)


class LeakyReadoutFunction(torch.autograd.Function):
    """The eager twin of ``fastsnn::leaky_readout``."""

    @staticmethod
    def forward(ctx, h, alpha, backend):
        output = _leaky_readout_fwd(h, alpha, backend)
        _leaky_readout_setup(ctx, (h, alpha, backend), output)
        return output

    @staticmethod
    def backward(ctx, grad_u):
        return _leaky_readout_backward(ctx, _leaky_readout_bwd, grad_u)


# --- sum over time ---------------------------------------------------------------------------------

def _leaky_readout_sum_fwd(h: Tensor, alpha: Tensor, backend: str) -> Tensor:
    """h (B, T, C), alpha (C,) -> sum over time of the membrane (B, C), in the state dtype."""
    return _kernels(backend).leaky_readout_sum_fwd(h, alpha)


def _leaky_readout_sum_bwd(grad_m: Tensor, h: Optional[Tensor], alpha: Tensor, steps: int, need_dalpha: bool,
                           backend: str) -> tuple[Tensor, Tensor]:
    dh, dalpha = _kernels(backend).leaky_readout_sum_bwd(grad_m, h, alpha, steps, need_dalpha)
    return dh, zeros_if_none(dalpha, alpha)


def _leaky_readout_sum_setup(ctx, inputs, output):
    h, alpha, backend = inputs
    ctx.save_for_backward(h if ctx.needs_input_grad[1] else None, alpha)
    ctx.args = (backend, h.dtype, h.shape[1])


def _leaky_readout_sum_backward(ctx, bwd, grad_m):
    h, alpha = ctx.saved_tensors
    backend, h_dtype, steps = ctx.args
    need_dalpha = ctx.needs_input_grad[1]
    dh, dalpha = first_order("fastsnn.leaky_readout_sum", bwd, grad_m.to(alpha.dtype).contiguous(), h, alpha, steps,
                             need_dalpha, backend)
    return dh.to(h_dtype), (dalpha if need_dalpha else None), None


leaky_readout_sum_bwd_op = torch.library.custom_op("fastsnn::leaky_readout_sum_bwd", _leaky_readout_sum_bwd,
                                                   mutates_args=())
leaky_readout_sum_bwd_op.register_fake(lambda grad_m, h, alpha, steps, need_dalpha, backend: (
    grad_m.new_empty((grad_m.shape[0], steps, grad_m.shape[1])), torch.empty_like(alpha)))
leaky_readout_sum_op = torch.library.custom_op("fastsnn::leaky_readout_sum", _leaky_readout_sum_fwd,
                                               mutates_args=())
leaky_readout_sum_op.register_fake(lambda h, alpha, backend:
                                   h.new_empty((h.shape[0], h.shape[2]), dtype=state_dtype(h.dtype)))
leaky_readout_sum_op.register_autograd(
    lambda ctx, grad: _leaky_readout_sum_backward(ctx, leaky_readout_sum_bwd_op, grad),
    setup_context=_leaky_readout_sum_setup)


class LeakyReadoutSumFunction(torch.autograd.Function):
    """The eager twin of ``fastsnn::leaky_readout_sum``."""

    @staticmethod
    def forward(ctx, h, alpha, backend):
        output = _leaky_readout_sum_fwd(h, alpha, backend)
        _leaky_readout_sum_setup(ctx, (h, alpha, backend), output)
        return output

    @staticmethod
    def backward(ctx, grad_m):
        return _leaky_readout_sum_backward(ctx, _leaky_readout_sum_bwd, grad_m)


# --- public functions --------------------------------------------------------------------------

def _arguments(h, alpha, backend: str) -> tuple[Tensor, str]:
    check_h("h", h)
    return decay_tensor("alpha", alpha, h), resolve_backend(backend, h.device)


def leaky_readout(h: Tensor, alpha, *, backend: str = "auto") -> Tensor:
    """Leaky integrator: h (B, T, C) -> membrane u (B, T, C), ``u_0 = 0``, ``u_{t+1} = alpha u_t + h_t``."""
    alpha_t, backend = _arguments(h, alpha, backend)
    if backend == "reference":
        return connected(leaky_readout_ref(upcast(h), as_reference_decay(alpha)).to(h.dtype), h, alpha)
    op = leaky_readout_op if torch.compiler.is_compiling() else LeakyReadoutFunction.apply
    return op(h.contiguous(), alpha_t, backend)


def leaky_readout_sum(h: Tensor, alpha, *, backend: str = "auto") -> Tensor:
    """Sum over time of :func:`leaky_readout`: h (B, T, C) -> (B, C), dtype of h, without a (B, T, C) buffer.

    Uses ``sum_t u_t = sum_k c_k h_k`` with ``c_k = (1 - alpha^(T-1-k)) / (1 - alpha)``.
    """
    alpha_t, backend = _arguments(h, alpha, backend)
    if backend == "reference":
        return connected(leaky_readout_sum_ref(upcast(h), as_reference_decay(alpha)).to(h.dtype), h, alpha)
    op = leaky_readout_sum_op if torch.compiler.is_compiling() else LeakyReadoutSumFunction.apply
    return op(h.contiguous(), alpha_t, backend).to(h.dtype)

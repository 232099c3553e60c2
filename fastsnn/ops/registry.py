"""The fast ops: ``torch.library`` custom ops for ``torch.compile``, autograd Functions for eager.

Ops ``fastsnn::lif``, ``fastsnn::leaky_readout`` and ``fastsnn::leaky_readout_sum``
(and their ``*_bwd`` twins) dispatch to a backend module by name: ``"cpu"`` ->
:mod:`fastsnn.cpu` (numba), ``"triton"`` -> :mod:`fastsnn.kernels`. Both modules
implement the launcher contract in ``docs/kernel_contract.md``. ``custom_op`` +
``register_fake`` + ``register_autograd`` let ``torch.compile`` trace a network
using them with zero graph breaks, on either device.

Eagerly, the custom-op dispatcher costs about 0.27 ms per LIF call at seed size, a twentieth
of a training step. So :func:`apply` runs each op's implementation inside a plain
``torch.autograd.Function`` built from the same setup and backward functions the op
registers, and keeps the custom op for code that ``torch.compile`` traces: one set of
formulas, two doors. Callers validate inputs first (:mod:`fastsnn.ops`); nothing here
checks shapes.
"""

import importlib
from typing import Callable, Optional

import torch
from torch import Tensor

from . import state_dtype

_MODULES = {"cpu": "fastsnn.cpu.{op}", "triton": "fastsnn.kernels.{op}"}


def launchers(backend: str, op: str):
    """The module holding ``op``'s launchers for ``backend`` (imported on first use)."""
    return importlib.import_module(_MODULES[backend].format(op=op))


def _state_dtype(h: Tensor) -> torch.dtype:
    return state_dtype(h.dtype)


def _nothing(h: Tensor, dtype: torch.dtype) -> Tensor:
    return h.new_empty((0,), dtype=dtype)


def _dalpha_or_zeros(dalpha, alpha: Tensor) -> Tensor:
    return dalpha if dalpha is not None else torch.zeros_like(alpha)


class _Op:
    """One fast op: its implementation, the custom op wrapping it, and the eager Function."""

    def __init__(self, name: str, impl: Callable, fake: Callable, bwd_op: "_Op | None" = None,
                 setup: Callable | None = None, backward: Callable | None = None):
        self.impl = impl
        self.op = torch.library.custom_op(f"fastsnn::{name}", impl, mutates_args=())
        self.op.register_fake(fake)
        self.function = None
        if backward is not None:
            self.op.register_autograd(lambda ctx, *grads: backward(ctx, bwd_op.op, *grads), setup_context=setup)

            def forward(ctx, *inputs):  # the ctx-first form: a separate setup_context costs an inspect.signature per call
                output = impl(*inputs)
                setup(ctx, inputs, output)
                return output

            self.function = type(f"{name}_function", (torch.autograd.Function,), {
                "forward": staticmethod(forward),
                "backward": staticmethod(lambda ctx, *grads: backward(ctx, bwd_op.impl, *grads)),
            })

    def __call__(self, *args):
        """The custom op while torch.compile traces, else the eager Function (or plain impl)."""
        if torch.compiler.is_compiling():
            return self.op(*args)
        if self.function is not None:
            return self.function.apply(*args)
        return self.impl(*args)


# --- LIF ---------------------------------------------------------------------------------------

def _lif(h: Tensor, alpha: Tensor, threshold: float, beta: float, detach_reset: bool,
         save: bool, backend: str) -> tuple[Tensor, Tensor, Tensor]:
    """h (B, T, N), alpha (N,) -> (spikes (B, T, N), u, s8); u and s8 are empty unless ``save``."""
    s, u, s8 = launchers(backend, "lif").lif_fwd(h, alpha, threshold, save)
    if not save:
        return s, _nothing(h, _state_dtype(h)), _nothing(h, torch.uint8)
    return s, u, s8


def _lif_fake(h, alpha, threshold, beta, detach_reset, save, backend):
    if not save:
        return torch.empty_like(h), _nothing(h, _state_dtype(h)), _nothing(h, torch.uint8)
    return torch.empty_like(h), torch.empty_like(h, dtype=_state_dtype(h)), torch.empty_like(h, dtype=torch.uint8)


def _lif_bwd(grad_s: Tensor, u: Tensor, s8: Tensor, alpha: Tensor, threshold: float, beta: float,
             detach_reset: bool, need_dalpha: bool, backend: str) -> tuple[Tensor, Tensor]:
    dh, dalpha = launchers(backend, "lif").lif_bwd(grad_s, u, s8, alpha, threshold, beta, detach_reset, need_dalpha)
    return dh, _dalpha_or_zeros(dalpha, alpha)


def _lif_bwd_fake(grad_s, u, s8, alpha, threshold, beta, detach_reset, need_dalpha, backend):
    return torch.empty_like(u), torch.empty_like(alpha)


def _lif_setup(ctx, inputs, output):
    h, alpha, threshold, beta, detach_reset, save, backend = inputs
    ctx.save_for_backward(output[1], output[2], alpha)
    ctx.mark_non_differentiable(output[1], output[2])
    ctx.args = (threshold, beta, detach_reset, backend, h.dtype)
    ctx.set_materialize_grads(False)  # u and s8 never get a gradient: don't build zeros for them


def _lif_backward(ctx, lif_bwd, grad_s, grad_u, grad_s8):
    u, s8, alpha = ctx.saved_tensors
    threshold, beta, detach_reset, backend, h_dtype = ctx.args
    if grad_s is None:  # only u or s8 reached the loss: they carry no gradient
        grad_s = torch.zeros_like(u)
    elif u.numel() != grad_s.numel():
        raise RuntimeError("fastsnn::lif ran with save=False (no state for the backward); "
                           "call fastsnn.lif, which saves whenever a gradient is needed")
    need_dalpha = ctx.needs_input_grad[1]
    dh, dalpha = lif_bwd(grad_s.to(u.dtype).contiguous(), u, s8, alpha, threshold, beta, detach_reset,
                         need_dalpha, backend)
    return dh.to(h_dtype), (dalpha if need_dalpha else None), None, None, None, None, None


lif_bwd = _Op("lif_bwd", _lif_bwd, _lif_bwd_fake)
lif = _Op("lif", _lif, _lif_fake, lif_bwd, _lif_setup, _lif_backward)


# --- LIF summed over time with weights ------------------------------------------------------------

def _lif_sum(h: Tensor, alpha: Tensor, weights: Tensor, threshold: float, beta: float, detach_reset: bool,
             save: bool, backend: str) -> tuple[Tensor, Tensor, Tensor]:
    """h (B, T, N), alpha (N,), weights (T,) -> (sum_t weights_t s_t (B, N), u, s8), in the state dtype."""
    total, u, s8 = launchers(backend, "lif").lif_fwd(h, alpha, threshold, save, weights)
    if not save:
        return total, _nothing(h, _state_dtype(h)), _nothing(h, torch.uint8)
    return total, u, s8


def _lif_sum_fake(h, alpha, weights, threshold, beta, detach_reset, save, backend):
    total = h.new_empty((h.shape[0], h.shape[2]), dtype=_state_dtype(h))
    if not save:
        return total, _nothing(h, _state_dtype(h)), _nothing(h, torch.uint8)
    return total, torch.empty_like(h, dtype=_state_dtype(h)), torch.empty_like(h, dtype=torch.uint8)


def _lif_sum_bwd(grad: Tensor, weights: Tensor, u: Tensor, s8: Tensor, alpha: Tensor, threshold: float,
                 beta: float, detach_reset: bool, need_dalpha: bool, backend: str) -> tuple[Tensor, Tensor]:
    dh, dalpha = launchers(backend, "lif").lif_bwd(grad, u, s8, alpha, threshold, beta, detach_reset, need_dalpha,
                                                   weights)
    return dh, _dalpha_or_zeros(dalpha, alpha)


def _lif_sum_bwd_fake(grad, weights, u, s8, alpha, threshold, beta, detach_reset, need_dalpha, backend):
    return torch.empty_like(u), torch.empty_like(alpha)


def _lif_sum_setup(ctx, inputs, output):
    h, alpha, weights, threshold, beta, detach_reset, save, backend = inputs
    ctx.save_for_backward(output[1], output[2], alpha, weights)
    ctx.mark_non_differentiable(output[1], output[2])
    ctx.args = (threshold, beta, detach_reset, save, backend, h.dtype)
    ctx.set_materialize_grads(False)


def _lif_sum_backward(ctx, lif_sum_bwd, grad, grad_u, grad_s8):
    u, s8, alpha, weights = ctx.saved_tensors
    threshold, beta, detach_reset, save, backend, h_dtype = ctx.args
    if not save:
        raise RuntimeError("fastsnn::lif_sum ran with save=False (no state for the backward); "
                           "call fastsnn.lif_sum, which saves whenever a gradient is needed")
    if grad is None:
        grad = u.new_zeros(u.shape[0], u.shape[2])
    need_dalpha = ctx.needs_input_grad[1]
    dh, dalpha = lif_sum_bwd(grad.to(u.dtype).contiguous(), weights, u, s8, alpha, threshold, beta, detach_reset,
                             need_dalpha, backend)
    return dh.to(h_dtype), (dalpha if need_dalpha else None), None, None, None, None, None, None


lif_sum_bwd = _Op("lif_sum_bwd", _lif_sum_bwd, _lif_sum_bwd_fake)
lif_sum = _Op("lif_sum", _lif_sum, _lif_sum_fake, lif_sum_bwd, _lif_sum_setup, _lif_sum_backward)


# --- leaky readout -----------------------------------------------------------------------------

def _leaky_readout(h: Tensor, alpha: Tensor, backend: str) -> Tensor:
    """h (B, T, C), alpha (C,) -> membrane u (B, T, C)."""
    return launchers(backend, "readout").leaky_readout_fwd(h, alpha)


def _leaky_readout_fake(h, alpha, backend):
    return torch.empty_like(h)


def _leaky_readout_bwd(grad_u: Tensor, u: Optional[Tensor], alpha: Tensor, need_dalpha: bool,
                       backend: str) -> tuple[Tensor, Tensor]:
    dh, dalpha = launchers(backend, "readout").leaky_readout_bwd(grad_u, u, alpha, need_dalpha)
    return dh, _dalpha_or_zeros(dalpha, alpha)


def _leaky_readout_bwd_fake(grad_u, u, alpha, need_dalpha, backend):
    return torch.empty_like(grad_u), torch.empty_like(alpha)


def _readout_setup(ctx, inputs, output):
    h, alpha, backend = inputs
    # The membrane is only needed for d/dalpha.
    ctx.save_for_backward(output if ctx.needs_input_grad[1] else None, alpha)
    ctx.args = (backend, h.dtype)


def _readout_backward(ctx, leaky_readout_bwd, grad_u):
    u, alpha = ctx.saved_tensors
    backend, h_dtype = ctx.args
    need_dalpha = ctx.needs_input_grad[1]
    grad_u = grad_u.to(alpha.dtype).contiguous()
    u = u.to(alpha.dtype).contiguous() if need_dalpha else None
    dh, dalpha = leaky_readout_bwd(grad_u, u, alpha, need_dalpha, backend)
    return dh.to(h_dtype), (dalpha if need_dalpha else None), None


leaky_readout_bwd = _Op("leaky_readout_bwd", _leaky_readout_bwd, _leaky_readout_bwd_fake)
leaky_readout = _Op("leaky_readout", _leaky_readout, _leaky_readout_fake, leaky_readout_bwd,
                    _readout_setup, _readout_backward)


def _leaky_readout_sum(h: Tensor, alpha: Tensor, backend: str) -> Tensor:
    """h (B, T, C), alpha (C,) -> sum over time of the membrane (B, C), in float32 (float64)."""
    return launchers(backend, "readout").leaky_readout_sum_fwd(h, alpha)


def _leaky_readout_sum_fake(h, alpha, backend):
    return h.new_empty((h.shape[0], h.shape[2]), dtype=_state_dtype(h))


def _leaky_readout_sum_bwd(grad_m: Tensor, h: Optional[Tensor], alpha: Tensor, steps: int, need_dalpha: bool,
                           backend: str) -> tuple[Tensor, Tensor]:
    dh, dalpha = launchers(backend, "readout").leaky_readout_sum_bwd(grad_m, h, alpha, steps, need_dalpha)
    return dh, _dalpha_or_zeros(dalpha, alpha)


def _leaky_readout_sum_bwd_fake(grad_m, h, alpha, steps, need_dalpha, backend):
    return grad_m.new_empty((grad_m.shape[0], steps, grad_m.shape[1])), torch.empty_like(alpha)


def _readout_sum_setup(ctx, inputs, output):
    h, alpha, backend = inputs
    ctx.save_for_backward(h if ctx.needs_input_grad[1] else None, alpha)
    ctx.args = (backend, h.dtype, h.shape[1])


def _readout_sum_backward(ctx, leaky_readout_sum_bwd, grad_m):
    h, alpha = ctx.saved_tensors
    backend, h_dtype, steps = ctx.args
    need_dalpha = ctx.needs_input_grad[1]
    grad_m = grad_m.to(alpha.dtype).contiguous()
    dh, dalpha = leaky_readout_sum_bwd(grad_m, h, alpha, steps, need_dalpha, backend)
    return dh.to(h_dtype), (dalpha if need_dalpha else None), None


leaky_readout_sum_bwd = _Op("leaky_readout_sum_bwd", _leaky_readout_sum_bwd, _leaky_readout_sum_bwd_fake)
leaky_readout_sum = _Op("leaky_readout_sum", _leaky_readout_sum, _leaky_readout_sum_fake, leaky_readout_sum_bwd,
                        _readout_sum_setup, _readout_sum_backward)

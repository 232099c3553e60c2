"""The LIF family: ``lif`` and ``alif`` (adaptive threshold), one op with optional time weights.

Here, in order: the forward and backward implementations (dispatching to the numba kernels in
``cpu.py`` or the Triton kernels in ``fastsnn/kernels/neurons.py``), the ``torch.library`` custom
ops ``fastsnn::lif`` / ``fastsnn::lif_bwd`` that ``torch.compile`` traces, the eager
``LIFFunction`` built from the same setup and backward (the custom-op dispatcher costs ~0.27 ms
a call at seed size, a twentieth of a training step), and the validated public functions.
The oracle is ``reference.py``; the options live in ``neuron.py``.

Every op argument is a tensor or a plain scalar (custom-op schemas take nothing else), so a
:class:`~fastsnn.ops.neurons.neuron.Neuron` travels flattened, as ``*neuron``.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._common import (as_reference_decay, check_h, connected, decay_tensor, empty_state, first_order,
                       resolve_backend, state_dtype, time_weights_tensor, upcast, zeros_if_none)
from .neuron import Neuron, neuron, reference_options
from .reference import lif_ref

__all__ = ["lif", "alif", "LIFFunction", "lif_ref"]


def _kernels(backend: str):
    """The launchers of a fast ``backend``: the numba ones (``cpu.py``) or the Triton ones
    (``fastsnn/kernels/neurons.py``), imported on first use: ``import fastsnn`` imports neither."""
    if backend == "triton":
        from fastsnn.kernels import neurons as triton_kernels

        return triton_kernels
    from . import cpu

    return cpu


def _lif_fwd(h: Tensor, alpha: Tensor, rho: Optional[Tensor], time_weights: Optional[Tensor], same_step: bool,
             reset: int, adaptive: bool, fire_ge: bool, surrogate: int, detach_reset: bool, threshold: float,
             beta: float, adapt: float, save: bool, backend: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """h (B, T, N) -> (spikes (B, T, N), or with time_weights (T,) their weighted time sum (B, N) in the
    state dtype; u; s8; a): the saved state, empty unless ``save`` (a also unless adaptive)."""
    n = Neuron(same_step, reset, adaptive, fire_ge, surrogate, detach_reset, threshold, beta, adapt)
    out, u, s8, a = _kernels(backend).lif_fwd(h, alpha, rho, n, save, time_weights)
    state = state_dtype(h.dtype)
    return (out, u if u is not None else empty_state(h, state), s8 if s8 is not None else empty_state(h, torch.uint8),
            a if a is not None else empty_state(h, state))


def _lif_fwd_fake(h, alpha, rho, time_weights, same_step, reset, adaptive, fire_ge, surrogate, detach_reset,
                  threshold, beta, adapt, save, backend):
    state = state_dtype(h.dtype)
    out = torch.empty_like(h) if time_weights is None else h.new_empty((h.shape[0], h.shape[2]), dtype=state)
    u = torch.empty_like(h, dtype=state) if save else empty_state(h, state)
    saves_s8 = save and not (same_step and backend == "cpu")  # the numba backward recomputes same-step spikes
    s8 = torch.empty_like(h, dtype=torch.uint8) if saves_s8 else empty_state(h, torch.uint8)
    a = torch.empty_like(h, dtype=state) if save and adaptive else empty_state(h, state)
    return out, u, s8, a


def _lif_bwd(grad: Tensor, u: Tensor, s8: Tensor, a: Tensor, alpha: Tensor, rho: Optional[Tensor],
             time_weights: Optional[Tensor], same_step: bool, reset: int, adaptive: bool, fire_ge: bool,
             surrogate: int, detach_reset: bool, threshold: float, beta: float, adapt: float, need_dalpha: bool,
             need_drho: bool, backend: str) -> tuple[Tensor, Tensor, Tensor]:
    """grad of the spikes (B, T, N), or of their weighted time sum (B, N) -> (dh, dalpha (N,), drho (N,))."""
    n = Neuron(same_step, reset, adaptive, fire_ge, surrogate, detach_reset, threshold, beta, adapt)
    dh, dalpha, drho = _kernels(backend).lif_bwd(grad, u, s8, a if adaptive else None, alpha, rho, n,
                                                         need_dalpha, need_drho, time_weights)
    return dh, zeros_if_none(dalpha, alpha), zeros_if_none(drho, alpha)


def _lif_bwd_fake(grad, u, s8, a, alpha, rho, time_weights, same_step, reset, adaptive, fire_ge, surrogate,
                  detach_reset, threshold, beta, adapt, need_dalpha, need_drho, backend):
    return torch.empty_like(u), torch.empty_like(alpha), torch.empty_like(alpha)


def _setup_context(ctx, inputs, output):
    h, alpha, rho, time_weights, *flat = inputs
    *neuron_args, save, backend = flat
    ctx.save_for_backward(output[1], output[2], output[3], alpha, rho, time_weights)
    ctx.mark_non_differentiable(output[1], output[2], output[3])
    ctx.args = (tuple(neuron_args), save, backend, h.dtype)
    ctx.set_materialize_grads(False)  # u, s8 and a never get a gradient: build no zeros for them


def _backward(ctx, lif_bwd, grad, grad_u=None, grad_s8=None, grad_a=None):
    u, s8, a, alpha, rho, time_weights = ctx.saved_tensors
    neuron_args, save, backend, h_dtype = ctx.args
    if not save:
        raise RuntimeError("fastsnn::lif ran with save=False (no state for the backward); call fastsnn.lif, "
                           "which saves whenever a gradient is needed")
    if grad is None:  # only u, s8 or a reached the loss: they carry no gradient
        grad = u.new_zeros(u.shape if time_weights is None else (u.shape[0], u.shape[2]))
    need_dalpha, need_drho = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
    if time_weights is None and grad.shape[1] > 1 and grad.stride(1) == 0:
        # a gradient that is constant along time (of spikes.sum() or .mean(): a broadcast view) is the
        # time-weighted backward's with unit weights; one row of it is read instead of a (B, T, N) copy
        grad, time_weights = grad[:, 0], u.new_ones(u.shape[1])
    dh, dalpha, drho = first_order("fastsnn.lif", lif_bwd, grad.to(u.dtype).contiguous(), u, s8, a, alpha, rho,
                                   time_weights, *neuron_args, need_dalpha, need_drho, backend)
    return (dh.to(h_dtype), dalpha if need_dalpha else None, drho if need_drho else None) + (None,) * 12


lif_bwd_op = torch.library.custom_op("fastsnn::lif_bwd", _lif_bwd, mutates_args=())
lif_bwd_op.register_fake(_lif_bwd_fake)
lif_op = torch.library.custom_op("fastsnn::lif", _lif_fwd, mutates_args=())
lif_op.register_fake(_lif_fwd_fake)
lif_op.register_autograd(lambda ctx, *grads: _backward(ctx, lif_bwd_op, *grads), setup_context=_setup_context)


class LIFFunction(torch.autograd.Function):
    """The eager twin of ``fastsnn::lif``: same implementation, same setup and backward, no dispatcher."""

    @staticmethod
    def forward(ctx, *inputs):  # the ctx-first form: a separate setup_context costs an inspect.signature per call
        output = _lif_fwd(*inputs)
        _setup_context(ctx, inputs, output)
        return output

    @staticmethod
    def backward(ctx, *grads):
        return _backward(ctx, _lif_bwd, *grads)


def _run(h, alpha, rho, time_weights, n: Neuron, backend: str) -> Tensor:
    """Validate the tensors, then run neuron ``n`` on ``backend``."""
    check_h("h", h)
    alpha_t = decay_tensor("alpha", alpha, h)
    rho_t = decay_tensor("rho", rho, h) if n.adaptive else None
    weights = time_weights_tensor(time_weights, h) if time_weights is not None else None
    backend = resolve_backend(backend, h.device)
    if backend == "reference":
        rho_ref = as_reference_decay(rho) if n.adaptive else None
        s = lif_ref(upcast(h), as_reference_decay(alpha), rho_ref, **reference_options(n))
        out = s if weights is None else (s * weights[:, None]).sum(1)
        return connected(out.to(h.dtype), h, alpha, rho)
    save = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (h, alpha_t, rho_t))
    args = (h.contiguous(), alpha_t, rho_t, weights, *n, save, backend)
    out = lif_op(*args) if torch.compiler.is_compiling() else LIFFunction.apply(*args)
    return out[0].to(h.dtype)


def lif(h: Tensor, alpha, *, time_weights=None, threshold: float = 1.0, beta: float = 5.0,
        detach_reset: bool = False, spike: str = "delayed", reset: str = "zero", surrogate: str = "sigmoid",
        fire: str = ">", backend: str = "auto") -> Tensor:
    """The LIF time loop: input currents h (B, T, N) -> spikes (B, T, N), dtype of h.

    ``alpha``: decay per step exp(-dt/tau), a float in [0, 1] or an (N,) tensor (which then gets a
    gradient). The defaults are the seed's neuron: ``spike="delayed"``, ``s_{t+1} = H(v_t - threshold)``,
    ``v_{t+1} = (alpha v_t + h_t)(1 - s_t)``, ``s_0 = v_0 = 0``. ``spike="same_step"`` spikes on the
    step's own membrane ``u_t = alpha v_{t-1} + h_t``. ``reset``: ``"zero"`` (multiply by 1 - s),
    ``"subtract"`` (subtract threshold x s), ``"subtract_next"`` (same-step only; snnTorch's subtract:
    threshold x s comes off the next step's membrane). ``fire``: ``">"`` (the seed, snnTorch) or ``">="``
    (SpikingJelly). ``surrogate``: the pseudo-derivative of H, ``"sigmoid"``
    ``beta sig(beta x)(1 - sig(beta x))`` or ``"atan"`` ``beta / 2 / (1 + (pi/2 beta x)^2)``.
    ``detach_reset`` stops the gradient through the reset's s.

    ``time_weights`` (T,) (no gradient) returns ``sum_t time_weights_t s_t``, (B, N), instead: the fast
    backends then never store the (B, T, N) spikes nor build their gradient. All ones counts spikes;
    :meth:`fastsnn.nn.LeakyReadout.time_weights` folds a leaky readout's time sum into it. A NaN
    in h (or in a time weight) propagates: every later spike of that neuron is NaN.
    Equations: ``docs/semantics.md``.
    """
    n = neuron(spike=spike, reset=reset, surrogate=surrogate, fire=fire, detach_reset=detach_reset,
               threshold=threshold, beta=beta)
    return _run(h, alpha, None, time_weights, n, backend)


def alif(h: Tensor, alpha, rho, *, adapt: float = 1.0, time_weights=None, threshold: float = 1.0, beta: float = 5.0,
         detach_reset: bool = False, spike: str = "delayed", reset: str = "zero", surrogate: str = "sigmoid",
         fire: str = ">", backend: str = "auto") -> Tensor:
    """:func:`lif` with an adaptive threshold: h (B, T, N) -> spikes (B, T, N).

    ``theta_t = threshold + adapt * a_t`` with ``a_0 = 0`` and ``a <- rho a + (1 - rho) s`` after each
    spike step; ``rho`` (decay of the adaptation per step, exp(-dt/tau_adapt)) is a float in [0, 1] or
    an (N,) tensor that then gets a gradient. The spike and reset use theta in place of the fixed
    threshold; the gradient flows through a (``-adapt`` times the surrogate). Other options as :func:`lif`.
    """
    n = neuron(spike=spike, reset=reset, surrogate=surrogate, fire=fire, detach_reset=detach_reset,
               threshold=threshold, beta=beta, adapt=adapt, adaptive=True)
    return _run(h, alpha, rho, time_weights, n, backend)

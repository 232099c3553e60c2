"""The reference ops: a plain autograd transcription of the seed's time loops.

These are the oracle every fast backend is tested against (values and
gradients) and the fallback that runs on any device. They keep the seed's
values, not its cost: the input is split with ``unbind`` before the loop, so
autograd's backward stays O(T) (indexing ``h[:, t]`` in the loop makes it
O(T^2)). The equations are in ``SEMANTICS.md`` / ``docs`` of the project.
"""

from __future__ import annotations

import torch

Alpha = float | torch.Tensor


class SurrogateSpike(torch.autograd.Function):
    """Heaviside(x) = 1[x > 0] forward (NaN stays NaN); beta sig(beta x)(1 - sig(beta x)) backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, beta: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.beta = beta
        return torch.where(torch.isnan(x), x, (x > 0).to(x.dtype))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        sig = torch.sigmoid(ctx.beta * x)
        return grad * ctx.beta * sig * (1 - sig), None


def spike_fn(x: torch.Tensor, beta: float = 5.0) -> torch.Tensor:
    return SurrogateSpike.apply(x, beta)


def lif_ref(
    h: torch.Tensor,
    alpha: Alpha,
    *,
    threshold: float = 1.0,
    beta: float = 5.0,
    detach_reset: bool = False,
) -> torch.Tensor:
    """The seed's LIF layer with delayed spike and multiplicative reset.

    h: (B, T, N) input currents; alpha: float or (N,) decay per step.
    Returns spikes s: (B, T, N), s_0 = 0, with for t = 0 .. T-2
    ``v_{t+1} = (alpha v_t + h_t)(1 - s_t)`` and ``s_{t+1} = H(v_t - threshold)``.
    """
    B, _, N = h.shape
    v = h.new_zeros(B, N)
    s = h.new_zeros(B, N)
    out = [s]
    for h_t in h.unbind(1)[:-1]:
        keep = 1 - (s.detach() if detach_reset else s)
        v_next = (alpha * v + h_t) * keep
        s = spike_fn(v - threshold, beta)
        v = v_next
        out.append(s)
    return torch.stack(out, dim=1)


def lif_sum_ref(h: torch.Tensor, alpha: Alpha, weights: torch.Tensor, **kwargs) -> torch.Tensor:
    """:func:`lif_ref` weighted and summed over time: (B, T, N) -> (B, N) = sum_t weights_t s_t."""
    return (lif_ref(h, alpha, **kwargs) * weights[:, None]).sum(1)


def leaky_readout_ref(h: torch.Tensor, alpha: Alpha) -> torch.Tensor:
    """Leaky integrator without spikes: h (B, T, C) -> membrane u (B, T, C).

    ``u_0 = 0`` and ``u_{t+1} = alpha u_t + h_t`` for t = 0 .. T-2.
    """
    B, _, C = h.shape
    u = h.new_zeros(B, C)
    out = [u]
    for h_t in h.unbind(1)[:-1]:
        u = alpha * u + h_t
        out.append(u)
    return torch.stack(out, dim=1)


def leaky_readout_sum_ref(h: torch.Tensor, alpha: Alpha) -> torch.Tensor:
    """Sum over time of :func:`leaky_readout_ref`: h (B, T, C) -> (B, C)."""
    return leaky_readout_ref(h, alpha).sum(1)

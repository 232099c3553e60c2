"""The leaky readout's oracle: a plain autograd transcription of its time loop (O(T) backward, as
:mod:`fastsnn.ops.neurons.reference`). Equations: ``docs/semantics.md`` (Readout)."""

from __future__ import annotations

import torch

Decay = float | torch.Tensor


def leaky_readout_ref(h: torch.Tensor, alpha: Decay) -> torch.Tensor:
    """Leaky integrator without spikes: h (B, T, C) -> membrane u (B, T, C).

    ``u_0 = 0`` and ``u_{t+1} = alpha u_t + h_t`` for t = 0 .. T-2.
    """
    B, _, C = h.shape
    u = h.new_zeros(B, C)
    out = [u]
    for h_t in h.unbind(1)[:-1]:
        u = alpha * u + h_t
        out.append(u)
    return torch.stack(out, dim=1)[:, : h.shape[1]]


def leaky_readout_sum_ref(h: torch.Tensor, alpha: Decay) -> torch.Tensor:
    """Sum over time of :func:`leaky_readout_ref`: h (B, T, C) -> (B, C)."""
    return leaky_readout_ref(h, alpha).sum(1)

"""Learnable synaptic delays, the oracle: a plain autograd transcription.

Each synapse (i, j) of an (in, out) projection has a weight ``W_ij`` and a delay ``D_ij`` in steps;
its kernel over the taps k = 0 .. max_delay is ``W_ij G_ij(k)``, a normalised Gaussian of width
``sigma`` centred at ``D_ij`` (training), or a one-hot at ``round(D_ij)`` (evaluation: ``sigma=None``).
The projection convolves the input causally over time with these kernels. Equations:
``docs/semantics.md`` (Learnable delays). The Gaussian and its normalisation are those of the
``dcls`` package's ``Dcls1d(version="gauss")``, which ``tests/test_delays.py`` checks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NORM_EPS = 1e-7  # G = e / (sum_k e_k + NORM_EPS), dcls's normalisation


def delay_taps(delay: torch.Tensor, sigma: float | None, max_delay: int) -> torch.Tensor:
    """The kernel shape G over the taps: delay (I, O) -> (I, O, max_delay + 1), dtype of delay.

    ``sigma`` (steps): ``G(k) = e_k / (sum_m e_m + NORM_EPS)`` with ``e_k = exp(-(k - D)^2 / (2 sigma^2))``.
    ``sigma=None``: ``G(k) = 1[k = round(clamp(D, 0, max_delay))]`` (round half to even, no gradient; NaN
    for a NaN delay).
    """
    taps = torch.arange(max_delay + 1, dtype=delay.dtype, device=delay.device)
    if sigma is None:
        nearest = delay.clamp(0, max_delay).round()[..., None]  # round's derivative is 0
        return (taps == nearest.detach()).to(delay.dtype) + 0 * nearest  # 0 * nearest: NaN stays NaN, 0 gradient
    e = torch.exp(-0.5 * ((taps - delay[..., None]) / sigma) ** 2)
    return e / (e.sum(-1, keepdim=True) + NORM_EPS)


def delayed_projection_ref(x: torch.Tensor, weight: torch.Tensor, delay: torch.Tensor, sigma: float | None,
                           max_delay: int) -> torch.Tensor:
    """x (B, T, I), weight and delay (I, O) -> h (B, T, O), ``h[b, t, j] = sum_i sum_k W_ij G_ij(k) x[b, t-k, i]``
    (``x[b, t] = 0`` for ``t < 0``)."""
    kernel = weight[..., None] * delay_taps(delay, sigma, max_delay)  # (I, O, K)
    T = x.shape[1]
    h = x.new_zeros(x.shape[0], T, weight.shape[1])
    for k in range(min(max_delay + 1, T)):
        h = h + F.pad(x[:, : T - k] @ kernel[:, :, k], (0, 0, k, 0))
    return h

"""Layers: a linear projection followed by a fused time loop.

Weights are stored as (in_features, out_features), the seed's layout, and
initialised the seed's way: U(-1/sqrt(out_features), +1/sqrt(out_features))
(torch takes fan_in from dim 1 of that matrix, so the scale follows the layer's
width, not its input size).
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

from . import ops
from .ops.lif.neuron import neuron


def dale_signs(rows: int, cols: int, ie_ratio: float, mask: str = "contiguous",
               generator: torch.Generator | None = None) -> torch.Tensor:
    """(rows, cols) of +-1: ``round(ie_ratio * rows)`` whole rows are inhibitory (-1).

    ``mask="contiguous"`` makes them the first rows (the seed); ``"random"`` a random
    subset of rows drawn from ``generator``.
    """
    if not 0 <= ie_ratio <= 1:
        raise ValueError(f"ie_ratio must be in [0, 1], got {ie_ratio!r}")
    n_inhibitory = math.floor(ie_ratio * rows + 0.5)
    if mask == "contiguous":
        rows_inh = torch.arange(n_inhibitory)
    elif mask == "random":
        rows_inh = torch.randperm(rows, generator=generator)[:n_inhibitory]
    else:
        raise ValueError(f"mask must be 'contiguous' or 'random', got {mask!r}")
    signs = torch.ones(rows, cols)
    signs[rows_inh] = -1
    return signs


def _time_weights(alpha: float, steps: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """:func:`fastsnn.ops.readout_time_weights` as a (steps,) tensor, built once per setting in eager mode."""
    if torch.compiler.is_compiling():
        return torch.tensor(ops.readout_time_weights(alpha, steps), dtype=dtype, device=device)
    return _cached_time_weights(alpha, steps, dtype, device)


@functools.lru_cache(maxsize=64)
def _cached_time_weights(alpha: float, steps: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    with torch.inference_mode(False):  # an inference tensor could not be saved for a later backward
        return torch.tensor(ops.readout_time_weights(alpha, steps), dtype=dtype, device=device)


class _Projected(nn.Module):
    """Shared parts: weight (in, out), optional Dale signs, fixed or learnable per-neuron tau."""

    def __init__(self, in_features: int, out_features: int, *, tau_ms: float, dt_ms: float, learn_tau: bool,
                 dales_law: bool, ie_ratio: float, dale_mask: str, backend: str, binary_input: bool,
                 generator: torch.Generator | None):
        super().__init__()
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        for name, value in (("tau_ms", tau_ms), ("dt_ms", dt_ms)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if backend not in ops.BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(ops.BACKENDS)}, got {backend!r}")
        self.in_features, self.out_features = in_features, out_features
        self.dt_ms, self.backend, self.dales_law = float(dt_ms), backend, dales_law
        self.binary_input = binary_input
        bound = 1 / math.sqrt(out_features)
        self.weight = nn.Parameter(torch.empty(in_features, out_features).uniform_(-bound, bound, generator=generator))
        if dales_law:
            self.register_buffer("sign", dale_signs(in_features, out_features, ie_ratio, dale_mask, generator))
        else:
            self.sign = None
        if learn_tau:
            self.log_tau = nn.Parameter(torch.full((out_features,), math.log(tau_ms)))
        else:
            self.log_tau = None
            self._tau_ms = float(tau_ms)

    @property
    def tau_ms(self) -> float | torch.Tensor:
        return self.log_tau.exp() if self.log_tau is not None else self._tau_ms

    def alpha(self) -> float | torch.Tensor:
        """Decay per step, exp(-dt/tau): a float, or an (out,) tensor when tau is learnt."""
        if self.log_tau is not None:
            return torch.exp(-self.dt_ms / self.log_tau.exp())
        return math.exp(-self.dt_ms / self._tau_ms)

    def effective_weight(self) -> torch.Tensor:
        """The weight used in the forward: ``|W| * sign`` under Dale's law, else W."""
        return self.weight.abs() * self.sign if self.sign is not None else self.weight

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 3 or x.shape[2] != self.in_features:
            raise ValueError(f"x must have shape (B, T, {self.in_features}), got {tuple(x.shape)}")

    def project(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        if self.binary_input:
            return ops.spike_matmul(x, self.effective_weight())
        return torch.matmul(x, self.effective_weight())

    def extra_repr(self) -> str:
        tau = "learnt" if self.log_tau is not None else f"{self._tau_ms:g}"
        return (f"{self.in_features}, {self.out_features}, tau_ms={tau}, dt_ms={self.dt_ms:g}, "
                f"dales_law={self.dales_law}, backend={self.backend!r}")


class LIF(_Projected):
    """x (B, T, in_features) -> spikes (B, T, out_features): ``h = x @ W`` then :func:`fastsnn.lif`.

    ``spike``, ``reset``, ``surrogate``, ``fire``, ``threshold``, ``beta`` and ``detach_reset`` choose the
    member of the LIF family (defaults: the seed's neuron). ``binary_input=True`` declares x to be
    0/1 spikes: the projection then keeps x for the backward as bits instead of floats
    (:func:`fastsnn.spike_matmul`).
    """

    def __init__(self, in_features: int, out_features: int, *, tau_ms: float = 5.0, dt_ms: float = 1.0,
                 threshold: float = 1.0, beta: float = 5.0, detach_reset: bool = False, spike: str = "delayed",
                 reset: str = "zero", surrogate: str = "sigmoid", fire: str = ">", learn_tau: bool = False,
                 dales_law: bool = False, ie_ratio: float = 0.5, dale_mask: str = "contiguous",
                 backend: str = "auto", binary_input: bool = False, generator: torch.Generator | None = None):
        super().__init__(in_features, out_features, tau_ms=tau_ms, dt_ms=dt_ms, learn_tau=learn_tau,
                         dales_law=dales_law, ie_ratio=ie_ratio, dale_mask=dale_mask, backend=backend,
                         binary_input=binary_input, generator=generator)
        self.options = dict(threshold=threshold, beta=beta, detach_reset=detach_reset, spike=spike, reset=reset,
                            surrogate=surrogate, fire=fire)
        neuron(**self.options)  # fail here, not at the first forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(self.project(x))

    def time_sum(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """x (B, T, in_features) -> (B, out_features) = sum_t weights_t s_t (:func:`fastsnn.lif` with time weights)."""
        return self._run(self.project(x), weights)

    def _run(self, h: torch.Tensor, time_weights: torch.Tensor | None = None) -> torch.Tensor:
        return ops.lif(h, self.alpha(), time_weights=time_weights, backend=self.backend, **self.options)

    def extra_repr(self) -> str:
        return super().extra_repr() + "".join(f", {k}={v!r}" for k, v in self.options.items())


class ALIF(LIF):
    """:class:`LIF` with an adaptive threshold (:func:`fastsnn.alif`): ``threshold + adapt * a``, where ``a``
    follows the spikes with time constant ``tau_adapt_ms``; learnt per neuron with ``learn_tau``, as tau is."""

    def __init__(self, in_features: int, out_features: int, *, tau_adapt_ms: float = 100.0, adapt: float = 1.0,
                 **kwargs):
        super().__init__(in_features, out_features, **kwargs)
        if not (isinstance(tau_adapt_ms, (int, float)) and math.isfinite(tau_adapt_ms) and tau_adapt_ms > 0):
            raise ValueError(f"tau_adapt_ms must be a finite number > 0, got {tau_adapt_ms!r}")
        self.options["adapt"] = adapt
        neuron(**self.options, adaptive=True)
        if self.log_tau is not None:
            self.log_tau_adapt = nn.Parameter(torch.full((out_features,), math.log(tau_adapt_ms)))
        else:
            self.log_tau_adapt = None
            self._tau_adapt_ms = float(tau_adapt_ms)

    def rho(self) -> float | torch.Tensor:
        """Decay of the adaptation per step, exp(-dt/tau_adapt): a float, or an (out,) tensor when learnt."""
        if self.log_tau_adapt is not None:
            return torch.exp(-self.dt_ms / self.log_tau_adapt.exp())
        return math.exp(-self.dt_ms / self._tau_adapt_ms)

    def _run(self, h: torch.Tensor, time_weights: torch.Tensor | None = None) -> torch.Tensor:
        return ops.alif(h, self.alpha(), self.rho(), time_weights=time_weights, backend=self.backend, **self.options)


class LeakyReadout(_Projected):
    """x (B, T, in_features) -> membrane (B, T, out_features): ``h = x @ W`` then :func:`fastsnn.leaky_readout`.

    :meth:`time_sum` returns the membrane summed over time, (B, out_features). With one fixed tau it
    contracts time first, ``(sum_k c_k x_k) @ W``, which needs neither the (B, T, out) projection nor
    a time loop; with learnt per-neuron tau it runs :func:`fastsnn.leaky_readout_sum`.
    ``binary_input`` as for :class:`LIF`.
    """

    def __init__(self, in_features: int, out_features: int, *, tau_ms: float = 5.0, dt_ms: float = 1.0,
                 learn_tau: bool = False, dales_law: bool = False, ie_ratio: float = 0.5,
                 dale_mask: str = "contiguous", backend: str = "auto", binary_input: bool = False,
                 generator: torch.Generator | None = None):
        super().__init__(in_features, out_features, tau_ms=tau_ms, dt_ms=dt_ms, learn_tau=learn_tau,
                         dales_law=dales_law, ie_ratio=ie_ratio, dale_mask=dale_mask, backend=backend,
                         binary_input=binary_input, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.leaky_readout(self.project(x), self.alpha(), backend=self.backend)

    def time_sum(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.time_weights(x.shape[1], x.dtype, x.device)
        if weights is None:
            return ops.leaky_readout_sum(self.project(x), self.alpha(), backend=self.backend)
        # One decay for all outputs: sum_t u_t = sum_k c_k (x_k @ W) = (sum_k c_k x_k) @ W, so contract
        # time first, on the narrower input, and skip the (B, T, out) projection and the time loop.
        self._check_input(x)
        return torch.matmul(weights, x) @ self.effective_weight()  # (T,) @ (B, T, in): no copy of x, unlike einsum

    def time_weights(self, steps: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor | None:
        """The (steps,) c_k with ``time_sum(x) = (sum_k c_k x_k) @ W`` when one fixed tau allows it on a
        fast backend; None for learnt per-neuron tau and for the reference backend (its plain loop)."""
        alpha = self.alpha()
        if self.backend == "reference" or isinstance(alpha, torch.Tensor):
            return None
        return _time_weights(alpha, steps, dtype, device)

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
                 generator: torch.Generator | None, max_delay: int = 0):
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
        self._init_delays(max_delay, generator)

    def _init_delays(self, max_delay: int, generator: torch.Generator | None) -> None:
        """With ``max_delay`` > 0, a learnable delay per synapse, uniform in [0, max_delay] steps (drawn after
        every other parameter, so that a layer without delays draws what it always drew)."""
        if isinstance(max_delay, bool) or not isinstance(max_delay, int) or max_delay < 0:
            raise ValueError(f"max_delay must be an integer >= 0 (steps; 0: no delays), got {max_delay!r}")
        self.max_delay = max_delay
        self.delay = None
        if max_delay:
            shape = (self.in_features, self.out_features)
            self.delay = nn.Parameter(torch.empty(shape).uniform_(0, max_delay, generator=generator))
            self.sigma = delay_sigma(max_delay, 0, 1)

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
        if self.delay is not None:  # training: Gaussian kernels of width sigma; evaluation: rounded delays
            return ops.delayed_projection(x, self.effective_weight(), self.delay, self.sigma if self.training else None,
                                          max_delay=self.max_delay, backend=self.backend)
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

    ``max_delay`` > 0 gives each synapse a learnable delay in [0, max_delay] steps (parameter ``delay``):
    the projection is then :func:`fastsnn.delayed_projection`, with Gaussian kernels of width ``sigma``
    in training mode (set it per epoch with :func:`anneal_delays`) and delays rounded in eval mode.
    """

    def __init__(self, in_features: int, out_features: int, *, tau_ms: float = 5.0, dt_ms: float = 1.0,
                 threshold: float = 1.0, beta: float = 5.0, detach_reset: bool = False, spike: str = "delayed",
                 reset: str = "zero", surrogate: str = "sigmoid", fire: str = ">", learn_tau: bool = False,
                 dales_law: bool = False, ie_ratio: float = 0.5, dale_mask: str = "contiguous",
                 backend: str = "auto", binary_input: bool = False, generator: torch.Generator | None = None,
                 max_delay: int = 0):
        super().__init__(in_features, out_features, tau_ms=tau_ms, dt_ms=dt_ms, learn_tau=learn_tau,
                         dales_law=dales_law, ie_ratio=ie_ratio, dale_mask=dale_mask, backend=backend,
                         binary_input=binary_input, generator=generator, max_delay=max_delay)
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


# --- learnable delays ---------------------------------------------------------------------------------

# The published schedule (dcls's SNN-delays): dcls's SIG decays exponentially from max_delay / 2 to 0.23
# over the annealing epochs; the Gaussian's standard deviation is SIG + 0.27, so 0.5 steps at the end.
DELAY_SIG_END = 0.23
DCLS_SIG_FLOOR = 0.27


def delay_sigma(max_delay: int, epoch: int, anneal_epochs: int) -> float:
    """Width (steps) of the delay kernels in training epoch ``epoch`` (0-based):
    ``SIG0 (0.23 / SIG0)^(min(epoch, anneal_epochs) / anneal_epochs) + 0.27`` with ``SIG0 = max_delay / 2``."""
    start = max(max_delay / 2, DELAY_SIG_END)
    return start * (DELAY_SIG_END / start) ** (min(epoch, anneal_epochs) / anneal_epochs) + DCLS_SIG_FLOOR


def delay_layers(model: nn.Module) -> list[_Projected]:
    return [m for m in model.modules() if isinstance(m, _Projected) and m.delay is not None]


def anneal_delays(model: nn.Module, epoch: int, anneal_epochs: int) -> None:
    """Set every delay layer's kernel width for training epoch ``epoch`` (:func:`delay_sigma`)."""
    for layer in delay_layers(model):
        layer.sigma = delay_sigma(layer.max_delay, epoch, anneal_epochs)


@torch.no_grad()
def clamp_delays_(model: nn.Module) -> None:
    """Clip every delay back into [0, max_delay] (after an optimizer step, as dcls's ``clamp_parameters``)."""
    for layer in delay_layers(model):
        layer.delay.clamp_(0, layer.max_delay)


def delay_param_groups(model: nn.Module, lr: float, delay_lr: float) -> list[dict]:
    """Optimizer parameter groups: the delays at ``delay_lr``, everything else at ``lr``; one group when
    the model has no delays (so that optimizer states saved before delays existed still load)."""
    delays = {id(layer.delay) for layer in delay_layers(model)}
    rest = [p for p in model.parameters() if id(p) not in delays]
    if not delays:
        return [{"params": rest, "lr": lr}]
    return [{"params": rest, "lr": lr},
            {"params": [p for p in model.parameters() if id(p) in delays], "lr": delay_lr}]

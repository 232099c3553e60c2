"""Layers: a linear projection followed by a fused time loop.

Weights are stored as (in_features, out_features), the seed's layout, and
initialised the seed's way: U(-1/sqrt(out_features), +1/sqrt(out_features))
(torch takes fan_in from dim 1 of that matrix, so the scale follows the layer's
width, not its input size); ``weight_init="kaiming"`` draws them as
``kaiming_uniform_(nonlinearity="relu")`` on torch's (out, in) layout does,
U(-sqrt(6/in_features), +sqrt(6/in_features)) (the community's DCLS notebook).
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

from . import ops
from .ops.neurons.neuron import neuron


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
    """Shared parts: weight (in, out * segments), optional Dale signs, fixed or learnable per-neuron tau.
    ``segments`` > 1: each output neuron has that many columns, its dendritic segments' weights."""

    def __init__(self, in_features: int, out_features: int, *, tau_ms: float, dt_ms: float, learn_tau: bool,
                 dales_law: bool, ie_ratio: float, dale_mask: str, backend: str, binary_input: bool,
                 generator: torch.Generator | None, segments: int = 1, max_delay: int = 0,
                 delay_init: str = "uniform", weight_init: str = "seed"):
        super().__init__()
        for name, value in (("in_features", in_features), ("out_features", out_features), ("segments", segments)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        for name, value in (("tau_ms", tau_ms), ("dt_ms", dt_ms)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if backend not in ops.BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(ops.BACKENDS)}, got {backend!r}")
        if weight_init not in WEIGHT_INITS:
            raise ValueError(f"weight_init must be one of {', '.join(WEIGHT_INITS)}, got {weight_init!r}")
        self.in_features, self.out_features = in_features, out_features
        self.dt_ms, self.backend, self.dales_law = float(dt_ms), backend, dales_law
        self.binary_input = binary_input
        width = out_features * segments
        bound = 1 / math.sqrt(width) if weight_init == "seed" else math.sqrt(6 / in_features)
        self.weight = nn.Parameter(torch.empty(in_features, width).uniform_(-bound, bound, generator=generator))
        if dales_law:
            self.register_buffer("sign", dale_signs(in_features, width, ie_ratio, dale_mask, generator))
        else:
            self.sign = None
        if learn_tau:
            self.log_tau = nn.Parameter(torch.full((out_features,), math.log(tau_ms)))
        else:
            self.log_tau = None
            self._tau_ms = float(tau_ms)
        self._init_delays(max_delay, delay_init, generator)

    def _init_delays(self, max_delay: int, init: str, generator: torch.Generator | None) -> None:
        """With ``max_delay`` > 0, a learnable delay per synapse in [0, max_delay] steps (drawn after every other
        parameter, so that a layer without delays draws what it always drew): ``init="uniform"`` draws it
        uniformly, ``"centre"`` as dcls draws its positions, ``N(max_delay // 2, 0.5^2)`` clipped to the range."""
        if isinstance(max_delay, bool) or not isinstance(max_delay, int) or max_delay < 0:
            raise ValueError(f"max_delay must be an integer >= 0 (steps; 0: no delays), got {max_delay!r}")
        if init not in DELAY_INITS:
            raise ValueError(f"delay_init must be one of {', '.join(DELAY_INITS)}, got {init!r}")
        self.max_delay = max_delay
        self.delay = None
        if max_delay:
            delay = torch.empty(self.weight.shape)
            if init == "uniform":
                delay.uniform_(0, max_delay, generator=generator)
            else:  # dcls: P ~ N(0, 0.5^2) around the kernel's centre tap, delay = max_delay - (max_delay + 1) // 2 - P
                delay.normal_(max_delay - (max_delay + 1) // 2, 0.5, generator=generator).clamp_(0, max_delay)
            self.delay = nn.Parameter(delay)
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

    def project(self, x: torch.Tensor | ops.SpikeBits) -> torch.Tensor:
        self._check_input(x)
        if isinstance(x, ops.SpikeBits) and (self.delay is not None or not self.binary_input):
            x = x.unpack()  # only the spike projection takes bits
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


class DendriticFilter(nn.Module):
    """Filter-and-fire dendrites: segment currents h (B, T, units * segments) -> somatic currents (B, T, units).

    Column j is segment ``j % segments`` of unit ``j // segments``; each has a fixed causal double
    exponential ``k_d = (alpha_decay^(d-1) - alpha_rise^(d-1)) / peak`` for d >= 1 (``k_0 = 0``),
    ``alpha = exp(-dt / tau)``: the continuous ``exp(-s/decay) - exp(-s/rise)`` sampled at ``s = (d-1) dt``,
    one step late as the leaky readout is, scaled so that ``max_d k_d = 1``. The filtered segments
    ``y_t = sum_{d>=1} k_d h_{t-d}`` of a unit are summed. The filter runs as the difference of two
    leaky integrators (:func:`fastsnn.leaky_readout` with per-channel decays); :meth:`kernel` gives k.
    ``rise_ms``, ``decay_ms``: (units * segments,) time constants, decay > rise.
    """

    def __init__(self, units: int, segments: int, rise_ms: torch.Tensor, decay_ms: torch.Tensor, dt_ms: float = 1.0):
        super().__init__()
        for name, value in (("units", units), ("segments", segments)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        for name, value in (("rise_ms", rise_ms), ("decay_ms", decay_ms)):
            if not isinstance(value, torch.Tensor) or value.shape != (units * segments,):
                raise ValueError(f"{name} must be a tensor of shape (units * segments,) = ({units * segments},)")
        if not bool((rise_ms > 0).all() and (decay_ms > rise_ms).all()):
            raise ValueError("rise_ms must be > 0 and decay_ms > rise_ms for every segment")
        self.units, self.segments, self.dt_ms = units, segments, float(dt_ms)
        self.register_buffer("rise_ms", rise_ms.double())
        self.register_buffer("decay_ms", decay_ms.double())

    @classmethod
    def random(cls, units: int, segments: int, rise_ms: tuple[float, float], decay_ms: tuple[float, float],
               dt_ms: float = 1.0, generator: torch.Generator | None = None) -> "DendriticFilter":
        """Rise times uniform in ``rise_ms`` (min, max), decay times uniform in
        ``[max(decay_ms[0], 1.5 rise), decay_ms[1]]`` (so decay >= 1.5 rise; needs decay_ms[1] >= 1.5 rise_ms[1])."""
        if not 0 < rise_ms[0] <= rise_ms[1] or not decay_ms[0] <= decay_ms[1] or decay_ms[1] < 1.5 * rise_ms[1]:
            raise ValueError(f"need 0 < rise min <= rise max, decay min <= decay max and decay max >= 1.5 x rise max, "
                             f"got rise_ms={rise_ms}, decay_ms={decay_ms}")
        n = units * segments
        rise = rise_ms[0] + (rise_ms[1] - rise_ms[0]) * torch.rand(n, generator=generator, dtype=torch.float64)
        low = torch.clamp(1.5 * rise, min=decay_ms[0])
        decay = low + (decay_ms[1] - low) * torch.rand(n, generator=generator, dtype=torch.float64)
        return cls(units, segments, rise, decay, dt_ms)

    def coefficients(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(alpha_decay, alpha_rise, 1 / peak), each (units * segments,) float64."""
        a_decay, a_rise = torch.exp(-self.dt_ms / self.decay_ms), torch.exp(-self.dt_ms / self.rise_ms)
        # the continuous peak lies at (d - 1) dt = rise decay ln(decay / rise) / (decay - rise); the
        # sampled kernel is unimodal, so its largest value is at one of the two steps around it
        top = (self.rise_ms * self.decay_ms * torch.log(self.decay_ms / self.rise_ms)
               / (self.decay_ms - self.rise_ms) / self.dt_ms).floor()
        peak = torch.maximum(a_decay ** top - a_rise ** top, a_decay ** (top + 1) - a_rise ** (top + 1))
        return a_decay, a_rise, 1 / peak

    def kernel(self, steps: int) -> torch.Tensor:
        """(units * segments, steps) float64: k_d for d = 0 .. steps - 1 (``k_0 = 0``)."""
        a_decay, a_rise, gain = self.coefficients()
        j = torch.arange(steps - 1, dtype=torch.float64, device=a_decay.device)
        k = (a_decay[:, None] ** j - a_rise[:, None] ** j) * gain[:, None]
        return torch.cat([k.new_zeros(k.shape[0], 1), k], dim=1)

    def forward(self, h: torch.Tensor, backend: str = "auto") -> torch.Tensor:
        batch, steps, channels = h.shape
        if channels != self.units * self.segments:
            raise ValueError(f"h must have shape (B, T, units * segments) = (B, T, {self.units * self.segments}), "
                             f"got {tuple(h.shape)}")
        a_decay, a_rise, gain = (c.to(h.dtype) for c in self.coefficients())
        u = ops.leaky_readout(torch.cat([h, h], dim=2), torch.cat([a_decay, a_rise]), backend=backend)
        filtered = (u[..., :channels] - u[..., channels:]) * gain
        return filtered.view(batch, steps, self.units, self.segments).sum(3)

    def extra_repr(self) -> str:
        return f"units={self.units}, segments={self.segments}, dt_ms={self.dt_ms:g}"


class LIF(_Projected):
    """x (B, T, in_features) -> spikes (B, T, out_features): ``h = x @ W`` then :func:`fastsnn.lif`.

    ``spike``, ``reset``, ``surrogate``, ``fire``, ``threshold``, ``beta`` and ``detach_reset`` choose the
    member of the LIF family (defaults: the seed's neuron). ``weight_init``: the seed's ``"seed"`` or
    ``"kaiming"`` (module docstring). ``binary_input=True`` declares x to be 0/1 spikes: the projection then
    keeps x for the backward as bits instead of floats (:func:`fastsnn.spike_matmul`); x may then come as
    :class:`fastsnn.SpikeBits`, spikes already packed (unpacked where another projection needs them).
    ``dendrites`` (a :class:`DendriticFilter` of ``out_features`` units)
    makes the layer filter-and-fire: W then holds ``dendrites.segments`` columns per neuron, and their
    filtered currents, summed per neuron, drive it.

    ``max_delay`` > 0 gives each synapse (each column of W, segments included) a learnable delay in
    [0, max_delay] steps (parameter ``delay``, drawn uniformly, or with ``delay_init="centre"`` as dcls
    draws it: near max_delay // 2): the projection is then :func:`fastsnn.delayed_projection`, with
    Gaussian kernels of width ``sigma`` in training mode (set it per epoch with :func:`anneal_delays`) and
    delays rounded in eval mode.
    """

    def __init__(self, in_features: int, out_features: int, *, tau_ms: float = 5.0, dt_ms: float = 1.0,
                 threshold: float = 1.0, beta: float = 5.0, detach_reset: bool = False, spike: str = "delayed",
                 reset: str = "zero", surrogate: str = "sigmoid", fire: str = ">", learn_tau: bool = False,
                 dales_law: bool = False, ie_ratio: float = 0.5, dale_mask: str = "contiguous",
                 backend: str = "auto", binary_input: bool = False, generator: torch.Generator | None = None,
                 dendrites: DendriticFilter | None = None, max_delay: int = 0, delay_init: str = "uniform",
                 weight_init: str = "seed"):
        if dendrites is not None and dendrites.units != out_features:
            raise ValueError(f"dendrites must have out_features = {out_features} units, got {dendrites.units}")
        super().__init__(in_features, out_features, tau_ms=tau_ms, dt_ms=dt_ms, learn_tau=learn_tau,
                         dales_law=dales_law, ie_ratio=ie_ratio, dale_mask=dale_mask, backend=backend,
                         binary_input=binary_input, generator=generator,
                         segments=dendrites.segments if dendrites is not None else 1, max_delay=max_delay,
                         delay_init=delay_init, weight_init=weight_init)
        self.dendrites = dendrites
        self.options = dict(threshold=threshold, beta=beta, detach_reset=detach_reset, spike=spike, reset=reset,
                            surrogate=surrogate, fire=fire)
        neuron(**self.options)  # fail here, not at the first forward

    def project(self, x: torch.Tensor) -> torch.Tensor:
        h = super().project(x)
        return h if self.dendrites is None else self.dendrites(h, self.backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(self.project(x))

    def time_sum(self, x: torch.Tensor, weights: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """x (B, T, in_features) -> (B, out_features) = sum_t weights_t s_t (:func:`fastsnn.lif` with time weights).
        ``scale`` multiplies the input currents (the spike dropout's 1 / (1 - p), x staying 0/1)."""
        h = self.project(x)
        return self._run(h if scale == 1 else h * scale, weights)

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
    a time loop; with learnt per-neuron tau or learnable delays it runs :func:`fastsnn.leaky_readout_sum`.
    ``binary_input``, ``weight_init`` and ``max_delay`` / ``delay_init`` (learnable delays on the projection)
    as for :class:`LIF`.
    """

    def __init__(self, in_features: int, out_features: int, *, tau_ms: float = 5.0, dt_ms: float = 1.0,
                 learn_tau: bool = False, dales_law: bool = False, ie_ratio: float = 0.5,
                 dale_mask: str = "contiguous", backend: str = "auto", binary_input: bool = False,
                 generator: torch.Generator | None = None, max_delay: int = 0, delay_init: str = "uniform",
                 weight_init: str = "seed"):
        super().__init__(in_features, out_features, tau_ms=tau_ms, dt_ms=dt_ms, learn_tau=learn_tau,
                         dales_law=dales_law, ie_ratio=ie_ratio, dale_mask=dale_mask, backend=backend,
                         binary_input=binary_input, generator=generator, max_delay=max_delay,
                         delay_init=delay_init, weight_init=weight_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.leaky_readout(self.project(x), self.alpha(), backend=self.backend)

    def time_sum(self, x: torch.Tensor) -> torch.Tensor:
        weights = self._time_weights(x.shape[1], x.dtype, x.device)
        if weights is None:
            return ops.leaky_readout_sum(self.project(x), self.alpha(), backend=self.backend)
        # One decay for all outputs: sum_t u_t = sum_k c_k (x_k @ W) = (sum_k c_k x_k) @ W, so contract
        # time first, on the narrower input, and skip the (B, T, out) projection and the time loop.
        self._check_input(x)
        if isinstance(x, ops.SpikeBits):
            x = x.unpack()
        return torch.matmul(weights, x) @ self.effective_weight()  # (T,) @ (B, T, in): no copy of x, unlike einsum

    def time_weights(self, steps: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor | None:
        """The (steps,) c_k with ``time_sum(x) = (sum_k c_k x_k) @ W`` when one fixed tau allows it on a
        fast backend; None for learnt per-neuron tau, delays (no single W) and the reference backend (its plain
        loop). A new tensor each call: the one :meth:`time_sum` uses is shared by every layer of that tau."""
        weights = self._time_weights(steps, dtype, device)
        return None if weights is None else weights.clone()

    def _time_weights(self, steps: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor | None:
        alpha = self.alpha()
        if self.backend == "reference" or isinstance(alpha, torch.Tensor) or self.delay is not None:
            return None
        return _time_weights(alpha, steps, dtype, device)


# --- learnable delays ---------------------------------------------------------------------------------

# The published schedule (dcls's SNN-delays): dcls's SIG decays exponentially from max_delay / 2 to 0.23
# over the annealing epochs; the Gaussian's standard deviation is SIG + 0.27, so 0.5 steps at the end.
DELAY_SIG_END = 0.23
DCLS_SIG_FLOOR = 0.27
DELAY_INITS = ("uniform", "centre")
WEIGHT_INITS = ("seed", "kaiming")


def delay_sigma(max_delay: int, epoch: int, anneal_epochs: int, start: float | None = None,
                end: float = DELAY_SIG_END) -> float:
    """Width (steps) of the delay kernels in training epoch ``epoch`` (0-based): dcls's SIG, decaying
    exponentially from ``start`` (default ``max_delay / 2``) to ``end`` over ``anneal_epochs`` epochs, plus 0.27:
    ``start (end / start)^(min(epoch, anneal_epochs) / anneal_epochs) + 0.27``."""
    start = max_delay / 2 if start is None else start
    for name, value in (("start", start), ("end", end)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"the delay kernels' {name} width must be a finite number > 0 (steps), got {value!r}")
    return start * (end / start) ** (min(epoch, anneal_epochs) / anneal_epochs) + DCLS_SIG_FLOOR


def delay_layers(model: nn.Module) -> list[_Projected]:
    return [m for m in model.modules() if isinstance(m, _Projected) and m.delay is not None]


def anneal_delays(model: nn.Module, epoch: int, anneal_epochs: int, start: float | None = None,
                  end: float = DELAY_SIG_END) -> None:
    """Set every delay layer's kernel width for training epoch ``epoch`` (:func:`delay_sigma`; ``start``
    None: each layer's own ``max_delay / 2``)."""
    for layer in delay_layers(model):
        layer.sigma = delay_sigma(layer.max_delay, epoch, anneal_epochs, start, end)


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

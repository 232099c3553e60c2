"""Run configuration: stimulus, model and training, with the seed's defaults.

Every dataclass validates itself on construction and raises a ``ValueError``
naming the offending field. A run's full configuration round-trips through
JSON (:meth:`RunConfig.to_dict` / :meth:`RunConfig.from_dict`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from fastsnn.nn import DELAY_INITS, WEIGHT_INITS
from fastsnn.ops import RESETS, SPIKES, SURROGATES, neuron

from .schedules import SCHEDULES

BACKENDS = ("auto", "reference", "cpu", "triton")
DEVICES = ("auto", "cpu", "cuda")
NEURONS = ("lif", "alif")
READOUTS = ("sum", "mean", "max", "spiking")
LOSS_SCALES = {"sum": 0.01, "mean": 1.0, "max": 1.0, "spiking": 1.0}  # loss_scale=None, per readout
PHASE_OFFSETS = ("per_pass", "per_batch", "fixed")
PHASE_DELAYS = ("seed", "none")


def _require(ok: bool, name: str, expected: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"{name} must be {expected}, got {value!r}")


def _positive(name: str, value: float) -> None:
    _require(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0,
             name, "a finite number > 0", value)


def _count(name: str, value: int, minimum: int = 1) -> None:
    _require(isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
             name, f"an integer >= {minimum}", value)


def _non_negative(name: str, value: float) -> None:
    _require(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0,
             name, "a finite number >= 0", value)


def _bool(name: str, value: bool) -> None:
    _require(isinstance(value, bool), name, "true or false", value)  # a hand-edited "false" is a truthy string


def _choice(name: str, value: str, options: tuple[str, ...]) -> None:
    _require(value in options, name, f"one of {', '.join(options)}", value)


@dataclass(frozen=True)
class StimulusConfig:
    """The IPD stimulus: Poisson auditory-nerve fibres driven by a 20 Hz tone.

    ``phase_offset``: ``"per_pass"`` (the seed: one random phase offset for a
    whole pass over a data set, redrawn each pass), ``"per_batch"``, or ``"fixed"`` (drawn once
    per set, from the set's own random stream: every pass sees the same spikes).
    ``phase_jitter``: standard deviation (radians) of Gaussian noise added to each fibre's phase
    delay, redrawn with every phase offset, for the training and validation sets;
    ``test_phase_jitter`` the test set's (None: ``phase_jitter``).
    ``phase_delays``: ``"seed"`` (fibre i of each ear lags by ``linspace(0, pi/2, anf_per_ear)[i]``, the
    seed's bank) or ``"none"`` (every fibre of an ear in phase: a network must learn the delays itself).
    """

    anf_per_ear: int = 100
    steps: int = 100
    dt_ms: float = 1.0
    rate_max_hz: float = 600.0
    tone_hz: float = 20.0
    envelope_power: float = 2.0
    num_classes: int = 12
    phase_offset: str = "per_pass"
    phase_jitter: float = 0.0
    test_phase_jitter: float | None = None
    phase_delays: str = "seed"

    def __post_init__(self):
        _count("anf_per_ear", self.anf_per_ear)
        _count("steps", self.steps)
        _positive("dt_ms", self.dt_ms)
        _positive("rate_max_hz", self.rate_max_hz)
        _require(self.rate_max_hz * self.dt_ms * 1e-3 <= 1, "rate_max_hz",
                 f"at most 1 spike per step (<= {1e3 / self.dt_ms:g} Hz at dt_ms={self.dt_ms})", self.rate_max_hz)
        _positive("tone_hz", self.tone_hz)
        _positive("envelope_power", self.envelope_power)
        _count("num_classes", self.num_classes, 2)
        _choice("phase_offset", self.phase_offset, PHASE_OFFSETS)
        _non_negative("phase_jitter", self.phase_jitter)
        if self.test_phase_jitter is not None:
            _non_negative("test_phase_jitter", self.test_phase_jitter)
        _choice("phase_delays", self.phase_delays, PHASE_DELAYS)

    @property
    def inputs(self) -> int:
        return 2 * self.anf_per_ear

    def jitter(self, which: str) -> float:
        """The phase jitter (radians) of the ``which`` set: "train", "valid" or "test"."""
        if which == "test" and self.test_phase_jitter is not None:
            return self.test_phase_jitter
        return self.phase_jitter


@dataclass(frozen=True)
class ModelConfig:
    """The network: inputs -> LIF hidden layer -> leaky readout.

    ``readout_tau_ms=None`` uses ``tau_ms`` for the readout, as the seed does.
    ``neuron``: ``"lif"`` (the seed) or ``"alif"`` (adaptive threshold ``threshold + adapt * a``,
    ``a`` decaying with ``tau_adapt_ms``); ``spike``, ``reset`` and ``surrogate`` choose the family
    member (:func:`fastsnn.lif`; the defaults are the seed's). ``dale_mask``: ``"contiguous"`` (the seed: the first rows are inhibitory)
    or ``"random"`` (a random subset of rows of the same size).

    ``readout``: the class score from the readout membrane u, ``"sum"`` over time (the seed),
    ``"mean"`` or ``"max"`` over time, or ``"spiking"``: the output layer is the hidden layer's
    neuron (the same family member, time constant ``readout_tau_ms``) scored by its spike count.
    ``spike_dropout``: during training each hidden spike is dropped with this probability and the
    kept ones scaled by 1 / (1 - p). ``segments`` > 0 makes the hidden layer filter-and-fire: each
    unit has that many dendritic segments, each with its own input weights and a fixed random
    double-exponential filter (rise time uniform in ``[rise_ms_min, rise_ms_max]``, decay time uniform
    in ``[max(decay_ms_min, 1.5 rise), decay_ms_max]``), summed into the neuron.
    ``max_delay`` > 0 gives each synapse of the input projection a learnable delay in [0, max_delay] steps,
    ``readout_max_delay`` > 0 each synapse of the readout's projection; ``delay_init``: how the delays are
    drawn, ``"uniform"`` in the range or ``"centre"`` (dcls's: near max_delay // 2). ``weight_init``: the
    seed's U(+-1/sqrt(out)) or ``"kaiming"``, U(+-sqrt(6/in)) (:mod:`fastsnn.nn`; the DCLS notebook's).
    """

    hidden: int = 30
    tau_ms: float = 5.0
    readout_tau_ms: float | None = None
    threshold: float = 1.0
    beta: float = 5.0
    detach_reset: bool = False
    neuron: str = "lif"
    spike: str = "delayed"
    reset: str = "zero"
    surrogate: str = "sigmoid"
    tau_adapt_ms: float = 100.0
    adapt: float = 1.0
    learn_tau: bool = False
    dales_law: bool = False
    ie_ratio: float = 0.5
    dale_mask: str = "contiguous"
    backend: str = "auto"
    readout: str = "sum"
    spike_dropout: float = 0.0
    segments: int = 0
    rise_ms_min: float = 0.5
    rise_ms_max: float = 2.0
    decay_ms_min: float = 3.0
    decay_ms_max: float = 8.0
    max_delay: int = 0  # learnable synaptic delays on the input projection, in [0, max_delay] steps; 0: none
    readout_max_delay: int = 0  # the same on the readout's projection
    delay_init: str = "uniform"
    weight_init: str = "seed"

    def __post_init__(self):
        _count("max_delay", self.max_delay, 0)
        _count("readout_max_delay", self.readout_max_delay, 0)
        _choice("delay_init", self.delay_init, DELAY_INITS)
        _choice("weight_init", self.weight_init, WEIGHT_INITS)
        _count("hidden", self.hidden)
        for name in ("detach_reset", "learn_tau", "dales_law"):
            _bool(name, getattr(self, name))
        _positive("tau_ms", self.tau_ms)
        if self.readout_tau_ms is not None:
            _positive("readout_tau_ms", self.readout_tau_ms)
        _positive("threshold", self.threshold)
        _positive("beta", self.beta)
        _choice("neuron", self.neuron, NEURONS)
        _choice("spike", self.spike, SPIKES)
        _choice("reset", self.reset, RESETS)
        _choice("surrogate", self.surrogate, SURROGATES)
        _positive("tau_adapt_ms", self.tau_adapt_ms)
        _require(isinstance(self.adapt, (int, float)) and not isinstance(self.adapt, bool) and math.isfinite(self.adapt)
                 and self.adapt >= 0, "adapt", "a finite number >= 0", self.adapt)
        try:  # the rules the library holds for a member of the LIF family (e.g. which resets go with which spike)
            neuron(spike=self.spike, reset=self.reset, surrogate=self.surrogate, fire=">", detach_reset=self.detach_reset,
                   threshold=self.threshold, beta=self.beta, adapt=self.adapt)
        except TypeError as err:
            raise ValueError(str(err)) from None
        _require(isinstance(self.ie_ratio, (int, float)) and 0 <= self.ie_ratio <= 1,
                 "ie_ratio", "a number in [0, 1]", self.ie_ratio)
        _choice("dale_mask", self.dale_mask, ("contiguous", "random"))
        _choice("backend", self.backend, BACKENDS)
        _choice("readout", self.readout, READOUTS)
        _require(isinstance(self.spike_dropout, (int, float)) and not isinstance(self.spike_dropout, bool)
                 and 0 <= self.spike_dropout < 1, "spike_dropout", "a probability in [0, 1)", self.spike_dropout)
        _count("segments", self.segments, 0)
        for name in ("rise_ms_min", "rise_ms_max", "decay_ms_min", "decay_ms_max"):
            _positive(name, getattr(self, name))
        _require(self.rise_ms_min <= self.rise_ms_max, "rise_ms_max", f"at least rise_ms_min ({self.rise_ms_min:g})",
                 self.rise_ms_max)
        _require(self.decay_ms_min <= self.decay_ms_max, "decay_ms_max",
                 f"at least decay_ms_min ({self.decay_ms_min:g})", self.decay_ms_max)
        _require(self.decay_ms_max >= 1.5 * self.rise_ms_max, "decay_ms_max",
                 f"at least 1.5 x rise_ms_max ({1.5 * self.rise_ms_max:g}): every segment's decay is >= 1.5 x its rise",
                 self.decay_ms_max)


@dataclass(frozen=True)
class TrainConfig:
    """Training and evaluation: Adam on NLL(log_softmax(loss_scale * scores)), the scores being the
    readout's (the seed: sum_t u_t).

    ``loss_scale=None``: :data:`LOSS_SCALES` of the readout, 0.01 for the time sum (the seed's; over
    its 100 steps, 0.01 x sum is the mean) and 1 for the others. Early stopping (the seed's rule): after epoch index ``min_epochs``, stop when
    the oldest of the last ``patience`` validation losses is the lowest.
    ``restore_best=False`` keeps the final weights, as the seed's code does. ``validation=False``:
    no validation set, no early stopping, the weights after ``epochs`` epochs.
    ``rate_weight`` > 0 adds the firing-rate penalty ``rate_weight * mean_n max(0, r_n - rate_target_hz)^2``
    (r_n: hidden unit n's rate over the batch, Hz) to the training loss.
    ``lr_schedule`` / ``delay_lr_schedule``: how the weights' / the delays' learning rate moves over ``epochs``
    (:func:`fastsnn.experiment.schedules.scheduled`), ``lr`` / ``delay_lr`` being its start (cosine) or peak
    (one_cycle). The delay kernels' width (dcls's SIG) goes from ``sigma_start`` (None: max_delay / 2) to
    ``sigma_end`` over ``sigma_anneal_epochs`` epochs.
    """

    epochs: int = 150
    lr: float = 0.005
    batch_size: int = 64
    train_samples: int = 4096
    valid_samples: int = 4096
    test_samples: int = 2048
    loss_scale: float | None = None
    patience: int = 10
    min_epochs: int = 10
    restore_best: bool = True
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    validation: bool = True
    rate_target_hz: float = 0.0
    rate_weight: float = 0.0
    delay_lr: float = 0.1  # Adam learning rate of the synaptic delays (steps), with max_delay > 0
    sigma_anneal_epochs: int = 20  # epochs over which the delay kernels narrow to their final width
    lr_schedule: str = "constant"
    delay_lr_schedule: str = "constant"
    sigma_start: float | None = None
    sigma_end: float = 0.23

    def __post_init__(self):
        _positive("delay_lr", self.delay_lr)
        _count("sigma_anneal_epochs", self.sigma_anneal_epochs)
        _choice("lr_schedule", self.lr_schedule, SCHEDULES)
        _choice("delay_lr_schedule", self.delay_lr_schedule, SCHEDULES)
        if self.sigma_start is not None:
            _positive("sigma_start", self.sigma_start)
        _positive("sigma_end", self.sigma_end)
        _count("epochs", self.epochs)
        _positive("lr", self.lr)
        _count("batch_size", self.batch_size)
        for name in ("train_samples", "valid_samples", "test_samples"):
            _count(name, getattr(self, name))
            _require(self.batch_size <= getattr(self, name), "batch_size",
                     f"at most {name} ({getattr(self, name)})", self.batch_size)
        if self.loss_scale is not None:
            _positive("loss_scale", self.loss_scale)
        _count("patience", self.patience)
        _count("min_epochs", self.min_epochs, 0)
        _require(isinstance(self.seed, int) and not isinstance(self.seed, bool) and 0 <= self.seed < 2**64,
                 "seed", "an integer in [0, 2**64)", self.seed)
        _choice("device", self.device, DEVICES)
        if self.threads is not None:
            _count("threads", self.threads)
        _bool("restore_best", self.restore_best)
        _bool("validation", self.validation)
        _non_negative("rate_target_hz", self.rate_target_hz)
        _non_negative("rate_weight", self.rate_weight)


@dataclass(frozen=True)
class RunConfig:
    stimulus: StimulusConfig = field(default_factory=StimulusConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def loss_scale(self) -> float:
        """The loss scale the run applies: ``train.loss_scale``, or where None its readout's :data:`LOSS_SCALES`."""
        return self.train.loss_scale if self.train.loss_scale is not None else LOSS_SCALES[self.model.readout]

    def to_dict(self) -> dict:
        return asdict(self)

    def changes(self) -> dict:
        """The fields that differ from the seed's defaults, {name: value} (the sections flattened)."""
        defaults = RunConfig().to_dict()
        return {key: value for part, section in self.to_dict().items() for key, value in section.items()
                if value != defaults[part][key]}

    @classmethod
    def from_dict(cls, data: dict) -> "RunConfig":
        parts = {"stimulus": StimulusConfig, "model": ModelConfig, "train": TrainConfig}
        unknown = set(data) - set(parts)
        if unknown:
            raise ValueError(f"unknown config sections {sorted(unknown)}; expected {sorted(parts)}")
        built = {}
        for key, kind in parts.items():
            section = dict(data.get(key, {}))
            names = {f.name for f in fields(kind)}
            extra = set(section) - names
            if extra:
                raise ValueError(f"unknown {key} fields {sorted(extra)}; expected some of {sorted(names)}")
            built[key] = kind(**section)
        return cls(**built)

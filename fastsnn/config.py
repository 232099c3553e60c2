"""Run configuration: stimulus, model and training, with the seed's defaults.

Every dataclass validates itself on construction and raises a ``ValueError``
naming the offending field. A run's full configuration round-trips through
JSON (:meth:`RunConfig.to_dict` / :meth:`RunConfig.from_dict`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .ops.lif.neuron import RESETS, SPIKES, SURROGATES

BACKENDS = ("auto", "reference", "cpu", "triton")
DEVICES = ("auto", "cpu", "cuda")
NEURONS = ("lif", "alif")


def _require(ok: bool, name: str, expected: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"{name} must be {expected}, got {value!r}")


def _positive(name: str, value: float) -> None:
    _require(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0,
             name, "a finite number > 0", value)


def _count(name: str, value: int, minimum: int = 1) -> None:
    _require(isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
             name, f"an integer >= {minimum}", value)


def _choice(name: str, value: str, options: tuple[str, ...]) -> None:
    _require(value in options, name, f"one of {', '.join(options)}", value)


@dataclass(frozen=True)
class StimulusConfig:
    """The IPD stimulus: Poisson auditory-nerve fibres driven by a 20 Hz tone.

    ``phase_offset``: ``"per_pass"`` (the seed: one random phase offset for a
    whole pass over a data set, redrawn each pass) or ``"per_batch"``.
    """

    anf_per_ear: int = 100
    steps: int = 100
    dt_ms: float = 1.0
    rate_max_hz: float = 600.0
    tone_hz: float = 20.0
    envelope_power: float = 2.0
    num_classes: int = 12
    phase_offset: str = "per_pass"

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
        _choice("phase_offset", self.phase_offset, ("per_pass", "per_batch"))

    @property
    def inputs(self) -> int:
        return 2 * self.anf_per_ear


@dataclass(frozen=True)
class ModelConfig:
    """The network: inputs -> LIF hidden layer -> leaky readout.

    ``readout_tau_ms=None`` uses ``tau_ms`` for the readout, as the seed does.
    ``neuron``: ``"lif"`` (the seed) or ``"alif"`` (adaptive threshold ``threshold + adapt * a``,
    ``a`` decaying with ``tau_adapt_ms``); ``spike``, ``reset`` and ``surrogate`` choose the family
    member (:func:`fastsnn.lif`; the defaults are the seed's). ``dale_mask``: ``"contiguous"`` (the seed: the first rows are inhibitory)
    or ``"random"`` (a random subset of rows of the same size).
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
    max_delay: int = 0  # learnable synaptic delays on the input projection, in [0, max_delay] steps; 0: none

    def __post_init__(self):
        _count("max_delay", self.max_delay, 0)
        _count("hidden", self.hidden)
        _positive("tau_ms", self.tau_ms)
        if self.readout_tau_ms is not None:
            _positive("readout_tau_ms", self.readout_tau_ms)
        _positive("threshold", self.threshold)
        _positive("beta", self.beta)
        _choice("neuron", self.neuron, NEURONS)
        _choice("spike", self.spike, SPIKES)
        _choice("reset", self.reset, RESETS)
        _require(self.reset != "subtract_next" or self.spike == "same_step", "reset",
                 "zero or subtract with spike=delayed (subtract_next needs spike=same_step)", self.reset)
        _choice("surrogate", self.surrogate, SURROGATES)
        _positive("tau_adapt_ms", self.tau_adapt_ms)
        _require(isinstance(self.adapt, (int, float)) and not isinstance(self.adapt, bool) and math.isfinite(self.adapt)
                 and self.adapt >= 0, "adapt", "a finite number >= 0", self.adapt)
        _require(isinstance(self.ie_ratio, (int, float)) and 0 <= self.ie_ratio <= 1,
                 "ie_ratio", "a number in [0, 1]", self.ie_ratio)
        _choice("dale_mask", self.dale_mask, ("contiguous", "random"))
        _choice("backend", self.backend, BACKENDS)


@dataclass(frozen=True)
class TrainConfig:
    """Training and evaluation: Adam on NLL(log_softmax(loss_scale * sum_t u_t)).

    Early stopping (the seed's rule): after epoch index ``min_epochs``, stop when
    the oldest of the last ``patience`` validation losses is the lowest.
    ``restore_best=False`` keeps the final weights, as the seed's code does.
    """

    epochs: int = 150
    lr: float = 0.005
    batch_size: int = 64
    train_samples: int = 4096
    valid_samples: int = 4096
    test_samples: int = 2048
    loss_scale: float = 0.01
    patience: int = 10
    min_epochs: int = 10
    restore_best: bool = True
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    delay_lr: float = 0.1  # Adam learning rate of the synaptic delays (steps), with max_delay > 0
    sigma_anneal_epochs: int = 20  # epochs over which the delay kernels narrow to their final width

    def __post_init__(self):
        _positive("delay_lr", self.delay_lr)
        _count("sigma_anneal_epochs", self.sigma_anneal_epochs)
        _count("epochs", self.epochs)
        _positive("lr", self.lr)
        _count("batch_size", self.batch_size)
        for name in ("train_samples", "valid_samples", "test_samples"):
            _count(name, getattr(self, name))
            _require(self.batch_size <= getattr(self, name), "batch_size",
                     f"at most {name} ({getattr(self, name)})", self.batch_size)
        _positive("loss_scale", self.loss_scale)
        _count("patience", self.patience)
        _count("min_epochs", self.min_epochs, 0)
        _require(isinstance(self.seed, int) and not isinstance(self.seed, bool) and 0 <= self.seed < 2**64,
                 "seed", "an integer in [0, 2**64)", self.seed)
        _choice("device", self.device, DEVICES)
        if self.threads is not None:
            _count("threads", self.threads)


@dataclass(frozen=True)
class RunConfig:
    stimulus: StimulusConfig = field(default_factory=StimulusConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return asdict(self)

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

"""The seed's interaural-phase-difference (IPD) stimulus, vectorised in torch.

A sample is a true IPD in (-pi/2, pi/2) and a (T, 2 * anf_per_ear) array of
Poisson spikes. Fibre i of ear 0 follows the tone with phase delay
``d_i = linspace(0, pi/2, anf_per_ear)[i]`` (``d_i = 0`` with ``phase_delays="none"``); ear 1 adds the IPD:

    theta = 2 pi (tone_hz * t * dt + offset) + d_i (+ ipd for ear 1)
    spike = u < rate_max * dt * (0.5 * (1 + sin theta)) ** envelope_power

The uniform noise ``u`` is frozen per sample (the seed draws it once per set),
while the phase ``offset ~ U(0, 1)`` is redrawn for every pass over the set
(or every batch, or drawn once for the set: ``phase_offset="fixed"``). With a phase
jitter sigma, each fibre's delay also gets ``N(0, sigma^2)`` noise, drawn with each offset. Instead of holding ``samples x T x inputs`` floats, ``u`` is
regenerated on demand from a counter-based hash: ``u = fmix32(key_s ^ c_ti)``
with a 32-bit key per sample and a fixed per-(t, i) table, so a set costs 4
bytes per sample and any batch is regenerated on the run's device; the noise is
the same integers on every device.

A batch's spikes come as :class:`fastsnn.SpikeBits`, the bits the network's first
projection takes. The torch operations of :meth:`IPDDataset.spike_probability` and
:meth:`IPDDataset.spikes_torch` define them (the ``"reference"`` backend); the
``"cpu"`` (numba, :mod:`.stimulus_cpu`) and ``"triton"`` (:mod:`.stimulus_triton`)
kernels compute the same bits in one pass from the angles, for envelope powers 1, 2
and 3 (which torch computes by multiplication; other powers take torch's
probabilities), with the same float32 operations in the same order and the sine
torch computes on that device. Every implementation is checked bit for bit against
the committed spikes of ``tests/stimulus-digests.json``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import torch

from fastsnn import SpikeBits
from fastsnn.cpu import torch_sin
from fastsnn.ops import resolve_backend

from .config import StimulusConfig

_MIX1, _MIX2 = -2048144789, -1028477387  # murmur3's 0x85ebca6b, 0xc2b2ae35 as int32
_TABLE_SALT = 0x5EED
FUSED_POWERS = (1.0, 2.0, 3.0)  # envelope powers the kernels compute from the angles


def _shr(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int32 (torch's is arithmetic). Function calls, not ``>>``:
    on the CPU the operator takes a path ~30x slower than ``bitwise_right_shift``."""
    return torch.bitwise_and(torch.bitwise_right_shift(x, bits), (1 << (32 - bits)) - 1)


def fmix32(x: torch.Tensor, final_shift: bool = True) -> torch.Tensor:
    """murmur3's 32-bit finaliser on an int32 tensor (wrapping multiply, logical shifts).

    ``final_shift=False`` skips the last xor-shift, which only mixes the high bits
    into the low 16: enough when only the top bits of the result are used.
    """
    x = torch.bitwise_xor(x, _shr(x, 16)).mul_(_MIX1)
    x.bitwise_xor_(_shr(x, 13)).mul_(_MIX2)
    return x.bitwise_xor_(_shr(x, 16)) if final_shift else x


def discretise(ipd: torch.Tensor, num_classes: int = 12) -> torch.Tensor:
    """IPD in radians, in [-pi/2, pi/2) -> class index floor((ipd + pi/2) * num_classes / pi)."""
    ipd = torch.as_tensor(ipd, dtype=torch.float64)
    if ipd.numel() and not bool(((ipd >= -math.pi / 2) & (ipd < math.pi / 2)).all()):
        raise ValueError(f"ipd must lie in [-pi/2, pi/2), got values in [{ipd.min():.6g}, {ipd.max():.6g}]")
    return ((ipd + math.pi / 2) * num_classes / math.pi).floor().long()


def class_midpoints(labels: torch.Tensor, num_classes: int = 12) -> torch.Tensor:
    """Class index -> the IPD (radians) at the middle of its bin."""
    return (labels.double() + 0.5) / num_classes * math.pi - math.pi / 2


@dataclass
class Batch:
    x: SpikeBits  # (B, T, inputs) spikes as bits, on the data set's device (``x.unpack()``: float32 0/1)
    labels: torch.Tensor  # (B,) int64 class indices, same device
    ipd: torch.Tensor  # (B,) float64 true IPD in radians, on the CPU


class IPDDataset:
    """A set of IPD samples with frozen per-sample noise, generated batch by batch.

    ipd: (S,) true IPDs in radians; keys: (S,) int32 noise keys. ``phase_jitter``: standard deviation
    (radians) of the Gaussian noise on each fibre's phase delay, drawn with each phase offset.
    ``phase``: the set's one (offset, jitter) for ``config.phase_offset == "fixed"``
    (:meth:`random` draws it; jitter is an (inputs,) tensor or None). ``backend``: what computes the
    spikes, as for the library's ops: ``"auto"`` (``"cpu"`` on the CPU, ``"triton"`` on CUDA),
    ``"cpu"``, ``"triton"`` or ``"reference"`` (torch, also what ``"auto"`` becomes on a device without
    kernels); all give the same bits.
    """

    def __init__(self, ipd: torch.Tensor, keys: torch.Tensor, config: StimulusConfig, device: torch.device | str = "cpu",
                 phase_jitter: float = 0.0, phase: tuple[float, torch.Tensor | None] | None = None,
                 backend: str = "auto"):
        try:
            self.backend = resolve_backend(backend, torch.device(device))
        except (RuntimeError, ValueError):  # no kernel for this device (no triton, not CPU or CUDA): torch's
            if backend != "auto":
                raise
            self.backend = "reference"
        if ipd.ndim != 1 or keys.shape != ipd.shape:
            raise ValueError(f"ipd and keys must both have shape (S,), got {tuple(ipd.shape)} and {tuple(keys.shape)}")
        if not (math.isfinite(phase_jitter) and phase_jitter >= 0):
            raise ValueError(f"phase_jitter must be a finite number >= 0, got {phase_jitter!r}")
        self.config = config
        self.device = torch.device(device)
        self.phase_jitter = float(phase_jitter)
        self.phase = None if phase is None else (phase[0], None if phase[1] is None else phase[1].to(self.device))
        self.ipd = ipd.detach().to("cpu", torch.float64)
        self.labels = discretise(self.ipd, config.num_classes).to(self.device)
        self._ipd = self.ipd.to(self.device, torch.float32)
        self._keys = keys.to(self.device, torch.int32)
        c = config
        t = torch.arange(c.steps, device=self.device, dtype=torch.float64)
        self._tone_phase = (2 * math.pi * c.tone_hz * c.dt_ms * 1e-3 * t).float()  # (T,)
        self._delays = torch.linspace(0, math.pi / 2 if c.phase_delays == "seed" else 0, c.anf_per_ear,
                                      device=self.device, dtype=torch.float64).float()
        cells = torch.arange(c.steps * c.inputs, device=self.device, dtype=torch.int32).view(c.steps, c.inputs)
        self._table = fmix32(fmix32(torch.bitwise_xor(cells, _TABLE_SALT)))  # (T, inputs) int32
        self._steps = None  # the last phase's tables for the CPU kernel (_cpu_steps)

    @classmethod
    def random(cls, n: int, config: StimulusConfig, generator: torch.Generator, device="cpu",
               phase_jitter: float = 0.0, backend: str = "auto") -> "IPDDataset":
        """``n`` samples with IPDs uniform in (-pi/2, pi/2), reproducible from ``generator`` (a CPU generator),
        which also draws the set's phase when it is fixed."""
        ipd = torch.rand(n, generator=generator, dtype=torch.float64) * math.pi - math.pi / 2
        data = cls(ipd, cls.draw_keys(n, generator), config, device, phase_jitter, backend=backend)
        if config.phase_offset == "fixed":
            data.phase = data.draw_phase(generator)
        return data

    @staticmethod
    def draw_keys(n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(-(2**31), 2**31, (n,), generator=generator, dtype=torch.int64).to(torch.int32)

    def __len__(self) -> int:
        return self.ipd.shape[0]

    def draw_phase(self, generator: torch.Generator) -> tuple[float, torch.Tensor | None]:
        """One phase offset ~ U(0, 1) and, with a phase jitter, the (inputs,) delay noise ~ N(0, sigma^2)."""
        offset = torch.rand((), generator=generator, dtype=torch.float64).item()
        if self.phase_jitter == 0:
            return offset, None
        noise = torch.randn(self.config.inputs, generator=generator, dtype=torch.float64) * self.phase_jitter
        return offset, noise.float().to(self.device)

    def angles(self, offset: float, jitter: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(phase (T,), delays (2, A)) float32: fibre i of ear e is at angle ``phase_t + delays[e, i]``
        (plus the sample's IPD for ear 1) at step t; ``jitter`` (inputs,) radians moves the delays (ear
        0's fibres, then ear 1's)."""
        c = self.config
        if jitter is not None and jitter.shape != (c.inputs,):
            raise ValueError(f"jitter must have shape (inputs,) = ({c.inputs},), got {tuple(jitter.shape)}")
        phase = self._tone_phase + 2 * math.pi * offset
        delays = self._delays.expand(2, -1) if jitter is None else self._delays + jitter.view(2, c.anf_per_ear)
        return phase, delays

    def spike_probability(self, index: torch.Tensor, offset: float, jitter: torch.Tensor | None = None) -> torch.Tensor:
        """(n, T, inputs) float32 probability of a spike per step for the samples ``index``, at the
        :meth:`angles` of ``offset`` and ``jitter``: the definition, in torch operations."""
        phase, delays = self.angles(offset, jitter)
        left, right = phase[:, None] + delays[:, None, :]  # (T, A) each: the same for every sample
        scale, power = self.config.rate_max_hz * self.config.dt_ms * 1e-3, self.config.envelope_power
        p_left = scale * (0.5 * (1 + torch.sin(left))) ** power
        p_right = scale * (0.5 * (1 + torch.sin(right + self._ipd[index, None, None]))) ** power
        return torch.cat([p_left.expand(len(index), -1, -1), p_right], dim=2)

    def spikes(self, index: torch.Tensor, offset: float, jitter: torch.Tensor | None = None) -> torch.Tensor:
        """(n, T, inputs) float32 0/1 spikes of the samples ``index`` (a (n,) tensor) at phase ``offset``,
        with the fibres' delays moved by ``jitter`` ((inputs,) radians, or None): :meth:`spike_bits` unpacked."""
        return self.spike_bits(index, offset, jitter).unpack()

    def spike_bits(self, index: torch.Tensor, offset: float, jitter: torch.Tensor | None = None) -> SpikeBits:
        """The spikes of :meth:`spikes` as bits, computed by the set's backend."""
        c = self.config
        index = index.to(self.device)
        shape, keys = (len(index), c.steps, c.inputs), self._keys[index]
        fused = c.envelope_power in FUSED_POWERS and (self.backend == "triton" or
                                                     (self.backend == "cpu" and torch_sin.available()))
        if fused:
            scale, power = c.rate_max_hz * c.dt_ms * 1e-3, int(c.envelope_power)
            if self.backend == "cpu":
                from .stimulus_cpu import stimulus_bits

                phase, delays, steps = self._cpu_steps(offset, jitter, scale, power)
                bits, counts = stimulus_bits(keys, self._ipd[index], steps, phase, delays, scale, power)
                return SpikeBits(bits, shape, counts)
            from .stimulus_triton import stimulus_bits

            phase, delays = self.angles(offset, jitter)
            return SpikeBits(stimulus_bits(keys, self._ipd[index], self._table, phase, delays, scale, power), shape)
        prob = self.spike_probability(index, offset, jitter)
        if self.backend == "cpu":
            from .stimulus_cpu import poisson_bits

            bits, counts = poisson_bits(keys, self._table, prob)
            return SpikeBits(bits, shape, counts)
        return SpikeBits.pack(self.spikes_torch(index, prob))

    def _cpu_steps(self, offset: float, jitter: torch.Tensor | None, scale: float, power: int):
        """(phase, delays, :func:`.stimulus_cpu.step_tables`) at ``offset`` and ``jitter``: computed for the first
        batch drawn there and kept for the next ones (a pass draws its batches at one phase)."""
        key = (offset, None if jitter is None else jitter.numpy().tobytes())
        if self._steps is None or self._steps[0] != key:
            from .stimulus_cpu import step_tables

            phase, delays = self.angles(offset, jitter)
            self._steps = key, (phase, delays, step_tables(self._table, phase, delays, scale, power))
        return self._steps[1]

    def spikes_torch(self, index: torch.Tensor, prob: torch.Tensor) -> torch.Tensor:
        """(n, T, inputs) float32 0/1 spikes of the samples ``index`` with probabilities ``prob``, in torch
        operations (any device): with :meth:`spike_probability`, the definition the kernels equal."""
        bits = fmix32(torch.bitwise_xor(self._keys[index, None, None], self._table), final_shift=False)
        u24 = _shr(bits, 8)  # the top 24 bits: u = u24 / 2^24 is uniform in [0, 1)
        return (u24 < prob * 2.0**24).float()

    def batches(self, batch_size: int, generator: torch.Generator, shuffle: bool = True) -> Iterator[Batch]:
        """One pass over the set in batches (the last one may be smaller), drawing the phase offset(s) and
        jitter from ``generator`` (a fixed set uses its own phase)."""
        order = torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
        if self.config.phase_offset == "fixed":
            if self.phase is None:
                raise ValueError("a set with phase_offset='fixed' needs its phase: build it with IPDDataset.random "
                                 "or pass phase=(offset, jitter)")
            offset, jitter = self.phase
        else:
            offset, jitter = self.draw_phase(generator)
        for start in range(0, len(self), batch_size):
            if self.config.phase_offset == "per_batch" and start > 0:
                offset, jitter = self.draw_phase(generator)
            index = order[start:start + batch_size]
            dev_index = index.to(self.device)
            yield Batch(self.spike_bits(dev_index, offset, jitter), self.labels[dev_index], self.ipd[index])

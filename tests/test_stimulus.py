"""The IPD stimulus: statistics, ear timing, frozen noise, phase offsets, labels."""

import math

import numpy as np
import pytest
import torch
from numba import njit

from fastsnn import SpikeBits
from fastsnn.cpu import torch_sin
from fastsnn.cpu import fma
from fastsnn.cpu.torch_sin import vsin
from fastsnn.experiment import stimulus_cpu
from fastsnn.experiment.config import StimulusConfig
from fastsnn.experiment.stimulus import IPDDataset, class_midpoints, discretise
from fastsnn.experiment.stimulus_cpu import left_ear, margin, step_tables, stimulus_bits_kernel, threshold


def dataset(n=64, seed=0, **config):
    return IPDDataset.random(n, StimulusConfig(**config), torch.Generator().manual_seed(seed))


def constant_dataset(n, ipd, key=7, **config):
    """n copies of one sample (same IPD, same noise key): their spikes differ only by the phase offset."""
    return IPDDataset(torch.full((n,), ipd, dtype=torch.float64), torch.full((n,), key, dtype=torch.int32),
                      StimulusConfig(**config))


def test_mean_spike_probability_is_the_seeds():
    # E[0.6 * (0.5 (1 + sin))^2] over a uniform phase = 0.6 * 3/8 = 0.225
    data = dataset(512)
    x = data.spikes(torch.arange(512), offset=0.3)
    assert set(x.unique().tolist()) == {0.0, 1.0}
    n = x.numel()
    assert abs(x.mean().item() - 0.225) < 4 * math.sqrt(0.225 * 0.775 / n) + 2e-3  # + the phase-sampling bias


@pytest.mark.parametrize("ipd_deg", [-60.0, 0.0, 37.5])
@pytest.mark.parametrize("phase_delays,tone_hz,dt_ms,rate_max_hz", [
    ("seed", 20.0, 1.0, 600.0),  # the seed's
    ("none", 20.0, 1.0, 600.0),  # every fibre of an ear in phase (the DCLS notebook's)
    ("seed", 250.0, 0.1, 500.0),  # the 250 Hz notebook's tone and step (another peak rate)
])
def test_each_cell_fires_at_the_formula_rate(ipd_deg, phase_delays, tone_hz, dt_ms, rate_max_hz):
    ipd = math.radians(ipd_deg)
    config = StimulusConfig(anf_per_ear=8, steps=50, phase_delays=phase_delays, tone_hz=tone_hz, dt_ms=dt_ms,
                            rate_max_hz=rate_max_hz)
    n = 4000
    data = IPDDataset(torch.full((n,), ipd, dtype=torch.float64),
                      IPDDataset.draw_keys(n, torch.Generator().manual_seed(1)), config)
    offset = 0.17
    rate = data.spikes(torch.arange(n), offset).mean(0)  # (T, 16)
    t = torch.arange(config.steps, dtype=torch.float64)[:, None] * dt_ms * 1e-3
    d = torch.linspace(0, math.pi / 2 if phase_delays == "seed" else 0.0, 8, dtype=torch.float64)[None, :]
    phi = 2 * math.pi * (tone_hz * t + offset)
    peak = rate_max_hz * dt_ms * 1e-3
    expected = torch.cat([peak * (0.5 * (1 + torch.sin(phi + d))) ** 2,
                          peak * (0.5 * (1 + torch.sin(phi + d + ipd))) ** 2], dim=1)
    sigma = (expected * (1 - expected) / n).sqrt().clamp_min(1e-3)
    assert ((rate.double() - expected).abs() / sigma).max() < 5.5


@pytest.mark.parametrize("ipd_deg", [-75.0, -20.0, 45.0])
def test_ear_one_leads_by_the_ipd(ipd_deg):
    # the 20 Hz component of each ear's population rate: ear 1's phase is ear 0's + IPD
    config = StimulusConfig(steps=100)
    n = 256
    data = IPDDataset(torch.full((n,), math.radians(ipd_deg), dtype=torch.float64),
                      IPDDataset.draw_keys(n, torch.Generator().manual_seed(2)), config)
    x = data.spikes(torch.arange(n), offset=0.0).double().mean(0)  # (T, inputs)
    t = torch.arange(100, dtype=torch.float64) * 1e-3
    carrier = torch.exp(-1j * 2 * math.pi * 20 * t)

    def phase(ear):
        return torch.angle((ear.sum(1) * carrier).sum()).item()

    lead = math.degrees(phase(x[:, 100:]) - phase(x[:, :100]))
    lead = (lead + 180) % 360 - 180
    assert abs(lead - ipd_deg) < 5


def test_noise_is_frozen_per_sample_and_reproducible():
    a, b = dataset(32, seed=3), dataset(32, seed=3)
    idx = torch.tensor([5, 0, 31])
    assert torch.equal(a.spikes(idx, 0.25), b.spikes(idx, 0.25))
    assert torch.equal(a.spikes(idx, 0.25)[0], a.spikes(torch.tensor([5]), 0.25)[0])  # independent of the batch
    assert not torch.equal(a.spikes(idx, 0.25), a.spikes(idx, 0.75))  # the phase offset moves the spikes
    assert not torch.equal(a.spikes(idx, 0.25), dataset(32, seed=4).spikes(idx, 0.25))


def test_samples_have_independent_noise():
    # two samples with the same IPD but different keys: spikes agree only at chance level
    data = IPDDataset(torch.zeros(2, dtype=torch.float64), torch.tensor([1, 2], dtype=torch.int32), StimulusConfig())
    x = data.spikes(torch.arange(2), 0.0)
    p = data.spike_probability(torch.arange(1), 0.0)[0].double()
    expected_both = (p * p).sum().item()
    both = (x[0] * x[1]).sum().item()
    assert abs(both - expected_both) < 5 * math.sqrt(expected_both)


def test_set_holds_no_per_step_arrays():
    data = dataset(4096, anf_per_ear=1000)
    per_sample = [t for t in vars(data).values() if isinstance(t, torch.Tensor) and t.shape[:1] == (4096,)]
    assert per_sample and all(t.ndim == 1 for t in per_sample)
    assert sum(t.numel() * t.element_size() for t in vars(data).values() if isinstance(t, torch.Tensor)) < 2e6


@pytest.mark.parametrize("mode", ["per_pass", "per_batch"])
def test_phase_offset_per_pass_or_per_batch(mode):
    data = constant_dataset(64, 0.3, phase_offset=mode)
    batches = list(data.batches(16, torch.Generator().manual_seed(0), shuffle=False))
    assert len(batches) == 4
    same = [torch.equal(batches[0].x.unpack()[0], b.x.unpack()[0]) for b in batches[1:]]
    assert all(same) if mode == "per_pass" else not any(same)
    next_pass = next(data.batches(16, torch.Generator().manual_seed(1)))
    assert not torch.equal(batches[0].x.unpack()[0], next_pass.x.unpack()[0])  # a new pass draws a new offset


def test_batches_cover_every_sample_once_with_a_short_last_batch():
    data = dataset(70)
    batches = list(data.batches(32, torch.Generator().manual_seed(0)))
    assert [len(b.labels) for b in batches] == [32, 32, 6]
    ipds = torch.cat([b.ipd for b in batches])
    assert torch.equal(ipds.sort().values, data.ipd.sort().values)
    for b in batches:
        assert torch.equal(b.labels, discretise(b.ipd))
        assert b.x.shape == (len(b.labels), 100, 200) and b.x.dtype == torch.float32


def test_discretise_bins_and_midpoints():
    edges = torch.tensor([-math.pi / 2, -math.pi / 2 + 1e-9, math.radians(-75) + 1e-9, -1e-12, 0.0,
                          math.radians(89.999)], dtype=torch.float64)
    assert discretise(edges).tolist() == [0, 0, 1, 5, 6, 11]
    mids = torch.rad2deg(class_midpoints(torch.arange(12)))
    assert torch.allclose(mids, torch.arange(12, dtype=torch.float64) * 15 - 82.5)
    assert torch.equal(discretise(class_midpoints(torch.arange(12))), torch.arange(12))
    assert discretise(torch.tensor([0.1]), num_classes=4).item() == 2


@pytest.mark.parametrize("bad", [math.pi / 2, -2.0, float("nan")])
def test_discretise_rejects_out_of_range(bad):
    with pytest.raises(ValueError, match="ipd must lie"):
        discretise(torch.tensor([0.0, bad]))


def test_random_ipds_are_uniform_in_range():
    data = dataset(20000)
    assert data.ipd.min() >= -math.pi / 2 and data.ipd.max() < math.pi / 2
    counts = torch.bincount(data.labels, minlength=12).double()
    assert (counts - 20000 / 12).abs().max() < 5 * math.sqrt(20000 / 12)


# --- the kernels against the torch definition ----------------------------------------------------------------

def reference_bits(data, index, offset, jitter=None):
    """The spikes of the torch operations (spike_probability, spikes_torch), packed."""
    return SpikeBits.pack(data.spikes_torch(index, data.spike_probability(index, offset, jitter)))


@njit
def _vsin(x, out):
    vsin(x, out, 0, len(x))


@pytest.mark.skipif(not torch_sin.available(), reason="torch without MKL: the CPU stimulus uses torch's sine")
def test_kernel_sine_is_torch_sine_on_a_dense_grid():
    """Every 101st float32 of [0, 64] and of [-4, 0], and every float32 within 2^12 ulps of the multiples of
    pi/2 there (the stimulus' angles lie in [-pi/2 - jitter, ~22] at the defaults): the same bits as torch."""
    positive = torch.arange(0, int(torch.tensor(64.0).view(torch.int32)), 101, dtype=torch.int32)
    negative = torch.arange(0, int(torch.tensor(4.0).view(torch.int32)), 101, dtype=torch.int32) | -2**31
    turns = (torch.arange(-2, 41) * (math.pi / 2)).float().view(torch.int32)
    near = (turns[:, None] + torch.arange(-4096, 4097, dtype=torch.int32)).ravel()
    x = torch.cat([positive, negative, near]).view(torch.float32)
    out = torch.empty_like(x)
    _vsin(x.numpy(), out.numpy())
    assert torch.equal(out.view(torch.int32), torch.sin(x).view(torch.int32))


@pytest.mark.skipif(not torch_sin.available(), reason="torch without MKL: the CPU stimulus uses torch's sine")
def test_torch_sine_is_within_the_kernels_allowance_of_the_sine():
    """The stimulus kernel's band allows torch's sine _SINE_ULPS x 2^-24 from the true one: so it is on a dense grid of
    [-2^24, 2^24] (past it the band decides nothing) and near the multiples of pi/2 up to 2^13 (every float32 of that
    range: ``python -m bench.stimulus --check-sine``)."""
    top = int(torch.tensor(2.0**24).view(torch.int32))
    grid = torch.arange(0, top + 1, 331, dtype=torch.int32)
    turns = (torch.arange(-5215, 5215, 3) * (math.pi / 2)).float().view(torch.int32)
    near = (turns[:, None] + torch.arange(-64, 65, dtype=torch.int32)).ravel()
    x = torch.cat([grid, grid | -2**31, near]).view(torch.float32)
    error = (torch.sin(x).double() - torch.sin(x.double())).abs()
    assert error.max() <= stimulus_cpu._SINE_ULPS * 2.0**-24
    assert error.max() <= 2.0**-24  # what --check-sine found: 4x below the allowance


@pytest.mark.skipif(not torch_sin.available(), reason="torch without MKL: the CPU stimulus uses torch's sine")
@pytest.mark.parametrize("power", [1.0, 2.0, 3.0])
def test_kernel_probabilities_are_torch_probabilities(power):
    """The left ear's probabilities from the kernel (angles phase_t + 0) equal spike_probability's over a dense
    range of phases, bit for bit."""
    config = StimulusConfig(anf_per_ear=1, steps=200_000, tone_hz=1.0, envelope_power=power, rate_max_hz=730.0)
    data = IPDDataset(torch.zeros(1, dtype=torch.float64), torch.zeros(1, dtype=torch.int32), config)
    phase, delays = data.angles(0.37)
    out = torch.empty(config.steps, 1)
    left_ear(phase.numpy(), delays[0].contiguous().numpy(), np.float32(0.73), int(power), out.numpy())
    assert torch.equal(out[:, 0].view(torch.int32),
                       data.spike_probability(torch.arange(1), 0.37)[0, :, 0].view(torch.int32))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("anf,steps,samples,power,tone_hz", [(1, 100, 300, 2.0, 20.0), (37, 13, 77, 3.0, 20.0),
                                                              (100, 100, 64, 2.0, 20.0), (6, 9, 5, 1.0, 20.0),
                                                              (5, 20, 11, 1.5, 20.0), (3, 700, 4, 2.0, 1000.0)])
def test_cpu_kernels_equal_the_torch_path(anf, steps, samples, power, tone_hz, threads):
    """Bits and per-group spike counts, with and without jitter, odd row counts (partial groups), the
    probabilities' kernel (power 1.5) and angles past the sine's bounds (tone 1000 Hz: rows past 4096 rad
    take the exact sine); the same at 1 and 2 threads."""
    config = StimulusConfig(anf_per_ear=anf, steps=steps, envelope_power=power, tone_hz=tone_hz)
    data = IPDDataset.random(300, config, torch.Generator().manual_seed(0), phase_jitter=0.4)
    index = torch.randperm(300, generator=torch.Generator().manual_seed(5))[:samples]
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for offset, jitter in ((0.61, None), data.draw_phase(torch.Generator().manual_seed(9))):
            got, expected = data.spike_bits(index, offset, jitter), reference_bits(data, index, offset, jitter)
            assert got.shape == expected.shape == (samples, steps, 2 * anf)
            assert torch.equal(got.bits, expected.bits) and torch.equal(got.counts, expected.counts)
    finally:
        torch.set_num_threads(before)
    assert 0.1 < got.unpack().mean() < 0.5 or tone_hz > 500


needs_mkl = pytest.mark.skipif(not torch_sin.available(), reason="torch without MKL: the fused CPU kernel needs it")


@njit
def _thresholds(p, out):
    for i in range(len(p)):
        out[i] = threshold(p[i])


def test_thresholds_decide_as_the_probability():
    """u24 < threshold(p) exactly where u24 < p 2^24, for u24 around p 2^24: p 0, subnormal, p 2^24 a whole number
    and one ulp either side, 1 (every u24 fires), NaN (none)."""
    whole = torch.tensor([1.0, 2.0, 1000.0, 2.0**23, 2.0**24 - 1]) / 2.0**24
    p = torch.cat([torch.tensor([0.0, 1e-45, 1e-30, 0.3, 0.6, 1.0, float("nan")]), whole,
                   torch.nextafter(whole, torch.ones(1)), torch.nextafter(whole, torch.zeros(1))]).float()
    limit = torch.empty(len(p), dtype=torch.int32)
    _thresholds(p.numpy(), limit.numpy().view(np.uint32))
    scaled = (p * 2.0**24).nan_to_num(0.0).clamp(0, 2**24 - 1).floor().long()
    u24 = (scaled[:, None] + torch.arange(-2, 3)).clamp(0, 2**24 - 1)
    assert torch.equal(u24 < limit[:, None], u24.float() < p[:, None] * 2.0**24)
    assert limit[5] == 2**24 and limit[6] == 0


@njit
def _estimates(tables, ipd, weight, power, out):
    """What stimulus_simd.group_bits compares u24 with, exactly (float64 holds each product of two float32):
    weight y**power of the right ear, y = sin_ti cos_s + (cos_ti sin_s + 1)."""
    floats = tables.view(np.float32)
    for s in range(out.shape[0]):
        cb, sb = np.float32(np.cos(np.float64(ipd[s]))), np.float32(np.sin(np.float64(ipd[s])))
        for t in range(out.shape[1]):
            for i in range(out.shape[2]):
                y = fma(floats[t, 3, i], cb, fma(floats[t, 4, i], sb, np.float32(1.0)))
                wy = weight
                for _ in range(power - 1):
                    wy = wy * y
                out[s, t, i] = np.float64(wy) * np.float64(y)


@needs_mkl
@pytest.mark.parametrize("power", [1, 2, 3])
@pytest.mark.parametrize("config,jitter", [({}, 0.0), (dict(anf_per_ear=17, steps=300, tone_hz=300.0), 0.5),
                                           (dict(rate_max_hz=1000.0, dt_ms=1.0), 2.0)])
def test_right_ear_band_holds_torch_probability(power, config, jitter):
    """The kernel decides a right-ear spike from an estimate of p 2^24: torch's value lies within the band
    (stimulus_cpu.margin) around it for every value of a batch, and the band is narrow (few values take the
    exact sine: ~2 a seed batch); angles up to ~1900 rad, phase jitter, scale 1."""
    config = StimulusConfig(envelope_power=float(power), **config)
    data = IPDDataset.random(64, config, torch.Generator().manual_seed(power), phase_jitter=jitter)
    index = torch.arange(64)
    offset, noise = data.draw_phase(torch.Generator().manual_seed(3))
    phase, delays = data.angles(offset, noise)
    scale = np.float32(config.rate_max_hz * config.dt_ms * 1e-3)
    tables, widest = step_tables(data._table, phase, delays, scale, power)
    ipd = data._ipd[index]
    estimate = np.empty((64, config.steps, tables.shape[2]))
    _estimates(tables, ipd.numpy(), scale * np.float32(2.0 ** (24 - power)), power, estimate)
    A = config.anf_per_ear
    torch_p = data.spike_probability(index, offset, noise)[:, :, A:].double() * 2.0**24
    band = torch.tensor([margin(w, float(ipd.abs().max()), scale, power) for w in widest], dtype=torch.float64)
    gap = (torch.from_numpy(estimate[:, :, :A]) - torch_p).abs() / band[:, None]
    assert gap.max() <= 1
    assert 2 * band.mean() / 2**24 < 1e-4  # the share of values left to the exact sine (u24 uniform)


def bits_kernel(data, index, offset, jitter=None, lanes=4, widest=None):
    """data.spike_bits's CPU kernel called directly: ``lanes`` parts in parallel, ``widest`` in place of the
    tables' (a wider band)."""
    c = data.config
    phase, delays = data.angles(offset, jitter)
    scale, power = np.float32(c.rate_max_hz * c.dt_ms * 1e-3), int(c.envelope_power)
    tables, own = step_tables(data._table, phase, delays, scale, power)
    groups = -(-len(index) * c.steps // 8)
    bits, counts = torch.empty(groups, c.inputs, dtype=torch.uint8), torch.empty(groups, dtype=torch.int64)
    stimulus_bits_kernel(data._keys[index].numpy(), data._ipd[index].numpy(), tables, own if widest is None else widest,
                         phase.numpy(), delays.contiguous().numpy(), scale, power, lanes, bits.numpy(), counts.numpy())
    return SpikeBits(bits, (len(index), c.steps, c.inputs), counts)


@needs_mkl
@pytest.mark.parametrize("anf,steps,samples", [(1, 1, 1), (15, 8, 3), (16, 25, 2), (17, 9, 9), (33, 2, 13),
                                               (31, 7, 5), (64, 100, 4)])
def test_cpu_kernel_takes_awkward_shapes(anf, steps, samples):
    """Fibres short of, at and past a vector of 16, one step, steps around a group of 8 rows and its period
    (25 x 8 rows = 2 samples of 100 steps), partial last groups, 1 to 9 parts in parallel: torch's bits."""
    config = StimulusConfig(anf_per_ear=anf, steps=steps)
    data = IPDDataset.random(40, config, torch.Generator().manual_seed(anf), phase_jitter=0.2)
    index = torch.randperm(40, generator=torch.Generator().manual_seed(steps))[:samples]
    offset, jitter = data.draw_phase(torch.Generator().manual_seed(samples))
    expected = reference_bits(data, index, offset, jitter)
    for lanes in (1, 2, 9):
        got = bits_kernel(data, index, offset, jitter, lanes)
        assert torch.equal(got.bits, expected.bits) and torch.equal(got.counts, expected.counts)


@needs_mkl
@pytest.mark.parametrize("power", [1.0, 2.0, 3.0])
def test_rows_in_the_band_take_the_exact_sine(power):
    """With the band widened past every probability (widest 1e7 rad), every row of the right ear is undecided
    and takes MKL's sine: still torch's bits."""
    data = dataset(20, anf_per_ear=19, steps=30, envelope_power=power)
    index = torch.arange(20)
    got = bits_kernel(data, index, 0.4, widest=np.full(30, 1e7))
    expected = reference_bits(data, index, 0.4)
    assert torch.equal(got.bits, expected.bits) and torch.equal(got.counts, expected.counts)


@needs_mkl
def test_kept_tables_follow_the_phase():
    """A set keeps the kernel's tables of the last phase: a new offset or jitter recomputes them."""
    data = dataset(16, anf_per_ear=9, steps=12, phase_jitter=0.3)
    index = torch.arange(16)
    jitters = [data.draw_phase(torch.Generator().manual_seed(k))[1] for k in range(2)]
    for offset, jitter in ((0.2, None), (0.7, None), (0.7, jitters[0]), (0.7, jitters[1]), (0.2, None)):
        got = data.spike_bits(index, offset, jitter)
        assert torch.equal(got.bits, reference_bits(data, index, offset, jitter).bits)


@pytest.mark.parametrize("power", [2.0, 3.0, 1.0])
def test_triton_kernel_equals_the_torch_path(power, monkeypatch):
    """Under the interpreter ``tl.sin`` is numpy's float32 sine: the torch path computed with that sine too."""
    config = StimulusConfig(anf_per_ear=11, steps=21, envelope_power=power)
    data = IPDDataset.random(40, config, torch.Generator().manual_seed(1), phase_jitter=0.3, backend="triton")
    index = torch.randperm(40, generator=torch.Generator().manual_seed(2))[:13]
    offset, jitter = data.draw_phase(torch.Generator().manual_seed(3))
    got = data.spike_bits(index, offset, jitter)
    monkeypatch.setattr(torch, "sin", lambda x: torch.from_numpy(np.sin(x.numpy())))
    expected = reference_bits(data, index, offset, jitter)
    assert got.counts is None and torch.equal(got.bits, expected.bits)


def test_backend_choice():
    config = StimulusConfig(anf_per_ear=3)
    assert IPDDataset.random(4, config, torch.Generator().manual_seed(0)).backend == "cpu"
    with pytest.raises(ValueError, match="backend must be one of"):
        IPDDataset.random(4, config, torch.Generator().manual_seed(0), backend="numba")


@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_fused_kernels_with_no_phase_delays(backend, monkeypatch):
    """``phase_delays="none"`` (the learned-delays notebooks' stimulus): every fibre of an ear sees the same
    phase, and the fused kernels still equal the torch path bit for bit."""
    config = StimulusConfig(anf_per_ear=9, steps=23, phase_delays="none")
    data = IPDDataset.random(30, config, torch.Generator().manual_seed(4), phase_jitter=0.3, backend=backend)
    index = torch.randperm(30, generator=torch.Generator().manual_seed(6))[:17]
    offset, jitter = data.draw_phase(torch.Generator().manual_seed(8))
    got = data.spike_bits(index, offset, jitter)
    if backend == "triton":
        monkeypatch.setattr(torch, "sin", lambda x: torch.from_numpy(np.sin(x.numpy())))
    expected = reference_bits(data, index, offset, jitter)
    assert torch.equal(got.bits, expected.bits)
    p = data.spike_probability(index, offset)  # without jitter (per fibre) every fibre of an ear is alike
    assert torch.equal(p[..., :9], p[..., :1].expand(-1, -1, 9)) and torch.equal(p[..., 9:], p[..., 9:10].expand(-1, -1, 9))

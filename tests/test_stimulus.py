"""The IPD stimulus: statistics, ear timing, frozen noise, phase offsets, labels."""

import math

import pytest
import torch

from fastsnn.experiment.config import StimulusConfig
from fastsnn.experiment.stimulus import IPDDataset, class_midpoints, discretise


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
    same = [torch.equal(batches[0].x[0], b.x[0]) for b in batches[1:]]
    assert all(same) if mode == "per_pass" else not any(same)
    next_pass = next(data.batches(16, torch.Generator().manual_seed(1)))
    assert not torch.equal(batches[0].x[0], next_pass.x[0])  # a new pass draws a new offset


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


@pytest.mark.parametrize("anf", [1, 37, 100])
def test_cpu_kernel_equals_the_torch_path(anf):
    data = dataset(300, anf_per_ear=anf)
    index = torch.randperm(300, generator=torch.Generator().manual_seed(5))[:77]
    prob = data.spike_probability(index, 0.61)
    fused = data.spikes(index, 0.61)
    assert torch.equal(fused, data.spikes_torch(index, prob))
    assert 0.15 < fused.mean() < 0.3

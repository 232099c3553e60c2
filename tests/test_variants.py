"""The research variants of issue #11 (all but learnable delays): readouts (sum, mean, max, spike count),
training protocols (fixed training set, no validation, firing-rate regulariser, spike dropout), phase
jitter, filter-and-fire, and the adaptive threshold with each. Fast paths against plain references,
forward and gradients; config fields, sweep keys and flags; tiny runs from the command line."""

import csv
import io
import json
import math
import re

import pytest
import torch
import torch.nn.functional as F

from conftest import assert_close, backend_device
from fastsnn.experiment.cli import main
from fastsnn.experiment.config import ModelConfig, RunConfig, StimulusConfig, TrainConfig
from fastsnn.experiment.model import IPDNetwork
from fastsnn.nn import LIF, DendriticFilter
from fastsnn.ops import leaky_readout_ref, lif_ref
from fastsnn.experiment.run import dataset, generator
from fastsnn.experiment.stimulus import IPDDataset
from fastsnn.experiment.sweeps import expand, parse_grid
from fastsnn.experiment.training import batch_loss, fit, rate_penalty

TINY = ["--hidden", "8", "--train-batches", "2", "--test-batches", "1", "--epochs", "2", "--batch-size", "16",
        "--anf-per-ear", "10", "--threads", "1", "--quiet", "--seed", "1"]
VARIANTS = {
    "mean": ["--readout", "mean"],
    "max": ["--readout", "max"],
    "spiking": ["--readout", "spiking"],
    "fixed-no-validation": ["--phase-offset", "fixed", "--no-validation"],
    "rate": ["--rate-target-hz", "20", "--rate-weight", "1e-4"],
    "dropout": ["--spike-dropout", "0.2"],
    "jitter": ["--phase-jitter", "0.3", "--test-phase-jitter", "0"],
    "filter-and-fire": ["--segments", "3", "--spike", "same_step"],
    "alif-zero": ["--neuron", "alif", "--reset", "zero"],
    "delays": ["--max-delay", "4", "--sigma-anneal-epochs", "1"],
    "alif-subtract-everything": ["--neuron", "alif", "--reset", "subtract", "--readout", "spiking", "--segments", "2",
                                 "--spike-dropout", "0.1", "--rate-weight", "1e-4", "--phase-jitter", "0.2",
                                 "--phase-offset", "fixed", "--max-delay", "3"],
}


# --- the command line: every variant trains, evaluates and resumes ---------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_trains_from_the_cli_and_evaluates_alike(variant, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, *VARIANTS[variant], "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and 0 <= metrics["test_accuracy"] <= 1
    if "--no-validation" in VARIANTS[variant]:
        history = (out / "history.csv").read_text().splitlines()
        assert [line.split(",")[2] for line in history[1:]] == ["", ""]  # no validation loss
        assert metrics["best_epoch"] == 1 and metrics["best_val_loss"] is None and not metrics["stopped_early"]
    # evaluation rebuilds the same readout (and stimulus) from the checkpoint: the run's own seed gives its metrics
    capsys.readouterr()
    assert main(["evaluate", str(out / "checkpoint.pt"), "--seed", "1", "--out", str(tmp_path / "ev")]) == 0
    again = json.loads(capsys.readouterr().out)
    assert (again["test_accuracy"], again["test_abs_error_deg"]) == (metrics["test_accuracy"],
                                                                      metrics["test_abs_error_deg"])


def test_a_killed_variant_run_resumes_bit_for_bit(tmp_path):
    from test_run import RUN, assert_same_run, killed_run

    flags = ["--spike-dropout", "0.3", "--phase-jitter", "0.4", "--rate-weight", "1e-4", "--readout", "max"]
    whole = tmp_path / "whole"
    assert main(["train", *RUN, *flags, "--out", str(whole)]) == 0
    run = killed_run(tmp_path / "killed", *flags, after_epoch=1)
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert_same_run(run, whole)


@pytest.mark.parametrize("flags,message", [
    (["--readout", "median"], "invalid choice: 'median'"),
    (["--phase-offset", "per_epoch"], "invalid choice: 'per_epoch'"),
    (["--phase-jitter", "-0.1"], r"phase_jitter must be a finite number >= 0, got -0.1"),
    (["--test-phase-jitter", "nan"], r"test_phase_jitter must be a finite number >= 0"),
    (["--spike-dropout", "1"], r"spike_dropout must be a probability in \[0, 1\), got 1.0"),
    (["--rate-weight", "-1"], "rate_weight must be a finite number >= 0"),
    (["--rate-target-hz", "inf"], "rate_target_hz must be a finite number >= 0"),
    (["--loss-scale", "0"], "loss_scale must be a finite number > 0"),
    (["--segments", "-1"], "segments must be an integer >= 0"),
    (["--rise-ms-range", "1"], r"--rise-ms-range: expected two numbers MIN,MAX \(e.g. 1,5\), got '1'"),
    (["--rise-ms-range", "3,2"], r"rise_ms_max must be at least rise_ms_min \(3\), got 2.0"),
    (["--rise-ms-range", "0,2"], "rise_ms_min must be a finite number > 0"),
    (["--decay-ms-range", "2,2.5"], r"decay_ms_max must be at least 1.5 x rise_ms_max \(3\)"),
])
def test_bad_variant_flags_fail_in_one_line(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", *flags])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert len([line for line in err.splitlines() if "error" in line]) == 1


def test_every_new_field_is_a_sweep_key_and_round_trips_through_json(tmp_path, capsys):
    grid = parse_grid(["readout=sum,mean,max,spiking", "phase-offset=fixed", "phase-jitter=0,0.3",
                       "test-phase-jitter=none,0", "validation=false", "rate-target-hz=20", "rate-weight=1e-4",
                       "spike-dropout=0.2", "segments=0,3", "rise-ms-min=2", "rise-ms-max=4", "decay-ms-min=6",
                       "decay-ms-max=30", "loss-scale=none,1", "neuron=alif", "reset=subtract"])
    assert grid["readout"] == ["sum", "mean", "max", "spiking"] and grid["validation"] == [False]
    assert grid["test_phase_jitter"] == [None, 0.0] and grid["loss_scale"] == [None, 1.0]
    points = expand(RunConfig(), grid, [0])
    assert len(points) == 4 * 2 * 2 * 2 * 2
    for point in points:
        assert RunConfig.from_dict(json.loads(json.dumps(point.config.to_dict()))) == point.config
    with pytest.raises(ValueError, match="decay_ms_max must be at least 1.5 x rise_ms_max"):
        expand(RunConfig(), parse_grid(["rise-ms-max=20"]), [0])
    assert main(["sweep", *TINY[:-2], "--grid", "readout=mean,spiking", "--grid", "segments=0,2",
                 "--no-validation", "--out", str(tmp_path / "sw"), "--dry-run"]) == 0
    assert "4 points x 1 seeds = 4 runs: 0 done, 4 to run" in capsys.readouterr().out


def test_variants_train_in_a_sweep(tmp_path):
    """A real sweep (in-process) over learnable delays x readouts, on an adaptive filter-and-fire network."""
    out = tmp_path / "sw"
    assert main(["sweep", *TINY[:-2], "--neuron", "alif", "--segments", "2", "--spike", "same_step",
                 "--grid", "max-delay=0,3", "--grid", "readout=mean,spiking", "--seeds", "1", "--out", str(out)]) == 0
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["max_delay"], r["readout"]) for r in rows) == [("0", "mean"), ("0", "spiking"), ("3", "mean"),
                                                                    ("3", "spiking")]
    assert all(r["status"] == "ok" and 0 <= float(r["test_accuracy"]) <= 1 for r in rows)
    assert {(r["neuron"], r["segments"]) for r in rows} == {("alif", "2")}


@pytest.mark.parametrize("kind,field,value", [
    (StimulusConfig, "phase_offset", "per_epoch"), (StimulusConfig, "phase_jitter", -1.0),
    (StimulusConfig, "test_phase_jitter", float("inf")), (ModelConfig, "readout", "median"),
    (ModelConfig, "spike_dropout", 1.0), (ModelConfig, "spike_dropout", -0.1), (ModelConfig, "segments", 1.5),
    (ModelConfig, "rise_ms_min", 0.0), (ModelConfig, "decay_ms_max", 2.0), (TrainConfig, "validation", "no"),
    (TrainConfig, "rate_target_hz", -1.0), (TrainConfig, "rate_weight", float("nan")),
    (TrainConfig, "loss_scale", -1.0),
])
def test_bad_variant_fields_name_themselves(kind, field, value):
    with pytest.raises(ValueError, match=rf"^{field} must be"):
        kind(**{field: value})


# --- stimulus: fixed phase, phase jitter ---------------------------------------------------------------------

def one_pass(data, seed=0):
    return torch.cat([b.x.unpack() for b in data.batches(16, torch.Generator().manual_seed(seed), shuffle=False)])


def test_a_fixed_set_draws_its_phase_once_from_its_own_stream():
    config = RunConfig(StimulusConfig(anf_per_ear=10, phase_offset="fixed", phase_jitter=0.3),
                       train=TrainConfig(batch_size=16, train_samples=32, valid_samples=32, test_samples=32))
    train = dataset(config, "train", 5)
    assert torch.equal(one_pass(train, 0), one_pass(train, 1))  # every pass sees the same spikes
    again = dataset(config, "train", 5)
    assert train.phase[0] == again.phase[0] and torch.equal(train.phase[1], again.phase[1])
    assert torch.equal(one_pass(train), one_pass(again))
    assert train.phase[0] != dataset(config, "test", 5).phase[0]  # each set has its own
    per_pass = dataset(RunConfig(StimulusConfig(anf_per_ear=10), train=config.train), "train", 5)
    assert torch.equal(train.ipd, per_pass.ipd) and torch.equal(train._keys, per_pass._keys)  # drawn first
    assert not torch.equal(one_pass(per_pass, 0), one_pass(per_pass, 1))
    with pytest.raises(ValueError, match="phase_offset='fixed' needs its phase"):
        next(IPDDataset(train.ipd, train._keys, train.config).batches(16, torch.Generator()))


def test_phase_jitter_moves_each_fibres_delay_and_is_redrawn_per_generation():
    stim = StimulusConfig(anf_per_ear=12, steps=40)
    data = IPDDataset.random(8, stim, torch.Generator().manual_seed(0), phase_jitter=0.5)
    offset, jitter = data.draw_phase(torch.Generator().manual_seed(3))
    assert jitter.shape == (24,) and jitter.dtype == torch.float32 and 0.2 < jitter.std() < 1.0
    prob = data.spike_probability(torch.arange(8), offset, jitter).double()
    t = torch.arange(40, dtype=torch.float64)[:, None] * 1e-3
    d = torch.linspace(0, math.pi / 2, 12, dtype=torch.float64)
    phi = 2 * math.pi * (20 * t + offset)
    for s in range(8):
        expected = torch.cat([0.6 * (0.5 * (1 + torch.sin(phi + d + jitter[:12].double()))) ** 2,
                              0.6 * (0.5 * (1 + torch.sin(phi + d + jitter[12:].double() + data.ipd[s]))) ** 2], 1)
        assert_close(f"prob[{s}]", prob[s], expected, rtol=1e-5, atol=1e-5)
    # per pass: one jitter for the pass; per batch: a new one per batch
    for mode in ("per_pass", "per_batch"):
        constant = IPDDataset(torch.full((32,), 0.3, dtype=torch.float64), torch.full((32,), 7, dtype=torch.int32),
                              StimulusConfig(anf_per_ear=12, phase_offset=mode), phase_jitter=0.5)
        gen = torch.Generator().manual_seed(0)
        batches = list(constant.batches(16, gen, shuffle=False))
        assert torch.equal(batches[0].x.unpack()[0], batches[1].x.unpack()[0]) == (mode == "per_pass")
        first = constant.draw_phase(torch.Generator().manual_seed(0))  # shuffle=False: the first draw
        assert torch.equal(batches[0].x.unpack()[0], constant.spikes(torch.tensor([0]), *first)[0])


def test_zero_jitter_keeps_the_seeds_random_streams():
    plain = IPDDataset.random(40, StimulusConfig(anf_per_ear=10), torch.Generator().manual_seed(2))
    zero = IPDDataset.random(40, StimulusConfig(anf_per_ear=10), torch.Generator().manual_seed(2), phase_jitter=0.0)
    for seed in (0, 1):
        assert torch.equal(one_pass(plain, seed), one_pass(zero, seed))
    jittered = IPDDataset.random(40, StimulusConfig(anf_per_ear=10), torch.Generator().manual_seed(2),
                                 phase_jitter=0.3)
    assert not torch.equal(one_pass(plain), one_pass(jittered))


@pytest.mark.parametrize("anf", [1, 37, 100])
def test_cpu_kernel_equals_the_torch_path_with_jitter(anf):
    data = IPDDataset.random(300, StimulusConfig(anf_per_ear=anf), torch.Generator().manual_seed(0),
                             phase_jitter=0.7)
    index = torch.randperm(300, generator=torch.Generator().manual_seed(5))[:77]
    offset, jitter = data.draw_phase(torch.Generator().manual_seed(9))
    fused = data.spikes(index, offset, jitter)
    assert torch.equal(fused, data.spikes_torch(index, data.spike_probability(index, offset, jitter)))
    assert not torch.equal(fused, data.spikes(index, offset))


def test_the_test_set_has_its_own_jitter():
    both = RunConfig(StimulusConfig(anf_per_ear=10, phase_jitter=0.4),
                     train=TrainConfig(batch_size=16, train_samples=32, valid_samples=32, test_samples=32))
    apart = RunConfig(StimulusConfig(anf_per_ear=10, phase_jitter=0.4, test_phase_jitter=0.1), train=both.train)
    assert [dataset(both, w, 0).phase_jitter for w in ("train", "valid", "test")] == [0.4, 0.4, 0.4]
    assert [dataset(apart, w, 0).phase_jitter for w in ("train", "valid", "test")] == [0.4, 0.4, 0.1]


# --- readouts -------------------------------------------------------------------------------------------------

def network(readout="sum", backend="cpu", **model):
    stim = StimulusConfig(anf_per_ear=16, steps=37)
    model = ModelConfig(hidden=11, readout=readout, backend=backend, **model)
    return IPDNetwork(stim, model, torch.Generator().manual_seed(0))


def fast_and_reference(readout="sum", **model):
    """The same network twice (same weights and filters): on the cpu kernels, and on the reference backend."""
    fast, ref = network(readout, **model), network(readout, **model)
    ref.set_backend("reference")
    return fast, ref


def inputs(batch=5, seed=1):
    return (torch.rand(batch, 37, 32, generator=torch.Generator().manual_seed(seed)) < 0.3).float()


def scores_and_grads(net, x, **kwargs):
    net.zero_grad()
    scores = net(x, **kwargs)
    (scores * torch.linspace(-1, 1, scores.shape[1])).sum().backward()
    return scores.detach(), {name: p.grad.clone() for name, p in net.named_parameters()}


@pytest.mark.parametrize("readout", ["sum", "mean", "max", "spiking"])
@pytest.mark.parametrize("neuron", ["lif", "alif"])
@pytest.mark.parametrize("learn_tau", [False, True], ids=["fixed-tau", "learnt-tau"])
def test_readout_fast_path_equals_the_reference_network(readout, neuron, learn_tau):
    # the fast path (fused time weights for sum/mean; cpu kernels) against the plain autograd loop
    fast, ref = fast_and_reference(readout, neuron=neuron, learn_tau=learn_tau,
                                   reset="subtract" if neuron == "alif" else "zero")
    x = inputs()
    scores, grads = scores_and_grads(fast, x)
    ref_scores, ref_grads = scores_and_grads(ref, x)
    assert_close(f"{readout} scores", scores, ref_scores, rtol=1e-5, atol=1e-5)
    for name in grads:
        assert_close(f"{readout} d{name}", grads[name], ref_grads[name], rtol=1e-4, atol=1e-5)


def test_each_readout_is_its_formula():
    x = inputs()
    nets = {r: network(r, backend="reference") for r in ("sum", "mean", "max", "spiking")}
    spikes = nets["sum"].hidden(x)
    alpha = nets["sum"].readout.alpha()
    u = leaky_readout_ref(spikes @ nets["sum"].readout.weight, alpha)  # (B, T, C)
    assert_close("sum", nets["sum"](x), u.sum(1))
    assert_close("mean", nets["mean"](x), u.sum(1) / 37)
    assert_close("max", nets["max"](x), u.amax(1))
    out = lif_ref(spikes @ nets["spiking"].readout.weight, alpha)
    counts = nets["spiking"](x)
    assert_close("spike counts", counts, out.sum(1))
    assert torch.equal(counts, counts.round())


def test_mean_readout_with_its_default_scale_gives_the_seeds_logits():
    # the seed's 0.01 * sum over its 100 steps is the mean: the two readouts train alike
    stim = StimulusConfig(anf_per_ear=16)
    x = (torch.rand(4, 100, 32, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    labels = torch.tensor([0, 3, 5, 11])
    losses = [batch_loss(IPDNetwork(stim, ModelConfig(readout=r), torch.Generator().manual_seed(0)), x, labels,
                         scale) for r, scale in (("sum", 0.01), ("mean", 1.0))]
    assert_close("loss", losses[0].detach(), losses[1].detach(), rtol=1e-6)


# --- spike dropout and the rate regulariser --------------------------------------------------------------------

@pytest.mark.parametrize("readout", ["sum", "max", "spiking"])
def test_spike_dropout_is_the_rescaled_mask_and_only_in_training(readout):
    p = 0.3
    net = network(readout, spike_dropout=p)
    x = inputs()
    net.eval()
    assert torch.equal(net(x, generator=torch.Generator().manual_seed(4)), network(readout)(x))
    net.train()
    got, grads = scores_and_grads(net, x, generator=torch.Generator().manual_seed(4))
    again, _ = scores_and_grads(net, x, generator=torch.Generator().manual_seed(4))
    assert torch.equal(got, again)
    # the reference: autograd over s * mask / (1 - p), the mask drawn alike
    ref = network(readout, backend="reference", spike_dropout=p)
    ref.load_state_dict(net.state_dict())
    ref.zero_grad()
    spikes = ref.hidden(x)
    mask = torch.rand(spikes.shape, generator=torch.Generator().manual_seed(4)) >= p
    dropped = spikes * mask / (1 - p)
    if readout == "spiking":
        expected = lif_ref(dropped @ ref.readout.weight, ref.readout.alpha()).sum(1)
    else:
        u = leaky_readout_ref(dropped @ ref.readout.weight, ref.readout.alpha())
        expected = u.sum(1) if readout == "sum" else u.amax(1)
    (expected * torch.linspace(-1, 1, expected.shape[1])).sum().backward()
    assert_close("scores", got, expected.detach(), atol=1e-5)
    for name, param in ref.named_parameters():
        assert_close(f"d{name}", grads[name], param.grad, rtol=1e-4, atol=1e-5)


def test_rate_penalty_is_its_formula():
    spikes = torch.zeros(2, 10, 3)
    spikes[:, :5, 0] = 1  # unit 0: 10 spikes / (2 samples x 10 ms) = 500 Hz
    spikes[0, :1, 1] = 1  # unit 1: 1 / 20 ms = 50 Hz; unit 2 silent
    assert rate_penalty(spikes, 1.0, 100.0).item() == pytest.approx(400.0 ** 2 / 3)
    assert rate_penalty(spikes, 1.0, 20.0).item() == pytest.approx((480.0 ** 2 + 30.0 ** 2) / 3)
    assert rate_penalty(spikes, 1.0, 600.0).item() == 0


def test_rate_regulariser_adds_its_penalty_and_lowers_the_rates():
    net = network()
    x, labels = inputs(16), torch.arange(16) % 12
    _, spikes = net.forward_with_spikes(x)
    plain = batch_loss(net, x, labels, 0.01)
    regularised = batch_loss(net, x, labels, 0.01, rate_target_hz=10.0, rate_weight=1e-3)
    assert_close("loss", regularised.detach(), plain.detach() + 1e-3 * rate_penalty(spikes, 1.0, 10.0).detach())
    rate = spikes.mean().item()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05)
    for _ in range(20):
        optimizer.zero_grad()
        batch_loss(net, x, labels, 0.01, rate_target_hz=0.0, rate_weight=1e-3).backward()
        optimizer.step()
    assert net.forward_with_spikes(x)[1].mean().item() < 0.5 * rate


# --- training without validation, and resuming with the random variants ------------------------------------

def small_fit(**train):
    stim = StimulusConfig(anf_per_ear=10, phase_offset="fixed", phase_jitter=0.3)
    cfg = TrainConfig(batch_size=16, train_samples=32, valid_samples=32, test_samples=32, lr=0.02, **train)
    model = IPDNetwork(stim, ModelConfig(hidden=6, spike_dropout=0.2, readout="mean"), generator(0, "model"))
    return model, IPDDataset.random(32, stim, generator(0, "train_set"), phase_jitter=0.3), cfg


def test_without_validation_all_epochs_run_and_the_final_weights_stay():
    model, train, cfg = small_fit(epochs=4, validation=False, min_epochs=0, patience=1)
    result = fit(model, train, None, cfg, generator(0, "train"), progress=False)
    assert result.epochs_run == 4 and not result.stopped_early and not result.restored_best
    assert result.best_epoch == 3 and all(h["val_loss"] is None for h in result.history)


def test_fit_with_dropout_and_no_validation_resumes_as_uninterrupted():
    saved = []
    model, train, cfg = small_fit(epochs=4, validation=False, rate_weight=1e-4)

    def save(state):
        buffer = io.BytesIO()
        torch.save(state, buffer)
        saved.append(buffer.getvalue())

    whole = fit(model, train, None, cfg, generator(0, "train"), progress=False, on_epoch=save)
    again, train, cfg = small_fit(epochs=4, validation=False, rate_weight=1e-4)
    state = torch.load(io.BytesIO(saved[1]), weights_only=True)
    resumed = fit(again, train, None, cfg, generator(0, "train"), progress=False, state=state)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in whole.history]
    for (name, a), b in zip(again.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name


# --- filter-and-fire ---------------------------------------------------------------------------------------------

def dendritic_filter_ref(h: torch.Tensor, kernel: torch.Tensor, units: int, segments: int) -> torch.Tensor:
    """The oracle: an explicit causal convolution y_t = sum_{d=0}^{t} k_d h_{t-d} per channel, then the sum of
    each unit's segments. h (B, T, units * segments), kernel (units * segments, T)."""
    batch, steps, channels = h.shape
    padded = F.pad(h.transpose(1, 2), (steps - 1, 0))  # (B, C, 2T - 1)
    y = F.conv1d(padded, kernel.flip(1)[:, None, :].to(h.dtype), groups=channels)  # (B, C, T)
    return y.transpose(1, 2).reshape(batch, steps, units, segments).sum(3)


def random_filter(units=7, segments=3, seed=0):
    return DendriticFilter.random(units, segments, (1.0, 5.0), (7.5, 25.0), 1.0, torch.Generator().manual_seed(seed))


def test_double_exponential_kernels_are_causal_peak_normalised_and_drawn_in_range():
    filt = random_filter(units=50, segments=4)
    assert bool((filt.rise_ms >= 1).all() and (filt.rise_ms <= 5).all())
    assert bool((filt.decay_ms >= 1.5 * filt.rise_ms).all() and (filt.decay_ms >= 7.5).all()
                and (filt.decay_ms <= 25).all())
    k = filt.kernel(400)
    assert bool((k[:, :2] == 0).all())  # k_0 = 0 (causal, one step late) and k_1 = a^0 - a^0 = 0
    assert_close("peak", k.max(1).values, torch.ones(200), rtol=0, atol=1e-12)
    s = torch.arange(399, dtype=torch.float64)
    continuous = torch.exp(-s / filt.decay_ms[:, None]) - torch.exp(-s / filt.rise_ms[:, None])
    assert_close("shape", k[:, 1:] / k[:, 1:].max(1, keepdim=True).values,
                 continuous / continuous.max(1, keepdim=True).values, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", ["reference", "cpu", "triton"])
def test_dendritic_filter_equals_an_explicit_causal_convolution(backend):
    # float64 on the reference and cpu backends; the Triton readout keeps float32 precision even for float64
    # inputs (1e-6 off the reference), so it is checked in float32
    device = backend_device(backend)
    dtype, tol = (torch.float32, 1e-5) if backend == "triton" else (torch.float64, 1e-10)
    units, segments, steps = 7, 3, 63
    filt = random_filter(units, segments).to(device)
    h = torch.randn(4, steps, units * segments, dtype=dtype, device=device, requires_grad=True)
    g = torch.randn(4, steps, units, dtype=dtype, device=device)
    fast = filt(h, backend)
    (dh,) = torch.autograd.grad((fast * g).sum(), h)
    h_ref = h.detach().clone().requires_grad_()
    ref = dendritic_filter_ref(h_ref, filt.kernel(steps), units, segments)
    (dh_ref,) = torch.autograd.grad((ref * g).sum(), h_ref)
    assert_close("y", fast, ref, rtol=tol, atol=tol)
    assert_close("dh", dh, dh_ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("neuron", ["lif", "alif"])
def test_filter_and_fire_layer_equals_the_convolution_reference(neuron):
    # the whole hidden layer (cpu kernels, time weights fused into the LIF), in float64: its spikes and the
    # gradients of W and the learnt time constants against convolution + the LIF's plain loop
    layer = network("sum", neuron=neuron, segments=3, spike="same_step", learn_tau=True).hidden.double()
    assert layer.weight.shape == (32, 33)
    params = list(layer.parameters())
    x, weights = inputs().double(), torch.linspace(0, 1, 37, dtype=torch.float64)

    def reference() -> torch.Tensor:
        current = dendritic_filter_ref(x @ layer.weight, layer.dendrites.kernel(37), 11, 3)
        if neuron == "alif":
            return lif_ref(current, layer.alpha(), layer.rho(), spike="same_step", adapt=layer.options["adapt"])
        return lif_ref(current, layer.alpha(), spike="same_step")

    expected = reference()
    assert_close("spikes", layer(x).detach(), expected.detach())
    expected_sum = expected.transpose(1, 2) @ weights
    got = layer.time_sum(x, weights)
    assert_close("time sum", got.detach(), expected_sum.detach())
    for param, grad, ref_grad in zip(params, torch.autograd.grad(got.sum(), params),
                                     torch.autograd.grad(expected_sum.sum(), params)):
        assert_close("grad", grad, ref_grad, rtol=1e-9, atol=1e-12)


def test_filter_and_fire_network_matches_the_reference_backend():
    fast, ref = fast_and_reference("sum", segments=2, spike="same_step")
    x = inputs()
    scores, grads = scores_and_grads(fast, x)
    ref_scores, ref_grads = scores_and_grads(ref, x)
    assert_close("scores", scores, ref_scores, rtol=1e-5, atol=1e-5)
    for name in grads:
        assert_close(f"d{name}", grads[name], ref_grads[name], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("training", [True, False], ids=["gaussian-taps", "rounded-delays"])
def test_filter_and_fire_with_delays_matches_the_reference_backend(training):
    # each segment's column of W has its own delays (the delay parameter has W's shape), then the filters
    fast, ref = fast_and_reference("sum", segments=2, spike="same_step", max_delay=4)
    assert fast.hidden.delay.shape == fast.hidden.weight.shape == (32, 22)
    fast.train(training), ref.train(training)
    x = inputs()
    scores, grads = scores_and_grads(fast, x)
    ref_scores, ref_grads = scores_and_grads(ref, x)
    assert_close("scores", scores, ref_scores, rtol=1e-5, atol=1e-5)
    assert set(grads) == set(ref_grads) and "hidden.delay" in grads
    for name in grads:
        assert_close(f"d{name}", grads[name], ref_grads[name], rtol=1e-4, atol=1e-5)


def test_lif_without_dendrites_is_unchanged():
    layer = LIF(20, 6, generator=torch.Generator().manual_seed(0))
    assert layer.weight.shape == (20, 6) and layer.dendrites is None
    with pytest.raises(ValueError, match="dendrites must have out_features = 6 units, got 5"):
        LIF(20, 6, dendrites=random_filter(units=5))

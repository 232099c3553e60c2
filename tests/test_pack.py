"""Packed training (fastsnn.experiment.pack): a pack's losses and gradients equal its members' solo networks
on every backend, per member exactly and on the wide path within float rounding; every member of a trained
pack writes the run folder its solo run writes (weights, metrics, history), early stopping and best
snapshot its own; a killed pack resumes every member to the same end; a sweep with and without packing
gives the same rows; learning-rate schedules; how a sweep cuts its points into packs."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import FAST, assert_close, backend_device

from fastsnn.experiment.cli import main
from fastsnn.experiment.config import ModelConfig, RunConfig, StimulusConfig, TrainConfig
from fastsnn.experiment.pack import PackedNetwork, pack_key, stream_key, train_pack, wide_ok
from fastsnn.experiment.run import build_model, dataset, generator, train_run
from fastsnn.experiment.sweeps import Point, packs
from fastsnn.experiment.training import batch_loss
from test_run import assert_same_run
from test_sweep import METRICS, rows_by_name

KILL_AFTER_EPOCH = Path(__file__).with_name("kill_after_epoch.py")
TAUS = (3.0, 5.0, 9.0)
# bench.gpu_check runs this module with TRITON_INTERPRET=0 for its CUDA cases; the others are the CPU suite's
cpu_only = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="CPU tests, run by the CPU suite")


def config(tau_ms=5.0, seed=0, backend="cpu", model=None, **train) -> RunConfig:
    """A tiny run: 2 training batches of 8, 1 validation and 1 test batch, 3 epochs, one thread."""
    train = dict(dict(epochs=3, batch_size=8, train_samples=16, valid_samples=8, test_samples=8, seed=seed,
                      device="cpu", threads=1, min_epochs=0, patience=2), **train)
    return RunConfig(StimulusConfig(anf_per_ear=5, steps=24),
                     ModelConfig(**{"hidden": 6, "tau_ms": tau_ms, "backend": backend, **(model or {})}), TrainConfig(**train))


def members(configs, device="cpu"):
    """The members' networks as their solo runs build them, hidden weights scaled up so that units spike;
    one batch per stream (each seed's first training batch); each member's stream index."""
    nets = [build_model(c, torch.device(device)) for c in configs]
    for net in nets:
        with torch.no_grad():
            net.hidden.weight.mul_(4)
    keys = list(dict.fromkeys(stream_key(c) for c in configs))
    batches = []
    for key in keys:
        c = next(c for c in configs if stream_key(c) == key)
        data = dataset(c, "train", c.train.seed, device)
        batches.append(next(data.batches(c.train.batch_size, generator(c.train.seed, "train"))))
    return nets, batches, [keys.index(stream_key(c)) for c in configs]


def solo(net, config, batch):
    """A member's loss and its gradients, from its own network."""
    net.zero_grad()
    loss = batch_loss(net, batch.x, batch.labels, config.loss_scale)
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in net.named_parameters()}


@pytest.mark.parametrize("backend", ["reference", *FAST])
@pytest.mark.parametrize("wide", [False, True], ids=["per_member", "wide"])
@pytest.mark.parametrize("variant", [{}, {"neuron": "alif"}, {"dales_law": True, "readout": "mean"},
                                     {"readout_tau_ms": "each"}], ids=["lif", "alif", "dale_mean", "readout_taus"])
def test_pack_losses_and_gradients_equal_solo_networks(backend, wide, variant):
    """Three members (two seeds, three time constants): the pack's losses and the gradients of its stacked
    weights equal each member's solo network's: exactly per member on the CPU, within float rounding on the wide
    path (one projection per stream, one LIF call over 3 x hidden neurons, batched readouts) and on CUDA."""
    device = backend_device(backend)
    exact = not wide and device == "cpu"
    configs = []
    for r, (tau, seed) in enumerate(zip(TAUS, (0, 0, 1))):
        model = dict(variant)
        if model.get("readout_tau_ms") == "each":
            model["readout_tau_ms"] = 4.0 + r
        configs.append(config(tau, seed, backend, model))
    assert wide_ok(configs)
    nets, batches, streams = members(configs, device)
    pack = PackedNetwork(nets, configs, streams, wide=wide)
    pack.train()
    losses = pack.losses(batches, [torch.Generator() for _ in batches])
    losses.sum().backward()
    for r, (net, c) in enumerate(zip(nets, configs)):
        net.train()
        loss, grads = solo(net, c, batches[streams[r]])
        assert loss.item() > 0
        if not exact:
            assert_close(f"loss {r}", losses[r].detach(), loss, rtol=1e-5, atol=1e-6)
        else:
            assert torch.equal(losses[r].detach(), loss), r
        for name, stacked in zip(pack.names, pack.stacked):
            assert grads[name].abs().sum() > 0, (r, name)  # the units spike: the gradients are not trivial
            if not exact:
                assert_close(f"grad {name} {r}", stacked.grad[r], grads[name], rtol=1e-4, atol=1e-6)
            else:
                assert torch.equal(stacked.grad[r], grads[name]), (r, name)


@cpu_only
def test_a_pack_refuses_networks_of_other_shapes_and_wide_members_it_cannot_cover():
    a, b = config(), config(model={"hidden": 7})
    with pytest.raises(ValueError, match="same parameters"):
        PackedNetwork([build_model(c, torch.device("cpu")) for c in (a, b)], [a, b], [0, 0])
    learnt = config(model={"learn_tau": True})
    assert not wide_ok([a, learnt]) and not wide_ok([a, config(model={"max_delay": 3})])
    with pytest.raises(ValueError, match="wide_ok"):
        PackedNetwork([build_model(c, torch.device("cpu")) for c in (a, learnt)], [a, learnt], [0, 0], wide=True)
    with pytest.raises(ValueError, match="one pack_key"):
        list(train_pack([a, b], [Path("unused-a"), Path("unused-b")]))


def train_solo(configs, root):
    for i, c in enumerate(configs):
        train_run(c, root / f"solo{i}", progress=False)
    return [root / f"solo{i}" for i in range(len(configs))]


def assert_same_runs(outs, solos):
    for out, expected in zip(outs, solos):
        assert_same_run(out, expected)
        assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in expected.iterdir())


# members that stop at different epochs (after 2, after 4 or more, at their end), with and without the best
# snapshot
STOPPING = [dict(epochs=6, patience=1), dict(epochs=6, patience=2, min_epochs=3), dict(epochs=5, patience=10),
            dict(epochs=6, patience=2, min_epochs=2, restore_best=False)]


@pytest.fixture(scope="module")
def stopping(tmp_path_factory):
    """The runs of STOPPING (two seeds), packed and solo."""
    root = tmp_path_factory.mktemp("stopping")
    configs = [config(TAUS[i % 3], i % 2, lr=0.05, **kw) for i, kw in enumerate(STOPPING)]
    outs = [root / f"packed{i}" for i in range(len(configs))]
    finished = dict(train_pack(configs, outs))
    return configs, outs, finished, train_solo(configs, root)


@cpu_only
def test_every_member_stops_keeps_its_best_and_writes_what_its_solo_run_writes(stopping):
    configs, outs, finished, solos = stopping
    assert sorted(finished) == list(range(len(configs)))
    epochs = sorted(finished[i]["epochs"] for i in range(len(configs)))
    assert epochs[0] < epochs[-2], epochs  # one left the pack while two or more trained on
    assert any(finished[i]["stopped_early"] for i in range(len(configs)))
    for i in range(len(configs)):
        metrics = json.loads((outs[i] / "metrics.json").read_text())
        assert metrics["test_accuracy"] == finished[i]["test_accuracy"]
    assert_same_runs(outs, solos)


@cpu_only
def test_a_packed_run_evaluates_as_a_solo_run(stopping, tmp_path, capsys):
    _, outs, _, solos = stopping
    for run, name in ((outs[0], "packed"), (solos[0], "solo")):
        assert main(["evaluate", str(run / "checkpoint.pt"), "--seed", "5", "--out", str(tmp_path / name)]) == 0
    packed, solo = (json.loads((tmp_path / name / "evaluate-seed5.json").read_text()) for name in ("packed", "solo"))
    assert packed.pop("checkpoint") != solo.pop("checkpoint") and packed == solo


@cpu_only
def test_a_pack_follows_its_members_learning_rate_schedule(tmp_path):
    """one_cycle moves the learning rate and Adam's beta1 every epoch: the members end as their solo runs; runs
    of another schedule, or of other epochs under one, are of another pack."""
    configs = [config(tau, seed, epochs=3, lr_schedule="one_cycle") for tau, seed in zip(TAUS, (0, 1, 0))]
    outs = [tmp_path / f"packed{i}" for i in range(3)]
    assert all(isinstance(m, dict) for m in dict(train_pack(configs, outs)).values())
    assert_same_runs(outs, train_solo(configs, tmp_path))
    assert pack_key(config(epochs=4, lr_schedule="one_cycle")) != pack_key(configs[0]) != pack_key(config(epochs=3))
    assert pack_key(config(epochs=4)) == pack_key(config(epochs=3))


@cpu_only
def test_the_wide_path_trains_within_float_rounding_of_solo_runs(tmp_path):
    """Trained on the wide path, each member's first epoch's losses equal its solo run's within float rounding
    (later epochs drift apart as any change of summation order makes them)."""
    configs = [config(tau, seed, epochs=1) for tau, seed in zip(TAUS, (0, 0, 1))]
    outs = [tmp_path / f"wide{i}" for i in range(3)]
    finished = dict(train_pack(configs, outs, wide=True))
    assert all(isinstance(m, dict) for m in finished.values()), finished
    for out, expected in zip(outs, train_solo(configs, tmp_path)):
        mine, theirs = ([float(v) for v in (r / "history.csv").read_text().splitlines()[1].split(",")[1:3]]
                        for r in (out, expected))
        assert mine == pytest.approx(theirs, rel=1e-5)


# two shapes (hidden 4 and 6), each of two time constants and two seeds: two packs of four
GRID = ["--grid", "tau-ms=3,5", "--grid", "hidden=4,6", "--seeds", "2", "--epochs", "3", "--anf-per-ear", "5",
        "--train-batches", "2", "--test-batches", "1", "--batch-size", "8", "--threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def solo_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("solo") / "sweep"
    assert main(["sweep", *GRID, "--pack", "1", "--out", str(out)]) == 0
    return out


def assert_same_sweep(out, expected):
    """Every row ok, of the same id and metrics as ``expected``'s, its run folder bit for bit the same."""
    rows, theirs = rows_by_name(out), rows_by_name(expected)
    assert rows.keys() == theirs.keys() and len(rows) == 8
    for name, row in rows.items():
        assert row["status"] == "ok", row["error"]
        for key in (*METRICS, "id", "best_epoch", "test_abs_error_deg", "train_abs_error_deg"):
            assert row[key] == theirs[name][key], (name, key)
        assert_same_run(out / "runs" / row["id"], expected / "runs" / row["id"])


@cpu_only
def test_a_sweep_with_and_without_packing_gives_the_same_rows(solo_sweep, tmp_path, capsys):
    """On the CPU a pack computes each member as its solo run: the rows and run folders are the same; the points
    of each shape share a pack, in the same sweep."""
    out = tmp_path / "packed"
    assert main(["sweep", *GRID, "--dry-run", "--out", str(out)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith("8 to run in 2 packs (4, 4 runs)")
    assert main(["sweep", *GRID, "--out", str(out)]) == 0
    assert_same_sweep(out, solo_sweep)


@cpu_only
def test_a_killed_pack_resumes_every_member_to_the_same_end(solo_sweep, tmp_path):
    """A sweep SIGKILLed once the first member of its first pack has saved epoch 1 (the others' last saved epoch
    is 0, the second pack's none): rerun, every run ends as its uninterrupted solo run, bit for bit."""
    out = tmp_path / "sweep"
    proc = subprocess.run([sys.executable, str(KILL_AFTER_EPOCH), "1", "sweep", *GRID, "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    saved = sorted(len(torch.load(f, weights_only=False)["result"]["history"]) for f in out.glob("runs/*/resume.pt"))
    assert saved == [1, 1, 1, 2], saved
    assert main(["sweep", *GRID, "--out", str(out)]) == 0
    assert_same_sweep(out, solo_sweep)


def points(*configs):
    return [Point(f"p{i}", f"p{i}", c) for i, c in enumerate(configs)]


@cpu_only
def test_packs_keep_streams_together_split_for_workers_and_keep_shapes_apart():
    taus = [config(tau, seed) for seed in (0, 1, 2) for tau in TAUS]  # 3 streams of 3
    other = config(model={"hidden": 7})
    ps = points(*taus, other)
    names = lambda units: [[p.id for p in unit] for unit in units]  # noqa: E731
    assert names(packs(ps)) == [[f"p{i}" for i in range(9)], ["p9"]]
    assert names(packs(ps, size=1)) == [[f"p{i}"] for i in range(10)]
    assert names(packs(ps, size=4)) == [["p0", "p1", "p2"], ["p3", "p4", "p5"], ["p6", "p7", "p8"], ["p9"]]
    # two workers: the 9-run pack splits between streams
    assert names(packs(ps, units=3)) == [["p0", "p1", "p2"], ["p3", "p4", "p5", "p6", "p7", "p8"], ["p9"]]
    assert len({pack_key(c) for c in taus}) == 1 and pack_key(other) != pack_key(taus[0])


@cpu_only
@pytest.mark.parametrize("flag,value", [("--pack", "0"), ("--pack", "two")])
def test_a_bad_pack_size_is_one_line(flag, value, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["sweep", "--grid", "tau-ms=3,5", flag, value, "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--pack" in err and value in err


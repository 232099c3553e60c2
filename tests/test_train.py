"""Training: the early-stopping rule, the best-weights snapshot, resuming from a saved epoch, the learning-rate
schedules against torch's schedulers, and learning beyond chance."""

import io
import random

import pytest
import torch

from fastsnn.experiment.config import ModelConfig, StimulusConfig, TrainConfig
from fastsnn.experiment.model import IPDNetwork
from fastsnn.experiment.run import generator
from fastsnn.experiment.stimulus import IPDDataset
from fastsnn.experiment.evaluate import evaluate
from fastsnn.experiment.schedules import scheduled
from fastsnn.experiment.training import fit, should_stop


def seed_rule(val_losses, epoch):
    """The seed's own expression."""
    return bool(torch.tensor(val_losses[-10:]).argmin() == 0 and epoch > 10)


def test_should_stop_never_on_a_falling_loss():
    losses = [1.0 / (e + 1) for e in range(60)]
    assert not any(should_stop(losses[: e + 1], e) for e in range(60))


def test_should_stop_when_the_oldest_of_the_window_is_best():
    losses = [5, 4, 3, 2, 1.0] + [1.5 + 0.01 * i for i in range(20)]
    stops = [e for e in range(len(losses)) if should_stop(losses[: e + 1], e)]
    assert stops[0] == 13  # 1.0 sits at epoch 4; it is the oldest of the last 10 at epoch 13


def test_should_stop_waits_for_min_epochs():
    losses = [0.5] + [1.0] * 30  # the best is the very first epoch
    assert [e for e in range(12) if should_stop(losses[: e + 1], e)] == [11]


@pytest.mark.parametrize("seed", range(5))
def test_should_stop_equals_the_seeds_expression(seed):
    rng = random.Random(seed)
    losses = []
    for epoch in range(80):
        losses.append(float(rng.choice([1, 2, 3, 4])) - 0.01 * epoch * rng.random())  # ties included
        assert should_stop(losses, epoch) == seed_rule(losses, epoch), (epoch, losses[-10:])


def small_problem(backend="auto", seed=0, train_samples=512, batch_size=64, **train):
    stim = StimulusConfig()
    cfg = TrainConfig(batch_size=batch_size, train_samples=train_samples, valid_samples=256, test_samples=512,
                      seed=seed, **train)
    sets = [IPDDataset.random(n, stim, generator(seed, f"{which}_set"))
            for n, which in ((cfg.train_samples, "train"), (cfg.valid_samples, "valid"), (cfg.test_samples, "test"))]
    model = IPDNetwork(stim, ModelConfig(backend=backend), generator(seed, "model"))
    return model, sets, cfg


@pytest.mark.slow
def test_short_training_beats_chance_by_far():
    model, (train, valid, test), cfg = small_problem(epochs=8, lr=0.01)
    result = fit(model, train, valid, cfg, generator(0, "train"), progress=False)
    assert result.epochs_run == 8 and result.history[-1]["loss"] < result.history[0]["loss"]
    accuracy = evaluate(model, test, 64, generator(0, "eval_test")).accuracy
    assert accuracy > 0.35, f"accuracy {accuracy:.3f} (chance 0.083)"


def test_restore_best_returns_the_best_epochs_weights():
    # 16 training samples: the network overfits them and the validation loss rises after a while
    setup = dict(train_samples=16, batch_size=16, lr=0.02, min_epochs=50)
    epochs = 4
    model, (train, valid, _), cfg = small_problem(epochs=epochs, **setup)
    result = fit(model, train, valid, cfg, generator(0, "train"), progress=False)
    assert result.restored_best and result.best_epoch < epochs - 1, result.history

    # replaying the same run up to the best epoch, keeping the final weights, lands on the same weights
    replay, (train, valid, _), cfg_replay = small_problem(epochs=result.best_epoch + 1, restore_best=False, **setup)
    fit(replay, train, valid, cfg_replay, generator(0, "train"), progress=False)
    for (name, a), b in zip(model.state_dict().items(), replay.state_dict().values()):
        assert torch.equal(a, b), name

    final, (train, valid, _), cfg_final = small_problem(epochs=epochs, restore_best=False, **setup)
    kept = fit(final, train, valid, cfg_final, generator(0, "train"), progress=False)
    assert not kept.restored_best
    assert not torch.equal(final.hidden.weight, model.hidden.weight)


def test_fit_resumed_from_any_saved_epoch_ends_as_uninterrupted():
    setup = dict(train_samples=16, batch_size=16, lr=0.02, epochs=40, min_epochs=2, patience=3)
    saved = []

    def save(state):
        buffer = io.BytesIO()
        torch.save(state, buffer)
        saved.append(buffer.getvalue())

    model, (train, valid, _), cfg = small_problem(**setup)
    whole = fit(model, train, valid, cfg, generator(0, "train"), progress=False, on_epoch=save)
    assert whole.stopped_early and whole.restored_best and whole.best_epoch < whole.epochs_run - 1
    assert len(saved) == whole.epochs_run
    for epoch in (whole.best_epoch, whole.epochs_run - 1):
        again, (train, valid, _), cfg = small_problem(**setup)
        state = torch.load(io.BytesIO(saved[epoch]), weights_only=True)
        resumed = fit(again, train, valid, cfg, generator(0, "train"), progress=False, state=state)
        assert resumed.history[: epoch + 1] == whole.history[: epoch + 1]  # the saved epochs, seconds and all
        assert [h["val_loss"] for h in resumed.history] == [h["val_loss"] for h in whole.history]
        assert (resumed.best_epoch, resumed.stopped_early, resumed.restored_best) == (whole.best_epoch, True, True)
        for (name, a), b in zip(again.state_dict().items(), model.state_dict().values()):
            assert torch.equal(a, b), (epoch, name)


def test_the_progress_bar_says_training_stopped_early(capsys):
    setup = dict(train_samples=16, batch_size=16, lr=0.02, epochs=40, min_epochs=2, patience=3)
    model, (train, valid, _), cfg = small_problem(**setup)
    result = fit(model, train, valid, cfg, generator(0, "train"), progress=True)
    assert result.stopped_early and result.epochs_run < 40
    last = capsys.readouterr().err.split("\r")[-1]
    assert f"{result.epochs_run}/40" in last
    assert (f"stopped early after {result.epochs_run} of 40 epochs, best epoch {result.best_epoch} "
            "(from 0; its weights kept)") in last, last


def test_nan_loss_is_a_clear_error():
    model, (train, valid, _), cfg = small_problem(epochs=2)
    with torch.no_grad():
        model.readout.weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="non-finite at epoch 0"):
        fit(model, train, valid, cfg, generator(0, "train"), progress=False)


# --- learning-rate schedules -------------------------------------------------------------------------------

@pytest.mark.parametrize("schedule", ["one_cycle", "cosine"])
@pytest.mark.parametrize("epochs", [1, 2, 3, 4, 7, 37, 150])
def test_schedules_are_torchs(schedule, epochs):
    """Each epoch's learning rate (and, for one_cycle, Adam's beta1) is what torch's scheduler, stepped once per
    epoch, gives: OneCycleLR(max_lr=lr, total_steps=epochs), CosineAnnealingLR(T_max=epochs)."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([param], lr=1e-3)
    if schedule == "one_cycle":
        lr, torch_schedule = 5e-3, torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=5e-3, total_steps=epochs)
    else:
        lr, torch_schedule = 1e-3, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    for epoch in range(epochs):
        group = optimizer.param_groups[0]
        got, beta1 = scheduled(schedule, lr, epoch, epochs)
        assert got == pytest.approx(group["lr"], rel=1e-12, abs=1e-300), epoch
        assert beta1 == (pytest.approx(group["betas"][0], rel=1e-12) if schedule == "one_cycle" else None), epoch
        optimizer.step()
        torch_schedule.step()


def test_constant_schedule_and_bad_names():
    assert scheduled("constant", 0.01, 7, 10) == (0.01, None)
    with pytest.raises(ValueError, match="schedule must be one of constant, one_cycle, cosine, got 'step'"):
        scheduled("step", 0.01, 0, 10)
    with pytest.raises(ValueError, match="lr_schedule must be one of constant, one_cycle, cosine, got 'linear'"):
        TrainConfig(lr_schedule="linear")


def test_fit_applies_each_groups_schedule_every_epoch():
    """The learning rate (and beta1) the optimizer holds after each epoch is the schedule's for that epoch."""
    lrs = []
    model, (train, valid, _), cfg = small_problem(epochs=5, train_samples=64, lr=0.004, lr_schedule="one_cycle")
    fit(model, train, valid, cfg, generator(0, "train"), progress=False,
        on_epoch=lambda state: lrs.append([(g["lr"], g["betas"][0]) for g in state["optimizer"]["param_groups"]]))
    assert lrs == [[scheduled("one_cycle", 0.004, epoch, 5)] for epoch in range(5)]

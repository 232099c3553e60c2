"""Training: Adam on the seed's loss, the seed's early-stopping rule, a snapshot of the best weights,
and the state after each epoch that lets a killed run continue exactly where it stopped.

The loop knows nothing of a model's particular parameters. A model may define three hooks, which
:func:`fit` calls when present (:class:`~fastsnn.experiment.model.IPDNetwork` uses them for its
learnable delays):

- ``param_groups(cfg) -> list[dict]``: the optimizer's parameter groups (default: all parameters at ``cfg.lr``);
  a group may name its learning-rate schedule, ``"schedule"`` (:data:`~fastsnn.experiment.schedules.SCHEDULES`;
  default ``cfg.lr_schedule``), its ``lr`` then being the schedule's start or peak;
- ``start_epoch(epoch, cfg)``: before each training epoch (a schedule, e.g. the delay kernels' width);
- ``after_step()``: after each optimizer step (a constraint, e.g. clipping the delays to their range).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .config import LOSS_SCALES, TrainConfig
from .schedules import scheduled
from .stimulus import IPDDataset


def should_stop(val_losses: list[float], epoch: int, patience: int = 10, min_epochs: int = 10) -> bool:
    """The seed's rule: after epoch index ``min_epochs``, stop when the oldest of the last
    ``patience`` validation losses is the lowest (ties go to the oldest, like ``argmin``)."""
    window = val_losses[-patience:]
    return epoch > min_epochs and min(range(len(window)), key=window.__getitem__) == 0


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)  # per epoch: epoch, loss, val_loss, seconds
    best_epoch: int = -1
    best_val_loss: float = math.inf
    best_state: dict | None = None  # the best epoch's weights (with restore_best)
    stopped_early: bool = False
    restored_best: bool = False

    @property
    def epochs_run(self) -> int:
        return len(self.history)


def stop_note(result: FitResult, cfg: TrainConfig) -> str:
    """What ended training early, for the progress bar and the final line: "stopped early after 68 of 150
    epochs, best epoch 57" (epochs numbered from 0, as in history.csv and metrics.json)."""
    kept = "its weights kept" if cfg.restore_best else "the final weights kept"
    return (f"stopped early after {result.epochs_run} of {cfg.epochs} epochs, best epoch {result.best_epoch} "
            f"(from 0; {kept})")


def batch_loss(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor, loss_scale: float,
               generator: torch.Generator | None = None, rate_target_hz: float = 0.0,
               rate_weight: float = 0.0) -> torch.Tensor:
    """NLL(log_softmax(loss_scale * scores)), mean over the batch, plus ``rate_weight`` times
    :func:`rate_penalty` of the hidden spikes when ``rate_weight`` > 0. ``generator`` draws the spike
    dropout masks of a model in training mode."""
    if rate_weight == 0:
        return F.cross_entropy(model(x, generator=generator) * loss_scale, labels)
    scores, spikes = model.forward_with_spikes(x, generator=generator)
    penalty = rate_penalty(spikes, model.hidden.dt_ms, rate_target_hz)
    return F.cross_entropy(scores * loss_scale, labels) + rate_weight * penalty


def rate_penalty(spikes: torch.Tensor, dt_ms: float, target_hz: float) -> torch.Tensor:
    """spikes (B, T, N) -> ``mean_n max(0, r_n - target_hz)^2``, where ``r_n = sum_{b,t} s_{b,t,n} / (B T dt)``
    is unit n's firing rate over the batch in Hz."""
    batch, steps, _ = spikes.shape
    rates = spikes.sum((0, 1)) / (batch * steps * dt_ms * 1e-3)
    return (rates - target_hz).clamp_min(0).square().mean()


def _pass(model, data: IPDDataset, cfg: TrainConfig, generator: torch.Generator, optimizer=None) -> float:
    """Mean batch loss over one pass (with the rate penalty when training); trains when an optimizer is
    given. Syncs once, at the end."""
    scale = cfg.loss_scale if cfg.loss_scale is not None else LOSS_SCALES[model.readout_kind]
    losses = []
    for batch in data.batches(cfg.batch_size, generator):
        if optimizer is None:
            loss = batch_loss(model, batch.x, batch.labels, scale)
        else:
            loss = batch_loss(model, batch.x, batch.labels, scale, generator, cfg.rate_target_hz, cfg.rate_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        losses.append(loss.detach())
    return torch.stack(losses).mean().item()


def check_finite(epoch: int, loss: float, val_loss: float | None) -> None:
    """Raise ``FloatingPointError`` when an epoch's training or validation loss is not finite."""
    if not (math.isfinite(loss) and (val_loss is None or math.isfinite(val_loss))):
        raise FloatingPointError(f"loss became non-finite at epoch {epoch} (train {loss}, validation "
                                 f"{val_loss}); lower the learning rate or check the inputs for NaN")


def record_epoch(result: FitResult, cfg: TrainConfig, epoch: int, loss: float, val_loss: float | None,
                 seconds: float, snapshot: Callable[[], dict]) -> None:
    """Add epoch ``epoch`` to ``result``: its history line, the best epoch so far (with ``cfg.restore_best``
    its weights, ``snapshot()``; without validation the last epoch's) and the early-stopping verdict."""
    result.history.append(dict(epoch=epoch, loss=loss, val_loss=val_loss, seconds=seconds))
    if val_loss is None:
        result.best_epoch = epoch  # the weights kept: the last epoch's
    elif val_loss < result.best_val_loss:
        result.best_val_loss, result.best_epoch = val_loss, epoch
        if cfg.restore_best:
            result.best_state = snapshot()
    result.stopped_early = cfg.validation and should_stop([h["val_loss"] for h in result.history], epoch,
                                                          cfg.patience, cfg.min_epochs)


class StateMismatch(ValueError):
    """A training state that :func:`fit` cannot continue from: saved by a model or optimizer of another shape."""


def load_state(state: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               generator: torch.Generator) -> FitResult:
    """Load a training state that :func:`fit` gave ``on_epoch`` into ``model``, ``optimizer`` and ``generator``;
    return the result so far. :class:`StateMismatch` (one line) for a state they cannot take."""
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        return FitResult(**state["result"])
    except (RuntimeError, ValueError, TypeError, KeyError) as err:  # e.g. weights of another size
        first = " ".join(" ".join(str(err).strip().splitlines()[:2]).split())  # torch's reason is on line 2
        raise StateMismatch(first or type(err).__name__) from None


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> tuple[torch.optim.Adam, list[tuple[str, float]]]:
    """The run's Adam over ``model.param_groups(cfg)`` (default: every parameter at ``cfg.lr``), and each
    group's (schedule, learning rate) for :func:`schedule_epoch`."""
    groups = model.param_groups(cfg) if hasattr(model, "param_groups") else [{"params": list(model.parameters())}]
    schedules = [(group.pop("schedule", cfg.lr_schedule), group.get("lr", cfg.lr)) for group in groups]
    return torch.optim.Adam(groups, lr=cfg.lr), schedules


def schedule_epoch(optimizer: torch.optim.Optimizer, schedules: list[tuple[str, float]], epoch: int,
                   epochs: int) -> None:
    """Set each group's learning rate (and Adam's beta1 where its schedule moves it) for training epoch ``epoch``."""
    for group, (schedule, lr) in zip(optimizer.param_groups, schedules):
        group["lr"], beta1 = scheduled(schedule, lr, epoch, epochs)
        if beta1 is not None:
            group["betas"] = (beta1, group["betas"][1])


def fit(model: torch.nn.Module, train_set: IPDDataset, valid_set: IPDDataset | None, cfg: TrainConfig,
        generator: torch.Generator, progress: bool = True, state: dict | None = None,
        on_epoch: Callable[[dict], None] | None = None) -> FitResult:
    """Train ``model`` in place; with ``cfg.restore_best`` it ends holding the weights of the
    epoch with the lowest validation loss, else the final ones (the seed's behaviour). Without
    validation (``cfg.validation`` False; ``valid_set`` is then unused) it trains ``cfg.epochs``
    epochs and keeps the final weights; ``val_loss`` is None in the history.

    ``on_epoch`` receives the training state after every epoch (weights, optimizer, ``generator``'s
    state, history, best snapshot, early-stopping verdict), live objects to save before it returns.
    Given that ``state`` back with a model built alike, the same data and ``cfg``, ``fit`` continues
    from there exactly as if it had never stopped (:class:`StateMismatch` for a state it cannot take).
    """
    optimizer, schedules = build_optimizer(model, cfg)
    if hasattr(model, "after_step"):
        optimizer.register_step_post_hook(lambda *_: model.after_step())
    result = FitResult() if state is None else load_state(state, model, optimizer, generator)
    first = cfg.epochs if result.stopped_early else result.epochs_run
    bar = tqdm(initial=first, total=cfg.epochs, desc="train", unit="epoch", disable=not progress)
    for epoch in range(first, cfg.epochs):
        start = time.perf_counter()
        schedule_epoch(optimizer, schedules, epoch, cfg.epochs)
        if hasattr(model, "start_epoch"):
            model.start_epoch(epoch, cfg)
        model.train()
        loss = _pass(model, train_set, cfg, generator, optimizer)
        model.eval()
        val_loss = None
        if cfg.validation:
            with torch.no_grad():
                val_loss = _pass(model, valid_set, cfg, generator)
        check_finite(epoch, loss, val_loss)
        record_epoch(result, cfg, epoch, loss, val_loss, time.perf_counter() - start,
                     lambda: copy.deepcopy(model.state_dict()))
        if val_loss is None:
            bar.set_postfix(loss=f"{loss:.4f}")
        else:
            bar.set_postfix(loss=f"{loss:.4f}", val_loss=f"{val_loss:.4f}")
        if on_epoch is not None:
            on_epoch({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                      "generator": generator.get_state(), "result": vars(result)})
        bar.update()
        if result.stopped_early:
            bar.set_postfix_str(f"{bar.postfix}, {stop_note(result, cfg)}")
            break
    bar.close()
    if result.best_state is not None:
        model.load_state_dict(result.best_state)
        result.restored_best = True
    return result

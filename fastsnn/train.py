"""Training: Adam on the seed's loss, the seed's early-stopping rule, a snapshot of the best weights,
and the state after each epoch that lets a killed run continue exactly where it stopped."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .config import TrainConfig
from .nn import anneal_delays, clamp_delays_, delay_param_groups
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


def batch_loss(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor, loss_scale: float) -> torch.Tensor:
    """NLL(log_softmax(loss_scale * scores)), mean over the batch."""
    return F.cross_entropy(model(x) * loss_scale, labels)


def _pass(model, data: IPDDataset, cfg: TrainConfig, generator: torch.Generator, optimizer=None) -> float:
    """Mean batch loss over one pass; trains when an optimizer is given. Syncs once, at the end."""
    losses = []
    for batch in data.batches(cfg.batch_size, generator):
        loss = batch_loss(model, batch.x, batch.labels, cfg.loss_scale)
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        losses.append(loss.detach())
    return torch.stack(losses).mean().item()


def fit(model: torch.nn.Module, train_set: IPDDataset, valid_set: IPDDataset, cfg: TrainConfig,
        generator: torch.Generator, progress: bool = True, state: dict | None = None,
        on_epoch: Callable[[dict], None] | None = None) -> FitResult:
    """Train ``model`` in place; with ``cfg.restore_best`` it ends holding the weights of the
    epoch with the lowest validation loss, else the final ones (the seed's behaviour).

    ``on_epoch`` receives the training state after every epoch (weights, optimizer, ``generator``'s
    state, history, best snapshot, early-stopping verdict), live objects to save before it returns.
    Given that ``state`` back with a model built alike, the same data and ``cfg``, ``fit`` continues
    from there exactly as if it had never stopped.
    """
    optimizer = torch.optim.Adam(delay_param_groups(model, cfg.lr, cfg.delay_lr), lr=cfg.lr)
    optimizer.register_step_post_hook(lambda *_: clamp_delays_(model))  # delays stay in [0, max_delay]
    result = FitResult()
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        result = FitResult(**state["result"])
    first = cfg.epochs if result.stopped_early else result.epochs_run
    bar = tqdm(range(first, cfg.epochs), initial=first, total=cfg.epochs, desc="train", unit="epoch",
               disable=not progress)
    for epoch in bar:
        start = time.perf_counter()
        anneal_delays(model, epoch, cfg.sigma_anneal_epochs)  # the delay kernels' width for this epoch
        model.train()
        loss = _pass(model, train_set, cfg, generator, optimizer)
        model.eval()
        with torch.no_grad():
            val_loss = _pass(model, valid_set, cfg, generator)
        if not (math.isfinite(loss) and math.isfinite(val_loss)):
            raise FloatingPointError(f"loss became non-finite at epoch {epoch} (train {loss}, validation "
                                     f"{val_loss}); lower the learning rate or check the inputs for NaN")
        result.history.append(dict(epoch=epoch, loss=loss, val_loss=val_loss,
                                   seconds=time.perf_counter() - start))
        bar.set_postfix(loss=f"{loss:.4f}", val_loss=f"{val_loss:.4f}")
        if val_loss < result.best_val_loss:
            result.best_val_loss, result.best_epoch = val_loss, epoch
            if cfg.restore_best:
                result.best_state = copy.deepcopy(model.state_dict())
        result.stopped_early = should_stop([h["val_loss"] for h in result.history], epoch, cfg.patience,
                                           cfg.min_epochs)
        if on_epoch is not None:
            on_epoch({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                      "generator": generator.get_state(), "result": vars(result)})
        if result.stopped_early:
            break
    bar.close()
    if result.best_state is not None:
        model.load_state_dict(result.best_state)
        result.restored_best = True
    return result

"""Learning-rate schedules over a run's epochs, each the value torch's scheduler gives when stepped once per
epoch (``tests/test_train.py`` checks them against ``torch.optim.lr_scheduler``).

The schedule runs over ``TrainConfig.epochs`` whether or not early stopping ends the run sooner, as
torch's schedulers run over the ``total_steps`` / ``T_max`` they are given.
"""

from __future__ import annotations

import math

SCHEDULES = ("constant", "one_cycle", "cosine")
# torch.optim.lr_scheduler.OneCycleLR's defaults: the rise's share of the run, the start's and the end's
# divisors, and the momentum (Adam's beta1) at the peak and at both ends
ONE_CYCLE_PCT_START = 0.3
ONE_CYCLE_DIV = 25.0
ONE_CYCLE_FINAL_DIV = 1e4
ONE_CYCLE_BETA1 = (0.85, 0.95)


def _cos(start: float, end: float, pct: float) -> float:
    """From ``start`` (pct 0) to ``end`` (pct 1) along half a cosine."""
    return end + (start - end) / 2 * (math.cos(math.pi * pct) + 1)


def scheduled(schedule: str, lr: float, epoch: int, epochs: int) -> tuple[float, float | None]:
    """(learning rate, Adam's beta1 or None to keep it) in training epoch ``epoch`` (0-based) of ``epochs``.

    - ``"constant"``: ``lr``.
    - ``"cosine"``: ``lr (1 + cos(pi epoch / epochs)) / 2``, torch's ``CosineAnnealingLR(T_max=epochs)``.
    - ``"one_cycle"``: torch's ``OneCycleLR(max_lr=lr, total_steps=epochs)``: from ``lr / 25`` up to ``lr`` over
      the first 30% of the epochs, then down to ``lr / 25 / 1e4``, both along half a cosine, with beta1 going
      the other way, from 0.95 down to 0.85 at the peak and back. (OneCycleLR replaces the optimizer's own
      learning rate: the peak is all that is set.)
    """
    if schedule == "constant":
        return lr, None
    if schedule == "cosine":
        return lr * (1 + math.cos(math.pi * epoch / epochs)) / 2, None
    if schedule != "one_cycle":
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    low, high = ONE_CYCLE_BETA1
    start = lr / ONE_CYCLE_DIV
    peak_epoch = float(ONE_CYCLE_PCT_START * epochs) - 1  # OneCycleLR's end of the first phase
    if epoch <= peak_epoch:
        pct = epoch / peak_epoch
        return _cos(start, lr, pct), _cos(high, low, pct)
    pct = (epoch - peak_epoch) / (epochs - 1 - peak_epoch)
    return _cos(lr, start / ONE_CYCLE_FINAL_DIV, pct), _cos(low, high, pct)

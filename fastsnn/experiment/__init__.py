"""The sound-localisation experiment, built on fastsnn's library: the IPD stimulus, the seed network,
training, evaluation, run folders, sweeps, figures and the ``fastsnn`` command.

It imports only the library's public names (``fastsnn``, ``fastsnn.nn``, ``fastsnn.ops``,
``fastsnn.cpu``); nothing in the library imports it. From Python, what ``fastsnn train`` and
``fastsnn sweep`` do::

    from fastsnn.experiment import ModelConfig, RunConfig, train
    run = train(RunConfig(model=ModelConfig(hidden=64)), out="runs/hidden64")
    print(run.metrics["test_accuracy"], run.folder)

    from fastsnn.experiment import sweep
    rows = sweep(RunConfig(), {"tau_ms": [2.0, 5.0, 10.0]}, seeds=[0, 1], out="sweeps/tau")

Modules: ``config`` (the run's settings), ``stimulus`` (the IPD data sets; ``stimulus_cpu`` their CPU
kernel), ``model`` (the network), ``training`` (the loop), ``evaluate`` (metrics), ``run`` (a run folder
from start to finish), ``files`` (atomic writes, locks), ``plots``, ``sweeps`` (+ ``sweep_summary``,
``sweep_plots``) and ``cli``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .config import ModelConfig, RunConfig, StimulusConfig, TrainConfig
from .run import evaluate_checkpoint, load_checkpoint, load_run_config, new_run_dir, train_run
from .sweeps import report, sweep

__all__ = ["RunConfig", "StimulusConfig", "ModelConfig", "TrainConfig", "Run", "train", "evaluate_checkpoint",
           "load_checkpoint", "load_run_config", "sweep", "report"]


@dataclass(frozen=True)
class Run:
    """A finished run: its folder (``config.json``, ``metrics.json``, ``checkpoint.pt``, figures), its
    configuration and its metrics (as in ``metrics.json``)."""

    folder: Path
    config: RunConfig
    metrics: dict

    def model(self, device: torch.device | str = "cpu") -> torch.nn.Module:
        """The trained network, from ``checkpoint.pt``."""
        return load_checkpoint(self.folder / "checkpoint.pt", device)[1]


def train(config: RunConfig | None = None, out: str | Path | None = None, *, progress: bool = True,
          overwrite: bool = False, resume: bool = False) -> Run:
    """Train and evaluate ``config`` (default: the seed's) into the run folder ``out`` (default: a new
    ``runs/<timestamp>``), exactly as ``fastsnn train`` does; ``overwrite`` and ``resume`` as its flags."""
    config = config if config is not None else RunConfig()
    folder = Path(out) if out is not None else new_run_dir()
    metrics = train_run(config, folder, progress=progress, overwrite=overwrite, resume=resume)
    return Run(folder, config, metrics)

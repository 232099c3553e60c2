"""A whole run: build data and model from a config, train, evaluate, write the run folder.

A run folder holds ``config.json``, ``metrics.json``, ``history.csv``,
``checkpoint.pt`` and the PNG figures ``inputs.png``, ``loss.png``,
``ipd_hist_{train,test}.png`` and ``confusion_{train,test}.png``.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import torch

from . import __version__, plots
from .config import RunConfig
from .evaluate import Evaluation, evaluate
from .model import IPDNetwork
from .ops import resolve_backend
from .stimulus import IPDDataset
from .train import fit

# Independent random streams of a run, derived from its seed.
_STREAMS = {"model": 0, "data": 1, "train": 2, "eval": 3, "figures": 4}


def generator(seed: int, stream: str) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 16 + _STREAMS[stream])


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch sees no CUDA device; use --device cpu or auto")
    return torch.device(device)


def default_out_dir() -> Path:
    return Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")


def build_model(config: RunConfig, device: torch.device) -> IPDNetwork:
    resolve_backend(config.model.backend, device)  # fail before any work if it cannot run here
    return IPDNetwork(config.stimulus, config.model, generator(config.train.seed, "model")).to(device)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def _write_history(path: Path, history: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["epoch", "loss", "val_loss", "seconds"])
        writer.writeheader()
        writer.writerows(history)


def _figures(out: Path, label: str, result: Evaluation, num_classes: int) -> None:
    plots.ipd_histogram(result, num_classes, out / f"ipd_hist_{label}.png", label)
    plots.confusion_matrix(result, out / f"confusion_{label}.png", label)


def train_run(config: RunConfig, out: Path | None = None, progress: bool = True) -> dict:
    """Train and evaluate the seed network as ``config`` says; write the run folder; return the metrics."""
    start = time.perf_counter()
    tc = config.train
    if tc.threads is not None:
        torch.set_num_threads(tc.threads)
    device = resolve_device(tc.device)
    out = Path(out) if out is not None else default_out_dir()
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "config.json", config.to_dict())

    model = build_model(config, device)
    data_gen = generator(tc.seed, "data")
    train_set = IPDDataset.random(tc.train_samples, config.stimulus, data_gen, device)
    valid_set = IPDDataset.random(tc.valid_samples, config.stimulus, data_gen, device)
    test_set = IPDDataset.random(tc.test_samples, config.stimulus, data_gen, device)

    result = fit(model, train_set, valid_set, tc, generator(tc.seed, "train"), progress=progress)
    train_seconds = time.perf_counter() - start
    eval_gen = generator(tc.seed, "eval")
    on_train = evaluate(model, train_set, tc.batch_size, eval_gen)
    on_test = evaluate(model, test_set, tc.batch_size, eval_gen)
    metrics = {
        **on_test.summary("test"), **on_train.summary("train"),
        "epochs": result.epochs_run, "best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss,
        "stopped_early": result.stopped_early, "restored_best": result.restored_best,
        "train_seconds": train_seconds, "wall_seconds": time.perf_counter() - start,
        "device": str(device), "backend": resolve_backend(config.model.backend, device),
        "threads": torch.get_num_threads(), "fastsnn_version": __version__, "torch_version": str(torch.__version__),
    }
    torch.save({"config": config.to_dict(), "state_dict": model.state_dict(), "metrics": metrics},
               out / "checkpoint.pt")
    _write_history(out / "history.csv", result.history)
    plots.input_rasters(config.stimulus, out / "inputs.png", generator(tc.seed, "figures"))
    plots.loss_curves(result.history, out / "loss.png")
    _figures(out, "train", on_train, config.stimulus.num_classes)
    _figures(out, "test", on_test, config.stimulus.num_classes)
    metrics["wall_seconds"] = time.perf_counter() - start
    _write_json(out / "metrics.json", metrics)
    return metrics


def load_checkpoint(path: Path, device: torch.device | str = "cpu", backend: str | None = None):
    """(config, model) from a ``checkpoint.pt``; ``backend`` overrides the one it was trained with."""
    data = torch.load(path, map_location="cpu", weights_only=True)
    config = RunConfig.from_dict(data["config"])
    if backend is not None:
        config = replace(config, model=replace(config.model, backend=backend))
    model = build_model(config, torch.device(device))
    model.load_state_dict(data["state_dict"])
    return config, model


def evaluate_checkpoint(path: Path, seed: int, out: Path | None = None, device: str = "auto",
                        backend: str | None = None) -> dict:
    """Re-evaluate a checkpoint on a fresh test set drawn from ``seed``; write ``evaluate-seed{seed}.json``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    dev = resolve_device(device)
    config, model = load_checkpoint(path, dev, backend)
    tc = config.train
    test_set = IPDDataset.random(tc.test_samples, config.stimulus, generator(seed, "data"), dev)
    result = evaluate(model, test_set, tc.batch_size, generator(seed, "eval"))
    metrics = {**result.summary("test"), "checkpoint": str(path), "seed": seed, "samples": tc.test_samples}
    out = Path(out) if out is not None else path.parent
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / f"evaluate-seed{seed}.json", metrics)
    _figures(out, f"eval-seed{seed}", result, config.stimulus.num_classes)
    return metrics

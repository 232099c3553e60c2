"""PNG figures of a run. Uses matplotlib's object API (no pyplot state, no display needed)."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from matplotlib.figure import Figure

from .config import StimulusConfig
from .evaluate import Evaluation
from .stimulus import IPDDataset


def input_rasters(config: StimulusConfig, path: Path, generator: torch.Generator, shown: int = 8) -> None:
    """Input spike rasters (fibre x time) for ``shown`` IPDs spread over (-90, 90) degrees."""
    ipd = (torch.arange(shown, dtype=torch.float64) + 0.5) / shown * math.pi - math.pi / 2
    data = IPDDataset(ipd, IPDDataset.draw_keys(shown, generator), config)
    spikes = data.spikes(torch.arange(shown), offset=torch.rand((), generator=generator).item())
    cols = math.ceil(shown / 2)
    fig = Figure(figsize=(2.6 * cols, 5.6), dpi=100)
    axes = fig.subplots(2, cols, squeeze=False, sharex=True, sharey=True)
    for i, ax in enumerate(axes.flat):
        if i >= shown:
            ax.axis("off")
            continue
        ax.imshow(spikes[i].T.numpy(), aspect="auto", interpolation="nearest", cmap="gray_r", origin="lower")
        ax.axhline(config.anf_per_ear - 0.5, color="tab:red", lw=0.8)
        ax.set_title(f"IPD = {math.degrees(ipd[i]):.0f} deg")
        if i >= cols:
            ax.set_xlabel(f"time step ({config.dt_ms:g} ms)")
        if i % cols == 0:
            ax.set_ylabel("input fibre (ear 0 below the line)")
    fig.suptitle("Poisson auditory-nerve input")
    fig.tight_layout()
    fig.savefig(path)


def loss_curves(history: list[dict], path: Path, title: str) -> None:
    """Training and validation loss per epoch, the best validation epoch marked; ``title`` names the run."""
    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.subplots()
    ax.plot(epochs, [h["loss"] for h in history], label="training")
    validated = [h for h in history if h["val_loss"] is not None]  # none when trained without validation
    if validated:
        ax.plot(epochs, [h["val_loss"] for h in history], label="validation")
        best = min(validated, key=lambda h: h["val_loss"])
        ax.axvline(best["epoch"], color="gray", ls=":", label=f"best validation (epoch {best['epoch']})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (NLL)")
    ax.set_title(title, fontsize=9, wrap=True)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def ipd_histogram(result: Evaluation, num_classes: int, path: Path, label: str) -> None:
    """Histograms of the true IPDs and of the estimated ones (class midpoints), in degrees: one bin per
    class, the two counts side by side in the colours of the legend."""
    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.subplots()
    bins = torch.linspace(-90, 90, num_classes + 1).tolist()
    ax.hist([torch.rad2deg(result.ipd_true).numpy(), torch.rad2deg(result.ipd_est).numpy()], bins=bins,
            color=["tab:blue", "tab:orange"], label=["true", "estimated"])
    ax.set_xticks(bins, [f"{edge:g}" for edge in bins], fontsize=8)
    ax.set_xlabel("IPD (deg), one bin per class")
    ax.set_ylabel("samples")
    ax.set_title(f"{label}: accuracy {100 * result.accuracy:.1f}%, error {result.abs_error_deg:.1f} deg")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def confusion_matrix(result: Evaluation, path: Path, label: str) -> None:
    """Confusion matrix normalised per true class, true class on x, estimated on y; both axes tick each
    class at its IPD bin's midpoint (deg)."""
    num_classes = result.confusion.shape[0]
    fig = Figure(figsize=(5.4, 4.8), dpi=100)
    ax = fig.subplots()
    image = ax.imshow(result.confusion.T.numpy(), origin="lower", vmin=0, vmax=1, cmap="viridis",
                      interpolation="nearest")
    fig.colorbar(image, ax=ax, label="fraction of the true class")
    classes = range(num_classes)
    names = [f"{(k + 0.5) * 180 / num_classes - 90:g}" for k in classes]
    ax.set_xticks(classes, names, rotation=90, fontsize=8)
    ax.set_yticks(classes, names, fontsize=8)
    ax.set_xlabel("true IPD class (bin midpoint, deg)")
    ax.set_ylabel("estimated IPD class (bin midpoint, deg)")
    ax.set_title(f"{label} confusion matrix")
    fig.tight_layout()
    fig.savefig(path)

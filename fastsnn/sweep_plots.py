"""Figures of a sweep, from the finished rows of its ``results.csv`` (values as strings).

``heatmap.png``: test accuracy over anf_per_ear x hidden, mean over seeds. ``accuracy_vs_hidden.png``:
test accuracy against hidden units, one line per anf_per_ear, mean ± standard deviation over seeds.
``walltime_vs_size.png``: wall time of each run against the number of weights
(``2 * anf_per_ear * hidden + hidden * num_classes``), log-log.
When other config fields vary too (``group_by``), they split the heatmap into panels and the lines and
points into more series; an axis with a single value still draws (one row or column of cells).
Matplotlib's object API: no pyplot state, no display needed.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter

FIGURES = ("heatmap.png", "accuracy_vs_hidden.png", "walltime_vs_size.png")


def _label(row: dict, group_by: list[str]) -> str:
    return ", ".join(f"{key}={row[key]}" for key in group_by)


def _order(value: str) -> tuple:
    """Sort key of a CSV value: numbers by value, before other text."""
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


def _groups(rows: list[dict], group_by: list[str]) -> dict[str, dict[tuple[int, int], list[dict]]]:
    """label of the other varying fields -> (anf_per_ear, hidden) -> the rows (one per seed)."""
    groups: dict[str, dict[tuple[int, int], list[dict]]] = {}
    for row in sorted(rows, key=lambda r: [_order(r[key]) for key in group_by]):
        cell = (int(row["anf_per_ear"]), int(row["hidden"]))
        groups.setdefault(_label(row, group_by), {}).setdefault(cell, []).append(row)
    return groups


def _values(rows: list[dict], key: str) -> np.ndarray:
    return np.array([float(row[key]) for row in rows])


def _std(x: np.ndarray) -> float:
    return float(x.std(ddof=1)) if len(x) > 1 else 0.0


def heatmap(rows: list[dict], group_by: list[str], path: Path) -> None:
    groups = _groups(rows, group_by)
    anfs = sorted({int(r["anf_per_ear"]) for r in rows})
    hiddens = sorted({int(r["hidden"]) for r in rows})
    means = {}
    for label, cells in groups.items():
        m = np.full((len(anfs), len(hiddens)), np.nan)
        for (anf, hidden), runs in cells.items():
            m[anfs.index(anf), hiddens.index(hidden)] = 100 * _values(runs, "test_accuracy").mean()
        means[label] = m
    low, high = min(np.nanmin(m) for m in means.values()), max(np.nanmax(m) for m in means.values())
    cols = min(len(means), 3)
    nrows = math.ceil(len(means) / cols)
    fig = Figure(figsize=(cols * max(3.5, 0.9 * len(hiddens) + 2), nrows * max(2.8, 0.6 * len(anfs) + 1.8)),
                 dpi=100, layout="constrained")
    axes = fig.subplots(nrows, cols, squeeze=False)
    for ax, (label, m) in zip(axes.flat, means.items()):
        image = ax.imshow(m, origin="lower", aspect="auto", cmap="viridis", vmin=low, vmax=high)
        for i, j in zip(*np.nonzero(np.isfinite(m))):
            dark = m[i, j] < (low + high) / 2
            ax.text(j, i, f"{m[i, j]:.1f}", ha="center", va="center", fontsize=8, color="white" if dark else "black")
        ax.set_xticks(range(len(hiddens)), labels=[str(h) for h in hiddens])
        ax.set_yticks(range(len(anfs)), labels=[str(a) for a in anfs])
        ax.set_xlabel("hidden units")
        ax.set_ylabel("anf_per_ear")
        ax.set_title(label, fontsize=9)
    for ax in axes.flat[len(means):]:
        ax.axis("off")
    fig.colorbar(image, ax=axes.ravel().tolist(), label="test accuracy (%)")
    fig.suptitle("test accuracy, mean over seeds")
    fig.savefig(path)


def accuracy_vs_hidden(rows: list[dict], group_by: list[str], path: Path) -> None:
    fig = Figure(figsize=(6.4, 4.4), dpi=100, layout="constrained")
    ax = fig.subplots()
    for label, cells in _groups(rows, group_by).items():
        for anf in sorted({anf for anf, _ in cells}):
            hiddens = sorted(h for a, h in cells if a == anf)
            accs = [100 * _values(cells[anf, h], "test_accuracy") for h in hiddens]
            ax.errorbar(hiddens, [a.mean() for a in accs], yerr=[_std(a) for a in accs], marker="o", capsize=3,
                        label=", ".join(filter(None, [f"anf_per_ear={anf}", label])))
    hiddens = sorted({int(r["hidden"]) for r in rows})
    if hiddens[-1] >= 4 * hiddens[0]:
        ax.set_xscale("log", base=2)
    ax.set_xticks(hiddens, labels=[str(h) for h in hiddens])
    ax.minorticks_off()
    ax.set_xlabel("hidden units")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("test accuracy, mean ± std over seeds")
    ax.legend(fontsize=8)
    fig.savefig(path)


def walltime_vs_size(rows: list[dict], group_by: list[str], path: Path) -> None:
    fig = Figure(figsize=(6.4, 4.4), dpi=100, layout="constrained")
    ax = fig.subplots()
    for label, cells in _groups(rows, group_by).items():
        for anf in sorted({anf for anf, _ in cells}):
            runs = [r for (a, _), rs in cells.items() if a == anf for r in rs]
            weights = [int(r["hidden"]) * (2 * anf + int(r["num_classes"])) for r in runs]
            ax.scatter(weights, _values(runs, "wall_seconds"), label=", ".join(filter(None, [f"anf_per_ear={anf}",
                                                                                              label])))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(LogFormatter())
    ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False))
    ax.set_xlabel("weights (inputs x hidden + hidden x classes)")
    ax.set_ylabel("wall time per run (s)")
    ax.set_title("wall time per run: training, evaluation and figures")
    ax.legend(fontsize=8)
    fig.savefig(path)


def draw(rows: list[dict], group_by: list[str], out: Path) -> list[Path]:
    """Write :data:`FIGURES` into ``out``; return their paths."""
    paths = [Path(out) / name for name in FIGURES]
    for draw_one, path in zip((heatmap, accuracy_vs_hidden, walltime_vs_size), paths):
        draw_one(rows, group_by, path)
    return paths


def summary(rows: list[dict], group_by: list[str]) -> list[str]:
    """One line per point: its fields, seeds, test accuracy and error (mean ± std), mean wall time."""
    lines = []
    for label, cells in _groups(rows, group_by).items():
        for (anf, hidden), runs in sorted(cells.items()):
            acc, err = 100 * _values(runs, "test_accuracy"), _values(runs, "test_abs_error_deg")
            name = ", ".join(filter(None, [f"anf_per_ear={anf}, hidden={hidden}", label]))
            lines.append(f"{name}: {len(runs)} seed{'s' if len(runs) > 1 else ''}, test accuracy "
                         f"{acc.mean():.1f} ± {_std(acc):.1f}%, error {err.mean():.1f} ± {_std(err):.1f} deg, "
                         f"{_values(runs, 'wall_seconds').mean():.1f} s per run")
    return lines

"""Figures of a sweep that follow its grid, from the finished rows of its ``results.csv``.

The keys that vary take roles (:class:`Layout`): ``x`` (the horizontal axis), ``hue`` (one line or
heatmap row per value) and ``panels`` (one subplot per combination of the rest). Numeric keys are drawn
at their values (a log axis when they span more than a decade), other keys (true/false, names) as
categories. Figures, each titled with the machine the runs were measured on:

- ``<metric>_vs_<x>.png``: the metric (and test error beside accuracy) against ``x``, mean ± std over
  seeds, every seed's value a dot;
- ``heatmap_<x>_x_<hue>.png`` (two keys or more): the metric's mean over ``x`` x ``hue``;
- ``walltime_vs_<x>.png``: wall time per run against ``x``, or against the number of weights
  (``walltime_vs_weights.png``) when ``x`` sets the model size.

Matplotlib's object API: no pyplot state, no display needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.transforms import offset_copy

from .sweep_summary import METRICS, Metric, group, machine, order, show, stats, values

SIZE_KEYS = ("anf_per_ear", "hidden")
_PARTNER = {"test_accuracy": "test_abs_error_deg", "test_abs_error_deg": "test_accuracy",
            "train_accuracy": "train_abs_error_deg", "train_abs_error_deg": "train_accuracy"}
_AXIS_LABEL = {"weights": "weights (2 anf_per_ear x hidden + hidden x classes)", "hidden": "hidden units"}


@dataclass(frozen=True)
class Layout:
    """The role of each varying key."""

    x: str
    hue: str | None = None
    panels: tuple[str, ...] = ()

    @property
    def keys(self) -> tuple[str, ...]:
        """Every key, slowest-varying first: panels, hue, x (the columns of the summary)."""
        return (*self.panels, *([self.hue] if self.hue else []), self.x)


def _numeric(vals: list[str]) -> bool:
    return all(order(v)[0] == 0 for v in vals)


def layout(grid: dict[str, list[str]], x: str | None = None, hue: str | None = None) -> Layout:
    """Roles for the varying keys of ``grid`` (key -> its distinct values as strings): ``x`` and ``hue``
    when given, else numeric keys before categorical ones, more values first. With no key varying, ``x``
    is ``hidden``. Raises ``ValueError`` naming the flag and the valid keys."""
    ranked = sorted(grid, key=lambda k: (not _numeric(grid[k]), -len(grid[k])))
    _check("--x", x, ranked)
    x = x or next((k for k in ranked if k != hue), "hidden")
    _check("--hue", hue, [k for k in ranked if k != x])
    rest = [k for k in ranked if k not in (x, hue)]
    hue = hue or (rest.pop(0) if rest else None)
    return Layout(x, hue, tuple(rest))


def _check(flag: str, key: str | None, valid: list[str]) -> None:
    if key is not None and key not in valid:
        raise ValueError(f"{flag} {key!r} is not a swept key{' other than --x' if flag == '--hue' else ''}; "
                         f"valid: {', '.join(valid) or 'none (no config field takes more than one value)'}")


# axes ---------------------------------------------------------------------------------------------------

def _positions(vals: list[str]) -> tuple[dict[str, float], bool]:
    """Where each value of a key sits on an axis, and whether the axis is logarithmic."""
    if not _numeric(vals):
        return {v: float(i) for i, v in enumerate(vals)}, False
    nums = [float(v) for v in vals]
    return dict(zip(vals, nums)), min(nums) > 0 and max(nums) > 10 * min(nums)


def _xaxis(ax, key: str, vals: list[str], pos: dict[str, float], log: bool) -> None:
    if log:
        ax.set_xscale("log")
    if len(vals) <= 12:  # a tick at each value; more would overlap
        ax.set_xticks([pos[v] for v in vals], labels=[show(v) for v in vals])
        ax.minorticks_off()
    if not _numeric(vals):
        ax.set_xlim(-0.5, len(vals) - 0.5)
    ax.set_xlabel(_AXIS_LABEL.get(key, key))


def _colors(vals: list[str]) -> list:
    if _numeric(vals):
        return list(colormaps["viridis"](np.linspace(0, 0.85, len(vals))))
    return [colormaps["tab10"](i % 10) for i in range(len(vals))]


def _title(key_vals: dict[str, str]) -> str:
    return ", ".join(f"{k}={show(v)}" for k, v in key_vals.items())


def _figure(n_rows: int, n_cols: int, width: float, height: float, **share) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(max(n_cols * width, 6.4), n_rows * height + 0.8), dpi=100, layout="constrained")
    return fig, fig.subplots(n_rows, n_cols, squeeze=False, **share)


# figures ------------------------------------------------------------------------------------------------

def _series(ax, points: dict[tuple[str], list[dict]], pos: dict[str, float], metric: Metric, shift: float,
            connect: bool, color, label: str | None) -> None:
    """One line: mean ± std of ``metric`` at each x of ``points`` (x -> its runs), drawn ``shift`` points
    to the side, each run an open dot beside it."""
    fig = ax.get_figure()
    at = np.array([pos[x] for (x,) in points])
    mean, std = (metric.scale * np.array(v) for v in zip(*(stats(r, metric.column) for r in points.values())))
    std = np.nan_to_num(std)
    ax.errorbar(at, mean, yerr=std, capsize=3, marker="o", ms=4, ls="-" if connect else "none", color=color,
                label=label, transform=offset_copy(ax.transData, fig, x=shift, units="points"))
    dots = [(pos[x], j - (len(runs) - 1) / 2, metric.scale * float(run[metric.column]))
            for (x,), runs in points.items() for j, run in enumerate(runs)]
    for x, j, y in dots:
        ax.plot(x, y, "o", ms=4, mfc="none", alpha=0.6, color=color,
                transform=offset_copy(ax.transData, fig, x=shift + 2.5 * j, units="points"))
    # shifted artists do not count for autoscaling: give the axes their data extent
    extent = np.array([*((x, y) for x, _, y in dots), *zip(at, mean - std), *zip(at, mean + std)])
    ax.update_datalim(extent[extent[:, 1] > 0] if ax.get_yscale() == "log" else extent)


def lines(rows: list[dict], lay: Layout, metrics: list[Metric], path: Path, suptitle: str) -> None:
    """Mean ± std of each metric against ``lay.x``, one line per ``lay.hue`` value, each seed a dot; one
    panel per ``lay.panels`` combination (metrics side by side for one panel, else one row each, sharing
    the y axis). Lines sit a few points apart so that their error bars do not hide each other."""
    xs, hues = values(rows, lay.x), values(rows, lay.hue) if lay.hue else [""]
    pos, log = _positions(xs)
    colors = dict(zip(hues, _colors(hues) if lay.hue else ["C0"]))
    panels = group(rows, lay.panels)
    width = 5.0 if len(xs) < 8 else 6.5
    if len(panels) == 1:
        fig, axes = _figure(1, len(metrics), width, 3.6)
        axes = axes.T
    else:
        fig, axes = _figure(len(metrics), len(panels), width, 3.4, sharey="row")
    for col, (panel, panel_rows) in enumerate(panels.items()):
        for ax, metric in zip(axes[:, col], metrics):
            if metric.log and _spans_decade(rows, metric):
                ax.set_yscale("log")
            for hue, hue_rows in group(panel_rows, [lay.hue] if lay.hue else []).items():
                hue = hue[0] if hue else ""
                _series(ax, group(hue_rows, [lay.x]), pos, metric, 6 * (hues.index(hue) - (len(hues) - 1) / 2),
                        _numeric(xs), colors[hue], show(hue) if lay.hue else None)
            _xaxis(ax, lay.x, xs, pos, log)
            ax.autoscale_view()
            ax.set_ylabel(metric.label)
            ax.grid(alpha=0.3)
            if panel:
                ax.set_title(_title(dict(zip(lay.panels, panel))), fontsize=9)
    if lay.hue:
        axes[0, -1].legend(title=lay.hue, fontsize=8, title_fontsize=8)
    fig.suptitle(suptitle, fontsize=10)
    fig.savefig(path)


def _spans_decade(rows: list[dict], metric: Metric) -> bool:
    x = [float(row[metric.column]) for row in rows]
    return min(x) > 0 and max(x) > 10 * min(x)


def heatmap(rows: list[dict], lay: Layout, metric: Metric, path: Path, suptitle: str) -> None:
    """The metric's mean over seeds in each (``lay.x``, ``lay.hue``) cell, one panel per ``lay.panels``
    combination, one colour scale for all."""
    xs, hues = values(rows, lay.x), values(rows, lay.hue)
    panels = {}
    for panel, panel_rows in group(rows, lay.panels).items():
        m = np.full((len(hues), len(xs)), np.nan)
        for (hue, x), runs in group(panel_rows, [lay.hue, lay.x]).items():
            m[hues.index(hue), xs.index(x)] = metric.scale * stats(runs, metric.column)[0]
        panels[panel] = m
    low, high = np.nanmin(list(panels.values())), np.nanmax(list(panels.values()))
    cols = min(len(panels), 3)
    fig, axes = _figure(math.ceil(len(panels) / cols), cols, max(3.6, 0.75 * len(xs) + 2),
                        max(2.6, 0.45 * len(hues) + 1.6))
    for ax, (panel, m) in zip(axes.flat, panels.items()):
        image = ax.imshow(m, origin="lower", aspect="auto", cmap="viridis", vmin=low, vmax=high)
        for i, j in zip(*np.nonzero(np.isfinite(m))):
            ax.text(j, i, f"{m[i, j]:.{metric.digits}f}", ha="center", va="center", fontsize=8,
                    color="white" if m[i, j] < (low + high) / 2 else "black")
        ax.set_xticks(range(len(xs)), labels=[show(x) for x in xs])
        ax.set_yticks(range(len(hues)), labels=[show(h) for h in hues])
        ax.set_xlabel(_AXIS_LABEL.get(lay.x, lay.x))
        ax.set_ylabel(_AXIS_LABEL.get(lay.hue, lay.hue))
        if panel:
            ax.set_title(_title(dict(zip(lay.panels, panel))), fontsize=9)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    fig.colorbar(image, ax=axes.ravel().tolist(), label=metric.label)
    fig.suptitle(suptitle, fontsize=10)
    fig.savefig(path)


def _with_weights(rows: list[dict]) -> list[dict]:
    return [{**row, "weights": str(int(row["hidden"]) * (2 * int(row["anf_per_ear"]) + int(row["num_classes"])))}
            for row in rows]


def draw(rows: list[dict], lay: Layout, metric: str, out: Path) -> list[Path]:
    """Write the figures of ``rows`` into ``out`` (``metric``: a :data:`METRICS` column); return their paths."""
    if metric not in METRICS:
        raise ValueError(f"--metric {metric!r} is not a metric; valid: {', '.join(METRICS)}")
    shown = [METRICS[metric], *([METRICS[_PARTNER[metric]]] if metric in _PARTNER else [])]
    where = f"\n{len(rows)} runs, measured on {machine(rows)}"
    by_hue = f" by {lay.hue}" if lay.hue else ""
    spread = ": mean ± std over seeds (dots: each seed)"
    paths = [Path(out) / f"{shown[0].stem}_vs_{lay.x}.png"]
    lines(rows, lay, shown, paths[-1], " and ".join(_name(m) for m in shown) + f" against {lay.x}{by_hue}" +
          spread + where)
    if lay.hue:
        suffix = "" if metric == "test_accuracy" else f"_{shown[0].stem}"
        paths.append(Path(out) / f"heatmap_{lay.x}_x_{lay.hue}{suffix}.png")
        heatmap(rows, lay, shown[0], paths[-1], f"{_name(shown[0])}, mean over seeds" + where)
    by_size = lay.x in SIZE_KEYS
    wall = replace(lay, x="weights") if by_size else lay
    paths.append(Path(out) / f"walltime_vs_{wall.x}.png")
    lines(_with_weights(rows) if by_size else rows, wall, [METRICS["wall_seconds"]], paths[-1],
          f"wall time per run against {wall.x}{by_hue}" + spread + where)
    return paths


def _name(metric: Metric) -> str:
    return metric.label.partition(" (")[0]

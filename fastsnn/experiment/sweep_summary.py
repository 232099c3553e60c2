"""A sweep's numbers: its rows grouped by grid point, mean ± std and n over seeds, the machine they were
measured on, and ``summary.md`` / ``summary.csv`` (one row per grid point).

Rows are the finished rows of ``results.csv``, every value a string as the file holds it.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from .config import RunConfig


class Metric(NamedTuple):
    """A results column as figures and tables show it: ``scale * value`` with ``digits`` decimals."""

    column: str
    stem: str  # in file names
    label: str  # on axes, with the unit
    scale: float = 1.0
    digits: int = 1
    log: bool = False  # a log axis when the values span more than a decade


METRICS = {m.column: m for m in (
    Metric("test_accuracy", "accuracy", "test accuracy (%)", 100),
    Metric("test_abs_error_deg", "error", "test error (deg)"),
    Metric("train_accuracy", "train_accuracy", "train accuracy (%)", 100),
    Metric("train_abs_error_deg", "train_error", "train error (deg)"),
    Metric("epochs_run", "epochs", "epochs run"),
    Metric("best_epoch", "best_epoch", "best validation epoch"),
    Metric("wall_seconds", "walltime", "wall time per run (s)", log=True),
    Metric("peak_rss_mib", "memory", "peak resident memory (MiB)", digits=0, log=True),
)}
SUMMARY = ("test_accuracy", "test_abs_error_deg", "epochs_run", "wall_seconds")


def order(value: str) -> tuple:
    """Sort key of a CSV value: numbers by value, before other text."""
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


def show(value: str) -> str:
    """A CSV value for a label: ``5.0`` -> ``5``, an empty ``None`` field -> ``None``."""
    return "None" if value == "" else value.removesuffix(".0")


def values(rows: list[dict], key: str) -> list[str]:
    """The distinct values of ``key`` in ``rows``, in :func:`order`."""
    return sorted({row[key] for row in rows}, key=order)


def group(rows: list[dict], keys: Sequence[str]) -> dict[tuple[str, ...], list[dict]]:
    """``rows`` by their values of ``keys`` (one entry per grid point when ``keys`` are the grid's),
    in :func:`order` of the first key, then the next, ..."""
    groups: dict[tuple[str, ...], list[dict]] = {}
    for row in sorted(rows, key=lambda r: [order(r[key]) for key in keys]):
        groups.setdefault(tuple(row[key] for key in keys), []).append(row)
    return groups


def stats(rows: list[dict], column: str) -> tuple[float, float]:
    """(mean, sample standard deviation) of ``column`` over ``rows``; the std is NaN for one row."""
    x = np.array([float(row[column]) for row in rows])
    return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else math.nan


def machine(rows: list[dict]) -> str:
    """Where ``rows`` ran, e.g. ``AMD EPYC, device cpu, 1 thread``; each distinct one, joined by ``; ``."""
    seen = {}
    for row in rows:
        device = row["device_used"] + (f" ({row['gpu_model']})" if row.get("gpu_model") else "")
        threads = row["threads_used"]
        seen[f"{row.get('cpu_model') or 'an unrecorded CPU'}, device {device}, "
             f"{threads} thread{'' if threads == '1' else 's'}"] = None
    return "; ".join(seen)


def base(rows: list[dict], keys: Sequence[str]) -> str:
    """The fields other than ``keys`` and seed that differ from the seed's defaults, as ``key=value``."""
    defaults = {k: "" if v is None else str(v) for part in RunConfig().to_dict().values() for k, v in part.items()}
    return ", ".join(f"{key}={show(rows[0][key])}" for key, default in defaults.items()
                     if key not in keys and key != "seed" and rows[0][key] != default)


def _cell(mean: float, std: float, metric: Metric) -> str:
    text = f"{metric.scale * mean:.{metric.digits}f}"
    return text if math.isnan(std) else f"{text} ± {metric.scale * std:.{metric.digits}f}"


def summary_csv(rows: list[dict], keys: Sequence[str]) -> str:
    """One line per grid point: its ``keys``, ``n``, then ``<metric>_mean`` and ``<metric>_std`` of each
    :data:`SUMMARY` metric in the units of ``results.csv`` (an empty std for a single seed)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*keys, "n", *(f"{m}_{s}" for m in SUMMARY for s in ("mean", "std"))])
    for point, runs in group(rows, keys).items():
        numbers = [x for m in SUMMARY for x in stats(runs, m)]
        writer.writerow([*point, len(runs), *("" if math.isnan(x) else repr(x) for x in numbers)])
    return buf.getvalue()


def summary_md(rows: list[dict], keys: Sequence[str], title: str) -> str:
    """A markdown header (where it ran, the fixed fields) and a table, one row per grid point."""
    fixed = base(rows, keys)
    lines = [f"# {title}", "",
             f"{len(rows)} runs, measured on {machine(rows)}; mean ± std (sample) over n seeds.",
             *([f"Fixed: {fixed} (other fields at the seed's defaults)."] if fixed else []), "",
             "| " + " | ".join([*keys, "n", *(METRICS[m].label for m in SUMMARY)]) + " |",
             "|" + "---:|" * (len(keys) + 1 + len(SUMMARY))]
    for point, runs in group(rows, keys).items():
        cells = [_cell(*stats(runs, m), METRICS[m]) for m in SUMMARY]
        lines.append("| " + " | ".join([*map(show, point), str(len(runs)), *cells]) + " |")
    return "\n".join(lines) + "\n"


def write(rows: list[dict], keys: Sequence[str], out: Path) -> str:
    """Write ``out/summary.md`` and ``out/summary.csv``; return the markdown."""
    out = Path(out)
    text = summary_md(rows, keys, f"{out.name}: " + (" x ".join(keys) or "one point"))
    (out / "summary.md").write_text(text)
    (out / "summary.csv").write_text(summary_csv(rows, keys))
    return text

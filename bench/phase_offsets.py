"""Accuracy of trained runs against the stimulus's phase offset: each run's own training and test sets
evaluated at evenly spaced offsets 0, 1/N, ..., (N-1)/N (no phase jitter). A run's metrics are each
measured at one random offset; this shows how much that draw moves them (docs/delays.md).

    python -m bench.phase_offsets RUN_FOLDER [RUN_FOLDER ...] [--offsets 20] [--threads 1]

Prints a markdown table (accuracy %, per offset, then mean, min and max) and returns its rows.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from fastsnn.experiment.run import dataset, load_checkpoint
from fastsnn.experiment.stimulus import IPDDataset


@torch.no_grad()
def accuracy(model: torch.nn.Module, data: IPDDataset, offset: float, batch_size: int = 256) -> float:
    """Fraction of ``data`` that ``model`` (in eval mode) classifies right at phase ``offset``."""
    model.eval()
    correct = 0
    for start in range(0, len(data), batch_size):
        index = torch.arange(start, min(start + batch_size, len(data)), device=data.device)
        correct += (model(data.spikes(index, offset)).argmax(1) == data.labels[index]).sum().item()
    return correct / len(data)


def run_rows(folder: Path, offsets: list[float]) -> list[dict]:
    """One row per set ("train", "test") of the run in ``folder``: its accuracy at each offset."""
    config, model = load_checkpoint(Path(folder) / "checkpoint.pt")
    rows = []
    for which in ("train", "test"):
        data = dataset(config, which, config.train.seed)
        rows.append({"run": str(folder), "set": which, "accuracy": [accuracy(model, data, o) for o in offsets]})
    return rows


def table(rows: list[dict], offsets: list[float]) -> str:
    head = "| run | set | " + " | ".join(f"{o:.2f}" for o in offsets) + " | mean | min | max |"
    lines = [head, "|" + "---|" * (len(offsets) + 5)]
    for row in rows:
        acc = [100 * a for a in row["accuracy"]]
        lines.append(f"| {row['run']} | {row['set']} | " + " | ".join(f"{a:.1f}" for a in acc)
                     + f" | {statistics.mean(acc):.1f} | {min(acc):.1f} | {max(acc):.1f} |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="run folders (each with its checkpoint.pt)")
    p.add_argument("--offsets", type=int, default=20, help="how many evenly spaced offsets in [0, 1)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    args = p.parse_args(argv)
    if args.offsets < 1:
        p.error(f"--offsets must be >= 1, got {args.offsets}")
    torch.set_num_threads(args.threads)
    offsets = [i / args.offsets for i in range(args.offsets)]
    rows = [row for folder in args.runs for row in run_rows(Path(folder), offsets)]
    print(table(rows, offsets))
    return rows


if __name__ == "__main__":
    main()

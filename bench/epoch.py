"""Where an epoch of the default run goes, and its time against the seed notebook's epoch.

    python -m bench.epoch [--rounds 3] [--epochs 4] [--threads N] [--run-epochs 10] [--no-seed] [--name SUFFIX]
                          [--out DIR]

fastsnn (in this process): ``train_run`` on the default configuration for ``--epochs`` epochs, as
``fastsnn train`` runs it (per-epoch ``resume.pt`` included), timed inside:

- stimulus: the time spent building batches (``IPDDataset.batches``), training and validation sets;
- training steps: the training pass less its stimulus (forward, backward, Adam);
- validation forwards: the validation pass less its stimulus;
- saving: the per-epoch checkpoint (``resume.pt``);
- other: the rest of the epoch (the time between the ends of two epochs).

The first epoch of each run (warm-up) is left out. "Ready inputs" times the same training steps
and validation forwards on one epoch's batches built beforehand: the floor an epoch can reach
(goal: epoch <= 1.5x that floor).

The seed notebook (``bench/seed_baseline.SEED_PATH``, a new process): ``N_EPOCHS=--epochs + 1``,
its per-epoch times from the differences of its ``t=`` lines (its first epoch left out, it also
holds the data generation). Rounds alternate fastsnn and the seed, so both see the same load.

Whole run (``--run-epochs E``, 0 to skip): ``fastsnn train --epochs E`` as a new process, once per
round: its wall time, split into start-up (process start to the run's start: imports), the epochs
(``history.csv``: the first one apart), and the end (evaluation, figures, checkpoint).

Threads: ``--threads N`` for both sides; by default fastsnn's own (``auto``) and the seed at the
machine's core count (``bench/whole_run.py`` runs it so). Writes
``OUT/epoch-<cpu>[-SUFFIX].{json,md}`` (default OUT: ``bench/results``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch

import fastsnn.experiment.run as run_module
import fastsnn.experiment.training as train_module
from fastsnn.cpu.threads import using_threads
from fastsnn.experiment.config import RunConfig
from fastsnn.experiment.stimulus import IPDDataset

from . import seed_baseline
from .common import add_out_option, cpu_name, machine, slug, write_results

PARTS = ("stimulus", "training steps", "validation forwards", "saving", "other")


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


class _Clock:
    """Accumulates, per epoch, the seconds of each part of the loop (patched into the run's modules)."""

    def __init__(self):
        self.epochs: list[dict] = []
        self.current = dict.fromkeys(("stimulus train", "stimulus valid", "train pass", "valid pass", "saving"), 0.0)
        self.last_end: float | None = None

    @contextmanager
    def installed(self):
        batches, pass_, fit = IPDDataset.batches, train_module._pass, run_module.fit
        clock = self

        def timed_batches(data, batch_size, generator, shuffle=True):
            key = "stimulus train" if clock.training else "stimulus valid"
            it = batches(data, batch_size, generator, shuffle)
            while True:
                start = time.perf_counter()
                try:
                    batch = next(it)
                except StopIteration:
                    clock.current[key] += time.perf_counter() - start
                    return
                clock.current[key] += time.perf_counter() - start
                yield batch

        def timed_pass(model, data, cfg, generator, optimizer=None):
            clock.training = optimizer is not None
            start = time.perf_counter()
            loss = pass_(model, data, cfg, generator, optimizer)
            clock.current["train pass" if optimizer is not None else "valid pass"] += time.perf_counter() - start
            return loss

        def timed_fit(*args, on_epoch=None, **kwargs):
            clock.last_end = time.perf_counter()

            def saving(state):
                start = time.perf_counter()
                on_epoch(state)
                end = time.perf_counter()
                clock.current["saving"] += end - start
                clock.epochs.append({**clock.current, "epoch": end - clock.last_end})
                clock.current = dict.fromkeys(clock.current, 0.0)
                clock.last_end = end

            return fit(*args, on_epoch=saving, **kwargs)

        self.training = False
        IPDDataset.batches, train_module._pass, run_module.fit = timed_batches, timed_pass, timed_fit
        try:
            yield self
        finally:
            IPDDataset.batches, train_module._pass, run_module.fit = batches, pass_, fit


def _parts(epoch: dict) -> dict:
    stimulus = epoch["stimulus train"] + epoch["stimulus valid"]
    steps = epoch["train pass"] - epoch["stimulus train"]
    forwards = epoch["valid pass"] - epoch["stimulus valid"]
    parts = {"stimulus": stimulus, "training steps": steps, "validation forwards": forwards,
             "saving": epoch["saving"]}
    parts["other"] = epoch["epoch"] - sum(parts.values())
    return {**parts, "epoch": epoch["epoch"]}


class _Ready:
    """A data set stand-in whose ``batches`` hands out batches built beforehand."""

    def __init__(self, batches: list):
        self.list = batches

    def batches(self, batch_size, generator, shuffle=True):
        return iter(self.list)


def ready_inputs(config: RunConfig, repeats: int) -> dict:
    """Seconds of one epoch's training steps and validation forwards on batches built beforehand (medians)."""
    tc = config.train
    device = run_module.check_run(config)
    model = run_module.build_model(config, device)
    gen = run_module.generator(tc.seed, "train")
    train_set = _Ready(list(run_module.dataset(config, "train", tc.seed, device).batches(tc.batch_size, gen)))
    valid_set = _Ready(list(run_module.dataset(config, "valid", tc.seed, device).batches(tc.batch_size, gen)))
    optimizer = torch.optim.Adam(model.parameters(), lr=tc.lr)
    steps, forwards = [], []
    with using_threads(tc.threads if tc.threads is not None else "auto"):  # as train_run
        for r in range(repeats + 1):
            model.train()
            start = time.perf_counter()
            train_module._pass(model, train_set, tc, gen, optimizer)
            middle = time.perf_counter()
            model.eval()
            with torch.no_grad():
                train_module._pass(model, valid_set, tc, gen)
            end = time.perf_counter()
            if r:  # the first is warm-up
                steps.append(middle - start)
                forwards.append(end - middle)
    return {"training steps": _median(steps), "validation forwards": _median(forwards)}


def fastsnn_epochs(config: RunConfig, work: Path) -> list[dict]:
    """The epochs of one in-process ``train_run`` (the first left out), each split into PARTS."""
    clock = _Clock()
    with clock.installed():
        run_module.train_run(config, work / "in-process", progress=False, overwrite=True)
    return [_parts(e) for e in clock.epochs[1:]]


_EPOCH_LINE = re.compile(r"^epoch (\d+) .* t=([\d.]+)s", re.M)


def seed_epochs(epochs: int, threads: int) -> list[float]:
    """The seed notebook's per-epoch seconds (its first epoch left out) from a new process."""
    env = {**os.environ, "SEED": "0", "THREADS": str(threads), "N_EPOCHS": str(epochs + 1)}
    out = subprocess.run([sys.executable, str(seed_baseline.SEED_PATH)], env=env, capture_output=True, text=True,
                         check=True).stdout
    stamps = [float(t) for _, t in _EPOCH_LINE.findall(out)]
    return [b - a for a, b in zip(stamps, stamps[1:])]


def whole_run(epochs: int, threads: int | None, work: Path) -> dict:
    """``fastsnn train --epochs E`` in a new process: wall time and where it went."""
    out = work / "whole-run"
    cmd = [sys.executable, "-m", "fastsnn", "train", "--epochs", str(epochs), "--quiet", "--overwrite",
           "--out", str(out)] + ([] if threads is None else ["--threads", str(threads)])
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    metrics = json.loads((out / "metrics.json").read_text())
    with (out / "history.csv").open() as f:
        seconds = [float(row["seconds"]) for row in csv.DictReader(f)]
    return {"wall_s": wall, "start_up_s": wall - metrics["wall_seconds"], "first_epoch_s": seconds[0],
            "later_epochs_s": sum(seconds[1:]), "epoch_median_s": _median(seconds[1:]),
            "epochs_other_s": metrics["train_seconds"] - sum(seconds),
            "end_s": metrics["wall_seconds"] - metrics["train_seconds"], "epochs": len(seconds)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=4, help="epochs per run and side (the first one left out)")
    p.add_argument("--threads", type=int, default=None, help="threads of both sides (default: fastsnn auto, "
                                                               "the seed the machine's cores)")
    p.add_argument("--run-epochs", type=int, default=10, help="epochs of the whole-run process (0: none)")
    p.add_argument("--no-seed", action="store_true", help="fastsnn only")
    p.add_argument("--name", default="", help="suffix of the results files")
    add_out_option(p, "epoch-<cpu>[-NAME].{json,md}")
    args = p.parse_args(argv)
    if args.epochs < 2:
        p.error("--epochs must be at least 2 (the first one is left out)")
    base = RunConfig()
    config = replace(base, train=replace(base.train, epochs=args.epochs, threads=args.threads))
    seed = seed_baseline.available() and not args.no_seed
    seed_threads = args.threads or os.cpu_count() or 1
    ours, theirs, runs = [], [], []
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for r in range(args.rounds):
            ours += fastsnn_epochs(config, work)
            if seed:
                theirs += seed_epochs(args.epochs, seed_threads)
            if args.run_epochs:
                runs.append(whole_run(args.run_epochs, args.threads, work))
            load.append(os.getloadavg()[0])
            print(f"round {r + 1}/{args.rounds}: fastsnn epoch {_median([e['epoch'] for e in ours]):.3f} s"
                  + (f", seed {_median(theirs):.2f} s" if theirs else "") + f", load {load[-1]:.1f}", flush=True)
        ready = ready_inputs(config, args.rounds)
    breakdown = {part: _median([e[part] for e in ours]) for part in (*PARTS, "epoch")}
    floor = ready["training steps"] + ready["validation forwards"]
    result = {"machine": machine(), "command": "python -m bench.epoch " + " ".join(argv if argv is not None
                                                                                     else sys.argv[1:]),
              "load_average": load, "threads": args.threads, "seed_threads": seed_threads if seed else None,
              "fastsnn_epochs": ours, "breakdown_median_s": breakdown, "ready_inputs_s": ready,
              "epoch_over_ready": breakdown["epoch"] / floor, "seed_epochs_s": theirs, "whole_runs": runs}
    lines = [f"Measured on {cpu_name()} ({os.cpu_count()} cores), torch {torch.__version__}, "
             f"load average {min(load):.1f}-{max(load):.1f}; `{result['command']}`.", "",
             f"fastsnn epoch, default run ({len(ours)} epochs, medians; threads "
             f"{args.threads or 'auto'}):", "", "| part | seconds | share |", "|---|---|---|"]
    lines += [f"| {part} | {breakdown[part]:.4f} | {100 * breakdown[part] / breakdown['epoch']:.0f}% |"
              for part in PARTS]
    lines += [f"| **epoch** | **{breakdown['epoch']:.4f}** | |", "",
              f"Ready inputs: training steps {ready['training steps']:.4f} s + validation forwards "
              f"{ready['validation forwards']:.4f} s = {floor:.4f} s; the epoch is "
              f"{result['epoch_over_ready']:.2f}x that (goal <= 1.5x)."]
    if theirs:
        result["seed_epoch_median_s"] = _median(theirs)
        result["speedup"] = _median(theirs) / breakdown["epoch"]
        lines += ["", f"Seed notebook epoch ({len(theirs)} epochs, {seed_threads} threads): median "
                  f"{_median(theirs):.2f} s; fastsnn's epoch is **{result['speedup']:.1f}x** faster (goal >= 30x)."]
    if runs:
        keys = ("wall_s", "start_up_s", "first_epoch_s", "later_epochs_s", "epochs_other_s", "end_s")
        med = {k: _median([r[k] for r in runs]) for k in keys}
        result["whole_run_median_s"] = med
        lines += ["", f"`fastsnn train --epochs {args.run_epochs}` as a new process ({len(runs)} runs, medians): "
                  f"{med['wall_s']:.2f} s = start-up {med['start_up_s']:.2f} + first epoch {med['first_epoch_s']:.2f}"
                  f" + {args.run_epochs - 1} more epochs {med['later_epochs_s']:.2f} + set-up, per-epoch saving "
                  f"and the rest {med['epochs_other_s']:.2f} + evaluation, figures, checkpoint {med['end_s']:.2f}."]
    table = "\n".join(lines) + "\n"
    print(table)
    stem = args.out / f"epoch-{slug(cpu_name())}{'-' + args.name if args.name else ''}"
    write_results(stem, result, table)
    return result


if __name__ == "__main__":
    main()

"""Packed sweeps against solo runs: a sweep of taus x seeds at the seed's size, whole ``fastsnn sweep`` processes.

    python -m bench.pack [--taus 3,6] [--seeds 3] [--epochs 20] [--rounds 1] [--sides packed,packed2,workers1,workers2]
                         [--out DIR]

For each sweep size (``--taus 3,6``: 3 and 6 time constants out of 2, 3.5, 5, 7, 10, 15 ms, times ``--seeds``
seeds; the seed network otherwise, ``--epochs`` epochs), each side runs the sweep in a fresh process into a
fresh folder, timed from start to exit: ``packed`` (``fastsnn sweep``'s default: packs, in one process),
``packed2`` (packs split between two processes, ``--workers 2``) and today's local settings without packing,
``workers1`` (``--pack 1``, in one process) and ``workers2`` (``--pack 1 --workers 2``, two processes of
``cores // 2`` threads). The sides alternate within each round and rounds reverse the order, so that a drift
in the machine's load hits them alike. Reported: median seconds per side, the faster packed side's speed-up
over the faster solo side, whether every packed row equals its solo row (metrics compared exactly; on the CPU
a pack computes each member as its solo run does) and the seeds' spread of test accuracy per tau, with the
machine's load before and after. Writes ``pack-<cpu>.{json,md}`` to ``--out``.

On a GPU, ``bench.gpu_check`` runs :func:`throughput` (training steps of one wide pack of 1..256 seed-size runs
on ready batches: runs per second against pack size, and the peak memory of 108 runs in one pack) and
:func:`end_to_end` (a 3-tau x 3-seed sweep's runs trained as one pack on CUDA against the same runs solo).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from .common import add_out_option, alternate, machine, slug, write_results

TAUS = (2.0, 3.5, 5.0, 7.0, 10.0, 15.0)
SIDES = {"packed": [], "packed2": ["--workers", "2"], "workers1": ["--pack", "1"],
         "workers2": ["--pack", "1", "--workers", "2"]}
METRICS = ("test_accuracy", "test_abs_error_deg", "train_accuracy", "train_abs_error_deg", "epochs_run", "best_epoch")


def load() -> str:
    """The load averages of ``/proc/loadavg`` (1, 5, 15 minutes)."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def _packed(side: str) -> bool:
    return side.startswith("packed")


def run_sweep(side: str, taus: tuple[float, ...], seeds: int, epochs: int, out: Path) -> dict:
    """One ``fastsnn sweep`` of ``side`` into ``out``: its wall time and rows."""
    shutil.rmtree(out, ignore_errors=True)
    args = [sys.executable, "-m", "fastsnn", "sweep", "--grid", "tau_ms=" + ",".join(f"{t:g}" for t in taus),
            "--seeds", str(seeds), "--epochs", str(epochs), "--quiet", "--out", str(out), *SIDES[side]]
    before = load()
    start = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{side}: fastsnn sweep failed:\n{done.stderr[-2000:]}")
    with open(out / "results.csv", newline="") as f:
        rows = {row["name"]: row for row in csv.DictReader(f)}
    return {"wall_s": wall, "load_before": before, "load_after": load(), "rows": rows}


def spread(rows: dict[str, dict]) -> dict[str, float]:
    """Per tau: the largest minus the smallest test accuracy over the seeds."""
    by_tau: dict[str, list[float]] = {}
    for row in rows.values():
        by_tau.setdefault(row["tau_ms"], []).append(float(row["test_accuracy"]))
    return {tau: max(accs) - min(accs) for tau, accs in by_tau.items()}


def seed_sweep(runs: int, seeds: int = 3, device: str = "cuda", base=None, **train):
    """``runs`` configurations of ``base`` (default: the seed network) on ``device``, ``runs // seeds`` time
    constants (2 to 15 ms) times ``seeds`` seeds, in stream order (a seed's runs next to each other)."""
    from fastsnn.experiment.config import RunConfig

    base = base or RunConfig()
    taus = -(-runs // seeds)
    return [replace(base, model=replace(base.model, tau_ms=2.0 + 13.0 * (i // seeds) / max(taus - 1, 1)),
                    train=replace(base.train, seed=i % seeds, device=device, **train))
            for i in sorted(range(runs), key=lambda i: i % seeds)]


def throughput(sizes=(1, 2, 4, 8, 16, 32, 64, 108, 128, 256), device: str = "cuda", repeats: int = 20,
               base=None) -> dict:
    """One training step (forward, loss, backward, Adam) of a wide pack of R seed-size runs (3 seeds) on ready
    batches, for each R of ``sizes``: its median time, runs per second as run-epochs of the seed's 64 training
    batches (training steps only: no validation, stimulus or evaluation), and the peak memory the step holds.
    ``fits_one_pack``: whether :func:`fastsnn.experiment.sweeps.packs` puts a 108-run sweep in one pack on this
    device by its memory estimate (data sets included), next to the measured peak of R = 108. ``base``: another
    network than the seed's (tests)."""
    from fastsnn.experiment.pack import PackedNetwork, stream_key
    from fastsnn.experiment.run import build_model, dataset, generator, memory_capacity
    from fastsnn.experiment.sweeps import Point, packs
    from fastsnn.experiment.training import build_optimizer

    dev = torch.device(device)
    rows = []
    for runs in sizes:
        configs = seed_sweep(runs, device=device, base=base)
        keys = list(dict.fromkeys(stream_key(c) for c in configs))
        batches = []
        for key in keys:
            c = next(c for c in configs if stream_key(c) == key)
            one = replace(c, train=replace(c.train, train_samples=c.train.batch_size))
            batches.append(next(dataset(one, "train", c.train.seed, dev).batches(c.train.batch_size,
                                                                                 generator(c.train.seed, "train"))))
        net = PackedNetwork([build_model(c, dev) for c in configs], configs,
                            [keys.index(stream_key(c)) for c in configs], wide=True)
        optimizer, _ = build_optimizer(net, configs[0].train)
        net.train()

        def step():
            optimizer.zero_grad(set_to_none=True)
            net.losses(batches).sum().backward()
            optimizer.step()

        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        t = alternate({"step": step}, repeats, device)["step"]
        peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None
        rows.append({"runs": runs, "step_ms": 1e3 * t["median_s"], "runs_per_s": runs / (64 * t["median_s"]),
                     "peak_mib": peak})
        print(f"pack of {runs}: {rows[-1]['step_ms']:.2f} ms a step, {rows[-1]['runs_per_s']:.2f} run-epochs/s"
              + (f", peak {peak:.0f} MiB" if peak is not None else ""), flush=True)
    points = [Point(f"p{i}", f"p{i}", c) for i, c in enumerate(seed_sweep(108, device=device, base=base))]
    units = packs(points, device=dev.type, capacity=memory_capacity(dev))
    return {"rows": rows, "fits_one_pack": len(units) == 1, "packs_of_108": [len(u) for u in units],
            "capacity_mib": memory_capacity(dev) / 2**20}


def end_to_end(epochs: int = 2, device: str = "cuda", base=None) -> dict:
    """A 3-tau x 3-seed sweep's runs (seed network, ``epochs`` epochs) trained as one wide pack on ``device`` and
    the same runs solo, one after the other, in this process: their wall times and, per run, how far the packed
    first epoch's losses and the test accuracy are from the solo run's (the wide path sums in another order).
    ``base``: another network than the seed's (tests)."""
    from fastsnn.experiment.pack import train_pack
    from fastsnn.experiment.run import train_run

    configs = seed_sweep(9, device=device, base=base, epochs=epochs)
    with tempfile.TemporaryDirectory(prefix="bench-pack-") as tmp:
        start = time.perf_counter()
        packed = dict(train_pack(configs, [Path(tmp) / f"packed{i}" for i in range(9)]))
        packed_s = time.perf_counter() - start
        start = time.perf_counter()
        solo = [train_run(c, Path(tmp) / f"solo{i}", progress=False) for i, c in enumerate(configs)]
        solo_s = time.perf_counter() - start
        first = {}
        for name in ("packed", "solo"):
            first[name] = [[float(v) for v in (Path(tmp) / f"{name}{i}" / "history.csv").read_text().splitlines()[1]
                            .split(",")[1:3]] for i in range(9)]
    errors = [m for m in packed.values() if isinstance(m, Exception)]
    if errors:
        raise RuntimeError(f"a packed run failed: {errors[0]}")
    loss_rel = max(abs(a - b) / abs(b) for p, s in zip(first["packed"], first["solo"]) for a, b in zip(p, s))
    accuracy = [(packed[i]["test_accuracy"], solo[i]["test_accuracy"]) for i in range(9)]
    return {"runs": 9, "epochs": epochs, "packed_s": packed_s, "solo_s": solo_s, "speedup": solo_s / packed_s,
            "first_epoch_loss_rel_max": loss_rel, "test_accuracy_packed_solo": accuracy,
            "test_accuracy_abs_diff_max": max(abs(a - b) for a, b in accuracy)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--taus", default="3,6", help="sweep sizes: how many taus of TAUS, comma-separated")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--rounds", type=int, default=1, help="times each side runs each sweep (alternating)")
    p.add_argument("--sides", default=",".join(SIDES), help=f"some of {', '.join(SIDES)}: a packed one and a solo one")
    add_out_option(p, "pack-<cpu>.{json,md}")
    args = p.parse_args(argv)
    sizes = [int(n) for n in args.taus.split(",")]
    sides = args.sides.split(",")
    if not set(sides) <= set(SIDES) or not any(_packed(s) for s in sides) or all(_packed(s) for s in sides):
        p.error(f"--sides must name a packed and a solo side of {', '.join(SIDES)}, got {args.sides!r}")
    if not all(1 <= n <= len(TAUS) for n in sizes):
        p.error(f"--taus: each size must be in 1..{len(TAUS)}, got {args.taus!r}")
    result = {**machine(), "cores": len(os.sched_getaffinity(0)), "command": " ".join(["python -m bench.pack",
                                                                                       *(argv or sys.argv[1:])]),
              "epochs": args.epochs, "seeds": args.seeds, "sweeps": []}
    with tempfile.TemporaryDirectory(prefix="bench-pack-") as tmp:
        for n in sizes:
            taus = TAUS[:n] if n != 3 else (2.0, 5.0, 10.0)
            runs = {side: [] for side in sides}
            for r in range(args.rounds):
                for side in (sides if r % 2 == 0 else sides[::-1]):
                    runs[side].append(run_sweep(side, taus, args.seeds, args.epochs, Path(tmp) / f"{side}-{n}-{r}"))
                    print(f"{n} taus x {args.seeds} seeds, {side}: {runs[side][-1]['wall_s']:.1f} s "
                          f"(load {runs[side][-1]['load_before']} -> {runs[side][-1]['load_after']})", flush=True)
            medians = {side: statistics.median(run["wall_s"] for run in runs[side]) for side in sides}
            best = min((side for side in sides if not _packed(side)), key=medians.get)
            fastest = min((side for side in sides if _packed(side)), key=medians.get)
            packed, solo = runs[fastest][0]["rows"], runs[best][0]["rows"]
            differ = sorted(name for name in solo if any(packed[name][k] != solo[name][k] for k in METRICS))
            result["sweeps"].append({
                "taus": list(taus), "runs": n * args.seeds, "median_s": medians, "best_solo": best,
                "best_packed": fastest, "speedup": medians[best] / medians[fastest],
                "walls_s": {side: [run["wall_s"] for run in runs[side]] for side in sides},
                "loads": {side: [(run["load_before"], run["load_after"]) for run in runs[side]] for side in sides},
                "rows_differ": differ, "seed_spread": spread(solo),
                "accuracy": {name: (float(packed[name]["test_accuracy"]), float(solo[name]["test_accuracy"]))
                             for name in sorted(solo)}})
    stem = args.out / f"pack-{slug(result['cpu'])}"
    write_results(stem, result, table(result))
    print(table(result), end="")
    print(f"wrote {stem}.{{json,md}}")
    return result


def table(result: dict) -> str:
    sides = list(result["sweeps"][0]["median_s"])
    lines = [f"# Packed sweeps against solo runs ({result['cpu']}, {result['cores']} cores, torch {result['torch']}, "
             f"{result['date']})", "", f"`{result['command']}`: {result['epochs']} epochs, {result['seeds']} seeds, "
             "the seed network otherwise; each side a fresh `fastsnn sweep` process, wall time to exit, median.", "",
             "| sweep | " + " | ".join(f"{side} (s)" for side in sides) + " | faster packed over faster solo | "
             "rows differ | seeds' spread of test accuracy |",
             "|---" * (len(sides) + 4) + "|"]
    for s in result["sweeps"]:
        spreads = ", ".join(f"{100 * v:.1f}" for v in s["seed_spread"].values())
        lines.append(f"| {len(s['taus'])} taus x {result['seeds']} seeds ({s['runs']} runs) | "
                     + " | ".join(f"{s['median_s'][side]:.1f}" for side in sides)
                     + f" | {s['speedup']:.2f}x ({s['best_packed']} / {s['best_solo']}) | {len(s['rows_differ'])} of {s['runs']} | "
                     f"{spreads} points |")
    lines += ["", "Load averages (1, 5, 15 min) before -> after each sweep:", ""]
    for s in result["sweeps"]:
        for side, loads in s["loads"].items():
            lines.append(f"- {len(s['taus'])} taus, {side}: " + "; ".join(f"{a} -> {b}" for a, b in loads))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

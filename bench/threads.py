"""Epoch time of ``fastsnn train`` by thread setting, on a quiet machine, with one core kept busy, and
two runs at once: which threads, wait policy and numba threading layer to use by default.

    python -m bench.threads [--rounds 3] [--epochs 6] [--out DIR]

Each run is a fresh ``fastsnn train --epochs E`` process (seed 0, no early stop before epoch 10); its
per-epoch seconds come from its ``history.csv``, and the first epoch (kernel loading, warm-up) is left
out. Settings alternate within every round, each round starting with the next one, so a drift of the
machine's speed hits all alike.

- quiet: nothing else running;
- busy: another process spins on one core the whole time (started and stopped by this script);
- pair: two runs of the setting started together, each timed start to exit, against one
  ``--threads 1`` run alone on the quiet machine.

Goals (issue 23): busy, the default's epoch <= 1.3x a ``--threads 1`` run's under the same load; pair,
each default run's wall time <= 1.3x a lone ``--threads 1`` run's. Writes ``OUT/threads-<cpu>.{json,md}``
(default OUT: ``runs/bench``).
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import add_out_option, cpu_name, machine, slug, write_results

# name -> (extra train flags, extra environment)
SETTINGS = {
    "default (auto)": ([], {}),
    "--threads 1": (["--threads", "1"], {}),
    "--threads 2": (["--threads", "2"], {}),
    "--threads 2, OMP_WAIT_POLICY=PASSIVE": (["--threads", "2"], {"OMP_WAIT_POLICY": "PASSIVE"}),
    "--threads 2, numba workqueue": (["--threads", "2"], {"NUMBA_THREADING_LAYER": "workqueue"}),
}
PAIRED = ("default (auto)", "--threads 2")


def start_run(out: Path, epochs: int, flags: list[str], env: dict) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "fastsnn", "train", "--epochs", str(epochs), "--quiet", "--overwrite",
           "--out", str(out), *flags]
    return subprocess.Popen(cmd, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def finish(proc: subprocess.Popen, out: Path, started: float) -> dict:
    _, err = proc.communicate()
    wall = time.perf_counter() - started
    if proc.returncode:
        raise RuntimeError(f"fastsnn train failed ({proc.returncode}): {err.strip()[-500:]}")
    with (out / "history.csv").open() as f:
        epochs = [float(row["seconds"]) for row in csv.DictReader(f)]
    return {"wall_s": wall, "epoch_s": epochs[1:]}


def run(out: Path, epochs: int, flags: list[str], env: dict) -> dict:
    started = time.perf_counter()
    return finish(start_run(out, epochs, flags, env), out, started)


def pair(work: Path, epochs: int, flags: list[str], env: dict) -> list[dict]:
    started = time.perf_counter()
    procs = [(start_run(work / f"pair{i}", epochs, flags, env), work / f"pair{i}") for i in range(2)]
    return [finish(proc, out, started) for proc, out in procs]


def busy_core() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def summary(values: list[float]) -> dict:
    q = statistics.quantiles(values, n=5) if len(values) > 1 else [values[0]] * 4
    return {"median": statistics.median(values), "q20": q[0], "q80": q[3], "n": len(values)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=6, help="epochs per run (at most 10: no early stop)")
    add_out_option(p, "threads-<cpu>.{json,md}")
    args = p.parse_args(argv)
    if not 2 <= args.epochs <= 10:
        p.error(f"--epochs must be between 2 and 10, got {args.epochs}")
    epochs = {f"{scene}: {name}": [] for scene in ("quiet", "busy") for name in SETTINGS}
    walls = {**{f"pair: {name}": [] for name in PAIRED}, "alone: --threads 1": []}
    load = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for r in range(args.rounds):
            names = list(SETTINGS)[r % len(SETTINGS):] + list(SETTINGS)[:r % len(SETTINGS)]  # each goes first once
            for name in names:
                flags, env = SETTINGS[name]
                load.append(os.getloadavg()[0])
                epochs[f"quiet: {name}"] += run(work / "run", args.epochs, flags, env)["epoch_s"]
            spinner = busy_core()
            try:
                for name in names:
                    flags, env = SETTINGS[name]
                    epochs[f"busy: {name}"] += run(work / "run", args.epochs, flags, env)["epoch_s"]
            finally:
                spinner.kill()
                spinner.wait()
            walls["alone: --threads 1"].append(run(work / "run", args.epochs, *SETTINGS["--threads 1"])["wall_s"])
            for name in PAIRED:
                walls[f"pair: {name}"] += [res["wall_s"] for res in pair(work, args.epochs, *SETTINGS[name])]
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    epoch_stats = {k: summary(v) for k, v in epochs.items()}
    wall_stats = {k: summary(v) for k, v in walls.items()}
    one_busy = epoch_stats["busy: --threads 1"]["median"]
    alone = wall_stats["alone: --threads 1"]["median"]
    lines = ["| scene: setting | epoch median (s) | q20-q80 (s) | / --threads 1, same scene |", "|---|---|---|---|"]
    for key, s in epoch_stats.items():
        scene = key.split(":")[0]
        base = epoch_stats[f"{scene}: --threads 1"]["median"]
        lines.append(f"| {key} | {s['median']:.3f} | {s['q20']:.3f}-{s['q80']:.3f} | {s['median'] / base:.2f}x |")
    lines += ["", "| two runs at once: setting | wall median (s), each run | q20-q80 (s) | / one --threads 1 run alone |",
              "|---|---|---|---|"]
    for key, s in wall_stats.items():
        lines.append(f"| {key} | {s['median']:.2f} | {s['q20']:.2f}-{s['q80']:.2f} | {s['median'] / alone:.2f}x |")
    default_busy = epoch_stats["busy: default (auto)"]["median"] / one_busy
    default_pair = max(walls["pair: default (auto)"]) / alone
    info = machine()
    header = (f"{info['cpu']} ({os.cpu_count()} cores), torch {info['torch']}, {info['date']}; load average "
              f"{min(load):.1f}-{max(load):.1f} before the quiet runs. `python -m bench.threads "
              f"{' '.join(argv if argv is not None else sys.argv[1:])}` ({args.rounds} rounds of {args.epochs}-epoch runs; "
              "epoch medians leave each run's first epoch out).\n\n"
              f"Busy core: the default's epoch is {default_busy:.2f}x a --threads 1 run's (goal <= 1.3x). "
              f"Two default runs at once: the slower of them took {default_pair:.2f}x a lone --threads 1 run's wall "
              "time (goal <= 1.3x).\n\n")
    table = header + "\n".join(lines) + "\n"
    print(table)
    result = {"machine": info, "rounds": args.rounds, "epochs": args.epochs, "epoch_s": epochs, "wall_s": walls,
              "epoch_stats": epoch_stats, "wall_stats": wall_stats, "load_average": load,
              "default_busy_ratio": default_busy, "default_pair_ratio": default_pair}
    write_results(args.out / f"threads-{slug(cpu_name())}", result, table)
    return result


if __name__ == "__main__":
    main()

"""Whole-run wall time: the seed notebook's own script vs ``fastsnn train``, defaults, on this machine.

    python -m bench.whole_run [--seeds 0,1,2] [--reference] [--no-seed-script | --seed-script PATH] [--out DIR]

Each run is a fresh process timed from start to exit (training to early stop, evaluation,
and for fastsnn also the figures and checkpoint). fastsnn runs land in runs/whole-run/;
the table goes to OUT/whole-run-<cpu>.{json,md} (``--out``, default runs/bench; one file per CPU model, so
results of different machines stay side by side; bench/results' ``whole-run-cpu`` holds the Intel Xeon's of
2026-11-29), keeping the rows of an earlier run of this script on the same CPU in OUT that this one did not
repeat (the seed script takes ~15 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from . import seed_baseline
from .common import add_out_option, cpu_name, machine, slug


def fastsnn_run(seed: int, backend: str, out: Path) -> dict:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "fastsnn", "train", "--seed", str(seed), "--backend", backend,
                    "--out", str(out), "--overwrite", "--quiet"], check=True)
    wall = time.perf_counter() - start
    m = json.loads((out / "metrics.json").read_text())
    return {"code": f"fastsnn ({m['backend']})", "seed": seed, "wall_s": wall, "epochs": m["epochs"],
            "test_accuracy": m["test_accuracy"], "test_abs_error_deg": m["test_abs_error_deg"],
            "train_accuracy": m["train_accuracy"], "out": str(out)}


def seed_run(seed: int) -> dict:
    env = {**os.environ, "SEED": str(seed), "THREADS": str(os.cpu_count() or 1)}
    start = time.perf_counter()
    out = subprocess.run([sys.executable, str(seed_baseline.SEED_PATH)], env=env, capture_output=True, text=True,
                         check=True).stdout
    wall = time.perf_counter() - start
    epochs = len(re.findall(r"^epoch \d+", out, re.M))
    acc = [float(x) for x in re.findall(r"Test classifier accuracy: ([\d.]+)%", out)]
    err = [float(x) for x in re.findall(r"Test absolute error: ([\d.]+) deg", out)]
    train = [float(x) for x in re.findall(r"Train classifier accuracy: ([\d.]+)%", out)]
    return {"code": "seed notebook", "seed": seed, "wall_s": wall, "epochs": epochs,
            "test_accuracy": acc[0] / 100, "test_abs_error_deg": err[0], "train_accuracy": train[0] / 100}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--reference", action="store_true", help="also one run on the reference backend (seed 0)")
    p.add_argument("--no-seed-script", action="store_true", help="leave the seed notebook's own run out")
    seed_baseline.add_option(p)
    add_out_option(p, "whole-run-<cpu>.{json,md}")
    args = p.parse_args(argv)
    with_seed = not args.no_seed_script and seed_baseline.use(p, args.seed_script, "the seed notebook's run")
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        rows.append(fastsnn_run(seed, "auto", Path("runs/whole-run") / f"fastsnn-seed{seed}"))
        print(rows[-1], flush=True)
    if args.reference:
        rows.append(fastsnn_run(0, "reference", Path("runs/whole-run") / "reference-seed0"))
        print(rows[-1], flush=True)
    if with_seed:
        rows.append(seed_run(0))
        print(rows[-1], flush=True)
    stem = args.out / f"whole-run-{slug(cpu_name())}"
    path = stem.with_suffix(".json")
    if path.is_file():
        measured = {(r["code"], r["seed"]) for r in rows}
        rows += [r for r in json.loads(path.read_text())["runs"] if (r["code"], r["seed"]) not in measured]
    lines = ["| code | seed | epochs | wall time (s) | test accuracy | test error (deg) | train accuracy |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['code']} | {r['seed']} | {r['epochs']} | {r['wall_s']:.0f} | {100 * r['test_accuracy']:.1f}% | "
              f"{r['test_abs_error_deg']:.1f} | {100 * r['train_accuracy']:.1f}% |" for r in rows]
    seed_walls = [r["wall_s"] for r in rows if r["code"] == "seed notebook"]
    for code in sorted({r["code"] for r in rows} - {"seed notebook"}):
        walls = sorted(r["wall_s"] for r in rows if r["code"] == code)
        if seed_walls and walls:
            median = walls[len(walls) // 2]
            lines.append(f"\n{code}: median {median:.0f} s over {len(walls)} run(s), "
                         f"{seed_walls[0] / median:.1f}x faster than the seed notebook ({seed_walls[0]:.0f} s).")
    info = machine()
    header = (f"Measured on {info['cpu']} ({os.cpu_count()} cores), torch {info['torch']}, {info['date']}; "
              f"load average {os.getloadavg()[0]:.1f} at the end. `python -m bench.whole_run "
              f"{' '.join(argv if argv is not None else sys.argv[1:])}`.\n\n")
    table = header + "\n".join(lines) + "\n"
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"machine": info, "runs": rows}, indent=2) + "\n")
    stem.with_suffix(".md").write_text(table)
    return rows


if __name__ == "__main__":
    main()

"""The research variants of the sound-localisation network, each trained by `fastsnn train` under two
protocols, several seeds each: test accuracy and error (mean +- std over seeds), wall time per run.

    python -m bench.variants [--protocols short,seed] [--seeds 0,1,2] [--workers 1] [--threads N]
                             [--variants a,b] [--dry-run] [--out DIR]

Protocols: ``seed`` (the seed notebook's: fastsnn's defaults, early stopping on a validation set) and
``short`` (the community notebooks' quick start: tau 2 ms hidden, 20 ms readout, lr 0.01, 10 epochs, one
fixed training set, no validation, mean readout). A variant's flags override the protocol's. Each run is
a fresh ``python -m fastsnn train`` process into ``runs/variants/<protocol>/<variant>/seed<S>``; its row
is appended to ``OUT/variants-<cpu>.csv`` (``--out``, default runs/bench) when it finishes, so the same
command again skips finished runs (a run killed in flight starts over). The markdown table ``variants-<cpu>.md`` is
rewritten from the csv after every run. A variant whose command equals an earlier one's under a
protocol (mean readout under the short protocol, which already reads the mean) is not run again:
the table says which row it is.
"""

from __future__ import annotations

import argparse
import csv
import os
import shlex
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

from .common import add_out_option, cpu_name
from .common import slug as common_slug

PROTOCOLS = {
    "seed": {},
    "short": {"--tau-ms": "2", "--readout-tau-ms": "20", "--lr": "0.01", "--epochs": "10", "--phase-offset": "fixed",
              "--no-validation": None, "--readout": "mean"},
}
PROTOCOL_NAMES = {"seed": "the seed's protocol (defaults: up to 150 epochs, early stopping on a validation set)",
                  "short": "the short protocol (tau 2 ms hidden, 20 ms readout, lr 0.01, 10 epochs, one fixed "
                           "training set, no validation, mean readout)"}
VARIANTS = {
    "baseline": {},
    "mean readout": {"--readout": "mean"},
    "max readout": {"--readout": "max"},
    "spiking readout": {"--readout": "spiking"},
    "fixed training set": {"--phase-offset": "fixed"},
    "rate regulariser": {"--rate-target-hz": "20", "--rate-weight": "1e-4"},
    "spike dropout": {"--spike-dropout": "0.2"},
    "phase jitter": {"--phase-jitter": "0.3"},
    "filter-and-fire": {"--segments": "3", "--spike": "same_step"},
    "alif zero reset": {"--neuron": "alif", "--reset": "zero"},
    "alif subtract reset": {"--neuron": "alif", "--reset": "subtract"},
    "learnable delays": {"--max-delay": "25"},
    # community notebooks reproduced whole (docs/delays.md): their flags are a protocol of their own
    "dcls notebook": {"--phase-delays": "none", "--max-delay": "30", "--readout-max-delay": "30",
                      "--delay-init": "centre", "--weight-init": "kaiming", "--lr": "0.005",
                      "--lr-schedule": "one_cycle", "--delay-lr": "0.1", "--delay-lr-schedule": "cosine",
                      "--sigma-anneal-epochs": "37", "--keep-final": None},
    "250 Hz notebook": {"--tone-hz": "250", "--dt-ms": "0.1", "--steps": "1000", "--hidden": "5", "--tau-ms": "1",
                        "--readout-tau-ms": "50", "--lr": "0.01", "--epochs": "50", "--test-batches": "64"},
}
SEED_PROTOCOL_ONLY = {"dcls notebook", "250 Hz notebook"}
COLUMNS = ("protocol", "variant", "seed", "command", "test_accuracy", "test_abs_error_deg", "train_accuracy",
           "epochs", "wall_seconds", "threads", "finished")
ROOT = Path(__file__).resolve().parent.parent


def slug(text: str) -> str:
    return common_slug(text) or "cpu"


def flags(protocol: str, variant: str) -> list[str]:
    """The train flags of ``variant`` under ``protocol``, the variant's overriding the protocol's."""
    merged = {**PROTOCOLS[protocol], **VARIANTS[variant]}
    return [word for flag, value in merged.items() for word in ((flag,) if value is None else (flag, value))]


def command(protocol: str, variant: str) -> str:
    """The `fastsnn train` command the table shows (add --seed S)."""
    return shlex.join(["fastsnn", "train", *flags(protocol, variant)])


def plan(protocols: list[str], variants: list[str]) -> dict[tuple[str, str], str | None]:
    """(protocol, variant) -> None to run it, or the earlier variant whose command it repeats (the variants of
    :data:`SEED_PROTOCOL_ONLY` under the seed protocol only)."""
    out = {}
    for protocol in protocols:
        seen: dict[str, str] = {}
        for variant in [v for v in variants if protocol == "seed" or v not in SEED_PROTOCOL_ONLY]:
            key = command(protocol, variant)
            out[protocol, variant] = seen.get(key)
            seen.setdefault(key, variant)
    return out


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [row for row in csv.DictReader(f) if row.get("finished")]


def append_row(path: Path, row: dict) -> None:
    new = not path.is_file()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow(row)
        f.flush()
        os.fsync(f.fileno())


def train(protocol: str, variant: str, seed: int, threads: int) -> dict:
    """One fresh `python -m fastsnn train` process; its metrics and wall time (process start to exit)."""
    import json

    out = ROOT / "runs" / "variants" / protocol / slug(variant) / f"seed{seed}"
    argv = [sys.executable, "-m", "fastsnn", "train", *flags(protocol, variant), "--seed", str(seed),
            "--threads", str(threads), "--quiet", "--out", str(out), "--overwrite"]
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{protocol}/{variant}/seed {seed} failed: {proc.stderr.strip().splitlines()[-1:]}")
    m = json.loads((out / "metrics.json").read_text())
    return {"protocol": protocol, "variant": variant, "seed": seed, "command": command(protocol, variant),
            "test_accuracy": m["test_accuracy"], "test_abs_error_deg": m["test_abs_error_deg"],
            "train_accuracy": m["train_accuracy"], "epochs": m["epochs"], "wall_seconds": round(wall, 2),
            "threads": m["threads"], "finished": datetime.now().isoformat(timespec="seconds")}


def _mean_std(values: list[float], scale: float, digits: int, unit: str = "") -> str:
    mean = statistics.mean(values) * scale
    std = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{mean:.{digits}f} ± {std:.{digits}f}{unit}"


def table(rows: list[dict], protocols: list[str], variants: list[str], seeds: list[int], cpu: str) -> str:
    """The markdown tables, one per protocol, from the finished rows."""
    threads = sorted({row["threads"] for row in rows}) or ["?"]
    lines = [f"# fastsnn variants on {cpu}", "",
             f"Each run a fresh `python -m fastsnn train` process: the command shown plus `--seed S --threads "
             f"{'/'.join(threads)} --quiet --out runs/variants/...`; mean ± std over seeds {', '.join(map(str, seeds))} "
             f"(sample std); wall time per run from process start to exit (data, training, evaluation, figures). "
             f"Made by `python -m bench.variants`; rows in `{Path(__file__).parent.name}/results/`.", ""]
    repeats = plan(protocols, variants)
    for protocol in protocols:
        lines += [f"## {PROTOCOL_NAMES[protocol]}", "",
                  "| variant | command (`--seed S` added) | test accuracy | test error (deg) | wall time per run (s) "
                  "| epochs | seeds |", "|---|---|---|---|---|---|---|"]
        for variant in [v for v in variants if (protocol, v) in repeats]:
            source = repeats[protocol, variant] or variant
            done = [row for row in rows if row["protocol"] == protocol and row["variant"] == source
                    and row["command"] == command(protocol, source) and int(row["seed"]) in seeds]
            cmd = f"`{command(protocol, variant)}`"
            if repeats[protocol, variant]:
                cmd += f" (the same run as {source})"
            if not done:
                lines.append(f"| {variant} | {cmd} | - | - | - | - | 0 |")
                continue
            acc = [float(row["test_accuracy"]) for row in done]
            err = [float(row["test_abs_error_deg"]) for row in done]
            wall = [float(row["wall_seconds"]) for row in done]
            epochs = sorted(int(row["epochs"]) for row in done)
            epoch_text = str(epochs[0]) if epochs[0] == epochs[-1] else f"{epochs[0]}-{epochs[-1]}"
            lines.append(f"| {variant} | {cmd} | {_mean_std(acc, 100, 1, '%')} | {_mean_std(err, 1, 1)} | "
                         f"{statistics.mean(wall):.0f} | {epoch_text} | {len(done)} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--protocols", default="short,seed", help=f"comma-separated, in order: {', '.join(PROTOCOLS)}")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names (default: all)")
    p.add_argument("--workers", type=int, default=1, help="runs at a time")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per run (default: cores // workers; on a machine shared with other jobs, 1 "
                        "runs faster: spinning threads wait on each other)")
    p.add_argument("--dry-run", action="store_true", help="list the runs and which are done")
    add_out_option(p, "variants-<cpu>.{csv,md}")
    args = p.parse_args(argv)
    protocols = args.protocols.split(",")
    variants = args.variants.split(",")
    for name, known in (("protocol", PROTOCOLS), ("variant", VARIANTS)):
        bad = [x for x in (protocols if name == "protocol" else variants) if x not in known]
        if bad:
            p.error(f"unknown {name} {bad[0]!r}; choose from {', '.join(known)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.workers < 1:
        p.error(f"--workers must be >= 1, got {args.workers}")
    cpu = cpu_name()
    csv_path = args.out / f"variants-{slug(cpu)}.csv"
    md_path = csv_path.with_suffix(".md")
    args.out.mkdir(parents=True, exist_ok=True)
    done = {(row["protocol"], row["variant"], int(row["seed"]), row["command"]) for row in read_rows(csv_path)}
    repeats = plan(protocols, variants)
    # seed-major within a protocol: a protocol cut short has covered every variant once
    todo = [(protocol, variant, seed) for protocol in protocols for seed in seeds for variant in variants
            if repeats.get((protocol, variant), "") is None
            and (protocol, variant, seed, command(protocol, variant)) not in done]
    print(f"{len(todo)} runs to do; results in {csv_path}", flush=True)
    if args.dry_run:
        for protocol, variant, seed in todo:
            print(f"{protocol:5}  seed {seed}  {variant:22}  {command(protocol, variant)} --seed {seed}")
        return
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.workers)
    lock = threading.Lock()

    def run(job):
        protocol, variant, seed = job
        try:
            row = train(protocol, variant, seed, threads)
        except RuntimeError as err:
            print(err, file=sys.stderr, flush=True)
            return
        with lock:
            append_row(csv_path, row)
            md_path.write_text(table(read_rows(csv_path), protocols, variants, seeds, cpu) + "\n")
        print(f"{protocol} {variant} seed {seed}: {100 * row['test_accuracy']:.1f}%, "
              f"{row['test_abs_error_deg']:.1f} deg, {row['wall_seconds']:.0f} s", flush=True)

    with ThreadPoolExecutor(args.workers) as pool:
        list(pool.map(run, todo))
    md_path.write_text(table(read_rows(csv_path), protocols, variants, seeds, cpu) + "\n")
    print(md_path.read_text())


if __name__ == "__main__":
    main()

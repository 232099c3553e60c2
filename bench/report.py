"""Side-by-side report: every backend on every workload, measured alternately in one run.

    python -m bench.report [--workloads seed,long] [--repeats 7] [--no-memory] [--peers] [--out DIR]
                           [--seed-script PATH]
    python -m bench.report --replot bench/results/cpu-2026-11-29.json    # redraw a saved run's chart

Prints a table of medians, speedups over the seed's own loop and memory ratios, and writes
OUT/<device>-<date>.{json,md} (``--out``, default runs/bench; ``--peers`` adds bench.peers' and
bench.peer_step's files there) and, when the seed notebook's script is there to time
(bench/seed_baseline.py), the speedup chart OUT/<device>-<date>.png. Peak memory on CPU is measured
in a fresh subprocess per (workload, backend) (``python -m bench.memory``); on CUDA with
``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import torch
from matplotlib.figure import Figure

from . import memory, seed_baseline
from .common import add_out_option, alternate, machine, write_results
from .workloads import OPS, WORKLOADS, backends_for, cases, saved_bytes

# fewer repeats where the seed's loop takes seconds a call
REPEATS = {"seed": 1.0, "wide": 0.5, "long": 0.4, "bigbatch": 0.6}
# Calls per candidate per round (bench.common.alternate): at seed size a step takes milliseconds and
# the first call after another candidate's pays to refill the caches (measured: the cpu step 4.1 ms
# then, 2.9 ms back to back, as a training loop runs it); the other workloads' calls take 0.02-15 s.
BLOCK = {"seed": 10, "wide": 1, "long": 1, "bigbatch": 1}


def peak_memory(workload: str, backend: str, device: torch.device) -> dict:
    """{"peak_bytes", "step_bytes"} of one training step (see bench.memory)."""
    if device.type == "cuda":
        return memory.measure(workload, backend, device)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    out = subprocess.run([sys.executable, "-m", "bench.memory", workload, backend], capture_output=True,
                         text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(workloads: list[str], repeats: int, device: torch.device, with_memory: bool) -> dict:
    rows = []
    for name in workloads:
        w = WORKLOADS[name]
        backends = backends_for(device)
        fns = cases(w, device, backends)
        n = max(2, round(repeats * REPEATS[name]))
        for op in OPS:
            timed = alternate({b: fns[(op, b)] for b in backends}, n, device, block=BLOCK[name])
            row = {"workload": name, "op": op, "dims": w.describe(), "repeats": n, "block": BLOCK[name],
                   "median_ms": {b: 1e3 * r["median_s"] for b, r in timed.items()},
                   "q20_ms": {b: 1e3 * r["q20_s"] for b, r in timed.items()},
                   "q80_ms": {b: 1e3 * r["q80_s"] for b, r in timed.items()}}
            if op in ("lif_fwd_bwd", "train_step"):
                row["saved_bytes"] = {b: saved_bytes(fns[(op, b)]) for b in backends}
            if with_memory and op == "train_step":
                peaks = {b: peak_memory(name, b, device) for b in backends}
                row["peak_bytes"] = {b: m["peak_bytes"] for b, m in peaks.items()}
                row["step_bytes"] = {b: m["step_bytes"] for b, m in peaks.items()}
            rows.append(row)
            print(f"  {name:9s} {op:12s} " + "  ".join(f"{b} {v:9.2f} ms" for b, v in row["median_ms"].items()),
                  flush=True)
        del fns
    return {"machine": machine(), "device": str(device), "rows": rows}


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.1f}x" if a and b else "-"


def markdown(result: dict) -> str:
    rows = result["rows"]
    backends = list(rows[0]["median_ms"])
    fast = [b for b in backends if b != "seed"]
    m = result["machine"]
    lines = [f"Device: {m.get('gpu', m['cpu'])}, torch {m['torch']}, {m['threads']} threads, {m['date']}. "
             "Medians over interleaved rounds (seed workload: 10 timed calls in a row per backend and round, "
             "after one untimed; others: one call); speedup = seed median / backend median.", "",
             "| workload | op | " + " | ".join(f"{b} ms" for b in backends) + " | "
             + " | ".join(f"{b} speedup" for b in fast) + " |",
             "|" + "---|" * (2 + len(backends) + len(fast))]
    for r in rows:
        med = r["median_ms"]
        lines.append(f"| {r['workload']} | {r['op']} | " + " | ".join(f"{med[b]:.2f}" for b in backends) + " | "
                     + " | ".join(_ratio(med.get("seed"), med[b]) for b in fast) + " |")
    mem = [r for r in rows if "saved_bytes" in r]
    if mem:
        peak_label = "peak allocated" if result["device"].startswith("cuda") else "process peak RSS"
        lines += ["", "Bytes saved for the backward (distinct storages, inputs and weights included) and, for the "
                  f"training step, the {peak_label} (one step in a fresh process on CPU):", "",
                  "| workload | op | " + " | ".join(f"{b} saved MiB" for b in backends)
                  + " | saved / reference | " + " | ".join(f"{b} peak MiB" for b in backends) + " |",
                  "|" + "---|" * (3 + 2 * len(backends))]
        for r in mem:
            saved, peak = r["saved_bytes"], r.get("peak_bytes", {})
            ratio = " / ".join(f"{saved[b] / saved['reference']:.2f}" for b in fast if b != "reference")
            lines.append(f"| {r['workload']} | {r['op']} | " + " | ".join(f"{saved[b] / 2**20:.1f}" for b in backends)
                         + f" | {ratio} | " + " | ".join(f"{peak[b] / 2**20:.1f}" if b in peak else "-"
                                                         for b in backends) + " |")
    return "\n".join(lines) + "\n"


def chart(result: dict, path) -> bool:
    """The training step's speedup over the seed's loop, per workload and backend, as a bar chart at ``path``;
    False (nothing written) when the seed's loop was not timed."""
    steps = [r for r in result["rows"] if r["op"] == "train_step"]
    backends = [b for b in steps[0]["median_ms"] if b != "seed"]
    if "seed" not in steps[0]["median_ms"]:
        return False
    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.subplots()
    width = 0.8 / len(backends)
    for i, b in enumerate(backends):
        speedups = [r["median_ms"]["seed"] / r["median_ms"][b] for r in steps]
        bars = ax.bar([k + i * width for k in range(len(steps))], speedups, width, label=b)
        ax.bar_label(bars, fmt="%.1fx", fontsize=8)
    ax.set_xticks([k + width * (len(backends) - 1) / 2 for k in range(len(steps))], [r["workload"] for r in steps])
    ax.set_yscale("log")
    ax.axhline(1, color="gray", lw=0.8)
    ax.set_ylabel("training step speedup over the seed's loop")
    m = result["machine"]
    device = m.get("gpu") or f"{m['cpu']}, {m['threads']} threads"
    ax.set_title(f"{device}, {m['date']}: forward + loss + backward", fontsize=9, wrap=True)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    return True


def peer_tables(result: dict, workloads: list[str], device: torch.device, out: Path) -> str:
    """Run bench.peers (and on the CPU bench.peer_step) at the report's workloads they know, with its threads;
    their rows go into ``result``, their tables (markdown) are returned."""
    from . import peer_step, peers

    threads = str(torch.get_num_threads())
    sizes = [w for w in workloads if w in peers.SIZES]
    text = ""
    if sizes:
        layer = peers.main(["--sizes", ",".join(sizes), "--threads", threads, "--device", device.type,
                            "--out", str(out)])
        result["peers"] = layer["rows"]
        text += "\n" + peers.markdown(layer).replace("# ", "## ", 1)
    if device.type == "cpu":
        step = peer_step.main(["--sizes", ",".join(workloads), "--threads", threads, "--out", str(out)])
        result["peer_step"] = step["rows"]
        text += "\n" + peer_step.markdown(step).replace("# ", "## ", 1)
    return text


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workloads", default=",".join(WORKLOADS))
    p.add_argument("--repeats", type=int, default=7, help="repeats of the seed workload (others scaled down)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add_out_option(p, "<device>-<date>.{json,md,png} (and with --peers the peers' files)")
    seed_baseline.add_option(p)
    p.add_argument("--peers", action="store_true",
                   help="also against SpikingJelly and snnTorch, side by side: the neuron layer in each peer-exact "
                        "configuration (bench.peers) and the whole training step (bench.peer_step, CPU), at the "
                        "workloads they share")
    p.add_argument("--replot", type=Path, default=None, metavar="JSON",
                   help="measure nothing: redraw the chart (PNG beside it) of a saved report JSON")
    args = p.parse_args(argv)
    if args.replot is not None:
        result = json.loads(args.replot.read_text())
        if not chart(result, args.replot.with_suffix(".png")):
            p.error(f"{args.replot} has no timings of the seed's loop: no speedup chart to draw")
        print(f"wrote {args.replot.with_suffix('.png')}")
        return result
    workloads = args.workloads.split(",")
    unknown = set(workloads) - set(WORKLOADS)
    if unknown:
        p.error(f"unknown workloads {sorted(unknown)}; choose from {', '.join(WORKLOADS)}")
    device = torch.device(args.device)
    seed_baseline.use(p, args.seed_script, "the seed's columns, the speedups and the chart")
    result = measure(workloads, args.repeats, device, not args.no_memory)
    table = markdown(result)
    if args.peers:
        table += "\n" + peer_tables(result, workloads, device, args.out)
    print(table)
    stem = args.out / f"{device.type}-{date.today().isoformat()}"
    write_results(stem, result, table)
    print(f"wrote {stem}.{{json,md{',png' if chart(result, stem.with_suffix('.png')) else ''}}}")
    return result


if __name__ == "__main__":
    main()

"""Timing helpers shared by the benchmark scripts: alternating repeats, medians, machine metadata."""

from __future__ import annotations

import json
import platform
import re
import statistics
import time
from datetime import date
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"  # the committed results: a benchmark writes there only when told (--out)
OUT = ROOT / "runs" / "bench"  # where benchmarks write by default (git ignores runs/)


def add_out_option(p, files: str) -> None:
    """``--out DIR`` for a benchmark that writes ``files``: runs/bench by default, bench/results only on purpose."""
    p.add_argument("--out", type=Path, default=OUT, metavar="DIR",
                   help=f"folder for {files} (default: runs/bench, which git ignores; --out bench/results replaces "
                        "the committed results)")


def sync(device: str | torch.device = "cpu") -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def alternate(candidates: dict[str, Callable[[], object]], repeats: int, device="cpu", warmup: int = 1,
              block: int = 1, clock: Callable[[], float] = time.perf_counter) -> dict:
    """Time each candidate in ``repeats`` rounds, interleaved (A B C A B C ...), so that drifts in the
    machine's speed hit all of them alike. In each round a candidate runs ``block + 1`` times in a
    row, as in a training loop, and the first call (the one that finds the caches holding the
    previous candidate's data) is not timed; with ``block=1`` every call follows another candidate.
    Returns {name: {"median_s", "q20_s", "q80_s", "runs"}} over all timed calls. ``clock=time.thread_time``
    counts this thread's CPU time instead of wall time (single-threaded work on a shared machine)."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    sync(device)
    times = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            if block > 1:
                fn()
                sync(device)
            for _ in range(block):
                start = clock()
                fn()
                sync(device)
                times[name].append(clock() - start)
    out = {}
    for name, ts in times.items():
        q = statistics.quantiles(ts, n=5) if len(ts) > 1 else [ts[0]] * 4
        out[name] = {"median_s": statistics.median(ts), "q20_s": q[0], "q80_s": q[3], "runs": len(ts)}
    return out


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``'s "model name", e.g. "AMD EPYC 9B14"), else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine()


def slug(text: str) -> str:
    """``"AMD EPYC 9B14"`` -> ``"amd-epyc-9b14"``: a CPU (or GPU) name as part of a results file name."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def machine() -> dict:
    info = {"python": platform.python_version(), "torch": str(torch.__version__), "threads": torch.get_num_threads(),
            "cpu": cpu_name(), "date": date.today().isoformat()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


# --malloc: the process's allocator during a benchmark, for both sides of a comparison alike
MALLOC = {"glibc": "glibc's defaults (freed blocks of 128 KiB-32 MiB go back to the OS)",
          "retain": "glibc told to keep freed memory (fastsnn.cpu.allocator.retain_freed_memory), both sides"}


def add_malloc_option(p) -> None:
    p.add_argument("--malloc", default="glibc", choices=tuple(MALLOC),
                   help="glibc: the C library's defaults; retain: fastsnn.cpu.allocator.retain_freed_memory()")


def apply_malloc(p, choice: str) -> str:
    """Set up the allocator ``--malloc`` chose (``p.error`` where it cannot be); returns the results file
    name's suffix for it ("" for glibc's defaults)."""
    if choice == "glibc":
        return ""
    from fastsnn.cpu.allocator import retain_freed_memory

    if not retain_freed_memory():
        p.error("--malloc retain needs glibc (Linux); this C library is left as it is")
    return f"-{choice}"


def write_results(stem: Path, result: dict, table: str) -> None:
    """``stem``.json (the result; paths as strings) and ``stem``.md (its table), creating the folder."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    stem.with_suffix(".md").write_text(table)


def save(out: Path, name: str, payload: dict) -> Path:
    """``out``/``name``.json, creating the folder."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")  # str: paths among the options
    return path

"""Peak memory of one training step of a workload on a backend.

    python -m bench.memory WORKLOAD BACKEND      # prints {"peak_bytes": ..., ...} as its last line

On CPU, run it in a fresh process (bench.report does, with a fixed glibc mmap threshold so
that freed set-up buffers go back to the OS): it builds the inputs, records the resident size,
runs one step and reports the process's resident high-water mark (VmHWM; not ru_maxrss, which a
child inherits from its parent across exec) as ``peak_bytes``
and the growth over the pre-step size as ``step_bytes``. Compiled CPU kernels load from numba's
disk cache (any earlier run fills it). On CUDA: ``torch.cuda.max_memory_allocated`` during the
step, and its growth over what was allocated before it.
"""

from __future__ import annotations

import json
import resource
import sys

import torch

from .workloads import WORKLOADS, cases


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _high_water_bytes() -> int:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def measure(workload: str, backend: str, device: torch.device) -> dict:
    step = cases(WORKLOADS[workload], device, [backend], ops=("train_step",))[("train_step", backend)]
    if device.type == "cuda":
        step()
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        before = _rss_bytes()
        step()
        peak = _high_water_bytes()
    return {"peak_bytes": peak, "step_bytes": max(0, peak - before)}


if __name__ == "__main__":
    name, backend = sys.argv[1:3]
    print(json.dumps({"workload": name, "backend": backend, **measure(name, backend, torch.device("cpu"))}))

"""Where a training step's time goes with event-driven spike projections: the step against its pieces.

    python -m bench.spike_profile [--workloads bigbatch,ear1000x1024] [--repeats 8] [--threads 2]
                                  [--malloc glibc|retain] [--out DIR]

For each workload, in one interleaved run (``bench.common.alternate``), on the CPU:

- ``step (events)`` / ``step (dense)``: forward + loss + backward of the network (bench/workloads.py's
  network, as ``bench.spike_crossover --steps`` times it), the input projection by events or dense;
- ``rest``: the same step from the projection's output h on (LIF layer, readout, loss, their backward),
  the work the projections are measured against (issue 13: step <= 1.3x rest at bigbatch);
- the input projection's pieces alone, on the step's own input spikes x (M = B*T rows, K inputs) and
  weights (K, N): ``pack`` (x -> bits and per-group counts), ``events fwd`` (x @ W from the bits),
  ``events wgrad`` (x^T dh from the bits), ``dense fwd`` (x @ W, torch), ``dense wgrad`` (x^T dh, torch).

``--malloc retain`` runs everything with :func:`fastsnn.cpu.allocator.retain_freed_memory` (a fresh
(M, N) output then reuses freed heap instead of faulting its pages in). Writes
``OUT/spike-profile-<cpu>[-retain].{json,md}`` (``--out``, default runs/bench) with medians, q20-q80, and
what each issue-13 goal would need of the projection.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

from fastsnn.ops.spikes.cpu import event_matmul_cpu, event_weight_grad_cpu, pack_count_cpu

from .common import MALLOC, add_malloc_option, add_out_option, alternate, apply_malloc, machine, slug, write_results
from .spike_crossover import EAR1000, _forced_call, _step_and_rest
from .workloads import WORKLOADS

WORKLOAD_NAMES = ("bigbatch", "ear1000x1024")


def _workload(name: str):
    if name == EAR1000.name:
        from fastsnn.experiment.config import StimulusConfig
        from fastsnn.experiment.stimulus import IPDDataset

        stim = StimulusConfig(anf_per_ear=1000)
        x = IPDDataset.random(EAR1000.B, stim, torch.Generator().manual_seed(0)).spikes(torch.arange(EAR1000.B), 0.3)
        return EAR1000, x
    return WORKLOADS[name], None


def profile(name: str, repeats: int) -> dict:
    w, x = _workload(name)
    step, rest, x = _step_and_rest(w, x)
    x2 = x.reshape(-1, x.shape[-1]).contiguous()
    m, k = x2.shape
    weight = torch.randn(k, w.hidden, generator=torch.Generator().manual_seed(1)) * 0.05
    dh = torch.randn(m, w.hidden, generator=torch.Generator().manual_seed(2))
    bits, counts = pack_count_cpu(x2)
    cands = {
        "step (events)": lambda: _forced_call(None, step),
        "step (dense)": lambda: _forced_call("dense", step),
        "rest": rest,
        "pack": lambda: pack_count_cpu(x2),
        "events fwd": lambda: event_matmul_cpu(bits, counts[:, 0], weight, m),
        "events wgrad": lambda: event_weight_grad_cpu(bits, dh),
        "dense fwd": lambda: x2 @ weight,
        "dense wgrad": lambda: x2.t() @ dh,
    }
    timed = alternate(cands, repeats)
    med = {k_: 1e3 * v["median_s"] for k_, v in timed.items()}
    q = {k_: [1e3 * v["q20_s"], 1e3 * v["q80_s"]] for k_, v in timed.items()}
    projection = med["step (events)"] - med["rest"]
    row = {"workload": name, "dims": w.describe(), "density": float(x.mean()), "M": m, "K": k, "N": w.hidden,
           "median_ms": med, "q20_q80_ms": q, "projection_in_step_ms": projection,
           "pieces_ms": med["pack"] + med["events fwd"] + med["events wgrad"],
           "step_over_rest": med["step (events)"] / med["rest"],
           "dense_over_events": med["step (dense)"] / med["step (events)"]}
    print(f"  {name}: " + "  ".join(f"{k_} {v:.2f}" for k_, v in med.items()), flush=True)
    return row


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"# Event-driven projections: where the step's time goes (cpu: {m['cpu']})", "",
             f"CPU: {m['cpu']}; torch {m['torch']}, {m['threads']} threads, {m['date']}; load average (1 min) "
             f"{result['loadavg_1min'][0]:.1f} at the start, {result['loadavg_1min'][1]:.1f} at the end; allocator: "
             f"{MALLOC[result['malloc']]}.", "",
             f"`{result['command']}`. Medians of interleaved rounds, ms (q20-q80 in brackets). The pieces "
             "are the input projection's, alone, on the step's own spikes.", ""]
    for r in result["rows"]:
        med, q = r["median_ms"], r["q20_q80_ms"]
        lines += [f"## {r['workload']}: {r['dims']}, {100 * r['density']:.1f}% input spikes "
                  f"(M = {r['M']}, K = {r['K']}, N = {r['N']})", "", "| part | ms |", "|---|---|"]
        lines += [f"| {k} | {v:.2f} [{q[k][0]:.2f}-{q[k][1]:.2f}] |" for k, v in med.items()]
        budget = 0.3 * med["rest"]
        dense_goal = (med["step (dense)"] / 2) - med["rest"]
        lines += ["", f"- The projection's share of the event step: {r['projection_in_step_ms']:.2f} ms "
                  f"(step - rest); its pieces alone: pack + events fwd + events wgrad = {r['pieces_ms']:.2f} ms.",
                  f"- step / rest = {r['step_over_rest']:.2f}x: the goal (<= 1.3x) leaves the projection "
                  f"{budget:.2f} ms; packing alone takes {med['pack']:.2f} ms of it.",
                  f"- dense step / event step = {r['dense_over_events']:.2f}x: >= 2x needs the event step at "
                  f"<= {med['step (dense)'] / 2:.1f} ms, the projection at <= {dense_goal:.1f} ms "
                  f"(now {r['projection_in_step_ms']:.1f}).", ""]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workloads", default=",".join(WORKLOAD_NAMES))
    p.add_argument("--repeats", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    add_malloc_option(p)
    add_out_option(p, "spike-profile-<cpu>[-retain].{json,md}")
    args = p.parse_args(argv)
    malloc_suffix = apply_malloc(p, args.malloc)
    names = args.workloads.split(",")
    if set(names) - set(WORKLOAD_NAMES):
        p.error(f"unknown workloads {sorted(set(names) - set(WORKLOAD_NAMES))}; choose from {', '.join(WORKLOAD_NAMES)}")
    if args.repeats < 2:
        p.error(f"--repeats must be >= 2, got {args.repeats}")
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    rows = [profile(name, args.repeats) for name in names]
    info = machine()
    command = "python -m bench.spike_profile " + " ".join(argv if argv is not None else sys.argv[1:])
    result = {"machine": info, "command": command.strip(), "malloc": args.malloc,
              "loadavg_1min": [load, os.getloadavg()[0]], "rows": rows}
    table = markdown(result)
    print(table)
    stem = args.out / f"spike-profile-{slug(info['cpu'])}{malloc_suffix}"
    write_results(stem, result, table)
    print(f"wrote {stem}.{{json,md}}")
    return result


if __name__ == "__main__":
    main()

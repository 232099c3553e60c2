"""Event-driven against dense spike projections (``fastsnn.spike_matmul``) on the CPU, side by side.

    python -m bench.spike_crossover [--shapes seed,seed128,wide,bigbatch] [--densities ...] [--repeats 5]
                                    [--threads 2] [--steps] [--out DIR]

1. The crossover curves: for each shape (M = B * T rows, K inputs, N outputs of bench/workloads.py's
   seed, wide and bigbatch hidden layers, and the seed with 128 hidden neurons) and density of random
   0/1 spikes, the projection forward (the packing pass, then the events or the GEMM: ``path="event"``
   / ``"dense"``) and the weight gradient from the bits, both paths interleaved round by round
   (``bench.common.alternate``);
   medians, and the density where the two curves cross (interpolated in log density). Writes
   ``OUT/spike-crossover-<cpu>.{json,png}`` (``--out``, default runs/bench); ``fastsnn/ops/spikes/__init__.py``'s
   ``CPU_CROSSOVER`` cites it.
2. ``--steps``: training steps (forward + loss + backward, bench/workloads.py's ``train_step``) with the
   projection forced dense and by events (``path="auto"`` as the library runs it), interleaved, and
   the step's remaining work (the same step from a given projection ``h``): the seed workload (with the
   seed's own loop), bigbatch, wide at 5% and 22.5% input density, and a network of 1000 fibres per ear
   (the seed's stimulus, 22.5% density) x 1024 hidden neurons. Written into the same JSON under "steps".
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

import fastsnn.ops.spikes as spikes
from fastsnn.experiment.config import StimulusConfig
from fastsnn.experiment.stimulus import IPDDataset

from . import seed_baseline
from .common import add_out_option, alternate, cpu_name, machine, slug
from .workloads import WORKLOADS, Workload, _network, cases, make_inputs

SHAPES = {name: (WORKLOADS[name].B * WORKLOADS[name].T, WORKLOADS[name].inputs, WORKLOADS[name].hidden)
          for name in ("seed", "wide", "bigbatch")}
SHAPES["seed128"] = (6400, 200, 128)  # the seed with 128 hidden neurons: between N = 30 and 1000
DENSITIES = (0.001, 0.003, 0.01, 0.03, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
PATHS = ("event", "dense")
EAR1000 = Workload("ear1000x1024", 64, 100, 2000, 1024)


def _spikes(m: int, k: int, density: float, seed: int = 0) -> torch.Tensor:
    return (torch.rand(m, k, generator=torch.Generator().manual_seed(seed)) < density).float()


def crossover(densities, event_ms, dense_ms) -> float | None:
    """The density where the event path stops being faster (log-linear interpolation of the time ratio);
    None if it is faster at every density measured, 0 if at none."""
    ratio = [math.log(e / d) for e, d in zip(event_ms, dense_ms)]
    if ratio[0] > 0:
        return 0.0
    for i in range(1, len(ratio)):
        if ratio[i] > 0:
            x0, x1 = math.log(densities[i - 1]), math.log(densities[i])
            return math.exp(x0 + (x1 - x0) * -ratio[i - 1] / (ratio[i] - ratio[i - 1]))
    return None


def curves(shape: tuple[int, int, int], densities, repeats: int) -> dict:
    """{op: {path: [median ms per density]}} for the forward and the weight gradient at one shape."""
    m, k, n = shape
    g = torch.Generator().manual_seed(1)
    w = torch.randn(k, n, generator=g)
    dh = torch.randn(m, n, generator=g)
    out = {"forward": {p: [] for p in PATHS}, "weight_grad": {p: [] for p in PATHS}}
    for density in densities:
        x = _spikes(m, k, density)
        _, bits, count = spikes._spike_project(x, w, "cpu", "dense")
        block = 3 if m * k * n < 1e8 else 1
        fwd = alternate({p: (lambda p=p: spikes._spike_project(x, w, "cpu", p)) for p in PATHS}, repeats, block=block)
        bwd = alternate({p: (lambda p=p: spikes._spike_weight_grad(bits, dh, count, "cpu", p)) for p in PATHS},
                        repeats, block=block)
        for op, timed in (("forward", fwd), ("weight_grad", bwd)):
            for p in PATHS:
                out[op][p].append(1e3 * timed[p]["median_s"])
        print(f"  {shape} density {density:<6g} forward event {out['forward']['event'][-1]:9.3f} ms, dense "
              f"{out['forward']['dense'][-1]:9.3f} ms; weight grad event {out['weight_grad']['event'][-1]:9.3f} ms, "
              f"dense {out['weight_grad']['dense'][-1]:9.3f} ms", flush=True)
    return out


@contextlib.contextmanager
def forced(path: str | None):
    """Every spike projection on ``path`` ("event"/"dense"), or as the library decides (None)."""
    if path is None:
        yield
        return
    with mock.patch.object(spikes, "event_pays", lambda *args, **kwargs: path == "event"):
        yield


def _step_and_rest(w: Workload, x: torch.Tensor | None = None):
    """(train_step, the step's work after the projection, the input spikes) for workload ``w`` (input
    spikes ``x`` if given, else bench/workloads.py's)."""
    inp = make_inputs(w, torch.device("cpu"))
    if x is not None:
        inp.x = x
    net = _network(w, inp, "cpu")
    y = inp.y
    h = spikes.spike_matmul(inp.x, net.hidden.weight.detach()).detach().requires_grad_()
    weights = net.readout.time_weights(w.T, h.dtype, h.device)

    def step():
        F.cross_entropy(net(inp.x) * 0.01, y).backward()

    def rest():  # IPDNetwork.forward from the projection h on
        total = net.hidden._run(h, weights) @ net.readout.effective_weight()
        F.cross_entropy(total * 0.01, y).backward()

    return step, rest, inp.x


def steps(repeats: int, with_seed_loop: bool) -> list[dict]:
    """Training steps, the projection dense and by events, and the rest of the step, in one run per workload
    (at seed size also the seed's own loop, ``with_seed_loop``)."""
    rows = []
    stim = StimulusConfig(anf_per_ear=1000)
    ear1000 = IPDDataset.random(EAR1000.B, stim, torch.Generator().manual_seed(0)).spikes(torch.arange(EAR1000.B), 0.3)
    runs = [("seed", WORKLOADS["seed"], None, with_seed_loop), ("bigbatch", WORKLOADS["bigbatch"], None, False),
            ("wide-5%", WORKLOADS["wide"], 0.05, False), ("wide-22.5%", WORKLOADS["wide"], None, False),
            (EAR1000.name, EAR1000, ear1000, False)]
    for name, w, x, with_seed in runs:
        if isinstance(x, float):
            x = (torch.rand(w.B, w.T, w.inputs, generator=torch.Generator().manual_seed(0)) < x).float()
        step, rest, x = _step_and_rest(w, x)
        cands = {}
        if with_seed:
            cands["seed"] = cases(w, torch.device("cpu"), ["seed"], ops=("train_step",))[("train_step", "seed")]
        for label, path in (("dense", "dense"), ("events", None)):
            cands[label] = lambda path=path: _forced_call(path, step)
        cands["rest"] = rest
        small = w.B * w.T * w.inputs * w.hidden < 1e8
        timed = alternate(cands, max(2, repeats if small else repeats // 2), block=10 if small else 1)
        med = {k: 1e3 * v["median_s"] for k, v in timed.items()}
        row = {"workload": name, "dims": w.describe(), "density": float(x.mean()), "median_ms": med,
               "dense_over_events": med["dense"] / med["events"], "events_over_rest": med["events"] / med["rest"]}
        if with_seed:
            row["seed_over_events"] = med["seed"] / med["events"]
            row["seed_over_dense"] = med["seed"] / med["dense"]
        rows.append(row)
        print(f"  {name:12s} " + "  ".join(f"{k} {v:9.2f} ms" for k, v in med.items())
              + f"   dense/events {row['dense_over_events']:.2f}x  events/rest {row['events_over_rest']:.2f}x"
              + (f"  seed/events {row['seed_over_events']:.1f}x" if with_seed else ""), flush=True)
    return rows


def _forced_call(path: str | None, fn):
    with forced(path):
        fn()


def figure(result: dict, path: Path) -> None:
    shapes = list(result["shapes"])
    fig = Figure(figsize=(4.2 * len(shapes), 7), dpi=100)
    axes = fig.subplots(2, len(shapes), squeeze=False)
    for col, name in enumerate(shapes):
        entry = result["shapes"][name]
        for row, op in enumerate(("forward", "weight_grad")):
            ax = axes[row][col]
            for p, style in zip(PATHS, ("o-", "s--")):
                ax.plot(result["densities"], entry[op][p], style, label=p, ms=4)
            cross = entry["crossover"][op]
            if cross:
                ax.axvline(cross, color="gray", lw=0.8, ls=":")
            m, k, n = entry["shape"]
            label = "event faster at every density" if cross is None else f"crossover {cross:.3g}"
            ax.set_title(f"{name} (M={m}, K={k}, N={n}): {op.replace('_', ' ')}\n{label}", fontsize=9)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("spike density")
            ax.set_ylabel("median ms")
            ax.legend(fontsize=8)
    m = result["machine"]
    threads = f"{m['threads']} thread" + ("s" if m["threads"] > 1 else "")
    fig.suptitle(f"spike_matmul on {m['cpu']} ({threads}): events against the dense GEMM")
    fig.tight_layout()
    fig.savefig(path)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default=",".join(SHAPES))
    p.add_argument("--densities", default=",".join(map(str, DENSITIES)))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--steps", action="store_true", help="also time training steps, dense against events")
    add_out_option(p, "spike-crossover-<cpu>.{json,png}")
    seed_baseline.add_option(p)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    densities = [float(d) for d in args.densities.split(",")]
    result = {"machine": machine(), "densities": densities, "shapes": {}}
    print(f"CPU: {cpu_name()}, {torch.get_num_threads()} threads")
    for name in filter(None, args.shapes.split(",")):
        entry = {"shape": SHAPES[name], **curves(SHAPES[name], densities, args.repeats)}
        entry["crossover"] = {op: crossover(densities, entry[op]["event"], entry[op]["dense"])
                              for op in ("forward", "weight_grad")}
        result["shapes"][name] = entry
        print(f"{name}: crossover density " + ", ".join(f"{op} {c if c is None else f'{c:.3g}'}"
                                                        for op, c in entry["crossover"].items()), flush=True)
    if args.steps:
        result["steps"] = steps(args.repeats, seed_baseline.use(p, args.seed_script, "the seed loop's step (--steps)"))
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"spike-crossover-{slug(cpu_name())}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    if result["shapes"]:
        figure(result, stem.with_suffix(".png"))
    print(f"wrote {stem}.{{json,png}}")
    return result


if __name__ == "__main__":
    main()

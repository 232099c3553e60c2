"""Learnable delays at the seed's size: fastsnn's delayed projection side by side with dcls.

    python -m bench.delays [--repeats 10] [--densities 0.05,0.225,0.5,1] [--threads N | --cpu-time] [--device cuda]

The op: ``h[b, t, j] = sum_i sum_k W_ij G_ij(k) x[b, t-k, i]`` for B=64, T=100, 200 inputs -> 30
outputs, max_delay 25 (26 taps), Gaussian kernels of width sigma = 3 steps, x 0/1 spikes drawn at
each density (the seed's stimulus fires at about 0.225 per fibre and step). Providers:

- ``fastsnn-cpu``: ``fastsnn.delayed_projection(backend="cpu")``, the event-driven numba kernels (with
  ``--device cuda``: ``fastsnn-triton``, the dense Triton kernels)
- ``dense-conv1d``: the same kernels (``delay_taps``) convolved by torch's ``conv1d`` (oneDNN) under
  autograd: the dense formulation
- ``dcls``: ``DCLS.construct.modules.Dcls1d(version="gauss")`` on the input transposed to (B, I, T) and
  padded by max_delay steps, as SNN-delays runs it (its SIG fixed, as there)
- ``reference``: fastsnn's oracle, a loop of 26 matmuls under autograd (at the seed's density only)

Modes: ``fwd`` (no autograd), ``fwd_bwd`` (forward and the gradients for W and the delays; the
network's input needs none), ``eval`` (fastsnn with rounded delays, a one-hot kernel; the dense
providers cost the same as ``fwd``), and ``train_step``: the whole seed network (fastsnn-cpu) with
and without delays, forward + loss + backward. Timings: medians over rounds that interleave the
providers (``bench.common.alternate``, 3 calls in a row per provider and round, the first untimed);
wall time, or with ``--cpu-time`` one thread's CPU time (``time.thread_time``, one torch and numba
thread): on a machine shared with other jobs, wall time also counts the time the neighbours hold
the core.
Before timing, every provider's output and gradients are compared with fastsnn's reference and the
largest differences recorded. Writes ``OUT/delays-<cpu>.json`` and ``.md`` (``delays-<gpu>`` on CUDA; OUT: ``--out``,
runs/bench by default).
"""

from __future__ import annotations

import argparse
import math
import time

import numba
import torch
import torch.nn.functional as F

import fastsnn
from fastsnn.experiment.config import ModelConfig, StimulusConfig
from fastsnn.experiment.model import IPDNetwork
from fastsnn.nn import anneal_delays
from fastsnn.ops.delays.reference import delay_taps

from .common import add_out_option, alternate, cpu_name, machine, save, slug

B, T, I, O, MAX_DELAY, SIGMA = 64, 100, 200, 30, 25, 3.0
K = MAX_DELAY + 1
SEED_DENSITY = 0.225


def _dcls():
    try:
        from DCLS.construct.modules import Dcls1d
    except ImportError:
        return None
    return Dcls1d


def problem(density: float, seed: int = 0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(B, T, I, generator=g) < density).float()
    w = (torch.rand(I, O, generator=g) * 2 - 1) / math.sqrt(O)
    d = torch.rand(I, O, generator=g) * MAX_DELAY
    dh = torch.randn(B, T, O, generator=g)
    return [t.to(device) for t in (x, w, d, dh)]


def fast_name(device) -> str:
    return "fastsnn-triton" if torch.device(device).type == "cuda" else "fastsnn-cpu"


def providers(x, w, d, dh, with_dcls: bool, with_reference: bool) -> dict:
    """name -> {mode: callable returning (h, dW, dD) (gradients None in fwd/eval)}."""
    out = {}
    wq, dq = w.clone().requires_grad_(), d.clone().requires_grad_()

    def fastsnn_run(backend, sigma=SIGMA):
        def fwd():
            with torch.no_grad():
                return fastsnn.delayed_projection(x, wq, dq, sigma, max_delay=MAX_DELAY, backend=backend), None, None

        def fwd_bwd():
            h = fastsnn.delayed_projection(x, wq, dq, sigma, max_delay=MAX_DELAY, backend=backend)
            return (h, *torch.autograd.grad(h, (wq, dq), dh))
        return fwd, fwd_bwd

    fast = "triton" if x.device.type == "cuda" else "cpu"
    fwd, fwd_bwd = fastsnn_run(fast)
    out[fast_name(x.device)] = {"fwd": fwd, "fwd_bwd": fwd_bwd, "eval": fastsnn_run(fast, None)[0]}

    def dense(grad: bool):
        def run():
            with torch.set_grad_enabled(grad):
                kernel = (wq[..., None] * delay_taps(dq, SIGMA, MAX_DELAY)).permute(1, 0, 2).flip(-1)  # (O, I, K)
                h = F.conv1d(F.pad(x.transpose(1, 2), (MAX_DELAY, 0)), kernel).transpose(1, 2)
                return (h, *torch.autograd.grad(h, (wq, dq), dh)) if grad else (h, None, None)
        return run

    out["dense-conv1d"] = {"fwd": dense(False), "fwd_bwd": dense(True)}
    Dcls1d = _dcls()
    if with_dcls and Dcls1d is not None:
        layer = Dcls1d(I, O, kernel_count=1, dilated_kernel_size=K, bias=False, version="gauss").to(x.device)
        with torch.no_grad():
            layer.weight.copy_(w.t()[..., None])
            layer.P.copy_((MAX_DELAY - d - K // 2).t()[None, ..., None])
            layer.SIG.fill_(SIGMA - 0.27)
        layer.SIG.requires_grad_(False)

        def dcls(grad: bool):
            def run():
                with torch.set_grad_enabled(grad):
                    h = layer(F.pad(x.transpose(1, 2), (MAX_DELAY, 0)))
                    if not grad:
                        return h.transpose(1, 2), None, None
                    dw, dp = torch.autograd.grad(h, (layer.weight, layer.P), dh.transpose(1, 2))
                    return h.transpose(1, 2), dw[..., 0].t(), -dp[0, ..., 0].t()
            return run

        out["dcls"] = {"fwd": dcls(False), "fwd_bwd": dcls(True)}
    if with_reference:
        fwd, fwd_bwd = fastsnn_run("reference")
        out["reference"] = {"fwd": fwd, "fwd_bwd": fwd_bwd}
    return out


def differences(cands: dict) -> dict:
    """Largest absolute difference of each provider's h, dW and dD from fastsnn's reference (fwd_bwd), and the
    reference's largest magnitudes for scale."""
    ref = [t.detach() for t in cands["reference"]["fwd_bwd"]()]
    diffs = {"scale": {name: t.abs().max().item() for name, t in zip(("h", "dW", "dD"), ref)}}
    for name, modes in cands.items():
        if name == "reference":
            continue
        got = modes["fwd_bwd"]()
        diffs[name] = {n: (a.detach() - e).abs().max().item() for n, a, e in zip(("h", "dW", "dD"), got, ref)}
    return diffs


def train_steps(device) -> dict:
    """The whole seed network on the fast backend, with and without delays: forward + loss + backward."""
    x, *_ = problem(SEED_DENSITY, seed=1, device=device)
    y = torch.randint(0, 12, (B,), generator=torch.Generator().manual_seed(2)).to(device)
    steps = {}
    for name, max_delay in (("no delays", 0), ("max_delay 25", MAX_DELAY)):
        model = IPDNetwork(StimulusConfig(), ModelConfig(backend="auto", max_delay=max_delay),
                           torch.Generator().manual_seed(0)).to(device)
        anneal_delays(model, 0, 20)
        params = list(model.parameters())

        def step(model=model, params=params):
            loss = F.cross_entropy(model(x) * 0.01, y)
            return torch.autograd.grad(loss, params)
        steps[name] = step
    return steps


def table(results: dict, densities: list[float], fast: str) -> list[str]:
    names = [fast, "dense-conv1d", "dcls", "reference"]
    lines = ["| density | mode | " + " | ".join(f"{n} ms" for n in names) + f" | dcls / {fast} |",
             "|---|---|" + "---|" * (len(names) + 1)]
    for density in densities:
        for mode in ("fwd", "fwd_bwd", "eval"):
            row = results["timings"][str(density)].get(mode, {})
            if not row:
                continue
            cells = [f"{1e3 * row[n]['median_s']:.2f}" if n in row else "-" for n in names]
            ratio = (f"{row['dcls']['median_s'] / row[fast]['median_s']:.1f}x"
                     if "dcls" in row and fast in row else "-")
            lines.append(f"| {density:g} | {mode} | " + " | ".join(cells) + f" | {ratio} |")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.delays", description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=10, help="interleaved rounds per density")
    p.add_argument("--densities", default="0.05,0.225,0.5,1", help="input spike probabilities per fibre and step")
    p.add_argument("--no-dcls", action="store_true", help="leave dcls out even where it is installed")
    p.add_argument("--threads", type=int, default=None, help="torch (and so numba) threads (default: torch's)")
    p.add_argument("--cpu-time", action="store_true", help="one thread, timed by its CPU time (time.thread_time)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    add_out_option(p, "delays-<cpu or gpu>.{json,md}")
    args = p.parse_args(argv)
    if args.cpu_time and (args.device == "cuda" or args.threads not in (None, 1)):
        p.error("--cpu-time times one CPU thread: drop --threads and --device cuda")
    if args.cpu_time:
        args.threads = 1
    clock = time.thread_time if args.cpu_time else time.perf_counter
    device, fast = torch.device(args.device), fast_name(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    densities = [float(v) for v in args.densities.split(",")]
    with_dcls = not args.no_dcls and _dcls() is not None
    fastsnn.delayed_projection(*problem(SEED_DENSITY, device=device)[:3], SIGMA, max_delay=MAX_DELAY)  # warm-up
    results = {"machine": {**machine(), "numba_threads": numba.get_num_threads()},
               "workload": {"B": B, "T": T, "inputs": I, "outputs": O, "max_delay": MAX_DELAY, "sigma": SIGMA},
               "dcls": _dcls_version() if with_dcls else None, "clock": "cpu" if args.cpu_time else "wall",
               "timings": {}, "differences": {}}
    for density in densities:
        x, w, d, dh = problem(density, device=device)
        cands = providers(x, w, d, dh, with_dcls, with_reference=density == SEED_DENSITY)
        if "reference" in cands:
            results["differences"][str(density)] = differences(cands)
        timings = {}
        for mode in ("fwd", "fwd_bwd", "eval"):
            fns = {name: modes[mode] for name, modes in cands.items() if mode in modes}
            timings[mode] = alternate(fns, args.repeats, device, block=3, clock=clock)
            print(f"density {density:g} {mode}: " + ", ".join(
                f"{n} {1e3 * r['median_s']:.2f} ms" for n, r in timings[mode].items()), flush=True)
        results["timings"][str(density)] = timings
    steps = alternate(train_steps(device), args.repeats, device, block=3, clock=clock)
    results["train_step"] = steps
    print("train step: " + ", ".join(f"{n} {1e3 * r['median_s']:.2f} ms" for n, r in steps.items()))
    name = f"delays-{slug(torch.cuda.get_device_name() if device.type == 'cuda' else cpu_name())}"
    path = save(args.out, name, results)
    m = results["machine"]
    md = [f"# Learnable delays: fastsnn vs dcls ({m.get('gpu') if device.type == 'cuda' else m['cpu']})", "",
          f"`python -m bench.delays --repeats {args.repeats} --densities {args.densities}"
          f"{' --cpu-time' if args.cpu_time else f' --threads {args.threads}' if args.threads else ''}"
          f"{' --device cuda' if device.type == 'cuda' else ''}`; "
          f"{m['date']}, "
          f"torch {m['torch']}, {m['threads']} torch threads, {m['numba_threads']} numba threads, "
          f"dcls {results['dcls'] or ('left out' if args.no_dcls else 'not installed')}.", "",
          f"B={B}, T={T}, {I} inputs -> {O} outputs, max_delay {MAX_DELAY}, sigma {SIGMA}; medians of "
          f"{'one thread' + chr(39) + 's CPU time' if args.cpu_time else 'wall time'} over {args.repeats} interleaved "
          "rounds of 3 timed calls per provider.", "", *table(results, densities, fast), "",
          f"Whole seed network on {fast}, forward + loss + backward: " + ", ".join(
              f"{n} {1e3 * r['median_s']:.2f} ms" for n, r in steps.items()) + ".", "",
          "Largest absolute differences from fastsnn's reference (forward + backward, seed density):", ""]
    for density, diffs in results["differences"].items():
        scale = diffs["scale"]
        md.append(f"- scale (largest |value| of the reference): h {scale['h']:.3g}, dW {scale['dW']:.3g}, "
                  f"dD {scale['dD']:.3g}")
        for provider, d in diffs.items():
            if provider != "scale":
                md.append(f"- {provider}: h {d['h']:.2e}, dW {d['dW']:.2e}, dD {d['dD']:.2e}")
    (args.out / f"{name}.md").write_text("\n".join(md) + "\n")
    print(f"wrote {path} and {name}.md")
    return 0


def _dcls_version() -> str:
    from importlib.metadata import version

    try:
        return version("dcls")
    except Exception:
        return "unknown"


if __name__ == "__main__":
    raise SystemExit(main())

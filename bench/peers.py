"""fastsnn in each peer-exact configuration against the peer's own layer, side by side in one run.

    python -m bench.peers [--device cpu|cuda] [--sizes seed,seed128,long,bigbatch] [--configs ...]
                          [--repeats 7] [--threads 2] [--malloc glibc|retain] [--out DIR]

The configurations are docs/peers.md's (SpikingJelly ``LIFNode(decay_input=False)`` hard and soft
reset, ``detach_reset`` both ways; snnTorch ``Leaky`` "zero" and "subtract"), and the check that
each pair gives identical spikes runs before any timing. The timed unit is the neuron layer alone,
forward + backward, on given input currents h (a leaf that requires a gradient; loss = spikes.sum()):

- the peer on its own layout: SpikingJelly's multi-step node (``step_mode="m"``) on time-major
  (T, B, N) currents (on CPU tensors SpikingJelly 2 runs its torch implementation, the only one
  there; on CUDA the one it selects, recorded in the output); snnTorch's ``Leaky`` stepped over
  the time-major currents with its state, spikes stacked;
- fastsnn: ``fastsnn.lif`` on the (B, T, N) currents, backend "auto" (the numba kernels on CPU,
  Triton on CUDA).

Sizes (B, T, N): seed, long and bigbatch are bench/workloads.py's (hidden layer of the workload),
plus seed128 = (64, 100, 128). Candidates are interleaved round by round (``bench.common.alternate``).
Writes ``OUT/peers-<device>-<cpu or gpu>.{json,md}`` (``--out``, default runs/bench; on CPU with
``--threads`` other than 2, ``-<n>threads`` appended; with OMP_WAIT_POLICY set, ``-omp-<policy>``; with
``--malloc retain``, ``-retain``). ``--malloc retain`` runs the whole process, both sides, with
:func:`fastsnn.cpu.allocator.retain_freed_memory`: freed tensors stay in the heap instead of being
faulted back in, page by page, on the next call. The issue's goal: every
configuration >= 5x its peer at the seed and bigbatch sizes.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
from typing import Callable

import torch

import fastsnn

from .common import MALLOC, add_malloc_option, add_out_option, alternate, apply_malloc, machine, slug, write_results
from .workloads import WORKLOADS


def _layer(workload: str) -> tuple[int, int, int]:
    """(B, T, N) of a bench/workloads.py workload's hidden layer."""
    w = WORKLOADS[workload]
    return w.B, w.T, w.hidden


SIZES = {"seed": _layer("seed"), "seed128": (64, 100, 128), "long": _layer("long"), "bigbatch": _layer("bigbatch")}
# calls per candidate per round: milliseconds at seed size, where the first call after another
# candidate's refills the caches (bench/report.py); one at the others
BLOCK = {"seed": 5, "seed128": 3, "long": 1, "bigbatch": 1}
REPEATS = {"seed": 1.0, "seed128": 1.0, "long": 0.5, "bigbatch": 0.6}

# environment variables that change the timings, recorded with the results
ENV = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT", "NUMBA_THREADING_LAYER", "NUMBA_NUM_THREADS")
TAU = 5.0  # SpikingJelly's tau in steps: alpha = 1 - 1/tau = 0.8
BETA = 0.8  # snnTorch's beta = alpha

# name: (peer, peer options, fastsnn.lif options); the mapping of docs/peers.md
CONFIGS = {
    "sj-hard": ("spikingjelly", dict(v_reset=0.0, detach_reset=False),
                dict(spike="same_step", reset="zero", fire=">=", surrogate="sigmoid", beta=4.0)),
    "sj-hard-detach": ("spikingjelly", dict(v_reset=0.0, detach_reset=True),
                       dict(spike="same_step", reset="zero", fire=">=", surrogate="sigmoid", beta=4.0,
                            detach_reset=True)),
    "sj-soft": ("spikingjelly", dict(v_reset=None, detach_reset=False),
                dict(spike="same_step", reset="subtract", fire=">=", surrogate="sigmoid", beta=4.0)),
    "sj-soft-detach": ("spikingjelly", dict(v_reset=None, detach_reset=True),
                       dict(spike="same_step", reset="subtract", fire=">=", surrogate="sigmoid", beta=4.0,
                            detach_reset=True)),
    "snn-zero": ("snntorch", dict(reset_mechanism="zero"),
                 dict(spike="same_step", reset="zero", fire=">", surrogate="atan", beta=2.0, detach_reset=True)),
    "snn-subtract": ("snntorch", dict(reset_mechanism="subtract"),
                     dict(spike="same_step", reset="subtract_next", fire=">", surrogate="atan", beta=2.0,
                          detach_reset=True)),
}


def peer_layer(peer: str, options: dict, device: str):
    """The peer's own layer for ``options``, and a function running it on time-major currents -> (T, B, N)."""
    if peer == "spikingjelly":
        from spikingjelly.activation_based import neuron

        node = neuron.LIFNode(tau=TAU, decay_input=False, step_mode="m", **options).to(device)

        def run(h_tm):
            node.reset()
            return node(h_tm)
        return run
    import snntorch

    layer = snntorch.Leaky(beta=BETA, **options).to(device)

    def run(h_tm):
        mem = layer.init_leaky()
        out = []
        for h_t in h_tm:
            spk, mem = layer(h_t, mem)
            out.append(spk)
        return torch.stack(out)
    return run


MISMATCHES: dict = {}  # (config, size): spikes that differ between the peer and fastsnn (0 on CPU)


def pair(config: str, size: tuple[int, int, int], device: str) -> dict[str, Callable[[], None]]:
    """{"<config> peer": fn, "<config> fastsnn": fn}, each a forward + backward on the same currents,
    after checking that both give the same spikes (recorded in MISMATCHES; more than 1e-4 of them raises)."""
    peer, peer_options, options = CONFIGS[config]
    B, T, N = size
    g = torch.Generator().manual_seed(0)
    h0 = torch.randn(B, T, N, generator=g) * 0.6 + 0.3
    h = h0.to(device).requires_grad_()
    h_tm = h0.transpose(0, 1).contiguous().to(device).requires_grad_()
    run_peer = peer_layer(peer, peer_options, device)
    alpha = 1 - 1 / TAU if peer == "spikingjelly" else BETA

    with torch.no_grad():
        s_peer = run_peer(h_tm).transpose(0, 1).to(h.dtype)
        s_ours = fastsnn.lif(h, alpha, **options)
    differ = int((s_peer != s_ours).sum())
    if differ > 1e-4 * s_ours.numel():  # not rounding at a tie (possible on a GPU: fused multiply-adds)
        raise AssertionError(f"{config} at {size}: {differ} of {s_ours.numel()} spikes differ from the peer's")
    MISMATCHES[(config, size)] = differ

    def peer_step():
        h_tm.grad = None
        run_peer(h_tm).sum().backward()

    def ours_step():
        h.grad = None
        fastsnn.lif(h, alpha, **options).sum().backward()
    return {f"{config} peer": peer_step, f"{config} fastsnn": ours_step}


def versions() -> dict:
    out = {}
    for dist in ("spikingjelly", "snntorch"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def sj_implementation(device: str) -> str | None:
    try:
        from spikingjelly.activation_based.functional import neuron_implementation
    except ImportError:
        return None
    return neuron_implementation("lif", torch.device(device))["implementation"]


def markdown(result: dict) -> str:
    m, v = result["machine"], result["versions"]
    where = m.get("gpu", m["cpu"]) if result["device"] == "cuda" else m["cpu"]
    lines = [f"# fastsnn vs its peers, peer-exact configurations, forward + backward ({result['device']}: {where})",
             "", f"{'GPU' if result['device'] == 'cuda' else 'CPU'}: {where}; torch {m['torch']}, {m['threads']} "
             f"threads, {m['date']}; SpikingJelly {v['spikingjelly']} (LIF implementation: "
             f"{result['sj_implementation']}), snnTorch {v['snntorch']}; load average (1 min) "
             f"{result['loadavg_1min'][0]:.1f} at the start, {result['loadavg_1min'][1]:.1f} at the end; environment: "
             f"{', '.join(f'{k}={v}' for k, v in result['env'].items()) or 'no threading variables set'}; allocator: "
             f"{MALLOC[result.get('malloc', 'glibc')]}.", "",
             f"`{result['command']}`. The neuron layer alone on given input currents, forward + backward "
             "(loss = spikes.sum()); the peer on time-major currents (SpikingJelly multi-step, snnTorch stepped "
             "with its state), fastsnn.lif in the configuration of docs/peers.md (backend auto); spikes compared "
             f"first: {sum(r['spikes_differ'] for r in result['rows'])} differ in all. Medians of interleaved "
             "rounds, q20-q80 in brackets; speedup = peer / fastsnn.", "",
             "| size (B, T, N) | configuration | peer ms | fastsnn ms | speedup |", "|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['size']} {tuple(r['shape'])} | {r['config']} ({r['peer']}) | "
                     f"{r['peer_ms']:.2f} [{r['peer_q20_ms']:.2f}-{r['peer_q80_ms']:.2f}] | "
                     f"{r['fastsnn_ms']:.3f} [{r['fastsnn_q20_ms']:.3f}-{r['fastsnn_q80_ms']:.3f}] | "
                     f"{r['speedup']:.1f}x |")
    goal = [r for r in result["rows"] if r["size"] in ("seed", "bigbatch")]
    if goal:
        worst = min(goal, key=lambda r: r["speedup"])
        lines += ["", f"Goal (issue 10): every configuration >= 5x its peer at seed and bigbatch sizes. Lowest: "
                  f"{worst['speedup']:.1f}x ({worst['config']}, {worst['size']}): "
                  f"{'met' if worst['speedup'] >= 5 else 'NOT met'}."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    p.add_argument("--sizes", default=",".join(SIZES))
    p.add_argument("--configs", default=",".join(CONFIGS))
    p.add_argument("--repeats", type=int, default=7, help="rounds at seed size (others scaled down, at least 2)")
    p.add_argument("--threads", type=int, default=2, help="torch and numba threads (CPU)")
    add_malloc_option(p)
    add_out_option(p, "peers-<device>-<cpu or gpu>[-<n>threads][-retain].{json,md}")
    args = p.parse_args(argv)
    malloc_suffix = apply_malloc(p, args.malloc)
    sizes, configs = args.sizes.split(","), args.configs.split(",")
    for name, chosen, known in (("sizes", sizes, SIZES), ("configs", configs, CONFIGS)):
        if set(chosen) - set(known):
            p.error(f"unknown {name} {sorted(set(chosen) - set(known))}; choose from {', '.join(known)}")
    torch.set_num_threads(args.threads)
    if args.device == "cpu":
        import numba

        numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    command = "python -m bench.peers " + " ".join(argv if argv is not None else sys.argv[1:])
    load_before = os.getloadavg()
    rows = []
    for size in sizes:
        shape = SIZES[size]
        candidates = {}
        for config in configs:
            candidates.update(pair(config, shape, args.device))
        n = max(2, round(args.repeats * REPEATS[size]))
        timed = alternate(candidates, n, args.device, block=BLOCK[size])
        for config in configs:
            peer, ours = timed[f"{config} peer"], timed[f"{config} fastsnn"]
            row = {"size": size, "shape": list(shape), "config": config, "peer": CONFIGS[config][0],
                   "fastsnn_options": CONFIGS[config][2], "peer_options": CONFIGS[config][1], "rounds": n,
                   "block": BLOCK[size], "speedup": peer["median_s"] / ours["median_s"],
                   "spikes_differ": MISMATCHES[(config, shape)]}
            for who, t in (("peer", peer), ("fastsnn", ours)):
                row.update({f"{who}_ms": 1e3 * t["median_s"], f"{who}_q20_ms": 1e3 * t["q20_s"],
                            f"{who}_q80_ms": 1e3 * t["q80_s"]})
            rows.append(row)
            print(f"  {size:9s} {config:15s} peer {row['peer_ms']:10.2f} ms  fastsnn {row['fastsnn_ms']:9.3f} ms  "
                  f"{row['speedup']:6.1f}x", flush=True)
    info = machine()
    result = {"machine": info, "device": args.device, "versions": versions(),
              "sj_implementation": sj_implementation(args.device), "command": command.strip(), "tau": TAU,
              "beta": BETA, "malloc": args.malloc, "env": {k: os.environ[k] for k in ENV if k in os.environ},
              "loadavg_1min": [load_before[0], os.getloadavg()[0]], "rows": rows}
    table = markdown(result)
    print(table)
    where = info.get("gpu", info["cpu"]) if args.device == "cuda" else info["cpu"]
    suffix = "" if args.device == "cuda" or args.threads == 2 else f"-{args.threads}threads"
    if "OMP_WAIT_POLICY" in os.environ:
        suffix += f"-omp-{os.environ['OMP_WAIT_POLICY'].lower()}"
    stem = args.out / f"peers-{args.device}-{slug(where)}{suffix}{malloc_suffix}"
    write_results(stem, result, table)
    print(f"wrote {stem}.{{json,md}}")
    return result


if __name__ == "__main__":
    main()

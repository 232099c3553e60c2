"""The seed network's whole training step, fastsnn against SpikingJelly building the same network.

    python -m bench.peer_step [--sizes wide,seed] [--densities 0.05,0.225] [--repeats 7] [--threads 1]

The network of ``fastsnn train`` (inputs -> hidden LIF -> classes, a leaky readout summed over time,
cross-entropy on 0.01 x the sum), its hidden neuron in the SpikingJelly-exact configuration of
docs/peers.md (``LIFNode(tau=5, decay_input=False, v_reset=0, surrogate Sigmoid(4))``). SpikingJelly's
network is written as its users would: ``nn.Linear`` on time-major spikes, ``neuron.LIFNode`` in
multi-step mode, and a non-firing ``LIFNode`` (threshold +inf, ``store_v_seq``) as the leaky
readout. fastsnn's is ``fastsnn.experiment.model.IPDNetwork`` (the spikes kept as bits, the event-driven
projection, the readout's time sum fused into the LIF kernel). Both get the same 0/1 inputs at the
given density (the seed's stimulus fires ~22%, the issue's wide workload 5%), forward + loss +
backward, no optimizer step; medians of interleaved rounds (bench.common.alternate). Writes
``OUT/peer-step-<cpu>.{json,md}`` (``--out``, default runs/bench).
"""

from __future__ import annotations

import argparse
import math
import os

import torch
import torch.nn.functional as F

from .common import add_out_option, alternate, cpu_name, machine, slug, write_results
from .workloads import WORKLOADS

TAU = 5.0  # SpikingJelly's tau in steps: alpha = 1 - 1/tau
READOUT_TAU = 5.0
# docs/peers.md's SpikingJelly hard reset but for fire=">=" (model configs keep the seed's ">"): a tie of
# a float32 membrane with the threshold, where the two differ, does not occur on these random inputs
SJ_OPTIONS = dict(spike="same_step", reset="zero", surrogate="sigmoid", beta=4.0)


def inputs(size: str, density: float, seed: int = 0):
    w = WORKLOADS[size]
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(w.B, w.T, w.inputs, generator=g) < density).float()
    w1 = (torch.rand(w.inputs, w.hidden, generator=g) * 2 - 1) * 3 / math.sqrt(w.inputs * max(density, 1e-3) / 0.225)
    w2 = (torch.rand(w.hidden, w.classes, generator=g) * 2 - 1) / math.sqrt(w.classes)
    y = torch.randint(0, w.classes, (w.B,), generator=g)
    return w, x, w1, w2, y


def fastsnn_step(w, x, w1, w2, y):
    from fastsnn.experiment.config import ModelConfig, StimulusConfig
    from fastsnn.experiment.model import IPDNetwork

    stim = StimulusConfig(anf_per_ear=w.inputs // 2, steps=w.T, num_classes=w.classes)
    # tau_ms with dt 1 ms: alpha = exp(-1 / tau_ms) = 1 - 1/TAU
    model = ModelConfig(hidden=w.hidden, backend="cpu", tau_ms=-1 / math.log(1 - 1 / TAU),
                        readout_tau_ms=-1 / math.log(1 - 1 / READOUT_TAU), **SJ_OPTIONS)
    net = IPDNetwork(stim, model)
    with torch.no_grad():
        net.hidden.weight.copy_(w1)
        net.readout.weight.copy_(w2)

    def step():
        net.zero_grad(set_to_none=True)
        F.cross_entropy(net(x) * 0.01, y).backward()
    return step, net


def spikingjelly_step(w, x, w1, w2, y):
    from spikingjelly.activation_based import functional, neuron, surrogate

    fc1 = torch.nn.Linear(w.inputs, w.hidden, bias=False)
    fc2 = torch.nn.Linear(w.hidden, w.classes, bias=False)
    with torch.no_grad():
        fc1.weight.copy_(w1.T)
        fc2.weight.copy_(w2.T)
    lif = neuron.LIFNode(tau=TAU, decay_input=False, v_reset=0.0, surrogate_function=surrogate.Sigmoid(alpha=4.0),
                         step_mode="m")
    readout = neuron.LIFNode(tau=READOUT_TAU, decay_input=False, v_threshold=float("inf"), v_reset=None,
                             step_mode="m", store_v_seq=True)
    net = torch.nn.ModuleList([fc1, lif, fc2, readout])
    x_tm = x.transpose(0, 1).contiguous()  # SpikingJelly's multi-step layout (T, B, N)

    def step():
        net.zero_grad(set_to_none=True)
        functional.reset_net(net)
        readout(fc2(lif(fc1(x_tm))))
        F.cross_entropy(readout.v_seq.sum(0) * 0.01, y).backward()
    return step, net


def markdown(result: dict) -> str:
    m, env, rows = result["machine"], result["environment"], result["rows"]
    lines = [f"# The seed network's training step: fastsnn vs SpikingJelly ({m['cpu']})", "",
             f"CPU: {m['cpu']}; torch {m['torch']}, {m['threads']} threads, {m['date']}; SpikingJelly "
             f"{result['spikingjelly']}; load average {result['load_average']:.1f}; environment {env or 'default'}.",
             "", "`python -m bench.peer_step` (see its docstring): forward + loss + backward of the same network, "
             "medians of interleaved rounds, q20-q80 in brackets.", "",
             "| size (B, T, inputs, hidden) | input density | SpikingJelly ms | fastsnn ms | speedup |",
             "|---|---|---|---|---|"]
    for r in rows:
        sj, fs = r["spikingjelly_q20_q80_ms"], r["fastsnn_q20_q80_ms"]
        lines.append(f"| {r['size']} {tuple(r['shape'][:4])} | {r['density']:g} | {r['spikingjelly_ms']:.1f} "
                     f"[{sj[0]:.1f}-{sj[1]:.1f}] | {r['fastsnn_ms']:.1f} [{fs[0]:.1f}-{fs[1]:.1f}] | "
                     f"{r['speedup']:.1f}x |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="wide,seed")
    p.add_argument("--densities", default="0.05,0.225")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=None, help="torch and numba threads (default: torch's choice)")
    add_out_option(p, "peer-step-<cpu>.{json,md}")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for size in args.sizes.split(","):
        for density in map(float, args.densities.split(",")):
            data = inputs(size, density)
            fast, _ = fastsnn_step(*data)
            peer, _ = spikingjelly_step(*data)
            res = alternate({"spikingjelly": peer, "fastsnn": fast}, args.repeats)
            w = data[0]
            row = {"size": size, "shape": [w.B, w.T, w.inputs, w.hidden, w.classes], "density": density,
                   **{f"{k}_ms": 1e3 * v["median_s"] for k, v in res.items()},
                   **{f"{k}_q20_q80_ms": [1e3 * v["q20_s"], 1e3 * v["q80_s"]] for k, v in res.items()}}
            row["speedup"] = row["spikingjelly_ms"] / row["fastsnn_ms"]
            rows.append(row)
            print(f"{size} density {density}: SpikingJelly {row['spikingjelly_ms']:.1f} ms, "
                  f"fastsnn {row['fastsnn_ms']:.1f} ms, {row['speedup']:.1f}x", flush=True)
    from importlib.metadata import version

    env = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "OMP_WAIT_POLICY") if k in os.environ}
    result = {"machine": machine(), "spikingjelly": version("spikingjelly"), "environment": env,
              "load_average": os.getloadavg()[0], "rows": rows}
    threads = torch.get_num_threads()
    stem = args.out / f"peer-step-{slug(cpu_name())}{'' if threads == 2 else f'-{threads}threads'}"
    write_results(stem, result, markdown(result))
    print(f"wrote {stem}.{{json,md}}")
    return result


if __name__ == "__main__":
    main()

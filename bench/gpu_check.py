"""The one script to run when a GPU is available (prepared for an H200; about 3-5 minutes).

    python -m bench.gpu_check [--quick]

1. The equivalence tests on CUDA: tests/test_ops.py and tests/test_compile.py with
   TRITON_INTERPRET=0, so Triton compiles for the GPU (the cases run as ``triton-cuda``).
2. The side-by-side report (``bench.report``) on CUDA: seed loop, reference, triton.
3. LIF forward + backward at T=32, B=64, N=65536: achieved GB/s against a measured
   device-to-device copy bandwidth.
4. The seed-size training step eagerly and as a CUDA graph replay.
5. Learnable delays: tests/test_delays.py on CUDA and ``bench.delays --device cuda``.
It prints a short table last and writes bench/results/gpu_check-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import date

import torch
import torch.nn.functional as F

import fastsnn

from . import delays, report
from .common import RESULTS, alternate, machine
from .workloads import ALPHA, WORKLOADS, _network, make_inputs


def run_tests() -> int:
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "tests/test_ops.py", "tests/test_compile.py",
                           "tests/test_delays.py"], env=env).returncode


def copy_bandwidth(nbytes: int = 2**30) -> float:
    """Device-to-device copy, GB/s counting the bytes read plus the bytes written."""
    src = torch.empty(nbytes // 4, device="cuda")
    dst = torch.empty_like(src)
    t = alternate({"copy": lambda: dst.copy_(src)}, 20, "cuda")["copy"]["median_s"]
    return 2 * nbytes / t / 1e9


def lif_bandwidth(B: int = 64, T: int = 32, N: int = 65536) -> dict:
    """LIF forward + backward on (B, T, N) float32; bytes per element: forward reads h and writes s,
    u, s8 (13), backward reads grad, u, s8 and writes dh (13)."""
    h = torch.randn(B, T, N, device="cuda").mul_(0.8).add_(0.3).requires_grad_()
    grad = torch.randn(B, T, N, device="cuda")

    def fwd_bwd():
        s = fastsnn.lif(h, ALPHA, backend="triton")
        (dh,) = torch.autograd.grad(s, h, grad)
        return dh

    def fwd():
        with torch.no_grad():
            return fastsnn.lif(h, ALPHA, backend="triton")

    t = alternate({"fwd_bwd": fwd_bwd, "fwd": fwd}, 20, "cuda")
    n = B * T * N
    return {"shape": [B, T, N], "fwd_bwd_ms": 1e3 * t["fwd_bwd"]["median_s"], "fwd_ms": 1e3 * t["fwd"]["median_s"],
            "fwd_bwd_GBps": 26 * n / t["fwd_bwd"]["median_s"] / 1e9, "fwd_GBps": 8 * n / t["fwd"]["median_s"] / 1e9}


def graph_step() -> dict:
    """Seed-size training step (forward + loss + backward): eager vs one CUDA graph replay."""
    w = WORKLOADS["seed"]
    inp = make_inputs(w, torch.device("cuda"))
    net = _network(w, inp, "triton")
    params = list(net.parameters())

    def step():
        loss = F.cross_entropy(net(inp.x) * 0.01, inp.y)
        grads = torch.autograd.grad(loss, params)
        return loss, grads

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_loss, static_grads = step()
    eager_loss, eager_grads = step()
    graph.replay()
    torch.cuda.synchronize()
    same = all(torch.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in zip(static_grads, eager_grads))
    t = alternate({"eager": step, "graph": graph.replay}, 50, "cuda")
    return {"eager_ms": 1e3 * t["eager"]["median_s"], "graph_ms": 1e3 * t["graph"]["median_s"],
            "graph_matches_eager": bool(same and torch.allclose(static_loss, eager_loss))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="seed and bigbatch workloads only in the report")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check here (the CPU suite is `python -m pytest -q`)")
        return 1
    tests_rc = run_tests()
    workloads = "seed,bigbatch" if args.quick else ",".join(WORKLOADS)
    rep = report.main(["--workloads", workloads, "--repeats", "9", "--device", "cuda"])
    bw = copy_bandwidth()
    lif = lif_bandwidth()
    graph = graph_step()
    delays.main(["--device", "cuda", "--repeats", "9"])  # fastsnn-triton vs dense conv1d vs dcls on the GPU
    seed_step = next(r for r in rep["rows"] if r["workload"] == "seed" and r["op"] == "train_step")["median_ms"]
    out = {"machine": machine(), "tests_rc": tests_rc, "copy_GBps": bw, "lif": lif, "graph_step": graph,
           "seed_step_ms": seed_step}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"gpu_check-{date.today().isoformat()}.json").write_text(json.dumps(out, indent=2) + "\n")
    seed_ms = seed_step.get("seed")
    print("\n| check | result |\n|---|---|")
    print(f"| equivalence tests on CUDA | {'passed' if tests_rc == 0 else f'FAILED (rc {tests_rc})'} |")
    if seed_ms:
        print(f"| seed-size train step: seed loop / triton | {seed_ms:.2f} ms / {seed_step['triton']:.3f} ms "
              f"= {seed_ms / seed_step['triton']:.0f}x (goal 100x) |")
        print(f"| same, CUDA graph replay | {graph['graph_ms']:.3f} ms = {seed_ms / graph['graph_ms']:.0f}x "
              f"(matches eager: {graph['graph_matches_eager']}) |")
    print(f"| LIF fwd+bwd T=32 B=64 N=65536 | {lif['fwd_bwd_ms']:.3f} ms, {lif['fwd_bwd_GBps']:.0f} GB/s = "
          f"{100 * lif['fwd_bwd_GBps'] / bw:.0f}% of copy ({bw:.0f} GB/s; goal 70%) |")
    print(f"| LIF forward only | {lif['fwd_ms']:.3f} ms, {lif['fwd_GBps']:.0f} GB/s |")
    return tests_rc


if __name__ == "__main__":
    raise SystemExit(main())

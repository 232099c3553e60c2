"""The one script to run when a GPU is available (prepared for an H200; about 3-5 minutes).

    python -m bench.gpu_check [--quick]

1. The equivalence tests on CUDA with TRITON_INTERPRET=0, so Triton compiles for the GPU: every
   test module that places tensors with conftest.backend_device (``gpu_test_files``: the LIF
   family's tests/test_lif.py, the readout's, test_compile.py, ...), its Triton cases on CUDA.
   (tests/test_gpu_compile.py, the offline compile check for machines without a GPU, is not one,
   and skips itself on a machine with CUDA.)
2. The LIF family on CUDA against the reference, with the exactness that
   docs/kernel_contract.md (Floating-point contraction on the GPU) promises: for every neuron
   variant, spikes identical bit for bit (float32 and bfloat16 inputs) and gradients within
   1e-5 norm-relative; and the seed LIF's saved membrane u identical bit for bit to float32
   arithmetic on the CPU in the reference's order (a forward contracted to FMA would differ in
   the last bit of about one u in five).
3. The side-by-side report (``bench.report``) on CUDA: seed loop, reference, triton.
4. LIF forward + backward at T=32, B=64, N=65536: achieved GB/s against a measured
   device-to-device copy bandwidth.
5. The seed-size training step eagerly and as a CUDA graph replay.
6. Learnable delays: ``bench.delays --device cuda`` (fastsnn's Triton kernels against a dense conv1d
   and dcls); their equivalence tests, tests/test_delays.py, run in 1.
7. The stimulus' Triton kernel (fastsnn/experiment/stimulus_triton.py) on CUDA against the torch
   definition on CUDA, bit for bit, for every phase-offset mode, jitter and envelope power it takes
   (its sine is tl.sin, which must be the same libdevice function as torch's CUDA sin), and a
   batch's time against the torch path.
8. An epoch of the default run on CUDA (``bench.epoch --no-seed``: breakdown, per-epoch time, ready
   inputs; on CUDA the stimulus' share is not synchronised, the epoch's time is).
9. Packed sweeps (``bench.pack``; their tests, tests/test_pack.py, run in 1): a wide pack's training step at
   the seed's size for 1..256 runs (runs per second against pack size, peak memory), whether a 108-run sweep
   is one pack on this GPU, and a 3-tau x 3-seed sweep trained as one pack against the same runs solo (time,
   and the packed metrics' distance from the solo ones).
It prints a short table last and writes OUT/gpu_check-<date>.json (``--out``, default runs/bench); the exit status is
non-zero when a test or a check of 2 fails.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F

import fastsnn

from . import delays, epoch, pack, report
from .common import add_out_option, alternate, machine, save
from .workloads import ALPHA, WORKLOADS, _network, make_inputs


def gpu_test_files() -> list[str]:
    """The test modules that run the Triton backend on CUDA tensors when TRITON_INTERPRET=0: those that
    place their tensors with conftest.backend_device (the LIF family's tests/test_lif.py among them). A
    module that only runs on the CPU (tests/test_gpu_compile.py: compiling offline) is not one."""
    root = Path(__file__).resolve().parent.parent
    return sorted(str(p.relative_to(root)) for p in (root / "tests").glob("test_*.py")
                  if "backend_device" in p.read_text())


def run_tests() -> int:
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    files = gpu_test_files()
    print("equivalence tests on CUDA:", " ".join(files))
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", *files], env=env,
                          cwd=Path(__file__).resolve().parent.parent).returncode


GRAD_RTOL = 1e-5  # norm-relative, float32: the tolerance of tests/test_lif.py


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def lif_family(B: int = 16, T: int = 64, N: int = 100) -> dict:
    """Every LIF-family neuron (fastsnn.ops.neurons.neuron.family: every option fastsnn.lif / alif
    accepts) with backend="triton" on CUDA against lif_ref on the CPU: spikes compared bit for bit
    (float32 and bfloat16 h; the kernels upcast 16-bit h exactly), gradients of h, alpha (and rho)
    norm-relative in float32."""
    from fastsnn.ops.neurons.neuron import describe, family, reference_options
    from fastsnn.ops.neurons.reference import lif_ref

    gen = torch.Generator().manual_seed(0)
    h32 = torch.randn(B, T, N, generator=gen) * 0.8 + 0.3
    alpha = torch.rand(N, generator=gen) * 0.5 + 0.5
    rho = torch.rand(N, generator=gen) * 0.5 + 0.45
    grad = torch.randn(B, T, N, generator=gen)
    rows = []
    for n in family():
        n = n._replace(adapt=1.0) if n.adaptive else n  # alif's default (neuron() leaves 0: no adaptation)
        options = reference_options(n)
        for dtype in (torch.float32, torch.bfloat16):
            try:
                row = _family_case(n, options, dtype, h32, alpha, rho, grad, lif_ref)
            except Exception as e:  # e.g. a kernel that does not compile: report it, check the others
                row = {"error": f"{type(e).__name__}: {str(e).splitlines()[-1] if str(e) else ''}"[:300]}
            rows.append({"neuron": describe(n), "dtype": str(dtype).removeprefix("torch."), **row})
    worst = max((r.get("grad_rel_err", 0.0) for r in rows), default=0.0)
    errors = sum("error" in r for r in rows)
    return {"shape": [B, T, N], "variants": len(rows), "errors": errors,
            "spikes_differ": sum(r.get("spikes_differ", 0) for r in rows), "grad_rel_err_max": worst,
            "ok": not errors and all(r["spikes_differ"] == 0 for r in rows) and worst < GRAD_RTOL, "rows": rows}


def _family_case(n, options, dtype, h32, alpha, rho, grad, lif_ref) -> dict:
    params = [alpha.cuda().requires_grad_()] + ([rho.cuda().requires_grad_()] if n.adaptive else [])
    h = h32.to(dtype).cuda().requires_grad_()
    if n.adaptive:
        s = fastsnn.alif(h, *params, backend="triton", **options)
    else:
        s = fastsnn.lif(h, *params, backend="triton", **{k: v for k, v in options.items() if k != "adapt"})
    ref_inputs = [h32.to(dtype).float().requires_grad_(), alpha.clone().requires_grad_()]
    ref_inputs += [rho.clone().requires_grad_()] if n.adaptive else []
    ref = lif_ref(*ref_inputs[:2], ref_inputs[2] if n.adaptive else None, **options)
    row = {"spikes_differ": int((s.float().cpu() != ref).sum()), "spikes": ref.numel()}
    if dtype == torch.float32 and ref.requires_grad:
        got = torch.autograd.grad(s, [h, *params], grad.cuda())
        expected = torch.autograd.grad(ref, ref_inputs, grad, allow_unused=True, materialize_grads=True)
        row["grad_rel_err"] = max(_rel_err(g.cpu(), e) for g, e in zip(got, expected))
    return row


def membrane_probe(B: int = 64, T: int = 100, N: int = 1000) -> dict:
    """The seed LIF's saved membrane u from the Triton forward on CUDA against u recomputed in float32
    on the CPU in the reference's order (u_{t+1} = alpha v_t + h_t, v_{t+1} = u_{t+1} (1 - s_t), one
    multiply and one add, with the reference's spikes): equal bit for bit unless the forward is
    contracted to FMA."""
    from fastsnn.kernels.neurons import lif_fwd
    from fastsnn.ops.neurons.neuron import Neuron
    from fastsnn.ops.neurons.reference import lif_ref

    gen = torch.Generator().manual_seed(1)
    h = torch.randn(B, T, N, generator=gen) * 0.8 + 0.3
    alpha = torch.rand(N, generator=gen) * 0.5 + 0.5
    try:
        s, u, _, _ = lif_fwd(h.cuda(), alpha.cuda(), None, Neuron(), True)
    except Exception as e:  # a kernel that does not compile: report it
        return {"shape": [B, T, N], "error": f"{type(e).__name__}: {str(e).splitlines()[-1] if str(e) else ''}",
                "u_differ": None, "spikes_differ": None, "elements": B * T * N, "ok": False}
    s_ref = lif_ref(h, alpha)
    v = torch.zeros(B, N)
    u_ref = [v]
    for t in range(T - 1):
        u_t = alpha * v + h[:, t]
        v = u_t * (1 - s_ref[:, t])
        u_ref.append(u_t)
    u_ref = torch.stack(u_ref, 1)
    differ = int((u.cpu() != u_ref).sum())
    spikes_differ = int((s.cpu() != s_ref).sum())
    return {"shape": [B, T, N], "u_differ": differ, "spikes_differ": spikes_differ, "elements": u_ref.numel(),
            "ok": differ == 0 and spikes_differ == 0}


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


def stimulus_bits_check(samples: int = 512, batch: int = 64) -> dict:
    """The Triton stimulus kernel against the torch definition (spike_probability, spikes_torch), both on CUDA:
    bits that differ (must be 0) over several configurations, and one seed batch's time each way."""
    from fastsnn import SpikeBits
    from fastsnn.experiment.config import StimulusConfig
    from fastsnn.experiment.stimulus import IPDDataset

    cases = {"default": ({}, 0.0), "jitter, 37 fibres, 50 steps": (dict(anf_per_ear=37, steps=50), 0.3),
             "power 3": (dict(envelope_power=3.0, anf_per_ear=8, tone_hz=35.0), 0.1),
             "power 1": (dict(envelope_power=1.0, steps=7), 0.0),
             "angles past 125 rad": (dict(steps=400, tone_hz=90.0, anf_per_ear=4), 0.0)}
    differ, total = {}, 0
    for name, (config, jitter) in cases.items():
        data = IPDDataset.random(samples, StimulusConfig(**config), torch.Generator().manual_seed(0), "cuda", jitter)
        gen = torch.Generator().manual_seed(1)
        bad = 0
        for start in range(0, samples, batch):
            index = torch.arange(start, min(samples, start + batch), device="cuda")
            offset, noise = data.draw_phase(gen)
            got = data.spike_bits(index, offset, noise).bits
            ref = SpikeBits.pack(data.spikes_torch(index, data.spike_probability(index, offset, noise))).bits
            bad += int((got ^ ref).ne(0).sum())
            total += ref.numel() * 8
        differ[name] = bad
    data = IPDDataset.random(samples, StimulusConfig(), torch.Generator().manual_seed(0), "cuda")
    index = torch.arange(batch, device="cuda")
    t = alternate({"triton": lambda: data.spike_bits(index, 0.3),
                   "torch": lambda: SpikeBits.pack(data.spikes_torch(index, data.spike_probability(index, 0.3)))},
                  50, "cuda")
    return {"bits_differ": differ, "bits_compared": total, "ok": not any(differ.values()),
            "batch_ms": {k: 1e3 * v["median_s"] for k, v in t.items()}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="seed and bigbatch workloads only in the report")
    add_out_option(p, "gpu_check-<date>.json and the report's and delays' files")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check here (the CPU suite is `python -m pytest -q`)")
        return 1
    tests_rc = run_tests()
    family = lif_family()
    probe = membrane_probe()
    workloads = "seed,bigbatch" if args.quick else ",".join(WORKLOADS)
    rep = report.main(["--workloads", workloads, "--repeats", "9", "--device", "cuda", "--out", str(args.out)])
    bw = copy_bandwidth()
    lif = lif_bandwidth()
    graph = graph_step()
    # fastsnn-triton vs dense conv1d vs dcls on the GPU
    delays.main(["--device", "cuda", "--repeats", "9", "--out", str(args.out)])
    stim = stimulus_bits_check()
    run = epoch.main(["--rounds", "2", "--epochs", "4", "--run-epochs", "3", "--no-seed", "--name", "cuda",
                      "--out", str(args.out)])
    packs = pack.throughput()
    sweep = pack.end_to_end()
    seed_step = next(r for r in rep["rows"] if r["workload"] == "seed" and r["op"] == "train_step")["median_ms"]
    out = {"machine": machine(), "tests_rc": tests_rc, "lif_family": family, "membrane_probe": probe,
           "copy_GBps": bw, "lif": lif, "graph_step": graph, "seed_step_ms": seed_step, "stimulus": stim,
           "epoch_s": run["breakdown_median_s"]["epoch"], "epoch_over_ready": run["epoch_over_ready"],
           "pack_throughput": packs, "pack_end_to_end": sweep}
    save(args.out, f"gpu_check-{date.today().isoformat()}", out)
    seed_ms = seed_step.get("seed")
    print("\n| check | result |\n|---|---|")
    print(f"| equivalence tests on CUDA | {'passed' if tests_rc == 0 else f'FAILED (rc {tests_rc})'} |")
    print(f"| LIF family on CUDA vs reference ({family['variants']} neuron x dtype) | "
          f"{family['errors']} errors, {family['spikes_differ']} spikes differ (must be 0); gradients max rel err "
          f"{family['grad_rel_err_max']:.1e} (< {GRAD_RTOL:g}): {'ok' if family['ok'] else 'FAILED'} |")
    print(f"| seed LIF membrane u on CUDA vs float32 CPU, bit for bit | {probe['u_differ']} of {probe['elements']} "
          f"differ, {probe['spikes_differ']} spikes (no FMA: both 0): {'ok' if probe['ok'] else 'FAILED'} "
          f"{probe.get('error', '')}|")
    if seed_ms:
        print(f"| seed-size train step: seed loop / triton | {seed_ms:.2f} ms / {seed_step['triton']:.3f} ms "
              f"= {seed_ms / seed_step['triton']:.0f}x (goal 100x) |")
        print(f"| same, CUDA graph replay | {graph['graph_ms']:.3f} ms = {seed_ms / graph['graph_ms']:.0f}x "
              f"(matches eager: {graph['graph_matches_eager']}) |")
    print(f"| LIF fwd+bwd T=32 B=64 N=65536 | {lif['fwd_bwd_ms']:.3f} ms, {lif['fwd_bwd_GBps']:.0f} GB/s = "
          f"{100 * lif['fwd_bwd_GBps'] / bw:.0f}% of copy ({bw:.0f} GB/s; goal 70%) |")
    print(f"| LIF forward only | {lif['fwd_ms']:.3f} ms, {lif['fwd_GBps']:.0f} GB/s |")
    print(f"| stimulus kernel on CUDA vs torch, bit for bit | {sum(stim['bits_differ'].values())} of "
          f"{stim['bits_compared']} bits differ (must be 0): {'ok' if stim['ok'] else 'FAILED ' + str(stim['bits_differ'])};"
          f" a seed batch {stim['batch_ms']['triton']:.3f} ms (torch {stim['batch_ms']['torch']:.3f} ms) |")
    print(f"| default run's epoch on CUDA | {out['epoch_s']:.3f} s, {out['epoch_over_ready']:.2f}x its steps and "
          f"validation forwards on ready inputs |")
    runs_per_s = ", ".join(f"{r['runs']}: {r['runs_per_s']:.1f}" for r in packs["rows"])
    big = next(r for r in packs["rows"] if r["runs"] == 108)
    print(f"| packed training step, run-epochs/s by pack size | {runs_per_s} |")
    print(f"| 108 runs in one pack | step {big['step_ms']:.1f} ms, peak {big['peak_mib']:.0f} MiB of "
          f"{packs['capacity_mib']:.0f}; sweep's packs by estimate {packs['packs_of_108']} |")
    print(f"| 3 taus x 3 seeds, {sweep['epochs']} epochs: one pack / solo | {sweep['packed_s']:.1f} s / "
          f"{sweep['solo_s']:.1f} s = {sweep['speedup']:.1f}x; first-epoch losses within "
          f"{sweep['first_epoch_loss_rel_max']:.1e} rel, test accuracy within {sweep['test_accuracy_abs_diff_max']:.3f} |")
    return tests_rc or int(not (family["ok"] and probe["ok"] and stim["ok"]))


if __name__ == "__main__":
    raise SystemExit(main())

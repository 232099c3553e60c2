"""Choose the CPU backend by measurement: LIF + leaky readout implementations side by side.

Times a full training step of the seed network at seed size (B=64, T=100, 200 binary
inputs with p=0.225, 30 hidden LIF neurons, 12 readout classes, loss on 0.01 * sum_t u_t,
forward + backward, no optimizer) and the LIF layer alone (forward, forward + backward) at
N=30 and N=1000. The numba candidates run fastsnn.ops.neurons.cpu, except "lane per neuron", kept here
to document the layout fastsnn's kernels rejected. Candidates run alternately, one call each per
round; the tables give medians over rounds and the speedup over the seed's own loop.

    PYTHONPATH=. python bench/cpu_candidates.py              # 20-80 s on 2 cores
    PYTHONPATH=. python bench/cpu_candidates.py --compile    # adds torch.compile: minutes of compiling
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import numba
import numpy as np
import torch
import torch.nn.functional as F
from numba import njit, prange

from fastsnn.ops.neurons.cpu import lif_bwd, lif_fwd
from fastsnn.ops.neurons.neuron import Neuron
from fastsnn.ops.neurons.reference import lif_ref, spike_fn
from fastsnn.ops.readout.cpu import leaky_readout_bwd, leaky_readout_fwd, leaky_readout_sum_bwd, leaky_readout_sum_fwd
from fastsnn.ops.readout.reference import leaky_readout_ref

ALPHA = math.exp(-1 / 5)
THRESHOLD, BETA = 1.0, 5.0


def lif_indexed(h: torch.Tensor, alpha: float) -> torch.Tensor:
    """The seed's loop cost: lif_ref with h[:, t] indexing (O(T^2) backward) instead of unbind."""
    B, T, N = h.shape
    v = h.new_zeros(B, N)
    s = h.new_zeros(B, N)
    out = [s]
    for t in range(T - 1):
        v_next = (alpha * v + h[:, t]) * (1 - s)
        s = spike_fn(v - THRESHOLD, BETA)
        v = v_next
        out.append(s)
    return torch.stack(out, dim=1)


def readout_indexed(h: torch.Tensor, alpha: float) -> torch.Tensor:
    B, T, C = h.shape
    u = h.new_zeros(B, C)
    out = [u]
    for t in range(T - 1):
        u = alpha * u + h[:, t]
        out.append(u)
    return torch.stack(out, dim=1)


@njit(parallel=True, cache=True)
def lif_fwd_lane_kernel(h, alpha, threshold, s, u, s8):
    """The rejected layout: one prange lane per (b, n), striding through time by N."""
    B, T, N = h.shape
    zero, one = h.dtype.type(0), h.dtype.type(1)
    for lane in prange(B * N):
        b, n = lane // N, lane % N
        v, u_t, s_t = zero, zero, zero
        for t in range(T):
            s[b, t, n], u[b, t, n], s8[b, t, n] = s_t, u_t, np.uint8(s_t)
            u_next = alpha[n] * v + h[b, t, n]
            s_next = one if v - threshold > zero else zero
            v = u_next * (one - s_t)
            u_t, s_t = u_next, s_next


@njit(parallel=True, cache=True)
def lif_bwd_lane_kernel(g, u, s8, alpha, threshold, beta, dh):
    B, T, N = g.shape
    zero, one = g.dtype.type(0), g.dtype.type(1)
    for lane in prange(B * N):
        b, n = lane // N, lane % N
        dv, ds, u_next = zero, zero, zero
        for t in range(T - 1, -1, -1):
            v_t = u[b, t, n] * (one - s8[b, max(t - 1, 0), n])
            sig = one / (one + np.exp(-beta * (v_t - threshold)))
            keep = one - s8[b, t, n]
            dh[b, t, n] = dv * keep
            dv, ds = dv * alpha[n] * keep + ds * beta * sig * (one - sig), g[b, t, n] - dv * u_next
            u_next = u[b, t, n]


class NumbaLaneLIF(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, alpha):
        s, u, s8 = torch.empty_like(h), torch.empty_like(h), torch.empty(h.shape, dtype=torch.uint8)
        lif_fwd_lane_kernel(h.detach().numpy(), alpha.numpy(), np.float32(THRESHOLD), s.numpy(), u.numpy(), s8.numpy())
        ctx.save_for_backward(u, s8, alpha)
        return s

    @staticmethod
    def backward(ctx, g):
        u, s8, alpha = ctx.saved_tensors
        dh = torch.empty_like(u)
        lif_bwd_lane_kernel(g.contiguous().numpy(), u.numpy(), s8.numpy(), alpha.numpy(),
                            np.float32(THRESHOLD), np.float32(BETA), dh.numpy())
        return dh, None


SEED_NEURON = Neuron(threshold=THRESHOLD, beta=BETA)


class NumbaLIF(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, alpha):
        s, u, s8, _ = lif_fwd(h, alpha, None, SEED_NEURON, True)
        ctx.save_for_backward(u, s8, alpha)
        return s

    @staticmethod
    def backward(ctx, g):
        u, s8, alpha = ctx.saved_tensors
        dh, _, _ = lif_bwd(g.contiguous(), u, s8, None, alpha, None, SEED_NEURON, False, False)
        return dh, None


class NumbaReadout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, alpha):
        ctx.save_for_backward(alpha)
        return leaky_readout_fwd(h, alpha)

    @staticmethod
    def backward(ctx, g):
        (alpha,) = ctx.saved_tensors
        return leaky_readout_bwd(g.contiguous(), None, alpha, False)[0], None


class NumbaReadoutSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, alpha):
        ctx.save_for_backward(alpha)
        ctx.T = h.shape[1]
        return leaky_readout_sum_fwd(h, alpha)

    @staticmethod
    def backward(ctx, g):
        (alpha,) = ctx.saved_tensors
        return leaky_readout_sum_bwd(g.contiguous(), None, alpha, ctx.T, False)[0], None


class TorchLIF(torch.autograd.Function):
    """Forward loop without autograd, hand-written backward loop (kernel_contract.md) in torch ops."""

    @staticmethod
    def forward(ctx, h, alpha: float):
        B, T, N = h.shape
        u, s = h.new_zeros(B, T, N), h.new_zeros(B, T, N)
        v = h.new_zeros(B, N)
        for t in range(T - 1):
            u[:, t + 1] = alpha * v + h[:, t]
            s[:, t + 1] = (v > THRESHOLD).to(h.dtype)
            v = u[:, t + 1] * (1 - s[:, t])
        ctx.save_for_backward(u, s)
        ctx.alpha = alpha
        return s

    @staticmethod
    def backward(ctx, g):
        u, s = ctx.saved_tensors
        T = u.shape[1]
        dh = torch.zeros_like(u)
        dv = torch.zeros_like(u[:, 0])
        ds = g[:, T - 1]
        for t in range(T - 2, -1, -1):
            v = u[:, t] * (1 - s[:, t - 1]) if t > 0 else u[:, 0]
            sig = torch.sigmoid(BETA * (v - THRESHOLD))
            keep = 1 - s[:, t]
            dh[:, t] = dv * keep
            dv, ds = dv * ctx.alpha * keep + ds * BETA * sig * (1 - sig), g[:, t] - dv * u[:, t + 1]
        return dh, None


class TorchReadout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, alpha: float):
        u = torch.zeros_like(h)
        for t in range(h.shape[1] - 1):
            u[:, t + 1] = alpha * u[:, t] + h[:, t]
        ctx.alpha = alpha
        return u

    @staticmethod
    def backward(ctx, g):
        dh = torch.zeros_like(g)
        du = g[:, -1]
        for t in range(g.shape[1] - 2, -1, -1):
            dh[:, t] = du
            du = g[:, t] + ctx.alpha * du
        return dh, None


def candidates(N: int, C: int, compiled: bool) -> dict:
    """name -> (lif(h), readout_sum(h2)): each maps (B, T, *) to spikes / (B, C) scores."""
    alpha_n, alpha_c = torch.full((N,), ALPHA), torch.full((C,), ALPHA)
    cands = {
        "reference (unbind)": (lambda h: lif_ref(h, ALPHA), lambda h: leaky_readout_ref(h, ALPHA).sum(1)),
        "seed loop (h[:, t])": (lambda h: lif_indexed(h, ALPHA), lambda h: readout_indexed(h, ALPHA).sum(1)),
        "numba (fastsnn.cpu)": (lambda h: NumbaLIF.apply(h, alpha_n), lambda h: NumbaReadout.apply(h, alpha_c).sum(1)),
        "numba + sum readout": (lambda h: NumbaLIF.apply(h, alpha_n), lambda h: NumbaReadoutSum.apply(h, alpha_c)),
        "numba, lane per neuron": (
            lambda h: NumbaLaneLIF.apply(h, alpha_n), lambda h: NumbaReadout.apply(h, alpha_c).sum(1)
        ),
        "torch, hand backward": (lambda h: TorchLIF.apply(h, ALPHA), lambda h: TorchReadout.apply(h, ALPHA).sum(1)),
    }
    if compiled:
        lif_c = torch.compile(lambda h: lif_ref(h, ALPHA))
        readout_c = torch.compile(lambda h: leaky_readout_ref(h, ALPHA).sum(1))
        cands["torch.compile(reference)"] = (lif_c, readout_c)
    return cands


def race(fns: dict, rounds: int) -> dict:
    """Seconds per call of each fn over `rounds` rounds that call them alternately, after 2 untimed rounds."""
    times = {name: [] for name in fns}
    for r in range(rounds + 2):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if r >= 2:
                times[name].append(time.perf_counter() - t0)
    return times


def table(title: str, times: dict, baseline: str) -> None:
    """Median and 20-80% quantiles in ms, and the speedup of the medians over `baseline`."""
    print(f"\n{title}")
    print(f"  {'candidate':<26} {'median ms':>10} {'p20-p80 ms':>16} {'vs seed loop':>13}")
    base = statistics.median(times[baseline])
    for name, ts in times.items():
        q = statistics.quantiles(ts, n=5)
        med = statistics.median(ts)
        print(f"  {name:<26} {med * 1e3:>10.2f} {f'{q[0] * 1e3:.2f}-{q[3] * 1e3:.2f}':>16} {base / med:>12.1f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--compile", action="store_true", help="add torch.compile(reference); compiling takes minutes")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch (and so numba) threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    B, T, N_IN, H, C = 64, 100, 200, 30, 12
    base = "seed loop (h[:, t])"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; numba {numba.__version__}; "
          f"load avg {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")

    x = (torch.rand(B, T, N_IN) < 0.225).float()
    y = torch.randint(0, C, (B,))
    W1 = ((torch.rand(N_IN, H) * 2 - 1) / math.sqrt(H)).requires_grad_()
    W2 = ((torch.rand(H, C) * 2 - 1) / math.sqrt(C)).requires_grad_()

    def step(lif, readout_sum):
        W1.grad = W2.grad = None
        loss = F.cross_entropy(0.01 * readout_sum(lif(x @ W1) @ W2), y)
        loss.backward()
        return loss

    t0 = time.perf_counter()
    cands = candidates(H, C, args.compile)
    grads = {}
    for name, (lif, readout_sum) in cands.items():
        t1 = time.perf_counter()
        step(lif, readout_sum)
        grads[name] = (W1.grad.clone(), W2.grad.clone())
        print(f"  first step {name}: {time.perf_counter() - t1:.2f} s (compiles on first use)")
    print(f"  numba threading layer: {numba.threading_layer()}")
    ref1, ref2 = grads["reference (unbind)"]
    for name, (g1, g2) in grads.items():
        err = max(float((g1 - ref1).norm() / ref1.norm()), float((g2 - ref2).norm() / ref2.norm()))
        print(f"  check {name}: max norm-relative grad difference to reference {err:.1e}")
    times = race({name: (lambda f=f: step(*f)) for name, f in cands.items()}, args.rounds)
    table(f"Training step, B={B} T={T} in={N_IN} hidden={H} classes={C} (forward + backward)", times, base)

    for N, rounds in ((H, args.rounds), (1000, max(5, args.rounds // 4))):
        lifs = {name: lif for name, (lif, _) in candidates(N, C, args.compile).items() if name != "numba + sum readout"}
        h = (torch.randn(B, T, N) * 0.8 + 0.3).requires_grad_()
        g = torch.randn(B, T, N)
        table(f"LIF forward, B={B} T={T} N={N}", race({n: (lambda f=f: f(h)) for n, f in lifs.items()}, rounds), base)
        fwd_bwd = {n: (lambda f=f: f(h).backward(g)) for n, f in lifs.items()}
        table(f"LIF forward + backward, B={B} T={T} N={N}", race(fwd_bwd, rounds), base)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()

"""Delayed projection on the CPU: event-driven numba kernels for ``h = x * (W G)`` and the kernel's gradient.

The kernel is ``wk[i, k, j] = W_ij G_ij(k)``, (I, K, O) with K = max_delay + 1 taps. For one batch row,
the rows t .. t + K - 1 of h, (K, O), are one contiguous run of K * O values, and so is ``wk[i]``:
an input ``x[b, t, i] = v`` adds ``v * wk[i]`` to that run. The forward walks the nonzero inputs
only (spikes: about a fifth of the seed's inputs) and adds four of them per pass over the run, so
the accumulator is loaded and stored once per four; the kernel's gradient is the same walk
transposed, ``dwk[i] += v * (rows t .. t + K - 1 of dh)``. Measured at seed size (B=64, T=100,
200 -> 30, max_delay 25, 22.5% spikes, one thread's CPU time): forward 15 ms and forward +
weight and delay gradients 30 ms, against 24 and 86 ms for dcls (oneDNN's conv1d;
``bench/results/delays-*.md``). Inputs denser than :data:`DENSE_ABOVE` go through conv1d in the
forward. The input gradient is dense (dh has no zeros): one GEMM per block of batch rows over
windows of dh. Equations: ``docs/semantics.md`` (Learnable delays); the oracle is
``delayed_projection_ref`` in ``reference.py``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from numba import prange

from fastsnn.cpu import buffers, cpu_kernel, flush_subnormals, restore_subnormals, sync_threads
from .._common import state_dtype

UNROLL = 4  # nonzero inputs added per pass over an accumulator run
# Above this fraction of nonzero inputs the forward runs torch's conv1d (oneDNN) instead: measured at seed
# size on one thread, the event-driven forward takes 5, 15, 31 and 47 ms at 5, 22.5, 50 and 100% nonzero
# inputs, conv1d 24-25 ms whatever the input. The kernel's gradient stays event-driven at any density
# (42 ms at 100% against ~60 ms for conv1d's weight gradient).
DENSE_ABOVE = 0.4
DWK_BLOCK = 8  # input rows of the kernel gradient per lane


@cpu_kernel
def delays_fwd_kernel(x, wk, h):
    """x: (B, T, I); wk: (I, K * O); h: (B, T * O) = sum over nonzero x[b, t, i] of x[b, t, i] * wk[i]
    added at row t (the part past row T - 1 dropped). One lane per batch row."""
    B, T, I = x.shape
    KO = wk.shape[1]
    TO = h.shape[1]
    O = TO // T if T else 0
    for b in prange(B):
        acc = np.zeros(TO + KO, h.dtype)
        idx = np.empty(I, np.int64)
        val = np.empty(I, h.dtype)
        for t in range(T):
            xr = x[b, t]
            n = 0
            for i in range(I):
                if xr[i] != 0:
                    idx[n] = i
                    val[n] = xr[i]
                    n += 1
            a = acc[t * O: t * O + KO]
            q = 0
            while q + UNROLL <= n:
                w0, w1, w2, w3 = wk[idx[q]], wk[idx[q + 1]], wk[idx[q + 2]], wk[idx[q + 3]]
                v0, v1, v2, v3 = val[q], val[q + 1], val[q + 2], val[q + 3]
                for m in range(KO):
                    a[m] += (v0 * w0[m] + v1 * w1[m]) + (v2 * w2[m] + v3 * w3[m])
                q += UNROLL
            while q < n:
                w0, v0 = wk[idx[q]], val[q]
                for m in range(KO):
                    a[m] += v0 * w0[m]
                q += 1
        h[b] = acc[:TO]


@cpu_kernel
def delays_bwd_kernel(x, gp, K, block, dwk):
    """x: (B, T, I); gp: (B * (T + K - 1) * O,) dh with K - 1 zero rows after each batch row;
    dwk: (I, K * O), ``dwk[i] = sum over nonzero x[b, t, i] of x[b, t, i] * gp[rows t .. t + K - 1 of b]``.
    One lane per block of input rows; subnormals flushed to zero."""
    B, T, I = x.shape
    KO = dwk.shape[1]
    O = KO // K
    row = (T + K - 1) * O
    nblk = -(-I // block)
    for lane in prange(nblk):
        fp_state = flush_subnormals()
        i0 = lane * block
        i1 = min(i0 + block, I)
        nb = i1 - i0
        pos = np.empty((nb, B * T), np.int64)
        val = np.empty((nb, B * T), dwk.dtype)
        cnt = np.zeros(nb, np.int64)
        for b in range(B):
            for t in range(T):
                xr = x[b, t, i0:i1]
                for r in range(nb):
                    if xr[r] != 0:
                        c = cnt[r]
                        pos[r, c] = b * row + t * O
                        val[r, c] = xr[r]
                        cnt[r] = c + 1
        for r in range(nb):
            a = np.zeros(KO, dwk.dtype)
            p, v, n = pos[r], val[r], cnt[r]
            q = 0
            while q + UNROLL <= n:
                g0, g1 = gp[p[q]: p[q] + KO], gp[p[q + 1]: p[q + 1] + KO]
                g2, g3 = gp[p[q + 2]: p[q + 2] + KO], gp[p[q + 3]: p[q + 3] + KO]
                v0, v1, v2, v3 = v[q], v[q + 1], v[q + 2], v[q + 3]
                for m in range(KO):
                    a[m] += (v0 * g0[m] + v1 * g1[m]) + (v2 * g2[m] + v3 * g3[m])
                q += UNROLL
            while q < n:
                g0, v0 = gp[p[q]: p[q] + KO], v[q]
                for m in range(KO):
                    a[m] += v0 * g0[m]
                q += 1
            dwk[i0 + r] = a
        restore_subnormals(fp_state)


def dense_input(x: torch.Tensor) -> bool:
    """Whether more than :data:`DENSE_ABOVE` of x is nonzero, estimated from every 61st element."""
    sample = x.reshape(-1)[::61]
    return sample.numel() > 0 and bool(torch.count_nonzero(sample) > DENSE_ABOVE * sample.numel())


def delays_fwd(x: torch.Tensor, wk: torch.Tensor) -> torch.Tensor:
    """x: (B, T, I); wk: (I, K, O) state dtype -> h: (B, T, O) state dtype.

    Event-driven, or for inputs more than :data:`DENSE_ABOVE` nonzero torch's conv1d over x padded
    by K - 1 steps (its taps run the other way: conv1d is a cross-correlation).
    """
    dtype = state_dtype(x.dtype)
    B, T, _ = x.shape
    I, K, O = wk.shape
    if B * T * I * O == 0:  # conv1d takes no empty channels; h is empty, or zeros without inputs
        return torch.zeros(B, T, O, dtype=dtype)
    if dense_input(x):
        xt = F.pad(x.detach().to(dtype).transpose(1, 2), (K - 1, 0))  # (B, I, T + K - 1)
        return F.conv1d(xt, wk.detach().to(dtype).permute(2, 0, 1).flip(-1)).transpose(1, 2).contiguous()
    h = buffers.empty((B, T, O), dtype)
    sync_threads()
    x = x.detach().to(dtype).contiguous()
    delays_fwd_kernel(x.numpy(), wk.detach().to(dtype).reshape(I, K * O).contiguous().numpy(), h.view(B, T * O).numpy())
    return h


def delays_bwd(grad: torch.Tensor, x: torch.Tensor, wk: torch.Tensor, need_dx: bool, need_dwk: bool,
               chunk_bytes: int = 16 << 20):
    """grad: (B, T, O), x: (B, T, I), wk: (I, K, O), all state dtype -> (dx (B, T, I) or None, dwk (I, K, O) or None).

    dx = windows of dh @ wk^T, a block of batch rows at a time (the windows of a block take about
    ``chunk_bytes``): ``dx[b, t, i] = sum_{k, j} wk[i, k, j] dh[b, t + k, j]``.
    """
    B, T, O = grad.shape
    I, K, _ = wk.shape
    if B * T * I * O == 0:  # empty sums (unfold needs a whole window, view a nonempty row)
        return (torch.zeros(B, T, I, dtype=grad.dtype) if need_dx else None,
                torch.zeros(I, K, O, dtype=grad.dtype) if need_dwk else None)
    gp = F.pad(grad, (0, 0, 0, K - 1))  # (B, T + K - 1, O): windows never run past a row's end
    dx = dwk = None
    if need_dwk:
        dwk = torch.empty(I, K, O, dtype=grad.dtype)
        sync_threads()
        x = x.detach().to(grad.dtype).contiguous()
        delays_bwd_kernel(x.numpy(), gp.reshape(-1).numpy(), K, min(DWK_BLOCK, max(I, 1)), dwk.view(I, K * O).numpy())
    if need_dx:
        dx = buffers.empty((B, T, I), grad.dtype)
        windows = gp.unfold(1, K, 1)  # (B, T, O, K), a view
        w = wk.permute(0, 2, 1).reshape(I, O * K)
        rows = max(1, chunk_bytes // max(1, T * O * K * grad.element_size()))
        for b0 in range(0, B, rows):
            b1 = min(B, b0 + rows)
            torch.matmul(windows[b0:b1].reshape(-1, O * K), w.t(), out=dx[b0:b1].view(-1, I))
    return dx, dwk

"""LIF layer with delayed spike and multiplicative reset: numba kernels and launchers.

Equations in ``docs/kernel_contract.md``; the oracle is ``fastsnn.ops.reference.lif_ref``.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import prange

from fastsnn.cpu import cpu_kernel, lane_span, launch_block, np_view
from fastsnn.ops import state_dtype


@cpu_kernel
def lif_fwd_kernel(h, alpha, threshold, save, block, s, u, s8):
    """h, s, u: (B, T, N) state dtype; alpha: (N,); s8: (B, T, N) uint8; one lane = (b, block of neurons).

    Writes s; with ``save`` also u (pre-reset membrane) and s8 (s as uint8, NaN as 0).
    A NaN membrane spikes NaN, as in the reference. The update computed at t = T-1
    (from the unused h_{T-1}) is discarded.
    """
    B, T, N = h.shape
    zero, one = h.dtype.type(0), h.dtype.type(1)
    nblk = -(-N // block)
    for lane in prange(B * nblk):
        b, n0, n1 = lane_span(lane, nblk, block, N)
        a = alpha[n0:n1]
        v = np.zeros(n1 - n0, h.dtype)
        u_t = np.zeros(n1 - n0, h.dtype)
        s_t = np.zeros(n1 - n0, h.dtype)
        for t in range(T):
            s[b, t, n0:n1] = s_t
            if save:
                u[b, t, n0:n1] = u_t
                s8_t = s8[b, t, n0:n1]
                for j in range(n1 - n0):
                    s8_t[j] = s_t[j] > zero
            h_t = h[b, t, n0:n1]
            for j in range(n1 - n0):
                u_next = a[j] * v[j] + h_t[j]
                s_next = v[j] if v[j] != v[j] else (one if v[j] - threshold > zero else zero)  # NaN propagates
                v[j] = u_next * (one - s_t[j])
                u_t[j] = u_next
                s_t[j] = s_next


@cpu_kernel
def lif_bwd_kernel(g, u, s8, alpha, threshold, beta, detach_reset, need_dalpha, block, dh, dalpha_lanes):
    """g, u, dh: (B, T, N) state dtype; s8: (B, T, N) uint8; alpha: (N,); dalpha_lanes: (B, N) or empty.

    Walks time from T-1 down with dv = dL/dv_{t+1}, ds = dL/ds_{t+1} (both 0 at
    t = T-1, which gives dh_{T-1} = 0 and starts ds at g_{T-1}). At t = 0 the row
    s_0 = 0 stands in for s_{-1}.
    """
    B, T, N = g.shape
    zero, one = g.dtype.type(0), g.dtype.type(1)
    nblk = -(-N // block)
    for lane in prange(B * nblk):
        b, n0, n1 = lane_span(lane, nblk, block, N)
        a = alpha[n0:n1]
        dv = np.zeros(n1 - n0, g.dtype)
        ds = np.zeros(n1 - n0, g.dtype)
        da = np.zeros(n1 - n0, g.dtype)
        u_next = np.zeros(n1 - n0, g.dtype)
        for t in range(T - 1, -1, -1):
            g_t, u_t, dh_t = g[b, t, n0:n1], u[b, t, n0:n1], dh[b, t, n0:n1]
            s_t, s_prev = s8[b, t, n0:n1], s8[b, max(t - 1, 0), n0:n1]
            for j in range(n1 - n0):
                v_t = u_t[j] * (one - s_prev[j])
                sig = one / (one + np.exp(-beta * (v_t - threshold)))
                keep = one - s_t[j]
                dh_t[j] = dv[j] * keep
                da[j] += dv[j] * v_t * keep
                ds_next = g_t[j] - (zero if detach_reset else dv[j] * u_next[j])
                dv[j] = dv[j] * a[j] * keep + ds[j] * beta * sig * (one - sig)
                ds[j] = ds_next
                u_next[j] = u_t[j]
        if need_dalpha:
            dalpha_lanes[b, n0:n1] = da


def lif_fwd(h: torch.Tensor, alpha: torch.Tensor, threshold: float, save: bool):
    """h: (B, T, N); alpha: (N,) -> s: (B, T, N) dtype of h, u: (B, T, N) state dtype or None, s8: uint8 or None."""
    dtype = state_dtype(h.dtype)
    B, T, N = h.shape
    s = torch.empty((B, T, N), dtype=dtype)
    u = torch.empty((B, T, N), dtype=dtype) if save else None
    s8 = torch.empty((B, T, N), dtype=torch.uint8) if save else None
    h_np = np_view(h.to(dtype), dtype, 3)
    lif_fwd_kernel(
        h_np, np_view(alpha.to(dtype), dtype, 1), h_np.dtype.type(threshold), save, launch_block(B, N),
        np_view(s, dtype, 3), np_view(u, dtype, 3), np_view(s8, torch.uint8, 3),
    )
    return s.to(h.dtype), u, s8


def lif_bwd(grad_s, u, s8, alpha, threshold: float, beta: float, detach_reset: bool, need_dalpha: bool):
    """grad_s, u: (B, T, N); s8: (B, T, N) uint8; alpha: (N,) -> dh: (B, T, N) state dtype, dalpha: (N,) or None."""
    dtype = state_dtype(grad_s.dtype)
    B, T, N = grad_s.shape
    dh = torch.empty((B, T, N), dtype=dtype)
    dalpha_lanes = torch.empty((B, N), dtype=dtype) if need_dalpha else None
    g_np = np_view(grad_s.to(dtype), dtype, 3)
    scalar = g_np.dtype.type
    lif_bwd_kernel(
        g_np, np_view(u.to(dtype), dtype, 3), np_view(s8, torch.uint8, 3), np_view(alpha.to(dtype), dtype, 1),
        scalar(threshold), scalar(beta), detach_reset, need_dalpha, launch_block(B, N),
        np_view(dh, dtype, 3), np_view(dalpha_lanes, dtype, 2),
    )
    return dh, dalpha_lanes.sum(0) if need_dalpha else None

"""LIF layer with delayed spike and multiplicative reset: numba kernels and launchers.

Equations in ``docs/kernel_contract.md``; the oracle is ``fastsnn.ops.reference.lif_ref``.
Each lane stages its rows in padded local buffers (``fastsnn.cpu.padded``) so that every
neuron loop vectorises.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import prange, types
from numba.extending import overload

from fastsnn.cpu import (cpu_kernel, flush_subnormals, lane_span, launch_block, np_view, padded,
                         restore_subnormals, staged)
from fastsnn.ops import state_dtype


@cpu_kernel
def lif_fwd_kernel(h, alpha, threshold, save, weights, block, s, u, s8, total):
    """h, s, u: (B, T, N) state dtype; alpha: (N,); s8: (B, T, N) uint8; one lane = (b, block of neurons).

    Writes s, or with (T,) ``weights`` (empty: none) only total: (B, N) = sum_t weights_t s_t;
    with ``save`` also u (pre-reset membrane) and s8 (s as uint8, NaN as 0).
    A NaN membrane spikes NaN, as in the reference. The update computed at t = T-1
    (from the unused h_{T-1}) is discarded.
    """
    B, T, N = h.shape
    zero, one = h.dtype.type(0), h.dtype.type(1)
    summing = weights.shape[0] > 0
    nblk = -(-N // block)
    for lane in prange(B * nblk):
        b, n0, n1 = lane_span(lane, nblk, block, N)
        m = n1 - n0
        size = padded(m)
        a = staged(alpha[n0:n1], size)
        v = np.zeros(size, h.dtype)
        u_t = np.zeros(size, h.dtype)
        s_t = np.zeros(size, h.dtype)
        h_t = np.zeros(size, h.dtype)
        acc = np.zeros(size, h.dtype)
        s8_t = np.zeros(size, np.uint8)
        for t in range(T):
            if summing:
                w_t = weights[t]
                for j in range(size):
                    acc[j] += w_t * s_t[j]
            else:
                s[b, t, n0:n1] = s_t[:m]
            if save:
                u[b, t, n0:n1] = u_t[:m]
                for j in range(size):
                    s8_t[j] = s_t[j] > zero
                s8[b, t, n0:n1] = s8_t[:m]
            h_t[:m] = h[b, t, n0:n1]
            for j in range(size):
                u_next = a[j] * v[j] + h_t[j]
                s_next = v[j] if v[j] != v[j] else (one if v[j] - threshold > zero else zero)  # NaN propagates
                v[j] = u_next * (one - s_t[j])
                u_t[j] = u_next
                s_t[j] = s_next
        if summing:
            total[b, n0:n1] = acc[:m]


def exp_nonpositive(x, out, bits):
    """out[j] = exp(x[j]) for x[j] <= 0; bits is int32 scratch of the same length (float32 only)."""
    out[:] = np.exp(x)


# Cephes' expf (range reduction by ln 2 in two parts, degree-7 polynomial, 2^k from the exponent
# bits) written as plain loops, so that it vectorises: pip's llvmlite has no vector math library,
# and a call to np.exp keeps the surrogate's loop scalar. Within 2 ulp of np.exp on [-87, 0];
# below -87, where float32 exp turns subnormal, it returns 0, as flush-to-zero would.
_LOG2E = np.float32(1.44269504088896341)
_LN2_HI = np.float32(0.693359375)
_LN2_LO = np.float32(-2.12194440e-4)
_P = tuple(np.float32(c) for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
                                   1.6666665459e-1, 5.0000001201e-1))


@overload(exp_nonpositive, inline="always")
def _exp_nonpositive(x, out, bits):
    if x.dtype != types.float32:
        def exact(x, out, bits):
            for j in range(x.shape[0]):
                out[j] = np.exp(x[j])
        return exact

    def polynomial(x, out, bits):
        for j in range(x.shape[0]):
            xj = max(x[j], np.float32(-87.0))
            k = np.floor(xj * _LOG2E + np.float32(0.5))
            r = xj - k * _LN2_HI - k * _LN2_LO
            p = _P[0] * r + _P[1]
            p = p * r + _P[2]
            p = p * r + _P[3]
            p = p * r + _P[4]
            p = p * r + _P[5]
            p = p * r * r + r + np.float32(1.0)
            out[j] = p if x[j] >= np.float32(-87.0) else np.float32(0.0)
            bits[j] = (np.int32(k) + np.int32(127)) << np.int32(23)
        scale = bits.view(np.float32)  # 2^k
        for j in range(x.shape[0]):
            out[j] *= scale[j]
    return polynomial


@cpu_kernel
def lif_bwd_kernel(g, u, s8, alpha, threshold, beta, detach_reset, need_dalpha, weights, block, dh, dalpha_lanes):
    """g, u, dh: (B, T, N) state dtype; s8: (B, T, N) uint8; alpha: (N,); dalpha_lanes: (B, N) or empty.

    With (T,) ``weights`` (empty: none) g is (B, 1, N), the gradient of sum_t weights_t s_t,
    and the kernel uses g_t = weights_t g, never stored.

    Walks time from T-1 down with dv = dL/dv_{t+1}, ds = dL/ds_{t+1} (both 0 at
    t = T-1, which gives dh_{T-1} = 0 and starts ds at g_{T-1}). At t = 0 the row
    s_0 = 0 stands in for s_{-1}. The surrogate beta sig(z) (1 - sig(z)), z = beta (v - threshold),
    is computed as beta e / (1 + e)^2 with e = exp(-|z|), which never overflows.

    Runs with subnormals flushed to zero (:func:`fastsnn.cpu.flush_subnormals`).
    """
    B, T, N = u.shape
    zero, one = g.dtype.type(0), g.dtype.type(1)
    summing = weights.shape[0] > 0
    nblk = -(-N // block)
    for lane in prange(B * nblk):
        fp_state = flush_subnormals()
        b, n0, n1 = lane_span(lane, nblk, block, N)
        m = n1 - n0
        size = padded(m)
        a = staged(alpha[n0:n1], size)
        dv = np.zeros(size, g.dtype)
        ds = np.zeros(size, g.dtype)
        da = np.zeros(size, g.dtype)
        u_next = np.zeros(size, g.dtype)
        g_t = np.zeros(size, g.dtype)
        u_t = np.zeros(size, g.dtype)
        v_t = np.zeros(size, g.dtype)
        e = np.zeros(size, g.dtype)
        dh_t = np.zeros(size, g.dtype)
        s_t = np.zeros(size, np.uint8)
        s_prev = np.zeros(size, np.uint8)
        bits = np.zeros(size, np.int32)
        g_sum = staged(g[b, 0, n0:n1], size) if summing else np.zeros(size, g.dtype)  # g has no row 0 when T = 0
        for t in range(T - 1, -1, -1):
            if summing:
                w_t = weights[t]
                for j in range(size):
                    g_t[j] = w_t * g_sum[j]
            else:
                g_t[:m] = g[b, t, n0:n1]
            u_t[:m] = u[b, t, n0:n1]
            s_t[:m] = s8[b, t, n0:n1]
            s_prev[:m] = s8[b, max(t - 1, 0), n0:n1]
            for j in range(size):
                v_t[j] = u_t[j] * (one - s_prev[j])
                e[j] = -abs(beta * (v_t[j] - threshold))
            exp_nonpositive(e, e, bits)
            for j in range(size):
                keep = one - s_t[j]
                dh_t[j] = dv[j] * keep
                da[j] += dv[j] * v_t[j] * keep
                ds_next = g_t[j] - (zero if detach_reset else dv[j] * u_next[j])
                dv[j] = dv[j] * a[j] * keep + ds[j] * (beta * e[j] / ((one + e[j]) * (one + e[j])))
                ds[j] = ds_next
                u_next[j] = u_t[j]
            dh[b, t, n0:n1] = dh_t[:m]
        if need_dalpha:
            dalpha_lanes[b, n0:n1] = da[:m]
        restore_subnormals(fp_state)


def lif_fwd(h: torch.Tensor, alpha: torch.Tensor, threshold: float, save: bool, weights: torch.Tensor | None = None):
    """h: (B, T, N); alpha: (N,); weights: (T,) or None -> (out, u, s8):
    out = s (B, T, N) dtype of h, or with weights sum_t weights_t s_t (B, N) state dtype;
    u: (B, T, N) state dtype or None; s8: (B, T, N) uint8 or None."""
    dtype = state_dtype(h.dtype)
    B, T, N = h.shape
    s = torch.empty((B, T, N), dtype=dtype) if weights is None else None
    total = torch.empty((B, N), dtype=dtype) if weights is not None else None
    u = torch.empty((B, T, N), dtype=dtype) if save else None
    s8 = torch.empty((B, T, N), dtype=torch.uint8) if save else None
    h_np = np_view(h.to(dtype), dtype, 3)
    lif_fwd_kernel(
        h_np, np_view(alpha.to(dtype), dtype, 1), h_np.dtype.type(threshold), save, _weights(weights, dtype),
        launch_block(B, N), np_view(s, dtype, 3), np_view(u, dtype, 3), np_view(s8, torch.uint8, 3),
        np_view(total, dtype, 2),
    )
    return (s.to(h.dtype) if weights is None else total), u, s8


def lif_bwd(grad, u, s8, alpha, threshold: float, beta: float, detach_reset: bool, need_dalpha: bool,
            weights: torch.Tensor | None = None):
    """grad: (B, T, N), or (B, N) with weights: (T,); u: (B, T, N); s8: (B, T, N) uint8; alpha: (N,)
    -> dh: (B, T, N) state dtype, dalpha: (N,) or None."""
    dtype = state_dtype(grad.dtype)
    B, T, N = u.shape
    dh = torch.empty((B, T, N), dtype=dtype)
    dalpha_lanes = torch.empty((B, N), dtype=dtype) if need_dalpha else None
    g_np = np_view(grad.to(dtype).reshape(B, T if weights is None else 1, N), dtype, 3)
    scalar = g_np.dtype.type
    lif_bwd_kernel(
        g_np, np_view(u.to(dtype), dtype, 3), np_view(s8, torch.uint8, 3), np_view(alpha.to(dtype), dtype, 1),
        scalar(threshold), scalar(beta), detach_reset, need_dalpha, _weights(weights, dtype), launch_block(B, N),
        np_view(dh, dtype, 3), np_view(dalpha_lanes, dtype, 2),
    )
    return dh, dalpha_lanes.sum(0) if need_dalpha else None


def _weights(weights: torch.Tensor | None, dtype: torch.dtype):
    return np_view(weights.to(dtype).contiguous() if weights is not None else None, dtype, 1)

"""Leaky readout (integrator without spikes) and its sum over time: numba kernels and launchers.

Equations in ``docs/kernel_contract.md``; the oracles are ``leaky_readout_ref`` and
``leaky_readout_sum_ref`` in ``reference.py`` beside this file.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import prange

from fastsnn.cpu import (buffers, cpu_kernel, flush_subnormals, gather, lane_span, launch_block, np_view, padded,
                         restore_subnormals, scatter, staged)
from .._common import state_dtype


@cpu_kernel
def leaky_readout_fwd_kernel(h, alpha, block, u):
    """h, u: (B, T, C) state dtype; alpha: (C,); one lane = (b, block of classes).

    u_0 = 0, u_{t+1} = alpha u_t + h_t.
    """
    B, T, C = h.shape
    nblk = -(-C // block)
    for lane in prange(B * nblk):
        b, c0, c1 = lane_span(lane, nblk, block, C)
        m = c1 - c0
        size = padded(m)
        a = staged(alpha[c0:c1], size)
        u_t = np.zeros(size, h.dtype)
        h_t = np.zeros(size, h.dtype)
        for t in range(T):
            scatter(u, u_t, b, 1, t, c0, c1, size)
            gather(h_t, h, b, 1, t, c0, c1, size)
            for j in range(size):
                u_t[j] = a[j] * u_t[j] + h_t[j]


@cpu_kernel
def leaky_readout_bwd_kernel(g, u, alpha, need_dalpha, block, dh, dalpha_lanes):
    """g, dh: (B, T, C) state dtype; u: (B, T, C) or empty; alpha: (C,); dalpha_lanes: (B, C) or empty.

    du = dL/du_{t+1} walks time from T-1 down, starting at 0. Subnormals flushed to zero.
    """
    B, T, C = g.shape
    nblk = -(-C // block)
    for lane in prange(B * nblk):
        fp_state = flush_subnormals()
        b, c0, c1 = lane_span(lane, nblk, block, C)
        m = c1 - c0
        size = padded(m)
        a = staged(alpha[c0:c1], size)
        du = np.zeros(size, g.dtype)
        da = np.zeros(size, g.dtype)
        g_t = np.zeros(size, g.dtype)
        u_t = np.zeros(size, g.dtype)
        for t in range(T - 1, -1, -1):
            scatter(dh, du, b, 1, t, c0, c1, size)
            if need_dalpha:
                gather(u_t, u, b, 1, t, c0, c1, size)
                for j in range(size):
                    da[j] += du[j] * u_t[j]
            gather(g_t, g, b, 1, t, c0, c1, size)
            for j in range(size):
                du[j] = g_t[j] + a[j] * du[j]
        if need_dalpha:
            dalpha_lanes[b, c0:c1] = da[:m]
        restore_subnormals(fp_state)


@cpu_kernel
def leaky_readout_sum_fwd_kernel(h, alpha, block, m_out):
    """h: (B, T, C) state dtype; alpha: (C,); m_out: (B, C) = sum_t u_t."""
    B, T, C = h.shape
    nblk = -(-C // block)
    for lane in prange(B * nblk):
        b, c0, c1 = lane_span(lane, nblk, block, C)
        m = c1 - c0
        size = padded(m)
        a = staged(alpha[c0:c1], size)
        u_t = np.zeros(size, h.dtype)
        h_t = np.zeros(size, h.dtype)
        acc = np.zeros(size, h.dtype)
        for t in range(T):
            gather(h_t, h, b, 1, t, c0, c1, size)
            for j in range(size):
                acc[j] += u_t[j]
                u_t[j] = a[j] * u_t[j] + h_t[j]
        m_out[b, c0:c1] = acc[:m]


@cpu_kernel
def leaky_readout_sum_bwd_kernel(grad_m, h, alpha, need_dalpha, block, dh, dalpha_lanes):
    """grad_m: (B, C); h: (B, T, C) or empty; dh: (B, T, C); alpha: (C,); dalpha_lanes: (B, C) or empty.

    dh_k = grad_m c_k with c_k = dm/dh_k, and e_k = dc_k/dalpha, both 0 at k = T-1.
    Subnormals flushed to zero.
    """
    B, T, C = dh.shape
    one = grad_m.dtype.type(1)
    nblk = -(-C // block)
    for lane in prange(B * nblk):
        fp_state = flush_subnormals()
        b, c0, c1 = lane_span(lane, nblk, block, C)
        m = c1 - c0
        size = padded(m)
        a = staged(alpha[c0:c1], size)
        gm = staged(grad_m[b, c0:c1], size)
        c_k = np.zeros(size, grad_m.dtype)
        e_k = np.zeros(size, grad_m.dtype)
        acc = np.zeros(size, grad_m.dtype)
        h_k = np.zeros(size, grad_m.dtype)
        dh_k = np.zeros(size, grad_m.dtype)
        for k in range(T - 1, -1, -1):
            for j in range(size):
                dh_k[j] = gm[j] * c_k[j]
            scatter(dh, dh_k, b, 1, k, c0, c1, size)
            if need_dalpha:
                gather(h_k, h, b, 1, k, c0, c1, size)
                for j in range(size):
                    acc[j] += h_k[j] * e_k[j]
            for j in range(size):
                e_k[j] = c_k[j] + a[j] * e_k[j]
                c_k[j] = one + a[j] * c_k[j]
        if need_dalpha:
            for j in range(m):
                dalpha_lanes[b, c0 + j] = gm[j] * acc[j]
        restore_subnormals(fp_state)


def leaky_readout_fwd(h: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """h: (B, T, C); alpha: (C,) -> u: (B, T, C), dtype of h."""
    dtype = state_dtype(h.dtype)
    B, T, C = h.shape
    u = buffers.empty((B, T, C), dtype)
    leaky_readout_fwd_kernel(
        np_view(h.to(dtype), dtype, 3), np_view(alpha.to(dtype), dtype, 1), launch_block(B, C), np_view(u, dtype, 3)
    )
    return u.to(h.dtype)


def leaky_readout_bwd(grad_u, u, alpha, need_dalpha: bool):
    """grad_u: (B, T, C); u: (B, T, C) or None; alpha: (C,) -> dh: (B, T, C) state dtype, dalpha: (C,) or None."""
    dtype = state_dtype(grad_u.dtype)
    B, T, C = grad_u.shape
    dh = buffers.empty((B, T, C), dtype)
    dalpha_lanes = torch.empty((B, C), dtype=dtype) if need_dalpha else None
    leaky_readout_bwd_kernel(
        np_view(grad_u.to(dtype), dtype, 3), np_view(u.to(dtype) if need_dalpha else None, dtype, 3),
        np_view(alpha.to(dtype), dtype, 1), need_dalpha, launch_block(B, C),
        np_view(dh, dtype, 3), np_view(dalpha_lanes, dtype, 2),
    )
    return dh, dalpha_lanes.sum(0) if need_dalpha else None


def leaky_readout_sum_fwd(h: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """h: (B, T, C); alpha: (C,) -> m: (B, C) state dtype, m = sum_t u_t without a (B, T, C) buffer."""
    dtype = state_dtype(h.dtype)
    B, _, C = h.shape
    m = torch.empty((B, C), dtype=dtype)
    leaky_readout_sum_fwd_kernel(
        np_view(h.to(dtype), dtype, 3), np_view(alpha.to(dtype), dtype, 1), launch_block(B, C), np_view(m, dtype, 2)
    )
    return m


def leaky_readout_sum_bwd(grad_m, h, alpha, T: int, need_dalpha: bool):
    """grad_m: (B, C); h: (B, T, C) or None; alpha: (C,) -> dh: (B, T, C) state dtype, dalpha: (C,) or None."""
    dtype = state_dtype(grad_m.dtype)
    B, C = grad_m.shape
    dh = buffers.empty((B, T, C), dtype)
    dalpha_lanes = torch.empty((B, C), dtype=dtype) if need_dalpha else None
    leaky_readout_sum_bwd_kernel(
        np_view(grad_m.to(dtype), dtype, 2), np_view(h.to(dtype) if need_dalpha else None, dtype, 3),
        np_view(alpha.to(dtype), dtype, 1), need_dalpha, launch_block(B, C),
        np_view(dh, dtype, 3), np_view(dalpha_lanes, dtype, 2),
    )
    return dh, dalpha_lanes.sum(0) if need_dalpha else None

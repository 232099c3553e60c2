"""The LIF family on the CPU: numba kernels and their launchers.

Equations and launcher contract: ``docs/kernel_contract.md`` (LIF family); the oracle is
:func:`fastsnn.ops.neurons.reference.lif_ref`. One kernel body serves every member: a factory
compiles it per structural option (``same_step``, ``reset``, ``adaptive``; the backward also per
surrogate), which the body reads as compile-time constants, so the seed's neuron runs no code of
the others. Each lane stages its rows in padded local buffers (:func:`fastsnn.cpu.padded`) so
that every neuron loop vectorises.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from numba import prange, types
from numba.extending import overload

from fastsnn.cpu import (GROUP_WIDTH, buffers, cpu_kernel, float32_bits, flush_subnormals, fma, gather, lane_rows,
                         lane_span, launch_block, launch_group, np_view, padded, replicated, restore_subnormals,
                         scatter, scatter2, staged)

from .._common import state_dtype
from .neuron import ATAN, SUBTRACT, SUBTRACT_NEXT, ZERO, Neuron


@functools.cache
def lif_fwd_kernel(same_step: bool, reset: int, adaptive: bool):
    """The forward kernel for one structural variant (compiled on first use, cached on disk)."""

    @cpu_kernel
    def kernel(h, alpha, rho, threshold, adapt, fire_ge, save, weights, block, s, u, s8, a_out, total):
        """h, s, u, a_out: (B, T, N) state dtype; alpha, rho: (N,); s8: (B, T, N) uint8; one lane = (b, block
        of neurons). Writes s, or with (T,) ``weights`` (empty: none) only total: (B, N) = sum_t weights_t s_t;
        with ``save`` also u (pre-reset membrane), s8 (s as uint8, NaN as 0; delayed only: a same-step
        spike is H(u_t - theta_t), which the backward recomputes) and, adaptive, a (a_t: the adaptation
        the delayed spike s_{t+1} is tested against; same-step: after s_t's update).
        A NaN membrane spikes NaN, as in the reference.
        """
        B, T, N = h.shape
        zero, one = h.dtype.type(0), h.dtype.type(1)
        summing = weights.shape[0] > 0
        nblk = -(-N // block)
        for lane in prange(B * nblk):
            b, n0, n1 = lane_span(lane, nblk, block, N)
            m = n1 - n0
            size = padded(m)
            al = staged(alpha[n0:n1], size)
            rh = staged(rho[n0:n1], size) if adaptive else np.zeros(size, h.dtype)
            v = np.zeros(size, h.dtype)
            u_t = np.zeros(size, h.dtype)
            s_t = np.zeros(size, h.dtype)
            a_t = np.zeros(size, h.dtype)
            carry = np.zeros(size, h.dtype)  # subtract_next: theta_t s_t, taken off u_{t+1}
            h_t = np.zeros(size, h.dtype)
            acc = np.zeros(size, h.dtype)
            s8_t = np.zeros(size, np.uint8)
            for t in range(T):
                gather(h_t, h, b, 1, t, n0, n1, size)
                if same_step:  # u_t = alpha v_{t-1} + h_t, s_t = H(u_t - theta_t), then reset and adapt
                    for j in range(size):
                        th = threshold + adapt * a_t[j] if adaptive else threshold
                        uj = al[j] * v[j] + h_t[j]
                        if reset == SUBTRACT_NEXT:
                            uj = uj - carry[j]
                        x = uj - th
                        sj = x if x != x else (one if x > zero or (fire_ge and x == zero) else zero)
                        if reset == ZERO:
                            v[j] = uj * (one - sj)
                        elif reset == SUBTRACT:
                            v[j] = uj - th * sj
                        else:
                            v[j] = uj
                            carry[j] = th * sj
                        if adaptive:
                            a_t[j] = rh[j] * a_t[j] + (one - rh[j]) * sj
                        u_t[j] = uj
                        s_t[j] = sj
                if summing:
                    w_t = weights[t]
                    for j in range(size):
                        acc[j] += w_t * s_t[j]
                else:
                    scatter(s, s_t, b, 1, t, n0, n1, size)
                if save:
                    scatter(u, u_t, b, 1, t, n0, n1, size)
                    if not same_step:  # same-step spikes are recomputed from u in the backward
                        for j in range(size):
                            s8_t[j] = s_t[j] > zero
                        scatter(s8, s8_t, b, 1, t, n0, n1, size)
                    if adaptive:
                        scatter(a_out, a_t, b, 1, t, n0, n1, size)
                if not same_step:  # s_{t+1} = H(v_t - theta_t), v_{t+1} = reset(alpha v_t + h_t, s_t, theta_t)
                    for j in range(size):  # (the update at t = T-1, from the unused h_{T-1}, is discarded)
                        th = threshold + adapt * a_t[j] if adaptive else threshold
                        u_next = al[j] * v[j] + h_t[j]
                        x = v[j] - th
                        s_next = x if x != x else (one if x > zero or (fire_ge and x == zero) else zero)
                        if reset == ZERO:
                            v[j] = u_next * (one - s_t[j])
                        else:
                            v[j] = u_next - th * s_t[j]
                        if adaptive:
                            a_t[j] = rh[j] * a_t[j] + (one - rh[j]) * s_next
                        u_t[j] = u_next
                        s_t[j] = s_next
            if summing:
                total[b, n0:n1] = acc[:m]

    return kernel


def exp_nonpositive(x, out):
    """out[j] = exp(x[j]) for x[j] <= 0 (1-D arrays of one length)."""
    out[:] = np.exp(x)


# Cephes' expf (range reduction by ln 2 in two parts, degree-7 polynomial, 2^k from the exponent
# bits) written as one plain loop, so that it vectorises: pip's llvmlite has no vector math library,
# and a call to np.exp keeps the surrogate's loop scalar. Its Horner steps are explicit fused
# multiply-adds (numba never fuses without fast-math) and 2^k is a bitcast in the same loop (it
# was a second pass over an int32 scratch array): the same-step LIF backward at (1024, 100, 30),
# 1 thread, AMD EPYC, 4.0-4.3 -> 3.0 ms, the seed's 6.3 -> 5.5-5.7 ms. Within 2 ulp of np.exp on [-87, 0];
# below -87, where float32 exp turns subnormal, it returns 0, as flush-to-zero would; NaN stays
# NaN, as in np.exp (a NaN membrane gives a NaN surrogate gradient, as in the reference).
_LOG2E = np.float32(1.44269504088896341)
_LN2_HI = np.float32(0.693359375)
_LN2_LO = np.float32(-2.12194440e-4)
_P = tuple(np.float32(c) for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
                                   1.6666665459e-1, 5.0000001201e-1))


@overload(exp_nonpositive, inline="always")
def _exp_nonpositive(x, out):
    if x.dtype != types.float32:
        def exact(x, out):
            for j in range(x.shape[0]):
                out[j] = np.exp(x[j])
        return exact

    def polynomial(x, out):
        for j in range(x.shape[0]):
            inside = x[j] >= np.float32(-87.0)  # False below -87 and for NaN
            xj = x[j] if inside else np.float32(-87.0)
            k = np.floor(fma(xj, _LOG2E, np.float32(0.5)))
            r = fma(-k, _LN2_LO, fma(-k, _LN2_HI, xj))
            p = fma(_P[0], r, _P[1])
            p = fma(p, r, _P[2])
            p = fma(p, r, _P[3])
            p = fma(p, r, _P[4])
            p = fma(p, r, _P[5])
            two_k = float32_bits((np.int32(k) + np.int32(127)) << np.int32(23))
            p = fma(p, r * r, r + np.float32(1.0)) * two_k
            out[j] = p if inside else (np.float32(0.0) if x[j] < np.float32(-87.0) else x[j])  # NaN stays NaN
    return polynomial


@functools.cache
def lif_bwd_kernel(same_step: bool, reset: int, adaptive: bool, atan: bool):
    """The backward kernel for one structural variant and surrogate (compiled on first use, cached on disk)."""
    reads_s = reset == ZERO or adaptive  # the step's own spike enters the adjoints (else only s_{t-1}, for v_t)

    @cpu_kernel
    def kernel(g, u, s8, a_saved, alpha, rho, threshold, adapt, beta, fire_ge, detach_reset, need_dalpha, need_drho,
               weights, block, group, dh, dalpha_lanes, drho_lanes):
        """g, u, a_saved, dh: (B, T, N) state dtype; s8: (B, T, N) uint8 (delayed; same-step: empty, the spikes
        are recomputed as H(u_t - theta_t), bit for bit the forward's); alpha, rho: (N,); dalpha_lanes and
        drho_lanes: (B, N) or empty. With (T,) ``weights`` (empty: none) g is (B, 1, N), the gradient of
        sum_t weights_t s_t, and the kernel uses g_t = weights_t g, never stored.

        Walks time from T-1 down; the adjoint recursions are in ``docs/kernel_contract.md``. The
        sigmoid surrogate is computed as beta e / (1 + e)^2 with e = exp(-|beta x|), which never
        overflows. Runs with subnormals flushed to zero (:func:`fastsnn.cpu.flush_subnormals`).
        A step is a handful of loops over the lane's values: its z = v - theta (with the spike and
        the surrogate's argument), exp for the sigmoid, then the adjoints, which finish the surrogate.
        """
        B, T, N = u.shape
        zero, one = g.dtype.type(0), g.dtype.type(1)
        half_pi_beta = g.dtype.type(np.pi / 2) * beta
        summing = weights.shape[0] > 0
        nblk = -(-N // block)
        for lane in prange(-(-B // group) * nblk):
            fp_state = flush_subnormals()
            b0, rows, n0, n1 = lane_rows(lane, nblk, block, N, group, B)
            m = n1 - n0
            pad = padded(m)
            size = pad * group  # the lane's batch rows side by side, each padded
            al = replicated(alpha[n0:n1], pad, group)
            rh = replicated(rho[n0:n1], pad, group) if adaptive else np.zeros(size, g.dtype)
            dv = np.zeros(size, g.dtype)  # delayed: dL/dv_{t+1}; same-step: dL/dv_t
            ds = np.zeros(size, g.dtype)  # delayed: dL/ds_{t+1} but for its path through a_{t+1}
            da = np.zeros(size, g.dtype)  # dL/da_{t+1} (delayed), dL/da_t (same-step)
            du = np.zeros(size, g.dtype)  # same-step: dL/du_{t+1}
            dal = np.zeros(size, g.dtype)
            drh = np.zeros(size, g.dtype)
            g_t = np.zeros(size, g.dtype)  # g_t / w_t: with weights the fixed g (w_t = weights_t), else g_t (w_t = 1)
            u_t = np.zeros(size, g.dtype)
            u_prev = np.zeros(size, g.dtype)
            u_next = np.zeros(size, g.dtype)  # delayed: u_{t+1}
            v_t = np.zeros(size, g.dtype)
            th_t = np.zeros(size, g.dtype)
            th_prev = np.zeros(size, g.dtype)
            a_cur = np.zeros(size, g.dtype)
            a_prev = np.zeros(size, g.dtype)
            sg = np.zeros(size, g.dtype)  # sigmoid: e = exp(-|beta z|); atan: the surrogate itself
            dh_t = np.zeros(size, g.dtype)
            s_t = np.zeros(size, np.uint8)
            s_prev = np.zeros(size, np.uint8)
            s_next = np.zeros(size, np.uint8)
            w_t = one
            # v_t, the membrane alpha multiplies: the delayed spike's own (z = v_t - theta_t); same-step,
            # v_{t-1}, needed for alpha's gradient alone
            need_v = not same_step or need_dalpha
            if summing:  # g is (B, 1, N) then (without, it has no row 0 if T = 0)
                gather(g_t, g, b0, rows, 0, n0, n1, pad)
            for t in range(T - 1, -1, -1):
                if summing:
                    w_t = weights[t]
                else:
                    gather(g_t, g, b0, rows, t, n0, n1, pad)
                gather(u_t, u, b0, rows, t, n0, n1, pad)
                if reads_s and not same_step:
                    gather(s_t, s8, b0, rows, t, n0, n1, pad)
                if need_v and not same_step:
                    gather(s_prev, s8, b0, rows, max(t - 1, 0), n0, n1, pad)  # s_0 = 0 stands in for s_{-1}
                if need_v and same_step and t > 0:
                    gather(u_prev, u, b0, rows, t - 1, n0, n1, pad)
                if adaptive:  # the a each theta is taken from: a_t (delayed) or a_{t-1} (same-step)
                    gather(a_cur, a_saved, b0, rows, t if not same_step else max(t - 1, 0), n0, n1, pad)
                    if same_step and t == 0:
                        a_cur[:] = zero
                    for j in range(size):
                        th_t[j] = threshold + adapt * a_cur[j]
                    if need_v:
                        gather(a_prev, a_saved, b0, rows, max(t - 1 if not same_step else t - 2, 0), n0, n1, pad)
                        if (same_step and t <= 1) or (not same_step and t == 0):
                            a_prev[:] = zero
                        for j in range(size):
                            th_prev[j] = threshold + adapt * a_prev[j]
                if same_step and need_v:  # v_{t-1} from u_{t-1}, s_{t-1} = H(u_{t-1} - theta_{t-1}) (0 at t = 0)
                    for j in range(size):
                        thp = th_prev[j] if adaptive else threshold
                        x = u_prev[j] - thp
                        s_prev[j] = (x > zero) | (fire_ge & (x == zero))
                        if t == 0:
                            v_t[j] = zero
                        elif reset == ZERO:
                            v_t[j] = u_prev[j] * (one - s_prev[j])
                        elif reset == SUBTRACT:
                            v_t[j] = u_prev[j] - thp * s_prev[j]
                        else:
                            v_t[j] = u_prev[j]
                for j in range(size):  # z = u_t - theta_t (same-step; s_t = H(z)) or v_t - theta_t (delayed)
                    if same_step:
                        z = u_t[j] - (th_t[j] if adaptive else threshold)
                        if reads_s:  # NaN: 0, as the delayed s8 stores it
                            s_t[j] = (z > zero) | (fire_ge & (z == zero))
                    else:
                        if reset == ZERO:
                            v_t[j] = u_t[j] * (one - s_prev[j])
                        else:
                            v_t[j] = u_t[j] - (th_prev[j] if adaptive else threshold) * s_prev[j]
                        z = v_t[j] - (th_t[j] if adaptive else threshold)
                    if atan:
                        y = half_pi_beta * z
                        sg[j] = beta / (g.dtype.type(2) * (one + y * y))
                    else:
                        sg[j] = -abs(beta * z)
                if not atan:
                    exp_nonpositive(sg, sg)
                if same_step:
                    for j in range(size):
                        sgj = sg[j] if atan else beta * sg[j] / ((one + sg[j]) * (one + sg[j]))
                        sj = g.dtype.type(s_t[j])
                        ds_tot = w_t * g_t[j] + ((one - rh[j]) * da[j] if adaptive else zero)
                        if not detach_reset:
                            if reset == ZERO:
                                ds_tot -= dv[j] * u_t[j]
                            elif reset == SUBTRACT:
                                ds_tot -= dv[j] * (th_t[j] if adaptive else threshold)
                            else:
                                ds_tot -= du[j] * (th_t[j] if adaptive else threshold)
                        dz = ds_tot * sgj
                        du_t = dz + (dv[j] * (one - sj) if reset == ZERO else dv[j])
                        dh_t[j] = du_t
                        if adaptive:
                            dth = -dz
                            if reset == SUBTRACT:
                                dth -= dv[j] * sj
                            elif reset == SUBTRACT_NEXT:
                                dth -= du[j] * sj
                            drh[j] += da[j] * (a_cur[j] - sj)
                            da[j] = rh[j] * da[j] + adapt * dth
                        dv[j] = al[j] * du_t
                        if reset == SUBTRACT_NEXT:
                            du[j] = du_t
                elif t == T - 1:  # nothing after s_{T-1}: dh_{T-1} = 0, and the walk starts from g_{T-1}
                    for j in range(size):
                        dh_t[j] = zero
                        ds[j] = w_t * g_t[j]
                        u_next[j] = zero  # v_{T-1} feeds no spike: its reset term is 0, even if u_{T-1} is NaN
                        s_next[j] = s_t[j]
                else:
                    for j in range(size):
                        sgj = sg[j] if atan else beta * sg[j] / ((one + sg[j]) * (one + sg[j]))
                        sj = g.dtype.type(s_t[j])
                        ds1 = ds[j] + ((one - rh[j]) * da[j] if adaptive else zero)  # all of dL/ds_{t+1}
                        dz = ds1 * sgj
                        du1 = dv[j] * (one - sj) if reset == ZERO else dv[j]  # dL/du_{t+1}
                        dh_t[j] = du1
                        ds_new = w_t * g_t[j]
                        if not detach_reset:
                            ds_new -= dv[j] * (u_next[j] if reset == ZERO else (th_t[j] if adaptive else threshold))
                        if adaptive:
                            dth = -dz - (dv[j] * sj if reset == SUBTRACT else zero)
                            drh[j] += da[j] * (a_cur[j] - g.dtype.type(s_next[j]))
                            da[j] = rh[j] * da[j] + adapt * dth
                        dv[j] = al[j] * du1 + dz
                        ds[j] = ds_new
                        u_next[j] = u_t[j]
                        s_next[j] = s_t[j]
                if need_dalpha and (same_step or t < T - 1):
                    for j in range(size):
                        dal[j] += dh_t[j] * v_t[j]
                scatter(dh, dh_t, b0, rows, t, n0, n1, pad)
            if need_dalpha:
                scatter2(dalpha_lanes, dal, b0, rows, n0, n1, pad)
            if need_drho:
                scatter2(drho_lanes, drh, b0, rows, n0, n1, pad)
            restore_subnormals(fp_state)

    return kernel


def lif_fwd(h: torch.Tensor, alpha: torch.Tensor, rho: torch.Tensor | None, neuron: Neuron, save: bool,
            weights: torch.Tensor | None = None):
    """h: (B, T, N); alpha, rho: (N,) (rho None unless ``neuron.adaptive``); weights: (T,) or None
    -> (out, u, s8, a): out = s (B, T, N) dtype of h, or with weights sum_t weights_t s_t (B, N) state
    dtype; u: (B, T, N) state dtype, s8: (B, T, N) uint8 (delayed spikes only), a: (B, T, N) state dtype
    (adaptive), else None."""
    dtype = state_dtype(h.dtype)
    B, T, N = h.shape
    s = buffers.empty((B, T, N), dtype) if weights is None else None
    total = torch.empty((B, N), dtype=dtype) if weights is not None else None
    u = buffers.empty((B, T, N), dtype) if save else None
    s8 = buffers.empty((B, T, N), torch.uint8) if save and not neuron.same_step else None
    a = buffers.empty((B, T, N), dtype) if save and neuron.adaptive else None
    h_np = np_view(h.to(dtype), dtype, 3)
    scalar = h_np.dtype.type
    kernel = lif_fwd_kernel(neuron.same_step, neuron.reset, neuron.adaptive)
    kernel(h_np, _vector(alpha, dtype), _vector(rho, dtype), scalar(neuron.threshold), scalar(neuron.adapt),
           neuron.fire_ge, save, _vector(weights, dtype), launch_block(B, N), np_view(s, dtype, 3),
           np_view(u, dtype, 3), np_view(s8, torch.uint8, 3), np_view(a, dtype, 3), np_view(total, dtype, 2))
    if weights is not None and T == 0:  # the kernel reads empty weights as "none" and leaves total unwritten
        total.zero_()
    return (s.to(h.dtype) if weights is None else total), u, s8, a


def lif_bwd(grad, u, s8, a, alpha, rho, neuron: Neuron, need_dalpha: bool, need_drho: bool,
            weights: torch.Tensor | None = None):
    """grad: (B, T, N), or (B, N) with weights: (T,); u, a: (B, T, N) (a None unless adaptive); s8: (B, T, N)
    uint8 (ignored for same-step spikes); alpha, rho: (N,) -> (dh (B, T, N) state dtype, dalpha (N,) or None,
    drho (N,) or None)."""
    dtype = state_dtype(grad.dtype)
    B, T, N = u.shape
    dh = buffers.empty((B, T, N), dtype)
    dalpha_lanes = torch.empty((B, N), dtype=dtype) if need_dalpha else None
    drho_lanes = torch.empty((B, N), dtype=dtype) if need_drho else None
    g_np = np_view(grad.to(dtype).reshape(B, T if weights is None else 1, N), dtype, 3)
    scalar = g_np.dtype.type
    kernel = lif_bwd_kernel(neuron.same_step, neuron.reset, neuron.adaptive, neuron.surrogate == ATAN)
    block = launch_block(B, N)
    kernel(g_np, np_view(u.to(dtype), dtype, 3), np_view(None if neuron.same_step else s8, torch.uint8, 3),
           np_view(a.to(dtype) if a is not None else None, dtype, 3), _vector(alpha, dtype), _vector(rho, dtype),
           scalar(neuron.threshold), scalar(neuron.adapt), scalar(neuron.beta), neuron.fire_ge, neuron.detach_reset,
           need_dalpha, need_drho, _vector(weights, dtype), block, launch_group(B, N, block, _group_width(neuron)),
           np_view(dh, dtype, 3), np_view(dalpha_lanes, dtype, 2), np_view(drho_lanes, dtype, 2))
    return (dh, dalpha_lanes.sum(0) if need_dalpha else None, drho_lanes.sum(0) if need_drho else None)


def _group_width(neuron: Neuron) -> int:
    """Values a backward lane's loops run over at narrow widths (:func:`fastsnn.cpu.launch_group`).

    A same-step neuron without adaptation reads u alone each step (its spikes are recomputed), so
    four 30-neuron rows a lane fit the caches where other members, reading 3-5 arrays a step,
    stay at two: at (1024, 100, 30) and (64, 100, 30) four rows were ~10% faster for the six
    peer-exact configurations (AMD EPYC, 2 threads; sj-soft-detach at 1 thread 5.3 against 5.6 ms),
    and for the seed's delayed neuron no faster (7.7-8.2 ms either way at 1 thread).
    """
    return 2 * GROUP_WIDTH if neuron.same_step and not neuron.adaptive else GROUP_WIDTH


def _vector(t: torch.Tensor | None, dtype: torch.dtype):
    return np_view(t.to(dtype).contiguous() if t is not None else None, dtype, 1)

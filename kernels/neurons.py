"""The LIF family (``fastsnn.lif``, ``fastsnn.alif``): Triton kernels and launchers.

Equations and launcher contract: ``docs/kernel_contract.md`` (LIF family). Each program owns a
BLOCK_B x BLOCK_N tile of (batch, neuron) lanes of contiguous (B, T, N) tensors and walks time
inside the kernel with the state in float32 registers (see ``_config.py``). The neuron's
structure (spike timing, reset, adaptive threshold, surrogate, spike test) is constexpr: each
member compiles to its own straight-line loop.
"""

import torch
import triton
import triton.language as tl

from ._config import BWD_OPTIONS, FWD_OPTIONS, lane_tile

# Globals a @triton.jit function reads must be constexpr (the interpreter accepts plain ones; the compiler does not)
ZERO, SUBTRACT, SUBTRACT_NEXT = tl.constexpr(0), tl.constexpr(1), tl.constexpr(2)  # as fastsnn.ops.neurons.neuron
HALF_PI = tl.constexpr(1.5707963267948966)


@triton.jit
def _heaviside(x, FIRE_GE: tl.constexpr):
    """1 where x > 0 (x >= 0 with FIRE_GE), else 0; NaN stays NaN."""
    if FIRE_GE:
        fired = (x >= 0).to(tl.float32)
    else:
        fired = (x > 0).to(tl.float32)
    return tl.where(x != x, x, fired)


@triton.jit
def _surrogate(x, beta, ATAN: tl.constexpr):
    """The pseudo-derivative of H at x: beta sig(beta x)(1 - sig(beta x)), or beta / 2 / (1 + (pi/2 beta x)^2)."""
    if ATAN:
        y = HALF_PI * beta * x
        return beta / (2.0 * (1.0 + y * y))
    else:
        sig = tl.sigmoid(beta * x)
        return beta * sig * (1.0 - sig)


@triton.heuristics({"SAVE": lambda args: args["u"] is not None, "SUM": lambda args: args["weights"] is not None,
                    "ADAPTIVE": lambda args: args["rho"] is not None})
@triton.jit(do_not_specialize=["T"])
def lif_fwd_kernel(
    h, alpha, rho, weights, s, total, u, s8, a, threshold, adapt, B, T, N,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, SAME_STEP: tl.constexpr, RESET: tl.constexpr,
    FIRE_GE: tl.constexpr, ADAPTIVE: tl.constexpr, SAVE: tl.constexpr, SUM: tl.constexpr,
):
    """h: (B, T, N), alpha, rho: (N,) -> s: (B, T, N) dtype of h, or with SUM only total: (B, N) float32 =
    sum_t weights_t s_t for weights: (T,); with SAVE also the pre-reset membrane u: (B, T, N) float32,
    s8: (B, T, N) uint8 (the spikes again) and, ADAPTIVE, the adaptation a: (B, T, N) float32.

    Bytes per element: read h, write s (2 + 2 for 16-bit h, 4 + 4 for float32; no s with SUM),
    and with SAVE write u (4), s8 (1) and a (4): 13 in float32 for the seed's LIF with SAVE.
    """
    offs_b = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    mask = (offs_b[:, None] < B) & mask_n[None, :]
    offs = offs_b[:, None].to(tl.int64) * T * N + offs_n[None, :]  # element (b, t=0, n)
    b_alpha = tl.load(alpha + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    b_v = tl.zeros([BLOCK_B, BLOCK_N], dtype=tl.float32)
    b_s = tl.zeros([BLOCK_B, BLOCK_N], dtype=tl.float32)
    b_u = tl.zeros([BLOCK_B, BLOCK_N], dtype=tl.float32)
    b_a = tl.zeros([BLOCK_B, BLOCK_N], dtype=tl.float32)
    b_carry = tl.zeros([BLOCK_B, BLOCK_N], dtype=tl.float32)  # subtract_next: theta_t s_t, off u_{t+1}
    b_total = tl.zeros([BLOCK_B, BLOCK_N], dtype=tl.float32)
    if ADAPTIVE:
        b_rho = tl.load(rho + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    if SAME_STEP:
        steps = T
    else:
        steps = T - 1
        if not SUM:  # s_0 = 0 (u_0 = a_0 = 0 too)
            tl.store(s + offs, b_s.to(s.dtype.element_ty), mask=mask)
        if SAVE:
            tl.store(u + offs, b_u, mask=mask)
            tl.store(s8 + offs, b_s.to(tl.uint8), mask=mask)
            if ADAPTIVE:
                tl.store(a + offs, b_a, mask=mask)
    for i in range(steps):
        b_h = tl.load(h + offs, mask=mask, other=0.0).to(tl.float32)
        if ADAPTIVE:
            b_theta = threshold + adapt * b_a
        else:
            b_theta = threshold + tl.zeros([BLOCK_B, BLOCK_N], dtype=tl.float32)
        b_u = b_alpha * b_v + b_h
        if SAME_STEP:  # s_t = H(u_t - theta_t), reset at the spike step
            if RESET == SUBTRACT_NEXT:
                b_u = b_u - b_carry
            b_s = _heaviside(b_u - b_theta, FIRE_GE)
            if RESET == ZERO:
                b_v = b_u * (1.0 - b_s)
            elif RESET == SUBTRACT:
                b_v = b_u - b_theta * b_s
            else:
                b_v = b_u
                b_carry = b_theta * b_s
            t = i
        else:  # s_{t+1} = H(v_t - theta_t), v_{t+1} = reset(alpha v_t + h_t, s_t, theta_t)
            b_s_next = _heaviside(b_v - b_theta, FIRE_GE)
            if RESET == ZERO:
                b_v = b_u * (1.0 - b_s)
            else:
                b_v = b_u - b_theta * b_s
            b_s = b_s_next
            offs += N
            t = i + 1
        if ADAPTIVE:
            b_a = b_rho * b_a + (1.0 - b_rho) * b_s
        if SUM:
            b_total += tl.load(weights + t).to(tl.float32) * b_s
        else:
            tl.store(s + offs, b_s.to(s.dtype.element_ty), mask=mask)
        if SAVE:
            tl.store(u + offs, b_u, mask=mask)
            tl.store(s8 + offs, b_s.to(tl.uint8), mask=mask)
            if ADAPTIVE:  # same-step: a_t after s_t; delayed: a_{t+1}, the a that s_{t+2} is tested against
                tl.store(a + offs, b_a, mask=mask)
        if SAME_STEP:
            offs += N
    if SUM:
        tl.store(total + offs_b[:, None].to(tl.int64) * N + offs_n[None, :], b_total, mask=mask)


@triton.heuristics({"NEED_DALPHA": lambda args: args["dalpha"] is not None,
                    "NEED_DRHO": lambda args: args["drho"] is not None,
                    "SUM": lambda args: args["weights"] is not None,
                    "ADAPTIVE": lambda args: args["rho"] is not None})
@triton.jit(do_not_specialize=["T"])
def lif_bwd_kernel(
    grad_s, weights, u, s8, a, alpha, rho, dh, dalpha, drho, threshold, adapt, beta, B, T, N,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, SAME_STEP: tl.constexpr, RESET: tl.constexpr,
    ATAN: tl.constexpr, DETACH_RESET: tl.constexpr, ADAPTIVE: tl.constexpr, NEED_DALPHA: tl.constexpr,
    NEED_DRHO: tl.constexpr, SUM: tl.constexpr,
):
    """grad_s, u, a: (B, T, N) float32, s8: (B, T, N) uint8, alpha, rho: (N,) -> dh: (B, T, N) float32;
    dalpha, drho: (cdiv(B, BLOCK_B), N) float32, this tile's sums over its batch rows.
    With SUM, grad_s is (B, N), the gradient of sum_t weights_t s_t, and g_t = weights_t grad_s.

    Walks time from T-1 down (recursions: ``docs/kernel_contract.md``), loading each saved row
    of step t-1 once per step. Bytes per element: read grad_s (4), u (4), s8 (1), a (4, ADAPTIVE),
    write dh (4): 13 for the seed's LIF.
    """
    offs_b = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    mask = (offs_b[:, None] < B) & mask_n[None, :]
    offs = (offs_b[:, None].to(tl.int64) * T + T - 1) * N + offs_n[None, :]  # element (b, T-1, n)
    b_alpha = tl.load(alpha + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    if ADAPTIVE:
        b_rho = tl.load(rho + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    if SUM:
        b_grad = tl.load(grad_s + offs_b[:, None].to(tl.int64) * N + offs_n[None, :], mask=mask,
                         other=0.0).to(tl.float32)
    zeros = tl.zeros([BLOCK_B, BLOCK_N], dtype=tl.float32)
    b_dv = zeros  # delayed: dL/dv_{t+1}; same-step: dL/dv_t
    b_da = zeros  # dL/da_{t+1} (delayed), dL/da_t (same-step)
    b_du = zeros  # same-step: dL/du_{t+1}
    b_dal = zeros
    b_drh = zeros
    b_u = tl.load(u + offs, mask=mask, other=0.0)  # u_t, s_t at t = T-1
    b_s = tl.load(s8 + offs, mask=mask, other=0).to(tl.float32)
    if SAME_STEP:
        steps = T
    else:  # nothing after s_{T-1}: dh_{T-1} = 0, and the walk starts from ds = g_{T-1}
        tl.store(dh + offs, zeros, mask=mask)
        if SUM:
            b_ds = tl.load(weights + T - 1).to(tl.float32) * b_grad
        else:
            b_ds = tl.load(grad_s + offs, mask=mask, other=0.0).to(tl.float32)
        b_u_next = zeros  # v_{T-1} feeds no spike: its reset term is 0, even if u_{T-1} is NaN
        b_s_next = b_s
        offs -= N
        b_u = tl.load(u + offs, mask=tl.where(T > 1, mask, False), other=0.0)
        b_s = tl.load(s8 + offs, mask=tl.where(T > 1, mask, False), other=0).to(tl.float32)
        steps = T - 1
    for i in range(steps):
        t = steps - 1 - i
        # row t-1 (none at t = 0; tl.where, not &: the interpreter mis-types scalar & block masks)
        m_prev = tl.where(t > 0, mask, False)
        b_u_prev = tl.load(u + offs - N, mask=m_prev, other=0.0)
        b_s_prev = tl.load(s8 + offs - N, mask=m_prev, other=0).to(tl.float32)
        if ADAPTIVE:  # theta_t from a_t (delayed) or a_{t-1} (same-step); theta_{t-1} one row earlier
            if SAME_STEP:
                b_a_cur = tl.load(a + offs - N, mask=m_prev, other=0.0)
                b_a_prev = tl.load(a + offs - 2 * N, mask=tl.where(t > 1, mask, False), other=0.0)
            else:
                b_a_cur = tl.load(a + offs, mask=mask, other=0.0)
                b_a_prev = tl.load(a + offs - N, mask=m_prev, other=0.0)
            b_theta = threshold + adapt * b_a_cur
            b_theta_prev = threshold + adapt * b_a_prev
        else:
            b_theta = threshold + zeros
            b_theta_prev = threshold + zeros
        if SUM:
            b_g = tl.load(weights + t).to(tl.float32) * b_grad
        else:
            b_g = tl.load(grad_s + offs, mask=mask, other=0.0).to(tl.float32)
        if SAME_STEP:
            if RESET == ZERO:  # v_{t-1}
                b_v = b_u_prev * (1.0 - b_s_prev)
            elif RESET == SUBTRACT:
                b_v = b_u_prev - b_theta_prev * b_s_prev
            else:
                b_v = b_u_prev
            b_sg = _surrogate(b_u - b_theta, beta, ATAN)
            b_ds_tot = b_g
            if ADAPTIVE:
                b_ds_tot += (1.0 - b_rho) * b_da
            if not DETACH_RESET:
                if RESET == ZERO:
                    b_ds_tot -= b_dv * b_u
                elif RESET == SUBTRACT:
                    b_ds_tot -= b_dv * b_theta
                else:
                    b_ds_tot -= b_du * b_theta
            b_dz = b_ds_tot * b_sg
            if RESET == ZERO:
                b_du_t = b_dz + b_dv * (1.0 - b_s)
            else:
                b_du_t = b_dz + b_dv
            tl.store(dh + offs, b_du_t, mask=mask)
            if NEED_DALPHA:
                b_dal += b_du_t * b_v
            if ADAPTIVE:
                b_dth = -b_dz
                if RESET == SUBTRACT:
                    b_dth -= b_dv * b_s
                elif RESET == SUBTRACT_NEXT:
                    b_dth -= b_du * b_s
                if NEED_DRHO:
                    b_drh += b_da * (b_a_cur - b_s)
                b_da = b_rho * b_da + adapt * b_dth
            b_dv = b_alpha * b_du_t
            b_du = b_du_t
        else:
            if RESET == ZERO:  # v_t
                b_v = b_u * (1.0 - b_s_prev)
            else:
                b_v = b_u - b_theta_prev * b_s_prev
            b_sg = _surrogate(b_v - b_theta, beta, ATAN)
            b_ds1 = b_ds  # all of dL/ds_{t+1}
            if ADAPTIVE:
                b_ds1 += (1.0 - b_rho) * b_da
            b_dz = b_ds1 * b_sg
            if RESET == ZERO:
                b_du1 = b_dv * (1.0 - b_s)
            else:
                b_du1 = b_dv
            tl.store(dh + offs, b_du1, mask=mask)
            if NEED_DALPHA:
                b_dal += b_du1 * b_v
            if not DETACH_RESET:
                if RESET == ZERO:
                    b_g -= b_dv * b_u_next
                else:
                    b_g -= b_dv * b_theta
            if ADAPTIVE:
                b_dth = -b_dz
                if RESET == SUBTRACT:
                    b_dth -= b_dv * b_s
                if NEED_DRHO:
                    b_drh += b_da * (b_a_cur - b_s_next)
                b_da = b_rho * b_da + adapt * b_dth
            b_dv = b_alpha * b_du1 + b_dz
            b_ds = b_g
            b_u_next = b_u
            b_s_next = b_s
        b_u = b_u_prev
        b_s = b_s_prev
        offs -= N
    if NEED_DALPHA:
        tl.store(dalpha + tl.program_id(0).to(tl.int64) * N + offs_n, tl.sum(b_dal, axis=0), mask=mask_n)
    if NEED_DRHO:
        tl.store(drho + tl.program_id(0).to(tl.int64) * N + offs_n, tl.sum(b_drh, axis=0), mask=mask_n)


def lif_fwd(h: torch.Tensor, alpha: torch.Tensor, rho: torch.Tensor | None, neuron, save: bool,
            weights: torch.Tensor | None = None):
    """h: (B, T, N) float32 | bfloat16 | float16; alpha, rho: (N,) float32 (rho None unless ``neuron.adaptive``);
    weights: (T,) float32 or None -> (out, u, s8, a): out = s (B, T, N) dtype of h, or with weights
    sum_t weights_t s_t (B, N) float32; u, a (B, T, N) float32 and s8 (B, T, N) uint8, or None (a also
    None unless adaptive)."""
    B, T, N = h.shape
    dev = h.device
    s = torch.empty_like(h) if weights is None else None
    total = torch.empty(B, N, device=dev, dtype=torch.float32) if weights is not None else None
    u = torch.empty(B, T, N, device=dev, dtype=torch.float32) if save else None
    s8 = torch.empty(B, T, N, device=dev, dtype=torch.uint8) if save else None
    a = torch.empty(B, T, N, device=dev, dtype=torch.float32) if save and neuron.adaptive else None
    if B * T * N == 0:
        return (s if weights is None else total.zero_()), u, s8, a
    grid, block_b, block_n, num_warps = lane_tile(B, N)
    lif_fwd_kernel[grid](
        h, alpha, rho if neuron.adaptive else None, weights, s, total, u, s8, a, float(neuron.threshold),
        float(neuron.adapt), B, T, N, BLOCK_B=block_b, BLOCK_N=block_n, SAME_STEP=bool(neuron.same_step),
        RESET=int(neuron.reset), FIRE_GE=bool(neuron.fire_ge), num_warps=num_warps, **FWD_OPTIONS,
    )
    return (s if weights is None else total), u, s8, a


def lif_bwd(grad_s: torch.Tensor, u: torch.Tensor, s8: torch.Tensor, a: torch.Tensor | None, alpha: torch.Tensor,
            rho: torch.Tensor | None, neuron, need_dalpha: bool, need_drho: bool, weights: torch.Tensor | None = None):
    """grad_s: (B, T, N) float32, or (B, N) with weights: (T,) float32; u, a: (B, T, N) float32 (a None unless
    adaptive), s8: (B, T, N) uint8, alpha, rho: (N,) float32 -> (dh (B, T, N) float32, dalpha (N,) or None,
    drho (N,) or None), the parameter gradients summed over batch in a fixed order."""
    B, T, N = u.shape
    dev = u.device
    dh = torch.empty(B, T, N, device=dev, dtype=torch.float32)
    if B * T * N == 0:  # nothing to launch (and lane_tile needs B, N >= 1)
        zeros = torch.zeros(N, device=dev, dtype=torch.float32)
        return dh, (zeros if need_dalpha else None), (zeros.clone() if need_drho else None)
    grid, block_b, block_n, num_warps = lane_tile(B, N)
    dalpha = torch.empty(grid[0], N, device=dev, dtype=torch.float32) if need_dalpha else None
    drho = torch.empty(grid[0], N, device=dev, dtype=torch.float32) if need_drho else None
    lif_bwd_kernel[grid](
        grad_s, weights, u, s8, a, alpha, rho if neuron.adaptive else None, dh, dalpha, drho,
        float(neuron.threshold), float(neuron.adapt), float(neuron.beta), B, T, N,
        BLOCK_B=block_b, BLOCK_N=block_n, SAME_STEP=bool(neuron.same_step), RESET=int(neuron.reset),
        ATAN=neuron.surrogate == 1, DETACH_RESET=bool(neuron.detach_reset), num_warps=num_warps, **BWD_OPTIONS,
    )
    return dh, (dalpha.sum(0) if need_dalpha else None), (drho.sum(0) if need_drho else None)

"""LIF layer with the seed's delayed spike and multiplicative reset: Triton kernels and launchers.

Equations and launcher contract: ``docs/kernel_contract.md`` (LIF). Each program owns a
BLOCK_B x BLOCK_N tile of (batch, neuron) lanes of contiguous (B, T, N) tensors and walks
time inside the kernel with the state in float32 registers (see ``_config.py``).
"""

import torch
import triton
import triton.language as tl

from ._config import BWD_OPTIONS, FWD_OPTIONS, lane_tile


@triton.heuristics({"SAVE": lambda args: args["u"] is not None, "SUM": lambda args: args["weights"] is not None})
@triton.jit(do_not_specialize=["T"])
def lif_fwd_kernel(
    h, alpha, weights, s, total, u, s8, threshold, B, T, N,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, SAVE: tl.constexpr, SUM: tl.constexpr,
):
    """h: (B, T, N), alpha: (N,) -> s: (B, T, N) dtype of h, or with SUM only
    total: (B, N) float32 = sum_t weights_t s_t for weights: (T,); with SAVE also the pre-reset
    membrane u: (B, T, N) float32 and s8: (B, T, N) uint8 (the spikes again, for the backward).

    Bytes per element: read h, write s (2 + 2 for 16-bit h, 4 + 4 for float32; no s with SUM),
    and with SAVE write u (4) and s8 (1): 13 in float32 with SAVE, 8 without, 4 less with SUM.
    """
    offs_b = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    mask = (offs_b[:, None] < B) & mask_n[None, :]
    offs = offs_b[:, None].to(tl.int64) * T * N + offs_n[None, :]  # element (b, t=0, n)
    b_alpha = tl.load(alpha + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    b_v = tl.zeros([BLOCK_B, BLOCK_N], dtype=tl.float32)  # v_t
    b_s = tl.zeros([BLOCK_B, BLOCK_N], dtype=tl.float32)  # s_t
    b_total = tl.zeros([BLOCK_B, BLOCK_N], dtype=tl.float32)  # sum of weights_t s_t; s_0 = 0 adds nothing
    if not SUM:
        tl.store(s + offs, b_s.to(s.dtype.element_ty), mask=mask)
    if SAVE:
        tl.store(u + offs, b_v, mask=mask)
        tl.store(s8 + offs, b_s.to(tl.uint8), mask=mask)
    for i in range(T - 1):
        b_u = b_alpha * b_v + tl.load(h + offs, mask=mask, other=0.0).to(tl.float32)
        b_s_next = tl.where(b_v != b_v, b_v, (b_v > threshold).to(tl.float32))  # NaN propagates
        b_v = b_u * (1.0 - b_s)
        b_s = b_s_next
        offs += N
        if SUM:
            b_total += tl.load(weights + i + 1).to(tl.float32) * b_s
        else:
            tl.store(s + offs, b_s.to(s.dtype.element_ty), mask=mask)
        if SAVE:
            tl.store(u + offs, b_u, mask=mask)
            tl.store(s8 + offs, b_s.to(tl.uint8), mask=mask)
    if SUM:
        tl.store(total + offs_b[:, None].to(tl.int64) * N + offs_n[None, :], b_total, mask=mask)


@triton.heuristics({"NEED_DALPHA": lambda args: args["dalpha"] is not None,
                    "SUM": lambda args: args["weights"] is not None})
@triton.jit(do_not_specialize=["T"])
def lif_bwd_kernel(
    grad_s, weights, u, s8, alpha, dh, dalpha, threshold, beta, B, T, N,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, DETACH_RESET: tl.constexpr, NEED_DALPHA: tl.constexpr,
    SUM: tl.constexpr,
):
    """grad_s, u: (B, T, N) float32, s8: (B, T, N) uint8, alpha: (N,) -> dh: (B, T, N) float32;
    with NEED_DALPHA, dalpha: (cdiv(B, BLOCK_B), N) float32, this tile's sum over its batch rows.
    With SUM, grad_s is (B, N), the gradient of sum_t weights_t s_t, and g_t = weights_t grad_s.

    Walks t = T-2 .. 0 carrying u_{t+1} and s_t from the previous step, so every element is
    loaded once. Bytes per element: read grad_s (4), u (4), s8 (1), write dh (4): 13.
    """
    offs_b = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    mask = (offs_b[:, None] < B) & mask_n[None, :]
    offs = (offs_b[:, None].to(tl.int64) * T + T - 1) * N + offs_n[None, :]  # element (b, T-1, n)
    b_alpha = tl.load(alpha + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    tl.store(dh + offs, tl.zeros([BLOCK_B, BLOCK_N], dtype=tl.float32), mask=mask)
    if SUM:
        b_grad = tl.load(grad_s + offs_b[:, None].to(tl.int64) * N + offs_n[None, :], mask=mask,
                         other=0.0).to(tl.float32)
        b_ds = tl.load(weights + T - 1).to(tl.float32) * b_grad  # dL/ds_{t+1}, total
    else:
        b_ds = tl.load(grad_s + offs, mask=mask, other=0.0).to(tl.float32)
    b_u_next = tl.load(u + offs, mask=mask, other=0.0)  # u_{t+1}
    b_s = tl.load(s8 + offs - N, mask=tl.where(T > 1, mask, False), other=0).to(tl.float32)  # s_t
    b_dv = tl.zeros([BLOCK_B, BLOCK_N], dtype=tl.float32)  # dL/dv_{t+1}
    b_da = tl.zeros([BLOCK_B, BLOCK_N], dtype=tl.float32)
    for i in range(T - 1):
        offs -= N  # now at t = T-2-i
        b_u = tl.load(u + offs, mask=mask, other=0.0)
        # s_{t-1}, none at t = 0 (tl.where, not &: the interpreter mis-types scalar & block masks)
        b_s_prev = tl.load(s8 + offs - N, mask=tl.where(i < T - 2, mask, False), other=0).to(tl.float32)
        b_v = b_u * (1.0 - b_s_prev)
        b_keep = 1.0 - b_s
        b_sig = tl.sigmoid(beta * (b_v - threshold))
        tl.store(dh + offs, b_dv * b_keep, mask=mask)
        if NEED_DALPHA:
            b_da += b_dv * b_v * b_keep
        if SUM:
            b_g = tl.load(weights + T - 2 - i).to(tl.float32) * b_grad
        else:
            b_g = tl.load(grad_s + offs, mask=mask, other=0.0).to(tl.float32)
        if not DETACH_RESET:
            b_g -= b_dv * b_u_next
        b_dv = b_dv * b_alpha * b_keep + b_ds * beta * b_sig * (1.0 - b_sig)
        b_ds = b_g
        b_u_next = b_u
        b_s = b_s_prev
    if NEED_DALPHA:
        tl.store(dalpha + tl.program_id(0).to(tl.int64) * N + offs_n, tl.sum(b_da, axis=0), mask=mask_n)


def lif_fwd(h: torch.Tensor, alpha: torch.Tensor, threshold: float, save: bool, weights: torch.Tensor | None = None):
    """h: (B, T, N) float32 | bfloat16 | float16, alpha: (N,) float32, weights: (T,) float32 or None
    -> (out, u, s8): out = s (B, T, N) dtype of h, or with weights sum_t weights_t s_t (B, N) float32;
    u (B, T, N) float32 and s8 (B, T, N) uint8, or None when not save."""
    B, T, N = h.shape
    s = torch.empty_like(h) if weights is None else None
    total = torch.empty(B, N, device=h.device, dtype=torch.float32) if weights is not None else None
    u = torch.empty(B, T, N, device=h.device, dtype=torch.float32) if save else None
    s8 = torch.empty(B, T, N, device=h.device, dtype=torch.uint8) if save else None
    if B * T * N == 0:
        return (s if weights is None else total.zero_()), u, s8
    grid, block_b, block_n, num_warps = lane_tile(B, N)
    lif_fwd_kernel[grid](
        h, alpha, weights, s, total, u, s8, float(threshold), B, T, N,
        BLOCK_B=block_b, BLOCK_N=block_n, num_warps=num_warps, **FWD_OPTIONS,
    )
    return (s if weights is None else total), u, s8


def lif_bwd(
    grad_s: torch.Tensor, u: torch.Tensor, s8: torch.Tensor, alpha: torch.Tensor,
    threshold: float, beta: float, detach_reset: bool, need_dalpha: bool, weights: torch.Tensor | None = None,
):
    """grad_s: (B, T, N) float32, or (B, N) with weights: (T,) float32; u: (B, T, N) float32,
    s8: (B, T, N) uint8, alpha: (N,) float32 -> (dh, dalpha): dh (B, T, N) float32;
    dalpha (N,) float32 (summed over batch in a fixed order) or None."""
    B, T, N = u.shape
    grid, block_b, block_n, num_warps = lane_tile(B, N)
    dh = torch.empty(B, T, N, device=u.device, dtype=torch.float32)
    dalpha = torch.empty(grid[0], N, device=u.device, dtype=torch.float32) if need_dalpha else None
    if B * T * N == 0:
        return dh, (torch.zeros(N, device=u.device) if need_dalpha else None)
    lif_bwd_kernel[grid](
        grad_s, weights, u, s8, alpha, dh, dalpha, float(threshold), float(beta), B, T, N,
        BLOCK_B=block_b, BLOCK_N=block_n, DETACH_RESET=detach_reset, num_warps=num_warps, **BWD_OPTIONS,
    )
    return dh, dalpha.sum(0) if need_dalpha else None

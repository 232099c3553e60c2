"""Leaky readout (leaky integrator, no spikes) and its time sum: Triton kernels and launchers.

Equations and launcher contract: ``docs/kernel_contract.md`` (Leaky readout). Each program owns
a BLOCK_B x BLOCK_C tile of (batch, channel) lanes of contiguous (B, T, C) tensors and walks time
inside the kernel with the state in float32 registers (see ``_config.py``).
"""

import torch
import triton
import triton.language as tl

from ._config import BWD_OPTIONS, FWD_OPTIONS, lane_tile


@triton.jit(do_not_specialize=["T"])
def leaky_readout_fwd_kernel(h, alpha, u, B, T, C, BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr):
    """h: (B, T, C), alpha: (C,) -> u: (B, T, C) dtype of h.

    Bytes per element: read h, write u: 8 in float32, 4 in 16-bit.
    """
    offs_b = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    mask = (offs_b[:, None] < B) & mask_c[None, :]
    offs = offs_b[:, None].to(tl.int64) * T * C + offs_c[None, :]  # element (b, t=0, c)
    b_alpha = tl.load(alpha + offs_c, mask=mask_c, other=0.0).to(tl.float32)[None, :]
    b_u = tl.zeros([BLOCK_B, BLOCK_C], dtype=tl.float32)
    tl.store(u + offs, b_u.to(u.dtype.element_ty), mask=mask)
    for _ in range(T - 1):
        b_u = b_alpha * b_u + tl.load(h + offs, mask=mask, other=0.0).to(tl.float32)
        offs += C
        tl.store(u + offs, b_u.to(u.dtype.element_ty), mask=mask)


@triton.heuristics({"NEED_DALPHA": lambda args: args["dalpha"] is not None})
@triton.jit(do_not_specialize=["T"])
def leaky_readout_bwd_kernel(
    grad_u, u, alpha, dh, dalpha, B, T, C,
    BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr, NEED_DALPHA: tl.constexpr,
):
    """grad_u: (B, T, C), u: (B, T, C) (read only with NEED_DALPHA), alpha: (C,) -> dh: (B, T, C)
    float32; with NEED_DALPHA, dalpha: (cdiv(B, BLOCK_B), C) float32, this tile's batch sum.

    Bytes per element: read grad_u, write dh (4), read u with NEED_DALPHA: 12 in float32.
    """
    offs_b = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    mask = (offs_b[:, None] < B) & mask_c[None, :]
    offs = (offs_b[:, None].to(tl.int64) * T + T - 1) * C + offs_c[None, :]  # element (b, T-1, c)
    b_alpha = tl.load(alpha + offs_c, mask=mask_c, other=0.0).to(tl.float32)[None, :]
    tl.store(dh + offs, tl.zeros([BLOCK_B, BLOCK_C], dtype=tl.float32), mask=mask)
    b_du = tl.load(grad_u + offs, mask=mask, other=0.0).to(tl.float32)  # dL/du_{t+1}, total
    b_da = tl.zeros([BLOCK_B, BLOCK_C], dtype=tl.float32)
    for _ in range(T - 1):
        offs -= C
        tl.store(dh + offs, b_du, mask=mask)
        if NEED_DALPHA:
            b_da += b_du * tl.load(u + offs, mask=mask, other=0.0).to(tl.float32)
        b_du = tl.load(grad_u + offs, mask=mask, other=0.0).to(tl.float32) + b_alpha * b_du
    if NEED_DALPHA:
        tl.store(dalpha + tl.program_id(0).to(tl.int64) * C + offs_c, tl.sum(b_da, axis=0), mask=mask_c)


@triton.jit(do_not_specialize=["T"])
def leaky_readout_sum_fwd_kernel(h, alpha, m, B, T, C, BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr):
    """h: (B, T, C), alpha: (C,) -> m = sum_t u_t: (B, C) float32, the membrane never stored.

    Bytes per element of h: read h once (4 in float32, 2 in 16-bit).
    """
    offs_b = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    mask = (offs_b[:, None] < B) & mask_c[None, :]
    offs = offs_b[:, None].to(tl.int64) * T * C + offs_c[None, :]
    b_alpha = tl.load(alpha + offs_c, mask=mask_c, other=0.0).to(tl.float32)[None, :]
    b_u = tl.zeros([BLOCK_B, BLOCK_C], dtype=tl.float32)
    b_m = tl.zeros([BLOCK_B, BLOCK_C], dtype=tl.float32)
    for _ in range(T - 1):
        b_u = b_alpha * b_u + tl.load(h + offs, mask=mask, other=0.0).to(tl.float32)
        b_m += b_u
        offs += C
    tl.store(m + offs_b[:, None].to(tl.int64) * C + offs_c[None, :], b_m, mask=mask)


@triton.heuristics({"NEED_DALPHA": lambda args: args["dalpha"] is not None})
@triton.jit(do_not_specialize=["T"])
def leaky_readout_sum_bwd_kernel(
    grad_m, h, alpha, dh, dalpha, B, T, C,
    BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr, NEED_DALPHA: tl.constexpr,
):
    """grad_m: (B, C), h: (B, T, C) (read only with NEED_DALPHA), alpha: (C,) -> dh = grad_m c_t:
    (B, T, C) float32; with NEED_DALPHA, dalpha: (cdiv(B, BLOCK_B), C) float32, this tile's batch sum.

    c_t and e_t = dc_t/dalpha depend on the channel only and run backward from c_{T-1} = e_{T-1} = 0.
    Bytes per element: write dh (4), read h with NEED_DALPHA: 8 in float32.
    """
    offs_b = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    mask = (offs_b[:, None] < B) & mask_c[None, :]
    offs_m = offs_b[:, None].to(tl.int64) * C + offs_c[None, :]  # element (b, c) of grad_m
    b_gm = tl.load(grad_m + offs_m, mask=mask, other=0.0).to(tl.float32)
    offs = (offs_b[:, None].to(tl.int64) * T + T - 1) * C + offs_c[None, :]  # element (b, T-1, c)
    b_alpha = tl.load(alpha + offs_c, mask=mask_c, other=0.0).to(tl.float32)
    b_c = tl.zeros([BLOCK_C], dtype=tl.float32)
    b_e = tl.zeros([BLOCK_C], dtype=tl.float32)
    b_acc = tl.zeros([BLOCK_B, BLOCK_C], dtype=tl.float32)  # sum_t h_t e_t
    tl.store(dh + offs, tl.zeros([BLOCK_B, BLOCK_C], dtype=tl.float32), mask=mask)
    for _ in range(T - 1):
        offs -= C
        b_e = b_c + b_alpha * b_e
        b_c = 1.0 + b_alpha * b_c
        tl.store(dh + offs, b_gm * b_c[None, :], mask=mask)
        if NEED_DALPHA:
            b_acc += tl.load(h + offs, mask=mask, other=0.0).to(tl.float32) * b_e[None, :]
    if NEED_DALPHA:
        b_da = tl.sum(b_gm * b_acc, axis=0)
        tl.store(dalpha + tl.program_id(0).to(tl.int64) * C + offs_c, b_da, mask=mask_c)


def leaky_readout_fwd(h: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """h: (B, T, C) float32 | bfloat16 | float16, alpha: (C,) float32 -> u: (B, T, C) dtype of h."""
    B, T, C = h.shape
    u = torch.empty_like(h)
    if B * T * C == 0:  # nothing to launch (and lane_tile needs B, C >= 1)
        return u
    grid, block_b, block_c, num_warps = lane_tile(B, C)
    leaky_readout_fwd_kernel[grid](
        h, alpha, u, B, T, C, BLOCK_B=block_b, BLOCK_C=block_c, num_warps=num_warps, **FWD_OPTIONS,
    )
    return u


def leaky_readout_bwd(grad_u: torch.Tensor, u: torch.Tensor | None, alpha: torch.Tensor, need_dalpha: bool):
    """grad_u: (B, T, C), u: (B, T, C) or None when not need_dalpha, alpha: (C,) float32 ->
    (dh, dalpha): dh (B, T, C) float32; dalpha (C,) float32 (summed over batch in a fixed order) or None."""
    B, T, C = grad_u.shape
    dh = torch.empty(B, T, C, device=grad_u.device, dtype=torch.float32)
    if B * T * C == 0:
        return dh, (torch.zeros(C, device=grad_u.device) if need_dalpha else None)
    grid, block_b, block_c, num_warps = lane_tile(B, C)
    dalpha = torch.empty(grid[0], C, device=grad_u.device, dtype=torch.float32) if need_dalpha else None
    leaky_readout_bwd_kernel[grid](
        grad_u, u, alpha, dh, dalpha, B, T, C,
        BLOCK_B=block_b, BLOCK_C=block_c, num_warps=num_warps, **BWD_OPTIONS,
    )
    return dh, dalpha.sum(0) if need_dalpha else None


def leaky_readout_sum_fwd(h: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """h: (B, T, C) float32 | bfloat16 | float16, alpha: (C,) float32 -> m = sum_t u_t: (B, C) float32."""
    B, T, C = h.shape
    m = torch.empty(B, C, device=h.device, dtype=torch.float32)
    if B * T * C == 0:
        return m.zero_()
    grid, block_b, block_c, num_warps = lane_tile(B, C)
    leaky_readout_sum_fwd_kernel[grid](
        h, alpha, m, B, T, C, BLOCK_B=block_b, BLOCK_C=block_c, num_warps=num_warps, **FWD_OPTIONS,
    )
    return m


def leaky_readout_sum_bwd(
    grad_m: torch.Tensor, h: torch.Tensor | None, alpha: torch.Tensor, T: int, need_dalpha: bool,
):
    """grad_m: (B, C) float32, h: (B, T, C) or None when not need_dalpha, alpha: (C,) float32 ->
    (dh, dalpha): dh (B, T, C) float32; dalpha (C,) float32 (summed over batch in a fixed order) or None."""
    B, C = grad_m.shape
    dh = torch.empty(B, T, C, device=grad_m.device, dtype=torch.float32)
    if B * T * C == 0:
        return dh.zero_(), (torch.zeros(C, device=grad_m.device) if need_dalpha else None)
    grid, block_b, block_c, num_warps = lane_tile(B, C)
    dalpha = torch.empty(grid[0], C, device=grad_m.device, dtype=torch.float32) if need_dalpha else None
    leaky_readout_sum_bwd_kernel[grid](
        grad_m, h, alpha, dh, dalpha, B, T, C,
        BLOCK_B=block_b, BLOCK_C=block_c, num_warps=num_warps, **BWD_OPTIONS,
    )
    return dh, dalpha.sum(0) if need_dalpha else None

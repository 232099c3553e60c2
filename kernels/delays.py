"""Delayed projection (learnable synaptic delays): Triton kernels and launchers.

``h[b, t, j] = sum_k sum_i x[b, t - k, i] wk[i, k, j]``: for each tap k, the input shifted by k steps
times the tap's (I, O) slice of the kernel ``wk`` (I, K, O). Each kernel below is a tiled GEMM with
``tl.dot`` in float32 (IEEE, not TF32: the backends are compared with the reference to 1e-5); a
program owns one output tile and accumulates over taps and input blocks in registers, so no two
programs write the same element and nothing is atomic. Equations: ``docs/semantics.md``
(Learnable delays); the oracle is ``fastsnn/ops/delays/reference.py``.
"""

import torch
import triton
import triton.language as tl

from ._config import BWD_OPTIONS, dot_block


@triton.jit(do_not_specialize=["T"])
def delays_fwd_kernel(x, wk, h, T, I, O, K, BLOCK_T: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_O: tl.constexpr):
    """x: (B, T, I), wk: (I, K, O) float32 -> h: (B, T, O) float32; grid (B * cdiv(T, BLOCK_T), cdiv(O, BLOCK_O)).

    Bytes: x is read once per tap and output block, wk once per time block; h written once.
    """
    n_t = tl.cdiv(T, BLOCK_T)
    b = tl.program_id(0) // n_t
    t0 = (tl.program_id(0) % n_t) * BLOCK_T
    offs_t = t0 + tl.arange(0, BLOCK_T)
    offs_o = tl.program_id(1) * BLOCK_O + tl.arange(0, BLOCK_O)
    mask_o = offs_o < O
    p_x = x + b.to(tl.int64) * T * I
    acc = tl.zeros([BLOCK_T, BLOCK_O], dtype=tl.float32)
    for k in range(0, tl.minimum(K, t0 + BLOCK_T)):  # taps that reach back to t >= 0 for some row of the tile
        src = offs_t - k
        mask_t = (src >= 0) & (offs_t < T)
        for i0 in range(0, I, BLOCK_I):
            offs_i = i0 + tl.arange(0, BLOCK_I)
            mask_i = offs_i < I
            b_x = tl.load(p_x + src[:, None] * I + offs_i[None, :],
                          mask=mask_t[:, None] & mask_i[None, :], other=0.0).to(tl.float32)
            b_w = tl.load(wk + (offs_i[:, None] * K + k) * O + offs_o[None, :],
                          mask=mask_i[:, None] & mask_o[None, :], other=0.0)
            acc += tl.dot(b_x, b_w, input_precision="ieee")
    tl.store(h + (b.to(tl.int64) * T + offs_t[:, None]) * O + offs_o[None, :], acc,
             mask=(offs_t < T)[:, None] & mask_o[None, :])


@triton.jit(do_not_specialize=["T"])
def delays_bwd_dx_kernel(grad, wk, dx, T, I, O, K, BLOCK_T: tl.constexpr, BLOCK_I: tl.constexpr,
                         BLOCK_O: tl.constexpr):
    """grad: (B, T, O) float32, wk: (I, K, O) float32 -> dx: (B, T, I) float32,
    ``dx[b, t, i] = sum_k sum_j grad[b, t + k, j] wk[i, k, j]``; grid (B * cdiv(T, BLOCK_T), cdiv(I, BLOCK_I))."""
    n_t = tl.cdiv(T, BLOCK_T)
    b = tl.program_id(0) // n_t
    t0 = (tl.program_id(0) % n_t) * BLOCK_T
    offs_t = t0 + tl.arange(0, BLOCK_T)
    offs_i = tl.program_id(1) * BLOCK_I + tl.arange(0, BLOCK_I)
    mask_i = offs_i < I
    p_g = grad + b.to(tl.int64) * T * O
    p_w = wk + offs_i[None, :] * K * O  # (1, BLOCK_I): each input's first tap
    acc = tl.zeros([BLOCK_T, BLOCK_I], dtype=tl.float32)
    for k in range(0, tl.minimum(K, T - t0)):  # taps whose t + k < T for some row of the tile
        dst = offs_t + k
        mask_t = dst < T
        for o0 in range(0, O, BLOCK_O):
            offs_o = o0 + tl.arange(0, BLOCK_O)
            mask_o = offs_o < O
            b_g = tl.load(p_g + dst[:, None] * O + offs_o[None, :],
                          mask=mask_t[:, None] & mask_o[None, :], other=0.0)
            b_w = tl.load(p_w + k * O + offs_o[:, None],
                          mask=mask_o[:, None] & mask_i[None, :], other=0.0)
            acc += tl.dot(b_g, b_w, input_precision="ieee")
    tl.store(dx + (b.to(tl.int64) * T + offs_t[:, None]) * I + offs_i[None, :], acc,
             mask=(offs_t < T)[:, None] & mask_i[None, :])


@triton.jit(do_not_specialize=["T"])
def delays_bwd_dwk_kernel(x, grad, dwk, B, T, I, O, K, BLOCK_T: tl.constexpr, BLOCK_I: tl.constexpr,
                          BLOCK_O: tl.constexpr):
    """x: (B, T, I), grad: (B, T, O) float32 -> dwk: (I, K, O) float32,
    ``dwk[i, k, j] = sum_b sum_t x[b, t, i] grad[b, t + k, j]``; grid (K * cdiv(I, BLOCK_I), cdiv(O, BLOCK_O)),
    each program summing over all (b, t) in a fixed order."""
    n_i = tl.cdiv(I, BLOCK_I)
    k = tl.program_id(0) // n_i
    offs_i = (tl.program_id(0) % n_i) * BLOCK_I + tl.arange(0, BLOCK_I)
    offs_o = tl.program_id(1) * BLOCK_O + tl.arange(0, BLOCK_O)
    mask_i = offs_i < I
    mask_o = offs_o < O
    acc = tl.zeros([BLOCK_I, BLOCK_O], dtype=tl.float32)
    p_x = x  # batch row b's start, advanced row by row (pointer arithmetic is 64-bit)
    p_g = grad
    for _ in range(0, B):
        for t0 in range(0, T - k, BLOCK_T):
            offs_t = t0 + tl.arange(0, BLOCK_T)
            mask_t = offs_t + k < T
            b_x = tl.load(p_x + offs_i[:, None] + offs_t[None, :] * I,
                          mask=mask_i[:, None] & mask_t[None, :], other=0.0).to(tl.float32)
            b_g = tl.load(p_g + (offs_t[:, None] + k) * O + offs_o[None, :],
                          mask=mask_t[:, None] & mask_o[None, :], other=0.0)
            acc += tl.dot(b_x, b_g, input_precision="ieee")
        p_x += T * I
        p_g += T * O
    tl.store(dwk + (offs_i[:, None].to(tl.int64) * K + k) * O + offs_o[None, :], acc,
             mask=mask_i[:, None] & mask_o[None, :])


# Contraction on (docs/kernel_contract.md): these kernels are sums of products (tl.dot, itself fused
# multiply-adds), compared with the reference within a tolerance, with no threshold downstream in
# the kernel; the same options as the time loops' backward kernels. One stage: Triton's software
# pipelining of the loads (num_stages 2 or 3) made ptxas spill 8-32 bytes on sm_80 at 72-128 registers.
DOT_OPTIONS = {**BWD_OPTIONS, "num_stages": 1}
# Output tiles of at most 32 x 32 and a reduction of 16 per tl.dot, 4 warps. The IEEE float32 tl.dot
# runs on FMAs, each thread holding a whole reduction slice of both operands for its outputs, so
# registers grow with the reduction: 32 spilled on sm_80, as did 64-wide output tiles with 4 warps and
# with 8 (tests/gpu_compile.py, tests/test_gpu_compile.py). Offsets inside a batch row and inside wk are
# 32-bit (the launchers check the sizes), which saves a register per address.
BLOCK_CAP = 32
REDUCE = 16


def _blocks(T: int, I: int, O: int, K: int) -> tuple[int, int, int]:
    """(BLOCK_T, BLOCK_I, BLOCK_O); checks that a batch row of x (T I) and of h (T O) and the kernel
    wk (I K O) are addressable with 32-bit offsets."""
    if max(T * I, T * O, I * K * O) >= 2**31:
        raise ValueError(f"the Triton delay kernels need T x inputs, T x outputs and inputs x taps x outputs "
                         f"below 2**31, got T={T}, inputs={I}, outputs={O}, taps={K}")
    return dot_block(T, BLOCK_CAP), dot_block(I, BLOCK_CAP), dot_block(O, BLOCK_CAP)


def _check_dtype(x: torch.Tensor) -> None:
    if x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise TypeError(f"the Triton delay kernels take float32, bfloat16 or float16 inputs, got {x.dtype}; "
                        "use backend 'cpu' or 'reference' for float64")


def delays_fwd(x: torch.Tensor, wk: torch.Tensor) -> torch.Tensor:
    """x: (B, T, I) float32 | bfloat16 | float16, wk: (I, K, O) float32 -> h: (B, T, O) float32."""
    _check_dtype(x)
    B, T, I = x.shape
    _, K, O = wk.shape
    block_t, _, block_o = _blocks(T, I, O, K)  # the reduction runs over I
    if B * T * I * O == 0:
        return torch.zeros(B, T, O, device=x.device, dtype=torch.float32)
    h = torch.empty(B, T, O, device=x.device, dtype=torch.float32)
    grid = (B * triton.cdiv(T, block_t), triton.cdiv(O, block_o))
    delays_fwd_kernel[grid](x.contiguous(), wk.float().contiguous(), h, T, I, O, K,
                            BLOCK_T=block_t, BLOCK_I=REDUCE, BLOCK_O=block_o, **DOT_OPTIONS)
    return h


def delays_bwd(grad: torch.Tensor, x: torch.Tensor, wk: torch.Tensor, need_dx: bool, need_dwk: bool):
    """grad: (B, T, O) float32, x: (B, T, I) float32 | bfloat16 | float16, wk: (I, K, O) float32 ->
    (dx (B, T, I) float32 or None, dwk (I, K, O) float32 or None)."""
    _check_dtype(x)
    B, T, O = grad.shape
    I, K, _ = wk.shape
    grad, wk = grad.float().contiguous(), wk.float().contiguous()
    empty = B * T * I * O == 0
    block_t, block_i, block_o = _blocks(T, I, O, K) if not empty and (need_dx or need_dwk) else (0, 0, 0)
    dx = dwk = None
    if need_dx:
        dx = torch.zeros(B, T, I, device=grad.device, dtype=torch.float32) if empty else \
            torch.empty(B, T, I, device=grad.device, dtype=torch.float32)
        if not empty:  # the reduction runs over O
            grid = (B * triton.cdiv(T, block_t), triton.cdiv(I, block_i))
            delays_bwd_dx_kernel[grid](grad, wk, dx, T, I, O, K, BLOCK_T=block_t, BLOCK_I=block_i, BLOCK_O=REDUCE,
                                       **DOT_OPTIONS)
    if need_dwk:
        dwk = torch.zeros(I, K, O, device=grad.device, dtype=torch.float32) if empty else \
            torch.empty(I, K, O, device=grad.device, dtype=torch.float32)
        if not empty:  # the reduction runs over T
            grid = (K * triton.cdiv(I, block_i), triton.cdiv(O, block_o))
            delays_bwd_dwk_kernel[grid](x.contiguous(), grad, dwk, B, T, I, O, K,
                                        BLOCK_T=REDUCE, BLOCK_I=block_i, BLOCK_O=block_o, **DOT_OPTIONS)
    return dx, dwk

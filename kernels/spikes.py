"""Spike projections (``fastsnn.spike_matmul``) from bits: Triton kernels and launchers.

Bits as in ``fastsnn/ops/spikes``: ``bits[g, k]`` bit j is ``x[8g + j, k]`` (uint8, ceil(M/8) x K).
The kernels work on bit tiles: a program unpacks a tile of spikes from the bits in registers,
skips the tile when it holds none, and loads only the rows of w (forward) or dh (weight
gradient) that a spike in the tile selects; masked-off rows cost no memory traffic, so the
bytes read scale with the spikes. The adds run as one ``tl.dot`` of the 0/1 tile (exact in
any precision) with the loaded rows, in IEEE float32 (no TF32) or float64.
"""

import torch
import triton
import triton.language as tl

BLOCK = 32  # rows and inputs per tile; tl.dot needs at least 16
# Every launch passes enable_fp_fusion=False: the products are 0/1 times w, exact either way, but the
# choice is explicit (Triton's default changes in 3.10; docs/kernel_contract.md).


@triton.jit
def pack_count_kernel(x, bits, count, M, K, BLOCK_G: tl.constexpr, BLOCK_K: tl.constexpr):
    """x: (M, K) -> bits: (ceil(M/8), K) uint8; count: (1,) int64 += this tile's nonzero entries.

    Bytes per element of x: read its size, write 1/8.
    """
    offs_g = tl.program_id(0) * BLOCK_G + tl.arange(0, BLOCK_G)
    offs_k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    mask_k = offs_k < K
    packed = tl.zeros([BLOCK_G, BLOCK_K], dtype=tl.int32)
    fired = tl.zeros([BLOCK_G, BLOCK_K], dtype=tl.int32)
    for j in tl.static_range(8):
        rows = offs_g * 8 + j
        v = tl.load(x + rows[:, None].to(tl.int64) * K + offs_k[None, :],
                    mask=(rows < M)[:, None] & mask_k[None, :], other=0.0)
        bit = (v != 0).to(tl.int32)
        packed |= bit << j
        fired += bit
    mask = (offs_g < tl.cdiv(M, 8))[:, None] & mask_k[None, :]
    tl.store(bits + offs_g[:, None].to(tl.int64) * K + offs_k[None, :], packed.to(tl.uint8), mask=mask)
    tl.atomic_add(count, tl.sum(tl.sum(fired, axis=1), axis=0).to(tl.int64))


@triton.jit
def _spike_tile(bits, offs_m, mask_m, offs_k, mask_k, K):
    """The (rows, inputs) tile of 0/1 spikes, as int32, unpacked from the bits."""
    byte = tl.load(bits + (offs_m // 8)[:, None].to(tl.int64) * K + offs_k[None, :],
                   mask=mask_m[:, None] & mask_k[None, :], other=0)
    return (byte.to(tl.int32) >> (offs_m % 8)[:, None]) & 1


@triton.jit
def event_fwd_kernel(bits, w, h, M, K, N, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr):
    """bits of x (M, K), w: (K, N) -> h: (M, N) = x @ w, dtype of w.

    Program: BLOCK_M rows x BLOCK_N columns, inputs in tiles of BLOCK_K. Bytes: the bits (1/8 per
    element of x, once per column tile), the rows of w with a spike in the tile, h once.
    """
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m, mask_n = offs_m < M, offs_n < N
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=w.dtype.element_ty)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        fired = _spike_tile(bits, offs_m, mask_m, offs_k, offs_k < K, K)
        if tl.max(tl.max(fired, axis=1), axis=0) > 0:
            used = tl.max(fired, axis=0) > 0  # inputs that fired in these rows: the rows of w to load
            wt = tl.load(w + offs_k[:, None].to(tl.int64) * N + offs_n[None, :], mask=used[:, None] & mask_n[None, :],
                         other=0.0)
            acc += tl.dot(fired.to(wt.dtype), wt, input_precision="ieee")
    tl.store(h + offs_m[:, None].to(tl.int64) * N + offs_n[None, :], acc, mask=mask_m[:, None] & mask_n[None, :])


@triton.jit
def event_wgrad_kernel(bits, dh, dw, M, K, N, ROWS, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
                       BLOCK_N: tl.constexpr):
    """bits of x (M, K), dh: (M, N) -> dw: (splits, K, N), the program's split of rows of x^T dh.

    Program: BLOCK_K inputs x BLOCK_N columns over ROWS rows (split ``program_id(2)``), in tiles of
    BLOCK_M. Bytes: the bits (1/8 per element of x, once per column tile), the rows of dh with a
    spike in the tile, dw once.
    """
    offs_k = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    split = tl.program_id(2)
    mask_k, mask_n = offs_k < K, offs_n < N
    end = tl.minimum(M, (split + 1) * ROWS)
    acc = tl.zeros([BLOCK_K, BLOCK_N], dtype=dh.dtype.element_ty)
    for m0 in range(split * ROWS, end, BLOCK_M):
        offs_m = m0 + tl.arange(0, BLOCK_M)
        mask_m = offs_m < end
        fired = _spike_tile(bits, offs_m, mask_m, offs_k, mask_k, K)
        if tl.max(tl.max(fired, axis=1), axis=0) > 0:
            used = tl.max(fired, axis=1) > 0  # rows that fired at these inputs: the rows of dh to load
            d = tl.load(dh + offs_m[:, None].to(tl.int64) * N + offs_n[None, :], mask=used[:, None] & mask_n[None, :],
                        other=0.0)
            acc += tl.dot(tl.trans(fired.to(d.dtype)), d, input_precision="ieee")
    out = dw + split.to(tl.int64) * K * N
    tl.store(out + offs_k[:, None].to(tl.int64) * N + offs_n[None, :], acc, mask=mask_k[:, None] & mask_n[None, :])


def _block_n(n: int) -> int:
    return max(16, min(64, triton.next_power_of_2(n)))


def pack_count(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (M, K) -> (bits (ceil(M/8), K) uint8, its nonzero entries as a () int64 tensor on x's device)."""
    x = x.contiguous()
    m, k = x.shape
    groups = -(-m // 8)
    bits = torch.empty(groups, k, dtype=torch.uint8, device=x.device)
    count = torch.zeros(1, dtype=torch.int64, device=x.device)
    if m and k:
        grid = (triton.cdiv(groups, 4), triton.cdiv(k, 64))
        pack_count_kernel[grid](x, bits, count, m, k, BLOCK_G=4, BLOCK_K=64, enable_fp_fusion=False)
    return bits, count[0]


def event_matmul(bits: torch.Tensor, w: torch.Tensor, m: int) -> torch.Tensor:
    """x @ w from the bits of x (M, K); w (K, N) float32/64 -> (M, N) of w's dtype."""
    w = w.contiguous()
    k, n = w.shape
    h = torch.empty(m, n, dtype=w.dtype, device=w.device)
    if m and n:
        block_n = _block_n(n)
        grid = (triton.cdiv(m, BLOCK), triton.cdiv(n, block_n))
        event_fwd_kernel[grid](bits, w, h, m, k, n, BLOCK_M=BLOCK, BLOCK_K=BLOCK, BLOCK_N=block_n,
                               enable_fp_fusion=False)
    return h


def event_weight_grad(bits: torch.Tensor, dh: torch.Tensor, programs: int = 1024) -> torch.Tensor:
    """x^T dh from the bits of x (M, K); dh (M, N) float32/64 -> (K, N) of dh's dtype.

    Rows are split so that about ``programs`` programs run (a GPU needs several per SM); the splits'
    partial sums are added after.
    """
    dh = dh.contiguous()
    m, n = dh.shape
    k = bits.shape[1]
    if not (m and k and n):
        return torch.zeros(k, n, dtype=dh.dtype, device=dh.device)
    block_n = _block_n(n)
    tiles = triton.cdiv(k, BLOCK) * triton.cdiv(n, block_n)
    splits = max(1, min(triton.cdiv(m, BLOCK), programs // tiles))
    rows = triton.cdiv(triton.cdiv(m, splits), BLOCK) * BLOCK
    splits = max(1, triton.cdiv(m, rows))
    dw = torch.zeros(splits, k, n, dtype=dh.dtype, device=dh.device)
    grid = (triton.cdiv(k, BLOCK), triton.cdiv(n, block_n), splits)
    # 8 warps for the widest tile: with 4, sm_80 spilled (80 registers; tests/gpu-compile.md)
    event_wgrad_kernel[grid](bits, dh, dw, m, k, n, rows, BLOCK_M=BLOCK, BLOCK_K=BLOCK, BLOCK_N=block_n,
                             num_warps=8 if block_n == 64 else 4, enable_fp_fusion=False)
    return dw[0] if splits == 1 else dw.sum(0)

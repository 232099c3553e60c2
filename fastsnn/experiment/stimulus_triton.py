"""The stimulus' Triton kernel: a batch's Poisson spikes written as bits, in one pass from the angles.

What :func:`fastsnn.experiment.stimulus_cpu.stimulus_bits` computes on the CPU, for CUDA tensors (and
CPU tensors under ``TRITON_INTERPRET=1``): each program takes a tile of groups of 8 rows x fibres and, per
row, the fibres' angles ``phase_t + delay_i`` (``+ ipd_s`` for the right ear), the probability
``scale * (0.5 (1 + sin theta)) ** power`` (power 1, 2 or 3, by multiplication as torch does), the
hashed noise u24 and the spike ``u24 < p * 2^24``, then stores the tile's bytes. Every float32
operation is torch's, in torch's order, without fused multiply-adds. The sine is ``tl.sin``: on CUDA
libdevice's ``__nv_sinf``, the function torch's CUDA ``sin`` calls, so the bits equal the torch path on
the same GPU (``bench/gpu_check.py`` checks it); under the interpreter it is numpy's, which the tests
give the torch path too.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_G, BLOCK_K = 4, 64  # groups of 8 rows x fibres per program: 32 x 64 values a step of j


@triton.jit(do_not_specialize=["M", "T"])
def stimulus_bits_kernel(keys, ipd, table, phase, delays, scale, bits, M, T, K, A, POWER: tl.constexpr,
                         BLOCK_G: tl.constexpr, BLOCK_K: tl.constexpr):
    """keys (n,) int32, ipd (n,) float32, table (T, K) int32, phase (T,) float32, delays (2 A = K,) float32
    (ear 0's, then ear 1's), scale (1,) float32 -> bits (ceil(M / 8), K) uint8 of the (M = n T, K) spikes.
    Bytes per spike: 1/8 written, the table's 4 read from cache."""
    offs_g = tl.program_id(0) * BLOCK_G + tl.arange(0, BLOCK_G)
    offs_k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    mask_k = offs_k < K
    right = (offs_k >= A)[None, :]
    delay = tl.load(delays + offs_k, mask=mask_k, other=0.0)
    p_scale = tl.load(scale)
    packed = tl.zeros([BLOCK_G, BLOCK_K], dtype=tl.int32)
    for j in tl.static_range(8):
        rows = offs_g * 8 + j
        valid = rows < M
        s = rows // T
        t = rows - s * T
        angle = tl.load(phase + t, mask=valid, other=0.0)[:, None] + delay[None, :]
        angle = tl.where(right, angle + tl.load(ipd + s, mask=valid, other=0.0)[:, None], angle)
        b = (1.0 + tl.sin(angle)) * 0.5
        if POWER == 2:
            b = b * b
        elif POWER == 3:
            b = b * b * b
        p = p_scale * b
        cell = tl.load(table + t[:, None] * K + offs_k[None, :], mask=valid[:, None] & mask_k[None, :], other=0)
        x = (tl.load(keys + s, mask=valid, other=0)[:, None] ^ cell).to(tl.uint32, bitcast=True)
        x = (x ^ (x >> 16)) * 0x85EBCA6B
        x = (x ^ (x >> 13)) * 0xC2B2AE35
        fire = ((x >> 8).to(tl.float32) < p * 16777216.0) & valid[:, None]
        packed = packed | (fire.to(tl.int32) << j)
    groups = tl.cdiv(M, 8)
    tl.store(bits + offs_g[:, None].to(tl.int64) * K + offs_k[None, :], packed.to(tl.uint8),
             mask=(offs_g < groups)[:, None] & mask_k[None, :])


def stimulus_bits(keys: torch.Tensor, ipd: torch.Tensor, table: torch.Tensor, phase: torch.Tensor,
                  delays: torch.Tensor, scale: float, power: int) -> torch.Tensor:
    """keys (n,) int32, ipd (n,) float32, table (T, I) int32, phase (T,) float32, delays (2, A) float32,
    scale (rounded to float32), power 1, 2 or 3 -> bits (ceil(n T / 8), I) uint8, on their device."""
    T, k = table.shape
    m = len(keys) * T
    bits = torch.empty(-(-m // 8), k, dtype=torch.uint8, device=table.device)
    if m and k:
        grid = (triton.cdiv(bits.shape[0], BLOCK_G), triton.cdiv(k, BLOCK_K))
        stimulus_bits_kernel[grid](keys.contiguous(), ipd.contiguous(), table.contiguous(), phase.contiguous(),
                                   delays.contiguous().view(-1),
                                   torch.tensor([scale], dtype=torch.float32, device=table.device), bits, m, T, k,
                                   k // 2, POWER=power, BLOCK_G=BLOCK_G, BLOCK_K=BLOCK_K, enable_fp_fusion=False)
    return bits

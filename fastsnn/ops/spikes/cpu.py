"""Spike projections on the CPU (numba): bit packing, and ``x @ w`` and ``x^T dh`` by events.

Bits: eight consecutive rows share a byte per column (``bits[g, k]`` bit j is ``x[8g + j, k]``),
so packing runs along contiguous columns and vectorises, rows of a group are taken in parallel.

Events: a projection of 0/1 spikes adds rows instead of multiplying. The forward walks each
row's spikes, ``h[r] = sum_{i: x[r,i]=1} w[i]``; the weight gradient walks each input's,
``dw[i] = sum_{r: x[r,i]=1} dh[r]``, each thread owning a block of inputs (no write conflicts).
Both build lists of spike indices from the bits (per 64 bits a byte-plane mask, then a vector
compress: no branch per spike, :mod:`.simd`) and add the listed rows in vector registers
(:func:`.simd.gather_rows`): the work is spikes x width, not rows x inputs x width.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from numba import njit, prange

from fastsnn.cpu import buffers, cpu_kernel, sync_threads
from fastsnn.cpu.bits import popcount

from .simd import VECTOR_BYTES, append_bits, bit_plane64, gather_rows

MAX_NVEC = 8  # vector registers per partial sum: 128 float32 columns per pass; 16 spilled (measured 6x slower)


@cpu_kernel
def pack_kernel(x, bits, counts):
    """x: (M, K) float -> bits: (ceil(M/8), K) uint8, bit j of bits[g, k] = x[8g + j, k] != 0;
    counts: (ceil(M/8), 2) int64, per group of 8 rows [nonzero entries, columns holding an entry
    that is neither 0 nor 1 (NaN included)].

    Bytes per element of x: read 4 (float32) or 8, write 1/8. The counts come from the packed bytes
    (a vector popcount), not from a sum per element, which measured +70% at seed size.
    """
    m, k = x.shape
    for g in prange(bits.shape[0]):
        row = bits[g]
        row[:] = 0
        other = np.zeros(k, np.uint8)
        for j in range(min(8, m - 8 * g)):
            xr = x[8 * g + j]
            for i in range(k):
                v = xr[i]
                row[i] |= np.uint8(v != 0) << np.uint8(j)
                other[i] |= np.uint8(v != 0) & np.uint8(v != 1)
        counts[g, 0] = popcount(row)
        counts[g, 1] = popcount(other)


@cpu_kernel
def unpack_kernel(bits, x):
    """bits: (ceil(M/8), K) uint8 -> x: (M, K) 0/1."""
    m, k = x.shape
    for g in prange(bits.shape[0]):
        row = bits[g]
        for j in range(min(8, m - 8 * g)):
            xr = x[8 * g + j]
            for i in range(k):
                xr[i] = (row[i] >> np.uint8(j)) & np.uint8(1)


@njit(inline="always")
def load_plane(bits, g, plane):
    """Copy bits[g] into the start of plane (a loop: numba's slice assignment copies byte by byte)."""
    for i in range(bits.shape[1]):
        plane[i] = bits[g, i]


def _index(bound: int) -> np.ndarray:
    """An empty array of the dtype for spike lists of indices below ``bound``: uint16 where it fits."""
    return np.empty(0, np.uint16 if bound <= 1 << 16 else np.int32)


def _nvec(n: int, dtype: torch.dtype) -> int:
    """Vector registers per partial sum for an output width n: all of n up to MAX_NVEC."""
    lanes = VECTOR_BYTES // torch.empty((), dtype=dtype).element_size()
    return max(1, min(MAX_NVEC, -(-n // lanes)))


@functools.cache
def event_fwd_kernel(nvec: int):
    """The event-driven forward for ``nvec`` registers per partial sum (compiled on first use, cached on disk)."""
    @cpu_kernel
    def kernel(bits, counts, w, block, kwords, index, h):
        """bits: (G, K) uint8 packed from x (M, K), G = ceil(M/8); counts: (G,) int64 spikes per group;
        w: (K, N) -> h: (M, N) = x @ w. ``index``: an empty array of the lists' dtype (uint16 or int32).

        One lane = ``block`` groups of 8 rows: first every row's list of spiking inputs (ascending),
        then per tile of w (64 * ``kwords`` inputs x nvec * L columns) every row's sum of its listed
        rows of the tile, so that the tile is reused by the lane's rows while it is in cache.
        Work: spikes x N adds; bytes: the bits (1/8 per element of x), per spike 2 (uint16) for its
        index and 4 (float32) per column of w from cache; h once per tile of inputs.
        """
        groups, k = bits.shape
        m, n = h.shape
        words = (k + 63) // 64
        tiles = -(-words // kwords)
        chunk = nvec * (64 // h.itemsize)
        for lane in prange(-(-groups // block)):
            g0 = lane * block
            r0, r1 = 8 * g0, min(m, 8 * (g0 + block))
            plane = np.zeros(words * 64, np.uint8)
            starts = np.empty((r1 - r0, tiles + 1), np.int64)  # list position of each row's tile of inputs
            cols = np.empty(counts[g0:g0 + block].sum() + 32, index.dtype)
            c = 0
            for r in range(r0, r1):
                j = r % 8
                if j == 0:
                    load_plane(bits, r // 8, plane)
                for q in range(words):
                    if q % kwords == 0:
                        starts[r - r0, q // kwords] = c
                    c = append_bits(bit_plane64(plane, 64 * q, j), 64 * q, cols, c)
                starts[r - r0, tiles] = c
            for c0 in range(0, n, chunk):
                width = min(chunk, n - c0)
                for r in range(r0, r1):
                    gather_rows(w, cols, starts[r - r0, 0], starts[r - r0, 1], c0, width, h, r, nvec, False)
                for t in range(1, tiles):
                    for r in range(r0, r1):
                        if starts[r - r0, t + 1] > starts[r - r0, t]:
                            gather_rows(w, cols, starts[r - r0, t], starts[r - r0, t + 1], c0, width, h, r, nvec, True)

    return kernel


@functools.cache
def event_wgrad_kernel(nvec: int):
    """The event-driven weight gradient for ``nvec`` registers per partial sum (compiled on first use)."""
    @cpu_kernel
    def kernel(bits, dh, inputs, parts, slabs, index, dw):
        """bits: (G, K) uint8 packed from x (M, K); dh: (M, N) -> dw: (parts, K, N), summed over parts =
        x^T dh. dw must be zeroed; ``index``: an empty array of the lists' dtype (uint16 or int32).

        One lane = a block of ``inputs`` columns of x (its rows of dw: no other lane writes them) and
        one of ``parts`` equal row ranges. It walks its rows in runs of ``slabs`` x 64: per input the
        list of rows that spiked (a 64-bit word per input from 8 group bytes, then a compress), then
        per chunk of nvec * L columns adds the listed dh rows into dw while the run's dh rows are in
        cache. Work: spikes x N adds; bytes: the bits, per spike 2 (uint16) for its index and 4
        (float32) per column of dh; dw once per run.
        """
        groups, k = bits.shape
        m, n = dh.shape
        chunk = nvec * (64 // dh.itemsize)
        blocks = -(-k // inputs)
        total = -(-groups // 8)  # slabs of 64 rows
        for lane in prange(blocks * parts):
            i0 = (lane % blocks) * inputs
            ni = min(k, i0 + inputs) - i0
            part = lane // blocks
            s_end = (part + 1) * total // parts
            out = dw[part]
            rows = np.empty((ni, slabs * 64 + 32), index.dtype)
            count = np.zeros(ni, np.int64)
            word = np.zeros(ni, np.uint64)
            for s0 in range(part * total // parts, s_end, slabs):
                count[:] = 0
                for s in range(s0, min(s_end, s0 + slabs)):
                    word[:] = 0
                    for t in range(min(8, groups - 8 * s)):
                        for i in range(ni):
                            word[i] |= np.uint64(bits[8 * s + t, i0 + i]) << np.uint64(8 * t)
                    for i in range(ni):
                        count[i] = append_bits(word[i], 64 * (s - s0), rows[i], count[i])
                run = dh[64 * s0:]  # list entries are rows relative to the run
                for c0 in range(0, n, chunk):
                    for i in range(ni):
                        if count[i]:
                            gather_rows(run, rows[i], 0, count[i], c0, min(chunk, n - c0), out, i0 + i, nvec, True)

    return kernel


def pack_count_cpu(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, K) -> bits (ceil(M/8), K) uint8 and counts (ceil(M/8), 2) int64: per group of 8 rows, its
    nonzero entries and its entries neither 0 nor 1."""
    x = x.contiguous()
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    groups = -(-x.shape[0] // 8)
    bits = torch.empty(groups, x.shape[1], dtype=torch.uint8)
    counts = torch.empty(groups, 2, dtype=torch.int64)
    sync_threads()
    pack_kernel(x.numpy(), bits.numpy(), counts.numpy())
    return bits, counts


def pack_spikes_cpu(x: torch.Tensor) -> torch.Tensor:
    """(M, K) -> (ceil(M/8), K) uint8."""
    return pack_count_cpu(x)[0]


def unpack_spikes_cpu(bits: torch.Tensor, m: int, dtype: torch.dtype, out: torch.Tensor | None = None) -> torch.Tensor:
    """(ceil(M/8), K) uint8 -> (M, K) 0/1 of ``dtype``, written into ``out`` (float32/64, contiguous) if given."""
    work = dtype if dtype in (torch.float32, torch.float64) else torch.float32
    x = torch.empty(m, bits.shape[1], dtype=work) if out is None else out
    sync_threads()
    unpack_kernel(bits.contiguous().numpy(), x.numpy())
    return x.to(dtype)


def spike_weight_grad_cpu(bits: torch.Tensor, grad: torch.Tensor, chunk_bytes: int = 4 << 20) -> torch.Tensor:
    """The dense weight gradient: grad (M, N) float32/64, bits packed from x (M, K) -> grad^T x (N, K).

    Unpacks x a block of rows at a time into one reused buffer of about ``chunk_bytes`` and
    accumulates with addmm. A whole fresh (M, K) float buffer costs a page fault per 4 KiB:
    measured at B=1024, T=100, K=200 (82 MB), 39 ms whole against 13 ms in 4 MiB blocks, and
    no slower at seed size.
    """
    m, k = grad.shape[0], bits.shape[1]
    rows = max(8, chunk_bytes // (grad.element_size() * k) // 8 * 8)
    if rows >= m:
        return grad.t() @ unpack_spikes_cpu(bits, m, grad.dtype)
    out = grad.new_zeros(grad.shape[1], k)
    buf = torch.empty(rows, k, dtype=grad.dtype)
    for r0 in range(0, m, rows):
        n = min(rows, m - r0)
        x = unpack_spikes_cpu(bits[r0 // 8: (r0 + n + 7) // 8], n, grad.dtype, buf[:n])
        out.addmm_(grad[r0: r0 + n].t(), x)
    return out


def event_matmul_cpu(bits: torch.Tensor, counts: torch.Tensor, w: torch.Tensor, m: int, rows_per_lane: int = 256,
                     tile_bytes: int = 256 << 10) -> torch.Tensor:
    """x @ w by events: bits packed from x (M, K), counts (ceil(M/8),) int64 its spikes per group of 8 rows,
    w (K, N) float32/64 -> (M, N) of w's dtype.

    A lane takes ``rows_per_lane`` rows (rounded to groups of 8), fewer where the lanes would not give
    every thread four, and w in tiles of about ``tile_bytes`` (whole multiples of 64 inputs).
    """
    w = w.contiguous()
    k, n = w.shape
    groups = bits.shape[0]
    threads = sync_threads()
    block = max(1, min(-(-rows_per_lane // 8), groups // (4 * threads)))
    nvec = _nvec(n, w.dtype)
    kwords = max(1, tile_bytes // (VECTOR_BYTES * nvec) // 64)
    if not k:
        return torch.zeros(m, n, dtype=w.dtype)
    h = buffers.empty((m, n), w.dtype)
    if m and n:
        event_fwd_kernel(nvec)(bits.contiguous().numpy(), counts.contiguous().numpy(), w.numpy(), block, kwords,
                               _index(k), h.numpy())
    return h


ROW_PARTS = 4  # row ranges of a small weight gradient, whatever the thread count (the sums' order is fixed)


def event_weight_grad_cpu(bits: torch.Tensor, dh: torch.Tensor, slabs: int = 4) -> torch.Tensor:
    """x^T dh by events: bits packed from x (M, K), dh (M, N) float32/64 -> (K, N) of dh's dtype.

    Lanes split the inputs into equal blocks, as many as give every thread one; where dw fits in
    256 KiB the rows are also split into up to ``ROW_PARTS`` ranges of 64-row slabs, each summed
    into a private copy of dw, and the copies are added after (each lane then reads only its rows
    of dh). The split depends on the shapes alone, so the result is the same bits whatever the
    thread count: a run's numbers do not change when its thread count does.
    """
    dh = dh.contiguous()
    m, n = dh.shape
    k = bits.shape[1]
    threads = sync_threads()
    parts = max(1, min(ROW_PARTS, -(-m // 64))) if k * n * dh.element_size() <= 256 << 10 else 1
    blocks = max(1, threads // parts) if parts > 1 else max(threads, -(-k // 256))
    inputs = -(-k // blocks)
    dw = torch.zeros(parts, k, n, dtype=dh.dtype)
    if m and k and n:
        event_wgrad_kernel(_nvec(n, dh.dtype))(bits.contiguous().numpy(), dh.numpy(), inputs, parts, slabs,
                                               _index(64 * slabs), dw.numpy())
    out = dw[0]
    for part in dw[1:]:  # in order: the same sums whatever the thread count
        out += part
    return out

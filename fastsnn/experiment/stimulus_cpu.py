"""The stimulus' CPU kernels: a batch's Poisson spikes written as the bits the network takes.

Both write the (n T, I) spikes of n samples in :class:`fastsnn.SpikeBits`' layout (bit j of
``bits[g, i]`` is row 8g + j, rows being (sample, step)) with the spikes of each group of 8 rows, from
the hashed frozen noise of :mod:`fastsnn.experiment.stimulus` (murmur3's finaliser without its last
xor-shift, top 24 bits u24; a spike is ``u24 < p * 2^24``):

- :func:`stimulus_bits`, one pass from the angles: ``p = scale * (0.5 (1 + sin theta)) ** power`` for
  powers 1, 2 and 3 (which torch computes by multiplication), the sine being torch's own
  (:mod:`fastsnn.cpu.torch_sin`): exact (MKL) for the left ear's (T, A) probabilities, shared by the
  batch; for the right ear's angles ``(phase_t + delay_i) + ipd_s``, bounds that decide the spike
  unless the noise falls between the bounds' probabilities, when the row takes the exact sine;
- :func:`poisson_bits`, from (n, T, I) probabilities that torch computed (other powers, torch without MKL).

Each is bit-identical to the torch path (``tests/test_stimulus.py``, ``tests/test_stimulus_digests.py``)
and writes every group of rows alike whatever the thread count.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange

from fastsnn.cpu import cpu_kernel, sync_threads
from fastsnn.cpu.torch_sin import bracket, mkl_local_threads, vsin
from fastsnn.ops.spikes.simd import popcount

_MIX1, _MIX2 = np.uint32(0x85EBCA6B), np.uint32(0xC2B2AE35)
_S8, _S13, _S16 = np.uint32(8), np.uint32(13), np.uint32(16)
_TWO24, _HALF, _ONE = np.float32(2.0**24), np.float32(0.5), np.float32(1.0)


@njit(inline="always")
def noise(key, cell):
    """u24 of sample key ``key`` (uint32) and cell ``cell`` (int32 bits), as float32. Every step is cast back
    to uint32 (numba computes in 64 bits), so that LLVM narrows the loop to 32-bit lanes."""
    x = np.uint32(key ^ np.uint32(cell))
    x = np.uint32(np.uint32(x ^ (x >> _S16)) * _MIX1)
    x = np.uint32(np.uint32(x ^ (x >> _S13)) * _MIX2)
    return np.float32(np.int32(x >> _S8))


@njit(inline="always")
def sample_step(r, T):
    """Row r of the (n T, I) spikes -> (sample, step)."""
    s = r // T
    return s, r - s * T


@njit(inline="always")
def envelope(s, scale, power):
    """torch's ``scale * (0.5 * (1 + s)) ** power`` in float32 for power 1, 2 or 3 (``b * b``, ``b * b * b``)."""
    b = (_ONE + s) * _HALF
    if power == 2:
        b = b * b
    elif power == 3:
        b = b * b * b
    return scale * b


@cpu_kernel
def left_ear_kernel(phase, delay, scale, power, out):
    """phase (T,), delay (A,) float32 -> out (T, A) float32: the probability of fibre i at step t,
    angle ``phase_t + delay_i``."""
    T, A = out.shape
    flat = out.reshape(T * A)
    for t in prange(T):
        threads = mkl_local_threads(1)
        row = out[t]
        for i in range(A):
            row[i] = phase[t] + delay[i]
        vsin(flat, flat, t * A, A)
        for i in range(A):
            row[i] = envelope(row[i], scale, power)
        mkl_local_threads(threads)


@cpu_kernel
def stimulus_bits_kernel(keys, ipd, table, phase, right_delay, left, scale, power, bits, counts):
    """keys (n,) int32, ipd (n,) float32, table (T, I) int32, phase (T,) and right_delay (A,) float32,
    left (T, A) float32 (the left ear's probabilities) -> bits (ceil(n T / 8), I) uint8, counts (same
    rows,) int64. One lane: a group of 8 rows.

    The right ear's probability is monotone in the sine, so its spike is decided from the sine's
    bounds (:func:`~fastsnn.cpu.torch_sin.bracket`) unless the noise falls between the probabilities of
    the two bounds (about one value in a million); a row holding such a value is redone with the exact
    sine (:func:`exact_row`). (Row views, not flat indices: numba's index arithmetic keeps loops from
    vectorising.)"""
    n = keys.shape[0]
    T, I = table.shape
    A = I // 2
    m = n * T
    for g in prange(bits.shape[0]):
        row = bits[g]
        row[:] = 0
        for j in range(min(8, m - 8 * g)):
            s, t = sample_step(8 * g + j, T)
            key = np.uint32(keys[s])
            cells, p_left, right = table[t], left[t], table[t, A:]
            shift = np.uint8(j)
            for i in range(A):
                row[i] |= np.uint8(noise(key, cells[i]) < p_left[i] * _TWO24) << shift
            unsure = False
            for i in range(A):
                lo, hi = bracket((phase[t] + right_delay[i]) + ipd[s])
                u = noise(key, right[i])
                p_lo = envelope(lo, scale, power) * _TWO24
                row[A + i] |= np.uint8(u < p_lo) << shift
                unsure |= (u >= p_lo) & (u < envelope(hi, scale, power) * _TWO24)
            if unsure:
                exact_row(key, right, phase[t], right_delay, ipd[s], scale, power, shift, row[A:])
        counts[g] = popcount(row)


@njit
def exact_row(key, cells, phase, delay, ipd, scale, power, shift, row):
    """Bit ``shift`` of ``row`` (A,) rewritten with the right ear's spikes from the exact sine."""
    A = row.shape[0]
    sines = np.empty(A, np.float32)
    for i in range(A):
        sines[i] = (phase + delay[i]) + ipd
    threads = mkl_local_threads(1)
    vsin(sines, sines, 0, A)
    mkl_local_threads(threads)
    for i in range(A):
        fire = noise(key, cells[i]) < envelope(sines[i], scale, power) * _TWO24
        row[i] = (row[i] & ~(np.uint8(1) << shift)) | (np.uint8(fire) << shift)


@cpu_kernel
def poisson_bits_kernel(keys, table, prob, bits, counts):
    """keys (n,) int32, table (T, I) int32, prob (n, T, I) float32 -> bits (ceil(n T / 8), I) uint8 and
    counts (same rows,) int64."""
    n, T, I = prob.shape
    m = n * T
    for g in prange(bits.shape[0]):
        row = bits[g]
        row[:] = 0
        for j in range(min(8, m - 8 * g)):
            s, t = sample_step(8 * g + j, T)
            cells, p = table[t], prob[s, t]  # row views: the loop vectorises
            key = np.uint32(keys[s])
            for i in range(I):
                row[i] |= np.uint8(noise(key, cells[i]) < p[i] * _TWO24) << np.uint8(j)
        counts[g] = popcount(row)


def _outputs(rows: int, inputs: int) -> tuple[torch.Tensor, torch.Tensor]:
    groups = -(-rows // 8)
    return torch.empty(groups, inputs, dtype=torch.uint8), torch.empty(groups, dtype=torch.int64)


def stimulus_bits(keys: torch.Tensor, ipd: torch.Tensor, table: torch.Tensor, phase: torch.Tensor,
                  delays: torch.Tensor, scale: float, power: int) -> tuple[torch.Tensor, torch.Tensor]:
    """keys (n,) int32, ipd (n,) float32, table (T, I) int32, phase (T,) float32, delays (2, A) float32
    (each ear's), scale: float32-rounded, power 1, 2 or 3 -> (bits (ceil(n T / 8), I) uint8, spikes per
    group of 8 rows (same,) int64). Needs :func:`fastsnn.cpu.torch_sin.available`."""
    T, inputs = table.shape
    a = inputs // 2
    bits, counts = _outputs(len(keys) * T, inputs)
    scale = np.float32(scale)
    sync_threads()
    left = np.empty((T, a), np.float32)
    left_ear_kernel(phase.numpy(), delays[0].contiguous().numpy(), scale, power, left)
    stimulus_bits_kernel(keys.contiguous().numpy(), ipd.contiguous().numpy(), table.numpy(), phase.numpy(),
                         delays[1].contiguous().numpy(), left, scale, power, bits.numpy(), counts.numpy())
    return bits, counts


def poisson_bits(keys: torch.Tensor, table: torch.Tensor, prob: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """keys (n,) int32, table (T, I) int32, prob (n, T, I) float32 -> (bits, spikes per group of 8 rows)."""
    n, T, inputs = prob.shape
    bits, counts = _outputs(n * T, inputs)
    sync_threads()
    poisson_bits_kernel(keys.contiguous().numpy(), table.contiguous().numpy(), prob.contiguous().numpy(),
                        bits.numpy(), counts.numpy())
    return bits, counts

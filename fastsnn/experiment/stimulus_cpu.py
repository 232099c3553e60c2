"""The stimulus' CPU kernels: a batch's Poisson spikes written as the bits the network takes.

Both write the (n T, I) spikes of n samples in :class:`fastsnn.SpikeBits`' layout (bit j of
``bits[g, i]`` is row 8g + j, rows being (sample, step)) with the spikes of each group of 8 rows, from
the hashed frozen noise of :mod:`fastsnn.experiment.stimulus` (murmur3's finaliser without its last
xor-shift, top 24 bits u24; a spike is ``u24 < p * 2^24``):

- :func:`stimulus_bits`, one pass from the angles: ``p = scale * (0.5 (1 + sin theta)) ** power`` for
  powers 1, 2 and 3 (which torch computes by multiplication), the sine being torch's own
  (:mod:`fastsnn.cpu.torch_sin`). :func:`step_tables` computes what a phase shares, once for all the
  batches drawn at it: the left ear's (T, A) thresholds ``ceil(p 2^24)`` from the exact sine (MKL),
  and the sine and cosine of the right ear's ``phase_t + delay_i``. The right ear's angle adds each
  sample's IPD: its probability is estimated by rotating them (two fused multiply-adds), with a band
  (:func:`margin`) proven to hold torch's probability; the noise decides the spike unless it falls in
  the band (a few values a batch), when the row takes the exact sine. 16 fibres at a time, the rows of
  a group in registers (:mod:`.stimulus_simd`);
- :func:`poisson_bits`, from (n, T, I) probabilities that torch computed (other powers, torch without MKL).

Each is bit-identical to the torch path (``tests/test_stimulus.py``, ``tests/test_stimulus_digests.py``)
and writes every group of rows alike whatever the thread count.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange

from fastsnn.cpu import cached_kernel, cpu_kernel, sync_threads
from fastsnn.cpu.bits import popcount
from fastsnn.cpu.torch_sin import mkl_local_threads, vsin

from .stimulus_simd import LANE, TABLE_ROWS, group_bits

_MIX1, _MIX2 = np.uint32(0x85EBCA6B), np.uint32(0xC2B2AE35)
_S8, _S13, _S16 = np.uint32(8), np.uint32(13), np.uint32(16)
_TWO24, _HALF, _ONE = np.float32(2.0**24), np.float32(0.5), np.float32(1.0)


@njit(inline="always")
def mixed(x):
    """murmur3's first step, ``x ^ (x >> 16)``, as uint32. Of ``key ^ cell`` it is ``mixed(key) ^ mixed(cell)``,
    so that the cells' part is computed once per batch."""
    x = np.uint32(x)
    return np.uint32(x ^ (x >> _S16))


@njit(inline="always")
def noise(key, cell):
    """u24 (int32) of sample key ``key`` and cell ``cell``, both :func:`mixed`. Every step is cast back to uint32
    (numba computes in 64 bits), so that LLVM narrows the loop to 32-bit lanes."""
    x = np.uint32(np.uint32(key ^ cell) * _MIX1)
    x = np.uint32(np.uint32(x ^ (x >> _S13)) * _MIX2)
    return np.int32(x >> _S8)


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


@njit
def left_ear(phase, delay, scale, power, out):
    """phase (T,), delay (A,) float32 -> out (T, A) float32: the probability of fibre i at step t, angle
    ``phase_t + delay_i``, torch's bits (MKL's sine)."""
    T, A = out.shape
    flat = out.reshape(T * A)
    threads = mkl_local_threads(1)
    for t in range(T):
        for i in range(A):
            out[t, i] = phase[t] + delay[i]
    vsin(flat, flat, 0, T * A)
    mkl_local_threads(threads)
    for t in range(T):
        row = out[t]
        for i in range(A):
            row[i] = envelope(row[i], scale, power)


_U = 2.0**-24  # float32's unit roundoff
_SINE_ULPS = 4.0  # |torch.sin(x) - sin(x)| allowed, in units of 2^-24 (MKL documents < 1 ulp)
_NAN_BITS = np.uint32(0x7FC00000)


@njit(inline="always")
def threshold(p):
    """``ceil(p 2^24)`` as uint32 for float32 p, 0 for NaN: ``u24 < p 2^24`` exactly where ``u24 < threshold(p)``."""
    v = p * _TWO24
    return np.uint32(min(np.ceil(v), _TWO24)) if v > 0 else np.uint32(0)


@cached_kernel
@njit
def step_tables_kernel(table, phase, delays, scale, power, tables, widest):
    """table (T, I) int32, phase (T,), delays (2, A) float32 -> tables (T, TABLE_ROWS, P) uint32 (the rows of
    :mod:`.stimulus_simd`; P: A padded to a multiple of LANE, the padding 0, NaN for the sines and cosines),
    widest (T,) float64: the largest ``|fl(phase_t + delay_i)|`` of the right ear."""
    T, I = table.shape
    A = I // 2
    P = tables.shape[2]
    floats = tables.view(np.float32)
    left = np.empty((T, A), np.float32)
    left_ear(phase, delays[0], scale, power, left)
    sd, cd = np.empty(A), np.empty(A)
    near = far = delays[1, 0] if A else np.float32(0)
    for i in range(A):
        d = delays[1, i]
        sd[i], cd[i] = np.sin(np.float64(d)), np.cos(np.float64(d))
        near, far = min(near, d), max(far, d)
    for t in range(T):
        row, p = table[t], left[t]
        left_cells, right_cells, limits, sines, cosines = (tables[t, 0], tables[t, 1], tables[t, 2], tables[t, 3],
                                                           tables[t, 4])
        for i in range(A):
            left_cells[i] = mixed(row[i])
        for i in range(A):
            right_cells[i] = mixed(row[A + i])
        for i in range(A):
            limits[i] = threshold(p[i])
        sp, cp = np.sin(np.float64(phase[t])), np.cos(np.float64(phase[t]))
        st, ct = floats[t, 3], floats[t, 4]
        for i in range(A):
            st[i] = sp * cd[i] + cp * sd[i]
        for i in range(A):
            ct[i] = cp * cd[i] - sp * sd[i]
        for i in range(A, P):
            left_cells[i], right_cells[i], limits[i], sines[i], cosines[i] = 0, 0, 0, _NAN_BITS, _NAN_BITS
        widest[t] = max(abs(phase[t] + near), abs(phase[t] + far))  # fl(phase + delay) is monotone in delay


@njit
def margin(widest, span, scale, power):
    """Half-width (units of 2^-24, float32 rounded up) of the band around the right ear's estimated
    ``p 2^24`` that holds torch's, for angles ``fl(a + b)`` with ``|a| <= widest``, ``|b| <= span``.

    The kernel estimates ``y ~ 1 + torch.sin(x)`` for ``x = fl(a + b)``, ``a = fl(phase_t + delay_i)``, ``b`` the
    IPD, as ``fma(sin(phase + delay), cos b, fma(cos(phase + delay), sin b, 1))`` from float32 roundings of
    float64 sines (4 x 2^-25), itself rounded twice (2^-24 + 2^-23): 5 units, 6 with the float64 sines'
    error. ``x`` is ``phase + delay + b`` within two roundings, ``2^-24 (|a| + |x|) <= 2^-24 (2 |a| + |b|)(1 +
    2^-24)``, which moves the sine as much at most; torch's sine is within ``_SINE_ULPS`` units of the true
    one. So ``|y - (1 + sin)| <= e``. The probabilities: ``F(s) = scale 2^24 ((1 + s) / 2) ** power``; torch's
    float32 ``p 2^24`` is within ``(2 power + 2) 2^-24 F`` of F(torch's sine) (power + 1 roundings of a value
    whose rounding is squared or cubed, and the scale's); F moves by at most ``scale 2^24 power R^(power-1)
    e / 2`` (R = 1 + e / 2 bounds ``(1 + s) / 2`` and ``y / 2``); the kernel's own estimate of
    ``F(y - 1) -+ margin`` rounds at most power + 1 times."""
    e = _U * ((2 * widest + span) * (1 + _U) + 6 + _SINE_ULPS)
    r = 1 + e / 2
    rise = 1.0  # r ** (power - 1)
    for _ in range(power - 1):
        rise *= r
    band = scale * 2.0**24 * (power * rise * e / 2 + (2 * power + 2) * _U * 1.001 + (power + 1) * _U * rise * r)
    return np.float32((band / (1 - 8 * _U) + 1) * (1 + 2.0**-20))


@cpu_kernel
def stimulus_bits_kernel(keys, ipd, tables, widest, phase, delays, scale, power, lanes, bits, counts):
    """keys (n,) int32, ipd (n,) float32, tables and widest from :func:`step_tables_kernel` of phase (T,)
    and delays (2, A) float32 -> bits (ceil(n T / 8), 2 A) uint8, counts (same rows,) int64; ``lanes`` parts of
    the groups of rows run in parallel.

    Per group of 8 rows, :func:`~.stimulus_simd.group_bits`: the left ear's spikes from the thresholds, the
    right ear's from an estimate of the probability whose band (:func:`margin`) holds torch's; a row where the
    noise falls in a band is redone with the exact sine (:func:`exact_row`)."""
    n = keys.shape[0]
    T = tables.shape[0]
    A = delays.shape[1]
    m = n * T
    G = bits.shape[0]
    turns = np.empty((2, n), np.float32)  # cos and sin of each sample's IPD
    span = 0.0
    for s in range(n):
        b = np.float64(ipd[s])
        turns[0, s], turns[1, s] = np.cos(b), np.sin(b)
        span = max(span, abs(b))
    bands = np.empty(T, np.float32)
    for t in range(T):
        bands[t] = margin(widest[t], span, scale, power)
    weight = scale * np.float32(2.0 ** (24 - power))  # F(y - 1) = weight * y ** power
    per = -(-G // lanes)
    period = T // np.gcd(T, 8)  # groups g and g + period read the same steps: a lane takes them in a row
    for lane in prange(lanes):
        steps, row_keys, row_turns = np.empty(8, np.int64), np.empty(8, np.uint32), np.empty((3, 8), np.float32)
        first, end = lane * per, min(G, lane * per + per)
        for g0 in range(first, min(end, first + period)):
            for g in range(g0, end, period):
                rows = min(8, m - 8 * g)
                s, t = sample_step(8 * g, T)
                for j in range(rows):
                    steps[j], row_keys[j] = t, mixed(keys[s])
                    row_turns[0, j], row_turns[1, j], row_turns[2, j] = turns[0, s], turns[1, s], bands[t]
                    t += 1
                    if t == T:
                        s, t = s + 1, 0
                row = bits[g]
                if power == 1:  # a constant in each call
                    undecided = group_bits(tables, steps, row_keys, row_turns, rows, weight, 1, row)
                elif power == 2:
                    undecided = group_bits(tables, steps, row_keys, row_turns, rows, weight, 2, row)
                else:
                    undecided = group_bits(tables, steps, row_keys, row_turns, rows, weight, 3, row)
                for j in range(rows):
                    if undecided >> j & 1:
                        s, t = sample_step(8 * g + j, T)
                        exact_row(mixed(keys[s]), tables[t, 1], phase[t], delays[1], ipd[s], scale, power, j,
                                  row[A:])
                counts[g] = popcount(row)


@njit
def exact_row(key, cells, phase, delay, ipd, scale, power, j, out):
    """Bit j of ``out`` (A,) uint8 rewritten with the right ear's spikes from the exact sine (``key``, ``cells``
    :func:`mixed`)."""
    A = out.shape[0]
    sines = np.empty(A, np.float32)
    for i in range(A):
        sines[i] = (phase + delay[i]) + ipd
    threads = mkl_local_threads(1)
    vsin(sines, sines, 0, A)
    mkl_local_threads(threads)
    bit = np.uint8(1 << j)
    for i in range(A):
        fire = noise(key, cells[i]) < envelope(sines[i], scale, power) * _TWO24
        out[i] = (out[i] & ~bit) | (bit if fire else np.uint8(0))


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
            key = mixed(keys[s])
            for i in range(I):
                row[i] |= np.uint8(np.float32(noise(key, mixed(cells[i]))) < p[i] * _TWO24) << np.uint8(j)
        counts[g] = popcount(row)


def _outputs(rows: int, inputs: int) -> tuple[torch.Tensor, torch.Tensor]:
    groups = -(-rows // 8)
    return torch.empty(groups, inputs, dtype=torch.uint8), torch.empty(groups, dtype=torch.int64)


def step_tables(table: torch.Tensor, phase: torch.Tensor, delays: torch.Tensor, scale: float,
                power: int) -> tuple[np.ndarray, np.ndarray]:
    """table (T, I) int32, phase (T,) float32, delays (2, A) float32 (each ear's), scale: float32-rounded, power
    1, 2 or 3 -> what :func:`stimulus_bits` takes of a phase: the same for every batch drawn at it."""
    T, inputs = table.shape
    a = inputs // 2
    tables = np.empty((T, TABLE_ROWS, -(-a // LANE) * LANE), np.uint32)
    widest = np.empty(T)
    step_tables_kernel(table.contiguous().numpy(), phase.contiguous().numpy(), delays.contiguous().numpy(),
                       np.float32(scale), power, tables, widest)
    return tables, widest


def stimulus_bits(keys: torch.Tensor, ipd: torch.Tensor, steps: tuple[np.ndarray, np.ndarray], phase: torch.Tensor,
                  delays: torch.Tensor, scale: float, power: int) -> tuple[torch.Tensor, torch.Tensor]:
    """keys (n,) int32, ipd (n,) float32, ``steps`` = :func:`step_tables` (table, phase, delays, scale, power) ->
    (bits (ceil(n T / 8), I) uint8, spikes per group of 8 rows (same,) int64). Needs
    :func:`fastsnn.cpu.torch_sin.available`."""
    T, inputs = len(phase), 2 * delays.shape[1]
    bits, counts = _outputs(len(keys) * T, inputs)
    threads = sync_threads()
    stimulus_bits_kernel(keys.contiguous().numpy(), ipd.contiguous().numpy(), *steps, phase.contiguous().numpy(),
                         delays.contiguous().numpy(), np.float32(scale), power, max(1, min(len(bits), 4 * threads)),
                         bits.numpy(), counts.numpy())
    return bits, counts


def poisson_bits(keys: torch.Tensor, table: torch.Tensor, prob: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """keys (n,) int32, table (T, I) int32, prob (n, T, I) float32 -> (bits, spikes per group of 8 rows)."""
    n, T, inputs = prob.shape
    bits, counts = _outputs(n * T, inputs)
    sync_threads()
    poisson_bits_kernel(keys.contiguous().numpy(), table.contiguous().numpy(), prob.contiguous().numpy(),
                        bits.numpy(), counts.numpy())
    return bits, counts

"""The numba runtime under the CPU kernels (``fastsnn.cpu``): thread counts, the vectorised exp of the LIF
backward, and the floating-point mode (subnormals flushed in backward kernels only)."""

import os
import platform
import subprocess
import sys

import numba
import numpy as np
import pytest
import torch

import fastsnn
from fastsnn.cpu import flush_subnormals, restore_subnormals
from fastsnn.cpu.rows import gather, padded, scatter
from fastsnn.ops.neurons.cpu import exp_nonpositive, lif_bwd, lif_fwd
from fastsnn.ops.neurons.neuron import Neuron
from fastsnn.ops.neurons.reference import lif_ref
from fastsnn.ops.readout.cpu import leaky_readout_bwd, leaky_readout_fwd

BETA = 5.0
SEED_NEURON = Neuron(beta=BETA)


ALIF_NEURON = Neuron(same_step=True, reset=2, adaptive=True, surrogate=1, adapt=0.5)  # same_step, subtract_next, atan


@pytest.mark.parametrize("neuron", [SEED_NEURON, ALIF_NEURON], ids=["lif", "alif-same_step-subtract_next-atan"])
def test_threads_follow_torch(neuron):
    gen = torch.Generator().manual_seed(0)
    h, g = torch.randn(64, 63, 257, generator=gen) * 0.8 + 0.3, torch.randn(64, 63, 257, generator=gen)
    a, rho = torch.rand(257, generator=gen), torch.rand(257, generator=gen) if neuron.adaptive else None
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):  # 2 even where the suite runs on 1 (conftest.py): lanes then run concurrently
            torch.set_num_threads(threads)
            s, u, s8, a_saved = lif_fwd(h, a, rho, neuron, True)
            assert numba.get_num_threads() == min(threads, numba.config.NUMBA_NUM_THREADS)
            results.append((s, *lif_bwd(g, u, s8, a_saved, a, rho, neuron, True, neuron.adaptive),
                            *leaky_readout_bwd(g, leaky_readout_fwd(h, a), a, True)))
    finally:
        torch.set_num_threads(before)
    for x, y in zip(*results):
        assert x is None and y is None or torch.equal(x, y), "results depend on the thread count"


def test_first_kernel_call_keeps_torchs_thread_count():
    # numba's OpenMP start-up resets the thread count torch shares; a fresh process shows it
    code = ("import torch; torch.set_num_threads(1); import fastsnn; "
            "fastsnn.lif(torch.randn(2, 5, 3), 0.8, backend='cpu'); print(torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"


@numba.njit
def _exp(x, out):
    exp_nonpositive(x, out)


def test_vectorised_exp_is_accurate_to_two_ulp():
    """The LIF backward's float32 exp (a polynomial, so that its loop vectorises) against float64 exp."""
    x = -np.concatenate([np.linspace(0, 87, 200_001), np.random.default_rng(0).exponential(3, 10_001)])
    x = np.maximum(x, -87).astype(np.float32)
    out = np.empty_like(x)
    _exp(x, out)
    exact = np.exp(x.astype(np.float64))
    assert np.all(np.abs(out - exact) <= 2 * np.spacing(exact.astype(np.float32)))
    # below -87 float32 exp turns subnormal: exactly 0 instead, never a subnormal
    tail = np.array([-87.01, -90, -103, -200, -np.inf], np.float32)
    _exp(tail, out[:5])
    np.testing.assert_array_equal(out[:5], 0)
    out64 = np.empty(5)
    _exp(np.linspace(-5, 0, 5), out64)  # float64 keeps np.exp
    np.testing.assert_array_equal(out64, np.exp(np.linspace(-5, 0, 5)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vectorised_exp_keeps_nan(dtype):
    """exp(NaN) is NaN, as np.exp's (a NaN membrane then gives a NaN surrogate gradient, as in the reference);
    the float32 polynomial used to return 0 for it."""
    x = np.array([-1.0, np.nan, -90.0, np.nan, 0.0, -np.inf, -0.5, np.nan, -3.0], dtype)
    out = np.empty_like(x)
    _exp(x, out)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(x))
    inside = x >= -87  # below, float32 returns 0 (tested above)
    np.testing.assert_allclose(out[inside], np.exp(x[inside].astype(np.float64)), rtol=1e-6, atol=0)


def test_backward_flushes_subnormals_and_restores_the_fp_mode():
    """Backward kernels flush subnormals (they cost 20-100x per operation on x86) and then
    restore the thread's floating-point mode, so code running afterwards keeps them."""

    @numba.njit
    def halve(x, flush):  # arrays, as in the kernels: the arithmetic follows loads after the flush
        state = flush_subnormals() if flush else np.uint32(0)
        y = x * np.float32(0.5)
        if flush:
            restore_subnormals(state)
        return y

    sub = np.full(4, 2e-38, np.float32)  # halving it gives a subnormal
    assert np.all(halve(sub, False) > 0)
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    np.testing.assert_array_equal(halve(sub, True), 0 if x86 else sub / 2)
    assert np.all(halve(sub, False) > 0) and np.all(sub * np.float32(0.5) > 0)  # mode restored
    h = torch.randn(3, 20, 5, generator=torch.Generator().manual_seed(0))
    alpha = torch.full((5,), 0.8)
    for neuron in (SEED_NEURON, Neuron(same_step=True, reset=1, adaptive=True, adapt=1.0)):
        rho = alpha if neuron.adaptive else None
        s, u, s8, a = lif_fwd(h, alpha, rho, neuron, True)
        lif_bwd(torch.randn_like(h), u, s8, a, alpha, rho, neuron, False, False)
        assert np.float32(2e-38) * np.float32(0.5) > 0


@pytest.mark.parametrize("same_step", [False, True], ids=["delayed", "same_step"])
def test_forward_keeps_subnormal_membranes(same_step):
    """A subnormal membrane above a threshold of 0 spikes, as in the reference (no flush in forwards)."""
    h = torch.zeros(1, 4, 2)
    h[0, 0] = torch.tensor([1e-39, -1e-39])
    s, _, _, _ = lif_fwd(h, torch.full((2,), 0.5), None, Neuron(same_step=same_step, threshold=0.0, beta=BETA), True)
    expected = lif_ref(h, 0.5, threshold=0.0, beta=BETA, spike="same_step" if same_step else "delayed")
    assert torch.equal(s, expected) and s[0, 0 if same_step else 2, 0] == 1 and not s[0, :, 1].any()



REFAULTS = r"""
import resource, sys, torch, fastsnn
from fastsnn.cpu.allocator import retain_freed_memory, retained
if sys.argv[1] == "retain":
    assert retain_freed_memory() and retain_freed_memory() and retained()
h = torch.rand(1024, 100, 30, generator=torch.Generator().manual_seed(0)).requires_grad_()
faults = []
for _ in range(30):  # forward + backward of a layer of 12 MB tensors, as bench.peers times it
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    h.grad = None
    fastsnn.lif(h, 0.8, spike="same_step", reset="subtract", backend="cpu").sum().backward()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sum(faults[15:]))
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_buffer_cache_and_retained_memory_stop_refaulting():
    """Without the kernels' buffer cache, glibc's defaults send the layer's freed tensors back to the OS, and
    they fault back in on later steps (thousands of pages a step, ~1 us each on a VM). The cache (on by
    default) serves them again, as does glibc told to retain freed memory."""
    def faults(mode, cache_mb):
        out = subprocess.run([sys.executable, "-c", REFAULTS, mode], capture_output=True, text=True, check=True,
                             env={**os.environ, "FASTSNN_CPU_CACHE_MB": cache_mb})
        return int(out.stdout)
    default = faults("glibc", "0")
    if default <= 6000:
        pytest.skip(f"glibc's defaults refaulted only {default} pages in 15 steps here: nothing to measure")
    kept, cached = faults("retain", "0"), faults("glibc", "512")
    assert 3 * kept < default, f"retained: {kept} page faults in 15 steps, glibc's defaults: {default}"
    assert 3 * cached < default, f"buffer cache: {cached} page faults in 15 steps, without: {default}"


@numba.njit
def _row_round_trip(src, dst, b0, rows, t, n0, n1):
    pad = padded(n1 - n0)
    buf = np.full(pad * rows, 7, src.dtype)
    gather(buf, src, b0, rows, t, n0, n1, pad)
    scatter(dst, buf, b0, rows, t, n0, n1, pad)
    return buf


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8, np.int16])
@pytest.mark.parametrize("N", [1, 15, 16, 17, 30, 33, 100])
@pytest.mark.parametrize("strided", [False, True])
def test_row_copies_move_exactly_the_lane_rows(dtype, N, strided):
    """gather/scatter (vector copies for contiguous float and uint8 tensors, slices otherwise): the
    lane's rows arrive in the padded buffer and go back to the same places, nothing else is written,
    and a vector copy zero-fills the buffer past the row to the end of its last register."""
    rng = np.random.default_rng(N)
    full = (rng.random((5, 3, 2 * N)) * 100).astype(dtype)
    src = full[:, :, ::2] if strided else np.ascontiguousarray(full[:, :, :N])
    dst_full = np.zeros_like(full)
    dst = dst_full[:, :, ::2] if strided else np.zeros_like(src)
    for n0, n1 in ((0, N), (N // 3, N), (0, N // 2)):
        buf = _row_round_trip(src, dst, 1, 3, 2, n0, n1)
        m, pad = n1 - n0, -(-(n1 - n0) // 16) * 16
        vector = not strided and dtype != np.int16
        end = -(-m // (8 if dtype == np.float64 else 16)) * (8 if dtype == np.float64 else 16) if vector else m
        for r in range(3):
            np.testing.assert_array_equal(buf[r * pad: r * pad + m], src[1 + r, 2, n0:n1])
            assert (buf[r * pad + m: r * pad + end] == 0).all() and (buf[r * pad + end: (r + 1) * pad] == 7).all()
        np.testing.assert_array_equal(dst[1:4, 2, n0:n1], src[1:4, 2, n0:n1])
        assert not dst[0].any() and not dst[4].any() and not dst[:, :2].any()
        assert not dst[1:4, 2, :n0].any() and not dst[1:4, 2, n1:].any()
        dst[...] = 0
    if strided:
        assert not dst_full[:, :, 1::2].any()


def test_buffer_cache_reuses_only_free_buffers():
    from fastsnn.cpu import buffers

    buffers.empty_cache()
    used0, _ = buffers.cached_bytes()  # buffers that earlier tests' tensors still hold
    shape = (64, 100, 30)  # 768000 bytes: cached
    size = -(-768000 // buffers.PAGE) * buffers.PAGE
    a = buffers.empty(shape, torch.float32)
    ptr = a.data_ptr()
    view = a[:, 5]
    del a
    b = buffers.empty(shape, torch.float32)
    assert b.data_ptr() != ptr  # a view still holds the first buffer
    del view
    c = buffers.empty(shape, torch.float32)
    assert c.data_ptr() == ptr and c.shape == shape and c.dtype == torch.float32
    assert buffers.cached_bytes() == (used0 + 2 * size, 0)
    del b, c
    assert buffers.cached_bytes() == (used0, 2 * size)
    small = buffers.empty((10, 30), torch.float32)  # under MIN_BYTES: plain torch.empty
    assert small.shape == (10, 30) and buffers.cached_bytes() == (used0, 2 * size)
    buffers.empty_cache()
    assert buffers.cached_bytes() == (used0, 0)


def test_buffer_cache_keeps_at_most_its_limit_free(monkeypatch):
    from fastsnn.cpu import buffers

    buffers.empty_cache()
    monkeypatch.setattr(buffers, "limit_bytes", 3 << 20)
    held = [buffers.empty((1 << 18,), torch.float32) for _ in range(5)]  # 1 MiB each
    del held
    buffers.empty((1 << 17,), torch.float32)  # a new size: allocates, then trims the free ones to the limit
    assert buffers.cached_bytes()[1] <= 3 << 20
    buffers.empty_cache()


def test_buffer_cache_limit_below_one_buffer_never_aliases(monkeypatch):
    """With a limit smaller than one buffer, a new buffer is dropped from the cache once freed, never
    handed out in place of another (it used to be trimmed before its tensor held it)."""
    from fastsnn.cpu import buffers

    buffers.empty_cache()
    monkeypatch.setattr(buffers, "limit_bytes", 1)
    a = buffers.empty((1 << 18,), torch.float32)
    a.fill_(1.0)
    b = buffers.empty((1 << 18,), torch.float32)
    b.fill_(2.0)
    assert a.data_ptr() != b.data_ptr() and bool((a == 1).all()) and bool((b == 2).all())
    del a, b
    buffers.empty((1 << 17,), torch.float32)  # trims the free ones: only this call's buffer comes back
    assert buffers.cached_bytes()[1] == 1 << 19
    buffers.empty_cache()
    assert buffers.cached_bytes()[1] == 0


def test_cached_outputs_survive_later_calls():
    """A graph's saved state lives in cached buffers; later calls must not reuse them before its backward."""
    torch.manual_seed(0)
    shape = (48, 70, 30)
    hs = [(torch.randn(shape) * 0.7 + 0.3).requires_grad_() for _ in range(3)]
    outs = [fastsnn.lif(h, 0.85, spike="same_step", reset="subtract", backend="cpu") for h in hs]
    for h, s in reversed(list(zip(hs, outs))):
        (s * torch.linspace(-1, 1, 30)).sum().backward()
    for h, s in zip(hs, outs):
        ref = h.detach().clone().requires_grad_()
        s_ref = fastsnn.lif(ref, 0.85, spike="same_step", reset="subtract", backend="reference")
        (s_ref * torch.linspace(-1, 1, 30)).sum().backward()
        torch.testing.assert_close(s, s_ref, rtol=0, atol=0)
        torch.testing.assert_close(h.grad, ref.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("value, message", [("-1", ">= 0"), ("lots", "whole number")])
def test_buffer_cache_limit_is_validated(value, message):
    proc = subprocess.run([sys.executable, "-c", "import fastsnn.cpu.buffers"], capture_output=True, text=True,
                          env={**os.environ, "FASTSNN_CPU_CACHE_MB": value})
    assert proc.returncode != 0 and "FASTSNN_CPU_CACHE_MB" in proc.stderr and message in proc.stderr

"""The numba launchers of ``fastsnn.cpu`` against the autograd reference: spikes exactly,
values and gradients (dh, dalpha for a per-neuron alpha) to tolerance, on odd shapes."""

import math
import subprocess
import sys

import numba
import numpy as np
import pytest
import torch
from conftest import assert_close

from fastsnn.cpu.lif import lif_bwd, lif_fwd
from fastsnn.cpu.readout import leaky_readout_bwd, leaky_readout_fwd, leaky_readout_sum_bwd, leaky_readout_sum_fwd
from fastsnn.ops.reference import leaky_readout_ref, leaky_readout_sum_ref, lif_ref

BETA = 5.0
ALPHAS = {"zero": 0.0, "tau5": math.exp(-1 / 5), "0.95": 0.95, "one": 1.0, "random": None}
# (B, T, N, alpha, threshold, detach_reset): every B, T, N value and every option, not the product.
SHAPES = [
    (1, 1, 1, "tau5", 1.0, False),
    (3, 1, 257, "random", 0.5, True),
    (64, 2, 1, "0.95", 2.0, False),
    (3, 2, 30, "one", 1.0, True),
    (64, 3, 257, "zero", 0.5, False),
    (1, 3, 30, "random", 1.0, False),
    (1, 63, 30, "one", 2.0, True),
    (3, 63, 257, "tau5", 1.0, False),
    (64, 63, 1, "random", 0.5, True),
    (1, 100, 257, "0.95", 1.0, True),
    (3, 100, 1, "zero", 2.0, True),
    (64, 100, 30, "tau5", 1.0, False),
    (3, 100, 30, "random", 2.0, False),
]
FLOAT64 = {(3, 1, 257), (3, 2, 30), (1, 3, 30), (3, 63, 257), (64, 63, 1), (64, 100, 30)}
CASES = [
    pytest.param(B, T, N, alpha, threshold, detach, dtype, id=f"B{B}-T{T}-N{N}-{str(dtype)[6:]}")
    for dtype in (torch.float32, torch.float64)
    for B, T, N, alpha, threshold, detach in SHAPES
    if dtype == torch.float32 or (B, T, N) in FLOAT64
]
# dtype -> (norm-relative bound, elementwise rtol, elementwise atol as a fraction of max |expected|)
TOL = {torch.float32: (1e-5, 1e-3, 1e-5), torch.float64: (1e-12, 1e-9, 1e-12)}


def inputs(B, T, N, alpha, dtype):
    """h = randn * 0.8 + 0.3 (spikes and silences at threshold 0.5-2), alpha: (N,), upstream grad."""
    gen = torch.Generator().manual_seed(B * 10007 + T * 101 + N)
    h = torch.randn(B, T, N, generator=gen, dtype=dtype) * 0.8 + 0.3
    if ALPHAS[alpha] is None:
        a = torch.rand(N, generator=gen, dtype=dtype)
    else:
        a = torch.full((N,), ALPHAS[alpha], dtype=dtype)
    return h, a, torch.randn(B, T, N, generator=gen, dtype=dtype)


def ref_grads(out, g, h, a):
    """Autograd of a reference output: (dh, dalpha), zeros where out does not depend on them (small T)."""
    grads = torch.autograd.grad(out, (h, a), g, allow_unused=True) if out.requires_grad else (None, None)
    return tuple(torch.zeros_like(x) if d is None else d for d, x in zip(grads, (h, a)))


def check(name, actual, expected, dtype):
    """Norm-relative error under TOL, then elementwise with a loose atol to locate a failure."""
    bound, rtol, atol = TOL[dtype]
    assert actual.dtype == expected.dtype, f"{name}: dtype {actual.dtype} != {expected.dtype}"
    err = float((actual.double() - expected.double()).norm())
    assert err <= bound * float(expected.double().norm()), f"{name}: norm error {err:.3g} vs norm {expected.norm():.3g}"
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    assert_close(name, actual, expected, rtol=rtol, atol=atol * scale)


@pytest.mark.parametrize("B, T, N, alpha, threshold, detach, dtype", CASES)
def test_lif(B, T, N, alpha, threshold, detach, dtype):
    h, a, g = inputs(B, T, N, alpha, dtype)
    h_ref, a_ref = h.clone().requires_grad_(), a.clone().requires_grad_()
    s_ref = lif_ref(h_ref, a_ref, threshold=threshold, beta=BETA, detach_reset=detach)
    dh_ref, dalpha_ref = ref_grads(s_ref, g, h_ref, a_ref)

    s, u, s8 = lif_fwd(h, a, threshold, True)
    assert s.dtype == dtype and u.dtype == dtype and s8.dtype == torch.uint8
    assert torch.equal(s, s_ref.detach()), f"{int((s != s_ref).sum())} spikes differ"
    assert torch.equal(s8, s), "s8 differs from s"
    assert not u.isnan().any() and not u[:, 0].any(), "u unwritten or u_0 != 0"
    if T >= 3:
        assert 0 < int(s.sum()) < s.numel(), "need both spikes and silences to test anything"
    else:
        assert not s.any(), "s_0 = 0 and s_1 = H(-threshold) = 0"
    s_only, no_u, no_s8 = lif_fwd(h, a, threshold, False)
    assert torch.equal(s_only, s) and no_u is None and no_s8 is None

    dh, dalpha = lif_bwd(g, u, s8, a, threshold, BETA, detach, True)
    check("dh", dh, dh_ref, dtype)
    check("dalpha", dalpha, dalpha_ref, dtype)
    dh_only, no_dalpha = lif_bwd(g, u, s8, a, threshold, BETA, detach, False)
    assert torch.equal(dh_only, dh) and no_dalpha is None


@pytest.mark.parametrize("B, T, N, alpha, threshold, detach, dtype", CASES)
def test_leaky_readout(B, T, N, alpha, threshold, detach, dtype):
    h, a, g = inputs(B, T, N, alpha, dtype)
    h_ref, a_ref = h.clone().requires_grad_(), a.clone().requires_grad_()
    u_ref = leaky_readout_ref(h_ref, a_ref)
    dh_ref, dalpha_ref = ref_grads(u_ref, g, h_ref, a_ref)

    u = leaky_readout_fwd(h, a)
    check("u", u, u_ref.detach(), dtype)
    dh, dalpha = leaky_readout_bwd(g, u, a, True)
    check("dh", dh, dh_ref, dtype)
    check("dalpha", dalpha, dalpha_ref, dtype)
    dh_only, no_dalpha = leaky_readout_bwd(g, None, a, False)
    assert torch.equal(dh_only, dh) and no_dalpha is None


@pytest.mark.parametrize("B, T, N, alpha, threshold, detach, dtype", CASES)
def test_leaky_readout_sum(B, T, N, alpha, threshold, detach, dtype):
    h, a, g = inputs(B, T, N, alpha, dtype)
    g_m = g[:, 0].contiguous()
    h_ref, a_ref = h.clone().requires_grad_(), a.clone().requires_grad_()
    m_ref = leaky_readout_sum_ref(h_ref, a_ref)
    dh_ref, dalpha_ref = ref_grads(m_ref, g_m, h_ref, a_ref)

    m = leaky_readout_sum_fwd(h, a)
    check("m", m, m_ref.detach(), dtype)
    dh, dalpha = leaky_readout_sum_bwd(g_m, h, a, T, True)
    check("dh", dh, dh_ref, dtype)
    check("dalpha", dalpha, dalpha_ref, dtype)
    dh_only, no_dalpha = leaky_readout_sum_bwd(g_m, None, a, T, False)
    assert torch.equal(dh_only, dh) and no_dalpha is None


def test_lif_nan_propagates_like_reference():
    h, a, _ = inputs(3, 63, 30, "tau5", torch.float32)
    h[1, 4, 2] = float("nan")
    s, _, _ = lif_fwd(h, a, 1.0, True)
    s_ref = lif_ref(h, a)
    assert s[1, 6:, 2].isnan().all() and torch.equal(s.isnan(), s_ref.isnan())
    assert torch.equal(s.nan_to_num(), s_ref.nan_to_num())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
def test_half_inputs_run_in_float32(dtype):
    h, a, g = inputs(3, 63, 30, "tau5", torch.float32)
    s, u, s8 = lif_fwd(h.to(dtype), a, 1.0, True)
    s32, u32, _ = lif_fwd(h.to(dtype).float(), a, 1.0, True)
    assert s.dtype == dtype and u.dtype == torch.float32 and torch.equal(s.float(), s32) and torch.equal(u, u32)
    dh, _ = lif_bwd(g.to(dtype), u, s8, a, 1.0, BETA, False, False)
    assert dh.dtype == torch.float32
    u_out = leaky_readout_fwd(h.to(dtype), a)
    assert u_out.dtype == dtype and torch.equal(u_out, leaky_readout_fwd(h.to(dtype).float(), a).to(dtype))
    assert leaky_readout_sum_fwd(h.to(dtype), a).dtype == torch.float32


@pytest.mark.parametrize("shape", [(0, 5, 3), (2, 0, 3), (2, 5, 0)], ids=["B0", "T0", "N0"])
def test_empty_shapes(shape):
    B, T, N = shape
    h, a, g = torch.zeros(shape), torch.full((N,), 0.8), torch.zeros(shape)
    s, u, s8 = lif_fwd(h, a, 1.0, True)
    dh, dalpha = lif_bwd(g, u, s8, a, 1.0, BETA, False, True)
    assert s.shape == u.shape == s8.shape == dh.shape == shape and torch.equal(dalpha, torch.zeros(N))
    dh, dalpha = leaky_readout_bwd(g, leaky_readout_fwd(h, a), a, True)
    assert dh.shape == shape and torch.equal(dalpha, torch.zeros(N))
    m = leaky_readout_sum_fwd(h, a)
    dh, dalpha = leaky_readout_sum_bwd(m, h, a, T, True)
    assert m.shape == (B, N) and torch.equal(m, torch.zeros(B, N)) and dh.shape == shape
    assert torch.equal(dalpha, torch.zeros(N))


def test_threads_follow_torch():
    h, a, g = inputs(64, 63, 257, "random", torch.float32)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, before):
            torch.set_num_threads(threads)
            s, u, s8 = lif_fwd(h, a, 1.0, True)
            assert numba.get_num_threads() == min(threads, numba.config.NUMBA_NUM_THREADS)
            results.append((s, *lif_bwd(g, u, s8, a, 1.0, BETA, False, True)))
    finally:
        torch.set_num_threads(before)
    for x, y in zip(*results):
        assert torch.equal(x, y), "results depend on the thread count"


def test_first_kernel_call_keeps_torchs_thread_count():
    # numba's OpenMP start-up resets the thread count torch shares; a fresh process shows it
    code = ("import torch; torch.set_num_threads(1); import fastsnn; "
            "fastsnn.lif(torch.randn(2, 5, 3), 0.8, backend='cpu'); print(torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"


def test_vectorised_exp_is_accurate_to_two_ulp():
    """The LIF backward's float32 exp (a polynomial, so that its loop vectorises) against float64 exp."""
    from fastsnn.cpu.lif import exp_nonpositive

    @numba.njit
    def run(x, out, bits):
        exp_nonpositive(x, out, bits)

    x = -np.concatenate([np.linspace(0, 87, 200_001), np.random.default_rng(0).exponential(3, 10_001)])
    x = np.maximum(x, -87).astype(np.float32)
    out = np.empty_like(x)
    run(x, out, np.empty(x.shape, np.int32))
    exact = np.exp(x.astype(np.float64))
    assert np.all(np.abs(out - exact) <= 2 * np.spacing(exact.astype(np.float32)))
    # below -87 float32 exp turns subnormal: exactly 0 instead, never a subnormal
    tail = np.array([-87.01, -90, -103, -200, -np.inf], np.float32)
    run(tail, out[:5], np.empty(5, np.int32))
    np.testing.assert_array_equal(out[:5], 0)
    out64 = np.empty(5)
    run(np.linspace(-5, 0, 5), out64, np.empty(5, np.int32))  # float64 keeps np.exp
    np.testing.assert_array_equal(out64, np.exp(np.linspace(-5, 0, 5)))


def test_backward_flushes_subnormals_and_restores_the_fp_mode():
    """Backward kernels flush subnormals (they cost 20-100x per operation on x86) and then
    restore the thread's floating-point mode, so code running afterwards keeps them."""
    import platform

    from fastsnn.cpu import flush_subnormals, restore_subnormals

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
    s, u, s8 = lif_fwd(h, torch.full((5,), 0.8), 1.0, True)
    lif_bwd(torch.randn_like(h), u, s8, torch.full((5,), 0.8), 1.0, BETA, False, False)
    assert np.float32(2e-38) * np.float32(0.5) > 0


def test_forward_keeps_subnormal_membranes():
    """A subnormal membrane above a threshold of 0 spikes, as in the reference (no flush in forwards)."""
    h = torch.zeros(1, 4, 2)
    h[0, 0] = torch.tensor([1e-39, -1e-39])
    s, _, _ = lif_fwd(h, torch.full((2,), 0.5), 0.0, True)
    expected = lif_ref(h, 0.5, threshold=0.0, beta=BETA)
    assert torch.equal(s, expected) and s[0, 2, 0] == 1

"""The LIF family (``fastsnn.lif``, ``fastsnn.alif``, with and without ``time_weights``) on every backend
against the reference (``fastsnn.ops.neurons.reference``); the launchers of ``fastsnn/ops/neurons/cpu.py`` and
``fastsnn/kernels/neurons.py``; input validation; saved bytes; NaN propagation; empty shapes.

Tolerances. Forward: exact. Spikes jump at the threshold, so the kernels round ``alpha v + h`` as the
reference does (a multiply, then an add) and every spike equals the reference's; time-weighted sums
use dyadic weights here, so that every order of summation is exact too. Backward: the norm-relative
error ||a - b|| / ||b|| of dh, dalpha and drho against autograd over the reference is below 1e-5 in
float32 (rounding in another order) and 1e-12 in float64 (the "float64 adjoint checks"), plus an
elementwise check that names the worst element.

The Triton interpreter runs every program's time loop in Python, so its cases are small: every
combination of the neuron's options once on a (3, 6, 5) plane (one program, masked on both axes), half
of them with time weights (each structural variant and each option value both with and without), then
each structural variant (spike x reset x adaptive) on an awkward shape and at T = 1, 2. The CPU kernels
run every combination, with and without time weights, on several shapes, in float32 and float64.
"""

import itertools
import math
from typing import NamedTuple

import numpy as np
import pytest
import torch
from conftest import (FAST, TAU5, WITH_REFERENCE, assert_close, assert_grad_close, backend_device, currents, leaf,
                      rel_err, saved_bytes, vjp)

import fastsnn
from fastsnn.ops import readout_time_weights, resolve_backend
from fastsnn.ops.neurons import LIFFunction
from fastsnn.ops.neurons.neuron import Neuron
from fastsnn.ops.neurons.reference import lif_ref, lif_sum_ref, spike_fn

BETA = 5.0
F32, F64, BF16, F16 = torch.float32, torch.float64, torch.bfloat16, torch.float16
HALF_TOL = {BF16: 1e-2, F16: 2e-3}  # dh is rounded once to the input dtype


def launchers(backend: str):
    """The module holding the LIF launchers of a fast backend."""
    if backend == "triton":
        import fastsnn.kernels.neurons as kernels
    else:
        import fastsnn.ops.neurons.cpu as kernels
    return kernels


def state(dtype: torch.dtype) -> torch.dtype:
    return F64 if dtype == F64 else F32


# =====================================================================================================
# The family: every option against the reference
# =====================================================================================================

STRUCTURES = [("delayed", "zero"), ("delayed", "subtract"), ("same_step", "zero"), ("same_step", "subtract"),
              ("same_step", "subtract_next")]
OPTIONS = list(itertools.product([False, True], ["sigmoid", "atan"], [False, True], [">", ">="], [False, True]))
COMBOS = [(spike, reset, adaptive, surrogate, detach, fire, weighted)
          for spike, reset in STRUCTURES for adaptive, surrogate, detach, fire, weighted in OPTIONS]
# (threshold, beta, adapt): dyadic, so that dyadic inputs keep the membrane exact and ties happen
PARAMS = [(1.0, 5.0, 1.0), (0.5, 2.0, 0.25), (1.5, 4.0, 0.5)]


class Case(NamedTuple):
    backend: str
    dtype: torch.dtype
    B: int
    T: int
    N: int
    spike: str
    reset: str
    adaptive: bool
    surrogate: str
    detach: bool
    fire: str
    weighted: bool
    params: tuple = PARAMS[0]
    ties: bool = True  # dyadic h, alpha, rho: the membrane lands exactly on theta now and then

    def __str__(self):
        kind = "alif" if self.adaptive else "lif"
        name = f"{self.backend}-B{self.B}-T{self.T}-N{self.N}-{self.spike}-{self.reset}-{kind}-{self.surrogate}"
        name += "-detach" * self.detach + "-ge" * (self.fire == ">=") + "-tw" * self.weighted
        name += "" if self.ties else "-cont"
        return name + ("-float64" if self.dtype == F64 else "")

    def options(self) -> dict:
        threshold, beta, _ = self.params
        return dict(spike=self.spike, reset=self.reset, surrogate=self.surrogate, fire=self.fire,
                    detach_reset=self.detach, threshold=threshold, beta=beta)


def family_cases() -> list:
    cases = []
    for i, combo in enumerate(COMBOS):
        # CPU, float32: every combination on (3, 13, 37) with ties, on a longer or wider shape with
        # continuous inputs, and at T = 1 or 2; float64 on (3, 13, 37), every fourth also at T = 63
        cases.append(Case("cpu", F32, 3, 13, 37, *combo, PARAMS[i % 3]))
        cases.append(Case("cpu", F32, *[(3, 63, 37), (1, 63, 257), (3, 13, 257)][i % 3], *combo, PARAMS[(i + 1) % 3],
                          ties=False))
        cases.append(Case("cpu", F32, 3, 1 + i % 2, 37, *combo, PARAMS[(i + 2) % 3]))
        cases.append(Case("cpu", F64, 3, 13, 37, *combo, PARAMS[i % 3]))
        if i % 4 == 0:
            cases.append(Case("cpu", F64, 3, 63, 37, *combo, PARAMS[(i + 1) % 3], ties=False))
        # Triton: every combination of the neuron's options once, small, half of them with time weights
        # (balanced: each structural variant and each option value both with and without)
        spike, reset, adaptive, surrogate, detach, fire, weighted = combo
        if weighted == ((surrogate == "atan") + detach + (fire == ">=")) % 2:
            cases.append(Case("triton", F32, 3, 6, 5, *combo, PARAMS[i % 3]))
    # Triton: each structural variant on an awkward shape (the other options rotating), and at T = 1, 2
    for j, ((spike, reset), adaptive) in enumerate(itertools.product(STRUCTURES, [False, True])):
        opts = OPTIONS[(5 * j + 3) % len(OPTIONS)][1:]
        shape = {3: (3, 63, 37), 8: (2, 13, 257)}.get(j, (3, 13, 37))
        cases.append(Case("triton", F32, *shape, spike, reset, adaptive, *opts, PARAMS[j % 3], ties=j % 2 == 0))
        for T in (1, 2):
            cases.append(Case("triton", F32, 3, T, 37, spike, reset, adaptive, *OPTIONS[(7 * j + T) % len(OPTIONS)][1:],
                              PARAMS[(j + T) % 3]))
    return cases


FAMILY = family_cases()
DYADIC_ALPHAS = torch.tensor([0.5, 0.625, 0.75, 0.875, 1.0], dtype=F64)
DYADIC_RHOS = torch.tensor([0.5, 0.75, 0.875], dtype=F64)


def family_inputs(case: Case, seed: int = 0):
    """CPU tensors in the case's dtype: h (B, T, N), alpha (N,), rho (N,), time weights (T,) or None.

    With ``ties``, h is a multiple of threshold / 8 and alpha, rho are dyadic, so that the membrane is
    exact for a while and sometimes equals theta (where fire=">" and ">=" differ); else continuous."""
    threshold = case.params[0]
    g = torch.Generator().manual_seed(seed + case.B * 10007 + case.T * 101 + case.N)
    h = (torch.randn(case.B, case.T, case.N, generator=g, dtype=F64) * 0.8 + 0.3) * threshold
    if case.ties:
        h = torch.round(h * 8 / threshold) * threshold / 8
        alpha = DYADIC_ALPHAS[torch.randint(len(DYADIC_ALPHAS), (case.N,), generator=g)]
        rho = DYADIC_RHOS[torch.randint(len(DYADIC_RHOS), (case.N,), generator=g)]
    else:
        alpha = torch.rand(case.N, generator=g, dtype=F64) * 0.5 + 0.5
        rho = torch.rand(case.N, generator=g, dtype=F64) * 0.5 + 0.4
    weights = (torch.arange(case.T, dtype=F64) % 7 - 2) / 4 if case.weighted else None  # dyadic, some < 0 and 0
    return [None if t is None else t.to(case.dtype) for t in (h, alpha, rho, weights)]


def run_family(case: Case, h, alpha, rho, weights, backend: str, device: str = "cpu"):
    """The op on ``backend`` (``"oracle"``: lif_ref directly) with grad-requiring copies of the inputs:
    (output, [h, alpha, rho] leaves; rho only for alif)."""
    h, alpha, rho = (leaf(t.requires_grad_(), device) for t in (h, alpha, rho))
    inputs = [h, alpha, rho] if case.adaptive else [h, alpha]
    adapt = case.params[2]
    if backend == "oracle":
        options = {k: v for k, v in case.options().items() if k != "detach_reset"}
        s = lif_ref(h, alpha, rho if case.adaptive else None, adapt=adapt, detach_reset=case.detach, **options)
        return (s if weights is None else (s * weights[:, None]).sum(1)), inputs
    w = None if weights is None else weights.to(device)
    if case.adaptive:
        return fastsnn.alif(h, alpha, rho, adapt=adapt, time_weights=w, backend=backend, **case.options()), inputs
    return fastsnn.lif(h, alpha, time_weights=w, backend=backend, **case.options()), inputs


@pytest.mark.parametrize("case", FAMILY, ids=str)
def test_family_matches_reference(case):
    device = backend_device(case.backend)
    h, alpha, rho, weights = family_inputs(case)
    expected, ref_inputs = run_family(case, h, alpha, rho, weights, "oracle")
    got, inputs = run_family(case, h, alpha, rho, weights, case.backend, device)

    assert got.dtype == case.dtype and got.shape == expected.shape
    if case.T >= 6 and not case.weighted:  # a test of spikes needs spikes and silences
        assert 0 < float(expected.detach().mean()) < 1
    assert torch.equal(got.cpu(), expected.detach()), f"{int((got.cpu() != expected).sum())} outputs differ"

    upstream = torch.randn(expected.shape, generator=torch.Generator().manual_seed(7), dtype=F64)
    rtol = 1e-12 if case.dtype == F64 else 1e-5
    for name, x, y in zip(["dh", "dalpha", "drho"], vjp(got, inputs, upstream), vjp(expected, ref_inputs, upstream)):
        assert x.dtype == case.dtype, name
        assert_grad_close(name, x, y, rtol=rtol)


GROUPED = [c for c in FAMILY if c.backend == "cpu" and (c.B, c.N) == (3, 37) and c.T in (13, 63)
           and (c.dtype == F32) == (c.T == 13)]


@pytest.mark.parametrize("rows", [2, 4])
@pytest.mark.parametrize("case", GROUPED, ids=str)
def test_cpu_backward_with_several_batch_rows_per_lane(case, rows, monkeypatch):
    """The numba backward runs ``fastsnn.cpu.launch_group`` batch rows side by side in one lane (2 or 4 at
    the seed's width, when there are lanes enough); forced to 2 on B = 3 (a full lane and one holding a
    single row) or to 4 (one lane, a row short), every family member still equals the reference."""
    from fastsnn.ops.neurons import cpu as lif_cpu

    monkeypatch.setattr(lif_cpu, "launch_group", lambda B, N, block, width: rows)
    test_family_matches_reference(case)


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("kind", ["lif", "alif-same-step"])
def test_a_gradient_constant_in_time_takes_the_time_weighted_backward(backend, device, kind, monkeypatch):
    """The gradient of spikes.sum() is a broadcast view (stride 0 along time); the backward then runs the
    time-weighted kernel with unit weights on one row of it instead of copying it to (B, T, N): the same
    numbers, bit for bit, as with the gradient materialised."""
    import fastsnn.ops.neurons as lif_module

    calls = []
    real = lif_module._lif_bwd
    monkeypatch.setattr(lif_module, "_lif_bwd", lambda grad, *a: calls.append(grad.shape) or real(grad, *a))
    g = torch.Generator().manual_seed(3)
    h = leaf((torch.randn(3, 17, 37, generator=g) * 0.8 + 0.3).requires_grad_(), device)
    alpha, rho = (leaf((torch.rand(37, generator=g) * 0.4 + 0.5).requires_grad_(), device) for _ in range(2))
    if kind == "lif":
        s, inputs = fastsnn.lif(h, alpha, backend=backend), [h, alpha]
    else:
        s, inputs = fastsnn.alif(h, alpha, rho, spike="same_step", reset="subtract", backend=backend), [h, alpha, rho]
    summed = torch.autograd.grad(s.sum(), inputs, retain_graph=True)
    full = torch.autograd.grad(s, inputs, torch.ones(s.shape, device=s.device))
    assert calls == [(3, 37), (3, 17, 37)]  # the broadcast gradient went in as one row
    for x, y in zip(summed, full):
        assert torch.equal(x, y)


def test_launch_group_keeps_four_lanes_a_thread():
    from fastsnn.cpu import launch_block, launch_group, sync_threads

    threads = sync_threads()
    B = 16 * threads  # lanes enough for any thread count
    assert launch_group(B, 30, launch_block(B, 30)) == 2  # 30 neurons pad to 32: 2 rows make 64 values
    assert launch_group(B, 1024, launch_block(B, 1024)) == 1
    assert launch_group(2 * threads, 30, launch_block(2 * threads, 30)) == 1  # 2 rows a lane would leave 1 lane a thread
    assert launch_group(0, 30, 30) == 1  # no rows: nothing to group
    assert launch_group(B, 30, launch_block(B, 30), width=128) == 4  # a wider lane: 4 rows of 32
    from fastsnn.ops.neurons.cpu import _group_width
    from fastsnn.ops.neurons.neuron import Neuron

    assert _group_width(Neuron(same_step=True, reset=1)) == 128  # reads u alone: 4 rows
    assert _group_width(Neuron()) == _group_width(Neuron(same_step=True, adaptive=True)) == 64


@pytest.mark.parametrize("spike,reset", STRUCTURES, ids=[f"{s}-{r}" for s, r in STRUCTURES])
@pytest.mark.parametrize("adaptive", [False, True], ids=["lif", "alif"])
def test_family_inputs_make_fire_matter(spike, reset, adaptive):
    """The family's tie inputs hit theta exactly, so its fire=">" and ">=" cases test different spikes."""
    case = Case("cpu", F32, 3, 13, 37, spike, reset, adaptive, "sigmoid", False, ">", False)
    h, alpha, rho, _ = family_inputs(case)
    fired = [lif_ref(h, alpha, rho if adaptive else None, fire=fire, spike=spike, reset=reset) for fire in (">", ">=")]
    assert not torch.equal(*fired)


@pytest.mark.parametrize("backend", WITH_REFERENCE)
@pytest.mark.parametrize("spike,reset", [("delayed", "subtract"), ("same_step", "subtract_next")])
def test_alif_takes_float_decays(backend, device, spike, reset):
    """alpha and rho as floats give the result of the same values as (N,) tensors."""
    h = currents(2, 20, 5, device=device, requires_grad=False)
    options = dict(adapt=0.5, spike=spike, reset=reset, backend=backend)
    by_float = fastsnn.alif(h, TAU5, 0.9, **options)
    by_tensor = fastsnn.alif(h, torch.full((5,), TAU5, device=device), torch.full((5,), 0.9, device=device), **options)
    assert torch.equal(by_float, by_tensor)
    assert torch.equal(by_float.cpu(), lif_ref(h.cpu(), TAU5, 0.9, adapt=0.5, spike=spike, reset=reset))
    assert not torch.equal(by_float, fastsnn.lif(h, TAU5, spike=spike, reset=reset, backend=backend))


@pytest.mark.parametrize("surrogate", ["sigmoid", "atan"])
@pytest.mark.parametrize("fire_ge", [False, True])
def test_reference_surrogates_are_the_documented_pseudo_derivatives(surrogate, fire_ge):
    """The oracle itself: H forward (x > 0, or x >= 0), NaN staying NaN; the surrogate backward."""
    x = torch.tensor([-2.0, -0.3, 0.0, 0.1, 1.5, float("nan")], dtype=F64, requires_grad=True)
    s = spike_fn(x, 3.0, surrogate, fire_ge)
    assert s[:5].tolist() == [0, 0, float(fire_ge), 1, 1] and s[5].isnan()
    (dx,) = torch.autograd.grad(s.sum(), x)
    xd = x.detach()
    if surrogate == "sigmoid":
        expected = 3.0 * torch.sigmoid(3.0 * xd) * (1 - torch.sigmoid(3.0 * xd))
    else:
        expected = 3.0 / 2 / (1 + (math.pi / 2 * 3.0 * xd) ** 2)
    torch.testing.assert_close(dx, expected, equal_nan=True, rtol=1e-15, atol=0)


# =====================================================================================================
# The seed's neuron through the public function (the old test_ops.py cases)
# =====================================================================================================

def alpha_for(kind, N, seed=1, device="cpu"):
    if kind == "tensor":
        a = torch.rand(N, generator=torch.Generator().manual_seed(seed)) * 0.5 + 0.5
        return a.to(device).requires_grad_()
    return kind


CASES = [(3, 63, 30, True, TAU5, 1.0, False), (1, 2, 1, True, "tensor", 1.0, True),
         (4, 17, 257, False, "tensor", 0.5, False), (64, 3, 5, False, 0.95, 2.0, True),
         (2, 1, 3, True, TAU5, 1.0, False)]


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("B,T,N,contiguous,alpha,threshold,detach", CASES,
                         ids=[f"B{c[0]}-T{c[1]}-N{c[2]}-{'contig' if c[3] else 'strided'}-a{c[4]}-d{int(c[6])}"
                              for c in CASES])
def test_lif_matches_reference(backend, device, B, T, N, contiguous, alpha, threshold, detach):
    h = currents(B, T, N, contiguous=contiguous, device=device)
    a = alpha_for(alpha, N, device=device)
    h_ref, a_ref = leaf(h), leaf(a)
    expected = lif_ref(h_ref, a_ref, threshold=threshold, detach_reset=detach)
    got = fastsnn.lif(h, a, threshold=threshold, detach_reset=detach, backend=backend)
    assert torch.equal(got.cpu(), expected)
    if T >= 3:
        assert 0 < expected.mean() < 0.6
    for name, x, y in zip(["dh", "dalpha"], vjp(got, [h, a]), vjp(expected, [h_ref, a_ref])):
        assert rel_err(x, y) < 1e-5 or (x == 0).all() and (y == 0).all(), name
        assert_close(name, x, y, rtol=1e-4, atol=1e-4 * y.abs().max().item())


SUM_CASES = [(3, 63, 30, True, TAU5, 1.0, False, "ones"), (1, 2, 1, True, "tensor", 1.0, True, "ramp"),
             (4, 17, 257, False, "tensor", 0.5, False, "readout"), (64, 3, 5, False, 0.95, 2.0, True, "ramp"),
             (2, 1, 3, True, TAU5, 1.0, False, "ones")]


def time_weights(kind, T):
    if kind == "ones":  # a spike count
        return torch.ones(T)
    if kind == "ramp":
        return torch.linspace(-1, 2, T)
    return torch.tensor(readout_time_weights(TAU5, T), dtype=torch.float32)


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("B,T,N,contiguous,alpha,threshold,detach,weights", SUM_CASES,
                         ids=[f"B{c[0]}-T{c[1]}-N{c[2]}-a{c[4]}-d{int(c[6])}-{c[7]}" for c in SUM_CASES])
def test_time_weights_match_reference(backend, device, B, T, N, contiguous, alpha, threshold, detach, weights):
    h = currents(B, T, N, contiguous=contiguous, device=device)
    a = alpha_for(alpha, N, device=device)
    w = time_weights(weights, T)
    h_ref, a_ref = leaf(h), leaf(a)
    expected = lif_sum_ref(h_ref, a_ref, w, threshold=threshold, detach_reset=detach)
    got = fastsnn.lif(h, a, time_weights=w.to(device), threshold=threshold, detach_reset=detach, backend=backend)
    assert got.shape == (B, N) and got.dtype == h.dtype
    assert_close("out", got.cpu(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.cpu(), (fastsnn.lif(h, a, threshold=threshold, backend=backend).cpu()
                                           * w[:, None]).sum(1), rtol=1e-5, atol=1e-5)
    for name, x, y in zip(["dh", "dalpha"], vjp(got, [h, a]), vjp(expected, [h_ref, a_ref])):
        assert rel_err(x, y) < 1e-5 or (x == 0).all() and (y == 0).all(), name


@pytest.mark.parametrize("backend", WITH_REFERENCE)
@pytest.mark.parametrize("dtype", [F64, BF16, F16], ids=str)
def test_time_weights_other_dtypes(backend, device, dtype):
    """float64 (CPU kernels only; to 1e-12 against the float64 reference) and 16-bit inputs
    (against the float32 reference on the upcast input, within one rounding to 16 bits)."""
    if dtype == F64 and backend == "triton":
        pytest.skip("Triton kernels take float32, bfloat16 and float16")
    h = currents(3, 40, 7, dtype=dtype, device=device)
    ref_dtype = state(dtype)
    h_ref = h.detach().to(ref_dtype).cpu().requires_grad_()
    w = torch.linspace(-1, 2, 40)
    got = fastsnn.lif(h, TAU5, time_weights=w.to(device), backend=backend)
    expected = lif_sum_ref(h_ref, TAU5, w.to(ref_dtype))
    tol = 1e-12 if dtype == F64 else HALF_TOL[dtype]
    assert got.dtype == dtype and rel_err(got.cpu(), expected) < tol
    (dh,) = vjp(got.to(ref_dtype), [h])  # the same upstream gradient as the reference's
    (dh_ref,) = vjp(expected, [h_ref])
    assert dh.dtype == dtype and rel_err(dh, dh_ref) < tol


@pytest.mark.parametrize("backend", WITH_REFERENCE)
@pytest.mark.parametrize("dtype", list(HALF_TOL), ids=str)
def test_half_precision_inputs(backend, device, dtype):
    # spikes as the float32 reference on the upcast input; dh within one rounding to 16 bits
    h = currents(3, 40, 7, dtype=dtype, device=device)
    h32 = h.detach().float().cpu().requires_grad_()
    s = fastsnn.lif(h, TAU5, backend=backend)
    expected = lif_ref(h32, TAU5)
    assert s.dtype == dtype and torch.equal(s.float().cpu(), expected)
    (dh,) = vjp(s.float(), [h])
    (dh_ref,) = vjp(expected, [h32])
    assert dh.dtype == dtype and rel_err(dh, dh_ref) < HALF_TOL[dtype]


# --- NaN ----------------------------------------------------------------------------------------------

# the Triton interpreter casts NaN spikes to uint8 (s8) with numpy, which warns
nan_cast = pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")


@nan_cast
@pytest.mark.parametrize("backend", WITH_REFERENCE)
@pytest.mark.parametrize("B,T,N", [(2, 12, 3), (3, 63, 30)])
def test_nan_in_h_propagates_to_later_spikes(backend, device, B, T, N):
    h = currents(B, T, N, requires_grad=False)
    h[1, 4, 2] = float("nan")
    s = fastsnn.lif(h.to(device), TAU5, backend=backend).cpu()
    assert torch.isnan(s[1, 6:, 2]).all()  # v_5 is NaN, so s_6 = H(v_5 - 1) on are NaN
    assert not torch.isnan(s[1, :6, 2]).any() and not torch.isnan(s[0]).any() and not torch.isnan(s[1, :, :2]).any()
    expected = lif_ref(h, TAU5)
    assert torch.equal(s.isnan(), expected.isnan()) and torch.equal(s.nan_to_num(), expected.nan_to_num())


@nan_cast
@pytest.mark.parametrize("backend", WITH_REFERENCE)
def test_nan_time_weight_propagates(backend, device):
    h = currents(2, 6, 3, device=device, requires_grad=False) * 4
    out = fastsnn.lif(h, TAU5, time_weights=[1.0, 1.0, float("nan"), 1.0, 1.0, 1.0], backend=backend)
    assert torch.isnan(out).all()


# every structural variant with both surrogates on the CPU (its float32 sigmoid runs a polynomial exp),
# with one of them, alternating, on Triton (the interpreter is slow)
NAN_CASES = [pytest.param(backend, spike, reset, adaptive, surrogate,
                          id=f"{backend}-{spike}-{reset}-{'alif' if adaptive else 'lif'}-{surrogate}")
             for backend in ("cpu", "triton") for i, (spike, reset) in enumerate(STRUCTURES)
             for adaptive in (False, True) for surrogate in ("sigmoid", "atan")
             if backend == "cpu" or (i + adaptive + (surrogate == "atan")) % 2 == 0]


@nan_cast
@pytest.mark.parametrize("backend,spike,reset,adaptive,surrogate", NAN_CASES)
def test_nan_in_h_gives_the_references_nan_gradients(backend, device, spike, reset, adaptive, surrogate):
    """Issue 9, item 6: with NaN in h, the backward's NaN pattern (which elements of dh, dalpha, drho are
    NaN) is the reference's, and the finite elements match it. One NaN in each of neurons 0-3 (4 and 5
    stay finite), at t = 0, 4, T-2 and T-1 of a batch row: at T-2 it reaches only the delayed neuron's
    unused v_{T-1} (no NaN gradient), at T-1 nothing (delayed) or s_{T-1} (same-step). On the CPU float32
    exercises the backward's polynomial exp, float64 np.exp."""
    T = 12
    for dtype in (F32, F64) if backend == "cpu" else (F32,):
        structure, atan = STRUCTURES.index((spike, reset)), surrogate == "atan"
        case = Case(backend, dtype, 2, T, 6, spike, reset, adaptive, surrogate, (structure + adaptive) % 2 == 1, ">",
                    (structure + atan) % 2 == 1, ties=False)  # each structure with and without detach, weights
        h, alpha, rho, weights = family_inputs(case)
        for b, t, n in [(0, 0, 0), (1, 4, 1), (1, T - 2, 2), (0, T - 1, 3)]:
            h[b, t, n] = float("nan")
        expected, ref_inputs = run_family(case, h, alpha, rho, weights, "oracle")
        got, inputs = run_family(case, h, alpha, rho, weights, backend, device)
        assert torch.equal(got.isnan().cpu(), expected.isnan())
        upstream = torch.randn(expected.shape, generator=torch.Generator().manual_seed(3), dtype=F64)
        grads, ref_grads = vjp(got, inputs, upstream), vjp(expected, ref_inputs, upstream)
        for name, x, y in zip(["dh", "dalpha", "drho"], grads, ref_grads):
            assert y.isnan().any() and not y.isnan().all(), f"{name}: the test needs NaN and finite elements"
            assert torch.equal(x.isnan(), y.isnan()), f"{name} ({dtype}): NaN at {x.isnan().nonzero().tolist()}, " \
                                                      f"expected at {y.isnan().nonzero().tolist()}"
            finite = ~y.isnan()
            assert_grad_close(name, x[finite], y[finite], rtol=1e-12 if dtype == F64 else 1e-5)


# --- saved state --------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", FAST)
def test_saves_five_bytes_per_element(backend, device):
    # the reference's autograd keeps ~3 float32 per element and step (alpha v + h, 1 - s, v - 1)
    B, T, N = 8, 50, 30
    h = currents(B, T, N, device=device)
    ref = saved_bytes(lambda: lif_ref(h, TAU5))
    fast = saved_bytes(lambda: fastsnn.lif(h, TAU5, backend=backend))
    assert fast <= B * T * N * 5 + 8 * N  # u (float32) + s8 (uint8) + alpha
    assert 2 * fast <= ref, (fast, ref)


@pytest.mark.parametrize("backend", FAST)
def test_alif_saves_nine_bytes_per_element(backend, device):
    """alif adds its adaptation a (float32): u + s8 + a, alpha and rho."""
    B, T, N = 2, 9, 4
    h = currents(B, T, N, device=device)
    saved = saved_bytes(lambda: fastsnn.alif(h, TAU5, torch.full((N,), 0.9, device=device), backend=backend))
    assert saved == B * T * N * 9 + 2 * 4 * N


@pytest.mark.parametrize("backend", FAST)
def test_time_weights_save_no_spikes(backend, device):
    """Forward state as for lif (u float32 + s uint8, 5 bytes per element) plus alpha and the weights."""
    h = currents(2, 9, 4, device=device)
    w = torch.ones(9, device=device)
    saved = saved_bytes(lambda: fastsnn.lif(h, TAU5, time_weights=w, backend=backend))
    assert saved == 2 * 9 * 4 * 5 + 4 * 4 + 9 * 4


@pytest.mark.parametrize("backend", FAST)
def test_inference_saves_nothing(backend, device):
    h = currents(2, 9, 4, device=device)
    with torch.no_grad():
        assert saved_bytes(lambda: fastsnn.lif(h, TAU5, backend=backend)) == 0
        assert saved_bytes(lambda: fastsnn.alif(h, TAU5, 0.9, backend=backend)) == 0
    assert saved_bytes(lambda: fastsnn.lif(h.detach(), TAU5, backend=backend)) == 0  # nothing needs a gradient
    alpha, rho = torch.full((4,), TAU5, device=device), torch.full((4,), 0.9, device=device)
    for args in [(alpha, None, None, *Neuron()), (alpha, rho, torch.ones(9, device=device), *Neuron(adaptive=True))]:
        out, u, s8, a = LIFFunction.apply(h.detach(), *args, False, backend)
        assert u.numel() == 0 and s8.numel() == 0 and a.numel() == 0
        assert out.shape == ((2, 9, 4) if args[2] is None else (2, 4))


# --- empty shapes, short sequences -------------------------------------------------------------------

def family_call(kind: str, h, alpha, rho, backend: str):
    if kind == "lif":
        return fastsnn.lif(h, alpha, backend=backend)
    if kind == "lif-tw":
        return fastsnn.lif(h, alpha, time_weights=torch.ones(h.shape[1], device=h.device), backend=backend)
    return fastsnn.alif(h, alpha, rho, backend=backend)


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("kind", ["lif", "lif-tw", "alif"])
@pytest.mark.parametrize("shape", [(0, 5, 3), (2, 5, 0), (2, 0, 3)], ids=["B0", "N0", "T0"])
def test_empty_shapes_backward_gives_zeros(backend, device, kind, shape):
    """Issue 9, item 6: the backward of an empty (B, T, N) runs and gives zero gradients of the inputs'
    shapes (Triton's backward tiled the (B, N) plane before it checked for an empty one: 1 // 0)."""
    h = torch.zeros(shape, device=device, requires_grad=True)
    alpha = torch.full((shape[2],), 0.8, device=device, requires_grad=True)
    rho = torch.full((shape[2],), 0.9, device=device, requires_grad=True)
    out = family_call(kind, h, alpha, rho, backend)
    assert out.shape == (shape if kind != "lif-tw" else (shape[0], shape[2]))
    out.sum().backward()
    assert torch.equal(h.grad, torch.zeros(shape, device=device))
    assert torch.equal(alpha.grad, torch.zeros(shape[2], device=device))
    if kind == "alif":
        assert torch.equal(rho.grad, torch.zeros(shape[2], device=device))


@pytest.mark.parametrize("backend", WITH_REFERENCE)
@pytest.mark.parametrize("kind", ["lif", "lif-tw", "alif"])
@pytest.mark.parametrize("T", [0, 1])
def test_short_sequences_keep_a_graph(backend, device, kind, T):
    """Issue 9, item 6: for T <= 1 delayed spikes do not depend on h, yet every backend (the reference
    too) returns an output with a graph, whose backward gives zero gradients."""
    h = currents(2, T, 3, device=device)
    alpha = torch.full((3,), 0.8, device=device, requires_grad=True)
    rho = torch.full((3,), 0.9, device=device, requires_grad=True)
    out = family_call(kind, h, alpha, rho, backend)
    assert out.requires_grad
    out.sum().backward()
    assert not h.grad.any() and not alpha.grad.any()
    assert rho.grad is None if kind != "alif" else not rho.grad.any()


@pytest.mark.parametrize("backend", [
    pytest.param("reference", id="reference"),
    pytest.param("cpu", id="cpu"),
    pytest.param("triton", id="triton")])
def test_weighted_sum_of_no_steps_is_zero(backend, device):
    h = torch.zeros(2, 0, 3, device=device, requires_grad=True)
    for out in (fastsnn.lif(h, 0.8, time_weights=torch.ones(0, device=device), backend=backend),
                fastsnn.alif(h, 0.8, 0.9, time_weights=torch.ones(0, device=device), spike="same_step",
                             backend=backend)):
        assert torch.equal(out.detach().cpu(), torch.zeros(2, 3))


def test_reference_keeps_an_empty_time_axis():
    h = torch.zeros(2, 0, 3)
    assert fastsnn.lif(h, 0.8, backend="cpu").shape == (2, 0, 3)
    assert fastsnn.lif(h, 0.8, backend="reference").shape == (2, 0, 3)


# =====================================================================================================
# The launchers (old test_cpu_kernels.py and test_triton_kernels.py, LIF part)
# =====================================================================================================

ALPHAS = {"zero": 0.0, "tau5": TAU5, "0.95": 0.95, "one": 1.0, "random": None}
# (B, T, N, dtype, alpha, threshold, detach_reset): every B, T, N value and every option, not their product
CPU_SHAPES = [
    (1, 1, 1, "tau5", 1.0, False), (3, 1, 257, "random", 0.5, True), (64, 2, 1, "0.95", 2.0, False),
    (3, 2, 30, "one", 1.0, True), (64, 3, 257, "zero", 0.5, False), (1, 3, 30, "random", 1.0, False),
    (1, 63, 30, "one", 2.0, True), (3, 63, 257, "tau5", 1.0, False), (64, 63, 1, "random", 0.5, True),
    (1, 100, 257, "0.95", 1.0, True), (3, 100, 1, "zero", 2.0, True), (64, 100, 30, "tau5", 1.0, False),
    (3, 100, 30, "random", 2.0, False),
]
CPU_FLOAT64 = {(3, 1, 257), (3, 2, 30), (1, 3, 30), (3, 63, 257), (64, 63, 1), (64, 100, 30)}
TRITON_CASES = [
    (1, 1, 1, F32, "tau5", 1.0, False), (3, 2, 30, F32, "random", 1.0, True), (64, 3, 30, F32, "zero", 1.0, False),
    (3, 3, 257, F32, "random", 2.0, False), (1, 63, 257, F32, "tau5", 1.0, False),
    (64, 63, 1, F32, "random", 1.0, True), (3, 100, 30, F32, "one", 0.5, False),
    (1, 100, 257, F32, "0.95", 2.0, True), (64, 100, 1, F32, "tau5", 1.0, False),
    (3, 63, 30, BF16, "tau5", 1.0, False), (64, 63, 1, BF16, "0.95", 2.0, True),
    (1, 100, 30, F16, "random", 0.5, True), (64, 3, 30, F16, "one", 1.0, False),
]
CPU_CASES = ([(B, T, N, F32, a, thr, d) for B, T, N, a, thr, d in CPU_SHAPES]
             + [(B, T, N, F64, a, thr, d) for B, T, N, a, thr, d in CPU_SHAPES if (B, T, N) in CPU_FLOAT64]
             + [c for c in TRITON_CASES if c[3] != F32])  # the CPU launchers take 16-bit h too
LAUNCHER_CASES = [pytest.param(backend, *case, id=f"{backend}-B{case[0]}-T{case[1]}-N{case[2]}-"
                               f"{str(case[3])[6:]}-{case[4]}-thr{case[5]:g}" + "-detach" * case[6])
                  for backend, cases in [("cpu", CPU_CASES), ("triton", TRITON_CASES)] for case in cases]
# dtype -> (norm-relative bound, elementwise rtol, elementwise atol as a fraction of max |expected|)
TOL = {F32: (1e-5, 1e-3, 1e-5), F64: (1e-12, 1e-9, 1e-12)}


def launcher_inputs(B, T, N, dtype, alpha, threshold):
    """h = (randn * 0.8 + 0.3) * threshold in dtype, alpha: (N,) and the upstream gradient, in the state dtype."""
    gen = torch.Generator().manual_seed(B * 10007 + T * 101 + N)
    h = ((torch.randn(B, T, N, generator=gen, dtype=F64) * 0.8 + 0.3) * threshold).to(dtype)
    sd = state(dtype)
    a = torch.rand(N, generator=gen, dtype=sd) if ALPHAS[alpha] is None else torch.full((N,), ALPHAS[alpha], dtype=sd)
    return h, a, torch.randn(B, T, N, generator=gen, dtype=sd)


def seed_membrane(h, alpha, s):
    """The pre-reset membrane the forward saves: u_0 = 0, u_{t+1} = alpha u_t (1 - s_{t-1}) + h_t."""
    u = [torch.zeros_like(h[:, 0])]
    for t in range(h.shape[1] - 1):
        v = u[t] * (1 - s[:, t - 1]) if t else u[t]
        u.append(alpha * v + h[:, t])
    return torch.stack(u, 1)[:, : h.shape[1]]


def check(name, actual, expected, dtype):
    """Norm-relative error under TOL, elementwise as the CPU tests did, and elementwise within 1e-4 (1e-10
    in float64) of the largest |expected| as the Triton tests did, each reporting the worst element."""
    bound, rtol, atol = TOL[dtype]
    assert actual.dtype == expected.dtype, f"{name}: dtype {actual.dtype} != {expected.dtype}"
    err = float((actual.double() - expected.double()).norm())
    assert err <= bound * float(expected.double().norm()), f"{name}: norm error {err:.3g} vs norm {expected.norm():.3g}"
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    assert_close(name, actual, expected, rtol=rtol, atol=atol * scale)
    assert_close(name, actual, expected, rtol=0.0, atol=10 * bound * scale)


@pytest.mark.parametrize("backend,B,T,N,dtype,alpha,threshold,detach", LAUNCHER_CASES)
def test_lif_launchers(backend, B, T, N, dtype, alpha, threshold, detach):
    device = backend_device(backend)
    fwd, bwd = launchers(backend).lif_fwd, launchers(backend).lif_bwd
    sd = state(dtype)
    h, a, g = launcher_inputs(B, T, N, dtype, alpha, threshold)
    h_ref, a_ref = h.to(sd).requires_grad_(), a.clone().requires_grad_()
    s_ref = lif_ref(h_ref, a_ref, threshold=threshold, beta=BETA, detach_reset=detach)
    dh_ref, dalpha_ref = vjp(s_ref, [h_ref, a_ref], g)
    neuron = Neuron(threshold=threshold, beta=BETA, detach_reset=detach)
    h, a, g = h.to(device), a.to(device), g.to(device)

    s, u, s8, no_a = fwd(h, a, None, neuron, True)
    assert s.dtype == dtype and u.dtype == sd and s8.dtype == torch.uint8 and no_a is None
    s, u, s8 = s.cpu(), u.cpu(), s8.cpu()
    assert torch.equal(s.to(sd), s_ref.detach()), f"{int((s.to(sd) != s_ref).sum())} spikes differ"
    assert torch.equal(s8.to(sd), s_ref.detach()), "s8 differs from s"
    assert_close("u", u, seed_membrane(h.cpu().to(sd), a.cpu(), s_ref.detach()), rtol=0.0, atol=0.0)
    if T >= 3:
        assert 0 < float(s_ref.detach()[:, 2:].mean()) < 1, "need both spikes and silences to test anything"
    else:
        assert not s.any(), "s_0 = 0 and s_1 = H(-threshold) = 0"

    dh, dalpha, drho = bwd(g, u.to(device), s8.to(device), None, a, None, neuron, True, False)
    assert dh.dtype == dalpha.dtype == sd and drho is None
    check("dh", dh.cpu(), dh_ref, sd)
    check("dalpha", dalpha.cpu(), dalpha_ref, sd)
    if backend == "cpu":  # the Triton interpreter is slow: test_lif_launchers_optional_outputs does this there
        s_only, no_u, no_s8, no_a = fwd(h, a, None, neuron, False)
        assert torch.equal(s_only, s) and no_u is None and no_s8 is None and no_a is None
        dh_only, no_dalpha, no_drho = bwd(g, u, s8, None, a, None, neuron, False, False)
        assert torch.equal(dh_only, dh) and no_dalpha is None and no_drho is None


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("dtype", [F32, BF16], ids=str)
def test_lif_launchers_optional_outputs(backend, device, dtype):
    """save=False writes only s; need_dalpha=False gives the same dh and no dalpha (beta 2 here)."""
    B, T, N = 3, 63, 30
    neuron = Neuron(beta=2.0)
    fwd, bwd = launchers(backend).lif_fwd, launchers(backend).lif_bwd
    h = currents(B, T, N, seed=1, dtype=dtype, device=device, requires_grad=False)
    a = torch.full((N,), TAU5, device=device)
    g = torch.randn(B, T, N, generator=torch.Generator().manual_seed(2)).to(device)
    s, u, s8, no_a = fwd(h, a, None, neuron, False)
    assert u is None and s8 is None and no_a is None
    assert torch.equal(s.float().cpu(), lif_ref(h.float().cpu(), TAU5))

    _, u, s8, _ = fwd(h, a, None, neuron, True)
    dh, dalpha, drho = bwd(g, u, s8, None, a, None, neuron, False, False)
    assert dalpha is None and drho is None
    h_ref = h.float().cpu().requires_grad_()
    (dh_ref,) = vjp(lif_ref(h_ref, TAU5, beta=2.0), [h_ref], g.cpu())
    check("dh", dh.cpu(), dh_ref, F32)
    dh_all, dalpha, _ = bwd(g, u, s8, None, a, None, neuron, True, False)
    assert torch.equal(dh_all, dh) and dalpha.shape == (N,)


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("dtype", [BF16, F16], ids=str)
def test_half_inputs_run_in_float32(backend, device, dtype):
    """16-bit h: s in its dtype, the state and dh in float32, equal to running on the upcast h."""
    fwd, bwd = launchers(backend).lif_fwd, launchers(backend).lif_bwd
    h, a, g = launcher_inputs(3, 63, 30, F32, "tau5", 1.0)
    h, a, g = h.to(device), a.to(device), g.to(device)
    s, u, s8, _ = fwd(h.to(dtype), a, None, Neuron(), True)
    s32, u32, _, _ = fwd(h.to(dtype).float(), a, None, Neuron(), True)
    assert s.dtype == dtype and u.dtype == F32 and torch.equal(s.float(), s32) and torch.equal(u, u32)
    if backend == "cpu":  # a 16-bit upstream gradient (the CPU launcher converts it)
        dh, _, _ = bwd(g.to(dtype), u, s8, None, a, None, Neuron(), False, False)
        assert dh.dtype == F32
    dh, _, _ = bwd(g, u, s8, None, a, None, Neuron(), False, False)
    assert dh.dtype == F32


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("adaptive", [False, True], ids=["lif", "alif"])
@pytest.mark.parametrize("shape", [(0, 5, 3), (2, 0, 3), (2, 5, 0)], ids=["B0", "T0", "N0"])
def test_launchers_take_empty_shapes(backend, device, adaptive, shape):
    B, T, N = shape
    fwd, bwd = launchers(backend).lif_fwd, launchers(backend).lif_bwd
    h, g = torch.zeros(shape, device=device), torch.zeros(shape, device=device)
    alpha = torch.full((N,), 0.8, device=device)
    rho = torch.full((N,), 0.9, device=device) if adaptive else None
    neuron = Neuron(adaptive=adaptive, adapt=1.0)
    s, u, s8, a = fwd(h, alpha, rho, neuron, True)
    dh, dalpha, drho = bwd(g, u, s8, a, alpha, rho, neuron, True, adaptive)
    assert s.shape == u.shape == s8.shape == dh.shape == shape and torch.equal(dalpha.cpu(), torch.zeros(N))
    assert (a.shape == shape and torch.equal(drho.cpu(), torch.zeros(N))) if adaptive else a is None and drho is None
    w = torch.ones(T, device=device)
    total, u, s8, a = fwd(h, alpha, rho, neuron, True, w)  # its value at T = 0: test_weighted_sum_of_no_steps_is_zero
    assert total.shape == (B, N)
    dh, dalpha, _ = bwd(torch.zeros(B, N, device=device), u, s8, a, alpha, rho, neuron, True, False, w)
    assert dh.shape == shape and torch.equal(dalpha.cpu(), torch.zeros(N))


# =====================================================================================================
# Arguments
# =====================================================================================================

@pytest.mark.parametrize("backend", WITH_REFERENCE)
@pytest.mark.parametrize("np_scalar", [np.float32, np.float64], ids=["float32", "float64"])
def test_numpy_scalars_are_numbers(backend, device, np_scalar):
    """Issue 9, item 6: numpy scalars (alpha, rho, threshold, beta, adapt) are accepted and give the
    result of the float they hold."""
    h = currents(2, 20, 5, device=device, requires_grad=False)
    assert torch.equal(fastsnn.lif(h, np_scalar(0.8), backend=backend), fastsnn.lif(h, 0.8, backend=backend))
    got = fastsnn.alif(h, np_scalar(0.75), np_scalar(0.5), adapt=np_scalar(0.5), threshold=np_scalar(1.25),
                       beta=np_scalar(3.0), backend=backend)
    assert torch.equal(got, fastsnn.alif(h, 0.75, 0.5, adapt=0.5, threshold=1.25, beta=3.0, backend=backend))


def _lif(**kwargs):
    return lambda: fastsnn.lif(torch.zeros(2, 3, 4), 0.5, **kwargs)


def _alif(alpha=0.5, rho=0.9, **kwargs):
    return lambda: fastsnn.alif(torch.zeros(2, 3, 4), alpha, rho, **kwargs)


BAD = [
    (lambda: fastsnn.lif(torch.zeros(3, 4), 0.5), ValueError, r"h must have shape \(B, T, N\)"),
    (lambda: fastsnn.lif(torch.zeros(1, 2, 3, 4), 0.5), ValueError, r"h must have shape \(B, T, N\)"),
    (lambda: fastsnn.lif(torch.zeros(2, 3, 4, dtype=torch.int32), 0.5), TypeError, "h must be float32"),
    (lambda: fastsnn.lif([[[0.0]]], 0.5), TypeError, "h must be a torch.Tensor"),
    (lambda: fastsnn.lif(torch.zeros(2, 3, 4), torch.ones(5)), ValueError,
     r"alpha must be a float or a tensor of shape \(N,\) = \(4,\)"),
    (lambda: fastsnn.lif(torch.zeros(2, 3, 4), torch.ones(4, dtype=torch.int64)), TypeError,
     "alpha must be a floating-point"),
    (lambda: fastsnn.lif(torch.zeros(2, 3, 4), 1.5), ValueError, r"alpha must lie in \[0, 1\]"),
    (lambda: fastsnn.lif(torch.zeros(2, 3, 4), float("nan")), ValueError, "alpha must be a finite number"),
    (lambda: fastsnn.lif(torch.zeros(2, 3, 4), torch.ones(4, device="meta")), ValueError,
     "alpha is on meta but h is on cpu"),
    (_lif(threshold=float("inf")), ValueError, "threshold must be a finite"),
    (_lif(threshold=float("nan")), ValueError, "threshold must be a finite"),
    (_lif(beta=0.0), ValueError, "beta must be > 0"),
    (_lif(beta=-1.0), ValueError, "beta must be > 0"),
    (_lif(backend="cuda"), ValueError, "backend must be one of"),
    # time weights
    (_lif(time_weights=torch.ones(4)), ValueError, r"time_weights must have shape \(T,\) = \(3,\)"),
    (_lif(time_weights=torch.ones(3, dtype=torch.int64)), TypeError, "time_weights must be floating"),
    (_lif(time_weights=torch.ones(3, requires_grad=True)), ValueError, "time_weights get no gradient"),
    (_lif(time_weights=torch.ones(3, device="meta")), ValueError, "time_weights are on meta but h is on cpu"),
    (_lif(time_weights="abc"), TypeError, r"time_weights must be a \(T,\) tensor"),
    # the family's options
    (_lif(spike="x"), ValueError, "spike must be one of 'delayed', 'same_step', got 'x'"),
    (_lif(reset="x"), ValueError, "reset must be one of 'zero', 'subtract', 'subtract_next'"),
    (_lif(reset="subtract_next"), ValueError, r"reset='subtract_next' .* needs spike='same_step'"),
    (_alif(reset="subtract_next", spike="delayed"), ValueError, r"reset='subtract_next' .* needs spike='same_step'"),
    (_lif(surrogate="relu"), ValueError, "surrogate must be one of 'sigmoid', 'atan', got 'relu'"),
    (_lif(fire="=>"), ValueError, "fire must be one of '>', '>=', got '=>'"),
    (_lif(detach_reset="yes"), TypeError, "detach_reset must be True or False"),
    (_alif(adapt=float("inf")), ValueError, "adapt must be a finite number"),
    (_alif(adapt=float("nan")), ValueError, "adapt must be a finite number"),
    (_alif(beta=0.0), ValueError, "beta must be > 0"),
    (_alif(threshold=float("-inf")), ValueError, "threshold must be a finite"),
    # rho
    (_alif(rho=1.5), ValueError, r"rho must lie in \[0, 1\]"),
    (_alif(rho=-0.1), ValueError, r"rho must lie in \[0, 1\]"),
    (_alif(rho=float("nan")), ValueError, "rho must be a finite number"),
    (_alif(rho=None), ValueError, "rho must be a finite number"),
    (_alif(rho=torch.ones(5)), ValueError, r"rho must be a float or a tensor of shape \(N,\) = \(4,\)"),
    (_alif(rho=torch.ones(1, 4)), ValueError, r"rho must be a float or a tensor of shape \(N,\) = \(4,\)"),
    (_alif(rho=torch.ones(4, dtype=torch.int64)), TypeError, "rho must be a floating-point"),
    (_alif(rho=torch.tensor([0.5, 1.5, 0.5, 0.5])), ValueError, r"rho must lie in \[0, 1\].*1\.5"),
    (_alif(rho=torch.tensor([0.5, 0.5, float("nan"), 0.5])), ValueError, r"rho must lie in \[0, 1\].*nan"),
    # issue 9, item 6: alpha tensors outside [0, 1] or holding NaN (checked on the CPU)
    (lambda: fastsnn.lif(torch.zeros(2, 3, 4), torch.tensor([0.5, 1.5, 0.5, 0.5])), ValueError,
     r"alpha must lie in \[0, 1\].*1\.5"),
    (lambda: fastsnn.lif(torch.zeros(2, 3, 4), torch.tensor([0.5, -0.01, 0.5, 0.5])), ValueError,
     r"alpha must lie in \[0, 1\]"),
    (lambda: fastsnn.lif(torch.zeros(2, 3, 4), torch.tensor([0.5, 0.5, 0.5, float("nan")])), ValueError,
     r"alpha must lie in \[0, 1\].*nan"),
    (_alif(alpha=torch.tensor([float("nan")] * 4)), ValueError, r"alpha must lie in \[0, 1\]"),
]


@pytest.mark.parametrize("call,error,message", BAD, ids=[m[:40] for _, _, m in BAD])
def test_bad_input_is_a_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize("backend", WITH_REFERENCE)
@pytest.mark.parametrize("bad", [1.0001, float("nan"), float("inf")])
def test_decay_tensors_are_checked_on_every_backend(backend, device, bad):
    """Issue 9, item 6: the check of CPU alpha and rho tensors runs before any backend, with autograd on."""
    if device != "cpu":
        pytest.skip("decay tensors on CUDA are not checked (the check would stall the stream)")
    h = currents(2, 5, 3, device=device)
    alpha = torch.tensor([0.5, bad, 0.5], device=device, requires_grad=True)
    with pytest.raises(ValueError, match=r"alpha must lie in \[0, 1\]"):
        fastsnn.lif(h, alpha, backend=backend)
    with pytest.raises(ValueError, match=r"rho must lie in \[0, 1\]"):
        fastsnn.alif(h, 0.5, alpha, backend=backend)


def test_backend_resolution(monkeypatch):
    assert resolve_backend("auto", torch.device("cpu")) == "cpu"
    assert resolve_backend("auto", torch.device("cuda")) == "triton"
    assert resolve_backend("reference", torch.device("cuda")) == "reference"
    with pytest.raises(ValueError, match="backend 'cpu' runs on CPU tensors"):
        resolve_backend("cpu", torch.device("cuda"))
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend("numba", torch.device("cpu"))
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="set TRITON_INTERPRET=1"):
        resolve_backend("triton", torch.device("cpu"))


def test_auto_backend_on_cpu_is_the_cpu_kernels():
    h = currents(2, 30, 5, seed=4)
    a = torch.full((5,), TAU5, requires_grad=True)
    assert fastsnn.lif(h, a).grad_fn.name() == fastsnn.lif(h, a, backend="cpu").grad_fn.name() == "LIFFunctionBackward"
    assert torch.equal(fastsnn.alif(h, a, 0.9, spike="same_step"), fastsnn.alif(h, a, 0.9, spike="same_step",
                                                                                backend="cpu"))

"""The public ops (fastsnn.lif, lif_sum, leaky_readout, leaky_readout_sum) on every backend, through the
autograd layer, against the reference; input validation; saved bytes; NaN propagation.

The launchers themselves are covered shape by shape in test_cpu_kernels.py and
test_triton_kernels.py; these tests exercise what users call.
"""

import math
import os

import pytest
import torch
from conftest import assert_close

import fastsnn
from fastsnn.ops import leaky_readout_ref, leaky_readout_sum_ref, lif_ref, lif_sum_ref, resolve_backend

TAU5 = math.exp(-1 / 5)
# (backend, device) pairs to test: Triton on CPU tensors under the interpreter (CI), on CUDA
# tensors compiled for the GPU when one is present (run with TRITON_INTERPRET=0 there).
_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
FAST = [pytest.param(("cpu", "cpu"), id="cpu")]
if _INTERPRET:
    FAST.append(pytest.param(("triton", "cpu"), id="triton-interpret"))
if torch.cuda.is_available() and not _INTERPRET:
    FAST.append(pytest.param(("triton", "cuda"), id="triton-cuda"))


def rel_err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def currents(B, T, N, seed=0, contiguous=True, dtype=torch.float32, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    if contiguous:
        h = torch.randn(B, T, N, generator=g) * 0.8 + 0.3
    else:  # a (B, N, T) buffer seen as (B, T, N): strides (T*N, 1, T)
        h = (torch.randn(B, N, T, generator=g) * 0.8 + 0.3).transpose(1, 2)
    return h.to(device, dtype).requires_grad_()


def alpha_for(kind, N, seed=1, device="cpu"):
    if kind == "tensor":
        a = torch.rand(N, generator=torch.Generator().manual_seed(seed)) * 0.5 + 0.5
        return a.to(device).requires_grad_()
    return kind


def on_cpu(*tensors):
    """Detached CPU copies that require grad: the reference runs on them."""
    return [t.detach().cpu().requires_grad_() if isinstance(t, torch.Tensor) else t for t in tensors]


def grads(out, inputs, seed=2):
    """Vector-Jacobian product with a random upstream gradient; zeros where nothing depends on an input
    (for T <= 2 the reference's spikes do not depend on h at all)."""
    inputs = [i for i in inputs if isinstance(i, torch.Tensor)]
    if not out.requires_grad:
        return [torch.zeros_like(i) for i in inputs]
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    return [torch.zeros_like(i) if d is None else d
            for i, d in zip(inputs, torch.autograd.grad(out, inputs, g, allow_unused=True))]


CASES = [(3, 63, 30, True, TAU5, 1.0, False), (1, 2, 1, True, "tensor", 1.0, True),
         (4, 17, 257, False, "tensor", 0.5, False), (64, 3, 5, False, 0.95, 2.0, True), (2, 1, 3, True, TAU5, 1.0, False)]


@pytest.mark.parametrize("target", FAST)
@pytest.mark.parametrize("B,T,N,contiguous,alpha,threshold,detach", CASES,
                         ids=[f"B{c[0]}-T{c[1]}-N{c[2]}-{'contig' if c[3] else 'strided'}-a{c[4]}-d{int(c[6])}"
                              for c in CASES])
def test_lif_matches_reference(target, B, T, N, contiguous, alpha, threshold, detach):
    backend, device = target
    h = currents(B, T, N, contiguous=contiguous, device=device)
    a = alpha_for(alpha, N, device=device)
    h_ref, a_ref = on_cpu(h, a)
    expected = lif_ref(h_ref, a_ref, threshold=threshold, detach_reset=detach)
    got = fastsnn.lif(h, a, threshold=threshold, detach_reset=detach, backend=backend)
    assert torch.equal(got.cpu(), expected)
    if T >= 3:
        assert 0 < expected.mean() < 0.6
    for name, x, y in zip(["dh", "dalpha"], grads(got, [h, a]), grads(expected, [h_ref, a_ref])):
        x = x.cpu()
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
    return torch.tensor(fastsnn.ops.readout_time_weights(TAU5, T), dtype=torch.float32)


@pytest.mark.parametrize("target", FAST)
@pytest.mark.parametrize("B,T,N,contiguous,alpha,threshold,detach,weights", SUM_CASES,
                         ids=[f"B{c[0]}-T{c[1]}-N{c[2]}-a{c[4]}-d{int(c[6])}-{c[7]}" for c in SUM_CASES])
def test_lif_sum_matches_reference(target, B, T, N, contiguous, alpha, threshold, detach, weights):
    backend, device = target
    h = currents(B, T, N, contiguous=contiguous, device=device)
    a = alpha_for(alpha, N, device=device)
    w = time_weights(weights, T)
    h_ref, a_ref = on_cpu(h, a)
    expected = lif_sum_ref(h_ref, a_ref, w, threshold=threshold, detach_reset=detach)
    got = fastsnn.lif_sum(h, a, w.to(device), threshold=threshold, detach_reset=detach, backend=backend)
    assert got.shape == (B, N) and got.dtype == h.dtype
    assert_close("out", got.cpu(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.cpu(), (fastsnn.lif(h, a, threshold=threshold, backend=backend).cpu()
                                           * w[:, None]).sum(1), rtol=1e-5, atol=1e-5)
    for name, x, y in zip(["dh", "dalpha"], grads(got, [h, a]), grads(expected, [h_ref, a_ref])):
        x = x.cpu()
        assert rel_err(x, y) < 1e-5 or (x == 0).all() and (y == 0).all(), name


@pytest.mark.parametrize("target", FAST)
def test_lif_sum_saves_no_spikes(target):
    """Forward state as for lif (u float32 + s uint8, 5 bytes per element) plus alpha and the weights."""
    backend, device = target
    h = currents(2, 9, 4, device=device)
    w = torch.ones(9, device=device)
    saved = saved_bytes(lambda: fastsnn.lif_sum(h, TAU5, w, backend=backend))
    assert saved == 2 * 9 * 4 * 5 + 4 * 4 + 9 * 4


@pytest.mark.parametrize("target", FAST)
@pytest.mark.parametrize("op,ref", [(fastsnn.leaky_readout, leaky_readout_ref),
                                    (fastsnn.leaky_readout_sum, leaky_readout_sum_ref)], ids=["membrane", "sum"])
@pytest.mark.parametrize("B,T,C,contiguous,alpha", [(3, 63, 12, True, TAU5), (5, 2, 1, False, "tensor"),
                                                     (2, 100, 30, False, 1.0), (1, 1, 4, True, "tensor")])
def test_readout_matches_reference(target, op, ref, B, T, C, contiguous, alpha):
    backend, device = target
    h = currents(B, T, C, contiguous=contiguous, device=device)
    a = alpha_for(alpha, C, device=device)
    h_ref, a_ref = on_cpu(h, a)
    expected, got = ref(h_ref, a_ref), op(h, a, backend=backend)
    assert got.dtype == h.dtype and got.shape == expected.shape
    assert_close("out", got.cpu(), expected, rtol=1e-5, atol=1e-5)
    for name, x, y in zip(["dh", "dalpha"], grads(got, [h, a]), grads(expected, [h_ref, a_ref])):
        x = x.cpu()
        assert rel_err(x, y) < 1e-5 or (x == 0).all() and (y == 0).all(), name


WITH_REFERENCE = [pytest.param(("reference", "cpu"), id="reference"), *FAST]


@pytest.mark.parametrize("target", WITH_REFERENCE)
def test_nan_in_h_propagates_to_later_spikes(target):
    backend, device = target
    h = currents(2, 12, 3).detach()
    h[1, 4, 2] = float("nan")
    s = fastsnn.lif(h.to(device), TAU5, backend=backend).cpu()
    assert torch.isnan(s[1, 6:, 2]).all()  # v_5 is NaN, so s_6 = H(v_5 - 1) on are NaN
    assert not torch.isnan(s[1, :6, 2]).any() and not torch.isnan(s[0]).any() and not torch.isnan(s[1, :, :2]).any()
    assert torch.equal(s.isnan(), fastsnn.lif(h, TAU5, backend="reference").isnan())


HALF_TOL = {torch.bfloat16: 1e-2, torch.float16: 2e-3}  # dh is rounded once to the input dtype


@pytest.mark.parametrize("target", WITH_REFERENCE)
@pytest.mark.parametrize("dtype", list(HALF_TOL), ids=str)
def test_half_precision_inputs(target, dtype):
    # spikes as the float32 reference on the upcast input; dh within one rounding to 16 bits
    backend, device = target
    h = currents(3, 40, 7, dtype=dtype, device=device)
    h32 = h.detach().float().cpu().requires_grad_()
    s = fastsnn.lif(h, TAU5, backend=backend)
    expected = lif_ref(h32, TAU5)
    assert s.dtype == dtype and torch.equal(s.float().cpu(), expected)
    (dh,) = grads(s.float(), [h])
    (dh_ref,) = grads(expected, [h32])
    assert dh.dtype == dtype and rel_err(dh.cpu(), dh_ref) < HALF_TOL[dtype]


def saved_bytes(fn) -> int:
    """Bytes of distinct storages autograd saves for the backward while running ``fn``."""
    seen = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


@pytest.mark.parametrize("target", FAST)
def test_saves_five_bytes_per_element(target):
    # the reference's autograd keeps ~3 float32 per element and step (alpha v + h, 1 - s, v - 1)
    backend, device = target
    B, T, N = 8, 50, 30
    h = currents(B, T, N, device=device)
    ref = saved_bytes(lambda: lif_ref(h, TAU5))
    fast = saved_bytes(lambda: fastsnn.lif(h, TAU5, backend=backend))
    assert fast <= B * T * N * 5 + 8 * N  # u (float32) + s8 (uint8) + alpha
    assert 2 * fast <= ref, (fast, ref)


@pytest.mark.parametrize("target", FAST)
def test_inference_saves_nothing(target):
    backend, device = target
    h = currents(2, 9, 4, device=device)
    with torch.no_grad():
        assert saved_bytes(lambda: fastsnn.lif(h, TAU5, backend=backend)) == 0
    from fastsnn.ops import registry

    _, u, s8 = registry.lif(h.detach(), torch.full((4,), TAU5, device=device), 1.0, 5.0, False, False, backend)
    assert u.numel() == 0 and s8.numel() == 0


# --- bad input ------------------------------------------------------------------------------------

BAD = [
    (lambda: fastsnn.lif(torch.zeros(3, 4), 0.5), ValueError, r"h must have shape \(B, T, N\)"),
    (lambda: fastsnn.lif(torch.zeros(1, 2, 3, 4), 0.5), ValueError, r"h must have shape \(B, T, N\)"),
    (lambda: fastsnn.lif(torch.zeros(2, 3, 4, dtype=torch.int32), 0.5), TypeError, "h must be float32"),
    (lambda: fastsnn.lif([[[0.0]]], 0.5), TypeError, "h must be a torch.Tensor"),
    (lambda: fastsnn.lif(torch.zeros(2, 3, 4), torch.ones(5)), ValueError, r"alpha must be a float or a tensor of shape \(N,\) = \(4,\)"),
    (lambda: fastsnn.lif(torch.zeros(2, 3, 4), torch.ones(4, dtype=torch.int64)), TypeError, "alpha must be a floating-point"),
    (lambda: fastsnn.lif(torch.zeros(2, 3, 4), 1.5), ValueError, r"alpha must lie in \[0, 1\]"),
    (lambda: fastsnn.lif(torch.zeros(2, 3, 4), float("nan")), ValueError, "alpha must be a finite number"),
    (lambda: fastsnn.lif(torch.zeros(2, 3, 4), 0.5, threshold=float("inf")), ValueError, "threshold must be a finite"),
    (lambda: fastsnn.lif(torch.zeros(2, 3, 4), 0.5, beta=0.0), ValueError, "beta must be > 0"),
    (lambda: fastsnn.lif(torch.zeros(2, 3, 4), torch.ones(4, device="meta")), ValueError, "alpha is on meta but h is on cpu"),
    (lambda: fastsnn.lif(torch.zeros(2, 3, 4), 0.5, backend="cuda"), ValueError, "backend must be one of"),
    (lambda: fastsnn.lif_sum(torch.zeros(2, 3, 4), 0.5, torch.ones(4)), ValueError, r"weights must have shape \(T,\) = \(3,\)"),
    (lambda: fastsnn.lif_sum(torch.zeros(2, 3, 4), 0.5, torch.ones(3, dtype=torch.int64)), TypeError, "weights must be floating"),
    (lambda: fastsnn.lif_sum(torch.zeros(2, 3, 4), 0.5, torch.ones(3, requires_grad=True)), ValueError, "weights get no gradient"),
    (lambda: fastsnn.lif_sum(torch.zeros(2, 3, 4), 0.5, torch.ones(3, device="meta")), ValueError, "weights are on meta but h is on cpu"),
    (lambda: fastsnn.lif_sum(torch.zeros(2, 3, 4), 0.5, "abc"), TypeError, r"weights must be a \(T,\) tensor"),
    (lambda: fastsnn.leaky_readout(torch.zeros(2, 3), 0.5), ValueError, r"h must have shape \(B, T, N\)"),
    (lambda: fastsnn.leaky_readout_sum(torch.zeros(2, 3, 4), -0.1), ValueError, r"alpha must lie in \[0, 1\]"),
]


@pytest.mark.parametrize("call,error,message", BAD, ids=[m[:30] for _, _, m in BAD])
def test_bad_input_is_a_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_backend_resolution(monkeypatch):
    assert resolve_backend("auto", torch.device("cpu")) == "cpu"
    assert resolve_backend("auto", torch.device("cuda")) == "triton"
    with pytest.raises(ValueError, match="backend 'cpu' runs on CPU tensors"):
        resolve_backend("cpu", torch.device("cuda"))
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="set TRITON_INTERPRET=1"):
        resolve_backend("triton", torch.device("cpu"))


@pytest.mark.parametrize("target", WITH_REFERENCE)
def test_lif_sum_nan_weight_propagates(target):
    backend, device = target
    h = currents(2, 6, 3, device=device).detach() * 4
    out = fastsnn.lif_sum(h, TAU5, [1.0, 1.0, float("nan"), 1.0, 1.0, 1.0], backend=backend)
    assert torch.isnan(out).all()


@pytest.mark.parametrize("target", WITH_REFERENCE)
@pytest.mark.parametrize("dtype", [torch.float64, *HALF_TOL], ids=str)
def test_lif_sum_other_dtypes(target, dtype):
    """float64 (CPU kernels only; to 1e-12 against the float64 reference) and 16-bit inputs
    (against the float32 reference on the upcast input, within one rounding to 16 bits)."""
    backend, device = target
    if dtype == torch.float64 and backend == "triton":
        pytest.skip("Triton kernels take float32, bfloat16 and float16")
    h = currents(3, 40, 7, dtype=dtype, device=device)
    ref_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    h_ref = h.detach().to(ref_dtype).cpu().requires_grad_()
    w = torch.linspace(-1, 2, 40)
    got = fastsnn.lif_sum(h, TAU5, w.to(device), backend=backend)
    expected = lif_sum_ref(h_ref, TAU5, w.to(ref_dtype))
    tol = 1e-12 if dtype == torch.float64 else HALF_TOL[dtype]
    assert got.dtype == dtype and rel_err(got.cpu(), expected) < tol
    (dh,) = grads(got.to(ref_dtype), [h])  # the same upstream gradient as the reference's
    (dh_ref,) = grads(expected, [h_ref])
    assert dh.dtype == dtype and rel_err(dh.cpu(), dh_ref) < tol

"""The leaky readout (``fastsnn.leaky_readout``, ``fastsnn.leaky_readout_sum``) on every backend against the
reference (``fastsnn.ops.readout.reference``), and the launchers of ``fastsnn/ops/readout/cpu.py`` and
``fastsnn/kernels/readout.py``.

Tolerances. Forward: the readout membrane equals the reference run in float32 on the upcast input bit for
bit (the kernels do its float32 operations in its order, without FMA contraction); a 16-bit membrane equals
that result rounded once (float16), or is within one ulp of it for bfloat16, because the Triton interpreter
truncates float32 -> bfloat16 where a GPU rounds to nearest. The membrane sum is compared to 1e-5, since
torch sums over time in another order. Backward: norm-relative error below 1e-5 (1e-12 in float64), plus an
elementwise check naming the worst element. The one exception is dalpha with 16-bit h on Triton: the
contract hands the backward the forward's output u, rounded to the input dtype, so it gets that dtype's
precision (2e-3 float16, 1e-2 bfloat16).
"""


import numpy as np
import pytest
import torch
from conftest import FAST, TAU5, WITH_REFERENCE, assert_close, backend_device, currents, leaf, rel_err, vjp

import fastsnn
from fastsnn.ops.readout import readout_time_weights
from fastsnn.ops.readout.reference import leaky_readout_ref, leaky_readout_sum_ref

F32, F64, BF16, F16 = torch.float32, torch.float64, torch.bfloat16, torch.float16
DALPHA_RTOL_16BIT = {F16: 2e-3, BF16: 1e-2}


def launchers(backend: str):
    if backend == "triton":
        import fastsnn.kernels.readout as kernels
    else:
        import fastsnn.ops.readout.cpu as kernels
    return kernels


def alpha_for(kind, N, seed=1, device="cpu"):
    if kind == "tensor":
        a = torch.rand(N, generator=torch.Generator().manual_seed(seed)) * 0.5 + 0.5
        return a.to(device).requires_grad_()
    return kind


# --- the public functions (old test_ops.py) ---------------------------------------------------------

@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("op,ref", [(fastsnn.leaky_readout, leaky_readout_ref),
                                    (fastsnn.leaky_readout_sum, leaky_readout_sum_ref)], ids=["membrane", "sum"])
@pytest.mark.parametrize("B,T,C,contiguous,alpha", [(3, 63, 12, True, TAU5), (5, 2, 1, False, "tensor"),
                                                     (2, 100, 30, False, 1.0), (1, 1, 4, True, "tensor")])
def test_readout_matches_reference(backend, device, op, ref, B, T, C, contiguous, alpha):
    h = currents(B, T, C, contiguous=contiguous, device=device)
    a = alpha_for(alpha, C, device=device)
    h_ref, a_ref = leaf(h), leaf(a)
    expected, got = ref(h_ref, a_ref), op(h, a, backend=backend)
    assert got.dtype == h.dtype and got.shape == expected.shape
    assert_close("out", got.cpu(), expected, rtol=1e-5, atol=1e-5)
    for name, x, y in zip(["dh", "dalpha"], vjp(got, [h, a]), vjp(expected, [h_ref, a_ref])):
        assert rel_err(x, y) < 1e-5 or (x == 0).all() and (y == 0).all(), name


def test_readout_time_weights_fold_the_sum():
    """sum_t u_t = sum_k c_k h_k with c_{T-1} = 0, c_k = 1 + alpha c_{k+1}: the time weights of lif's sum."""
    h = currents(2, 17, 3, dtype=F64, requires_grad=False)
    c = torch.tensor(readout_time_weights(0.8, 17), dtype=F64)
    torch.testing.assert_close((h * c[:, None]).sum(1), leaky_readout_sum_ref(h, 0.8), rtol=1e-14, atol=1e-14)
    assert readout_time_weights(0.8, 1) == (0.0,) and readout_time_weights(0.5, 3) == (1.5, 1.0, 0.0)


BAD = [
    (lambda: fastsnn.leaky_readout(torch.zeros(2, 3), 0.5), ValueError, r"h must have shape \(B, T, N\)"),
    (lambda: fastsnn.leaky_readout_sum(torch.zeros(2, 3, 4), -0.1), ValueError, r"alpha must lie in \[0, 1\]"),
    (lambda: fastsnn.leaky_readout(torch.zeros(2, 3, 4), torch.ones(3)), ValueError,
     r"alpha must be a float or a tensor of shape \(N,\) = \(4,\)"),
    (lambda: fastsnn.leaky_readout(torch.zeros(2, 3, 4, dtype=torch.int64), 0.5), TypeError, "h must be float32"),
    (lambda: fastsnn.leaky_readout(torch.zeros(2, 3, 4), 0.5, backend="gpu"), ValueError, "backend must be one of"),
    # issue 9, item 6: alpha tensors outside [0, 1] or holding NaN (CPU tensors)
    (lambda: fastsnn.leaky_readout(torch.zeros(2, 3, 4), torch.tensor([0.5, 0.5, 2.0, 0.5])), ValueError,
     r"alpha must lie in \[0, 1\].*2\.0"),
    (lambda: fastsnn.leaky_readout_sum(torch.zeros(2, 3, 4), torch.tensor([float("nan")] * 4)), ValueError,
     r"alpha must lie in \[0, 1\].*nan"),
]


@pytest.mark.parametrize("call,error,message", BAD, ids=[m[:40] for _, _, m in BAD])
def test_bad_input_is_a_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize("backend", WITH_REFERENCE)
@pytest.mark.parametrize("np_scalar", [np.float32, np.float64], ids=["float32", "float64"])
def test_numpy_scalar_alpha(backend, device, np_scalar):
    """Issue 9, item 6: a numpy scalar alpha is accepted and gives the float result."""
    h = currents(2, 20, 5, device=device, requires_grad=False)
    for op in (fastsnn.leaky_readout, fastsnn.leaky_readout_sum):
        assert torch.equal(op(h, np_scalar(0.8), backend=backend), op(h, 0.8, backend=backend))


def test_numpy_scalar_alpha_in_float64_is_its_value():
    """np.float32(0.8) is 0.800000011920929: in float64 it gives that value's result, not 0.8's."""
    h = currents(2, 30, 5, dtype=F64, requires_grad=False) * 3
    value = float(np.float32(0.8))
    for backend in ("reference", "cpu"):
        got = fastsnn.leaky_readout(h, np.float32(0.8), backend=backend)
        assert torch.equal(got, fastsnn.leaky_readout(h, value, backend=backend))
        assert not torch.equal(got, fastsnn.leaky_readout(h, 0.8, backend=backend))


# --- the launchers (old test_cpu_kernels.py and test_triton_kernels.py, readout part) ------------------

ALPHAS = {"zero": 0.0, "tau5": TAU5, "0.95": 0.95, "one": 1.0, "random": None}
CPU_SHAPES = [
    (1, 1, 1, "tau5"), (3, 1, 257, "random"), (64, 2, 1, "0.95"), (3, 2, 30, "one"), (64, 3, 257, "zero"),
    (1, 3, 30, "random"), (1, 63, 30, "one"), (3, 63, 257, "tau5"), (64, 63, 1, "random"), (1, 100, 257, "0.95"),
    (3, 100, 1, "zero"), (64, 100, 30, "tau5"), (3, 100, 30, "random"),
]
CPU_FLOAT64 = {(3, 1, 257), (3, 2, 30), (1, 3, 30), (3, 63, 257), (64, 63, 1), (64, 100, 30)}
TRITON_CASES = [
    (1, 1, 1, F32, "tau5"), (3, 2, 30, F32, "random"), (64, 3, 30, F32, "zero"), (1, 63, 257, F32, "tau5"),
    (3, 63, 12, F32, "0.95"), (64, 100, 1, F32, "one"), (3, 100, 30, BF16, "tau5"), (64, 63, 1, F16, "random"),
    (3, 3, 257, BF16, "one"),
]
CPU_CASES = ([(B, T, C, F32, a) for B, T, C, a in CPU_SHAPES]
             + [(B, T, C, F64, a) for B, T, C, a in CPU_SHAPES if (B, T, C) in CPU_FLOAT64])
LAUNCHER_CASES = [pytest.param(backend, *case, id=f"{backend}-B{case[0]}-T{case[1]}-N{case[2]}-{str(case[3])[6:]}-"
                               f"{case[4]}")
                  for backend, cases in [("cpu", CPU_CASES), ("triton", TRITON_CASES)] for case in cases]
# state dtype -> (norm-relative bound, elementwise rtol, elementwise atol as a fraction of max |expected|)
TOL = {F32: (1e-5, 1e-3, 1e-5), F64: (1e-12, 1e-9, 1e-12)}


def launcher_inputs(B, T, C, dtype, alpha):
    """h = randn * 0.8 + 0.3 in dtype, alpha: (C,) and the upstream gradient (B, T, C), in the state dtype."""
    gen = torch.Generator().manual_seed(B * 10007 + T * 101 + C)
    h = (torch.randn(B, T, C, generator=gen, dtype=F64) * 0.8 + 0.3).to(dtype)
    sd = F64 if dtype == F64 else F32
    a = torch.rand(C, generator=gen, dtype=sd) if ALPHAS[alpha] is None else torch.full((C,), ALPHAS[alpha], dtype=sd)
    return h, a, torch.randn(B, T, C, generator=gen, dtype=sd)


def check(name, actual, expected, rtol=None):
    """Norm-relative error under the state dtype's bound (or ``rtol``), elementwise as the CPU tests did,
    and within 10 bounds of the largest |expected| as the Triton tests did."""
    bound, el_rtol, el_atol = TOL[expected.dtype]
    bound = rtol if rtol is not None else bound
    assert actual.dtype == expected.dtype, f"{name}: dtype {actual.dtype} != {expected.dtype}"
    err = float((actual.double() - expected.double()).norm())
    assert err <= bound * float(expected.double().norm()), f"{name}: norm error {err:.3g} vs norm {expected.norm():.3g}"
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    if rtol is None:
        assert_close(name, actual, expected, rtol=el_rtol, atol=el_atol * scale)
    assert_close(name, actual, expected, rtol=0.0, atol=10 * bound * scale)


@pytest.mark.parametrize("backend,B,T,C,dtype,alpha", LAUNCHER_CASES)
def test_leaky_readout_launchers(backend, B, T, C, dtype, alpha):
    device = backend_device(backend)
    fwd, bwd = launchers(backend).leaky_readout_fwd, launchers(backend).leaky_readout_bwd
    h, a, g = launcher_inputs(B, T, C, dtype, alpha)
    sd = a.dtype
    h_ref, a_ref = h.to(sd).requires_grad_(), a.clone().requires_grad_()
    u_ref = leaky_readout_ref(h_ref, a_ref)
    dh_ref, dalpha_ref = vjp(u_ref, [h_ref, a_ref], g)
    h, a, g = h.to(device), a.to(device), g.to(device)

    u = fwd(h, a)
    assert u.dtype == dtype
    if dtype == BF16 and backend == "triton":  # the interpreter truncates float32 -> bfloat16: within one ulp
        assert_close("u", u.cpu(), u_ref.detach(), rtol=2**-7, atol=0.0)
    else:
        assert_close("u", u.cpu(), u_ref.detach().to(dtype), rtol=0.0, atol=0.0)
    dh, dalpha = bwd(g, u, a, True)
    assert dh.dtype == dalpha.dtype == sd
    check("dh", dh.cpu(), dh_ref)
    check("dalpha", dalpha.cpu(), dalpha_ref, rtol=DALPHA_RTOL_16BIT.get(dtype) if backend == "triton" else None)
    dh_only, no_dalpha = bwd(g, None, a, False)
    assert torch.equal(dh_only, dh) and no_dalpha is None


@pytest.mark.parametrize("backend,B,T,C,dtype,alpha", LAUNCHER_CASES)
def test_leaky_readout_sum_launchers(backend, B, T, C, dtype, alpha):
    device = backend_device(backend)
    fwd, bwd = launchers(backend).leaky_readout_sum_fwd, launchers(backend).leaky_readout_sum_bwd
    h, a, g = launcher_inputs(B, T, C, dtype, alpha)
    sd = a.dtype
    g_m = g[:, 0].contiguous()  # launchers take contiguous tensors
    h_ref, a_ref = h.to(sd).requires_grad_(), a.clone().requires_grad_()
    m_ref = leaky_readout_sum_ref(h_ref, a_ref)
    dh_ref, dalpha_ref = vjp(m_ref, [h_ref, a_ref], g_m)
    h, a, g_m = h.to(device), a.to(device), g_m.to(device)

    m = fwd(h, a)
    assert m.dtype == sd
    check("m", m.cpu(), m_ref.detach())
    dh, dalpha = bwd(g_m, h, a, T, True)
    check("dh", dh.cpu(), dh_ref)
    check("dalpha", dalpha.cpu(), dalpha_ref)
    dh_only, no_dalpha = bwd(g_m, None, a, T, False)
    assert torch.equal(dh_only, dh) and no_dalpha is None


@pytest.mark.parametrize("dtype", [BF16, F16], ids=str)
def test_half_inputs_run_in_float32(dtype):
    h, a, _ = launcher_inputs(3, 63, 30, F32, "tau5")
    cpu = launchers("cpu")
    u_out = cpu.leaky_readout_fwd(h.to(dtype), a)
    assert u_out.dtype == dtype and torch.equal(u_out, cpu.leaky_readout_fwd(h.to(dtype).float(), a).to(dtype))
    assert cpu.leaky_readout_sum_fwd(h.to(dtype), a).dtype == F32


@pytest.mark.parametrize("shape", [(0, 5, 3), (2, 0, 3), (2, 5, 0)], ids=["B0", "T0", "N0"])
def test_empty_shapes(shape):
    B, T, N = shape
    cpu = launchers("cpu")
    h, a, g = torch.zeros(shape), torch.full((N,), 0.8), torch.zeros(shape)
    dh, dalpha = cpu.leaky_readout_bwd(g, cpu.leaky_readout_fwd(h, a), a, True)
    assert dh.shape == shape and torch.equal(dalpha, torch.zeros(N))
    m = cpu.leaky_readout_sum_fwd(h, a)
    dh, dalpha = cpu.leaky_readout_sum_bwd(m, h, a, T, True)
    assert m.shape == (B, N) and torch.equal(m, torch.zeros(B, N)) and dh.shape == shape
    assert torch.equal(dalpha, torch.zeros(N))


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("op", [fastsnn.leaky_readout, fastsnn.leaky_readout_sum], ids=["membrane", "sum"])
def test_short_sequences_keep_a_graph(backend, device, op):
    """T = 1: u = u_0 = 0 does not depend on h, yet the output has a graph, whose backward gives zeros."""
    h = currents(2, 1, 3, device=device)
    alpha = torch.full((3,), 0.8, device=device, requires_grad=True)
    out = op(h, alpha, backend=backend)
    assert out.requires_grad
    out.sum().backward()
    assert not h.grad.any() and not alpha.grad.any()


@pytest.mark.parametrize("op", [fastsnn.leaky_readout, fastsnn.leaky_readout_sum], ids=["membrane", "sum"])
def test_reference_short_sequences_keep_a_graph(op):
    h = currents(2, 1, 3)
    assert op(h, torch.full((3,), 0.8, requires_grad=True), backend="reference").requires_grad


@pytest.mark.parametrize("shape", [(0, 5, 3), (2, 0, 3), (2, 5, 0)], ids=["B0", "T0", "N0"])
@pytest.mark.parametrize("op", [fastsnn.leaky_readout, fastsnn.leaky_readout_sum], ids=["membrane", "sum"])
def test_triton_readout_takes_empty_shapes(op, shape):
    device = backend_device("triton")
    h = torch.zeros(shape, device=device, requires_grad=True)
    alpha = torch.full((shape[2],), 0.8, device=device, requires_grad=True)
    op(h, alpha, backend="triton").sum().backward()
    assert not h.grad.any() and not alpha.grad.any()


def test_time_weights_cannot_be_corrupted_through_a_layer():
    """time_weights() handed out the tensor every layer of the same tau shares: editing it in place changed
    every layer's time_sum."""
    from fastsnn.nn import LeakyReadout

    layers = [LeakyReadout(6, 3, generator=torch.Generator().manual_seed(k), backend="cpu") for k in range(2)]
    x = (torch.rand(2, 7, 6, generator=torch.Generator().manual_seed(2)) < 0.3).float()
    before = layers[1].time_sum(x)
    layers[0].time_weights(7, torch.float32, torch.device("cpu")).mul_(0)
    assert torch.equal(layers[1].time_sum(x), before)
    assert torch.equal(layers[0].time_weights(7, torch.float32, torch.device("cpu")),
                       torch.tensor(readout_time_weights(TAU5, 7), dtype=torch.float32))

"""The Triton launchers (kernels/) against the autograd reference, on CPU tensors under the
Triton interpreter (conftest.py sets TRITON_INTERPRET=1 before triton is imported).

Tolerances. Forward: exact. The kernels upcast 16-bit inputs exactly and do the reference's
float32 operations in the reference's order, so spikes, the LIF membrane and the readout
membrane equal the reference run in float32 on the upcast input bit for bit; a 16-bit readout
membrane equals that float32 result rounded once (float16), or is within one ulp of it for
bfloat16, because the interpreter truncates float32 -> bfloat16 where a GPU rounds to nearest.
(The forward kernels launch without FMA contraction, so on a GPU too alpha * v + h rounds as in
the reference and no spike flips at a threshold tie.)
The membrane sum is compared to 1e-5 since torch sums over time in another order.
Backward: norm-relative error ||a - b|| / ||b|| < 1e-5 against torch.autograd.grad over the
reference (float32 rounding in another order), plus an elementwise check with atol = 1e-4 of
the largest reference value that reports where the worst element is. The one exception is the
readout's dalpha with 16-bit h: the contract hands the backward the forward's output u, which is
rounded to the input dtype, so it gets that dtype's precision (2e-3 float16, 1e-2 bfloat16).

The interpreter runs every program's time loop in Python (about 1-6 ms per program and step),
so the cases cover every value of each parameter without taking their product.
"""

import math

import pytest
import torch
from conftest import assert_close

from fastsnn.kernels.lif import lif_bwd, lif_fwd
from fastsnn.kernels.readout import (
    leaky_readout_bwd,
    leaky_readout_fwd,
    leaky_readout_sum_bwd,
    leaky_readout_sum_fwd,
)
from fastsnn.ops.reference import leaky_readout_ref, leaky_readout_sum_ref, lif_ref

F32, BF16, F16 = torch.float32, torch.bfloat16, torch.float16
TAU5 = math.exp(-1 / 5)
BETA = 5.0
DALPHA_RTOL_16BIT = {F16: 2e-3, BF16: 1e-2}

# (B, T, N, dtype, alpha, threshold, detach_reset); alpha "rand" is U(0, 1) per neuron
LIF_CASES = [
    (1, 1, 1, F32, TAU5, 1.0, False),
    (3, 2, 30, F32, "rand", 1.0, True),
    (64, 3, 30, F32, 0.0, 1.0, False),
    (3, 3, 257, F32, "rand", 2.0, False),
    (1, 63, 257, F32, TAU5, 1.0, False),
    (64, 63, 1, F32, "rand", 1.0, True),
    (3, 100, 30, F32, 1.0, 0.5, False),
    (1, 100, 257, F32, 0.95, 2.0, True),
    (64, 100, 1, F32, TAU5, 1.0, False),
    (3, 63, 30, BF16, TAU5, 1.0, False),
    (64, 63, 1, BF16, 0.95, 2.0, True),
    (1, 100, 30, F16, "rand", 0.5, True),
    (64, 3, 30, F16, 1.0, 1.0, False),
]
# (B, T, C, dtype, alpha)
READOUT_CASES = [
    (1, 1, 1, F32, TAU5),
    (3, 2, 30, F32, "rand"),
    (64, 3, 30, F32, 0.0),
    (1, 63, 257, F32, TAU5),
    (3, 63, 12, F32, 0.95),
    (64, 100, 1, F32, 1.0),
    (3, 100, 30, BF16, TAU5),
    (64, 63, 1, F16, "rand"),
    (3, 3, 257, BF16, 1.0),
]


def case_id(case) -> str:
    B, T, N, dtype, alpha, *rest = case
    name = f"B{B}-T{T}-N{N}-{str(dtype).removeprefix('torch.')}"
    name += "-alpha_" + (alpha if isinstance(alpha, str) else f"{alpha:.3g}")
    if rest:
        name += f"-thr{rest[0]:g}" + ("-detach" if rest[1] else "")
    return name


def make_inputs(B, T, N, dtype, alpha, scale=1.0, seed=0):
    """h: (B, T, N) in dtype, (randn * 0.8 + 0.3) * scale; alpha: (N,) float32; g: (B, T, N) float32."""
    gen = torch.Generator().manual_seed(seed)
    h = ((torch.randn(B, T, N, generator=gen) * 0.8 + 0.3) * scale).to(dtype)
    a = torch.rand(N, generator=gen) if alpha == "rand" else torch.full((N,), float(alpha))
    return h, a, torch.randn(B, T, N, generator=gen)


def reference_grads(fn, h, alpha, grad):
    """(dh, dalpha) of sum(fn(h, alpha) * grad) by autograd, in float32 on the upcast h.
    For T <= 2 the LIF output does not depend on h at all: both gradients are zero."""
    h = h.float().requires_grad_()
    alpha = alpha.clone().requires_grad_()
    out = fn(h, alpha)
    if not out.requires_grad:
        return torch.zeros_like(h), torch.zeros_like(alpha)
    return torch.autograd.grad(out, (h, alpha), grad, allow_unused=True, materialize_grads=True)


def check_close(name, actual, expected, rtol=1e-5):
    """Elementwise within 10 rtol of the largest |expected| (reports the worst element), then
    norm-relative error ||actual - expected|| / ||expected|| below rtol (exact zeros if expected is 0)."""
    assert_close(name, actual, expected, rtol=0.0, atol=10 * rtol * expected.abs().max().item())
    err, norm = (actual.double() - expected.double()).norm().item(), expected.double().norm().item()
    assert err <= rtol * norm, f"{name}: norm-relative error {err / norm if norm else err:.3g} > {rtol:g}"


def lif_membrane(h, alpha, s):
    """The pre-reset membrane the forward saves: u_0 = 0, u_{t+1} = alpha u_t (1 - s_{t-1}) + h_t."""
    u = [torch.zeros_like(h[:, 0], dtype=torch.float32)]
    for t in range(h.shape[1] - 1):
        v = u[t] * (1 - s[:, t - 1]) if t else u[t]
        u.append(alpha * v + h[:, t].float())
    return torch.stack(u, 1)


@pytest.mark.parametrize("case", LIF_CASES, ids=case_id)
def test_lif(case):
    B, T, N, dtype, alpha, threshold, detach_reset = case
    h, a, g = make_inputs(B, T, N, dtype, alpha, scale=threshold)
    ref = lif_ref(h.float(), a, threshold=threshold)

    s, u, s8 = lif_fwd(h, a, threshold, save=True)
    assert s.dtype == dtype and u.dtype == torch.float32 and s8.dtype == torch.uint8
    if T >= 3:
        assert 0 < ref[:, 2:].mean() < 1, "inputs should give both spikes and non-spikes"
    assert torch.equal(s.float(), ref), f"{int((s.float() != ref).sum())} spikes differ"
    assert torch.equal(s8.float(), ref)
    assert_close("u", u, lif_membrane(h, a, ref), rtol=0.0, atol=0.0)

    dh, dalpha = lif_bwd(g, u, s8, a, threshold, BETA, detach_reset, need_dalpha=True)
    fn = lambda h, a: lif_ref(h, a, threshold=threshold, beta=BETA, detach_reset=detach_reset)  # noqa: E731
    dh_ref, dalpha_ref = reference_grads(fn, h, a, g)
    assert dh.dtype == dalpha.dtype == torch.float32
    check_close("dh", dh, dh_ref)
    check_close("dalpha", dalpha, dalpha_ref)


@pytest.mark.parametrize("dtype", [F32, BF16])
def test_lif_optional_outputs(dtype):
    """save=False writes only s; need_dalpha=False gives the same dh and no dalpha (beta 2 here)."""
    B, T, N, threshold, beta = 3, 63, 30, 1.0, 2.0
    h, a, g = make_inputs(B, T, N, dtype, TAU5, seed=1)
    s, u, s8 = lif_fwd(h, a, threshold, save=False)
    assert u is None and s8 is None
    assert torch.equal(s.float(), lif_ref(h.float(), a, threshold=threshold))

    _, u, s8 = lif_fwd(h, a, threshold, save=True)
    dh, dalpha = lif_bwd(g, u, s8, a, threshold, beta, False, need_dalpha=False)
    assert dalpha is None
    fn = lambda h, a: lif_ref(h, a, threshold=threshold, beta=beta)  # noqa: E731
    check_close("dh", dh, reference_grads(fn, h, a, g)[0])


@pytest.mark.parametrize("case", READOUT_CASES, ids=case_id)
def test_leaky_readout(case):
    B, T, C, dtype, alpha = case
    h, a, g = make_inputs(B, T, C, dtype, alpha)
    ref = leaky_readout_ref(h.float(), a)

    u = leaky_readout_fwd(h, a)
    assert u.dtype == dtype
    if dtype == BF16:  # the interpreter truncates float32 -> bfloat16 (a GPU rounds): within one ulp
        assert_close("u", u, ref, rtol=2**-7, atol=0.0)
    else:
        assert_close("u", u, ref.to(dtype), rtol=0.0, atol=0.0)

    dh, dalpha = leaky_readout_bwd(g, u, a, need_dalpha=True)
    dh_ref, dalpha_ref = reference_grads(leaky_readout_ref, h, a, g)
    check_close("dh", dh, dh_ref)
    check_close("dalpha", dalpha, dalpha_ref, rtol=DALPHA_RTOL_16BIT.get(dtype, 1e-5))

    dh_only, none = leaky_readout_bwd(g, None, a, need_dalpha=False)
    assert none is None and torch.equal(dh_only, dh)


@pytest.mark.parametrize("case", READOUT_CASES, ids=case_id)
def test_leaky_readout_sum(case):
    B, T, C, dtype, alpha = case
    h, a, g = make_inputs(B, T, C, dtype, alpha)
    gm = g[:, 0].contiguous()  # launchers take contiguous tensors

    m = leaky_readout_sum_fwd(h, a)
    assert m.dtype == torch.float32
    check_close("m", m, leaky_readout_sum_ref(h.float(), a))

    dh, dalpha = leaky_readout_sum_bwd(gm, h, a, T, need_dalpha=True)
    dh_ref, dalpha_ref = reference_grads(leaky_readout_sum_ref, h, a, gm)
    check_close("dh", dh, dh_ref)
    check_close("dalpha", dalpha, dalpha_ref)

    dh_only, none = leaky_readout_sum_bwd(gm, None, a, T, need_dalpha=False)
    assert none is None and torch.equal(dh_only, dh)

"""Test setup and the helpers the op tests share.

Triton runs under its interpreter (set before anything imports triton), one torch thread per
worker keeps timings irrelevant and results deterministic, and ``torch.empty``/``empty_like``
are poisoned so that an output element a kernel never writes cannot pass a comparison.

Helpers: :func:`backends` parametrises a test over backends (with the ``device`` fixture giving
where that backend's tensors live), :func:`currents` makes random input currents,
:func:`saved_bytes` measures what autograd keeps for the backward, :func:`vjp` takes a
vector-Jacobian product, and :func:`assert_close` / :func:`assert_grad_close` compare.
"""

import math
import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

# One thread: a kernel's parallel region otherwise waits milliseconds for a second thread to wake on a
# busy machine (the op tests took 2.5x as long); test_cpu_runtime.py runs the kernels on several threads.
torch.set_num_threads(1)

TAU5 = math.exp(-1 / 5)  # the seed's decay per step: dt = 1 ms, tau = 5 ms

_empty, _empty_like = torch.empty, torch.empty_like


def _poison(t: torch.Tensor) -> torch.Tensor:
    if t.is_floating_point():
        t.fill_(float("nan"))
    elif t.dtype == torch.uint8:
        t.fill_(0xAB)
    return t


@pytest.fixture(autouse=True)
def poison_empty(monkeypatch):
    monkeypatch.setattr(torch, "empty", lambda *a, **k: _poison(_empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: _poison(_empty_like(*a, **k)))


# --- backends ------------------------------------------------------------------------------------

def backend_device(backend: str) -> str:
    """Where a backend's tensors live in these tests: the CPU, except Triton compiled for a GPU
    (TRITON_INTERPRET=0, as bench/gpu_check.py runs the tests), which needs CUDA tensors."""
    if backend != "triton" or os.environ.get("TRITON_INTERPRET") == "1":
        return "cpu"
    if not torch.cuda.is_available():
        pytest.skip("Triton without its interpreter needs a CUDA device")
    return "cuda"


def backends(*names: str) -> list:
    """``pytest.param`` per backend name, for ``@pytest.mark.parametrize("backend", backends(...))``;
    a test taking the ``device`` fixture then gets that backend's device (see :func:`backend_device`)."""
    return [pytest.param(name, id=name) for name in names]


FAST = backends("cpu", "triton")
WITH_REFERENCE = backends("reference", "cpu", "triton")


@pytest.fixture
def device(backend):
    return backend_device(backend)


# --- inputs and measurements -----------------------------------------------------------------------

def currents(B: int, T: int, N: int, *, seed: int = 0, dtype: torch.dtype = torch.float32, contiguous: bool = True,
             device: str = "cpu", scale: float = 1.0, requires_grad: bool = True) -> torch.Tensor:
    """Input currents (randn * 0.8 + 0.3) * scale of shape (B, T, N): spikes and silences at a threshold
    of ``scale``. Not ``contiguous``: a (B, N, T) buffer seen as (B, T, N), strides (T*N, 1, T)."""
    g = torch.Generator().manual_seed(seed)
    if contiguous:
        h = torch.randn(B, T, N, generator=g)
    else:
        h = torch.randn(B, N, T, generator=g).transpose(1, 2)
    h = ((h * 0.8 + 0.3) * scale).to(device, dtype)
    return h.requires_grad_() if requires_grad else h


def leaf(t, device: str = "cpu"):
    """A detached copy of tensor ``t`` on ``device`` that requires grad if ``t`` did (non-tensors as they are)."""
    if not isinstance(t, torch.Tensor):
        return t
    return t.detach().to(device).requires_grad_(t.requires_grad)


def saved_bytes(fn) -> int:
    """Bytes of distinct storages autograd saves for the backward while running ``fn``."""
    seen = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def vjp(out: torch.Tensor, inputs, grad: torch.Tensor | None = None, seed: int = 2) -> list[torch.Tensor]:
    """Gradients of ``(out * grad).sum()`` for each tensor of ``inputs`` (non-tensors skipped), CPU copies;
    ``grad`` defaults to a seeded randn. Zeros where out does not depend on an input."""
    inputs = [i for i in inputs if isinstance(i, torch.Tensor)]
    if grad is None:
        grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    grad = grad.to(out.device, out.dtype)
    if not out.requires_grad:
        return [torch.zeros_like(i).cpu() for i in inputs]
    grads = torch.autograd.grad(out, inputs, grad, allow_unused=True)
    return [(torch.zeros_like(i) if d is None else d).cpu() for i, d in zip(inputs, grads)]


# --- comparisons -------------------------------------------------------------------------------------

def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b||, in float64."""
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-300)).item()


def assert_close(name: str, actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-5, atol: float = 1e-6):
    """Compare two tensors, failing on NaN, with the location of the worst element in the message."""
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    a, e = actual.double(), expected.double()
    assert not torch.isnan(a).any(), f"{name}: {int(torch.isnan(a).sum())} NaN elements (unwritten output?)"
    err = (a - e).abs() - rtol * e.abs()
    worst = int(err.argmax()) if err.numel() else 0
    if err.numel() and err.flatten()[worst] > atol:
        idx = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), a.shape))
        raise AssertionError(
            f"{name}: max violation at {idx}: got {a[idx].item():.8g}, expected {e[idx].item():.8g} "
            f"(rtol={rtol}, atol={atol}); {int((err > atol).sum())} of {err.numel()} elements off"
        )


def assert_grad_close(name: str, actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-5,
                      elementwise: float | None = None):
    """A gradient against the reference's: norm-relative error ||a - e|| / ||e|| <= ``rtol`` (exact zeros
    where e is all zero), then elementwise within ``elementwise`` (default 10 ``rtol``) relative plus
    ``elementwise`` of max |e| absolute, which names the worst element."""
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert not torch.isnan(actual).any(), f"{name}: {int(torch.isnan(actual).sum())} NaN elements"
    if not expected.double().abs().sum():
        assert not actual.double().abs().sum(), f"{name}: expected all zeros, got max |x| {actual.abs().max()}"
        return
    err = rel_err(actual, expected)
    assert err <= rtol, f"{name}: norm-relative error {err:.3g} > {rtol:g}"
    loose = 10 * rtol if elementwise is None else elementwise
    assert_close(name, actual, expected, rtol=loose, atol=loose * expected.double().abs().max().item())

"""Test setup: Triton runs under its interpreter (set before anything imports
triton), one torch thread per worker keeps timings irrelevant and results
deterministic, and ``torch.empty``/``empty_like`` are poisoned so that an output
element a kernel never writes cannot pass a comparison."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

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


def backend_device(backend: str) -> str:
    """Where a backend's tensors live in these tests: the CPU, except Triton compiled for a GPU
    (TRITON_INTERPRET=0, as bench/gpu_check.py runs the tests), which needs CUDA tensors."""
    if backend != "triton" or os.environ.get("TRITON_INTERPRET") == "1":
        return "cpu"
    if not torch.cuda.is_available():
        pytest.skip("Triton without its interpreter needs a CUDA device")
    return "cuda"


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

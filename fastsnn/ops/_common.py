"""What every op shares: backends, the state dtype, argument checks.

The lowest layer of :mod:`fastsnn.ops`: it imports only torch, and every op folder
(``neurons/``, ``readout/``, ``spikes/``, ``delays/``) imports it, never the other way round.

Backends:

- ``"reference"``: the op's plain autograd loop (its ``reference.py``), any device.
- ``"cpu"``: compiled CPU kernels (numba, the op's ``cpu.py``), CPU tensors.
- ``"triton"``: fused Triton kernels (:mod:`fastsnn.kernels`), CUDA tensors, or CPU
  tensors when ``TRITON_INTERPRET=1`` was set before Triton was imported.
- ``"auto"``: ``"triton"`` for CUDA tensors, ``"cpu"`` for CPU tensors (others: ``"reference"`` by hand).

The fast backends' backward passes are fused kernels: first derivatives only (:func:`first_order`).
"""

from __future__ import annotations

import importlib.util
import math
import numbers
import os

import torch

BACKENDS = ("auto", "reference", "cpu", "triton")
FLOAT_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def state_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype every backend keeps its state and gradients in: float64 for float64 input, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def resolve_backend(backend: str, device: torch.device) -> str:
    """The concrete backend ``backend`` means for tensors on ``device``; raises if it cannot run there."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    device = torch.device(device)
    if backend == "auto":
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"backend 'auto' has no kernels for tensors on {device}: the fast backends take CPU "
                             "('cpu') and CUDA ('triton') tensors; use backend 'reference'")
        backend = "triton" if device.type == "cuda" else "cpu"
    if backend == "cpu" and device.type != "cpu":
        raise ValueError(f"backend 'cpu' runs on CPU tensors, got tensors on {device}; use 'triton' or 'auto'")
    if backend == "triton":
        if not triton_available():
            raise RuntimeError("backend 'triton' needs the triton package (pip install triton; Linux x86-64)")
        if device.type == "cpu" and not _interpreting():
            raise ValueError("backend 'triton' runs on CUDA tensors; for CPU tensors set TRITON_INTERPRET=1 "
                             "before importing triton, or use backend 'cpu'")
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"backend 'triton' runs on CUDA tensors, got tensors on {device}")
    return backend


class _FirstOrder(torch.autograd.Function):
    """The identity on a fused backward's gradients, whose own backward raises: see :func:`first_order`."""

    @staticmethod
    def forward(ctx, op: str, *grads):
        ctx.op = op
        return tuple(g.view_as(g) for g in grads)

    @staticmethod
    def backward(ctx, *_):
        raise RuntimeError(f"{ctx.op}: the 'cpu' and 'triton' backends compute first derivatives only (a fused "
                           "backward kernel); for second derivatives use backend='reference'")


def first_order(op: str, bwd, *args) -> tuple:
    """``bwd(*args)``, the gradients (a tuple of tensors or None) of a fused backward of ``op``, computed
    without a graph (tensor arguments detached). Under ``create_graph=True`` they come out as the ends of a
    graph whose backward raises a clear error: they would otherwise not require grad, and differentiating
    them again failed with autograd's "does not require grad"."""
    graph = torch.is_grad_enabled()  # create_graph=True
    with torch.no_grad():
        grads = bwd(*(a.detach() if isinstance(a, torch.Tensor) else a for a in args))
    if not graph:
        return grads
    live = [i for i, g in enumerate(grads) if isinstance(g, torch.Tensor)]
    marked = _FirstOrder.apply(op, *(grads[i].detach().requires_grad_() for i in live))
    out = list(grads)
    for i, g in zip(live, marked):
        out[i] = g
    return tuple(out)


def check_h(name: str, h) -> None:
    if not isinstance(h, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, T, N), got {type(h).__name__}")
    if h.ndim != 3:
        raise ValueError(f"{name} must have shape (B, T, N) (3 dims), got shape {tuple(h.shape)}")
    if h.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32, float64, bfloat16 or float16, got {h.dtype}")


def check_scalar(name: str, value, lo: float | None = None) -> float:
    """A finite real number (numpy scalars included) as a float; with ``lo``, it must exceed it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if lo is not None and value <= lo:
        raise ValueError(f"{name} must be > {lo}, got {value!r}")
    return float(value)


def check_choice(name: str, value, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def decay_tensor(name: str, value, h: torch.Tensor) -> torch.Tensor:
    """Validate a decay per step (``alpha``, ``rho``): a number in [0, 1] or an (N,) tensor; return (N,)
    in the state dtype on h's device.

    A tensor on the CPU is checked for values outside [0, 1] and NaN (eagerly; not while torch.compile
    traces, where the check would break the graph). On CUDA it is not: the check would copy to the
    host and stall the stream at every call. The layers in :mod:`fastsnn.nn`
    build their learnt decays as ``exp(-dt / tau)``, which lies in (0, 1] by construction.
    """
    n = h.shape[2]
    state = state_dtype(h.dtype)
    if isinstance(value, torch.Tensor):
        if value.shape != (n,):
            raise ValueError(f"{name} must be a float or a tensor of shape (N,) = ({n},), got shape "
                             f"{tuple(value.shape)}")
        if not value.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {value.dtype}")
        if value.device != h.device:
            raise ValueError(f"{name} is on {value.device} but h is on {h.device}; put both on one device")
        if (value.device.type == "cpu" and n and not torch.compiler.is_compiling()
                and not bool(((value >= 0) & (value <= 1)).all())):
            bad = value[~((value >= 0) & (value <= 1))][0].item()
            raise ValueError(f"{name} must lie in [0, 1] (a decay per step, exp(-dt/tau)), got an element {bad!r}")
        return value.to(state).contiguous()
    number = check_scalar(name, value)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1] (a decay per step, exp(-dt/tau)), got {value!r}")
    return torch.full((n,), number, dtype=state, device=h.device)


def time_weights_tensor(weights, h: torch.Tensor) -> torch.Tensor:
    """Validate (T,) time weights and return them as a state-dtype tensor on h's device."""
    if not isinstance(weights, torch.Tensor):
        try:
            weights = torch.tensor(weights, dtype=state_dtype(h.dtype), device=h.device)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"time_weights must be a (T,) tensor or a sequence of floats, got "
                            f"{type(weights).__name__}") from None
    if weights.shape != (h.shape[1],):
        raise ValueError(f"time_weights must have shape (T,) = ({h.shape[1]},), got shape {tuple(weights.shape)}")
    if not weights.is_floating_point():
        raise TypeError(f"time_weights must be floating point, got {weights.dtype}")
    if weights.requires_grad:
        raise ValueError("time_weights get no gradient; pass time_weights.detach() (or sum the spikes yourself)")
    if weights.device != h.device:
        raise ValueError(f"time_weights are on {weights.device} but h is on {h.device}; put both on one device")
    return weights.to(state_dtype(h.dtype)).contiguous()


def upcast(h: torch.Tensor) -> torch.Tensor:
    """16-bit inputs run the reference in float32, like the kernels' float32 state."""
    return h.float() if h.dtype in (torch.bfloat16, torch.float16) else h


def as_reference_decay(value):
    """A decay as the reference takes it: the tensor itself (keeping its graph) or a float."""
    return value if isinstance(value, torch.Tensor) else float(value)


def empty_state(h: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The placeholder a custom op returns for a saved tensor it did not save (ops return no None)."""
    return h.new_empty((0,), dtype=dtype)


def zeros_if_none(grad, like: torch.Tensor) -> torch.Tensor:
    """Custom ops must return tensors: a gradient that was not asked for comes back as zeros."""
    return grad if grad is not None else torch.zeros_like(like)


class Connect(torch.autograd.Function):
    """Return ``out`` unchanged, attached to the graph of ``inputs`` with zero gradients.

    The reference's outputs do not depend on h when T <= 1 (delayed spikes: s_0 = 0), so autograd
    would give them no graph; the fast backends' outputs always have one. Attaching the reference's
    makes both behave alike: ``out.sum().backward()`` works and gives zero gradients.
    """

    @staticmethod
    def forward(ctx, out: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        ctx.like = [(t.shape, t.dtype, t.device) for t in inputs]
        return out.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return (grad, *(torch.zeros(shape, dtype=dtype, device=device) for shape, dtype, device in ctx.like))


def connected(out: torch.Tensor, *inputs) -> torch.Tensor:
    """``out``, with a graph to every input that requires a gradient (see :class:`Connect`)."""
    needs = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
    if out.requires_grad or not needs or not torch.is_grad_enabled():
        return out
    return Connect.apply(out, *needs)

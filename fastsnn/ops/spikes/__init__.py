"""Projection of 0/1 spikes, ``h = x @ w``: by events where spikes are sparse, x kept as bits for the backward.

A projection of spikes needs no multiplication, only the rows of w for the inputs that fired:
``h[r] = sum_{i: x[r,i]=1} w[i]``, and for the weight gradient ``dw[i] = sum_{r: x[r,i]=1} dh[r]``,
work spikes x width instead of rows x inputs x width. The forward packs x into bits (one pass
over x, which also counts the spikes and checks that x is 0/1), then runs the event-driven
kernels or the dense GEMM, whichever :func:`event_pays` says is faster on the CPU at the counted
density; the backward decides the same for the weight gradient from the same count. On CUDA the
Triton bit-tile kernels run (``path="auto"``) without reading the count, which would stall the
stream; no GPU crossover has been measured. The input gradient ``dh @ w^T`` is dense (dh is not
spikes).

Bits: eight consecutive rows share a byte per column (``bits[g, k]`` bit j is ``x[8g + j, k]``),
1/32 of x's float32 bytes. ``pack_spikes`` / ``unpack_spikes``, ``spike_project`` and
``spike_weight_grad`` are custom ops so that ``torch.compile`` traces them; eagerly their
implementations are called directly, as in :mod:`fastsnn.ops.neurons`. Spikes made as bits in the first
place (a stimulus kernel) come as :class:`SpikeBits`, which ``spike_matmul`` takes without a packing pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .._common import FLOAT_DTYPES, first_order, resolve_backend
from .reference import pack_spikes_ref, spike_matmul_ref, unpack_spikes_ref

__all__ = ["spike_matmul", "spike_matmul_ref", "event_pays", "pack_spikes", "unpack_spikes", "SpikeBits", "SpikeMatmul",
           "PATHS"]

PATHS = ("auto", "event", "dense")

# Densities (spikes / entries of x) up to which the event-driven kernels beat the dense GEMM on the CPU,
# by output width N. Measured by bench/spike_crossover.py (bench/results/spike-crossover-amd-epyc.{json,png}:
# an AMD EPYC (Zen 4), 2 threads, quiet; after full column chunks lost their lane masks), crossovers
# of the median curves (an earlier 1-thread run, on the machine loaded by other work: weight gradient
# 0.74 at seed, 0.88 at bigbatch; wide 0.38 and 0.45):
#   seed (M = 6400, K = 200, N = 30):         forward 0.98, weight grad none (events faster up to density 1)
#   bigbatch (M = 102400, K = 200, N = 30):   forward none, weight grad none
#   seed128 (M = 6400, K = 200, N = 128):     forward 0.55, weight grad 0.69
#   wide (M = 6400, K = 2000, N = 1000):      forward 0.41, weight grad 0.49
# rounded down. N <= 32 holds an output row in two vector registers; the GEMM is narrowest there.
CPU_CROSSOVER = {  # op: ((largest N, largest density), ...), the first entry whose N fits
    "forward": ((32, 1.0), (128, 0.5), (None, 0.4)),
    "weight_grad": ((32, 0.7), (128, 0.6), (None, 0.45)),
}


def event_pays(op: str, density: float, n: int) -> bool:
    """Whether on the CPU the event-driven path is the faster one for ``op`` ("forward" or
    "weight_grad") at ``density`` with output width ``n`` (``CPU_CROSSOVER``)."""
    for max_n, max_density in CPU_CROSSOVER[op]:
        if max_n is None or n <= max_n:
            return density <= max_density
    return False


# --- bits ----------------------------------------------------------------------------------------------

def _pack_spikes(x: Tensor) -> Tensor:
    """x (M, K), 0/1 (anything nonzero counts as 1) -> (ceil(M / 8), K) uint8; bit j of [g, k] is x[8g + j, k]."""
    if x.device.type == "cpu":
        from .cpu import pack_spikes_cpu

        return pack_spikes_cpu(x)
    return pack_spikes_ref(x)


pack_spikes = torch.library.custom_op("fastsnn::pack_spikes", _pack_spikes, mutates_args=())


@pack_spikes.register_fake
def _(x):
    return x.new_empty((-(-x.shape[0] // 8), x.shape[1]), dtype=torch.uint8)


def _unpack_spikes(bits: Tensor, m: int, dtype: torch.dtype) -> Tensor:
    """The inverse of :func:`pack_spikes`: (ceil(M / 8), K) uint8 -> (M, K) 0/1 of ``dtype``."""
    if bits.device.type == "cpu":
        from .cpu import unpack_spikes_cpu

        return unpack_spikes_cpu(bits, m, dtype)
    return unpack_spikes_ref(bits, m, dtype)


unpack_spikes = torch.library.custom_op("fastsnn::unpack_spikes", _unpack_spikes, mutates_args=())


@unpack_spikes.register_fake
def _(bits, m, dtype):
    return bits.new_empty((m, bits.shape[1]), dtype=dtype)


_POPCOUNT = torch.tensor([bin(b).count("1") for b in range(256)], dtype=torch.int64)


@dataclass(frozen=True)
class SpikeBits:
    """0/1 spikes of shape ``shape`` (..., K) held as bits, as :func:`spike_matmul` keeps them: ``bits``
    (ceil(M / 8), K) uint8, bit j of ``bits[g, k]`` is row 8g + j, column k of the spikes seen as (M, K)
    rows, M = prod(shape[:-1]); ``counts`` (ceil(M / 8),) int64: the spikes of each group of 8 rows, or
    None where they were not counted (a CUDA kernel; the CPU counts them when it needs them).
    ``dtype``: what :meth:`unpack` returns.

    Layers and :func:`spike_matmul` take it wherever they take 0/1 spikes x: the projection then
    starts from the bits (no pass over x to pack it), and paths that need x itself unpack it. It
    carries no gradient (spikes from data).
    """

    bits: Tensor
    shape: torch.Size
    counts: Tensor | None = None
    dtype: torch.dtype = torch.float32

    def __post_init__(self):
        object.__setattr__(self, "shape", torch.Size(self.shape))
        if not self.shape:
            raise ValueError("SpikeBits shape must have at least one dimension (..., K), got ()")
        expected = (-(-self.rows // 8), self.shape[-1])
        if self.bits.dtype != torch.uint8 or tuple(self.bits.shape) != expected:
            raise ValueError(f"SpikeBits bits must be uint8 of shape {expected} for spikes of shape "
                             f"{tuple(self.shape)}, got {self.bits.dtype} {tuple(self.bits.shape)}")
        if self.counts is not None and (self.counts.dtype != torch.int64 or tuple(self.counts.shape) != expected[:1]
                                        or self.counts.device != self.bits.device):
            raise ValueError(f"SpikeBits counts must be int64 of shape {expected[:1]} on {self.bits.device}, got "
                             f"{self.counts.dtype} {tuple(self.counts.shape)} on {self.counts.device}")

    @property
    def rows(self) -> int:
        return math.prod(self.shape[:-1])

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def device(self) -> torch.device:
        return self.bits.device

    @classmethod
    def pack(cls, x: Tensor) -> "SpikeBits":
        """The bits of x (..., K) of 0/1 (on the CPU, anything else raises ValueError)."""
        rows = _rows(x.detach())
        if rows.device.type == "cpu":
            from .cpu import pack_count_cpu

            bits, counts = pack_count_cpu(rows)
            if counts[:, 1].any():
                raise ValueError("SpikeBits.pack needs x of 0/1 spikes; x holds other values (or NaN)")
            return cls(bits, x.shape, counts[:, 0].contiguous(), x.dtype)
        return cls(pack_spikes(rows), x.shape, None, x.dtype)

    def unpack(self) -> Tensor:
        """The spikes as a ``shape`` tensor of 0/1 ``dtype``."""
        return unpack_spikes(self.bits, self.rows, self.dtype).reshape(self.shape)

    def group_counts(self) -> Tensor:
        """``counts``, counted from the bits where they are None."""
        if self.counts is not None:
            return self.counts
        return _POPCOUNT.to(self.device)[self.bits.long()].sum(1)


# --- the projection and its weight gradient ----------------------------------------------------------------

def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _spike_project(x: Tensor, w: Tensor, backend: str, path: str) -> tuple[Tensor, Tensor, Tensor]:
    """x (M, K), w (K, N) -> (h = x @ w (M, N), bits of x (ceil(M/8), K) uint8, spikes: () int64, the
    number of nonzero entries of x; -1 where x holds values other than 0/1, on the CPU)."""
    m = x.shape[0]
    if backend == "triton":
        from fastsnn.kernels import spikes as kernels

        bits, spikes = kernels.pack_count(x)
        return _project_bits(bits, None, -1, m, w, backend, path, x), bits, spikes
    from .cpu import pack_count_cpu

    bits, counts = pack_count_cpu(x)
    nonzero, other = counts.sum(0).tolist()
    if other and path == "event":
        raise ValueError("spike_matmul(path='event') needs x of 0/1 spikes; x holds other values (or NaN)")
    h = x @ w if other else _project_bits(bits, counts[:, 0].contiguous(), nonzero, m, w, backend, path, x)
    return h, bits, torch.tensor(-1 if other else nonzero)


def _project_bits(bits: Tensor, counts: Tensor | None, spikes: int, m: int, w: Tensor, backend: str, path: str,
                  x: Tensor | None = None) -> Tensor:
    """x @ w (M, N) from the bits of 0/1 x (M, K): by events or, where ``path`` or the CPU's crossover
    says so, the dense product (of ``x`` if given, else the bits unpacked). For the CPU: ``counts``
    (ceil(M/8),) spikes per group of 8 rows and ``spikes`` their sum (Triton reads neither)."""
    k, n = w.shape
    if backend == "triton":
        if path == "dense":
            return (x if x is not None else _unpack_spikes(bits, m, w.dtype)) @ w
        from fastsnn.kernels import spikes as kernels

        return kernels.event_matmul(bits, w.to(_work_dtype(w.dtype)), m).to(w.dtype)
    from .cpu import event_matmul_cpu

    if path == "event" or (path == "auto" and event_pays("forward", spikes / max(1, m * k), n)):
        return event_matmul_cpu(bits, counts, w.to(_work_dtype(w.dtype)), m).to(w.dtype)
    return (x if x is not None else _unpack_spikes(bits, m, w.dtype)) @ w


def _bits_project(x: SpikeBits, w: Tensor, backend: str, path: str) -> tuple[Tensor, Tensor]:
    """:func:`_spike_project` for spikes already in bits: (h (M, N), spikes: () int64, on the CPU their
    number, else -1)."""
    if backend == "triton":
        return _project_bits(x.bits, None, -1, x.rows, w, backend, path), torch.tensor(-1)
    counts = x.group_counts()
    spikes = int(counts.sum())
    return _project_bits(x.bits, counts, spikes, x.rows, w, backend, path), torch.tensor(spikes)


spike_project = torch.library.custom_op("fastsnn::spike_project", _spike_project, mutates_args=())


@spike_project.register_fake
def _(x, w, backend, path):
    bits = x.new_empty((-(-x.shape[0] // 8), x.shape[1]), dtype=torch.uint8)
    return x.new_empty((x.shape[0], w.shape[1]), dtype=w.dtype), bits, x.new_empty((), dtype=torch.int64)


def _spike_weight_grad(bits: Tensor, grad: Tensor, spikes: Tensor, backend: str, path: str) -> Tensor:
    """grad (M, N), bits of x (M, K), spikes as :func:`_spike_project` counted them -> x^T grad (K, N)."""
    m, k = grad.shape[0], bits.shape[1]
    work = grad.to(_work_dtype(grad.dtype)).contiguous()
    if backend == "triton":
        if path == "dense":
            return (_unpack_spikes(bits, m, work.dtype).t() @ work).to(grad.dtype)
        from fastsnn.kernels.spikes import event_weight_grad

        return event_weight_grad(bits, work).to(grad.dtype)
    from .cpu import event_weight_grad_cpu, spike_weight_grad_cpu

    count = int(spikes)
    if count < 0:  # the packing pass found values other than 0/1: the bits would count each nonzero as 1
        raise ValueError("spike_matmul: x held values other than 0 and 1 (or NaN), whose weight gradient its bits "
                         "cannot give; pass 0/1 spikes, or use x @ w")
    density = count / max(1, m * k)
    if path == "event" or (path == "auto" and count >= 0 and event_pays("weight_grad", density, grad.shape[1])):
        return event_weight_grad_cpu(bits, work).to(grad.dtype)
    return spike_weight_grad_cpu(bits, work).t().to(grad.dtype)


spike_weight_grad = torch.library.custom_op("fastsnn::spike_weight_grad", _spike_weight_grad, mutates_args=())


@spike_weight_grad.register_fake
def _(bits, grad, spikes, backend, path):
    return grad.new_empty((bits.shape[1], grad.shape[1]))


def _rows(t: Tensor) -> Tensor:
    """(..., K) -> (prod(...), K), also for K = 0."""
    return t.reshape(math.prod(t.shape[:-1]), t.shape[-1])


class SpikeMatmul(torch.autograd.Function):
    """x (..., K) spikes (a tensor or :class:`SpikeBits`) @ w (K, N); saves x as bits, w and the spike count."""

    @staticmethod
    def forward(ctx, x: Tensor | SpikeBits, w: Tensor, backend: str, path: str) -> Tensor:
        if isinstance(x, SpikeBits):
            (h, spikes), bits = _bits_project(x, w.detach(), backend, path), x.bits
        else:
            project = spike_project if torch.compiler.is_compiling() else _spike_project
            h, bits, spikes = project(_rows(x.detach()), w.detach(), backend, path)
        ctx.save_for_backward(bits, w, spikes)
        ctx.args = (backend, path, x.dtype)
        return h.reshape(*x.shape[:-1], w.shape[1])

    @staticmethod
    def backward(ctx, grad: Tensor):
        bits, w, spikes = ctx.saved_tensors
        backend, path, x_dtype = ctx.args
        dx = dw = None
        if ctx.needs_input_grad[0]:
            dx = (grad @ w.t()).to(x_dtype)
        if ctx.needs_input_grad[1]:
            weight_grad = spike_weight_grad if torch.compiler.is_compiling() else _spike_weight_grad
            (dw,) = first_order("fastsnn.spike_matmul", lambda *args: (weight_grad(*args),), bits, _rows(grad), spikes,
                                backend, path)
            dw = dw.to(w.dtype)
        return dx, dw, None, None  # dx = grad @ w^T is differentiable as it is


def _check(x, w, path: str) -> None:
    for name, t in (("x", x), ("w", w)):
        if not isinstance(t, torch.Tensor) and not (name == "x" and isinstance(t, SpikeBits)):
            raise TypeError(f"{name} must be a torch.Tensor{' or SpikeBits' if name == 'x' else ''}, got "
                            f"{type(t).__name__}")
        if t.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{name} must be float32, float64, bfloat16 or float16, got {t.dtype}")
    if w.ndim != 2:
        raise ValueError(f"w must have shape (K, N) (2 dims), got shape {tuple(w.shape)}")
    if x.ndim < 1 or x.shape[-1] != w.shape[0]:
        raise ValueError(f"x must have shape (..., K) with K = w.shape[0] = {w.shape[0]}, got shape {tuple(x.shape)}")
    if x.dtype != w.dtype:
        raise TypeError(f"x and w must have one dtype, got {x.dtype} and {w.dtype}")
    if x.device != w.device:
        raise ValueError(f"x is on {x.device} but w is on {w.device}; put both on one device")
    if path not in PATHS:
        raise ValueError(f"path must be one of {', '.join(map(repr, PATHS))}, got {path!r}")


def spike_matmul(x: Tensor | SpikeBits, w: Tensor, *, backend: str = "auto", path: str = "auto") -> Tensor:
    """x (..., K) 0/1 spikes @ w (K, N) -> (..., N), by events where that is faster, saving x as bits.
    x may come as :class:`SpikeBits` (then no packing pass, and no gradient for x).

    ``path``: ``"auto"`` (on the CPU events up to the measured crossover density, :func:`event_pays`;
    on the Triton backend events), ``"event"`` or ``"dense"``. ``backend``: ``"auto"``, ``"cpu"``,
    ``"triton"`` (the bit kernels of ``fastsnn/kernels/spikes.py``) or ``"reference"`` (plain ``x @ w``
    under autograd). Results equal
    ``x @ w`` up to the order of float summation. x should hold 0/1: on the CPU other values (NaN
    included) are detected by the packing pass, at no cost, and take the dense path, whose forward is
    exact for any x (``path="event"`` then raises), and the weight gradient raises ``ValueError`` (the
    saved bits cannot give it; it used to count a nonzero entry as 1, silently). The Triton path does not
    check x (that would stall the stream) and counts a nonzero entry as 1 in the forward and the weight
    gradient. The gradient for x is ``grad @ w^T``.
    """
    _check(x, w, path)
    backend = resolve_backend(backend, x.device)
    bits = isinstance(x, SpikeBits)
    if backend == "reference":
        return spike_matmul_ref(x.unpack() if bits else x, w)
    if torch.is_grad_enabled() and (w.requires_grad or (not bits and x.requires_grad)):
        return SpikeMatmul.apply(x, w, backend, path)
    h = _bits_project(x, w, backend, path)[0] if bits else _spike_project(_rows(x), w, backend, path)[0]
    return h.reshape(*x.shape[:-1], w.shape[1])

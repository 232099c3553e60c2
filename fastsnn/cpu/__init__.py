"""Numba CPU kernels for fastsnn, shipped as ``fastsnn.cpu``.

The kernels live with their ops (``fastsnn/ops/<op>/cpu.py``: forward and backward
``@njit(parallel=True)`` kernels, then their host launchers, with the signatures of
``docs/kernel_contract.md``); here are their shared helpers: lanes, launch sizes, thread
counts, subnormal flushing, and (``rows.py``) the lane buffers and row copies. Each
``prange`` iteration owns one lane: a batch
row and a block of neighbouring neurons. It walks time inside the lane with the
block's neurons innermost, so memory is read in contiguous runs, and it copies
each time step's rows into local buffers padded to 16 values (:func:`~fastsnn.cpu.rows.padded`),
where the neuron loops compile to SIMD without a scalar remainder (a lane per
single neuron, striding through time, was measured up to 4x slower:
``bench/cpu_candidates.py``). Backward kernels flush subnormals to zero
(:func:`flush_subnormals`). State is float32, or
float64 for float64 input; bfloat16/float16 inputs are upcast to float32 by
the launcher. Nothing here is imported by ``import fastsnn``.

Launchers hand numba zero-copy ``.numpy()`` views of contiguous tensors; their
large outputs come from a cache of buffers that earlier outputs released
(``buffers.py``: no page faults for a step's new tensors). Every launch first sets numba's thread
count to ``torch.get_num_threads()`` (capped at numba's pool size). Numba
picks its threading layer itself (tbb if installed, else omp: a second GNU
OpenMP pool beside torch's). The two pools take turns, never run at once, and
alternating them measured no slowdown; calls from several Python threads at
once are safe with tbb and omp (not with workqueue). As with torch's own
OpenMP, a ``fork()``ed child must not run kernels once its parent has (numba's
omp layer terminates it): give such workers the spawn or forkserver method.

The first call per dtype compiles a kernel (1-4 s each on 2 cores); the result
is cached on disk, keyed on every source file it compiles from and on the numba
and llvmlite versions and the CPU (:mod:`.cache`, which also says where). Where
no folder is writable, or the cache fails, kernels compile in every process, with
one warning.
"""

from __future__ import annotations

import platform
import threading

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .cache import cached_kernel
from .threads import poll as threads_poll
from .rows import PAD, gather, padded, replicated, scatter, scatter2, staged  # noqa: F401 (the kernels' helpers)


def cpu_kernel(fn):
    """``numba.njit(parallel=True, fastmath=False)`` cached on disk by :func:`.cache.cached_kernel`: a change
    to any fastsnn file the kernel's module imports, not only its own, compiles it afresh."""
    return cached_kernel(numba.njit(parallel=True, fastmath=False)(fn))


@numba.njit(inline="always")
def lane_span(lane: int, nblk: int, block: int, n: int):
    """A kernel lane -> (batch row b, first neuron n0, end neuron n1) of its block of neurons."""
    b = lane // nblk
    n0 = (lane - b * nblk) * block
    return b, n0, min(n0 + block, n)


@numba.njit(inline="always")
def lane_rows(lane: int, nblk: int, block: int, n: int, group: int, batch: int):
    """A kernel lane -> (first batch row b0, its number of rows, first neuron n0, end neuron n1): ``group``
    batch rows x one block of neurons (:func:`launch_group`)."""
    g = lane // nblk
    n0 = (lane - g * nblk) * block
    b0 = g * group
    return b0, min(group, batch - b0), n0, min(n0 + block, n)


def np_view(t: torch.Tensor | None, dtype: torch.dtype, ndim: int) -> np.ndarray:
    """Zero-copy numpy view of contiguous t, or an empty array of the same numba type when t is None."""
    if t is None:
        return np.empty((0,) * ndim, dtype=torch.zeros((), dtype=dtype).numpy().dtype)
    return t.detach().numpy()


_threads_started = False
_launch_state = threading.local()


def _start_numba_threads() -> None:
    """Start numba's thread pool once, then restore torch's thread count: starting numba's
    OpenMP layer resets the OpenMP thread count that torch shares (``--threads 1`` would
    silently become all cores)."""
    global _threads_started
    if not _threads_started:
        threads = torch.get_num_threads()
        numba.np.ufunc.parallel._launch_threads()
        torch.set_num_threads(threads)
        _threads_started = True


def sync_threads() -> int:
    """Set numba's thread count to torch's (capped at numba's pool) before a launch, after letting
    :mod:`.threads` adapt torch's to the free cores when it is set to ``"auto"``; returns it."""
    _start_numba_threads()
    threads_poll()
    threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    if getattr(_launch_state, "threads", None) != threads:  # numba's count is per Python thread
        numba.set_num_threads(threads)
        _launch_state.threads = threads
    return threads


GROUP_WIDTH = 64  # values a lane's neuron loops run over when rows are narrow: 2 rows of 30 neurons (padded 32)


def launch_group(B: int, N: int, block: int, width: int = GROUP_WIDTH) -> int:
    """Batch rows per lane for the LIF backward's lanes of ``block`` neurons: as many as make its neuron
    loops ``width`` values long (1 for blocks that wide), while every thread keeps 4 lanes.

    A backward step is a dozen short loops and copies per lane; at 30 neurons two batch rows side by
    side took the backward from 16.6 to 10.5 ms at (1024, 100, 30) and from 1.02 to 0.62 ms at
    (64, 100, 30) (AMD EPYC, 1 thread); four rows were slower than two (13 ms; four rows of every
    array is 20 streams), as was grouping the forward (3.3 -> 4.7 ms, whose copies dominate). A
    backward that reads fewer arrays a step takes a wider ``width`` (``fastsnn.ops.neurons.cpu``).
    """
    threads = sync_threads()
    pad = -(-min(block, max(N, 1)) // PAD) * PAD
    group = max(1, width // pad)
    nblk = -(-N // block) if N else 1
    while group > 1 and -(-B // group) * nblk < 4 * threads:
        group //= 2
    return group


def launch_block(B: int, N: int) -> int:
    """:func:`sync_threads`, then the neurons per lane for a (B, N) plane of lanes.

    Whole rows when the batch alone gives every thread 4 lanes; otherwise rows are
    split into equal blocks, as many as that takes but none under 64 neurons.
    """
    threads = sync_threads()
    blocks = max(1, min(-(-4 * threads // max(B, 1)), N // 64))
    return max(1, -(-N // blocks))


# Subnormal numbers (below 1.2e-38 in float32) cost 20-100x per operation on x86. Gradients sink
# into them: a saturated softmax hands the backward g ~ 1e-37 for a whole sample, and adjoints
# decay by alpha per step back in time. Measured on the long workload: LIF backward 40 ms and the
# weight-gradient GEMM after it 330 ms, against 15 and 16 ms without subnormals. Backward kernels
# therefore run with MXCSR's flush-to-zero and denormals-are-zero bits set (what CUDA's -ftz does),
# and restore the register before they return. Elsewhere (e.g. ARM, where subnormals run at full
# speed) these are no-ops. Forward kernels never set them: a subnormal membrane above a threshold
# of 0 still spikes.
_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
_FTZ_DAZ = 0x8040


def _mxcsr(builder, name: str, ptr) -> None:
    fnty = ir.FunctionType(ir.VoidType(), [ir.PointerType(ir.IntType(8))])
    builder.call(cgutils.get_or_insert_function(builder.module, fnty, name),
                 [builder.bitcast(ptr, ir.PointerType(ir.IntType(8)))])


@intrinsic
def flush_subnormals(typingctx):
    """Set flush-to-zero and denormals-are-zero for this thread; returns the state to restore."""
    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        if not _X86:
            return ir.Constant(i32, 0)
        ptr = cgutils.alloca_once(builder, i32)
        _mxcsr(builder, "llvm.x86.sse.stmxcsr", ptr)
        old = builder.load(ptr)
        builder.store(builder.or_(old, ir.Constant(i32, _FTZ_DAZ)), ptr)
        _mxcsr(builder, "llvm.x86.sse.ldmxcsr", ptr)
        return old
    return types.uint32(), codegen


@intrinsic
def restore_subnormals(typingctx, state):
    """Undo :func:`flush_subnormals` with the state it returned."""
    def codegen(context, builder, signature, args):
        if _X86:
            ptr = cgutils.alloca_once(builder, ir.IntType(32))
            builder.store(args[0], ptr)
            _mxcsr(builder, "llvm.x86.sse.ldmxcsr", ptr)
        return context.get_dummy_value()
    return types.void(types.uint32), codegen


@intrinsic
def fma(typingctx, a, b, c):
    """``a * b + c`` rounded once (``llvm.fma``: one vfmadd where the CPU has FMA), for float32 or float64
    alike. Numba compiles without fast-math, so it never fuses a multiply and an add by itself."""
    if not (a == b == c and a in (types.float32, types.float64)):
        return None

    def codegen(context, builder, signature, args):
        ty = context.get_value_type(signature.args[0])
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ty, [ty, ty, ty]),
                                            f"llvm.fma.{'f32' if signature.args[0] == types.float32 else 'f64'}")
        return builder.call(fn, args)
    return a(a, b, c), codegen


@intrinsic
def float32_bits(typingctx, bits):
    """The float32 whose IEEE bits are the low 32 bits of the integer ``bits`` (a bitcast, no conversion)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        low = context.cast(builder, args[0], signature.args[0], types.int32)
        return builder.bitcast(low, ir.FloatType())
    return types.float32(bits), codegen

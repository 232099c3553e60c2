"""torch's float32 sine on the CPU, for numba kernels that must give torch's values bit for bit.

torch built with Intel MKL (its x86-64 Linux and Windows wheels) computes ``torch.sin`` of a float32
CPU tensor with MKL's vector math: ATen's ``vml::vsin`` (``aten/src/ATen/cpu/vml.h``) calls
``vmsSin`` in high-accuracy mode, for every CPU capability, on chunks whose bounds depend on the
thread count; a value's result does not depend on its neighbours (tested). No other sine gives those
values: the C library's ``sinf`` and the correctly rounded sine each differ from torch's on ~5% of
the float32 arguments in [-30, 30], and MKL's code is not published, so it cannot be reimplemented. So a kernel that needs torch's values calls the same function:
:func:`vsin`, a numba intrinsic, calls ``vmsSin_64`` (the 64-bit-length entry point) of the MKL
inside torch's own library with ATen's mode flags.

:func:`available` says whether this torch has that function and that it gives ``torch.sin``'s values
(compared once per process on a probe of arguments); where it does not (torch without MKL: ARM,
macOS), callers compute the sine with torch.

MKL takes about 1 ns a value. A kernel that only compares a function of the sine with a threshold
rarely needs the sine's exact value: it can decide from an estimate and a bound on its error, and call
:func:`vsin` where the threshold falls within the bound (the stimulus kernel,
``fastsnn.experiment.stimulus_cpu``). Such a bound counts MKL's error against the true sine: below 1
ulp (MKL's documentation), at most 2^-24 in absolute value for every float32 of [-2^24, 2^24] on the
AMD EPYC (``python -m bench.stimulus --check-sine``, exhaustive).
"""

from __future__ import annotations

import ctypes
import functools
import os

import numpy as np
import torch
from llvmlite import binding, ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

# ATen's flags for every VML call (vml.h): VML_HA | VML_FTZDAZ_OFF | VML_ERRMODE_IGNORE (mkl_vml_defines.h)
MODE = 0x00000002 | 0x00140000 | 0x00000100
SIN, LOCAL_THREADS = "vmsSin_64", "MKL_Set_Num_Threads_Local"


def _torch_library() -> ctypes.CDLL | None:
    """torch's CPU library, the copy this process already loaded (a second dlopen returns it)."""
    folder = os.path.join(os.path.dirname(torch.__file__), "lib")
    for name in ("libtorch_cpu.so", "torch_cpu.dll"):
        if os.path.exists(os.path.join(folder, name)):
            return ctypes.CDLL(os.path.join(folder, name))
    return None


def _register() -> ctypes._CFuncPtr | None:
    """Make MKL's functions known to numba's linker (``llvmlite.binding.add_symbol``, before any kernel
    that calls them compiles or loads from the disk cache); returns ``vmsSin_64`` for ctypes, or None."""
    if not torch.backends.mkl.is_available():
        return None
    library = _torch_library()
    try:
        functions = {name: getattr(library, name) for name in (SIN, LOCAL_THREADS)}
    except AttributeError:  # no such symbol exported (or no library)
        return None
    for name, function in functions.items():
        binding.add_symbol(name, ctypes.cast(function, ctypes.c_void_p).value)
    sin = functions[SIN]
    sin.restype, sin.argtypes = None, [ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    return sin


_SIN = _register()


def probe() -> np.ndarray:
    """float32 arguments :func:`available` compares: a grid over [-300, 300] (past MKL's short range
    reduction), every float32 in a few ulps around multiples of pi/2 up to 64 (where the reduction
    cancels most), zeros, tiny and huge values."""
    grid = np.linspace(-300, 300, 60001, dtype=np.float32)
    turns = (np.arange(-40, 41) * (np.pi / 2)).astype(np.float32)
    near = (turns.view(np.int32)[:, None] + np.arange(-8, 9, dtype=np.int32)).view(np.float32).ravel()
    special = np.array([0.0, -0.0, 1e-30, -1e-30, 1e-7, 3e5, -3e5, 1e30, np.inf, -np.inf, np.nan], np.float32)
    return np.concatenate([grid, near, special])


@functools.cache
def available() -> bool:
    """Whether :func:`vsin` can run here and gives ``torch.sin``'s bits on :func:`probe` (once per process)."""
    if _SIN is None:
        return False
    x = probe()
    out = np.empty_like(x)
    _SIN(x.size, x.ctypes.data, out.ctypes.data, MODE)
    return bool(np.array_equal(out.view(np.int32), torch.sin(torch.from_numpy(x)).numpy().view(np.int32)))


@intrinsic
def vsin(typingctx, x, out, start, n):
    """``out[start:start + n] = torch.sin(x[start:start + n])`` for 1-D C-contiguous float32 arrays (in place
    when ``out`` is ``x``): one call of MKL's ``vmsSin_64``. Only where :func:`available`."""
    arrays = (x, out)
    if not all(isinstance(a, types.Array) and a.dtype == types.float32 and a.ndim == 1 and a.layout == "C"
               for a in arrays) or not all(isinstance(i, types.Integer) for i in (start, n)):
        return None

    def codegen(context, builder, signature, args):
        i64, fptr = ir.IntType(64), ir.FloatType().as_pointer()
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i64, fptr, fptr, i64]),
                                            SIN)
        first = context.cast(builder, args[2], signature.args[2], types.int64)
        src, dst = (builder.gep(context.make_array(t)(context, builder, a).data, [first])
                    for t, a in zip(signature.args[:2], args[:2]))
        count = context.cast(builder, args[3], signature.args[3], types.int64)
        builder.call(fn, [count, src, dst, ir.Constant(i64, MODE)])
        return context.get_dummy_value()
    return types.void(x, out, start, n), codegen


@intrinsic
def mkl_local_threads(typingctx, n):
    """Set MKL's thread count for the calling thread (``MKL_Set_Num_Threads_Local``; 0: MKL's global
    setting); returns the previous one. A kernel's lanes set 1, so that MKL never starts threads of its
    own inside a numba thread."""
    if not isinstance(n, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i32, [i32]), LOCAL_THREADS)
        return builder.call(fn, [context.cast(builder, args[0], signature.args[0], types.int32)])
    return types.int32(n), codegen

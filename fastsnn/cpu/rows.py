"""Lane buffers and the row copies between them and (B, T, N) tensors, for the numba kernels.

A kernel lane stages each time step's rows in local buffers padded to :data:`PAD` values
(:func:`padded`), where its neuron loops compile to SIMD without a scalar remainder.
:func:`gather` and :func:`scatter` move rows in and out: for float and uint8 rows of
C-contiguous tensors as masked vector loads and stores on the tensor's side, whole
registers on the buffer's. A slice copy instead moved a 30-value row as three 8-value and
six single-value copies, whose stores a 16-value load of the buffer cannot take from the
store buffer: at (1024, 100, 30), 1 thread, AMD EPYC, the same-step LIF backward took 5.3 ms
with slice copies and 3.9-4.3 ms with these (the seed's 7.8 and 6.3 ms; forward with saved
state 2.8 and 2.2-2.3 ms).
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from . import vectors

# Lane state lives in local buffers padded to a multiple of 16 (one AVX-512 register of float32):
# the neuron loops then have no scalar remainder, and LLVM vectorises loops over local buffers
# that it would not over views into the caller's tensors. Measured on LIF forward, (64, 100, 128):
# 2.3 ms working on the views, 0.28 ms staged.
PAD = 16


@numba.njit(inline="always")
def padded(m: int) -> int:
    """Length of a lane buffer holding m values."""
    return -(-m // PAD) * PAD


@numba.njit(inline="always")
def staged(src, size: int):
    """A zeroed local buffer of ``size`` holding a copy of the 1-D ``src`` at its start."""
    buf = np.zeros(size, src.dtype)
    buf[: src.shape[0]] = src
    return buf


@numba.njit(inline="always")
def replicated(src, pad: int, group: int):
    """A zeroed local buffer of ``pad * group`` holding the 1-D ``src`` at the start of each of its rows."""
    buf = np.zeros(pad * group, src.dtype)
    for r in range(group):
        buf[r * pad: r * pad + src.shape[0]] = src
    return buf


def gather(dst, src, b0, rows, t, n0, n1, pad):
    """``dst[r pad : r pad + m] = src[b0 + r, t, n0:n1]``, m = n1 - n0, for each of the lane's rows r
    (src (B, T, N)). Vector copies (module docstring) also write zeros to ``dst`` past m up to the
    next multiple of 16 values (8 in float64), inside the row's padding: ``pad`` is :func:`padded` (m)."""
    for r in range(rows):
        dst[r * pad: r * pad + n1 - n0] = src[b0 + r, t, n0:n1]


def scatter(dst, src, b0, rows, t, n0, n1, pad):
    """``dst[b0 + r, t, n0:n1] = src[r pad : r pad + m]`` for each of the lane's rows r (dst (B, T, N))."""
    for r in range(rows):
        dst[b0 + r, t, n0:n1] = src[r * pad: r * pad + n1 - n0]


@numba.njit(inline="always")
def scatter2(dst, src, b0: int, rows: int, n0: int, n1: int, pad: int):
    """``dst[b0 + r, n0:n1] = src[r pad : r pad + m]`` (dst (B, N))."""
    for r in range(rows):
        dst[b0 + r, n0:n1] = src[r * pad: r * pad + n1 - n0]


def _vector_rows(local, tensor) -> bool:
    """Whether :func:`_copy_rows` serves this buffer and tensor (else the slice copy)."""
    return (isinstance(local, types.Array) and isinstance(tensor, types.Array) and local.ndim == 1
            and local.layout == "C" and tensor.ndim == 3 and tensor.layout == "C" and local.dtype == tensor.dtype
            and local.dtype in (types.float32, types.float64, types.uint8))


@overload(gather, inline="always")
def _gather(dst, src, b0, rows, t, n0, n1, pad):
    if _vector_rows(dst, src):
        return lambda dst, src, b0, rows, t, n0, n1, pad: _copy_rows(dst, src, b0, rows, t, n0, n1, pad, True)
    return gather


@overload(scatter, inline="always")
def _scatter(dst, src, b0, rows, t, n0, n1, pad):
    if _vector_rows(src, dst):
        return lambda dst, src, b0, rows, t, n0, n1, pad: _copy_rows(src, dst, b0, rows, t, n0, n1, pad, False)
    return scatter


@intrinsic
def _copy_rows(typingctx, local, tensor, b0, rows, t, n0, n1, pad, to_local):
    """``local[r pad + j]`` <-> ``tensor[b0 + r, t, n0 + j]`` for j < n1 - n0, r < rows (to the buffer if
    ``to_local``, a compile-time constant), 16 values at a time (8 in float64): a masked load or store
    on the tensor's side, a whole one on the buffer's (which gets zeros past n1 - n0)."""
    if not isinstance(to_local, types.BooleanLiteral):
        return None
    inward = to_local.literal_value

    def codegen(context, builder, signature, args):
        loc = context.make_array(signature.args[0])(context, builder, args[0])
        ten = context.make_array(signature.args[1])(context, builder, args[1])
        b0_, rows_, t_, n0_, n1_, pad_ = (context.cast(builder, args[k], signature.args[k], types.intp)
                                          for k in range(2, 8))
        elem = context.get_data_type(signature.args[0].dtype)
        size = context.get_abi_sizeof(elem)
        lanes = min(64 // size, PAD)  # uint8: 16 lanes, so that a whole store stays inside the row's padding
        i32 = ir.IntType(32)
        vty, ity = ir.VectorType(elem, lanes), ir.VectorType(i32, lanes)
        align = ir.Constant(i32, size)
        iota = ir.Constant(ity, list(range(lanes)))
        m = builder.sub(n1_, n0_)
        shape, strides = cgutils.unpack_tuple(builder, ten.shape), cgutils.unpack_tuple(builder, ten.strides)
        with cgutils.for_range(builder, rows_) as row_loop:
            r = row_loop.index
            row = cgutils.get_item_pointer2(context, builder, data=ten.data, shape=shape, strides=strides, layout="C",
                                            inds=[builder.add(b0_, r), t_, n0_], wraparound=False, boundscheck=False)
            base = builder.gep(loc.data, [builder.mul(r, pad_)])
            with cgutils.for_range_slice(builder, ir.Constant(m.type, 0), m, ir.Constant(m.type, lanes)) as (c, _):
                left = vectors.splat(builder, builder.trunc(builder.sub(m, c), i32), lanes)
                mask = builder.icmp_signed("<", iota, left)  # lanes before the row's end
                far = builder.bitcast(builder.gep(row, [c]), vty.as_pointer())
                near = builder.bitcast(builder.gep(base, [c]), vty.as_pointer())
                if inward:
                    value = vectors.masked(builder, "load", vty, [far, align, mask, ir.Constant(vty, None)])
                    builder.store(value, near, align=size)
                else:
                    vectors.masked(builder, "store", vty, [builder.load(near, align=size), far, align, mask])
        return context.get_dummy_value()

    return types.void(local, tensor, b0, rows, t, n0, n1, pad, to_local), codegen

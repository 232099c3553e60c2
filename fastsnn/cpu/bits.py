"""Bit counting for the CPU kernels (numba ``@intrinsic``): numba has no vector popcount."""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_I8, _I64 = ir.IntType(8), ir.IntType(64)


@intrinsic
def popcount(typingctx, data):
    """Number of set bits in a 1-D contiguous uint8 array: 64 bytes per vector popcount."""
    if not (isinstance(data, types.Array) and data.dtype == types.uint8 and data.ndim == 1):
        return None

    def codegen(context, builder, signature, args):
        arr = context.make_array(signature.args[0])(context, builder, args[0])
        vty = ir.VectorType(_I8, 64)
        wide = ir.VectorType(_I64, 64)
        ctpop_v = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty]), "llvm.ctpop.v64i8")
        ctpop_8 = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I8, [_I8]), "llvm.ctpop.i8")
        reduce = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I64, [wide]),
                                                "llvm.vector.reduce.add.v64i64")
        n = builder.extract_value(arr.shape, 0)
        full = builder.mul(builder.sdiv(n, ir.Constant(_I64, 64)), ir.Constant(_I64, 64))
        total = cgutils.alloca_once_value(builder, ir.Constant(_I64, 0))
        with cgutils.for_range_slice(builder, ir.Constant(_I64, 0), full, ir.Constant(_I64, 64), intp=_I64) as (e, _):
            v = builder.load(builder.bitcast(builder.gep(arr.data, [e]), vty.as_pointer()), align=1)
            count = builder.call(reduce, [builder.zext(builder.call(ctpop_v, [v]), wide)])
            builder.store(builder.add(builder.load(total), count), total)
        with cgutils.for_range_slice(builder, full, n, ir.Constant(_I64, 1), intp=_I64) as (e, _):
            count = builder.zext(builder.call(ctpop_8, [builder.load(builder.gep(arr.data, [e]))]), _I64)
            builder.store(builder.add(builder.load(total), count), total)
        return builder.load(total)

    return types.int64(data), codegen

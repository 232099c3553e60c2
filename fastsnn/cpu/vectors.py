"""LLVM IR pieces shared by the numba intrinsics (``rows.py`` and ``bits.py`` here, ``fastsnn/ops/spikes/simd.py``)."""

from __future__ import annotations

from llvmlite import ir
from numba.core import cgutils

_I1, _I32 = ir.IntType(1), ir.IntType(32)


def splat(builder, value, n: int):
    """An n-lane vector of ``value`` in every lane."""
    vec = builder.insert_element(ir.Constant(ir.VectorType(value.type, n), ir.Undefined), value, ir.Constant(_I32, 0))
    zeros = ir.Constant(ir.VectorType(_I32, n), [0] * n)
    return builder.shuffle_vector(vec, ir.Constant(vec.type, ir.Undefined), zeros)


def masked(builder, name: str, vty, args):
    """Call ``llvm.masked.load`` (``name`` "load": args pointer, alignment, mask, pass-through) or
    ``llvm.masked.store`` ("store": args value, pointer, alignment, mask) on vectors of type ``vty``
    (float32, float64 or integer elements)."""
    mty = ir.VectorType(_I1, vty.count)
    if name == "load":
        fnty = ir.FunctionType(vty, [vty.as_pointer(), _I32, mty, vty])
    else:
        fnty = ir.FunctionType(ir.VoidType(), [vty, vty.as_pointer(), _I32, mty])
    element = vty.element
    suffix = ("f32" if element == ir.FloatType() else "f64" if element == ir.DoubleType() else f"i{element.width}")
    fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.masked.{name}.v{vty.count}{suffix}.p0")
    return builder.call(fn, args)

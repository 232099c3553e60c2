"""The CPU stimulus kernel's vector code: one group of 8 rows' spikes, 16 fibres a vector (numba ``@intrinsic``).

Written as numba loops, a row's spikes cost ~25 ns of set-up besides ~32 ns of vector work (a seed row,
200 fibres, AMD EPYC): per row LLVM checked that the five table rows it reads do not overlap the three
rows it writes, spilled the row pointers and ran remainder loops. Here the group's 8 rows run inside
each vector of fibres, their bits staying in registers until one store per vector.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from fastsnn.cpu import vectors

LANE = 16  # fibres per vector: float32 and int32 lanes of one AVX-512 register
# tables[t] (TABLE_ROWS, P) uint32: the left ear's cells, the right ear's cells (both ``mixed``), the left ear's
# thresholds (int32), the sine and the cosine of the right ear's ``phase_t + delay_i`` (float32 bits)
TABLE_ROWS = 5
_MIX1, _MIX2 = 0x85EBCA6B, 0xC2B2AE35
_I1, _I8, _I32, _I64 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)
_F32 = ir.FloatType()


@intrinsic
def group_bits(typingctx, tables, steps, keys, turns, rows, weight, power, out):
    """One group's spikes: for each of its ``rows`` (<= 8) rows j, at step ``steps[j]`` with the sample's key
    ``keys[j]`` (``mixed``) and ``turns[:, j]`` (cos ipd, sin ipd, the step's band), bit j of ``out[i]`` (the
    left ear, i < A) and ``out[A + i]`` (the right ear) for ``out`` (2 A,) uint8, written whole.

    tables (T, TABLE_ROWS, P) uint32, P a multiple of LANE; steps (8,) int64; keys (8,) uint32; turns (3, 8)
    float32; weight float32 (``scale 2^(24 - power)``); power 1, 2 or 3, a constant. The left ear fires where
    ``u24 < threshold``; the right ear where ``u24 < lo``, with ``lo, hi = weight y**power -+ band`` and ``y =
    sin_ti cos_s + (cos_ti sin_s + 1)`` (fused multiply-adds, as the kernel's margin assumes). Returns the rows
    (bit j) where the right ear's noise fell in ``[lo, hi)`` for some fibre: their right ear is undecided."""
    if not isinstance(power, types.IntegerLiteral) or power.literal_value not in (1, 2, 3):
        return None
    arrays = {0: (types.uint32, 3), 1: (types.int64, 1), 2: (types.uint32, 1), 3: (types.float32, 2),
              7: (types.uint8, 1)}
    for k, (dtype, ndim) in arrays.items():
        a = (tables, steps, keys, turns, rows, weight, power, out)[k]
        if not (isinstance(a, types.Array) and a.dtype == dtype and a.ndim == ndim and a.layout == "C"):
            return None
    exponent = power.literal_value

    def codegen(context, builder, signature, args):
        tab, stp, key_a, trn, _, _, _, dst = (context.make_array(t)(context, builder, a) if k in arrays else None
                                              for k, (t, a) in enumerate(zip(signature.args, args)))
        rows_ = context.cast(builder, args[4], signature.args[4], types.int64)
        weight_ = args[5]
        vi, vf, vb = ir.VectorType(_I32, LANE), ir.VectorType(_F32, LANE), ir.VectorType(_I8, LANE)
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vf, [vf, vf, vf]), "llvm.fma.v16f32")
        reduce_or = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I8, [vb]),
                                                   "llvm.vector.reduce.or.v16i8")
        P = builder.extract_value(tab.shape, 2)
        A = builder.sdiv(builder.extract_value(dst.shape, 0), ir.Constant(_I64, 2))
        per_step = builder.mul(P, ir.Constant(_I64, TABLE_ROWS))
        width = builder.extract_value(trn.strides, 0)  # bytes between turns' rows
        zero_b, ones = ir.Constant(vb, [0] * LANE), ir.Constant(vf, [1.0] * LANE)
        mix1, mix2 = ir.Constant(vi, [_MIX1] * LANE), ir.Constant(vi, [_MIX2] * LANE)
        shift13, shift8 = ir.Constant(vi, [13] * LANE), ir.Constant(vi, [8] * LANE)
        iota = ir.Constant(vi, list(range(LANE)))
        a_lanes = vectors.splat(builder, builder.trunc(A, _I32), LANE)
        weights = vectors.splat(builder, weight_, LANE)
        undecided = cgutils.alloca_once_value(builder, ir.Constant(_I8, 0))
        accs = [cgutils.alloca_once(builder, vb) for _ in range(3)]  # left, right, undecided bits

        def noise(key, cells):
            x = builder.mul(builder.xor(key, cells), mix1)
            x = builder.mul(builder.xor(x, builder.lshr(x, shift13)), mix2)
            return builder.lshr(x, shift8)

        def turn(j, k):
            byte = builder.add(builder.mul(width, ir.Constant(_I64, k)), builder.mul(j, ir.Constant(_I64, 4)))
            ptr = builder.gep(builder.bitcast(trn.data, _I8.as_pointer()), [byte])
            return vectors.splat(builder, builder.load(builder.bitcast(ptr, _F32.as_pointer())), LANE)

        with cgutils.for_range(builder, builder.sdiv(P, ir.Constant(_I64, LANE))) as vectors_loop:
            col = builder.mul(vectors_loop.index, ir.Constant(_I64, LANE))
            for acc in accs:
                builder.store(zero_b, acc)
            with cgutils.for_range(builder, rows_) as rows_loop:
                j = rows_loop.index
                t = builder.load(builder.gep(stp.data, [j]))
                base = builder.gep(tab.data, [builder.add(builder.mul(t, per_step), col)])
                part = [builder.load(builder.bitcast(builder.gep(base, [builder.mul(P, ir.Constant(_I64, k))]),
                                                     vi.as_pointer()), align=4) for k in range(TABLE_ROWS)]
                key = vectors.splat(builder, builder.load(builder.gep(key_a.data, [j])), LANE)
                bit = vectors.splat(builder, builder.shl(ir.Constant(_I8, 1), builder.trunc(j, _I8)), LANE)
                fire_left = builder.icmp_signed("<", noise(key, part[0]), part[2])
                u = builder.sitofp(noise(key, part[1]), vf)
                sines, cosines = builder.bitcast(part[3], vf), builder.bitcast(part[4], vf)
                y = builder.call(fma, [sines, turn(j, 0), builder.call(fma, [cosines, turn(j, 1), ones])])
                wy = weights
                for _ in range(exponent - 1):
                    wy = builder.fmul(wy, y)
                band = turn(j, 2)
                d = builder.call(fma, [builder.fneg(wy), y, u])  # u - weight y**power, rounded once
                fire_right = builder.fcmp_ordered("<", d, builder.fneg(band))
                unsure = builder.and_(builder.fcmp_ordered("<=", d, band), builder.not_(fire_right))
                for acc, fire in zip(accs, (fire_left, fire_right, unsure)):  # the bits differ: + is |
                    value = builder.load(acc)
                    builder.store(builder.select(fire, builder.add(value, bit), value), acc)
            inside = builder.icmp_signed("<", builder.add(vectors.splat(builder, builder.trunc(col, _I32), LANE),
                                                          iota), a_lanes)
            for acc, start in zip(accs[:2], (col, builder.add(A, col))):
                ptr = builder.bitcast(builder.gep(dst.data, [start]), vb.as_pointer())
                vectors.masked(builder, "store", vb, [builder.load(acc), ptr, ir.Constant(_I32, 1), inside])
            builder.store(builder.or_(builder.load(undecided), builder.call(reduce_or, [builder.load(accs[2])])),
                          undecided)
        return builder.zext(builder.load(undecided), _I64)

    return types.int64(tables, steps, keys, turns, rows, weight, power, out), codegen

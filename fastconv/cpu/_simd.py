"""Vector code that LLVM's auto-vectoriser does not write from plain loops, as Numba intrinsics.

``transpose16`` moves a 16 x 16 block of float32 between a planar layout (16 rows, e.g. 16
channel planes) and an interleaved one (16 lanes per pixel). Written as loops, that copy is
scalar, one element per load and per store (LLVM neither gathers nor shuffles it): about 0.8 ns an
element here. In registers it is sixteen 16-lane loads, four stages of sixteen shuffles and
sixteen stores, about 0.2 ns an element (measured on a 16 x 4096 block, Intel Xeon, AVX-512).

The transpose is the textbook recursive one: at stage b = 1, 2, 4, 8, rows i and i + b (bit b
of i clear) exchange their off-diagonal b x b blocks, a shuffle of the two rows with a constant
mask; after the four stages row c holds what was column c.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

LANES = 16  # float32 elements per transposed row


def _masks(b):
    """Shuffle masks (of the 32 elements of rows i, j = i + b) for the new rows i and j."""
    low = [LANES + c - b if c & b else c for c in range(LANES)]
    high = [LANES + c if c & b else c + b for c in range(LANES)]
    return low, high


@intrinsic
def transpose16(typingctx, dst, d0, dstride, src, s0, sstride):
    """``dst[d0 + c*dstride + r] = src[s0 + r*sstride + c]`` for r, c < 16: a 16 x 16 block of
    float32, each of its rows 16 consecutive elements of ``src`` and each of the result's 16
    consecutive elements of ``dst``. 1-D C-contiguous float32 arrays; the caller keeps every
    index in bounds (nothing is checked)."""
    arrays = (dst, src)
    if not all(isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C"
               and a.dtype == types.float32 for a in arrays):
        return None
    if not all(isinstance(i, types.Integer) for i in (d0, dstride, s0, sstride)):
        return None

    def codegen(context, builder, sig, args):
        d, d_at, d_step, s, s_at, s_step = args
        i64 = ir.IntType(64)
        vector = ir.VectorType(ir.FloatType(), LANES)

        def wide(value, kind):
            if value.type.width == 64:
                return value
            return builder.sext(value, i64) if kind.signed else builder.zext(value, i64)

        d_at, d_step = wide(d_at, sig.args[1]), wide(d_step, sig.args[2])
        s_at, s_step = wide(s_at, sig.args[4]), wide(s_step, sig.args[5])
        d_data = context.make_array(sig.args[0])(context, builder, d).data
        s_data = context.make_array(sig.args[3])(context, builder, s).data

        def at(data, start, step, k):
            where = builder.gep(data, [builder.add(start, builder.mul(step, ir.Constant(i64, k)))])
            return builder.bitcast(where, vector.as_pointer())

        rows = [builder.load(at(s_data, s_at, s_step, r), align=4) for r in range(LANES)]
        for b in (1, 2, 4, 8):
            low, high = (ir.Constant(ir.VectorType(ir.IntType(32), LANES), m) for m in _masks(b))
            for i in range(LANES):
                if not i & b:
                    j = i | b
                    rows[i], rows[j] = (builder.shuffle_vector(rows[i], rows[j], low),
                                        builder.shuffle_vector(rows[i], rows[j], high))
        for c in range(LANES):
            builder.store(rows[c], at(d_data, d_at, d_step, c), align=4)
        return context.get_dummy_value()

    return types.void(dst, d0, dstride, src, s0, sstride), codegen

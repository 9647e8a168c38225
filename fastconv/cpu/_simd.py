"""Vector code that LLVM's auto-vectoriser does not write from plain loops, as Numba intrinsics.

``transpose16`` moves a 16 x 16 block of float32 between a planar layout (16 rows, e.g. 16
channel planes) and an interleaved one (16 lanes per pixel). Written as loops, that copy is
scalar, one element per load and per store (LLVM neither gathers nor shuffles it): about 0.8 ns an
element here. In registers it is sixteen 16-lane loads, four stages of sixteen shuffles and
sixteen stores, about 0.2 ns an element (measured on a 16 x 4096 block, Intel Xeon, AVX-512).

The transpose is the textbook recursive one: at stage b = 1, 2, 4, 8, rows i and i + b (bit b
of i clear) exchange their off-diagonal b x b blocks, a shuffle of the two rows with a constant
mask; after the four stages row c holds what was column c.

The ``lane_*`` intrinsics are the inner loops of the depthwise kernels on 16-lane pixels, as
LLVM IR: one fused multiply-add per tap and pixel on whole 16-lane vectors. Numba's loops over
16 lanes were left scalar (LLVM could not prove the arrays apart), and the row-long loops that
did vectorise reloaded a weight for every product.
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


# --- 16-lane rows of a depthwise convolution (fastconv.cpu.depthwise's blocked kernels) ------
# A pixel is 16 lanes (16 channels); a row is `count` pixels, pixel j of the source row starting
# `step` elements after pixel j - 1 (16 times the convolution's stride); tap t of the filter
# reads at offset at[t] from the row's start and has weight vector w[16t : 16t + 16]. Taps run
# in order, one fused multiply-add each. Every index is the caller's to keep in bounds.

_I64 = ir.IntType(64)


def _vector_type():
    return ir.VectorType(ir.FloatType(), LANES)


def _fma(builder):
    vector, name = _vector_type(), "llvm.fma.v16f32"
    return builder.module.globals.get(name) or ir.Function(
        builder.module, ir.FunctionType(vector, [vector, vector, vector]), name=name)


def _vector_at(builder, data, index):
    return builder.bitcast(builder.gep(data, [index]), _vector_type().as_pointer())


def _load(builder, data, index):
    return builder.load(_vector_at(builder, data, index), align=4)


def _store(builder, value, data, index):
    builder.store(value, _vector_at(builder, data, index), align=4)


class _Loop:
    """``for i in range(count)`` in IR, skipped when count <= 0, with loop-carried values:
    ``carried`` maps names to their values on entry; inside the body ``self.values`` holds
    their phis, ``end(**updates)`` closes the body, and after it ``self.results`` holds each
    value on exit (the entry value if the loop did not run)."""

    def __init__(self, builder, count, name, **carried):
        self.builder, self.count = builder, count
        self.entry = builder.block
        self.body = builder.function.append_basic_block(name)
        self.after = builder.function.append_basic_block(name + ".done")
        builder.cbranch(builder.icmp_signed(">", count, ir.Constant(_I64, 0)), self.body,
                        self.after)
        builder.position_at_end(self.body)
        self.index = builder.phi(_I64)
        self.index.add_incoming(ir.Constant(_I64, 0), self.entry)
        self.start = carried
        self.values = {}
        for key, value in carried.items():
            self.values[key] = builder.phi(value.type)
            self.values[key].add_incoming(value, self.entry)

    def end(self, **updates):
        builder = self.builder
        last = builder.block
        following = builder.add(self.index, ir.Constant(_I64, 1))
        self.index.add_incoming(following, last)
        for key, value in updates.items():
            self.values[key].add_incoming(value, last)
        builder.cbranch(builder.icmp_signed("<", following, self.count), self.body, self.after)
        builder.position_at_end(self.after)
        self.results = {}
        for key, value in updates.items():
            self.results[key] = builder.phi(value.type)
            self.results[key].add_incoming(self.start[key], self.entry)
            self.results[key].add_incoming(value, last)


def _arrays_ok(floats, ints):
    return (all(isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C"
                and a.dtype == types.float32 for a in floats)
            and all(isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C"
                    and a.dtype == types.int64 for a in ints))


def _unpack(context, builder, sig, args):
    """The arguments as the code generators use them: each array as (data pointer, length),
    each integer as itself (an i64, by the intrinsics' signatures)."""
    out = []
    for kind, value in zip(sig.args, args):
        if isinstance(kind, types.Array):
            array = context.make_array(kind)(context, builder, value)
            out.append((array.data, builder.extract_value(array.shape, 0)))
        else:
            out.append(value)
    return out


_I = types.int64


@intrinsic
def lane_taps(typingctx, out, o0, count, src, s0, step, at, w, bias):
    """The forward of one row: for each pixel j < count, out[o0 + 16j : +16] =
    bias[0:16] + sum over the taps t of w[16t:] * src[s0 + at[t] + j*step:] (16 lanes each)."""
    if not _arrays_ok((out, src, w, bias), (at,)):
        return None

    def codegen(context, builder, sig, args):
        (out_, _), o0_, count_, (src_, _), s0_, step_, (at_, taps), (w_, _), (bias_, _) = \
            _unpack(context, builder, sig, args)
        fma = _fma(builder)
        pixels = _Loop(builder, count_, "pixel")
        row = builder.add(s0_, builder.mul(pixels.index, step_))
        tap = _Loop(builder, taps, "tap", acc=_load(builder, bias_, ir.Constant(_I64, 0)))
        t = tap.index
        x = _load(builder, src_, builder.add(row, builder.load(builder.gep(at_, [t]))))
        wt = _load(builder, w_, builder.mul(t, ir.Constant(_I64, LANES)))
        tap.end(acc=builder.call(fma, [wt, x, tap.values["acc"]]))
        _store(builder, tap.results["acc"], out_,
               builder.add(o0_, builder.mul(pixels.index, ir.Constant(_I64, LANES))))
        pixels.end()
        return context.get_dummy_value()

    return types.void(out, _I, _I, src, _I, _I, at, w, bias), codegen


@intrinsic
def lane_taps9(typingctx, out, o0, count, src, s0, step, at, w, bias):
    """lane_taps for exactly nine taps (a 3x3 filter; at.size must be 9): the offsets and the
    weight and bias vectors are loaded once, before the pixels, and the taps are unrolled, so a
    pixel is nine loads and nine fused multiply-adds (lane_taps' loop over the taps cost about
    three times that on 56x56 planes)."""
    if not _arrays_ok((out, src, w, bias), (at,)):
        return None

    def codegen(context, builder, sig, args):
        (out_, _), o0_, count_, (src_, _), s0_, step_, (at_, _), (w_, _), (bias_, _) = \
            _unpack(context, builder, sig, args)
        fma = _fma(builder)
        offsets = [builder.load(builder.gep(at_, [ir.Constant(_I64, t)])) for t in range(9)]
        weights = [_load(builder, w_, ir.Constant(_I64, t * LANES)) for t in range(9)]
        first = _load(builder, bias_, ir.Constant(_I64, 0))
        pixels = _Loop(builder, count_, "pixel")
        row = builder.add(s0_, builder.mul(pixels.index, step_))
        acc = first
        for t in range(9):
            x = _load(builder, src_, builder.add(row, offsets[t]))
            acc = builder.call(fma, [weights[t], x, acc])
        _store(builder, acc, out_,
               builder.add(o0_, builder.mul(pixels.index, ir.Constant(_I64, LANES))))
        pixels.end()
        return context.get_dummy_value()

    return types.void(out, _I, _I, src, _I, _I, at, w, bias), codegen


@intrinsic
def lane_scatter(typingctx, dst, d0, count, step, at, w, g, g0):
    """The adjoint of lane_taps for one row: for each pixel j < count and each tap t in order,
    dst[d0 + at[t] + j*step : +16] += w[16t:] * g[g0 + 16j : +16]."""
    if not _arrays_ok((dst, w, g), (at,)):
        return None

    def codegen(context, builder, sig, args):
        (dst_, _), d0_, count_, step_, (at_, taps), (w_, _), (g_, _), g0_ = \
            _unpack(context, builder, sig, args)
        fma = _fma(builder)
        pixels = _Loop(builder, count_, "pixel")
        gv = _load(builder, g_, builder.add(g0_, builder.mul(pixels.index,
                                                               ir.Constant(_I64, LANES))))
        row = builder.add(d0_, builder.mul(pixels.index, step_))
        tap = _Loop(builder, taps, "tap")
        t = tap.index
        where = builder.add(row, builder.load(builder.gep(at_, [t])))
        wt = _load(builder, w_, builder.mul(t, ir.Constant(_I64, LANES)))
        _store(builder, builder.call(fma, [wt, gv, _load(builder, dst_, where)]), dst_, where)
        tap.end()
        pixels.end()
        return context.get_dummy_value()

    return types.void(dst, _I, _I, _I, at, w, g, _I), codegen


@intrinsic
def lane_dots(typingctx, acc, count, src, s0, step, at, g, g0):
    """The weight gradient of one row: for each tap t, the 16 lanes of
    sum over j < count of g[g0 + 16j : +16] * src[s0 + at[t] + j*step : +16], summed in float32
    in j order, are added into acc[16t : 16t + 16] (float64)."""
    if not (_arrays_ok((src, g), (at,)) and isinstance(acc, types.Array) and acc.ndim == 1
            and acc.layout == "C" and acc.dtype == types.float64):
        return None

    def codegen(context, builder, sig, args):
        (acc_, _), count_, (src_, _), s0_, step_, (at_, taps), (g_, _), g0_ = \
            _unpack(context, builder, sig, args)
        fma = _fma(builder)
        doubles = ir.VectorType(ir.DoubleType(), LANES)
        zero = ir.Constant(_vector_type(), [0.0] * LANES)
        tap = _Loop(builder, taps, "tap")
        t = tap.index
        offset = builder.add(s0_, builder.load(builder.gep(at_, [t])))
        pixels = _Loop(builder, count_, "pixel", sum=zero)
        j = pixels.index
        gv = _load(builder, g_, builder.add(g0_, builder.mul(j, ir.Constant(_I64, LANES))))
        x = _load(builder, src_, builder.add(offset, builder.mul(j, step_)))
        pixels.end(sum=builder.call(fma, [gv, x, pixels.values["sum"]]))
        slot = builder.bitcast(builder.gep(acc_, [builder.mul(t, ir.Constant(_I64, LANES))]),
                               doubles.as_pointer())
        total = builder.fadd(builder.load(slot, align=8),
                             builder.fpext(pixels.results["sum"], doubles))
        builder.store(total, slot, align=8)
        tap.end()
        return context.get_dummy_value()

    return types.void(acc, _I, src, _I, _I, at, g, _I), codegen


@intrinsic
def lane_dots9(typingctx, acc, count, src, s0, step, at, g, g0):
    """lane_dots for exactly nine taps (at.size must be 9), with the same sums in the same order:
    the pixels run outside the taps, nine float32 sums held in registers and gy loaded once a
    pixel, instead of one pass over the pixels per tap."""
    if not (_arrays_ok((src, g), (at,)) and isinstance(acc, types.Array) and acc.ndim == 1
            and acc.layout == "C" and acc.dtype == types.float64):
        return None

    def codegen(context, builder, sig, args):
        (acc_, _), count_, (src_, _), s0_, step_, (at_, _), (g_, _), g0_ = \
            _unpack(context, builder, sig, args)
        fma = _fma(builder)
        doubles = ir.VectorType(ir.DoubleType(), LANES)
        zero = ir.Constant(_vector_type(), [0.0] * LANES)
        lanes = ir.Constant(_I64, LANES)
        offsets = [builder.add(s0_, builder.load(builder.gep(at_, [ir.Constant(_I64, t)])))
                   for t in range(9)]
        pixels = _Loop(builder, count_, "pixel", **{f"s{t}": zero for t in range(9)})
        j = pixels.index
        gv = _load(builder, g_, builder.add(g0_, builder.mul(j, lanes)))
        step_j = builder.mul(j, step_)
        sums = {}
        for t in range(9):
            x = _load(builder, src_, builder.add(offsets[t], step_j))
            sums[f"s{t}"] = builder.call(fma, [gv, x, pixels.values[f"s{t}"]])
        pixels.end(**sums)
        for t in range(9):
            slot = builder.bitcast(builder.gep(acc_, [ir.Constant(_I64, t * LANES)]),
                                   doubles.as_pointer())
            total = builder.fadd(builder.load(slot, align=8),
                                 builder.fpext(pixels.results[f"s{t}"], doubles))
            builder.store(total, slot, align=8)
        return context.get_dummy_value()

    return types.void(acc, _I, src, _I, _I, at, g, _I), codegen

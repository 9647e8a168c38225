"""Vector code that LLVM's auto-vectoriser does not write from plain loops, as Numba intrinsics.

``transpose16`` moves a 16 x 16 block of float32 between a planar layout (16 rows, e.g. 16
channel planes) and an interleaved one (16 lanes per pixel). Written as loops, that copy is
scalar, one element per load and per store (LLVM neither gathers nor shuffles it): about 0.8 ns an
element here. In registers it is sixteen 16-lane loads, four stages of sixteen shuffles and
sixteen stores, about 0.2 ns an element (measured on a 16 x 4096 block, Intel Xeon, AVX-512).

The transpose is the textbook recursive one: at stage b = 1, 2, 4, 8, rows i and i + b (bit b
of i clear) exchange their off-diagonal b x b blocks, a shuffle of the two rows with a constant
mask; after the four stages row c holds what was column c.

``register_tiles`` and ``weight_tiles`` are the inner loops of fastconv.cpu.blocked: 24
accumulators (4 vectors of output channels times 6 pixels, or 6 (input channel, tap) pairs)
held in registers through a whole reduction, each step one fused multiply-add of a weight (or
grad_y) vector with an input value broadcast to every lane.

Numba's on-disk cache keys a kernel on its own file only: after an edit here, delete the
cached kernels that use these intrinsics (``fastconv/cpu/__pycache__/*.nbi``, ``*.nbc``), or
they keep running the old code.

The ``lane_*`` intrinsics are the inner loops of the depthwise kernels on 16-lane pixels, as
LLVM IR: one fused multiply-add per tap and pixel on whole 16-lane vectors. Numba's loops over
16 lanes were left scalar (LLVM could not prove the arrays apart), and the row-long loops that
did vectorise reloaded a weight for every product.
"""
from __future__ import annotations

import platform

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from ._loops import ALIGN

LANES = 16  # float32 elements per transposed row
_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def _masks(b):
    """Shuffle masks (of the 32 elements of rows i, j = i + b) for the new rows i and j."""
    low = [LANES + c - b if c & b else c for c in range(LANES)]
    high = [LANES + c if c & b else c + b for c in range(LANES)]
    return low, high


@intrinsic
def transpose16(typingctx, dst, d0, dstride, src, s0, sstride):
    """``dst[d0 + c*dstride + r] = src[s0 + r*sstride + c]`` for r, c < 16: a 16 x 16 block of
    float32, each of its rows 16 consecutive elements of ``src`` and each of the result's 16
    consecutive elements of ``dst``. 1-D C-contiguous arrays, both float32 or both float64;
    the caller keeps every index in bounds (nothing is checked)."""
    arrays = (dst, src)
    if not (all(isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C"
                and a.dtype in (types.float32, types.float64) for a in arrays)
            and dst.dtype == src.dtype):
        return None
    if not all(isinstance(i, types.Integer) for i in (d0, dstride, s0, sstride)):
        return None

    def codegen(context, builder, sig, args):
        d, d_at, d_step, s, s_at, s_step = args
        i64 = ir.IntType(64)
        vector = ir.VectorType(context.get_value_type(sig.args[0].dtype), LANES)

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

        rows = [builder.load(at(s_data, s_at, s_step, r), align=1) for r in range(LANES)]
        for b in (1, 2, 4, 8):
            low, high = (ir.Constant(ir.VectorType(ir.IntType(32), LANES), m) for m in _masks(b))
            for i in range(LANES):
                if not i & b:
                    j = i | b
                    rows[i], rows[j] = (builder.shuffle_vector(rows[i], rows[j], low),
                                        builder.shuffle_vector(rows[i], rows[j], high))
        for c in range(LANES):
            builder.store(rows[c], at(d_data, d_at, d_step, c), align=1)
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


def _declared(builder, name, returns, params):
    """The LLVM function ``name`` (an intrinsic) of builder's module, declared on first use."""
    return builder.module.globals.get(name) or ir.Function(
        builder.module, ir.FunctionType(returns, params), name=name)


def _splat(builder, scalar, vector_type):
    """``scalar`` in every lane of a vector of ``vector_type``."""
    undef = ir.Constant(vector_type, ir.Undefined)
    one = builder.insert_element(undef, scalar, ir.Constant(ir.IntType(32), 0))
    lanes = ir.Constant(ir.VectorType(ir.IntType(32), vector_type.count), [0] * vector_type.count)
    return builder.shuffle_vector(one, undef, lanes)


def _fma(builder):
    vector = _vector_type()
    return _declared(builder, "llvm.fma.v16f32", vector, [vector] * 3)


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


# --- register tiles: 24 accumulators held in registers through a whole reduction ------------
# Shared by the four tiles below: vectors of the arrays' float type (16 float32 or 8 float64
# lanes), fused multiply-adds, loads and stores at any alignment, broadcasts of one value.


def _lanes_of(dtype):
    return {types.float32: 16, types.float64: 8}.get(dtype)


def _tile_args_ok(floats, ints):
    """1-D contiguous arrays, the floats all of float32 or all of float64, the ints int64."""
    return (all(isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C"
                for a in floats + ints)
            and len({a.dtype for a in floats}) == 1 and _lanes_of(floats[0].dtype) is not None
            and all(a.dtype == types.int64 for a in ints))


class _Vectors:
    """IR for vectors of ``dtype`` (a Numba float type) in ``builder``."""

    def __init__(self, context, builder, dtype):
        self.builder, self.lanes = builder, _lanes_of(dtype)
        self.type = ir.VectorType(context.get_value_type(dtype), self.lanes)
        name = f"llvm.fma.v{self.lanes}{'f32' if self.lanes == 16 else 'f64'}"
        self._fma = _declared(builder, name, self.type, [self.type] * 3)
        self.zero = ir.Constant(self.type, [0.0] * self.lanes)

    def fma(self, a, b, c):
        return self.builder.call(self._fma, [a, b, c])

    def zeros(self, rows, cols):
        """The accumulators a{i}_{j} of a rows x cols tile, all zero."""
        return {f"a{i}_{j}": self.zero for i in range(rows) for j in range(cols)}

    def outer(self, rows, cols, acc):
        """One step of a tile: a{i}_{j} + rows[i] * cols[j] for every i, j, fused. rows may be
        a generator that emits each row's load as it is reached, so that it is used at once
        (loaded all first, 6 broadcasts beside 24 accumulators and 4 weights spilled)."""
        return {f"a{i}_{j}": self.fma(r, c, acc[f"a{i}_{j}"])
                for i, r in enumerate(rows) for j, c in enumerate(cols)}

    def _at(self, data, index):
        return self.builder.bitcast(self.builder.gep(data, [index]), self.type.as_pointer())

    def load(self, data, index):
        return self.builder.load(self._at(data, index), align=1)

    def store(self, value, data, index):
        self.builder.store(value, self._at(data, index), align=1)

    def add_to(self, value, data, index, keep=None):
        """data[index : +L] = (data[...] if keep (an i1; always if None) else 0) + value."""
        old = self.load(data, index)
        if keep is not None:
            old = self.builder.select(keep, old, self.zero)
        self.store(self.builder.fadd(old, value), data, index)

    def broadcast(self, data, index):
        """data[index] in every lane."""
        b = self.builder
        return _splat(b, b.load(b.gep(data, [index])), self.type)


def _k(k):
    return ir.Constant(_I64, k)


def _entry(builder, data, index):
    return builder.load(builder.gep(data, [index]))


# --- register tiles of a dense convolution (fastconv.cpu.blocked) ----------------------------
# TILE_VECTORS vectors of output channels (16 float32 or 8 float64 lanes each) times p <= 6
# output pixels: 24 accumulators, in registers for the whole reduction over input
# channels and taps. One step (input channel c, tap t) loads the TILE_VECTORS weight vectors of
# (c, t) once and multiplies each by one input value per pixel, broadcast to every lane: 24
# fused multiply-adds for 4 + p loads, which keeps both FMA units of a core busy.

TILE_VECTORS = 4
TILE_PIXELS = 6  # 4 x 7 = 28 accumulators spilled: measured half the speed


def _make_register_tile(pixels):
    @intrinsic
    def register_tile(typingctx, out, o0, x, x0, pix, q0, koff, k0, steps, w, w0, accumulate,
                      bias, b0):
        """For each pixel j < p and vector v < TILE_VECTORS (L lanes, width = 4L):
        out[o0 + j*width + v*L : +L] = (out[...] if accumulate else bias[b0 + v*L : +L])
            + (sum over k < steps of
               w[w0 + k*width + v*L : +L] * x[x0 + koff[k0 + k] + pix[q0 + j]])
        the sum from zero in k order, one fused multiply-add each, then added (a running
        total over many calls takes one rounding per call, not one per term). A step k is
        one (input channel, tap) pair, koff its offset in the input planes (c*plane + the
        tap's offset), so the reduction is one loop whatever the number of taps (nested loops
        over channels and taps ran 4-tap phases ~15% slower than 9-tap ones, per step); pix
        holds each output pixel's offset in the input planes, so the p pixels of a tile may
        span rows. 1-D contiguous arrays of one float type (koff, pix: int64); the caller
        keeps every index in bounds."""
        if not _tile_args_ok((out, x, w, bias), (koff, pix)):
            return None

        def codegen(context, builder, sig, args):
            ((out_, _), o0_, (x_, _), x0_, (pix_, _), q0_, (koff_, _), k0_, steps_, (w_, _),
             w0_, accumulate_, (bias_, _), b0_) = _unpack(context, builder, sig, args)
            vec = _Vectors(context, builder, sig.args[0].dtype)
            lanes, width = vec.lanes, TILE_VECTORS * vec.lanes
            offsets = [builder.add(x0_, _entry(builder, pix_, builder.add(q0_, _k(j))))
                       for j in range(pixels)]
            step = _Loop(builder, steps_, "step", **vec.zeros(pixels, TILE_VECTORS))
            k = step.index
            where = _entry(builder, koff_, builder.add(k0_, k))
            w_at = builder.add(w0_, builder.mul(k, _k(width)))
            weights = [vec.load(w_, builder.add(w_at, _k(v * lanes)))
                       for v in range(TILE_VECTORS)]
            values = (vec.broadcast(x_, builder.add(where, offsets[j])) for j in range(pixels))
            step.end(**vec.outer(values, weights, step.values))
            keep = builder.icmp_signed("!=", accumulate_, _k(0))
            for v in range(TILE_VECTORS):
                start = vec.load(bias_, builder.add(b0_, _k(v * lanes)))
                for j in range(pixels):
                    where = builder.add(o0_, _k(j * width + v * lanes))
                    total = builder.fadd(builder.select(keep, vec.load(out_, where), start),
                                         step.results[f"a{j}_{v}"])
                    vec.store(total, out_, where)
            return context.get_dummy_value()

        return types.void(out, _I, x, _I, pix, _I, koff, _I, _I, w, _I, _I, bias, _I), codegen

    return register_tile


# register_tiles[p - 1]: the tile of p pixels
register_tiles = tuple(_make_register_tile(p) for p in range(1, TILE_PIXELS + 1))


def _make_weight_tile(pairs):
    @intrinsic
    def weight_tile(typingctx, out, o0, g, g0, x, x0, pix, q0, count, koff, k0, accumulate):
        """The weight gradient on a register tile: for each of `pairs` (input channel, tap)
        pairs j and vector v < TILE_VECTORS (L lanes, width = 4L output channels):
        out[o0 + j*width + v*L : +L] = (out[...] if accumulate else 0)
            + (sum over q < count of
               g[g0 + q*width + v*L : +L] * x[x0 + pix[q0 + q] + koff[k0 + j]])
        the sum from zero in q order, one fused multiply-add each, then added. g: grad_y
        channel-blocked, pixel by pixel; koff: each pair's offset in the input planes. The
        caller keeps every index in bounds."""
        if not _tile_args_ok((out, g, x), (pix, koff)):
            return None

        def codegen(context, builder, sig, args):
            ((out_, _), o0_, (g_, _), g0_, (x_, _), x0_, (pix_, _), q0_, count_, (koff_, _),
             k0_, accumulate_) = _unpack(context, builder, sig, args)
            vec = _Vectors(context, builder, sig.args[0].dtype)
            lanes, width = vec.lanes, TILE_VECTORS * vec.lanes
            offsets = [builder.add(x0_, _entry(builder, koff_, builder.add(k0_, _k(j))))
                       for j in range(pairs)]
            pixel = _Loop(builder, count_, "pixel", **vec.zeros(pairs, TILE_VECTORS))
            q = pixel.index
            base = _entry(builder, pix_, builder.add(q0_, q))
            g_at = builder.add(g0_, builder.mul(q, _k(width)))
            grads = [vec.load(g_, builder.add(g_at, _k(v * lanes))) for v in range(TILE_VECTORS)]
            values = (vec.broadcast(x_, builder.add(base, offsets[j])) for j in range(pairs))
            pixel.end(**vec.outer(values, grads, pixel.values))
            keep = builder.icmp_signed("!=", accumulate_, _k(0))
            for j in range(pairs):
                for v in range(TILE_VECTORS):
                    vec.add_to(pixel.results[f"a{j}_{v}"], out_,
                               builder.add(o0_, _k(j * width + v * lanes)), keep)
            return context.get_dummy_value()

        return types.void(out, _I, g, _I, x, _I, pix, _I, _I, koff, _I, _I), codegen

    return weight_tile


# weight_tiles[p - 1]: the weight tile of p (input channel, tap) pairs
weight_tiles = tuple(_make_weight_tile(p) for p in range(1, TILE_PIXELS + 1))


# --- pixel tiles: the register tiles of fastconv.cpu.direct at column stride 1 ---------------
# PIXEL_ROWS output channels times PIXEL_VECTORS vectors of consecutive grid positions (16
# float32 or 8 float64 each): 24 accumulators; a step (input channel, tap) loads 3 input
# vectors and broadcasts 8 weights, 24 fused multiply-adds for 11 loads, whatever the number of
# output channels per group (8 fill it), where a tile of output-channel lanes would waste them.

PIXEL_ROWS = 8
PIXEL_VECTORS = 3


@intrinsic
def pixel_tile(typingctx, out, o0, ostride, x, x0, cstride, channels, at, w):
    """For each row r < 8 and vector v < 3 (L lanes):
    out[o0 + r*ostride + v*L : +L] += (sum over c < channels, t < at.size of
        w[(c*T + t)*8 + r] * x[x0 + c*cstride + at[t] + v*L : +L])
    the sum from zero in (c, t) order, one fused multiply-add each, then added. 1-D contiguous
    arrays of one float type (at: int64); the caller keeps every index in bounds."""
    if not _tile_args_ok((out, x, w), (at,)):
        return None

    def codegen(context, builder, sig, args):
        ((out_, _), o0_, ostride_, (x_, _), x0_, cstride_, channels_, (at_, taps), (w_, _)) = \
            _unpack(context, builder, sig, args)
        vec = _Vectors(context, builder, sig.args[0].dtype)
        lanes = vec.lanes
        channel = _Loop(builder, channels_, "channel", **vec.zeros(PIXEL_ROWS, PIXEL_VECTORS))
        row = builder.add(x0_, builder.mul(channel.index, cstride_))
        w_row = builder.mul(builder.mul(channel.index, taps), _k(PIXEL_ROWS))
        tap = _Loop(builder, taps, "tap", **channel.values)
        t = tap.index
        where = builder.add(row, _entry(builder, at_, t))
        inputs = [vec.load(x_, builder.add(where, _k(v * lanes))) for v in range(PIXEL_VECTORS)]
        w_at = builder.add(w_row, builder.mul(t, _k(PIXEL_ROWS)))
        weights = (vec.broadcast(w_, builder.add(w_at, _k(r))) for r in range(PIXEL_ROWS))
        tap.end(**vec.outer(weights, inputs, tap.values))
        channel.end(**tap.results)
        for r in range(PIXEL_ROWS):
            for v in range(PIXEL_VECTORS):
                vec.add_to(channel.results[f"a{r}_{v}"], out_,
                           builder.add(o0_, builder.add(builder.mul(_k(r), ostride_),
                                                        _k(v * lanes))))
        return context.get_dummy_value()

    return types.void(out, _I, _I, x, _I, _I, _I, at, w), codegen


@intrinsic
def pixel_grad_tile(typingctx, out, g, g0, gstride, x, x0, at, count):
    """The weight gradient on pixel tiles: for each row r < 8 (output channel) and tap j < 3,
    out[(r*3 + j)*L : +L] += (sum over k < count of
        g[g0 + r*gstride + k*L : +L] * x[x0 + at[j] + k*L : +L])
    the sum from zero in k order, one fused multiply-add each, then added: L lanes of partial
    sums, which the caller adds up. 1-D contiguous arrays of one float type (at: int64, 3
    entries); the caller keeps every index in bounds."""
    if not _tile_args_ok((out, g, x), (at,)):
        return None
    taps = PIXEL_VECTORS

    def codegen(context, builder, sig, args):
        ((out_, _), (g_, _), g0_, gstride_, (x_, _), x0_, (at_, _), count_) = \
            _unpack(context, builder, sig, args)
        vec = _Vectors(context, builder, sig.args[0].dtype)
        lanes = vec.lanes
        starts = [builder.add(x0_, _entry(builder, at_, _k(j))) for j in range(taps)]
        rows = [builder.add(g0_, builder.mul(_k(r), gstride_)) for r in range(PIXEL_ROWS)]
        step = _Loop(builder, count_, "step", **vec.zeros(PIXEL_ROWS, taps))
        k = builder.mul(step.index, _k(lanes))
        inputs = [vec.load(x_, builder.add(starts[j], k)) for j in range(taps)]
        grads = (vec.load(g_, builder.add(rows[r], k)) for r in range(PIXEL_ROWS))
        step.end(**vec.outer(grads, inputs, step.values))
        for r in range(PIXEL_ROWS):
            for j in range(taps):
                vec.add_to(step.results[f"a{r}_{j}"], out_, _k((r * taps + j) * lanes))
        return context.get_dummy_value()

    return types.void(out, g, _I, _I, x, _I, at, _I), codegen


# --- one elementwise pass that writes a large output (fastconv.cpu.batchnorm) ----------------
# dst[d0 + i] for i < count, each value computed in float64 from the sources' elements (float32
# or float64 arrays, all of one type) and rounded once to dst's type. The body stores whole
# 64-byte lines (16 float32 or 8 float64), from the first 64-byte boundary of dst on; the
# elements before it and after the last whole line take the same arithmetic one at a time, so
# a value never depends on where in memory it lies. With ``stream`` the lines are stored
# non-temporally (to memory, not through the caches): an output much larger than the caches is
# then written without first being read in (a normal store reads the line it writes to), a
# quarter of the traffic of a pass that reads two inputs. The caller ends each thread's task
# with store_fence(), which orders those stores before whatever follows.


def _stream_pass(context, builder, sig, dst, d0, count, stream, value):
    """The pass's IR: ``value(index, width)`` returns the float64 values (a vector of ``width``)
    of elements index .. index + width - 1."""
    dtype = sig.args[0].dtype
    size = 4 if dtype == types.float32 else 8
    line = ALIGN // size
    data, _ = dst
    address = builder.ptrtoint(builder.gep(data, [d0]), _I64)
    # elements up to the first 64-byte boundary (all of them if count is smaller)
    head = builder.lshr(builder.and_(builder.sub(_k(0), address), _k(ALIGN - 1)),
                        _k(size.bit_length() - 1))
    head = builder.select(builder.icmp_signed("<", head, count), head, count)
    lines = builder.lshr(builder.sub(count, head), _k(line.bit_length() - 1))
    body_end = builder.add(head, builder.mul(lines, _k(line)))
    element = context.get_value_type(dtype)

    def put(width, start, n, aligned, nontemporal):
        kind = ir.VectorType(element, width)
        loop = _Loop(builder, n, "stream")
        i = builder.add(start, builder.mul(loop.index, _k(width)))
        result = value(i, width)
        if dtype == types.float32:
            result = builder.fptrunc(result, kind)
        at = builder.bitcast(builder.gep(data, [builder.add(d0, i)]), kind.as_pointer())
        store = builder.store(result, at, align=ALIGN if aligned else size)
        if nontemporal:
            store.set_metadata("nontemporal",
                               builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)]))
        loop.end()

    put(1, _k(0), head, False, False)
    # streaming only from an address that is a multiple of the element size (any array NumPy
    # allocates): then the body's lines start at 64-byte boundaries, as non-temporal stores need
    whole = builder.icmp_signed("==", builder.and_(address, _k(size - 1)), _k(0))
    streamed = builder.and_(builder.icmp_signed("!=", stream, _k(0)), whole)
    with builder.if_else(streamed) as (then, otherwise):
        with then:
            put(line, head, lines, True, True)
        with otherwise:
            put(line, head, lines, False, False)
    put(1, body_end, builder.sub(count, body_end), False, False)


def _doubles(context, builder, kind, data, index, width):
    """``width`` elements of an array of ``kind`` from index on, as a vector of float64."""
    element = context.get_value_type(kind.dtype)
    at = builder.bitcast(builder.gep(data, [index]), ir.VectorType(element, width).as_pointer())
    loaded = builder.load(at, align=4 if kind.dtype == types.float32 else 8)
    doubles = ir.VectorType(ir.DoubleType(), width)
    return builder.fpext(loaded, doubles) if kind.dtype == types.float32 else loaded


def _fma_f64(builder, width):
    doubles = ir.VectorType(ir.DoubleType(), width)
    function = _declared(builder, f"llvm.fma.v{width}f64", doubles, [doubles] * 3)
    return lambda a, b, c: builder.call(function, [a, b, c])


def _doubles_splat(builder, scalar, width):
    return _splat(builder, scalar, ir.VectorType(ir.DoubleType(), width))


def _stream_args_ok(floats):
    return (all(isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C" for a in floats)
            and len({a.dtype for a in floats}) == 1
            and floats[0].dtype in (types.float32, types.float64))


@intrinsic
def stream_scale(typingctx, dst, d0, count, a, a0, k, t, stream):
    """dst[d0 + i] = k * a[a0 + i] + t (one fused multiply-add in float64) for i < count;
    t = -0.0 gives k * a exactly, the sign of a zero product included. Non-temporal stores
    where stream is nonzero (see above). The caller keeps every index in bounds."""
    if not _stream_args_ok((dst, a)):
        return None

    def codegen(context, builder, sig, args):
        (dst_, d0_, count_, (a_, _), a0_, k_, t_, stream_) = _unpack(context, builder, sig, args)

        def value(i, width):
            fma = _fma_f64(builder, width)
            x = _doubles(context, builder, sig.args[3], a_, builder.add(a0_, i), width)
            return fma(_doubles_splat(builder, k_, width), x, _doubles_splat(builder, t_, width))

        _stream_pass(context, builder, sig, dst_, d0_, count_, stream_, value)
        return context.get_dummy_value()

    return types.void(dst, _I, _I, a, _I, types.float64, types.float64, _I), codegen


@intrinsic
def stream_affine(typingctx, dst, d0, count, a, b, s0, ka, kb, shift, k0, stream):
    """dst[d0 + i] = ka * a[s0 + i] + (kb * (b[s0 + i] - shift) + k0) for i < count, in float64
    (two fused multiply-adds, the inner one first). Non-temporal stores where stream is
    nonzero (see above). The caller keeps every index in bounds."""
    if not _stream_args_ok((dst, a, b)):
        return None

    def codegen(context, builder, sig, args):
        (dst_, d0_, count_, (a_, _), (b_, _), s0_, ka_, kb_, shift_, k0_, stream_) = \
            _unpack(context, builder, sig, args)

        def value(i, width):
            fma = _fma_f64(builder, width)
            at = builder.add(s0_, i)
            x = _doubles(context, builder, sig.args[3], a_, at, width)
            y = _doubles(context, builder, sig.args[4], b_, at, width)
            inner = fma(_doubles_splat(builder, kb_, width),
                        builder.fsub(y, _doubles_splat(builder, shift_, width)),
                        _doubles_splat(builder, k0_, width))
            return fma(_doubles_splat(builder, ka_, width), x, inner)

        _stream_pass(context, builder, sig, dst_, d0_, count_, stream_, value)
        return context.get_dummy_value()

    F = types.float64
    return types.void(dst, _I, _I, a, b, _I, F, F, F, F, _I), codegen


@intrinsic
def store_fence(typingctx):
    """sfence on x86 (a full fence elsewhere): the non-temporal stores before it are ordered
    before every store after it, so before the parallel region's end, after which other
    threads may read them. x86 may reorder non-temporal stores, and LLVM's own fence there is a
    locked instruction, which the manuals do not promise orders them; every streaming copy
    (glibc's memcpy, the kernel's) ends with sfence."""

    def codegen(context, builder, sig, args):
        if _X86:
            builder.call(_declared(builder, "llvm.x86.sse.sfence", ir.VoidType(), []), [])
        else:
            builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.void(), codegen

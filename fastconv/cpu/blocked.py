"""Register-tiled direct convolution: the loop nest with its accumulators held in registers.

Shapes (G groups, Cg = C/G input and Og = O/G output channels per group, T = kh*kw taps;
L lanes to a vector, 16 float32 or 8 float64; width = 4L output channels to a tile;
P = N*Ho*Wo output pixels of the batch)::

    xp   (N, C, Hp*Wp)          x zero-padded, each plane flattened
    wp   (G, OB, Cg, T, width)  w packed: for one input channel and tap, the weights of a block
                                of `width` output channels side by side (zero past Og);
                                OB = ceil(Og / width)
    buf  (band, width)          one task's band of outputs, channel-blocked, then written
                                (transposed) into y
    pix  (P,)                   each output pixel's offset in xp: n*C*Hp*Wp + i*sh*Wp + j*sw
    at   (T,)                   each tap's offset in a padded plane: a*dh*Wp + e*dw
    koff (Cg*T,)                each (input channel, tap) step's offset: c*Hp*Wp + at[t], so
                                that a tile's reduction is one loop over its steps

    y[n, g*Og + o, i, j] = b[o] + sum_{c, t} wp[g, o // width, c, t, o % width]
                                             * xp[(g*Cg + c)*Hp*Wp + pix[q] + at[t]]

for output pixel q = (n, i, j). The unit of work (``_simd.register_tiles``) is one tile:
`width` output channels (4 vectors) times p <= 6 consecutive output pixels, 24 accumulators
that stay in registers through the whole reduction. Each step of the reduction (one input
channel and tap) loads the tile's 4 weight vectors once and multiplies them by one input value
per pixel, broadcast to every lane: 24 fused multiply-adds for 4 + p loads. That keeps a core's
two FMA units busy; im2col's copy and the small-M GEMMs behind it did not (resnet50's 3x3
64->64 layer at 56x56, batch 8, one thread: 204 GFLOP/s against 112 for im2col; 28
accumulators spilled and ran at half the speed). Since a pixel's offset comes from pix, a
tile's pixels may span rows and images: no pixel is computed and thrown away, at any stride,
dilation or plane size.

Cache blocking: a task is one band of at most ``BAND_BYTES`` of outputs (of the batch, in
(image, row, column) order; the bands near-equal, so that no task is a short remainder) of one
block of `width` output channels of one group. It passes over its
band once per block of PASS_STEPS // T input channels (PASS_STEPS_SMALL // T for filters of
fewer than 9 taps), re-reading the band's partial sums (its buffer, buf) from L1 or L2.
Bands are cut into near-equal tiles of at most 6 pixels. The finished band is transposed into
y 16 pixels by 16 channels at a time while it is still in cache: no channel-blocked copy of
the whole output is made (on resnet50's 1x1 64->256 layer, a fresh 26 MB one and its second
pass cost ~8 ms of ~13). Tasks run block by block or band by band, whichever streams less
from memory (FILTER_CACHE_BYTES). The buffers the tiles load whole vectors from (packed
filter, bias, bands, chunks) start on 64-byte boundaries (_loops.ALIGN: a load across two
cache lines costs two).

Backward-data runs the same tiles phase by phase (``_phases``): input positions (r, q) with
r % sh and q % sw fixed meet a fixed subset of the taps, each through one output at a fixed
shift, so each phase is a stride-1 convolution of grad_y, zero-padded once for all shifts,
with that subset of the filter, its channel axes exchanged (``_pack_adjoint`` packs every
phase's in one pass over w): no zero insertion, no col2im. Stride 1 is one phase with every
tap. When a weight is Inf or NaN, the padding's zeros would meet it (0 * Inf = NaN) at
tap/pixel pairs through which no output reads, so backward-data then runs im2col's kernel,
whose col2im forms no such products.

Backward-weight runs on weight tiles (``_simd.weight_tiles``), the forward's transposed: 4
vectors of output channels times 6 (input channel, tap) pairs, summed over every output pixel
of the batch; per pixel, 4 loads of grad_y channel-blocked like buf and 6 broadcasts of x. A
task owns a part of the pairs of one block and runs over the pixels image by image in chunks
of ``CHUNK_BYTES``: it channel-blocks each chunk of grad_y into a buffer of its own, which stays
in L1 while each of its tiles runs over it. So grad_y is read once per part, no blocked copy of
it is ever written to memory (on the stem, a fresh 26 MB copy cost 2.6-5.7 ms of ~15), and
there are as few parts as keep every thread busy: G*OB*parts a multiple of the threads (a
part's tiles reuse each chunk; the stem's 25 tiles in 8 parts ran 11.4 ms, in 2 parts 9.5).

Every sum runs in an order fixed by the code (channels, then taps; pixels in order), whichever
thread runs it and however many there are: results are bitwise repeatable.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange, uint64

from . import im2col
from ._loops import (ALIGN, FASTMATH_SUM, aligned_buffer, aligned_empty, aligned_zeros,
                     channel_sum, frozen, padded)
from ._simd import TILE_PIXELS, TILE_VECTORS, register_tiles, transpose16, weight_tiles
from ._threads import parallel_jit, threads

__all__ = ["forward", "backward_data", "backward_weight", "backward_bias", "why_not",
           "workspace_bytes"]

# (input channel, tap) steps per pass over a band, by the number of taps T (input channels per
# pass: PASS_STEPS // T). Measured on 2 cores (ms, steps 32 / 72 / 288): resnet50's 3x3
# 64->64 @56 5.92 / 5.28 / 4.95, 512->512 @7 6.38 / 5.98 / 5.89; a 2x2/s2 transposed layer's
# 1-tap phases 1.99 / 1.97 / 2.90, a 4x4/s2 one's 4-tap phases 2.36 / 2.87 / 2.87
PASS_STEPS = 288  # filters of 9 taps and more
PASS_STEPS_SMALL = 32  # fewer taps
# A band of outputs (pixels x width channels); measured (ms, 32 / 64 KiB): 1x1 128->256 @28
# forward 2.59 / 2.30, 3x3 64->64 @56 10.04 / 9.92, 512->512 @7 9.35 / 9.16
BAND_BYTES = 65536
CHUNK_BYTES = 32768  # a chunk of grad_y in backward-weight (in L1 while its tiles run)
# Task order: block-major (a block's bands in turn: its packed filter stays in L2 while the
# input streams once per block) or band-major (a band's blocks in turn: the band's input stays
# in cache while the filter streams once per band). Band-major where the whole packed filter
# fits in FILTER_CACHE_BYTES of L2, or streams less: bands * filter < blocks * input. Measured
# (2 cores, AMD EPYC, min of interleaved runs): 1x1 64->256 @56 forward 8.95 -> 7.62 ms,
# 128->256 @28 3.13 -> 2.94; band-major on 512->512 @7 (9.4 MB of filter) 10.8 -> 13.2
FILTER_CACHE_BYTES = 1 << 19

_T1, _T2, _T3, _T4, _T5, _T6 = register_tiles
_W1, _W2, _W3, _W4, _W5, _W6 = weight_tiles
assert TILE_PIXELS == 6


@njit(inline="always")
def _tile(p, out, o0, x, x0, pix, q0, koff, k0, steps, w, w0, accumulate, bias, b0):
    """The register tile of p (1 to 6) pixels."""
    if p == 6:
        _T6(out, o0, x, x0, pix, q0, koff, k0, steps, w, w0, accumulate, bias, b0)
    elif p == 5:
        _T5(out, o0, x, x0, pix, q0, koff, k0, steps, w, w0, accumulate, bias, b0)
    elif p == 4:
        _T4(out, o0, x, x0, pix, q0, koff, k0, steps, w, w0, accumulate, bias, b0)
    elif p == 3:
        _T3(out, o0, x, x0, pix, q0, koff, k0, steps, w, w0, accumulate, bias, b0)
    elif p == 2:
        _T2(out, o0, x, x0, pix, q0, koff, k0, steps, w, w0, accumulate, bias, b0)
    else:
        _T1(out, o0, x, x0, pix, q0, koff, k0, steps, w, w0, accumulate, bias, b0)


@njit(inline="always")
def _weight_tile(p, out, o0, g, g0, x, x0, pix, q0, count, koff, k0, accumulate):
    """The weight tile of p (1 to 6) pairs."""
    if p == 6:
        _W6(out, o0, g, g0, x, x0, pix, q0, count, koff, k0, accumulate)
    elif p == 5:
        _W5(out, o0, g, g0, x, x0, pix, q0, count, koff, k0, accumulate)
    elif p == 4:
        _W4(out, o0, g, g0, x, x0, pix, q0, count, koff, k0, accumulate)
    elif p == 3:
        _W3(out, o0, g, g0, x, x0, pix, q0, count, koff, k0, accumulate)
    elif p == 2:
        _W2(out, o0, g, g0, x, x0, pix, q0, count, koff, k0, accumulate)
    else:
        _W1(out, o0, g, g0, x, x0, pix, q0, count, koff, k0, accumulate)


@parallel_jit(cache=True)
def _forward(xp, wp, bp, out, spots, ostride, og, groups, cg, blocks, taps, width, plane, pix,
             koff, bands, channel_block, band_major):
    # out[spots[q] + (g*og + ob*width + l)*ostride] for output pixel q (of pix) and lane l <
    # og - ob*width: one task per (group, channel block, one of `bands` near-equal bands of
    # the batch's output pixels in (image, row, column) order); a band is cut into near-equal
    # tiles of <= 6 pixels that run into a channel-blocked buffer of the task's own, which
    # stays in cache, and is then written to out (_band_out). koff (Cg*T): each (input
    # channel, tap) step's offset in a group's input planes, c*plane + the tap's offset
    pixels = pix.size
    for task in prange(groups * blocks * bands):
        g = task // (blocks * bands)
        if band_major:
            ob, b = task % blocks, task // blocks % bands
        else:
            ob, b = task // bands % blocks, task % bands
        # near-equal bands: a short last band made the band-major tasks of a 256-pixel call 8
        # full ones on one thread and 8 of 4 pixels on the other (16x256->512 @8/s2: 4.3 ms
        # against 2.4 with two bands of 128)
        q_start = b * pixels // bands
        count = (b + 1) * pixels // bands - q_start
        tiles = (count + TILE_PIXELS - 1) // TILE_PIXELS
        block = g * blocks + ob
        weights = block * cg * taps * width
        buf = aligned_buffer(count * width, out)
        for c0 in range(0, cg, channel_block):
            channels = min(channel_block, cg - c0)
            for s in range(tiles):
                q0 = s * count // tiles
                q1 = (s + 1) * count // tiles
                _tile(q1 - q0, buf, q0 * width, xp, g * cg * plane, pix, q_start + q0, koff,
                      c0 * taps, channels * taps, wp, weights + c0 * taps * width, c0, bp,
                      block * width)
        _band_out(buf, count, out, spots, q_start, (g * og + ob * width) * ostride, ostride,
                  min(width, og - ob * width), width)


@njit(inline="always")
def _band_out(buf, count, out, spots, q_start, first, ostride, valid, width):
    # out[spots[q_start + q] + first + l*ostride] = buf[q*width + l] for q < count, l < valid:
    # 16 pixels of 16 lanes at a time transposed in registers, straight into out where the 16
    # pixels lie side by side there (a row of an output plane), else through a 16 x 16 block,
    # stored at a fixed step where they are evenly spaced (a row of a phase) and scattered
    # where not; the rest element by element
    lanes = 16
    block_t = aligned_buffer(lanes * lanes, buf)
    for l0 in range(0, valid, lanes):
        done = 0
        if l0 + lanes <= valid:
            done = count // lanes * lanes
            for r0 in range(0, done, lanes):
                at = q_start + r0
                start = spots[at] + first + l0 * ostride
                step = spots[at + 1] - spots[at]  # the 16 pixels evenly spaced in out?
                even = True
                for r in range(2, lanes):
                    even = even and spots[at + r] - spots[at + r - 1] == step
                if even and step == 1:  # side by side: a row of an output plane
                    transpose16(out, start, ostride, buf, r0 * width + l0, width)
                    continue
                transpose16(block_t, 0, lanes, buf, r0 * width + l0, width)
                if even:  # a row of a backward-data phase: every sw-th pixel of a row
                    for c in range(lanes):
                        for r in range(lanes):
                            out[start + c * ostride + r * step] = block_t[c * lanes + r]
                else:
                    for c in range(lanes):
                        for r in range(lanes):
                            out[spots[at + r] + first + (l0 + c) * ostride] = \
                                block_t[c * lanes + r]
        for l in range(l0, min(valid, l0 + lanes)):
            for q in range(done, count):
                out[spots[q_start + q] + first + l * ostride] = buf[q * width + l]


@parallel_jit(cache=True)
def _weights(xp, gy, gwb, groups, cg, blocks, width, plane, pix, koff, chunk, parts):
    # gwb (G, OB, K, width), K = Cg*T (input channel, tap) pairs, from gy (N, G*Og, Ho*Wo):
    # one task per (group, block, part of the pairs); it runs over the pixels of the batch in
    # order, image by image in chunks of `chunk`, each chunk of gy channel-blocked into a
    # buffer of its own that stays in L1 (_chunk) while its tiles of 6 pairs run over it
    k_, n_, pixels = koff.size, gy.shape[0], gy.shape[2]
    og = gy.shape[1] // groups
    flat_g = gy.reshape(gy.size)
    tiles = (k_ + TILE_PIXELS - 1) // TILE_PIXELS
    for task in prange(groups * blocks * parts):
        block = task // parts
        g, ob = block // blocks, block % blocks
        first = task % parts * tiles // parts
        last = (task % parts + 1) * tiles // parts
        gyc = aligned_buffer(chunk * width, gy)
        valid = min(width, og - ob * width)
        for n in range(n_):
            row = (n * gy.shape[1] + g * og + ob * width) * pixels
            for q0 in range(0, pixels, chunk):
                count = min(chunk, pixels - q0)
                _chunk(flat_g, row + q0, pixels, count, gyc, width, valid)
                for tile in range(first, last):
                    k0 = tile * TILE_PIXELS
                    _weight_tile(min(TILE_PIXELS, k_ - k0), gwb, (block * k_ + k0) * width,
                                 gyc, 0, xp, g * cg * plane, pix, n * pixels + q0, count,
                                 koff, k0, n > 0 or q0 > 0)


@njit(inline="always")
def _chunk(flat_g, start, stride, count, gyc, width, valid):
    # gyc[q*width + l] = flat_g[start + l*stride + q] for q < count, l < valid; zero for the
    # lanes past valid: 16 x 16 blocks transposed in registers, the rest element by element
    lanes = 16
    for l0 in range(0, width, lanes):
        whole = count // lanes * lanes if l0 + lanes <= valid else 0
        for q0 in range(0, whole, lanes):
            transpose16(gyc, q0 * width + l0, width, flat_g, start + l0 * stride + q0, stride)
        for l in range(l0, l0 + lanes):
            for q in range(whole if l < valid else 0, count):
                gyc[q * width + l] = flat_g[start + l * stride + q] if l < valid \
                    else flat_g.dtype.type(0)


def _width(dtype):
    return TILE_VECTORS * (16 if np.dtype(dtype) == np.float32 else 8)


def _padded_planes(x, rows, cols):
    """x (N, C, H, W) placed at (rows[0], cols[0]) among zeros in planes of
    (H + sum(rows)) x (W + sum(cols)), flattened: -> (N*C*Hp*Wp,). A negative pad crops; no
    copy when there is no padding and x is contiguous, one (the padding's) when there is."""
    xp = np.ascontiguousarray(padded(x, (rows, cols)))
    return frozen(xp.reshape(xp.size)), xp.shape[2], xp.shape[3]


@parallel_jit(fastmath=FASTMATH_SUM, cache=True)
def _pack_adjoint(w, wp, groups, width, taps, starts, finite):
    # The filter of backward-data (from output channel o back to input channel ob*width + l)
    # on the taps of every phase, phase after phase: phase f's taps are taps[starts[f]:
    # starts[f + 1]], T' of them, and its packing (G, OB, Og, T', width) starts at element
    # G*OB*Og*width*starts[f] of wp, with [g, ob, o, t, l] = w (G*Og, Cg, kh*kw)[g*Og + o,
    # ob*width + l, taps[t]], zero past Cg. One task per (g, ob, o) packs every phase, so its
    # rows of w (a stride of kh*kw) stay in L1 from the first phase to the last: packing the
    # four phases of a 4x4/s2 filter in four calls read it from L2 four times, 50 us a call.
    # Flat unsigned indices, so that LLVM makes each tap's row of `width` lanes vector
    # gathers (3-d indexing's per-element wrap checks were 3x slower).
    # finite[task]: whether the task's weights are all finite, from a sum of v * 0 (0 for a
    # finite v, NaN for Inf or NaN) over its packed rows while they are in L1: a separate
    # check read all of a 512x512x3x3 filter from memory again, 0.25 ms
    o_, cg, k_ = w.shape
    og = o_ // groups
    tasks = finite.size
    blocks = tasks // (groups * og)
    flat_w = w.reshape(w.size)
    zero = wp.dtype.type(0)
    for task in prange(tasks):
        g, ob, o = task // (blocks * og), task // og % blocks, task % og
        valid = min(width, cg - ob * width)
        row = uint64(((g * og + o) * cg + ob * width) * k_)
        check = zero
        for f in range(starts.size - 1):
            count = starts[f + 1] - starts[f]
            start = uint64((tasks * starts[f] + task * count) * width)
            for t in range(uint64(count)):
                src, dst = row + uint64(taps[starts[f] + t]), start + t * uint64(width)
                for l in range(uint64(valid)):
                    wp[dst + l] = flat_w[src + l * uint64(k_)]
                for l in range(uint64(valid), uint64(width)):
                    wp[dst + l] = zero
            for i in range(start, start + uint64(count * width)):  # still in L1
                check += wp[i] * zero
        finite[task] = check == zero


@parallel_jit(cache=True)
def _pack_forward(w2, wp, groups, width):
    # _pack of the convolution's own filter, w2 (G*Og, K = Cg*T): per (group,
    # block), wp's (K, width) block is the transpose of w2's (width, K) rows, moved 16 x 16
    # in registers where whole
    o_, k_ = w2.shape
    og, lanes = o_ // groups, 16
    blocks = wp.shape[0] // (groups * k_ * width)
    flat_w = w2.reshape(w2.size)
    for task in prange(groups * blocks * (width // lanes)):
        g, ob, v = task // (blocks * (width // lanes)), task // (width // lanes) % blocks, \
            task % (width // lanes)
        start = (g * blocks + ob) * k_ * width + v * lanes
        o0 = ob * width + v * lanes
        rows = max(0, min(lanes, og - o0))
        whole = k_ // lanes * lanes if rows == lanes else 0
        for k0 in range(0, whole, lanes):
            transpose16(wp, start + k0 * width, width, flat_w, (g * og + o0) * k_ + k0, k_)
        for k in range(whole, k_):
            for r in range(lanes):
                wp[start + k * width + r] = flat_w[(g * og + o0 + r) * k_ + k] if r < rows \
                    else w2.dtype.type(0)


@parallel_jit(cache=True)
def _unpack_forward(gwb, gw2, groups, width):
    # gw2 (G*Og, K)[g*Og + o, k] = gwb (G, OB, K, width)[g, o // width, k, o % width]: the
    # inverse of _pack_forward, and its mirror image (one function with a direction flag would
    # write to the caller's filter in one branch, which Numba refuses for a read-only array)
    o_, k_ = gw2.shape
    og, lanes = o_ // groups, 16
    blocks = gwb.shape[0] // (groups * k_ * width)
    flat_w = gw2.reshape(gw2.size)
    for task in prange(groups * blocks * (width // lanes)):
        g, ob, v = task // (blocks * (width // lanes)), task // (width // lanes) % blocks, \
            task % (width // lanes)
        start = (g * blocks + ob) * k_ * width + v * lanes
        o0 = ob * width + v * lanes
        rows = max(0, min(lanes, og - o0))
        whole = k_ // lanes * lanes if rows == lanes else 0
        for k0 in range(0, whole, lanes):
            transpose16(flat_w, (g * og + o0) * k_ + k0, k_, gwb, start + k0 * width, width)
        for r in range(rows):
            for k in range(whole, k_):
                flat_w[(g * og + o0 + r) * k_ + k] = gwb[start + k * width + r]


def _offsets(n, c, hp, wp_, kernel, out, stride, dilation):
    """In padded planes of hp x wp_: each tap's offset from its output pixel's window (at, T),
    and each output pixel's offset in xp (pix, N*Ho*Wo: image, row, column)."""
    at = np.array([a * dilation[0] * wp_ + e * dilation[1] for a in range(kernel[0])
                   for e in range(kernel[1])], dtype=np.int64)
    pix = _spots(n, c * hp * wp_, out[0], out[1], stride[0], stride[1], (0, 0), wp_)
    return frozen(at), pix


def _step_offsets(channels, plane, at):
    """koff: each (input channel c, tap t) step's offset in a group's input planes of ``plane``
    elements, c*plane + at[t], in the order the filter is packed (channels, then taps): the
    table both the forward's register tiles and the weight tiles step through."""
    koff = np.empty(channels * at.size, dtype=np.int64)
    _fill_steps(koff, channels, plane, at)
    return frozen(koff)


@njit(cache=True)
def _fill_steps(koff, channels, plane, at):
    # (NumPy's broadcast sum took 9 us a call, one a phase)
    for c in range(channels):
        for t in range(at.size):
            koff[c * at.size + t] = c * plane + at[t]


def _packed(w, b, groups, dtype):
    """The forward's filter packed for the tiles (_pack_forward) and the bias as (G, OB,
    width), zero past the outputs per group; the number of blocks OB."""
    o, cg, kh, kw = w.shape
    width = _width(dtype)
    blocks = -(-(o // groups) // width)
    wp = aligned_empty(groups * blocks * cg * kh * kw * width, dtype)
    _pack_forward(w.reshape(o, cg * kh * kw), wp, groups, width)
    bp = aligned_zeros(groups * blocks * width, dtype)
    if b is not None:
        bp.reshape(groups, blocks * width)[:, :o // groups] = b.reshape(groups, o // groups)
    return frozen(wp), frozen(bp), blocks


def _tiles(xp, plane, wp, bp, blocks, taps, pix, at, groups, cg, out, spots, ostride, og):
    """_forward over the pixels of pix into out (flat; og output channels per group): output
    pixel q of channel k at out[spots[q] + k*ostride]."""
    width = _width(out.dtype)
    band = max(TILE_PIXELS, BAND_BYTES // (width * out.itemsize) // TILE_PIXELS * TILE_PIXELS)
    steps = PASS_STEPS if taps >= 9 else PASS_STEPS_SMALL
    bands = _bands(pix.size, band, groups * blocks)
    filters, inputs = wp.size * wp.itemsize, xp.size * xp.itemsize
    band_major = blocks > 1 and (filters <= FILTER_CACHE_BYTES or
                                 bands * filters < blocks * inputs)
    koff = _step_offsets(cg, plane, at)
    _forward(xp, wp, bp, out, spots, ostride, og, groups, cg, blocks, taps, width, plane, pix,
             koff, bands, max(1, steps // taps), band_major)


def _bands(pixels, band, blocks):
    """How many near-equal bands to cut ``pixels`` into: at most ``band`` pixels each, and
    as many more (up to one tile each) as make the tasks, ``blocks`` times the bands, a
    multiple of the threads, so that no thread runs one task more than another (a transposed
    4x4/s2 layer's phases of 2048 pixels in 9 bands, one block: 188 GFLOP/s; the forward's
    18 tasks: 230). Which band a pixel falls in changes no sum: each pixel's reduction runs in
    the same order in any tile."""
    bands = -(-pixels // band)
    step = threads() // math.gcd(blocks, threads())
    return max(1, min(-(-bands // step) * step, -(-pixels // TILE_PIXELS)))


def _spots(n, image, rows, cols, row_step, col_step, first, row_stride):
    """Each pixel's offset in a batch of output planes (image: the elements of one image): the
    pixels (image, u, v) for u < rows, v < cols at row u*row_step + first[0] and column
    v*col_step + first[1] of planes of row_stride columns."""
    spots = np.empty(n * rows * cols, dtype=np.int64)
    _fill_spots(spots, n, image, rows, cols, row_step, col_step, first[0], first[1], row_stride)
    return frozen(spots)


@njit(cache=True)
def _fill_spots(spots, n_, image, rows, cols, row_step, col_step, top, left, row_stride):
    # one loop nest (NumPy's broadcast sums of aranges took 20 us a call, 8 calls in a
    # transposed 4x4/s2 layer's phases)
    k = 0
    for n in range(n_):
        for u in range(rows):
            start = n * image + (u * row_step + top) * row_stride + left
            for v in range(cols):
                spots[k] = start + v * col_step
                k += 1


def forward(x, w, b, p):
    """y = conv(x, w) + b; x (N, C, H, W), w (O, C/G, kh, kw), b (O,) or None -> (N, O, Ho, Wo)."""
    n, c = x.shape[:2]
    o, cg, kh, kw = w.shape
    ho, wo = p.y_shape[2:]
    y = np.empty(p.y_shape, dtype=x.dtype)
    if y.size == 0:
        return y
    xp, hp, wp_ = _padded_planes(x, *p.padding)
    wp, bp, blocks = _packed(w, b, p.groups, x.dtype)
    at, pix = _offsets(n, c, hp, wp_, (kh, kw), (ho, wo), p.stride, p.dilation)
    _tiles(xp, hp * wp_, wp, bp, blocks, kh * kw, pix, at, p.groups, cg, y.reshape(-1),
           _spots(n, o * ho * wo, ho, wo, 1, 1, (0, 0), wo), ho * wo, o // p.groups)
    return y


def _phases(size, out, lo, stride, dilation, kernel):
    """Backward-data along one axis, phase by phase: input position r = phase + stride*u meets
    kernel tap a through output (r + lo - a*dilation) / stride, where that is an integer, which
    is u + shift. Per phase: (phase, its positions U, [(tap, shift)]); and the zero padding of
    grad_y (before, after) that every shift reads within."""
    phases, before, after = [], 0, 0
    for r in range(min(stride, size)):
        count = -(-(size - r) // stride)
        taps = [(a, (r + lo - a * dilation) // stride) for a in range(kernel)
                if (r + lo - a * dilation) % stride == 0]
        phases.append((r, count, taps))
        for _, shift in taps:
            before = max(before, -shift)
            after = max(after, count - 1 + shift - (out - 1))
    return phases, before, after


def backward_data(gy, w, p):
    """dL/dx; gy (N, O, Ho, Wo), w (O, C/G, kh, kw) -> (N, C, H, W).

    By phases: the input positions (r, q) with r % sh, q % sw fixed meet a fixed subset of the
    taps, each through one output at a fixed shift, so each phase is a stride-1 convolution of
    grad_y (zero-padded) with that subset of the filter, its channel axes exchanged: the
    forward tiles run it, and its pixels are spread to their places in dL/dx (stride 1: one
    phase, every tap). With an Inf or NaN weight, im2col's kernel (see the module docstring)."""
    n, o, ho, wo = gy.shape
    c, h, w_ = p.x_shape[1:]
    kh, kw = p.kernel
    (sh, sw), (dh, dw), g = p.stride, p.dilation, p.groups
    rows, top, bottom = _phases(h, ho, p.padding[0][0], sh, dh, kh)
    cols, left, right = _phases(w_, wo, p.padding[1][0], sw, dw, kw)
    empty = any(not taps for _, _, taps in rows + cols)
    gx = (np.zeros if empty else np.empty)(p.x_shape, dtype=gy.dtype)
    if gx.size == 0 or gy.size == 0:
        gx[...] = 0
        return gx
    gyp, hp, wp_ = _padded_planes(gy, (top, bottom), (left, right))
    width = _width(gy.dtype)
    blocks = -(-(c // g) // width)
    bias = frozen(aligned_zeros(g * blocks * width, gy.dtype))
    phases = [(r, us, row_taps, q, vs, col_taps) for r, us, row_taps in rows
              for q, vs, col_taps in cols if row_taps and col_taps]
    if not phases:  # no input position meets a tap: gx is the zeros it was made as
        return gx
    taps = [np.array([a * kw + e for a, _ in row_taps for e, _ in col_taps], np.int64)
            for _, _, row_taps, _, _, col_taps in phases]
    starts = np.cumsum([0] + [t.size for t in taps])
    tasks = g * blocks * (o // g)
    wp = aligned_empty(tasks * starts[-1] * width, gy.dtype)
    finite = np.empty(tasks, dtype=np.bool_)
    _pack_adjoint(w.reshape(o, c // g, kh * kw), wp, g, width, np.concatenate(taps), starts,
                  finite)
    if not finite.all():  # an Inf or NaN weight meets a phase's taps
        return im2col.backward_data(gy, w, p)
    for (r, us, row_taps, q, vs, col_taps), f0, f1 in zip(phases, starts, starts[1:]):
        at = np.array([i * wp_ + j for _, i in row_taps for _, j in col_taps], np.int64)
        pix = _spots(n, o * hp * wp_, us, vs, 1, 1, (top, left), wp_)
        _tiles(gyp, hp * wp_, frozen(wp[tasks * f0 * width:tasks * f1 * width]), bias, blocks,
               f1 - f0, pix, at, g, o // g, gx.reshape(-1),
               _spots(n, c * h * w_, us, vs, sh, sw, (r, q), w_), h * w_, c // g)
    return gx


def backward_weight(x, gy, p):
    """dL/dw; x (N, C, H, W), gy (N, O, Ho, Wo) -> (O, C/G, kh, kw): weight tiles (see the
    module docstring)."""
    o, cg, kh, kw = p.w_shape
    gw = np.empty(p.w_shape, dtype=x.dtype)
    n, c = x.shape[:2]
    ho, wo = p.y_shape[2:]
    if n == 0:
        gw[...] = 0
        return gw
    width = _width(x.dtype)
    og = o // p.groups
    blocks = -(-og // width)
    xp, hp, wp_ = _padded_planes(x, *p.padding)
    at, pix = _offsets(n, c, hp, wp_, (kh, kw), (ho, wo), p.stride, p.dilation)
    koff = _step_offsets(cg, hp * wp_, at)
    gwb = aligned_empty(p.groups * blocks * cg * kh * kw * width, x.dtype)
    tiles = -(-koff.size // TILE_PIXELS)
    parts = min(tiles, threads() // math.gcd(p.groups * blocks, threads()))
    chunk = max(1, CHUNK_BYTES // (width * x.itemsize))
    _weights(xp, gy.reshape(n, o, ho * wo), gwb, p.groups, cg, blocks, width, hp * wp_, pix,
             koff, chunk, parts)
    _unpack_forward(gwb, gw.reshape(o, cg * kh * kw), p.groups, width)
    return gw


def backward_bias(gy, p):
    """dL/db = sum of gy over batch and space; gy (N, K, ...) -> (K,)."""
    return channel_sum(gy)


def why_not(op, p):
    return None


# auto runs blocked where every kernel of the call that runs on tiles fills at least this many
# of a tile's output-channel lanes per group (its outputs per group, rounded up to `width`, are
# all computed): measured, blocked lost to im2col/direct on ResNeXt's 8 per group (6x forward)
# and beat im2col on every dense zoo layer (32 per group and up), see docs/algorithms.md
MIN_LANES = 32


def tiled_kernels(op, p):
    """The kernels of one call of ``op``, each with the output channels per group that its
    tiles compute: forward og, backward-data Cg, backward-weight og."""
    og, cg = p.w_shape[0] // p.groups, p.w_shape[1]
    lanes = {"forward": og, "backward_data": cg, "backward_weight": og}
    return {k: lanes[k] for k in p.kernel_calls(op)}


def workspace_bytes(op, p, itemsize):
    """Upper bound of the extra memory of one call of ``op``: the most that any of its kernel
    calls holds at once. On tiles: the padded input planes, the packed filter and bias, the
    pixel offsets (int64), each running task's buffer (its band of outputs, or its chunk of
    grad_y, channel-blocked) and in backward-weight the weight gradient, channel-blocked; on
    im2col's kernel, its bound."""
    return max((_kernel_workspace(k, p, itemsize) for k in p.kernel_calls(op)), default=0)


def _kernel_workspace(kernel, p, itemsize):
    o, cg, kh, kw = p.w_shape
    g, taps, width = p.groups, kh * kw, _width(np.float32 if itemsize == 4 else np.float64)
    n, c, h, w = p.x_shape
    ho, wo = p.y_shape[2:]
    if kernel == "backward_data":  # the forward on grad_y, padded for every phase's shifts
        (_, top, bottom), (_, left, right) = (
            _phases(size, out, pad[0], s, d, k) for size, out, pad, s, d, k
            in zip((h, w), (ho, wo), p.padding, p.stride, p.dilation, p.kernel))
        planes = n * o * (ho + top + bottom) * (wo + left + right)
        outs, ins, pixels = cg, o // g, h * w  # a phase has at most every pixel
        im2col_bound = im2col.kernel_workspace(kernel, p, itemsize)  # Inf or NaN weights
    else:
        planes = n * c * p.padded_size[0] * p.padded_size[1]
        outs, ins, pixels = o // g, cg, ho * wo
        im2col_bound = 0
    blocks = -(-outs // width)
    # packed (or its gradient) and bias, each cut at an ALIGN boundary from a little more
    filters = g * blocks * width * (ins * taps + 1) + 2 * ALIGN // itemsize
    # each running task's buffer: its band of outputs, or its chunk of grad_y, channel-blocked
    # (and a 16 x 16 block to scatter the band through)
    buffer = max(TILE_PIXELS * width, BAND_BYTES // itemsize, CHUNK_BYTES // itemsize)
    blocked = threads() * (buffer + 256 + 2 * ALIGN // itemsize)
    offsets = (2 * n * pixels + ins * taps + 2 * taps) * 8 // itemsize  # pix, spots, koff, at
    return max((planes + filters + blocked + offsets) * itemsize, im2col_bound)

"""Depthwise convolution: groups == in_channels, one small filter per channel.

Each input channel c feeds M = O/C output channels (the channel multiplier), o = c*M + m::

    xp  (Hp, Wp)         one plane of x, zero-padded
    w   (O, 1, kh, kw)
    y   (N, O, Ho, Wo)   y[n, o, i, j] = b[o] + sum_{a, e} w[o, 0, a, e]
                                                        * xp[i*sh + a*dh, j*sw + e*dw]

There is no channel reduction, so a depthwise layer does little arithmetic per byte: it is a
stencil, bound by memory traffic, and GEMM-based algorithms waste their effort on it. Three
tricks make it fast:

1. **Phase planes: every stride becomes stride 1.** Each task copies its zero-padded plane into
   sh*sw phase planes, ``ph[r % sh, q % sw][r // sh, q // sw] = xp[r, q]``. Tap (a, e) of output
   (i, j) reads ``xp[i*sh + a*dh, j*sw + e*dw]``, which is element
   ``(i + a*dh // sh, j + e*dw // sw)`` of phase ``(a*dh % sh, e*dw % sw)``: consecutive outputs
   read consecutive inputs, whatever the stride, with no strided loads and their shuffles. (At
   stride 1 there is one phase, the padded plane itself.)
2. **Flat planes.** Every phase plane is Rq columns wide and the outputs of a plane are laid on
   a grid of the same width, m = i*Rq + j. Then each tap reads ``flat[off(a, e) + m]``: one
   arithmetic sequence over the whole plane, not one short loop per output row (rows of 7
   outputs, as in MobileNet's 14x14 stride-2 layer, left the vector units mostly idle). Grid
   columns j >= Wo are computed and thrown away (Rq - Wo of them per row, 2 of 58 at 56x56).
3. **All taps per pass.** For MobileNet's 3x3 each output is loaded and stored once with all nine
   taps applied, rather than nine times.

The copy into phase planes is the per-task padding: it lands in cache, so no padded copy of the
whole input goes through memory and no tap needs a bounds test. Backward-data runs the forward's
loops as their adjoint (each tap scatters gy into the phase planes, then the planes are read
back into x's layout); backward-weight is one dot product per tap, gy's grid against the phase
planes at the tap's offset.

Small planes (a stride, or at most 56x56), and every input and weight gradient, are served
differently in float32: 16 channels to a vector, with in-register transposes between planes and
pixels (see "channel-blocked kernels" below), since there a plane is too few outputs to fill
the vectors of the loops above.

Tasks own whole planes (forward, input gradient), blocks of 16 channels of one image (blocked
forward and input gradient), output channels (weight gradient) or blocks of 16 of them over the
batch (blocked weight gradient), and every sum runs in a fixed order, so results are bitwise
repeatable.
"""
from __future__ import annotations

import numpy as np
from numba import get_num_threads, njit, prange, uint64

from ..common.depthwise import why_not
from . import _simd
from ._loops import (FASTMATH, FASTMATH_SUM, aligned_buffer, all_finite, bias_or_zeros,
                     channel_sum, row_copy, row_place)
from ._threads import parallel_jit


# --- phase planes -----------------------------------------------------------------------------

@njit(inline="always")
def _columns(pc, sw, left, w, rq):
    """The columns [q0, q1) of column phase pc that hold the plane (of width w, left padding
    left), and the plane column of q0: q*sw + pc - left inside [0, w)."""
    q0 = max(0, (left - pc + sw - 1) // sw)
    q1 = min(rq, (w + left - pc + sw - 1) // sw)
    return q0, max(q0, q1), q0 * sw + pc - left


@njit(inline="always")
def _rows(pr, sh, top, h, hq):
    """The rows [t0, t1) of row phase pr that hold the plane, and the plane row of t0."""
    t0 = max(0, (top - pr + sh - 1) // sh)
    t1 = min(hq, (h + top - pr + sh - 1) // sh)
    return t0, max(t0, t1), t0 * sh + pr - top


@njit(inline="always")
def _pairs(even, odd, src, col):
    # even[k] = src[col + 2k], odd[k] = src[col + 2k + 1]: one row split into its two column
    # phases in one loop
    for k in range(uint64(even.size)):
        even[k] = src[col + k * uint64(2)]
        odd[k] = src[col + k * uint64(2) + uint64(1)]


@njit(inline="always")
def _to_phases(flat, plane, top, left, sh, sw, hq, rq):
    """flat (sh*sw*hq*rq,) = the phase planes of plane (H, W) zero-padded by (top, left).
    (The divisions are per phase, not per row: a division costs tens of cycles, and per row they
    had made this copy take six times as long as the nine taps on 14x14 planes. At sw == 2 one
    loop per row fills both column phases, which halved the copy's time on such planes.)"""
    h, w = plane.shape
    flat[:] = 0
    for pr in range(sh):
        t0, t1, r0 = _rows(pr, sh, top, h, hq)
        if sw == 2:
            c0 = left % 2  # plane column c0 + 2k lands in phase 0 at (c0 + left) // 2 + k
            k0, pairs = (c0 + left) // 2, (w - c0) // 2
            base = pr * 2 * hq * rq
            for t in range(t0, t1):
                row = plane[r0 + (t - t0) * sh]
                at = base + t * rq + k0
                _pairs(flat[at:at + pairs], flat[at + hq * rq:at + hq * rq + pairs], row, c0)
                if c0 == 1:  # column 0 sits alone in phase 1, just left of the pairs
                    flat[at + hq * rq - 1] = row[0]
                if c0 + 2 * pairs < w:  # and the last column alone in phase 0
                    flat[at + pairs] = row[w - 1]
            continue
        for pc in range(sw):
            q0, q1, c0 = _columns(pc, sw, left, w, rq)
            base = (pr * sw + pc) * hq * rq
            for t in range(t0, t1):
                row_copy(flat[base + t * rq + q0:base + t * rq + q1], plane[r0 + (t - t0) * sh],
                         c0, sw)


@njit(inline="always")
def _from_phases(flat, plane, top, left, sh, sw, hq, rq):
    """plane (H, W) = the interior of the padded plane held as phase planes in flat: the
    inverse of _to_phases."""
    h, w = plane.shape
    for pr in range(sh):
        t0, t1, r0 = _rows(pr, sh, top, h, hq)
        for pc in range(sw):
            q0, q1, c0 = _columns(pc, sw, left, w, rq)
            base = (pr * sw + pc) * hq * rq
            for t in range(t0, t1):
                row_place(plane[r0 + (t - t0) * sh], c0, sw,
                          flat[base + t * rq + q0:base + t * rq + q1])


@njit(inline="always")
def _offset(a, e, sh, sw, dh, dw, hq, rq):
    """Where tap (a, e) of output m = 0 lies in the phase planes."""
    r, q = a * dh, e * dw
    return ((r % sh * sw + q % sw) * hq + r // sh) * rq + q // sw


# --- the inner loops: whole planes at once ------------------------------------------------------

@njit(inline="always")
def _nine_taps(acc, flat, off, k):
    # acc[m] += the nine taps of the 3x3 filter k, tap t reading flat[off[t] + m]. The taps'
    # views are sliced before the loop so that their offsets are not inside the index
    # expression (written inside it, LLVM gathered).
    t0, t1, t2 = flat[off[0]:], flat[off[1]:], flat[off[2]:]
    t3, t4, t5 = flat[off[3]:], flat[off[4]:], flat[off[5]:]
    t6, t7, t8 = flat[off[6]:], flat[off[7]:], flat[off[8]:]
    w0, w1, w2, w3, w4, w5 = k[0, 0], k[0, 1], k[0, 2], k[1, 0], k[1, 1], k[1, 2]
    w6, w7, w8 = k[2, 0], k[2, 1], k[2, 2]
    for m in range(uint64(acc.size)):
        s = acc[m] + w0 * t0[m]
        s += w1 * t1[m]
        s += w2 * t2[m]
        s += w3 * t3[m]
        s += w4 * t4[m]
        s += w5 * t5[m]
        s += w6 * t6[m]
        s += w7 * t7[m]
        s += w8 * t8[m]
        acc[m] = s


@njit(inline="always")
def _axpy(acc, wv, src):
    for m in range(uint64(acc.size)):
        acc[m] += wv * src[m]


@njit(inline="always")
def _dot_lanes(part, a, b):
    # part[m] += a[m] * b[m]: per-lane partial sums of a dot product
    for m in range(uint64(part.size)):
        part[m] += a[m] * b[m]


@njit(inline="always")
def _offsets(kh_, kw_, sh, sw, dh, dw, hq, rq):
    # At least nine entries, whatever the kernel: Numba's parallel-loop hoisting evaluates the
    # loop-invariant off[0] .. off[8] of the inlined _nine_taps before the loop, even where
    # the 3x3 branch is never taken (NUMBA_BOUNDSCHECK=1 caught reads past a 1x1 kernel's off).
    off = np.zeros(max(9, kh_ * kw_), dtype=np.uint64)
    for a in range(kh_):
        for e in range(kw_):
            off[a * kw_ + e] = _offset(a, e, sh, sw, dh, dw, hq, rq)
    return off


def _per_block(tasks):
    """Tasks per block: a few blocks per thread, so that the buffers are allocated per block and
    not per task (tiny planes make tasks of well under a microsecond)."""
    return max(1, tasks // (4 * get_num_threads()))


# --- kernels ------------------------------------------------------------------------------------

@parallel_jit(fastmath=FASTMATH, cache=True)
def _forward(x, w, b, y, sh, sw, ph, pw, dh, dw, hq, rq, per):
    # x (N, C, H, W), w (O, 1, KH, KW), b (O,) -> y (N, O, Ho, Wo)
    n_, c_ = x.shape[0], x.shape[1]
    o_, _, kh_, kw_ = w.shape
    ho_ = y.shape[2]
    m_ = o_ // c_
    off = _offsets(kh_, kw_, sh, sw, dh, dw, hq, rq)
    for blk in prange((n_ * o_ + per - 1) // per):
        flat = np.empty(sh * sw * hq * rq, dtype=x.dtype)
        acc = np.empty(ho_ * rq, dtype=y.dtype)
        for task in range(blk * per, min(n_ * o_, (blk + 1) * per)):
            n, o = task // o_, task % o_
            _to_phases(flat, x[n, o // m_], ph, pw, sh, sw, hq, rq)
            k = w[o, 0]
            acc[:] = b[o]  # bias first, then the taps in order
            if kh_ == 3 and kw_ == 3:
                _nine_taps(acc, flat, off, k)
            else:
                for t in range(kh_ * kw_):
                    _axpy(acc, k[t // kw_, t % kw_], flat[off[t]:])
            for i in range(ho_):
                row_copy(y[n, o, i], acc, i * rq, 1)


@parallel_jit(fastmath=FASTMATH, cache=True)
def _backward_data(gy, w, gx, sh, sw, ph, pw, dh, dw, hq, rq, per):
    # gy (N, O, Ho, Wo), w (O, 1, KH, KW) -> gx (N, C, H, W). The adjoint of _forward: where the
    # forward adds w * flat[off + m] into acc[m], this adds w * gy[m] into flat[off + m].
    n_, c_ = gx.shape[0], gx.shape[1]
    o_, _, kh_, kw_ = w.shape
    ho_, wo_ = gy.shape[2], gy.shape[3]
    m_ = o_ // c_
    off = _offsets(kh_, kw_, sh, sw, dh, dw, hq, rq)
    for blk in prange((n_ * c_ + per - 1) // per):
        flat = np.empty(sh * sw * hq * rq, dtype=gx.dtype)
        grid = np.zeros(ho_ * rq, dtype=gy.dtype)  # columns j >= Wo stay zero
        for task in range(blk * per, min(n_ * c_, (blk + 1) * per)):
            n, c = task // c_, task % c_
            flat[:] = 0
            for o in range(c * m_, (c + 1) * m_):
                for i in range(ho_):
                    row_copy(grid[i * rq:i * rq + wo_], gy[n, o, i], 0, 1)
                k = w[o, 0]
                for t in range(kh_ * kw_):
                    _axpy(flat[off[t]:off[t] + grid.size], k[t // kw_, t % kw_], grid)
            _from_phases(flat, gx[n, c], ph, pw, sh, sw, hq, rq)


@parallel_jit(fastmath=FASTMATH_SUM, cache=True)
def _backward_weight(x, gy, gw, sh, sw, ph, pw, dh, dw, hq, rq, exact):
    # x (N, C, H, W), gy (N, O, Ho, Wo) -> gw (O, 1, KH, KW): dL/dw[o, 0, a, e] is the dot
    # product of gy's grid with the phase planes at tap (a, e)'s offset, summed over the batch.
    # Partial sums are kept per grid position (vectorisable without reassociation) and reduced
    # in a fixed order at the end. The grid's columns j >= Wo (gy zero there) read inputs that
    # the tap never meets, harmless (0 * x) unless x holds Inf or NaN: 0 * Inf is NaN. So when
    # x is not all finite (`exact`), the products run row by row over the Wo real outputs.
    n_, c_ = x.shape[0], x.shape[1]
    o_, _, kh_, kw_ = gw.shape
    ho_, wo_ = gy.shape[2], gy.shape[3]
    m_ = o_ // c_
    off = _offsets(kh_, kw_, sh, sw, dh, dw, hq, rq)
    for o in prange(o_):
        flat = np.empty(sh * sw * hq * rq, dtype=x.dtype)
        grid = np.zeros(ho_ * rq, dtype=gy.dtype)  # columns j >= Wo stay zero
        part = np.zeros((kh_ * kw_, ho_ * rq), dtype=gy.dtype)
        for n in range(n_):
            _to_phases(flat, x[n, o // m_], ph, pw, sh, sw, hq, rq)
            if exact:
                for i in range(ho_):
                    for t in range(kh_ * kw_):
                        _dot_lanes(part[t, :wo_], gy[n, o, i], flat[off[t] + i * rq:])
                continue
            for i in range(ho_):
                row_copy(grid[i * rq:i * rq + wo_], gy[n, o, i], 0, 1)
            for t in range(kh_ * kw_):
                _dot_lanes(part[t], grid, flat[off[t]:])
        for t in range(kh_ * kw_):
            total = 0.0
            for m in range(grid.size):
                total += part[t, m]
            gw[o, 0, t // kw_, t % kw_] = total


# --- channel-blocked kernels: 16 channels to a vector, for small planes ------------------------
#
# On a 14x14 plane at stride 2 a plane has 49 outputs: each of the loops above runs a few
# vectors long, and the per-plane work (the phase copy, the calls) costs several times the taps
# (MobileNet's 512-channel layer: 1.6 ms against PyTorch's 0.5). There, 16 channels share one
# task and one vector: a pixel is the 16 channels' values at one place. The task turns its 16
# planes into pixels (_simd.transpose16, in registers) and places them in a zero-padded buffer,
#
#     xb[r, q, k] = xp[r, q] of channel c0 + k        (xp: the padded plane, Hp x Wp)
#
# Output pixel (i, j) is then bias + sum over the taps of w[t] * xb[i*sh + a*dh, j*sw + e*dw], a
# 16-lane fused multiply-add per tap whatever the stride (_simd.lane_taps, one call per output
# row, the weight and bias vectors in registers), and the outputs go back to planes by
# transpose16. The buffer's padding is zeroed once per thread: every task writes the same
# interior. Backward-data at stride 1 is this forward over zero-padded gy with the filter
# flipped (see backward_data); otherwise, or with a non-finite weight, it is the adjoint (each
# output pixel of gy scattered through the taps into a zeroed buffer, _simd.lane_scatter; the
# buffer's interior is gx). Backward-weight sums,
# per tap and lane, gy times the buffer along each output row in float32 and the rows and images
# in float64 (_simd.lane_dots). Served: float32, one filter per channel (M = 1), channels in
# whole blocks of 16. Every sum runs in a fixed order: bitwise repeatable.

BLOCK = _simd.LANES


@njit(inline="always")
def _planes_to_pixels(dst, src, s0, size):
    # dst[p*16 + k] = src[s0 + k*size + p] for p < size, k < 16: 16 planes of size elements
    p = 0
    while p + BLOCK <= size:
        _simd.transpose16(dst, p * BLOCK, BLOCK, src, s0 + p, size)
        p += BLOCK
    for q in range(p, size):
        for k in range(BLOCK):
            dst[q * BLOCK + k] = src[s0 + k * size + q]


@njit(inline="always")
def _pixels_to_planes(dst, d0, size, src):
    # dst[d0 + k*size + p] = src[p*16 + k]: the inverse of _planes_to_pixels
    p = 0
    while p + BLOCK <= size:
        _simd.transpose16(dst, d0 + p, size, src, p * BLOCK, BLOCK)
        p += BLOCK
    for q in range(p, size):
        for k in range(BLOCK):
            dst[d0 + k * size + q] = src[q * BLOCK + k]


@njit(inline="always")
def _into_padded(xb, pixels, h_, w_, top, left, wp):
    # the interior of the padded buffer (Hp, Wp, 16) from pixels (H*W, 16): a run per row
    for r in range(h_):
        d0, s0 = uint64(((r + top) * wp + left) * BLOCK), uint64(r * w_ * BLOCK)
        for m in range(uint64(w_ * BLOCK)):
            xb[d0 + m] = pixels[s0 + m]


@njit(inline="always")
def _planes_into_padded(xb, pixels, src, s0, h_, w_, top, left, wp):
    # the interior of the padded buffer (Hp, Wp, 16) from 16 planes (H, W) at src[s0 + k*H*W]:
    # rows of 16 pixels or more are transposed straight into place, 16 pixels at a time (the
    # last 16 of a row overlapping the ones before, rewriting the same values); narrower planes
    # go through pixels (H*W, 16), which skips a copy only where rows are whole vectors
    hw = h_ * w_
    if w_ < BLOCK:
        _planes_to_pixels(pixels, src, s0, hw)
        _into_padded(xb, pixels, h_, w_, top, left, wp)
        return
    for r in range(h_):
        d0 = ((r + top) * wp + left) * BLOCK
        q = 0
        while q < w_:
            q = min(q, w_ - BLOCK)
            _simd.transpose16(xb, d0 + q * BLOCK, BLOCK, src, s0 + r * w_ + q, hw)
            q += BLOCK


@njit(inline="always")
def _from_padded(pixels, xb, h_, w_, top, left, wp):
    # the inverse of _into_padded
    for r in range(h_):
        d0, s0 = uint64(((r + top) * wp + left) * BLOCK), uint64(r * w_ * BLOCK)
        for m in range(uint64(w_ * BLOCK)):
            pixels[s0 + m] = xb[d0 + m]


@njit(inline="always")
def _tap_offsets(kh_, kw_, dh, dw, wp):
    # where tap t reads in the padded buffer, from its output's window corner
    at = np.empty(kh_ * kw_, dtype=np.int64)
    for a in range(kh_):
        for e in range(kw_):
            at[a * kw_ + e] = (a * dh * wp + e * dw) * BLOCK
    return at


@njit(inline="always")
def _tap_weights(wv, w, c0):
    # wv[16t + k] = w[c0 + k, 0, a, e] for tap t = (a, e): the block's weight vectors
    kh_, kw_ = w.shape[2], w.shape[3]
    for a in range(kh_):
        for e in range(kw_):
            for k in range(BLOCK):
                wv[(a * kw_ + e) * BLOCK + k] = w[c0 + k, 0, a, e]


@parallel_jit(fastmath=FASTMATH, cache=True)
def _forward_blocked(x, w, b, y, sh, sw, top, left, dh, dw, hp, wp, per):
    # x (N, C, H, W), w (C, 1, KH, KW), b (C,) -> y (N, C, Ho, Wo), all C-contiguous float32,
    # C a multiple of 16; tasks (block of 16 channels, image), channel block major
    n_, c_, h_, wd_ = x.shape
    ho_, wo_ = y.shape[2], y.shape[3]
    hw, howo = h_ * wd_, ho_ * wo_
    xf, yf = x.reshape(-1), y.reshape(-1)
    tasks = n_ * (c_ // BLOCK)
    for chunk in prange((tasks + per - 1) // per):
        xb = aligned_buffer(hp * wp * BLOCK, x)
        xb[:] = 0  # its padding stays zero
        pixels = aligned_buffer(hw * BLOCK, x)
        out = aligned_buffer(howo * BLOCK, y)
        bias = aligned_buffer(BLOCK, y)
        at = _tap_offsets(w.shape[2], w.shape[3], dh, dw, wp)
        wv = aligned_buffer(at.size * BLOCK, w)
        laid = -1
        for task in range(chunk * per, min(tasks, (chunk + 1) * per)):
            c0, n = task // n_ * BLOCK, task % n_
            if c0 != laid:  # tasks run block by block: the weights are laid once per block
                laid = c0
                _tap_weights(wv, w, c0)
                for k in range(BLOCK):
                    bias[k] = b[c0 + k]
            _planes_into_padded(xb, pixels, xf, (n * c_ + c0) * hw, h_, wd_, top, left, wp)
            for i in range(ho_):
                if at.size == 9:
                    _simd.lane_taps9(out, i * wo_ * BLOCK, wo_, xb, i * sh * wp * BLOCK,
                                     sw * BLOCK, at, wv, bias)
                else:
                    _simd.lane_taps(out, i * wo_ * BLOCK, wo_, xb, i * sh * wp * BLOCK,
                                    sw * BLOCK, at, wv, bias)
            _pixels_to_planes(yf, (n * c_ + c0) * howo, howo, out)


@parallel_jit(fastmath=FASTMATH, cache=True)
def _backward_data_blocked(gy, w, gx, sh, sw, top, left, dh, dw, hp, wp, per):
    # gy (N, C, Ho, Wo), w (C, 1, KH, KW) -> gx (N, C, H, W): the adjoint of _forward_blocked,
    # each output pixel's gy scattered through the taps into a buffer zeroed per task (output
    # rows in order, taps in order within a pixel). Every tap/output pair exists here (an
    # output reads all its taps); what lands in the padding is dropped.
    n_, c_, h_, wd_ = gx.shape
    ho_, wo_ = gy.shape[2], gy.shape[3]
    hw, howo = h_ * wd_, ho_ * wo_
    gyf, gxf = gy.reshape(-1), gx.reshape(-1)
    tasks = n_ * (c_ // BLOCK)
    for chunk in prange((tasks + per - 1) // per):
        xb = aligned_buffer(hp * wp * BLOCK, gx)
        pixels = aligned_buffer(hw * BLOCK, gx)
        g = aligned_buffer(howo * BLOCK, gy)
        at = _tap_offsets(w.shape[2], w.shape[3], dh, dw, wp)
        wv = aligned_buffer(at.size * BLOCK, w)
        laid = -1
        for task in range(chunk * per, min(tasks, (chunk + 1) * per)):
            c0, n = task // n_ * BLOCK, task % n_
            if c0 != laid:
                laid = c0
                _tap_weights(wv, w, c0)
            _planes_to_pixels(g, gyf, (n * c_ + c0) * howo, howo)
            xb[:] = 0
            for i in range(ho_):
                _simd.lane_scatter(xb, i * sh * wp * BLOCK, wo_, sw * BLOCK, at, wv, g,
                                   i * wo_ * BLOCK)
            _from_padded(pixels, xb, h_, wd_, top, left, wp)
            _pixels_to_planes(gxf, (n * c_ + c0) * hw, hw, pixels)


@parallel_jit(fastmath=FASTMATH, cache=True)
def _backward_weight_blocked(x, gy, gw, sh, sw, top, left, dh, dw, hp, wp):
    # x (N, C, H, W), gy (N, C, Ho, Wo) -> gw (C, 1, KH, KW). One task per block of 16
    # channels, over every image in order: per tap and lane, gy * x summed along each output
    # row in float32 and over the rows and images in float64. Padding zeros meet gy, as in the
    # plane kernel.
    n_, c_, h_, wd_ = x.shape
    kh_, kw_ = gw.shape[2], gw.shape[3]
    ho_, wo_ = gy.shape[2], gy.shape[3]
    hw, howo = h_ * wd_, ho_ * wo_
    xf, gyf = x.reshape(-1), gy.reshape(-1)
    for block in prange(c_ // BLOCK):
        c0 = block * BLOCK
        xb = aligned_buffer(hp * wp * BLOCK, x)
        xb[:] = 0  # its padding stays zero
        pixels = aligned_buffer(hw * BLOCK, x)
        g = aligned_buffer(howo * BLOCK, gy)
        acc = np.zeros(kh_ * kw_ * BLOCK)
        at = _tap_offsets(kh_, kw_, dh, dw, wp)
        for n in range(n_):
            _planes_into_padded(xb, pixels, xf, (n * c_ + c0) * hw, h_, wd_, top, left, wp)
            _planes_to_pixels(g, gyf, (n * c_ + c0) * howo, howo)
            for i in range(ho_):
                if at.size == 9:
                    _simd.lane_dots9(acc, wo_, xb, i * sh * wp * BLOCK, sw * BLOCK, at, g,
                                     i * wo_ * BLOCK)
                else:
                    _simd.lane_dots(acc, wo_, xb, i * sh * wp * BLOCK, sw * BLOCK, at, g,
                                    i * wo_ * BLOCK)
        for a in range(kh_):
            for e in range(kw_):
                for k in range(BLOCK):
                    gw[c0 + k, 0, a, e] = acc[(a * kw_ + e) * BLOCK + k]


def _blocked(kernel, x_shape, w_shape, itemsize, stride):
    """Whether the channel-blocked kernels serve ``kernel`` ("forward", "backward_data",
    "backward_weight") of a call: float32, M = 1, whole blocks of 16 channels and, for the
    forward, a plane small enough that the plane kernel's per-plane costs dominate. Measured
    against the plane kernels (float32, batch 8, 3x3, so lane_taps9): the blocked forward won
    every strided layer (14x14/s2 0.20 against 1.13 ms; 28x28/s2 0.66 against 1.85;
    112x112/s2 3.2 against 4.3) and stride-1 planes up to 56x56 (7x7: 0.35 against 1.9; 28x28:
    1.01 against 1.11; 56x56: 2.0 against 2.8), and lost at 112x112 (32 channels: 2.6 against
    1.8); the blocked backward-weight, and the blocked backward-data (at stride 1 the forward
    of gy, see backward_data), won everywhere (backward-weight 56x56: 2.1 against 3.9, 112x112
    with 32 channels: 3.6 against 5.7; backward-data 56x56: 2.7 against 3.2, 112x112: 3.6
    against 3.7)."""
    c, h, w = x_shape[1], x_shape[2], x_shape[3]
    return (itemsize == 4 and w_shape[0] == c and c % BLOCK == 0
            and (kernel != "forward" or stride != (1, 1) or h * w <= 56 * 56))


def _blocked_geometry(p):
    """sh, sw, top, left, dh, dw, Hp, Wp: the padded plane the windows reach."""
    (sh, sw), ((top, _), (left, _)), (dh, dw) = p.stride, p.padding, p.dilation
    (ho, wo), (kh, kw) = p.y_shape[2:], p.kernel
    hp = max((ho - 1) * sh + (kh - 1) * dh + 1, top + p.x_shape[2])
    wp = max((wo - 1) * sw + (kw - 1) * dw + 1, left + p.x_shape[3])
    return sh, sw, top, left, dh, dw, hp, wp


def _geometry(p):
    """sh, sw, ph, pw, dh, dw, Hq, Rq: (ph, pw) the top-left padding, (Hq, Rq) the size of one
    phase plane. The padded plane is cut to the rows and columns the windows reach; Hq has one
    spare row, since grid columns past Wo read on into the next row."""
    sh, sw, top, left, dh, dw, hp, wp = _blocked_geometry(p)  # the padded plane, then phases
    return sh, sw, top, left, dh, dw, -(-hp // sh) + 1, -(-wp // sw)


def forward(x, w, b, p):
    """y = depthwise_conv(x, w) + b; x (N, C, H, W), w (O, 1, kh, kw) -> (N, O, Ho, Wo)."""
    y = np.empty(p.y_shape, dtype=x.dtype)
    if _blocked("forward", p.x_shape, p.w_shape, x.dtype.itemsize, p.stride) \
            and x.flags.c_contiguous and w.flags.c_contiguous:
        _forward_blocked(x, w, bias_or_zeros(b, p, x.dtype), y, *_blocked_geometry(p),
                         _per_block(x.shape[0] * x.shape[1] // BLOCK))
        return y
    _forward(x, w, bias_or_zeros(b, p, x.dtype), y, *_geometry(p),
             _per_block(x.shape[0] * w.shape[0]))
    return y


def backward_data(gy, w, p):
    """dL/dx; gy (N, O, Ho, Wo), w (O, 1, kh, kw) -> (N, C, H, W).

    Blocked, at stride 1 with every weight finite: x[r, q] meets w[a, e] in gy[r + top - a*dh,
    q + left - e*dw], so dL/dx is the blocked forward of gy zero-padded by dh*(kh-1) - top
    (and likewise for columns) with the filter flipped: a gather, 1.2-1.4x faster than the
    scatter (MobileNet's 56x56: 2.7 against 3.1 ms; 28x28: 1.1 against 1.6). With an Inf or
    NaN weight the padding's zeros would meet it (0 * Inf = NaN) where PyTorch forms no
    product, and the scatter, which forms only the pairs that exist, runs instead."""
    gx = np.empty(p.x_shape, dtype=gy.dtype)
    blocked = _blocked("backward_data", p.x_shape, p.w_shape, gy.dtype.itemsize, p.stride) \
        and gy.flags.c_contiguous and w.flags.c_contiguous
    per = _per_block(gx.shape[0] * gx.shape[1] // BLOCK)
    if blocked and p.stride == (1, 1):
        (kh, kw), (dh, dw) = p.kernel, p.dilation
        top, left = dh * (kh - 1) - p.padding[0][0], dw * (kw - 1) - p.padding[1][0]
        if top >= 0 and left >= 0 and all_finite(w):
            (h, wd), (ho, wo) = p.x_shape[2:], p.y_shape[2:]
            hp = max(h + (kh - 1) * dh, top + ho)
            wp = max(wd + (kw - 1) * dw, left + wo)
            flipped = np.ascontiguousarray(w[:, :, ::-1, ::-1])
            _forward_blocked(gy, flipped, np.zeros(p.x_shape[1], gy.dtype), gx, 1, 1, top,
                             left, dh, dw, hp, wp, per)
            return gx
    if blocked:
        _backward_data_blocked(gy, w, gx, *_blocked_geometry(p), per)
        return gx
    _backward_data(gy, w, gx, *_geometry(p), _per_block(gx.shape[0] * gx.shape[1]))
    return gx


def backward_weight(x, gy, p):
    """dL/dw; x (N, C, H, W), gy (N, O, Ho, Wo) -> (O, 1, kh, kw)."""
    gw = np.empty(p.w_shape, dtype=x.dtype)
    if _blocked("backward_weight", p.x_shape, p.w_shape, x.dtype.itemsize, p.stride) \
            and x.flags.c_contiguous and gy.flags.c_contiguous:
        _backward_weight_blocked(x, gy, gw, *_blocked_geometry(p))
        return gw
    _backward_weight(x, gy, gw, *_geometry(p), not all_finite(x))
    return gw


def backward_bias(gy, p):
    """dL/db = sum of gy over batch and space; gy (N, K, ...) -> (K,)."""
    return channel_sum(gy)


def workspace_bytes(op, p, itemsize):
    """Per thread at most: the phase planes of one plane, one output grid and, in
    backward-weight, kh*kw partial sums per grid position (p.kernel_calls gives the kernels that
    op runs); or the channel-blocked forward's buffers, 16 lanes each."""
    sh, sw, *_, hq, rq = _geometry(p)
    grid = p.y_shape[2] * rq
    kernels = p.kernel_calls(op)
    taps = p.kernel[0] * p.kernel[1] if "backward_weight" in kernels else 0
    per_thread = sh * sw * hq * rq + grid * (1 + taps)
    if any(_blocked(k, p.x_shape, p.w_shape, itemsize, p.stride) for k in kernels):
        # the channel-blocked kernels: padded buffer, pixels, output (or gy) pixels, the tap
        # weights and bias, and backward-weight's float64 sums
        hp, wp = _blocked_geometry(p)[6:]
        (h, w), (ho, wo) = p.x_shape[2:], p.y_shape[2:]
        (kh, kw), (dh, dw) = p.kernel, p.dilation
        taps = kh * kw
        # (stride-1 backward-data pads gy instead: up to (kh-1)*dh rows more than H)
        hp, wp = max(hp, h + (kh - 1) * dh), max(wp, w + (kw - 1) * dw)
        per_thread = max(per_thread, BLOCK * (hp * wp + h * w + ho * wo + 3 * taps + 1))
        if "backward_data" in kernels and p.stride == (1, 1):  # its flipped filter, zero bias
            shared = p.x_shape[1] * (taps + 1)
            return (get_num_threads() * per_thread + shared) * itemsize
    return get_num_threads() * per_thread * itemsize

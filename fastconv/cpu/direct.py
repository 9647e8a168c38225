"""Direct convolution: the convolution loop nest on flattened planes, compiled by Numba.

Shapes (G groups, Cg = C/G input and Og = O/G output channels per group; strides (sh, sw),
dilation (dh, dw))::

    xq  (Cg, Hq*R)      one task's input planes, zero-padded and flattened; R = Wp rounded up
                        to a multiple of sw
    w   (O, Cg, kh, kw)
    y   (N, O, Ho, Wo)  y[n, o, i, j] = b[o] + sum_{c, a, e} w[o, c, a, e]
                                                   * xp[n, g*Cg + c, i*sh + a*dh, j*sw + e*dw]

The trick that makes the loops fast is the flat index. Lay the outputs of a plane on a grid of
width grid = sh*R/sw, at m = i*grid + j. Then the input that tap (a, e) reads for output m is

    xq[c, sw*m + (a*dh*R + e*dw)]

one arithmetic sequence over all the outputs of the plane, not one short sequence per output
row: one tap is one long vector loop (hundreds of elements instead of Wo). The grid's columns
j >= Wo are computed and thrown away: grid/Wo - 1 extra work, 7% for a 3x3 layer on 28x28 with
padding 1, but about half for stride 2, where the stride-2 loads also cost more (still weak).

At column stride 1 the outputs of each block of 8 output channels run on pixel tiles
(``_simd.pixel_tile``): 8 channels times 3 vectors of consecutive grid positions, 24
accumulators held in registers through the whole reduction over input channels and taps, each
step 3 input loads and 8 broadcast weights for 24 fused multiply-adds (ResNeXt's grouped layer,
8 output channels per group: 1.6 ms against 4.9 with the loops below). A tile reads up to a
tile's width past the chunk's last output, into the slack after the task's planes.

Elsewhere (other strides, and channels past a multiple of 8) each pass over the accumulators
does a 2 x 3 register tile: two output channels and three taps of one kernel row. Per
vector of outputs that is three input loads, two accumulator loads and two stores for six
multiply-adds; one tap of one channel per pass needs one store per multiply-add and ran at a
third of the speed. Accumulators cover a chunk of whole output rows
(``config.DIRECT_CHUNK`` elements) so that they stay in L1 for every pass, and each task pads its
own input planes into a buffer that stays in cache (a padded copy of the whole input, and its
page faults, cost about a third of the layer's time).

Backward-data of a stride-1 convolution is itself a stride-1 convolution (of gy, with the filter
flipped), so it runs on the same kernel; other strides scatter. Backward-weight is a dot product
per filter tap, three taps sharing each load of gy.

Tasks: one block of output channels of one image (forward), one block of input channels of one
image (scatter), one (o, c) filter slice (backward-weight). No two tasks write the same element
and every sum runs in an order fixed by the compiled code, so results are bitwise repeatable.
"""
from __future__ import annotations

import numpy as np
from numba import get_num_threads, njit, prange, uint64

from .. import config
from ._loops import (ALIGN, FASTMATH, FASTMATH_SUM, all_finite, bias_or_zeros, channel_sum,
                     cropped, frozen, pad_plane, padded, placed, row_copy)
from ._simd import PIXEL_ROWS, PIXEL_VECTORS, pixel_grad_tile, pixel_tile
from ._threads import parallel_jit


# --- row updates: the inner loops -----------------------------------------------------------
# acc0[m] += sum_k u[k] * src[col + k*d + m*step] (and acc1 with v) for every m of acc0. The
# step is a compile-time constant when it is 1 or 2, so LLVM loads whole vectors (and shuffles
# for 2) instead of gathering; the three tap offsets are computed before the loop for the same
# reason (written inside it, LLVM gathered).


@njit(inline="always")
def _three_taps(acc0, acc1, u, v, src, col, d, step):
    c1 = col + d
    c2 = c1 + d
    for m in range(uint64(acc0.size)):
        x0 = src[col + m * step]
        x1 = src[c1 + m * step]
        x2 = src[c2 + m * step]
        acc0[m] += u[0] * x0 + u[1] * x1 + u[2] * x2
        acc1[m] += v[0] * x0 + v[1] * x1 + v[2] * x2


@njit(inline="always")
def _one_tap(acc0, acc1, u, v, src, col, step):
    for m in range(uint64(acc0.size)):
        x0 = src[col + m * step]
        acc0[m] += u * x0
        acc1[m] += v * x0


@njit(inline="always")
def _kernel_row(acc0, acc1, w, o, p, c, a, src, col, dw, step):
    """acc0 += kernel row a of filter (o, c) applied along src; acc1 likewise with filter p."""
    kw_ = w.shape[3]
    e = 0
    while e + 3 <= kw_:
        u = (w[o, c, a, e], w[o, c, a, e + 1], w[o, c, a, e + 2])
        v = (w[p, c, a, e], w[p, c, a, e + 1], w[p, c, a, e + 2])
        at = uint64(col + e * dw)
        if step == 1:
            _three_taps(acc0, acc1, u, v, src, at, uint64(dw), uint64(1))
        elif step == 2:
            _three_taps(acc0, acc1, u, v, src, at, uint64(dw), uint64(2))
        else:
            _three_taps(acc0, acc1, u, v, src, at, uint64(dw), uint64(step))
        e += 3
    while e < kw_:
        at = uint64(col + e * dw)
        if step == 1:
            _one_tap(acc0, acc1, w[o, c, a, e], w[p, c, a, e], src, at, uint64(1))
        elif step == 2:
            _one_tap(acc0, acc1, w[o, c, a, e], w[p, c, a, e], src, at, uint64(2))
        else:
            _one_tap(acc0, acc1, w[o, c, a, e], w[p, c, a, e], src, at, uint64(step))
        e += 1


@parallel_jit(fastmath=FASTMATH, cache=True)
def _forward(x, w, b, y, top, left, hq, row, grid, step, dh, dw, groups, block, chunk):
    # x (N, C, H, W), w (O, Cg, KH, KW), b (O,) -> y (N, O, Ho, Wo). Each task first pads its
    # group's input planes into the flat (Hq, R) grid xq (in cache, as depthwise does); output
    # (i, j) is grid position m = i*grid + j and reads xq[c, step*m + a*dh*R + e*dw].
    n_ = x.shape[0]
    o_, cg_, kh_, _ = w.shape
    ho_, wo_ = y.shape[2], y.shape[3]
    og_ = o_ // groups
    blocks = (og_ + block - 1) // block
    rows = max(1, chunk // grid)  # output rows per chunk of accumulators
    kw_ = w.shape[3]
    taps = kh_ * kw_
    at = np.empty(taps, dtype=np.int64)  # the pixel tiles' tap offsets in a plane
    for t in range(taps):
        at[t] = t // kw_ * dh * row + t % kw_ * dw
    width = PIXEL_VECTORS * (16 if x.itemsize == 4 else 8)  # grid positions per tile
    plane = hq * row
    for task in prange(n_ * groups * blocks):
        n = task // (groups * blocks)
        g = task // blocks % groups
        o0 = g * og_ + task % blocks * block
        o1 = min(o0 + block, (g + 1) * og_)
        # stride 1: whole tiles of PIXEL_ROWS channels on registers (_simd.pixel_tile), which
        # read up to a tile past the chunk's last output: the planes' and accumulators' slack
        tiled = o0 + (o1 - o0) // PIXEL_ROWS * PIXEL_ROWS if step == 1 else o0
        flat = np.empty(cg_ * plane + width, dtype=x.dtype)
        flat[cg_ * plane:] = 0
        xq = flat[:cg_ * plane].reshape((cg_, plane))
        for c in range(cg_):
            pad_plane(xq[c].reshape((hq, row)), x[n, g * cg_ + c], top, left)
        wt = np.empty((tiled - o0) * cg_ * taps, dtype=w.dtype)  # tiles' filters, interleaved
        for t0 in range(o0, tiled, PIXEL_ROWS):
            for c in range(cg_):
                for t in range(taps):
                    for r in range(PIXEL_ROWS):
                        wt[((t0 - o0) * cg_ + c * PIXEL_ROWS) * taps + t * PIXEL_ROWS + r] = \
                            w[t0 + r, c, t // kw_, t % kw_]
        # one accumulator row per output channel, plus a spare when the block is odd: its
        # partner in the 2 x 3 tile reuses the block's last filter and is thrown away
        acc = np.zeros((o1 - o0 + 1, rows * grid + width), dtype=y.dtype)
        acc_flat = acc.reshape(acc.size)
        for i0 in range(0, ho_, rows):
            i1 = min(i0 + rows, ho_)
            size = (i1 - i0 - 1) * grid + wo_  # grid positions up to the chunk's last output
            for o in range(o0, o1):
                acc[o - o0, :size] = b[o]  # bias fused: the accumulators start from it
            for t0 in range(o0, tiled, PIXEL_ROWS):
                filters = wt[(t0 - o0) * cg_ * taps:(t0 - o0 + PIXEL_ROWS) * cg_ * taps]
                for m0 in range(0, size, width):
                    pixel_tile(acc_flat, (t0 - o0) * acc.shape[1] + m0, acc.shape[1], flat,
                               i0 * grid + m0, plane, cg_, at, filters)
            for c in range(cg_):
                src = xq[c]
                for a in range(kh_):
                    col = i0 * grid * step + a * dh * row
                    for o in range(tiled, o1, 2):
                        p = min(o + 1, o1 - 1)
                        _kernel_row(acc[o - o0, :size], acc[o + 1 - o0, :size], w, o, p, c, a,
                                    src, col, dw, step)
            for o in range(o0, o1):  # the grid's columns j < Wo are the outputs
                for i in range(i0, i1):
                    row_copy(y[n, o, i], acc[o - o0], (i - i0) * grid, 1)


# Weight gradient: dL/dw[o, c, a, e] = sum_{n, m} gq[n, o, m] * xq[n, g*Cg + c, s*m + a*dh*R + e*dw]
# with gq the output gradient laid on the same grid as the forward's outputs and zero in its
# columns j >= Wo (they must not contribute). Those columns read inputs that the tap never meets
# in the convolution, which is harmless (0 * x) unless x holds Inf or NaN: 0 * Inf is NaN, and
# gw would turn NaN where PyTorch's stays finite. So when x is not all finite (`exact`), the dot
# products run row by row over the Wo real outputs only (slower for narrow planes, the same
# sums otherwise). One task per (o, c); the three taps of a kernel row share each load of gq.
# These are long dot products, compiled with FASTMATH_SUM so that LLVM keeps partial sums in
# vector lanes (the order is fixed by the compiled code).
@njit(inline="always")
def _three_dots(g, src, col, d, step, zero):
    c1 = col + d
    c2 = c1 + d
    t0 = t1 = t2 = zero
    for m in range(uint64(g.size)):
        gv = g[m]
        t0 += gv * src[col + m * step]
        t1 += gv * src[c1 + m * step]
        t2 += gv * src[c2 + m * step]
    return t0, t1, t2


@njit(inline="always")
def _dot(g, src, col, step, zero):
    t = zero
    for m in range(uint64(g.size)):
        t += g[m] * src[col + m * step]
    return t


@parallel_jit(cache=True)
def _backward_weight_tiles(xf, gf, gw, plane, gplane, row, dh, dw, groups, x_channels, n_,
                           length):
    # gw[o, c, t] for whole blocks of PIXEL_ROWS output channels per group at column stride 1,
    # on pixel grad tiles: xf (N*C*plane + slack) the inputs on their grid, gf (N*O*gplane +
    # slack) grad_y on the output grid, zero past Wo and past each plane's Ho*grid positions
    # (so the tile's last vector adds nothing); one task per (group, block, input channel),
    # image by image, each image's tiles of three taps in turn (its grad_y rows stay in L1:
    # ResNeXt's weight gradient 0.96x against a task per three taps), summing over the images
    # in order, then over the lanes
    o_, cg_, kh_, kw_ = gw.shape
    og_ = o_ // groups
    blocks = og_ // PIXEL_ROWS
    taps = kh_ * kw_
    triples = (taps + PIXEL_VECTORS - 1) // PIXEL_VECTORS
    lanes = 16 if xf.itemsize == 4 else 8
    count = (length + lanes - 1) // lanes
    size = PIXEL_ROWS * PIXEL_VECTORS * lanes  # one tile's sums
    for task in prange(groups * blocks * cg_):
        g = task // (blocks * cg_)
        o0 = g * og_ + task // cg_ % blocks * PIXEL_ROWS
        c = task % cg_
        at = np.empty(triples * PIXEL_VECTORS, dtype=np.int64)
        for j in range(triples * PIXEL_VECTORS):
            t = min(j, taps - 1)  # past the last tap: a repeat, thrown away
            at[j] = t // kw_ * dh * row + t % kw_ * dw
        acc = np.zeros(triples * size, dtype=xf.dtype)
        for n in range(n_):  # each image's grad_y rows stay in L1 across the triples
            for s in range(triples):
                pixel_grad_tile(acc[s * size:(s + 1) * size], gf, (n * o_ + o0) * gplane,
                                gplane, xf, (n * x_channels + g * cg_ + c) * plane,
                                at[s * PIXEL_VECTORS:(s + 1) * PIXEL_VECTORS], count)
        for s in range(triples):
            t0 = s * PIXEL_VECTORS
            for r in range(PIXEL_ROWS):
                for j in range(min(PIXEL_VECTORS, taps - t0)):
                    k = s * size + (r * PIXEL_VECTORS + j) * lanes
                    gw[o0 + r, c, (t0 + j) // kw_, (t0 + j) % kw_] = acc[k:k + lanes].sum()


@parallel_jit(fastmath=FASTMATH_SUM, cache=True)
def _backward_weight(xq, gq, gw, row, grid, step, dh, dw, groups, ho_, wo_, exact, zero,
                     tiled):
    # xq (N, C, Hp*R), gq (N, O, Ho*grid) -> gw (O, Cg, KH, KW). Sums in the dtype of zero, the
    # arrays' own: float64 sums would halve the vector width and convert every product.
    n_ = xq.shape[0]
    o_, cg_, kh_, kw_ = gw.shape
    og_ = o_ // groups
    # one dot product over the grid up to its last output, or (exact) one per output row
    pieces, length = (ho_, wo_) if exact else (1, (ho_ - 1) * grid + wo_)
    for task in prange(o_ * cg_):
        o = task // cg_
        c = task % cg_
        ci = o // og_ * cg_ + c
        if o % og_ < tiled:  # computed on pixel grad tiles
            continue
        for a in range(kh_):
            e = 0
            while e < kw_:
                three = e + 3 <= kw_
                s0 = s1 = s2 = zero
                for n in range(n_):
                    src = xq[n, ci]
                    for i in range(pieces):
                        g = gq[n, o, i * grid:i * grid + length]
                        at = uint64(a * dh * row + e * dw + i * grid * step)
                        if three and step == 1:
                            t = _three_dots(g, src, at, uint64(dw), uint64(1), zero)
                        elif three and step == 2:
                            t = _three_dots(g, src, at, uint64(dw), uint64(2), zero)
                        elif three:
                            t = _three_dots(g, src, at, uint64(dw), uint64(step), zero)
                        elif step == 1:
                            t = (_dot(g, src, at, uint64(1), zero), zero, zero)
                        elif step == 2:
                            t = (_dot(g, src, at, uint64(2), zero), zero, zero)
                        else:
                            t = (_dot(g, src, at, uint64(step), zero), zero, zero)
                        s0 += t[0]
                        s1 += t[1]
                        s2 += t[2]
                gw[o, c, a, e] = s0
                if three:
                    gw[o, c, a, e + 1] = s1
                    gw[o, c, a, e + 2] = s2
                    e += 3
                else:
                    e += 1


# Input gradient, general stride: y is linear in xp, and xp[n, g*Cg + c, r, q] meets
# w[o, c, a, e] in every y[n, o, i, j] with r = i*sh + a*dh and q = j*sw + e*dw. So each task
# (one image, a block of input channels) walks the forward loop nest and scatters
# gy[n, o, i, j] * w[o, c, a, e] back onto the padded input it came from; the padding is
# cropped away at the end. (Stride 1 takes the faster road in backward_data below.)
@parallel_jit(fastmath=FASTMATH, cache=True)
def _backward_data_scatter(gy, w, gxp, sh, sw, dh, dw, groups, block):
    # gy (N, O, Ho, Wo), w (O, Cg, KH, KW) -> gxp (N, C, Hp, Wp), zero on entry
    n_, c_, _, _ = gxp.shape
    o_, cg_, kh_, kw_ = w.shape
    ho_, wo_ = gy.shape[2], gy.shape[3]
    og_ = o_ // groups
    blocks = (cg_ + block - 1) // block
    shu, swu, dhu, dwu = uint64(sh), uint64(sw), uint64(dh), uint64(dw)
    for task in prange(n_ * groups * blocks):
        n = task // (groups * blocks)
        g = task // blocks % groups
        c0 = task % blocks * block
        c1 = min(c0 + block, cg_)
        for o in range(g * og_, (g + 1) * og_):
            for a in range(kh_):
                for e in range(kw_):
                    q0 = uint64(e) * dwu
                    for i in range(ho_):
                        r = uint64(i) * shu + uint64(a) * dhu
                        for c in range(c0, c1):
                            wv = w[o, c, a, e]
                            ci = g * cg_ + c
                            for j in range(wo_):
                                gxp[n, ci, r, uint64(j) * swu + q0] += wv * gy[n, o, i, j]


def _grid_size(size, rows, cols, step):
    """(Hq, R): the plane's height after adding rows = (top, bottom), and its width after adding
    cols = (left, right), rounded up to a multiple of ``step``. Negative counts crop."""
    hq = size[0] + rows[0] + rows[1]
    return hq, -(-(size[1] + cols[0] + cols[1]) // step) * step


def _adjoint_padding(p):
    """Backward-data of a stride-1 convolution is a convolution of gy zero-padded by these
    (rows, cols): dh*(kh-1) - top above, and below as many as make the result H rows high (the
    same as dh*(kh-1) - bottom unless y_shape holds fewer rows than fit, as a transposed
    convolution's output_padding allows); likewise for columns."""
    pads = []
    for (lo, _), size, out, d, k in zip(p.padding, p.x_shape[2:], p.y_shape[2:], p.dilation,
                                        p.kernel):
        pads.append((d * (k - 1) - lo, size + lo - out))
    return tuple(pads)


def _run_forward(x, w, b, y, rows, cols, p):
    """_forward with x placed on its grid with rows = (top, bottom), cols = (left, right)."""
    sh, sw = p.stride
    hq, row = _grid_size(x.shape[2:], rows, cols, sw)
    _forward(x, w, b, y, rows[0], cols[0], hq, row, sh * row // sw, sw, *p.dilation, p.groups,
             config.DIRECT_OUT_CHANNELS_PER_TASK, config.DIRECT_CHUNK)
    return y


def forward(x, w, b, p):
    """y = conv(x, w) + b; x (N, C, H, W), w (O, C/G, kh, kw), b (O,) or None -> (N, O, Ho, Wo)."""
    y = np.empty(p.y_shape, dtype=x.dtype)
    return _run_forward(x, w, bias_or_zeros(b, p, x.dtype), y, *p.padding, p)


def _flipped(w, groups):
    """The filter of the adjoint: wt[g*Cg + c, o, a, e] = w[g*Og + o, c, kh-1-a, kw-1-e]."""
    o, cg, kh, kw = w.shape
    wt = w.reshape(groups, o // groups, cg, kh, kw).transpose(0, 2, 1, 3, 4)[..., ::-1, ::-1]
    return frozen(np.ascontiguousarray(wt).reshape(groups * cg, o // groups, kh, kw))


def backward_data(gy, w, p):
    """dL/dx; gy (N, O, Ho, Wo), w (O, C/G, kh, kw) -> (N, C, H, W).

    Stride 1: x[.., r, q] meets w[o, c, a, e] in gy[.., r + top - a*dh, q + left - e*dw], so
    dL/dx is the stride-1 convolution of gy, zero-padded by _adjoint_padding, with the filter
    flipped in space and its two channel axes exchanged within each group: the forward kernel
    does it. Other strides scatter (_backward_data_scatter), and so does stride 1 when some
    weight is Inf or NaN: the adjoint's zero padding would meet it (0 * Inf = NaN) at tap/pixel
    pairs through which no output reads, where the scatter, like PyTorch, forms no product."""
    if p.stride == (1, 1) and all_finite(w):
        gx = np.empty(p.x_shape, dtype=gy.dtype)
        no_bias = frozen(np.zeros(p.x_shape[1], gy.dtype))
        return _run_forward(gy, _flipped(w, p.groups), no_bias, gx, *_adjoint_padding(p), p)
    gxp = np.zeros(p.x_shape[:2] + p.padded_size, dtype=gy.dtype)
    _backward_data_scatter(gy, w, gxp, *p.stride, *p.dilation, p.groups,
                           config.DIRECT_OUT_CHANNELS_PER_TASK)
    return cropped(gxp, p.padding, p.x_shape[2:])


def backward_weight(x, gy, p):
    """dL/dw; x (N, C, H, W), gy (N, O, Ho, Wo) -> (O, C/G, kh, kw).

    At column stride 1, for whole blocks of PIXEL_ROWS output channels per group and an
    all-finite x, on pixel grad tiles (_backward_weight_tiles), the rest in _backward_weight.
    The tiles read whole vectors: gy's planes on the grid are then padded with zeros to whole
    vectors, and both buffers get a slack past their end; the plain kernel reads the same
    buffers (views of them), so each is made once."""
    (top, bottom), (left, _) = p.padding
    n, c, h, w = x.shape
    hq, row = _grid_size((h, w), *p.padding, p.stride[1])
    o, ho, wo = gy.shape[1:]
    grid = p.stride[0] * row // p.stride[1]
    exact = not all_finite(x)
    tiled = (o // p.groups // PIXEL_ROWS * PIXEL_ROWS
             if p.stride[1] == 1 and not exact and n else 0)
    lanes = 16 if x.itemsize == 4 else 8
    gplane = -(-ho * grid // lanes) * lanes if tiled else ho * grid
    # gy on the forward's grid, zero past Wo (and past Ho*grid)
    gbuf = placed(gy, gplane, grid, 0, 0, lanes if tiled else 0)
    gq = gbuf[:n * o * gplane].reshape(n, o, gplane)
    plane = hq * row
    if tiled:
        xbuf = placed(x, plane, row, top, left, gplane + lanes)
        xq = xbuf[:n * c * plane].reshape(n, c, plane)
    else:
        xq = padded(x, ((top, bottom), (left, row - left - w))).reshape(n, c, plane)
    gw = np.empty(p.w_shape, dtype=x.dtype)
    if tiled:
        _backward_weight_tiles(frozen(xbuf), frozen(gbuf), gw, plane, gplane, row, *p.dilation,
                               p.groups, c, n, (ho - 1) * grid + wo)
    _backward_weight(xq, frozen(gq), gw, row, grid, p.stride[1], *p.dilation,
                     p.groups, ho, wo, exact, gw.dtype.type(0), tiled)
    return gw


def backward_bias(gy, p):
    """dL/db = sum of gy over batch and space; gy (N, K, ...) -> (K,)."""
    return channel_sum(gy)


def workspace_bytes(op, p, itemsize):
    """Upper bound of the extra memory of one call of ``op``, in bytes: the most that any of
    its kernel calls (p.kernel_calls) needs at once."""
    return max((_kernel_workspace(k, p) for k in p.kernel_calls(op)), default=0) * itemsize


def _kernel_workspace(kernel, p):
    """Elements. Kernels that run _forward: per thread, one task's padded input planes and its
    accumulators (plus the flipped filter in backward-data). Backward-weight: x on its grid
    unless that is a view of x, and gy on the output grid. The scatter: the padded gradient."""
    n, c, h, w = p.x_shape
    o, ho, wo = p.y_shape[1:]
    sh, sw = p.stride
    if kernel == "backward_data" and p.stride != (1, 1):
        return n * c * p.padded_size[0] * p.padded_size[1]
    if kernel == "backward_weight":
        hq, row = _grid_size((h, w), *p.padding, sw)
        view = (hq, row, p.padding[0][0], p.padding[1][0]) == (h, w, 0, 0)
        grid = sh * row // sw
        tiled = sw == 1 and o // p.groups >= PIXEL_ROWS
        if not tiled:
            # gy's grid cut at an ALIGN boundary (at most that many floats more)
            return (0 if view else n * c * hq * row) + n * o * ho * grid + ALIGN // 4
        gplane = -(-ho * grid // 16) * 16  # gy's planes padded to whole vectors
        triples = -(-p.kernel[0] * p.kernel[1] // PIXEL_VECTORS)
        per_task = triples * (PIXEL_ROWS * PIXEL_VECTORS * 16 + 2 * PIXEL_VECTORS)  # sums, taps
        return (n * c * hq * row + gplane + 16 + n * o * gplane + 16  # x and gy, with slack
                + 2 * ALIGN // 4  # each cut at an ALIGN boundary (at most that many floats)
                + get_num_threads() * per_task)
    if kernel == "forward":
        size, pads, step, ins, outs, flipped = (h, w), p.padding, sw, c, o, 0
    else:
        size, pads, step, ins, outs = (ho, wo), _adjoint_padding(p), 1, o, c
        flipped = p.w_shape[0] * p.w_shape[1] * p.kernel[0] * p.kernel[1]
    hq, row = _grid_size(size, *pads, step)
    grid = (sh if kernel == "forward" else 1) * row // step
    block = min(config.DIRECT_OUT_CHANNELS_PER_TASK, outs // p.groups) + 1
    width = PIXEL_VECTORS * 16  # the pixel tiles' slack, at most a tile (16 lanes or fewer)
    taps = p.kernel[0] * p.kernel[1]
    tiles = (block - 1) // PIXEL_ROWS * PIXEL_ROWS * ins // p.groups * taps  # their filters
    per_task = (ins // p.groups * hq * row + width + tiles
                + block * (max(1, config.DIRECT_CHUNK // grid) * grid + width))
    return get_num_threads() * per_task + flipped + 2 * taps  # the taps' offsets (int64)

"""Direct convolution: the textbook loop nest, compiled by Numba.

Shapes (G groups, Cg = C/G input and Og = O/G output channels per group)::

    xp  (N, C, Hp, Wp)   x zero-padded once, so every window is in bounds
    w   (O, Cg, kh, kw)
    y   (N, O, Ho, Wo)   y[n, o, i, j] = b[o] + sum_{c, a, e} w[o, c, a, e] * xp[n, g*Cg + c, i*sh + a*dh, j*sw + e*dw]

Each parallel task owns a block of output channels of one image (forward), a block of input
channels of one image (backward-data) or one (o, c) filter slice (backward-weight), so no two
tasks write the same element and every sum runs in a fixed order: results are bitwise
repeatable. The innermost loop always runs along an output row (j), contiguous in y, so LLVM
vectorises it; a block of output channels reuses each input row while it is in L1.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange, uint64

from .. import config
from ._loops import FASTMATH, bias_or_zeros, channel_sum, cropped, padded


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def _forward(xp, w, b, y, sh, sw, dh, dw, groups, block):
    # xp (N, C, Hp, Wp), w (O, Cg, KH, KW), b (O,) -> y (N, O, Ho, Wo)
    n_, _, _, _ = xp.shape
    o_, cg_, kh_, kw_ = w.shape
    ho_, wo_ = y.shape[2], y.shape[3]
    og_ = o_ // groups
    blocks = (og_ + block - 1) // block
    shu, swu, dhu, dwu = uint64(sh), uint64(sw), uint64(dh), uint64(dw)
    for task in prange(n_ * groups * blocks):
        n = task // (groups * blocks)
        g = task // blocks % groups
        o0 = g * og_ + task % blocks * block
        o1 = min(o0 + block, (g + 1) * og_)
        for o in range(o0, o1):
            y[n, o] = b[o]  # bias fused: the accumulators start from it
        for c in range(cg_):
            ci = g * cg_ + c
            for a in range(kh_):
                for e in range(kw_):
                    q0 = uint64(e) * dwu
                    for i in range(ho_):
                        r = uint64(i) * shu + uint64(a) * dhu
                        for o in range(o0, o1):
                            wv = w[o, c, a, e]
                            for j in range(wo_):
                                y[n, o, i, j] += wv * xp[n, ci, r, uint64(j) * swu + q0]


# Input gradient: y is linear in xp, and xp[n, g*Cg + c, r, q] meets w[o, c, a, e] in every
# y[n, o, i, j] with r = i*sh + a*dh and q = j*sw + e*dw. So each task (one image, a block of
# input channels) walks the forward loop nest and scatters gy[n, o, i, j] * w[o, c, a, e] back
# onto the padded input it came from; the padding is cropped away at the end.
@njit(parallel=True, fastmath=FASTMATH, cache=True)
def _backward_data(gy, w, gxp, sh, sw, dh, dw, groups, block):
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


# Weight gradient: dL/dw[o, c, a, e] = sum_{n, i, j} gy[n, o, i, j] * xp[n, g*Cg + c, i*sh + a*dh, j*sw + e*dw].
# One task per (o, c). The sum over j is kept in a vector of partial sums (one per j, so the
# loop vectorises without reassociating anything) that is reduced in order at the end.
@njit(parallel=True, fastmath=FASTMATH, cache=True)
def _backward_weight(xp, gy, gw, sh, sw, dh, dw, groups):
    # xp (N, C, Hp, Wp), gy (N, O, Ho, Wo) -> gw (O, Cg, KH, KW)
    n_ = xp.shape[0]
    o_, cg_, kh_, kw_ = gw.shape
    ho_, wo_ = gy.shape[2], gy.shape[3]
    og_ = o_ // groups
    shu, swu, dhu, dwu = uint64(sh), uint64(sw), uint64(dh), uint64(dw)
    for task in prange(o_ * cg_):
        o = task // cg_
        c = task % cg_
        ci = o // og_ * cg_ + c
        partial = np.empty(wo_, dtype=gy.dtype)
        for a in range(kh_):
            for e in range(kw_):
                q0 = uint64(e) * dwu
                partial[:] = 0
                for n in range(n_):
                    for i in range(ho_):
                        r = uint64(i) * shu + uint64(a) * dhu
                        for j in range(wo_):
                            partial[j] += gy[n, o, i, j] * xp[n, ci, r, uint64(j) * swu + q0]
                total = 0.0
                for j in range(wo_):
                    total += partial[j]
                gw[o, c, a, e] = total


def forward(x, w, b, p):
    """y = conv(x, w) + b; x (N, C, H, W), w (O, C/G, kh, kw), b (O,) or None -> (N, O, Ho, Wo)."""
    y = np.empty(p.y_shape, dtype=x.dtype)
    bias = bias_or_zeros(b, p, x.dtype)
    _forward(padded(x, p.padding), w, bias, y, *p.stride, *p.dilation, p.groups,
             config.DIRECT_OUT_CHANNELS_PER_TASK)
    return y


def backward_data(gy, w, p):
    """dL/dx; gy (N, O, Ho, Wo), w (O, C/G, kh, kw) -> (N, C, H, W)."""
    gxp = np.zeros(p.x_shape[:2] + p.padded_size, dtype=gy.dtype)
    _backward_data(gy, w, gxp, *p.stride, *p.dilation, p.groups,
                   config.DIRECT_OUT_CHANNELS_PER_TASK)
    return cropped(gxp, p.padding, p.x_shape[2:])


def backward_weight(x, gy, p):
    """dL/dw; x (N, C, H, W), gy (N, O, Ho, Wo) -> (O, C/G, kh, kw)."""
    gw = np.empty(p.w_shape, dtype=x.dtype)
    _backward_weight(padded(x, p.padding), gy, gw, *p.stride, *p.dilation, p.groups)
    return gw


def backward_bias(gy, p):
    """dL/db = sum of gy over batch and space; gy (N, K, ...) -> (K,)."""
    return channel_sum(gy)

"""Depthwise convolution: groups == in_channels, one small filter per channel.

Each input channel c feeds M = O/C output channels (the channel multiplier), o = c*M + m::

    xp  (N, C, Hp, Wp)   zero-padded once
    w   (O, 1, kh, kw)
    y   (N, O, Ho, Wo)   y[n, o, i, j] = b[o] + sum_{a, e} w[o, 0, a, e] * xp[n, o // M, i*sh + a*dh, j*sw + e*dw]

There is no channel reduction, so a depthwise layer does little arithmetic per byte: it is a
stencil, bound by memory traffic, and GEMM-based algorithms waste their effort on it. These
kernels make one pass per output row: every tap of the filter is applied to that row while it
sits in L1. Tasks own whole planes, so results are bitwise repeatable.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange, uint64

from ._loops import FASTMATH, bias_or_zeros, channel_sum, cropped, padded


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def _forward(xp, w, b, y, sh, sw, dh, dw):
    # xp (N, C, Hp, Wp), w (O, 1, KH, KW), b (O,) -> y (N, O, Ho, Wo)
    n_, c_ = xp.shape[0], xp.shape[1]
    o_, _, kh_, kw_ = w.shape
    ho_, wo_ = y.shape[2], y.shape[3]
    m_ = o_ // c_
    shu, swu, dhu, dwu = uint64(sh), uint64(sw), uint64(dh), uint64(dw)
    for task in prange(n_ * o_):
        n = task // o_
        o = task % o_
        c = o // m_
        for i in range(ho_):
            for j in range(wo_):
                y[n, o, i, j] = b[o]
            for a in range(kh_):
                r = uint64(i) * shu + uint64(a) * dhu
                for e in range(kw_):
                    wv = w[o, 0, a, e]
                    q0 = uint64(e) * dwu
                    for j in range(wo_):
                        y[n, o, i, j] += wv * xp[n, c, r, uint64(j) * swu + q0]


# Input gradient: xp[n, c, r, q] feeds y[n, c*M + m, i, j] with weight w[c*M + m, 0, a, e] where
# r = i*sh + a*dh and q = j*sw + e*dw; each task (one input plane) scatters those products back.
@njit(parallel=True, fastmath=FASTMATH, cache=True)
def _backward_data(gy, w, gxp, sh, sw, dh, dw):
    # gy (N, O, Ho, Wo), w (O, 1, KH, KW) -> gxp (N, C, Hp, Wp), zero on entry
    n_, c_ = gxp.shape[0], gxp.shape[1]
    o_, _, kh_, kw_ = w.shape
    ho_, wo_ = gy.shape[2], gy.shape[3]
    m_ = o_ // c_
    shu, swu, dhu, dwu = uint64(sh), uint64(sw), uint64(dh), uint64(dw)
    for task in prange(n_ * c_):
        n = task // c_
        c = task % c_
        for o in range(c * m_, (c + 1) * m_):
            for i in range(ho_):
                for a in range(kh_):
                    r = uint64(i) * shu + uint64(a) * dhu
                    for e in range(kw_):
                        wv = w[o, 0, a, e]
                        q0 = uint64(e) * dwu
                        for j in range(wo_):
                            gxp[n, c, r, uint64(j) * swu + q0] += wv * gy[n, o, i, j]


# Weight gradient: dL/dw[o, 0, a, e] = sum_{n, i, j} gy[n, o, i, j] * xp[n, o // M, i*sh + a*dh, j*sw + e*dw].
# One task per output channel; each output row is read once and met with all kh*kw taps, whose
# partial sums are kept per j (vectorisable, no reassociation) and reduced in order at the end.
@njit(parallel=True, fastmath=FASTMATH, cache=True)
def _backward_weight(xp, gy, gw, sh, sw, dh, dw):
    # xp (N, C, Hp, Wp), gy (N, O, Ho, Wo) -> gw (O, 1, KH, KW)
    n_, c_ = xp.shape[0], xp.shape[1]
    o_, _, kh_, kw_ = gw.shape
    ho_, wo_ = gy.shape[2], gy.shape[3]
    m_ = o_ // c_
    shu, swu, dhu, dwu = uint64(sh), uint64(sw), uint64(dh), uint64(dw)
    for o in prange(o_):
        c = o // m_
        partial = np.zeros((kh_ * kw_, wo_), dtype=gy.dtype)
        for n in range(n_):
            for i in range(ho_):
                for a in range(kh_):
                    r = uint64(i) * shu + uint64(a) * dhu
                    for e in range(kw_):
                        q0 = uint64(e) * dwu
                        tap = a * kw_ + e
                        for j in range(wo_):
                            partial[tap, j] += gy[n, o, i, j] * xp[n, c, r, uint64(j) * swu + q0]
        for a in range(kh_):
            for e in range(kw_):
                total = 0.0
                for j in range(wo_):
                    total += partial[a * kw_ + e, j]
                gw[o, 0, a, e] = total


def forward(x, w, b, p):
    """y = depthwise_conv(x, w) + b; x (N, C, H, W), w (O, 1, kh, kw) -> (N, O, Ho, Wo)."""
    y = np.empty(p.y_shape, dtype=x.dtype)
    bias = bias_or_zeros(b, p, x.dtype)
    _forward(padded(x, p.padding), w, bias, y, *p.stride, *p.dilation)
    return y


def backward_data(gy, w, p):
    """dL/dx; gy (N, O, Ho, Wo), w (O, 1, kh, kw) -> (N, C, H, W)."""
    gxp = np.zeros(p.x_shape[:2] + p.padded_size, dtype=gy.dtype)
    _backward_data(gy, w, gxp, *p.stride, *p.dilation)
    return cropped(gxp, p.padding, p.x_shape[2:])


def backward_weight(x, gy, p):
    """dL/dw; x (N, C, H, W), gy (N, O, Ho, Wo) -> (O, 1, kh, kw)."""
    gw = np.empty(p.w_shape, dtype=x.dtype)
    _backward_weight(padded(x, p.padding), gy, gw, *p.stride, *p.dilation)
    return gw


def backward_bias(gy, p):
    """dL/db = sum of gy over batch and space; gy (N, K, ...) -> (K,)."""
    return channel_sum(gy)


def why_not(op, p):
    """Depthwise serves convolutions with one input channel per group (groups == in_channels)."""
    if p.w_shape[1] == 1:
        return None
    return (f"depthwise needs one input channel per group (groups == in_channels), got "
            f"groups={p.groups} with {p.x_shape[1]} channels")

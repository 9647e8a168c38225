"""Depthwise convolution: groups == in_channels, one small filter per channel.

Each input channel c feeds M = O/C output channels (the channel multiplier), o = c*M + m::

    xp  (Hp, Wp)         one plane of x, zero-padded
    w   (O, 1, kh, kw)
    y   (N, O, Ho, Wo)   y[n, o, i, j] = b[o] + sum_{a, e} w[o, 0, a, e]
                                                        * xp[i*sh + a*dh, j*sw + e*dw]

There is no channel reduction, so a depthwise layer does little arithmetic per byte: it is a
stencil, bound by memory traffic, and GEMM-based algorithms waste their effort on it. So:

- each task pads its own plane into a small buffer (the plane it is about to read, so the copy
  stays in cache: no padded copy of the whole input goes through memory, and no tap needs a
  bounds test);
- each output row is computed with every tap of the filter while the row sits in L1, a whole
  row of windows at a time in vector lanes, with stride 1 or 2 as a compile-time constant
  (fastconv.cpu._loops);
- MobileNet's 3x3 applies all nine taps in one pass over the row, so each output is loaded and
  stored once rather than nine times.

Tasks own whole planes (forward, input gradient) or output channels (weight gradient), and every
sum runs in a fixed order, so results are bitwise repeatable.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange, uint64

from ._loops import (
    FASTMATH,
    FASTMATH_SUM,
    bias_or_zeros,
    channel_sum,
    pad_plane,
    row_axpy,
    row_products,
    row_scatter,
)


@njit(inline="always")
def _rows3(acc, x0, x1, x2, step, k):
    # acc[j] += the nine taps of the 3x3 filter k on the window whose top-left input is
    # column j*step of row x0 (x1, x2 the rows below)
    w0, w1, w2, w3, w4, w5 = k[0, 0], k[0, 1], k[0, 2], k[1, 0], k[1, 1], k[1, 2]
    w6, w7, w8 = k[2, 0], k[2, 1], k[2, 2]
    for j in range(uint64(acc.size)):
        q = j * step
        s = acc[j] + w0 * x0[q]
        s += w1 * x0[q + uint64(1)]
        s += w2 * x0[q + uint64(2)]
        s += w3 * x1[q]
        s += w4 * x1[q + uint64(1)]
        s += w5 * x1[q + uint64(2)]
        s += w6 * x2[q]
        s += w7 * x2[q + uint64(1)]
        s += w8 * x2[q + uint64(2)]
        acc[j] = s


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def _forward(x, w, b, y, sh, sw, ph, pw, dh, dw, hp, wp):
    # x (N, C, H, W), w (O, 1, KH, KW), b (O,) -> y (N, O, Ho, Wo)
    n_, c_ = x.shape[0], x.shape[1]
    o_, _, kh_, kw_ = w.shape
    ho_ = y.shape[2]
    m_ = o_ // c_
    for task in prange(n_ * o_):
        n, o = task // o_, task % o_
        xp = np.empty((hp, wp), dtype=x.dtype)
        pad_plane(xp, x[n, o // m_], ph, pw)
        k, yc = w[o, 0], y[n, o]
        for i in range(ho_):
            yr = yc[i]
            yr[:] = b[o]  # bias first, then the taps in order
            if kh_ == 3 and kw_ == 3 and dh == 1 and dw == 1:
                x0, x1, x2 = xp[i * sh], xp[i * sh + 1], xp[i * sh + 2]
                if sw == 1:
                    _rows3(yr, x0, x1, x2, uint64(1), k)
                elif sw == 2:
                    _rows3(yr, x0, x1, x2, uint64(2), k)
                else:
                    _rows3(yr, x0, x1, x2, uint64(sw), k)
            else:
                for a in range(kh_):
                    xr = xp[i * sh + a * dh]
                    for e in range(kw_):
                        row_axpy(yr, k[a, e], xr, e * dw, sw)


# Input gradient: xp[r, q] feeds y[n, c*M + m, i, j] with weight w[c*M + m, 0, a, e] where
# r = i*sh + a*dh and q = j*sw + e*dw; each task (one input plane) scatters those products back
# into its padded buffer, walking the forward's loops, and keeps the interior.
@njit(parallel=True, fastmath=FASTMATH, cache=True)
def _backward_data(gy, w, gx, sh, sw, ph, pw, dh, dw, hp, wp):
    # gy (N, O, Ho, Wo), w (O, 1, KH, KW) -> gx (N, C, H, W)
    n_, c_, h_, w_ = gx.shape
    o_, _, kh_, kw_ = w.shape
    ho_ = gy.shape[2]
    m_ = o_ // c_
    for task in prange(n_ * c_):
        n, c = task // c_, task % c_
        gxp = np.zeros((hp, wp), dtype=gx.dtype)
        for o in range(c * m_, (c + 1) * m_):
            k = w[o, 0]
            for i in range(ho_):
                gr = gy[n, o, i]
                for a in range(kh_):
                    xr = gxp[i * sh + a * dh]
                    for e in range(kw_):
                        row_scatter(xr, e * dw, sw, k[a, e], gr)
        for r in range(h_):
            gx[n, c, r] = gxp[ph + r, pw:pw + w_]


# Weight gradient: dL/dw[o, 0, a, e] = sum_{n, i, j} gy[n, o, i, j] * xp[i*sh + a*dh, j*sw + e*dw].
# One task per output channel; each output row is read once and met with all kh*kw taps, whose
# partial sums are kept per column j (vectorisable, no reassociation) and reduced in a fixed
# order at the end.
@njit(parallel=True, fastmath=FASTMATH_SUM, cache=True)
def _backward_weight(x, gy, gw, sh, sw, ph, pw, dh, dw, hp, wp):
    # x (N, C, H, W), gy (N, O, Ho, Wo) -> gw (O, 1, KH, KW)
    n_, c_ = x.shape[0], x.shape[1]
    o_, _, kh_, kw_ = gw.shape
    ho_, wo_ = gy.shape[2], gy.shape[3]
    m_ = o_ // c_
    for o in prange(o_):
        partial = np.zeros((kh_ * kw_, wo_), dtype=gy.dtype)
        xp = np.empty((hp, wp), dtype=x.dtype)
        for n in range(n_):
            pad_plane(xp, x[n, o // m_], ph, pw)
            for i in range(ho_):
                gr = gy[n, o, i]
                for a in range(kh_):
                    xr = xp[i * sh + a * dh]
                    for e in range(kw_):
                        row_products(partial[a * kw_ + e], gr, xr, e * dw, sw)
        for tap in range(kh_ * kw_):
            total = 0.0
            for j in range(wo_):
                total += partial[tap, j]
            gw[o, 0, tap // kw_, tap % kw_] = total


def _geometry(p):
    """sh, sw, ph, pw, dh, dw, Hp, Wp: (ph, pw) the top-left padding, (Hp, Wp) the padded plane.
    The plane is cut to the rows and columns the windows reach (a stride may leave some of the
    last unused, and the bottom/right padding may be smaller than the top/left)."""
    (sh, sw), ((top, _), (left, _)), (dh, dw) = p.stride, p.padding, p.dilation
    (ho, wo), (kh, kw) = p.y_shape[2:], p.kernel
    hp = max((ho - 1) * sh + (kh - 1) * dh + 1, top + p.x_shape[2])
    wp = max((wo - 1) * sw + (kw - 1) * dw + 1, left + p.x_shape[3])
    return sh, sw, top, left, dh, dw, hp, wp


def forward(x, w, b, p):
    """y = depthwise_conv(x, w) + b; x (N, C, H, W), w (O, 1, kh, kw) -> (N, O, Ho, Wo)."""
    y = np.empty(p.y_shape, dtype=x.dtype)
    _forward(x, w, bias_or_zeros(b, p, x.dtype), y, *_geometry(p))
    return y


def backward_data(gy, w, p):
    """dL/dx; gy (N, O, Ho, Wo), w (O, 1, kh, kw) -> (N, C, H, W)."""
    gx = np.empty(p.x_shape, dtype=gy.dtype)
    _backward_data(gy, w, gx, *_geometry(p))
    return gx


def backward_weight(x, gy, p):
    """dL/dw; x (N, C, H, W), gy (N, O, Ho, Wo) -> (O, 1, kh, kw)."""
    gw = np.empty(p.w_shape, dtype=x.dtype)
    _backward_weight(x, gy, gw, *_geometry(p))
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


def workspace_bytes(op, p, itemsize):
    """One padded plane per running task (and in backward-weight a (kh*kw, Wo) partial-sum
    buffer): at most one per thread at a time."""
    import numba

    *_, hp, wp = _geometry(p)
    per_task = hp * wp + (p.kernel[0] * p.kernel[1] * p.y_shape[3] if op.endswith("_backward")
                          else 0)
    return numba.get_num_threads() * per_task * itemsize

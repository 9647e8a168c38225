"""Pooling kernels: max (with indices), average and adaptive average, forward and backward.

Shapes: x, gx (N, C, H, W); y, indices, gy (N, C, Ho, Wo). Window (i, j) covers rows
``i*sh - ph + a*dh`` (a < kh) and columns ``j*sw - pw + e*dw`` (e < kw); the parts outside the
input are padding, skipped rather than read: for each window only the taps whose row (column)
lies inside the input are visited (:func:`_taps`). One parallel task per (n, c) plane, so every
result is computed by one thread in a fixed order and is bitwise repeatable.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(inline="always")
def _taps(start, step, size, count):
    """Taps t in [lo, hi) of a window starting at ``start`` with ``step`` between taps whose
    position start + t*step lies inside [0, size)."""
    lo = 0 if start >= 0 else (step - 1 - start) // step
    hi = min(count, (size - 1 - start) // step + 1)
    return lo, max(lo, hi)


@njit(parallel=True, cache=True)
def _max_forward(x, y, indices, want_indices, kh, kw, sh, sw, ph, pw, dh, dw):
    # x (N, C, H, W) -> y (N, C, Ho, Wo), indices (same, int64; written if want_indices)
    n_, c_, h_, w_ = x.shape
    ho_, wo_ = y.shape[2], y.shape[3]
    for plane in prange(n_ * c_):
        n, c = plane // c_, plane % c_
        for i in range(ho_):
            r0 = i * sh - ph
            a_lo, a_hi = _taps(r0, dh, h_, kh)
            for j in range(wo_):
                q0 = j * sw - pw
                e_lo, e_hi = _taps(q0, dw, w_, kw)
                # PyTorch's scan: start from -inf at the first element inside the input, take
                # a later element if it is larger or NaN (ties stay with the first; the last
                # NaN wins).
                best = -np.inf
                where = (r0 + a_lo * dh) * w_ + q0 + e_lo * dw
                for a in range(a_lo, a_hi):
                    r = r0 + a * dh
                    for e in range(e_lo, e_hi):
                        v = x[n, c, r, q0 + e * dw]
                        if v > best or np.isnan(v):
                            best = v
                            where = r * w_ + q0 + e * dw
                y[n, c, i, j] = best
                if want_indices:
                    indices[n, c, i, j] = where


# Max-pool gradient: each output selected one input (its index), so the output gradient goes
# there, and inputs selected by several overlapping windows sum their shares.
@njit(parallel=True, cache=True)
def _max_backward(gy, indices, gx):
    # gy, indices (N, C, Ho, Wo) -> gx (N, C, H, W), zero on entry
    n_, c_, ho_, wo_ = gy.shape
    w_ = gx.shape[3]
    for plane in prange(n_ * c_):
        n, c = plane // c_, plane % c_
        for i in range(ho_):
            for j in range(wo_):
                q = indices[n, c, i, j]
                gx[n, c, q // w_, q % w_] += gy[n, c, i, j]


@njit(inline="always")
def _divisor(r0, q0, h_, w_, kh, kw, ph, pw, count_include_pad, divisor_override):
    """PyTorch's divisor of the window starting at (r0, q0): its size clipped to the padded
    input, or to the input itself without count_include_pad, or the override."""
    if divisor_override != 0:
        return divisor_override
    r1, q1 = min(r0 + kh, h_ + ph), min(q0 + kw, w_ + pw)
    if count_include_pad:
        return (r1 - r0) * (q1 - q0)
    return (min(r1, h_) - max(r0, 0)) * (min(q1, w_) - max(q0, 0))


@njit(parallel=True, cache=True)
def _avg_forward(x, y, kh, kw, sh, sw, ph, pw, count_include_pad, divisor_override):
    n_, c_, h_, w_ = x.shape
    ho_, wo_ = y.shape[2], y.shape[3]
    for plane in prange(n_ * c_):
        n, c = plane // c_, plane % c_
        for i in range(ho_):
            r0 = i * sh - ph
            a_lo, a_hi = _taps(r0, 1, h_, kh)
            for j in range(wo_):
                q0 = j * sw - pw
                e_lo, e_hi = _taps(q0, 1, w_, kw)
                total = 0.0
                for r in range(r0 + a_lo, r0 + a_hi):
                    for q in range(q0 + e_lo, q0 + e_hi):
                        total += x[n, c, r, q]
                y[n, c, i, j] = total / _divisor(r0, q0, h_, w_, kh, kw, ph, pw,
                                                 count_include_pad, divisor_override)


# Average-pool gradient: y[i, j] = (sum of its window) / divisor, so every input element of the
# window receives gy[i, j] / divisor.
@njit(parallel=True, cache=True)
def _avg_backward(gy, gx, kh, kw, sh, sw, ph, pw, count_include_pad, divisor_override):
    n_, c_, h_, w_ = gx.shape
    ho_, wo_ = gy.shape[2], gy.shape[3]
    for plane in prange(n_ * c_):
        n, c = plane // c_, plane % c_
        for i in range(ho_):
            r0 = i * sh - ph
            a_lo, a_hi = _taps(r0, 1, h_, kh)
            for j in range(wo_):
                q0 = j * sw - pw
                e_lo, e_hi = _taps(q0, 1, w_, kw)
                share = gy[n, c, i, j] / _divisor(r0, q0, h_, w_, kh, kw, ph, pw,
                                                  count_include_pad, divisor_override)
                for r in range(r0 + a_lo, r0 + a_hi):
                    for q in range(q0 + e_lo, q0 + e_hi):
                        gx[n, c, r, q] += share


@njit(inline="always")
def _adaptive_window(i, size, out):
    """Rows floor(i*size/out) .. ceil((i+1)*size/out) - 1 of adaptive window i."""
    return i * size // out, -(-(i + 1) * size // out)


@njit(parallel=True, cache=True)
def _adaptive_forward(x, y):
    n_, c_, h_, w_ = x.shape
    ho_, wo_ = y.shape[2], y.shape[3]
    for plane in prange(n_ * c_):
        n, c = plane // c_, plane % c_
        for i in range(ho_):
            r0, r1 = _adaptive_window(i, h_, ho_)
            for j in range(wo_):
                q0, q1 = _adaptive_window(j, w_, wo_)
                total = 0.0
                for r in range(r0, r1):
                    for q in range(q0, q1):
                        total += x[n, c, r, q]
                y[n, c, i, j] = total / ((r1 - r0) * (q1 - q0))


# Adaptive-average gradient: each input element of window (i, j) receives gy[i, j] / its size.
@njit(parallel=True, cache=True)
def _adaptive_backward(gy, gx):
    n_, c_, h_, w_ = gx.shape
    ho_, wo_ = gy.shape[2], gy.shape[3]
    for plane in prange(n_ * c_):
        n, c = plane // c_, plane % c_
        for i in range(ho_):
            r0, r1 = _adaptive_window(i, h_, ho_)
            for j in range(wo_):
                q0, q1 = _adaptive_window(j, w_, wo_)
                share = gy[n, c, i, j] / ((r1 - r0) * (q1 - q0))
                for r in range(r0, r1):
                    for q in range(q0, q1):
                        gx[n, c, r, q] += share


def _window(p):
    return (*p.kernel, *p.stride, *p.padding)


def max_pool_forward(x, p):
    """(y, indices): the max of each window and its flat index into H*W (None unless
    p.return_indices)."""
    y = np.empty(p.y_shape, dtype=x.dtype)
    indices = np.empty(p.y_shape if p.return_indices else (0, 0, 0, 0), dtype=np.int64)
    _max_forward(x, y, indices, p.return_indices, *_window(p), *p.dilation)
    return y, (indices if p.return_indices else None)


def max_pool_backward(gy, indices, p):
    """dL/dx from gy and the flat indices of max_pool_forward -> (N, C, H, W)."""
    gx = np.zeros(p.x_shape, dtype=gy.dtype)
    _max_backward(gy, indices, gx)
    return gx


def _avg_options(p):
    return p.count_include_pad, 0 if p.divisor_override is None else p.divisor_override


def avg_pool_forward(x, p):
    y = np.empty(p.y_shape, dtype=x.dtype)
    _avg_forward(x, y, *_window(p), *_avg_options(p))
    return y


def avg_pool_backward(gy, p):
    gx = np.zeros(p.x_shape, dtype=gy.dtype)
    _avg_backward(gy, gx, *_window(p), *_avg_options(p))
    return gx


def adaptive_avg_pool_forward(x, p):
    y = np.empty(p.y_shape, dtype=x.dtype)
    _adaptive_forward(x, y)
    return y


def adaptive_avg_pool_backward(gy, p):
    gx = np.zeros(p.x_shape, dtype=gy.dtype)
    _adaptive_backward(gy, gx)
    return gx

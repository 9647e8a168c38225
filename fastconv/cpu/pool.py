"""Pooling kernels: max (with indices), average and adaptive average, forward and backward.

Shapes: x, gx (N, C, H, W); y, indices, gy (N, C, Ho, Wo). Window (i, j) covers rows
``i*sh - ph + a*dh`` (a < kh) and columns ``j*sw - pw + e*dw`` (e < kw); the parts outside the
input are padding, skipped rather than read: for each window only the taps whose row (column)
lies inside the input are visited (:func:`fastconv.cpu._loops.taps`). One parallel task per
(n, c) plane, so every result is computed by one thread in a fixed order and is bitwise
repeatable.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from numba import njit, prange, uint64

from .._validate import check_index_range
from ._loops import FASTMATH_SUM, border, inside, row_axpy, row_scatter, taps
from ._threads import parallel_jit


# Every kernel below works one output row at a time and splits it in three: the border columns
# on the left and right, whose windows hang over the edge, take the general per-window path
# (only the taps inside the input); the interior columns, usually nearly all of them, are done
# tap by tap for the whole row at once: for a fixed tap (a, e) the inputs x[r, j*sw + e*dw]
# of neighbouring windows are evenly spaced, so LLVM runs the windows side by side in vector
# lanes. Each window still meets its taps in the same order (a, then e) on both paths. In the
# average-pool forward, rows of fewer than SHORT_ROW outputs go window by window: there the row
# path's setup (a few short loops per tap) costs more than it saves (2x2 windows on 8x8 planes,
# one thread: 3.2 against 3.9 us a call), and the windows wholly inside skip the clipping
# arithmetic in loops of their own (_short_rows_average: 1.15 against 1.48 us on a
# (2, 4, 8, 8) input). The other kernels keep the row path on short rows
# too, where it measured faster (max forward 2.7 against 3.9 us, average backward 2.7 against
# 5.5).
SHORT_ROW = 8


@njit(inline="always")
def interior(start, step, span, size, count):
    """The interior columns [lo, hi) of a row of ``count`` windows (see _loops.inside), none
    for a short row."""
    if count < SHORT_ROW:
        return 0, 0
    return inside(start, step, span, size, count)


@njit(inline="always")
def _max_window(x, n, c, r0, a_lo, a_hi, q0, e_lo, e_hi, dh, dw):
    """(max, flat index) of one window, scanned as PyTorch does: from -inf at the first tap
    inside the input, a later element is taken if it is larger or NaN (ties stay with the
    first; the last NaN wins)."""
    w_ = x.shape[3]
    best = -np.inf
    where = (r0 + a_lo * dh) * w_ + q0 + e_lo * dw
    for a in range(a_lo, a_hi):
        r = r0 + a * dh
        for e in range(e_lo, e_hi):
            v = x[n, c, r, q0 + e * dw]
            if v > best or np.isnan(v):
                best = v
                where = r * w_ + q0 + e * dw
    return best, where


@njit(inline="always")
def _max_tap(xr, col, step, yr, ir, flat, want_indices):
    """One tap of a row of interior windows: window jj reads xr[col + jj*step] and keeps it
    if it is larger than its maximum so far, or NaN (PyTorch's rule, as in _max_window)."""
    for jj in range(uint64(yr.size)):
        v = xr[col + jj * step]
        if v > yr[jj] or np.isnan(v):
            yr[jj] = v
            if want_indices:
                ir[jj] = flat + jj * step


@parallel_jit(cache=True)
def _max_forward(x, y, indices, want_indices, kh, kw, sh, sw, ph, pw, dh, dw):
    # x (N, C, H, W) -> y (N, C, Ho, Wo), indices (same, int64; written if want_indices)
    n_, c_, h_, w_ = x.shape
    ho_, wo_ = y.shape[2], y.shape[3]
    j_lo, j_hi = inside(-pw, sw, (kw - 1) * dw + 1, w_, wo_)
    swu = uint64(sw)
    for plane in prange(n_ * c_):
        n, c = plane // c_, plane % c_
        for i in range(ho_):
            r0 = i * sh - ph
            a_lo, a_hi = taps(r0, dh, h_, kh)
            for k in range(wo_ - (j_hi - j_lo)):
                j = border(k, j_lo, j_hi)
                q0 = j * sw - pw
                e_lo, e_hi = taps(q0, dw, w_, kw)
                best, where = _max_window(x, n, c, r0, a_lo, a_hi, q0, e_lo, e_hi, dh, dw)
                y[n, c, i, j] = best
                if want_indices:
                    indices[n, c, i, j] = where
            if j_hi == j_lo:  # no interior (windows wider than the input)
                continue
            # Interior: y's row holds the running maxima, indices' row their positions
            # (row views and unsigned offsets keep the inner loops free of index arithmetic
            # that would stop LLVM vectorising them, see fastconv.cpu._loops).
            m = uint64(j_hi - j_lo)
            yr = y[n, c, i, j_lo:j_hi]
            ir = indices[n, c, i, j_lo:j_hi] if want_indices else indices[0, 0, 0, :0]
            first = uint64((r0 + a_lo * dh) * w_ + j_lo * sw - pw)
            for jj in range(m):
                yr[jj] = -np.inf
            if want_indices:
                for jj in range(m):
                    ir[jj] = first + jj * swu
            for a in range(a_lo, a_hi):
                r = r0 + a * dh
                xr = x[n, c, r]
                for e in range(kw):
                    col = uint64(j_lo * sw - pw + e * dw)  # >= 0 in the interior
                    flat = uint64(r * w_) + col
                    # the common strides as constants: LLVM then loads the taps of neighbouring
                    # windows with shuffles rather than gathers (3x faster for stride 2)
                    if sw == 1:
                        _max_tap(xr, col, uint64(1), yr, ir, flat, want_indices)
                    elif sw == 2:
                        _max_tap(xr, col, uint64(2), yr, ir, flat, want_indices)
                    else:
                        _max_tap(xr, col, swu, yr, ir, flat, want_indices)


# Max-pool gradient: each output selected one input (its index), so the output gradient goes
# there, and inputs selected by several overlapping windows sum their shares. Each task clears
# its own plane first (cheaper than a zeroed allocation: the plane is then in cache). The
# indices are data, checked here to lie in the plane, in a first pass over the plane's indices
# that leaves them in L1 for the scatter: a plane with one outside is not written at all, and
# is flagged. (NumPy's min and max over the indices, before the kernel, were two serial passes
# over 13 MB: 0.4 ms of the 1.8 of ResNet's 3x3/s2 max pool at 112x112.)
@parallel_jit(cache=True)
def _max_backward(gy, indices, gx, outside):
    # gy, indices (P*per,) -> gx (P*size,), uninitialised on entry, for P = outside.size planes;
    # outside (P,): set where the plane's indices are not all in [0, size) (its gx is then left
    # as it was). Flat unsigned offsets: 3-d indexing and per-plane views cost 40-80 ns a
    # plane, more than LeNet's 2x2 pools do with a plane (25 -> 14 us over 512 planes)
    planes = outside.size
    per, size = uint64(gy.size // planes), uint64(gx.size // planes)
    for plane in prange(planes):
        s0, d0 = uint64(plane) * per, uint64(plane) * size
        count = 0
        for k in range(s0, s0 + per):
            count += uint64(indices[k]) >= size  # a negative one wraps past
        outside[plane] = count > 0
        if count > 0:
            continue
        for q in range(d0, d0 + size):
            gx[q] = 0
        for k in range(s0, s0 + per):
            gx[d0 + uint64(indices[k])] += gy[k]


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


@njit(inline="always")
def _window_sum(x, n, c, r0, q0, kh, kw):
    """The sum of the kh x kw window of plane x[n, c] whose first input is (r0, q0), a window
    that lies wholly inside the plane, taps in the order of the general path (a, then e)."""
    acc = 0.0
    for a in range(kh):
        for e in range(kw):
            acc += x[n, c, uint64(r0 + a), uint64(q0 + e)]
    return acc


@njit(inline="always")
def _clipped_average(x, n, c, r0, a_lo, a_hi, q0, kh, kw, ph, pw, count_include_pad,
                     divisor_override):
    """The average of the window whose first tap is (r0, q0) over its taps inside the input
    (rows a_lo .. a_hi of it), and PyTorch's divisor."""
    h_, w_ = x.shape[2], x.shape[3]
    e_lo, e_hi = taps(q0, 1, w_, kw)
    acc = 0.0
    for r in range(r0 + a_lo, r0 + a_hi):
        for q in range(q0 + e_lo, q0 + e_hi):
            acc += x[n, c, r, q]
    return acc / _divisor(r0, q0, h_, w_, kh, kw, ph, pw, count_include_pad, divisor_override)


@njit(inline="always")
def _short_rows_average(x, y, n, c, kh, kw, sh, sw, ph, pw, f_lo, f_hi, whole,
                        count_include_pad, divisor_override):
    """Plane (n, c) of an average pool whose rows are short: window by window. Rows whose
    windows fit vertically have their whole windows, [f_lo, f_hi), summed without clipping,
    2x2 ones (the common tiny case) with the sizes as compile-time constants, in loops of their
    own (no branch per window)."""
    h_ = x.shape[2]
    ho_, wo_ = y.shape[2], y.shape[3]
    for i in range(ho_):
        r0 = i * sh - ph
        a_lo, a_hi = taps(r0, 1, h_, kh)
        lo, hi = (f_lo, f_hi) if a_lo == 0 and a_hi == kh else (wo_, wo_)
        for j in range(lo):
            y[n, c, i, j] = _clipped_average(x, n, c, r0, a_lo, a_hi, j * sw - pw, kh, kw, ph,
                                             pw, count_include_pad, divisor_override)
        if kh == 2 and kw == 2:
            for j in range(lo, hi):
                y[n, c, i, j] = _window_sum(x, n, c, r0, j * sw - pw, 2, 2) / whole
        else:
            for j in range(lo, hi):
                y[n, c, i, j] = _window_sum(x, n, c, r0, j * sw - pw, kh, kw) / whole
        for j in range(hi, wo_):
            y[n, c, i, j] = _clipped_average(x, n, c, r0, a_lo, a_hi, j * sw - pw, kh, kw, ph,
                                             pw, count_include_pad, divisor_override)


@parallel_jit(fastmath=FASTMATH_SUM, cache=True)
def _avg_forward(x, y, kh, kw, sh, sw, ph, pw, count_include_pad, divisor_override):
    n_, c_, h_, w_ = x.shape
    ho_, wo_ = y.shape[2], y.shape[3]
    j_lo, j_hi = interior(-pw, sw, kw, w_, wo_)
    # Short rows (no interior, j_hi == j_lo: every row of the call alike) go window by window
    # (_short_rows_average): 8x8 planes, one thread, 1.9 against 0.95 us a call.
    f_lo, f_hi = inside(-pw, sw, kw, w_, wo_)
    whole = divisor_override if divisor_override != 0 else kh * kw  # their divisor
    for plane in prange(n_ * c_):
        n, c = plane // c_, plane % c_
        if j_hi == j_lo:
            _short_rows_average(x, y, n, c, kh, kw, sh, sw, ph, pw, f_lo, f_hi, whole,
                                count_include_pad, divisor_override)
            continue
        # the interior windows' float64 sums, a fresh array per plane: LLVM then knows it
        # aliases nothing and vectorises the row sums (rows of one shared per-thread buffer ran
        # the zoo's 8x256x56x56 layer 2.5x slower)
        total = np.empty(j_hi - j_lo)
        for i in range(ho_):
            r0 = i * sh - ph
            a_lo, a_hi = taps(r0, 1, h_, kh)
            for k in range(wo_ - (j_hi - j_lo)):
                j = border(k, j_lo, j_hi)
                y[n, c, i, j] = _clipped_average(x, n, c, r0, a_lo, a_hi, j * sw - pw, kh, kw,
                                                 ph, pw, count_include_pad, divisor_override)
            total[:] = 0.0
            for r in range(r0 + a_lo, r0 + a_hi):
                for e in range(kw):
                    row_axpy(total, 1.0, x[n, c, r], j_lo * sw - pw + e, sw)
            # interior windows differ only in their column, which clips nothing: one divisor
            d = _divisor(r0, j_lo * sw - pw, h_, w_, kh, kw, ph, pw, count_include_pad,
                         divisor_override)
            for jj in range(total.size):
                y[n, c, i, uint64(j_lo) + uint64(jj)] = total[jj] / d


# Average-pool gradient: y[i, j] = (sum of its window) / divisor, so every input element of the
# window receives gy[i, j] / divisor.
@parallel_jit(cache=True)
def _avg_backward(gy, gx, kh, kw, sh, sw, ph, pw, count_include_pad, divisor_override):
    # gy (N, C, Ho, Wo) -> gx (N, C, H, W), uninitialised on entry
    n_, c_, h_, w_ = gx.shape
    ho_, wo_ = gy.shape[2], gy.shape[3]
    j_lo, j_hi = inside(-pw, sw, kw, w_, wo_)
    for plane in prange(n_ * c_):
        n, c = plane // c_, plane % c_
        gx[n, c] = 0
        share = np.empty(j_hi - j_lo)  # a fresh array per plane, as in _avg_forward
        for i in range(ho_):
            r0 = i * sh - ph
            a_lo, a_hi = taps(r0, 1, h_, kh)
            for k in range(wo_ - (j_hi - j_lo)):
                j = border(k, j_lo, j_hi)
                q0 = j * sw - pw
                e_lo, e_hi = taps(q0, 1, w_, kw)
                s = gy[n, c, i, j] / _divisor(r0, q0, h_, w_, kh, kw, ph, pw,
                                              count_include_pad, divisor_override)
                for r in range(r0 + a_lo, r0 + a_hi):
                    for q in range(q0 + e_lo, q0 + e_hi):
                        gx[n, c, r, q] += s
            if j_hi == j_lo:
                continue
            d = _divisor(r0, j_lo * sw - pw, h_, w_, kh, kw, ph, pw, count_include_pad,
                         divisor_override)
            for jj in range(share.size):
                share[jj] = gy[n, c, i, uint64(j_lo) + uint64(jj)] / d
            for r in range(r0 + a_lo, r0 + a_hi):
                for e in range(kw):
                    row_scatter(gx[n, c, r], j_lo * sw - pw + e, sw, 1.0, share)


@lru_cache(maxsize=64)
def _adaptive_windows(size, out):
    """(out, 2) int64: the bounds [start, stop) of each adaptive window along one dimension,
    floor(i*size/out) .. ceil((i+1)*size/out). Computed once per shape (and kept: building it
    took 12 us, a tenth of a 7x7 global pool), so the kernels do no integer division per plane
    (which cost more than the sums on ResNet's 7x7 global pool). Read-only, as it is shared."""
    i = np.arange(out)
    bounds = np.stack([i * size // out, -(-(i + 1) * size // out)], axis=1)
    bounds.flags.writeable = False
    return bounds


@parallel_jit(fastmath=FASTMATH_SUM, cache=True)
def _adaptive_forward(x, w_, rows, cols, y):
    # x (P, H*W) planes with rows w_ wide, rows (Ho, 2), cols (Wo, 2) -> y (P, Ho, Wo)
    ho_, wo_ = y.shape[1], y.shape[2]
    for plane in prange(x.shape[0]):
        for i in range(ho_):
            r0, r1 = rows[i, 0], rows[i, 1]
            for j in range(wo_):
                q0, q1 = cols[j, 0], cols[j, 1]
                total = 0.0
                if q0 == 0 and q1 == w_:  # whole rows (global pooling): one contiguous run
                    run = x[plane, r0 * w_:r1 * w_]  # a view: indices from 0, so LLVM vectorises
                    for k in range(run.size):
                        total += run[k]
                else:
                    for r in range(r0, r1):
                        for q in range(q0, q1):
                            total += x[plane, r * w_ + q]
                y[plane, i, j] = total / ((r1 - r0) * (q1 - q0))


# Global pooling sums a plane in runs of _GLOBAL_RUN values in the input's dtype (float32 adds
# vectorise 16 to a register; converting every float32 value to float64 first made the sum
# 3x slower: ResNet's 8x2048 planes of 7x7, 87 -> 29 us) and adds the runs' sums in float64, so
# the float32 rounding grows with the run's length, not the plane's.
_GLOBAL_RUN = 1024


@parallel_jit(fastmath=FASTMATH_SUM, cache=True)
def _global_forward(x, y, zero):
    # x (P, H*W) -> y (P,): the mean of each plane, one contiguous sum per plane; zero is 0 in
    # x's dtype (the runs' accumulator). The general kernel above spent as long again on its
    # window bounds, view and divisor as on the sums.
    size = x.shape[1]
    for plane in prange(x.shape[0]):
        row = x[plane]
        # one run, without the loop below's view and bounds (ResNet's 7x7 planes: 28 us,
        # against 44 through that loop)
        if size <= _GLOBAL_RUN:
            part = zero
            for k in range(size):
                part += row[k]
            y[plane] = np.float64(part) / size
            continue
        total = 0.0
        for k0 in range(0, size, _GLOBAL_RUN):
            part = zero
            run = row[k0:min(k0 + _GLOBAL_RUN, size)]  # a view: LLVM vectorises from index 0
            for k in range(run.size):
                part += run[k]
            total += part
        y[plane] = total / size


# Adaptive-average gradient: each input element of window (i, j) receives gy[i, j] / its size.
@parallel_jit(cache=True)
def _adaptive_backward(gy, rows, cols, gx):
    # gy (P, Ho, Wo) -> gx (P, H, W), uninitialised on entry
    ho_, wo_ = gy.shape[1], gy.shape[2]
    h_, w_ = gx.shape[1], gx.shape[2]
    for plane in prange(gx.shape[0]):
        if ho_ == 1 and wo_ == 1:  # global pooling: one share for the whole plane, stored as
            share = gy[plane, 0, 0] / (h_ * w_)  # the sum below would (0 + share: no -0)
            for r in range(h_):
                for q in range(w_):
                    gx[plane, r, q] = 0.0 + share
            continue  # (zeroing then adding took 4x as long on 4x4 planes)
        gx[plane] = 0
        for i in range(ho_):
            r0, r1 = rows[i, 0], rows[i, 1]
            for j in range(wo_):
                q0, q1 = cols[j, 0], cols[j, 1]
                share = gy[plane, i, j] / ((r1 - r0) * (q1 - q0))
                for r in range(r0, r1):
                    for q in range(q0, q1):
                        gx[plane, r, q] += share


def max_pool_forward(x, p):
    """(y, indices): the max of each window and its flat index into H*W (None unless
    p.return_indices)."""
    y = np.empty(p.y_shape, dtype=x.dtype)
    indices = np.empty(p.y_shape if p.return_indices else (1, 1, 1, 0), dtype=np.int64)
    _max_forward(x, y, indices, p.return_indices, *p.window, *p.dilation)
    return y, (indices if p.return_indices else None)


# max_pool_backward checks that the indices lie in the plane (fastconv.pool skips its own check)
CHECKS_INDEX_RANGE = True


def workspace_bytes(op, p, itemsize):
    """Extra memory of one call: max-pool backward's flag per plane (whether its indices
    lie in it); nothing else."""
    return p.x_shape[0] * p.x_shape[1] if op == "max_pool2d_backward" else 0


def max_pool_backward(gy, indices, p):
    """dL/dx from gy and the flat indices of max_pool_forward -> (N, C, H, W). The indices'
    range is checked in the kernel's pass over them: one outside the plane raises
    _validate's ValueError (nothing written out of bounds, no input modified)."""
    n, c, h, w = p.x_shape
    gx = np.empty(p.x_shape, dtype=gy.dtype)
    if n * c == 0:
        return gx
    outside = np.empty(n * c, dtype=np.bool_)
    _max_backward(gy.reshape(-1), indices.reshape(-1), gx.reshape(-1), outside)
    if outside.any():
        check_index_range("max_pool2d_backward", indices, h * w)
    return gx


def avg_pool_forward(x, p):
    y = np.empty(p.y_shape, dtype=x.dtype)
    _avg_forward(x, y, *p.window, *p.averaging)
    return y


def avg_pool_backward(gy, p):
    gx = np.empty(p.x_shape, dtype=gy.dtype)
    _avg_backward(gy, gx, *p.window, *p.averaging)
    return gx


def _adaptive_options(p):
    (n, c, h, w), (ho, wo) = p.x_shape, p.y_shape[2:]
    return n * c, _adaptive_windows(h, ho), _adaptive_windows(w, wo)


def adaptive_avg_pool_forward(x, p):
    planes, rows, cols = _adaptive_options(p)
    y = np.empty(p.y_shape, dtype=x.dtype)
    if p.y_shape[2:] == (1, 1):  # global pooling
        _global_forward(x.reshape(planes, p.x_shape[2] * p.x_shape[3]), y.reshape(planes),
                        x.dtype.type(0))
        return y
    _adaptive_forward(x.reshape(planes, p.x_shape[2] * p.x_shape[3]), p.x_shape[3], rows, cols,
                      y.reshape(planes, *p.y_shape[2:]))
    return y


def adaptive_avg_pool_backward(gy, p):
    planes, rows, cols = _adaptive_options(p)
    gx = np.empty(p.x_shape, dtype=gy.dtype)
    _adaptive_backward(gy.reshape(planes, *p.y_shape[2:]), rows, cols,
                       gx.reshape(planes, *p.x_shape[2:]))
    return gx

"""Shared pieces of the Numba kernels.

A note on indices, which every kernel here follows: Numba makes ``a[i]`` with a signed ``i``
wrap negative values around (``i + len(a)``), and that per-element check stops LLVM from
vectorising an inner loop whose index it cannot prove non-negative (a 5-10x slowdown measured on
the convolution loops). Inner-loop indices are therefore built from ``uint64`` parts only
(mixing ``uint64`` with ``int64`` in Numba gives ``float64``), and the arrays they index are
padded so that every index is a sum of non-negative terms.
"""
from __future__ import annotations

from math import prod

import numpy as np
from numba import njit, prange, uint64

from .._calls import read_only
from ._threads import parallel_jit

FASTMATH = {"contract"}  # fused multiply-add only: no reassociation, NaN and Inf kept

# For the long sums (statistics, pooling windows, bias gradients) LLVM may also reassociate, so
# that it keeps 8-16 partial sums in the lanes of a vector register and adds them up at the end:
# without it every add waits for the previous one (4 cycles), which made batch-norm statistics
# 11x slower (6.3 ms against 0.56 ms on 8x64x112x112, measured). The order of the additions is
# still fixed by the compiled code, not by timing or threads, so results stay bitwise
# repeatable; NaN and Inf are kept (no "nnan"/"ninf").
FASTMATH_SUM = {"contract", "reassoc"}


# Vector loads and stores of 64 bytes (a 16-lane float32 vector, AVX-512) run at full speed
# only from 64-byte aligned addresses: one that straddles two cache lines costs two. NumPy
# aligns its arrays to 16 bytes and Numba's np.empty to 32, so the buffers that the register
# tiles load whole vectors from (packed filters, bands, channel-blocked chunks) are cut out of a
# slightly larger allocation at a 64-byte boundary. Measured: resnet50's 3x3 256->256 @14
# forward tiles 5.2 ms from an aligned packed filter, 5.9 from one at 16 bytes past.
ALIGN = 64


def aligned_empty(size, dtype):
    """np.empty(size, dtype), 1-d, starting at a multiple of ALIGN bytes."""
    dtype = np.dtype(dtype)
    raw = np.empty(size + ALIGN // dtype.itemsize, dtype=dtype)
    skip = (-raw.ctypes.data) % ALIGN // dtype.itemsize
    return raw[skip:skip + size]


def aligned_zeros(size, dtype):
    """np.zeros(size, dtype), 1-d, starting at a multiple of ALIGN bytes."""
    a = aligned_empty(size, dtype)
    a[:] = 0
    return a


@njit(inline="always")
def aligned_buffer(size, like):
    """aligned_empty inside a kernel: ``size`` uninitialised elements of like's dtype."""
    raw = np.empty(size + ALIGN // like.itemsize, dtype=like.dtype)
    skip = (-raw.ctypes.data) % ALIGN // like.itemsize
    return raw[skip:skip + size]


# frozen(a): a read-only view of a. The kernels take every input read-only (the front end's
# plans hand them over through the same function), and Numba compiles a kernel once per
# combination of argument types, a writeable and a read-only array being two types: an input
# the backend makes itself (a padded copy, zeros for a missing bias) goes through here, so that
# each kernel is compiled once per dtype, not once per mix.
frozen = read_only


def planes(a):
    """a (N, C, ...) as (N, C, L), L the product of the spatial sizes: a view of a contiguous a
    (the sizes explicit, so that an empty batch reshapes too)."""
    return a.reshape(a.shape[0], a.shape[1], prod(a.shape[2:]))


def padded(x, padding):
    """x (N, C, H, W) with zero padding ((top, bottom), (left, right)), read-only; x itself if
    none. A negative pad crops."""
    (top, bottom), (left, right) = padding
    if top == bottom == left == right == 0:
        return x
    n, c, h, w = x.shape
    xp = np.empty((n, c, h + top + bottom, w + left + right), dtype=x.dtype)
    _pad_planes(x, xp, top, left)
    return frozen(xp)


@parallel_jit(cache=True)
def _pad_planes(x, xp, top, left):
    # xp[n, c] = x[n, c] padded (pad_plane), plane by plane on every thread: one pass that
    # writes each element once (np.zeros and a slice copy made two serial passes, 1-4 ms for
    # the zoo's 7-14 MB inputs, as long as some of their layers' convolutions)
    for task in prange(x.shape[0] * x.shape[1]):
        n, c = task // x.shape[1], task % x.shape[1]
        pad_plane(xp[n, c], x[n, c], top, left)


def placed(x, plane, row, top, left, slack=0):
    """x (N, C, H, W) laid out plane by plane in a flat buffer of N*C planes of ``plane``
    elements and ``slack`` zeros after them: row i of x[n, c] at offset (i + top)*row + left of
    its plane, zeros everywhere else. One parallel pass that writes each plane while it is in
    cache (np.zeros and a slice assignment were two serial passes: 1.6 ms of the 2.9 of
    ResNeXt's 3x3 weight gradient). The tasks go channel by channel (each channel's planes of
    every image on one thread), as the weight gradient's tasks read them; the buffer starts on
    an ALIGN boundary. The caller keeps each row inside its plane."""
    n, c = x.shape[:2]
    buf = aligned_empty(n * c * plane + slack, x.dtype)
    _place_planes(x, buf, plane, row, top, left)
    buf[n * c * plane:] = 0
    return buf


@parallel_jit(cache=True)
def _place_planes(x, buf, plane, row, top, left):
    # buf[(n*C + c)*plane + (i + top)*row + left + j] = x[n, c, i, j], zero elsewhere in a plane
    n_, c_, h, w = x.shape
    for task in prange(n_ * c_):
        c, n = task // n_, task % n_
        dst = buf[(n * c_ + c) * plane:(n * c_ + c + 1) * plane]
        dst[:] = 0
        for i in range(h):
            start = (i + top) * row + left
            row_copy(dst[start:start + w], x[n, c, i], 0, 1)


def bias_or_zeros(b, p, dtype):
    """The bias, or (read-only) zeros when there is none: the kernels start their sums from it."""
    return frozen(np.zeros(p.y_shape[1], dtype)) if b is None else b


def cropped(xp, padding, size):
    """The (H, W) interior of a padded array, contiguous (xp itself when there is no padding)."""
    (top, _), (left, _) = padding
    return np.ascontiguousarray(xp[:, :, top:top + size[0], left:left + size[1]])


@njit(inline="always")
def pad_plane(buf, plane, top, left):
    """buf (Hq, R) = plane (H, W) placed with its top-left corner at (top, left) among zeros;
    the part falling outside buf (negative offsets, or too small a buf) is cropped. The
    per-task padding of the depthwise and direct kernels: the copy lands in cache."""
    h, w = plane.shape
    hq, r = buf.shape
    j0, j1 = max(0, -left), min(w, r - left)
    buf[:] = 0
    for i in range(max(0, -top), min(h, hq - top)):
        row_copy(buf[i + top, j0 + left:j1 + left], plane[i], j0, 1)


@parallel_jit(fastmath=FASTMATH_SUM, cache=True)
def _finite_rows(a, out, zero):
    # out[r] = whether row r of a (R, L) is all finite: x - x is 0 for finite x and NaN for
    # Inf and NaN, and a sum holding a NaN is NaN (FASTMATH_SUM keeps NaN: no "nnan")
    for r in prange(a.shape[0]):
        s = zero
        for i in range(a.shape[1]):
            s += a[r, i] - a[r, i]
        out[r] = s == zero


def all_finite(a):
    """Whether a (N, C, H, W) holds no Inf or NaN: one parallel pass over its planes, no
    temporary array the size of a."""
    if a.size == 0:
        return True
    rows = np.ascontiguousarray(a).reshape(a.shape[0] * a.shape[1], -1)
    out = np.empty(rows.shape[0], dtype=np.bool_)
    _finite_rows(rows, out, a.dtype.type(0))
    return bool(out.all())


@parallel_jit(fastmath=FASTMATH_SUM, cache=True)
def _channel_sum(a, out):
    # a (N, K, L) -> out (K,): per channel, a fixed-order float64 sum over batch and space
    n_, k_, l_ = a.shape
    for k in prange(k_):
        acc = 0.0
        for n in range(n_):
            for i in range(l_):
                acc += a[n, k, i]
        out[k] = acc


def channel_sum(a):
    """Sum of a (N, K, ...) over every axis but 1, in a's dtype (float64 accumulation): the
    bias gradient of every convolution."""
    out = np.empty(a.shape[1], dtype=a.dtype)
    _channel_sum(planes(a), out)
    return out


# Windows that hang over the edge of the input, in pooling (where padding is not a value to pad
# with: max ignores it, average may not count it). Rather than test every tap, the kernels split
# each output row: the border columns, whose windows reach outside, visit only their taps
# inside the input (taps); the interior columns [lo, hi) (inside), usually nearly all of them,
# need no test at all and are done tap by tap for the whole row at once.


@njit(inline="always")
def taps(start, step, size, count):
    """Taps t in [lo, hi) of a window of ``count`` taps starting at ``start`` with ``step``
    between taps whose position start + t*step lies inside [0, size); 0 <= lo <= hi <= count
    always (where none does, an empty range at or before count: callers index with lo)."""
    lo = 0 if start >= 0 else min(count, (step - 1 - start) // step)
    hi = min(count, (size - 1 - start) // step + 1)
    return lo, max(lo, hi)


@njit(inline="always")
def inside(start, step, span, size, count):
    """Outputs j in [lo, hi) whose whole window, positions start + j*step .. + span - 1, lies
    inside [0, size): the interior, where no tap needs a bounds check."""
    last = size - span - start  # the largest j*step that still fits
    if last < 0:
        return 0, 0
    lo = 0 if start >= 0 else min(count, (step - 1 - start) // step)
    return lo, max(lo, min(count, last // step + 1))


@njit(inline="always")
def border(k, lo, hi):
    """The k-th column outside the interior [lo, hi): 0 .. lo-1, then hi, hi+1, ..."""
    return k if k < lo else k + hi - lo


# Row helpers: one tap for a whole row of windows, or a copy. Neighbouring windows read
# evenly spaced inputs, src[col + j*step]; when step is 1 or 2 (nearly every layer) it is passed
# as a compile-time constant, and LLVM loads them with whole vectors and shuffles instead of
# gathers (3x faster for stride 2, measured on max pooling).


@njit(inline="always")
def _copy(dst, src, col, step):
    for j in range(uint64(dst.size)):
        dst[j] = src[col + j * step]


@njit(inline="always")
def row_copy(dst, src, col, step):
    """dst[j] = src[col + j*step] for every j of dst. A loop, not a slice assignment: Numba's
    slice assignment costs about 20 ns a call, 4.6x the loop's time for 56-element rows."""
    if step == 1:
        _copy(dst, src, uint64(col), uint64(1))
    elif step == 2:
        _copy(dst, src, uint64(col), uint64(2))
    else:
        _copy(dst, src, uint64(col), uint64(step))


@njit(inline="always")
def _place(dst, col, step, src):
    for j in range(uint64(src.size)):
        dst[col + j * step] = src[j]


@njit(inline="always")
def row_place(dst, col, step, src):
    """dst[col + j*step] = src[j] for every j of src: the inverse of row_copy."""
    if step == 1:
        _place(dst, uint64(col), uint64(1), src)
    elif step == 2:
        _place(dst, uint64(col), uint64(2), src)
    else:
        _place(dst, uint64(col), uint64(step), src)


@njit(inline="always")
def _axpy(acc, wv, src, col, step):
    for j in range(uint64(acc.size)):
        acc[j] += wv * src[col + j * step]


@njit(inline="always")
def row_axpy(acc, wv, src, col, step):
    """acc[j] += wv * src[col + j*step] for every j of acc."""
    if step == 1:
        _axpy(acc, wv, src, uint64(col), uint64(1))
    elif step == 2:
        _axpy(acc, wv, src, uint64(col), uint64(2))
    else:
        _axpy(acc, wv, src, uint64(col), uint64(step))


@njit(inline="always")
def _scatter(dst, col, step, wv, src):
    for j in range(uint64(src.size)):
        dst[col + j * step] += wv * src[j]


@njit(inline="always")
def row_scatter(dst, col, step, wv, src):
    """dst[col + j*step] += wv * src[j] for every j of src: the adjoint of row_axpy."""
    if step == 1:
        _scatter(dst, uint64(col), uint64(1), wv, src)
    elif step == 2:
        _scatter(dst, uint64(col), uint64(2), wv, src)
    else:
        _scatter(dst, uint64(col), uint64(step), wv, src)

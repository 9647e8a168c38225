"""Reference pooling: max, average and adaptive average over (N, C, H, W) inputs.

Shapes::

    x   (N, C, H, W)     y, indices, gy   (N, C, Ho, Wo)

Window ``(i, j)`` covers rows ``i*sh - ph + a*dh`` (a < kh) and columns ``j*sw - pw + e*dw``
(e < kw); elements outside the input are padding. Output size per dimension, as PyTorch:
``Ho = floor_or_ceil((H + 2*ph - dh*(kh - 1) - 1) / sh) + 1``, and with ``ceil_mode`` the last
window must start inside the input or the top/left padding (see ``fastconv.pool.output_size``).

Arithmetic is in float64; results come back in the input dtype.
"""
from __future__ import annotations

from math import prod

import numpy as np

from ._windows import crop, offset_slice, pad, windows


def _padding(p):
    """(low, high) padding that holds every window, ceil_mode's overhanging last one included."""
    pads = []
    for n, k, s, lo, d, out in zip(p.x_shape[2:], p.kernel, p.stride, p.padding, p.dilation,
                                   p.y_shape[2:]):
        reach = (out - 1) * s + d * (k - 1) + 1  # padded length the windows span
        pads.append((lo, max(lo, reach - n - lo)))
    return tuple(pads)


def _windows(a, p, value):
    return windows(pad(a, _padding(p), value, dtype=a.dtype), p.kernel, p.stride, p.dilation,
                   p.y_shape[2:])


def max_pool_forward(x, p):
    """Max over each window and the flat index (into H*W) of the element it came from.

    The index is that of the first maximal element in row-major window order, as PyTorch's CPU
    kernel scans; a window holding NaN yields NaN and (PyTorch's scan takes ``v > max or
    isnan(v)``) the index of its last NaN. Padding never wins: it is masked out, not -inf, so a
    window of -inf values still reports an element of the input.

    Returns ``(y, indices)``: (N, C, Ho, Wo) in x's dtype, and int64.
    """
    n, c, h, w = p.x_shape
    k = p.kernel[0] * p.kernel[1]
    win = _windows(x, p, 0.0).reshape(p.y_shape + (k,))
    # The same windows over a plane of flat indices tell where each element came from; -1 marks
    # padding.
    idx = _windows(np.arange(h * w, dtype=np.int64).reshape(1, 1, h, w), p, -1)
    idx = idx.reshape((1, 1) + p.y_shape[2:] + (k,))
    inside = idx >= 0
    top = np.where(inside, win, -np.inf).max(axis=-1, keepdims=True)
    pick = np.argmax(inside & (win == top), axis=-1)             # first maximal element
    nan = np.isnan(win) & inside
    last_nan = k - 1 - np.argmax(nan[..., ::-1], axis=-1)
    pick = np.where(nan.any(axis=-1), last_nan, pick)
    y = np.take_along_axis(win, pick[..., None], axis=-1)[..., 0]
    indices = np.take_along_axis(np.broadcast_to(idx, win.shape), pick[..., None], axis=-1)[..., 0]
    return y.astype(x.dtype), indices


# Max-pool gradient. y[n, c, i, j] = x[n, c, indices[n, c, i, j]], a selection, so each output
# gradient flows to the one input it selected, and inputs selected by several (overlapping)
# windows sum their contributions:  dL/dx[n, c, q] = sum_{i, j : indices[n, c, i, j] = q} gy[n, c, i, j].
def max_pool_backward(gy, indices, p):
    """dL/dx from gy and the flat indices of max_pool_forward -> (N, C, H, W)."""
    n, c, h, w = p.x_shape
    plane = np.arange(n * c, dtype=np.int64).reshape(n, c, 1, 1) * (h * w)
    gx = np.bincount((plane + indices).ravel(), weights=gy.astype(np.float64).ravel(),
                     minlength=n * c * h * w)
    return gx.reshape(p.x_shape).astype(gy.dtype)


def _divisor(p):
    """Divisor of each window, (Ho, Wo), as PyTorch's avg_pool2d computes it.

    A window spans [start, start + k) clipped to the padded extent [-pad, size + pad); with
    count_include_pad that length is the count, otherwise only the part inside [0, size) counts.
    divisor_override replaces both.
    """
    if p.divisor_override is not None:
        return np.full(p.y_shape[2:], float(p.divisor_override))
    counts = []
    for n, k, s, pd, out in zip(p.x_shape[2:], p.kernel, p.stride, p.padding, p.y_shape[2:]):
        start = np.arange(out) * s - pd
        end = np.minimum(start + k, n + pd)
        if not p.count_include_pad:
            start, end = np.maximum(start, 0), np.minimum(end, n)
        counts.append(end - start)
    return np.outer(counts[0], counts[1]).astype(np.float64)


def avg_pool_forward(x, p):
    """Average over each window: y = (sum of the window's input elements) / divisor."""
    sums = _windows(x.astype(np.float64), p, 0.0).sum(axis=(-2, -1))
    return (sums / _divisor(p)).astype(x.dtype)


# Average-pool gradient. y[n, c, i, j] = sum_{a, e} xp[n, c, i*sh + a, j*sw + e] / div[i, j], so
# each input element receives gy[i, j] / div[i, j] from every window that covers it: scatter
# gy / div onto each kernel offset's slice of the padded input, then crop the padding away.
def avg_pool_backward(gy, p):
    """dL/dx from gy -> (N, C, H, W)."""
    pads = _padding(p)
    share = gy.astype(np.float64) / _divisor(p)
    gxp = np.zeros(p.x_shape[:2] + tuple(n + lo + hi for n, (lo, hi) in zip(p.x_shape[2:], pads)))
    for a in range(p.kernel[0]):
        for e in range(p.kernel[1]):
            gxp[offset_slice(a, e, p.stride, p.dilation, p.y_shape[2:])] += share
    return crop(gxp, pads, p.x_shape[2:]).astype(gy.dtype)


def adaptive_windows(size, out):
    """The bounds [start, stop) of each adaptive window along one dimension: window i is
    [floor(i*size/out), ceil((i+1)*size/out)), as PyTorch. Neighbours may overlap by one."""
    i = np.arange(out)
    return list(zip((i * size) // out, -((-(i + 1) * size) // out)))


# Adaptive average pooling: each output is the plain mean of its window. (It is linear, y =
# A_h x A_w^T with averaging matrices, but written as that product a NaN or Inf anywhere in x
# would reach every output through 0 * Inf; window by window it reaches only its own windows.)
def adaptive_avg_pool_forward(x, p):
    """y[n, c, i, j] = mean of x[n, c] over window (i, j)."""
    y = np.empty(p.y_shape)
    for i, (r0, r1) in enumerate(adaptive_windows(p.x_shape[2], p.y_shape[2])):
        for j, (q0, q1) in enumerate(adaptive_windows(p.x_shape[3], p.y_shape[3])):
            y[:, :, i, j] = x[:, :, r0:r1, q0:q1].astype(np.float64).mean(axis=(2, 3))
    return y.astype(x.dtype)


# Adaptive-average gradient: each window's output gradient is shared out equally among its
# elements (summed where windows overlap).
def adaptive_avg_pool_backward(gy, p):
    """dL/dx from gy -> (N, C, H, W)."""
    gx = np.zeros(p.x_shape)
    for i, (r0, r1) in enumerate(adaptive_windows(p.x_shape[2], p.y_shape[2])):
        for j, (q0, q1) in enumerate(adaptive_windows(p.x_shape[3], p.y_shape[3])):
            share = gy[:, :, i, j].astype(np.float64) / ((r1 - r0) * (q1 - q0))
            gx[:, :, r0:r1, q0:q1] += share[:, :, None, None]
    return gx.astype(gy.dtype)


# The reference favours clarity over memory: it works on float64 copies, and ``einsum`` copies
# the window view into column matrices (twice, in NumPy 2.x). The multiples below of the arrays
# involved were read off ``tracemalloc`` on the layer zoo; they are estimates, not bounds.
def workspace_bytes(op, p, itemsize):
    """Approximate peak of this module's temporaries beyond a call's inputs and outputs."""
    x, y = prod(p.x_shape), prod(p.y_shape)
    backward = op.endswith("_backward")
    if op.startswith("adaptive"):
        return 8 * x * (1 if backward else 2)
    if op.startswith("max"):  # masked window copies, plus the scatter target backward
        return 16 * y * p.kernel[0] * p.kernel[1] + (8 * x if backward else 0)
    return 8 * (x + y if backward else 2 * x)  # avg: padded float64 copy

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
from numba import njit, prange

FASTMATH = {"contract"}  # fused multiply-add only: no reassociation, NaN and Inf kept

# For the long sums (statistics, pooling windows, bias gradients) LLVM may also reassociate, so
# that it keeps 8-16 partial sums in the lanes of a vector register and adds them up at the end:
# without it every add waits for the previous one (4 cycles), which made batch-norm statistics
# 11x slower (6.3 ms against 0.56 ms on 8x64x112x112, measured). The order of the additions is
# still fixed by the compiled code, not by timing or threads, so results stay bitwise
# repeatable; NaN and Inf are kept (no "nnan"/"ninf").
FASTMATH_SUM = {"contract", "reassoc"}


def padded(x, padding):
    """x (N, C, H, W) with zero padding ((top, bottom), (left, right)); x itself if none."""
    (top, bottom), (left, right) = padding
    if top == bottom == left == right == 0:
        return x
    n, c, h, w = x.shape
    xp = np.zeros((n, c, h + top + bottom, w + left + right), dtype=x.dtype)
    xp[:, :, top:top + h, left:left + w] = x
    return xp


def bias_or_zeros(b, p, dtype):
    """The bias, or zeros when there is none: the kernels start their sums from it."""
    return np.zeros(p.y_shape[1], dtype) if b is None else b


def cropped(xp, padding, size):
    """The (H, W) interior of a padded array, contiguous (xp itself when there is no padding)."""
    (top, _), (left, _) = padding
    return np.ascontiguousarray(xp[:, :, top:top + size[0], left:left + size[1]])


@njit(parallel=True, fastmath=FASTMATH_SUM, cache=True)
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
    _channel_sum(a.reshape(a.shape[0], a.shape[1], prod(a.shape[2:])), out)
    return out

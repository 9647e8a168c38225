"""Shared pieces of the CUDA backend's Python side: the convolution geometry every conv kernel
takes, its index width, and the per-channel sum (the bias gradient of every convolution)."""
from __future__ import annotations

from math import prod

import numpy as np

from ._module import index, index_bits, launch


def ints(*values):
    """Kernel arguments of C type ``int``."""
    return tuple(np.int32(v) for v in values)


def conv_geometry(p):
    """The ``int`` arguments every conv kernel takes after its arrays:
    n, c, h, w, o, ho, wo, kh, kw, sh, sw, pad_top, pad_left, dh, dw."""
    n, c, h, w = p.x_shape
    o, ho, wo = p.y_shape[1:]
    (pt, _), (pl, _) = p.padding
    return ints(n, c, h, w, o, ho, wo, *p.kernel, *p.stride, pt, pl, *p.dilation)


def conv_index_bits(p) -> int:
    """32-bit indices unless x, w, y or the padded extent of x has 2**31 elements or more."""
    return index_bits(*p.sizes())


def channel_sum(a):
    """Sum of a (N, K, ...) over every axis but 1, in a's dtype (double accumulation, one
    block per channel): the bias gradient of every convolution."""
    import cupy

    n, k = a.shape[:2]
    length = prod(a.shape[2:])
    out = cupy.zeros(k, dtype=a.dtype)
    bits = index_bits(a.size)
    launch("channel_sum", a.dtype, bits, a.size,
           (a, out, index(bits, n), np.int32(k), index(bits, length)), blocks=k)
    return out

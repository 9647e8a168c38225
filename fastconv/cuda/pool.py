"""Pooling on the GPU: max (with indices), average and adaptive average, forward and backward
(kernels/pool.cu). Forward: one thread per output; backward: one thread per input element,
gathering from the windows that use it, so no atomics and bitwise repeatable results."""
from __future__ import annotations

from math import prod

import numpy as np

from ._conv import ints
from ._module import index, index_bits, launch


def _plan(p):
    """(index bits, the planes argument, the int geometry h, w, ho, wo)."""
    n, c, h, w = p.x_shape
    bits = index_bits(prod(p.x_shape), prod(p.y_shape))
    return bits, index(bits, n * c), ints(h, w, *p.y_shape[2:])


def _window(p):
    return ints(*p.kernel, *p.stride, *p.padding)


def max_pool_forward(x, p):
    """(y, indices): the max of each window and its flat index into H*W (None unless
    p.return_indices)."""
    import cupy

    y = cupy.empty(p.y_shape, dtype=x.dtype)
    indices = cupy.empty(p.y_shape if p.return_indices else (1,), dtype=cupy.int64)
    bits, planes, sizes = _plan(p)
    launch("max_pool_forward", x.dtype, bits, y.size,
           (x, y, indices, np.int32(p.return_indices), planes, *sizes, *_window(p),
            *ints(*p.dilation)))
    return y, (indices if p.return_indices else None)


def max_pool_backward(gy, indices, p):
    """dL/dx from gy and the flat indices of max_pool_forward -> (N, C, H, W)."""
    import cupy

    gx = cupy.empty(p.x_shape, dtype=gy.dtype)
    bits, planes, sizes = _plan(p)
    launch("max_pool_backward", gy.dtype, bits, gx.size,
           (gy, indices, gx, planes, *sizes, *_window(p), *ints(*p.dilation)))
    return gx


def _avg_options(p):
    return ints(*p.averaging)


def _pooled(name, a, shape, p, *options):
    """``name``'s result of ``shape`` from ``a``: one thread per result element."""
    import cupy

    out = cupy.empty(shape, dtype=a.dtype)
    bits, planes, sizes = _plan(p)
    launch(name, a.dtype, bits, out.size, (a, out, planes, *sizes, *options))
    return out


def avg_pool_forward(x, p):
    return _pooled("avg_pool_forward", x, p.y_shape, p, *_window(p), *_avg_options(p))


def avg_pool_backward(gy, p):
    return _pooled("avg_pool_backward", gy, p.x_shape, p, *_window(p), *_avg_options(p))


def adaptive_avg_pool_forward(x, p):
    return _pooled("adaptive_avg_pool_forward", x, p.y_shape, p)


def adaptive_avg_pool_backward(gy, p):
    return _pooled("adaptive_avg_pool_backward", gy, p.x_shape, p)

"""Batch normalization on the GPU over axis 1 of an (N, C, ...) input, seen as (N, C, L)
(kernels/batchnorm.cu): per-channel statistics and gradient sums in double, one block per
channel with a fixed-order tree; one elementwise pass per direction. The per-channel rules
(running-statistics update, scale and shift, the gradient's coefficients) are
fastconv.common.batchnorm's, run on CuPy vectors; see fastconv/cpu/batchnorm.py for the formulas."""
from __future__ import annotations

from math import prod

import numpy as np

from ..common.batchnorm import (
    empty_batch_gradients,
    input_gradient_coefficients,
    running_update,
    scale_and_shift,
)
from ._module import index, index_bits, launch


def _layout(x, p):
    """(index bits, the n, channels and l arguments) of x seen as (N, C, L)."""
    n, c = p.x_shape[:2]
    bits = index_bits(x.size)
    return bits, (index(bits, n), np.int32(c), index(bits, prod(p.x_shape[2:])))


def _statistics(x, running_mean, running_var, p):
    """float64 (mean, var) to normalise with: the batch's, or the running ones."""
    import cupy

    if not p.training:
        return running_mean.astype(np.float64), running_var.astype(np.float64)
    mean, var = cupy.empty(p.channels), cupy.empty(p.channels)
    bits, ncl = _layout(x, p)
    launch("bn_mean_var", x.dtype, bits, x.size, (x, mean, var, *ncl), blocks=p.channels)
    return mean, var


def forward(x, running_mean, running_var, weight, bias, p):
    """y = weight * (x - mean) / sqrt(var + eps) + bias; updates running stats when training."""
    import cupy

    y = cupy.empty(p.x_shape, dtype=x.dtype)
    if p.count == 0:  # an empty batch: nothing to normalise, nothing learned (as PyTorch)
        return y
    mean, var = _statistics(x, running_mean, running_var, p)
    if p.training and p.has_running:
        m = p.count
        running_mean[...] = running_update(running_mean, mean, p.momentum)
        running_var[...] = running_update(running_var, var * m / (m - 1), p.momentum)
    scale, shift = scale_and_shift(mean, var, 1.0 if weight is None else weight,
                                   0.0 if bias is None else bias, p.eps)
    bits, (_, channels, length) = _layout(x, p)
    launch("bn_affine", x.dtype, bits, x.size,
           (x, cupy.ascontiguousarray(scale, dtype=np.float64),
            cupy.ascontiguousarray(shift, dtype=np.float64), y, index(bits, x.size), channels,
            length))
    return y


def backward(gy, x, weight, running_mean, running_var, p):
    """(dL/dx, dL/dweight, dL/dbias) as selected by p.output_mask; unselected ones are None."""
    import cupy

    want_x, want_w, want_b = p.output_mask
    dt = x.dtype
    if p.count == 0:
        return empty_batch_gradients(p, dt, cupy)
    mean, var = _statistics(x, running_mean, running_var, p)
    s1, s2 = cupy.empty(p.channels), cupy.empty(p.channels)
    bits, ncl = _layout(x, p)
    launch("bn_gradient_sums", dt, bits, x.size, (gy, x, mean, s1, s2, *ncl), blocks=p.channels)
    gamma = 1.0 if weight is None else weight.astype(np.float64)
    r, k1, k2, k3 = input_gradient_coefficients(var, gamma, s1, s2, p.count, p.eps, p.training)
    gx = None
    if want_x:
        gx = cupy.empty(p.x_shape, dtype=dt)
        launch("bn_input_gradient", dt, bits, x.size,
               (gy, x, mean, *(cupy.ascontiguousarray(k, dtype=np.float64) for k in (k1, k2, k3)),
                gx, index(bits, x.size), ncl[1], ncl[2]))
    return (gx, (r * s2).astype(dt) if want_w else None, s1.astype(dt) if want_b else None)

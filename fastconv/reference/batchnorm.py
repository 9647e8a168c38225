"""Reference batch normalization over axis 1 of an (N, C, ...) input.

Per channel, with m = N * (product of the trailing dimensions) values::

    mean = sum(x) / m                    var = sum((x - mean)^2) / m          (biased)
    xhat = (x - mean) / sqrt(var + eps)  y = weight * xhat + bias

Training mode normalises with the batch's mean and var and, when running statistics are given,
updates them in place (PyTorch's rule; the running variance takes the unbiased batch variance)::

    running_mean = (1 - momentum) * running_mean + momentum * mean
    running_var  = (1 - momentum) * running_var  + momentum * var * m / (m - 1)

Evaluation mode normalises with the running statistics instead. A missing weight is 1 and a
missing bias 0. Arithmetic is in float64; results come back in the input dtype.
"""
from __future__ import annotations

from math import prod

import numpy as np


def _per_channel(v, ndim):
    """A (C,) vector shaped to broadcast against an (N, C, ...) array."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def _axes(x):
    return (0,) + tuple(range(2, x.ndim))


def _statistics(x, running_mean, running_var, p):
    """float64 (mean, var) used to normalise: the batch's (biased) or the running ones."""
    if p.training:
        x64 = x.astype(np.float64)
        return x64.mean(axis=_axes(x)), x64.var(axis=_axes(x))
    return running_mean.astype(np.float64), running_var.astype(np.float64)


def update_running_stats(running_mean, running_var, mean, var, p):
    """PyTorch's in-place update from the batch's mean and biased var (m values per channel)."""
    m = p.count
    running_mean[...] = (1 - p.momentum) * running_mean + p.momentum * mean
    running_var[...] = (1 - p.momentum) * running_var + p.momentum * var * m / (m - 1)


def scale_and_shift(mean, var, weight, bias, eps):
    """Per-channel (scale, shift) with y = x * scale + shift: the whole forward in two vectors."""
    scale = 1.0 / np.sqrt(var + eps)
    if weight is not None:
        scale = scale * weight
    shift = -mean * scale
    if bias is not None:
        shift = shift + bias
    return scale, shift


def empty_batch_gradients(p, dtype):
    """The gradients of an empty batch, as PyTorch gives them: an empty grad_x, zero grad_weight
    and grad_bias (each None where p.output_mask says so)."""
    xp = np
    want_x, want_w, want_b = p.output_mask
    c = p.channels
    return (xp.empty(p.x_shape, dtype) if want_x else None,
            xp.zeros(c, dtype) if want_w else None, xp.zeros(c, dtype) if want_b else None)


def forward(x, running_mean, running_var, weight, bias, p):
    """y = weight * (x - mean) / sqrt(var + eps) + bias; updates running stats when training."""
    if p.count == 0:  # an empty batch: nothing to normalise, nothing learned (as PyTorch)
        return np.empty(p.x_shape, dtype=x.dtype)
    mean, var = _statistics(x, running_mean, running_var, p)
    if p.training and p.has_running:
        update_running_stats(running_mean, running_var, mean, var, p)
    scale, shift = scale_and_shift(mean, var, weight, bias, p.eps)
    y = x * _per_channel(scale, x.ndim) + _per_channel(shift, x.ndim)
    return y.astype(x.dtype)


# Backward. With r = 1/sqrt(var + eps), g = dL/dxhat = gy * weight, and sums over the m values
# of a channel:
#
#   dL/dbias   = sum(gy)
#   dL/dweight = sum(gy * xhat)
#
# Evaluation: mean and var are constants, so dL/dx = g * r.
#
# Training: mean and var depend on every x_j of the channel. d(mean)/dx_j = 1/m and
# d(var)/dx_j = 2 (x_j - mean)/m, hence d(xhat_i)/dx_j = r (delta_ij - 1/m) - r xhat_i xhat_j / m
# and
#
#   dL/dx_j = sum_i g_i d(xhat_i)/dx_j = r * (g_j - mean(g) - xhat_j * mean(g * xhat)).
def backward(gy, x, weight, running_mean, running_var, p):
    """(dL/dx, dL/dweight, dL/dbias) as selected by p.output_mask; unselected ones are None."""
    want_x, want_w, want_b = p.output_mask
    c, dt = p.channels, x.dtype
    if p.count == 0:
        return empty_batch_gradients(p, dt)
    axes, nd = _axes(x), x.ndim
    mean, var = _statistics(x, running_mean, running_var, p)
    r = 1.0 / np.sqrt(var + p.eps)
    gy64 = gy.astype(np.float64)
    xhat = (x - _per_channel(mean, nd)) * _per_channel(r, nd)
    gamma = np.ones(c) if weight is None else weight.astype(np.float64)
    gx = gw = gb = None
    if want_x:
        g = gy64 * _per_channel(gamma, nd)
        if p.training:
            g = (g - _per_channel(g.mean(axis=axes), nd)
                 - xhat * _per_channel((g * xhat).mean(axis=axes), nd))
        gx = (g * _per_channel(r, nd)).astype(dt)
    if want_w:
        gw = (gy64 * xhat).sum(axis=axes).astype(dt)
    if want_b:
        gb = gy64.sum(axis=axes).astype(dt)
    return gx, gw, gb


# The reference favours clarity over memory: it works on float64 copies, and ``einsum`` copies
# the window view into column matrices (twice, in NumPy 2.x). The multiples below of the arrays
# involved were read off ``tracemalloc`` on the layer zoo; they are estimates, not bounds.
def workspace_bytes(op, p, itemsize):
    """Approximate peak of this module's temporaries beyond a call's inputs and outputs."""
    return 8 * prod(p.x_shape) * (5 if op.endswith("_backward") else 2)

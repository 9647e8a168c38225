"""Batch normalization kernels over axis 1 of an (N, C, ...) input, seen as (N, C, L).

The forward's per-channel rules (running-statistics update, scale and shift) are
fastconv.common.batchnorm's, shared with the CUDA backend; they cost O(C). Statistics are exact two-pass
sums in float64 (mean first, then the squared deviations from it: no cancellation, unlike
sum(x^2) - sum(x)^2), one parallel task per channel, whose second pass finds the channel still in
cache; the sums are vectorised (``FASTMATH_SUM``) in a fixed order, so they are bitwise
repeatable. Then::

    forward:   y  = x * scale + shift                   one elementwise pass,
                                                        scale = weight / sqrt(var + eps),
                                                        shift = bias - mean * scale
    backward:  gx = k1 * gy + k2 * (x - mean) + k3      per-channel k1, k2, k3 below

The backward is one task per channel that makes all its passes (statistics, the two gradient
sums, gx) over that channel in turn, so x and gy come from memory once: a channel of the zoo's
largest layer (8x112x112 values of x and gy) fits in the 2-4 MiB of cache a core has.

Training backward (see fastconv.reference.batchnorm for the derivation), with r = 1/sqrt(var + eps),
S1 = sum(gy), S2 = sum(gy * (x - mean)) over the m values of a channel:

    gx = r*weight*gy - r^3*weight*S2/m * (x - mean) - r*weight*S1/m
    d_weight = r*S2,   d_bias = S1

Evaluation backward: mean and var are the running ones, constants: gx = r*weight*gy.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..common.batchnorm import empty_batch_gradients, scale_and_shift, update_running_stats
from ._loops import FASTMATH_SUM, planes


@njit(inline="always")
def _channel_mean_var(x, c):
    """Mean and biased variance of channel c of x (N, C, L), float64, two passes."""
    n_, _, l_ = x.shape
    total = 0.0
    for n in range(n_):
        for i in range(l_):
            total += x[n, c, i]
    mu = total / (n_ * l_)
    squares = 0.0
    for n in range(n_):
        for i in range(l_):
            d = x[n, c, i] - mu
            squares += d * d
    return mu, squares / (n_ * l_)


@njit(parallel=True, fastmath=FASTMATH_SUM, cache=True)
def _mean_var(x, mean, var):
    # x (N, C, L) -> per-channel mean and biased variance; a channel's second pass finds its
    # values still in cache
    for c in prange(x.shape[1]):
        mean[c], var[c] = _channel_mean_var(x, c)


@njit(parallel=True, cache=True)
def _affine(x, scale, shift, y):
    # y[n, c, :] = x[n, c, :] * scale[c] + shift[c], in float64
    n_, c_, l_ = x.shape
    for plane in prange(n_ * c_):
        n, c = plane // c_, plane % c_
        s, t = scale[c], shift[c]
        for i in range(l_):
            y[n, c, i] = x[n, c, i] * s + t


@njit(parallel=True, fastmath=FASTMATH_SUM, cache=True)
def _backward(gy, x, training, eps, gamma, mean, var, s1, s2, gx):
    # One task per channel, which makes every pass over that channel in turn while its values
    # are still in cache (x and gy come from memory once): the batch statistics (training; else
    # mean and var hold the running ones), s1 = sum(gy), s2 = sum(gy * (x - mean)), and then,
    # when gx is wanted (gx.size > 0), gx = k1 * gy + k2 * (x - mean) + k3 with the per-channel
    # coefficients of fastconv.common.batchnorm.input_gradient_coefficients.
    n_, c_, l_ = x.shape
    m = n_ * l_
    for c in prange(c_):
        if training:
            mean[c], var[c] = _channel_mean_var(x, c)
        mu = mean[c]
        a = 0.0
        b = 0.0
        for n in range(n_):
            for i in range(l_):
                g = gy[n, c, i]
                a += g
                b += g * (x[n, c, i] - mu)
        s1[c], s2[c] = a, b
        if gx.size == 0:
            continue
        r = 1.0 / np.sqrt(var[c] + eps)
        k1 = r * gamma[c]
        if not training:  # fixed statistics: x does not enter (not even as 0 * x, which is NaN
            for n in range(n_):  # for an infinite x)
                for i in range(l_):
                    gx[n, c, i] = k1 * gy[n, c, i]
            continue
        k2 = -r ** 3 * gamma[c] * b / m
        k3 = -r * gamma[c] * a / m
        for n in range(n_):
            for i in range(l_):
                gx[n, c, i] = k1 * gy[n, c, i] + k2 * (x[n, c, i] - mu) + k3


def _statistics(x3, running_mean, running_var, p):
    """float64 (mean, var) to normalise with: the batch's, or the running ones."""
    if not p.training:
        return running_mean.astype(np.float64), running_var.astype(np.float64)
    mean, var = np.empty(p.channels), np.empty(p.channels)
    _mean_var(x3, mean, var)
    return mean, var


def forward(x, running_mean, running_var, weight, bias, p):
    """y = weight * (x - mean) / sqrt(var + eps) + bias; updates running stats when training."""
    y = np.empty(p.x_shape, dtype=x.dtype)
    if p.count == 0:  # an empty batch: nothing to normalise, nothing learned (as PyTorch)
        return y
    x3 = planes(x)
    mean, var = _statistics(x3, running_mean, running_var, p)
    if p.training and p.has_running:
        update_running_stats(running_mean, running_var, mean, var, p)
    _affine(x3, *scale_and_shift(mean, var, weight, bias, p.eps), planes(y))
    return y


def backward(gy, x, weight, running_mean, running_var, p):
    """(dL/dx, dL/dweight, dL/dbias) as selected by p.output_mask; unselected ones are None."""
    want_x, want_w, want_b = p.output_mask
    c, dt = p.channels, x.dtype
    if p.count == 0:
        return empty_batch_gradients(p, dt, np)
    if p.training:
        mean, var = np.empty(c), np.empty(c)
    else:
        mean, var = running_mean.astype(np.float64), running_var.astype(np.float64)
    gamma = np.ones(c) if weight is None else weight.astype(np.float64)
    s1, s2 = np.empty(c), np.empty(c)
    gx = np.empty(p.x_shape if want_x else (0,) * x.ndim, dtype=dt)
    _backward(planes(gy), planes(x), p.training, p.eps, gamma, mean, var, s1, s2, planes(gx))
    r = 1.0 / np.sqrt(var + p.eps)
    return (gx if want_x else None, (r * s2).astype(dt) if want_w else None,
            s1.astype(dt) if want_b else None)

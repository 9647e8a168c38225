"""Batch normalization kernels over axis 1 of an (N, C, ...) input, seen as (N, C, L).

The per-channel rules (running-statistics update, scale and shift) are the reference's own
functions: they are the definition, and cost O(C). Statistics are exact two-pass sums in float64 (mean first, then the squared deviations from it:
no cancellation, unlike sum(x^2) - sum(x)^2), one parallel task per channel, so they are
bitwise repeatable. Everything else is one fused elementwise pass per direction::

    forward:   y  = x * scale + shift                   scale = weight / sqrt(var + eps),
                                                         shift = bias - mean * scale
    backward:  gx = k1 * gy + k2 * (x - mean) + k3      per-channel k1, k2, k3 below

Training backward (see fastconv.reference.batchnorm for the derivation), with r = 1/sqrt(var + eps),
S1 = sum(gy), S2 = sum(gy * (x - mean)) over the m values of a channel:

    gx = r*weight*gy - r^3*weight*S2/m * (x - mean) - r*weight*S1/m,   d_weight = r*S2,   d_bias = S1

Evaluation backward: mean and var are the running ones, constants: gx = r*weight*gy.
"""
from __future__ import annotations

from math import prod

import numpy as np
from numba import njit, prange

from ..reference.batchnorm import (
    empty_batch_gradients,
    input_gradient_coefficients,
    scale_and_shift,
    update_running_stats,
)


@njit(parallel=True, cache=True)
def _mean_var(x, mean, var):
    # x (N, C, L) -> per-channel mean and biased variance, float64, two passes
    n_, c_, l_ = x.shape
    m = n_ * l_
    for c in prange(c_):
        total = 0.0
        for n in range(n_):
            for i in range(l_):
                total += x[n, c, i]
        mu = total / m
        squares = 0.0
        for n in range(n_):
            for i in range(l_):
                d = x[n, c, i] - mu
                squares += d * d
        mean[c] = mu
        var[c] = squares / m


@njit(parallel=True, cache=True)
def _affine(x, scale, shift, y):
    # y[n, c, :] = x[n, c, :] * scale[c] + shift[c], in float64
    n_, c_, l_ = x.shape
    for plane in prange(n_ * c_):
        n, c = plane // c_, plane % c_
        s, t = scale[c], shift[c]
        for i in range(l_):
            y[n, c, i] = x[n, c, i] * s + t


@njit(parallel=True, cache=True)
def _gradient_sums(gy, x, mean, s1, s2):
    # per channel: s1 = sum(gy), s2 = sum(gy * (x - mean)), float64
    n_, c_, l_ = x.shape
    for c in prange(c_):
        a = 0.0
        b = 0.0
        mu = mean[c]
        for n in range(n_):
            for i in range(l_):
                g = gy[n, c, i]
                a += g
                b += g * (x[n, c, i] - mu)
        s1[c] = a
        s2[c] = b


@njit(parallel=True, cache=True)
def _input_gradient(gy, x, mean, k1, k2, k3, gx):
    # gx = k1 * gy + k2 * (x - mean) + k3, per channel coefficients, in float64
    n_, c_, l_ = x.shape
    for plane in prange(n_ * c_):
        n, c = plane // c_, plane % c_
        a, b, d, mu = k1[c], k2[c], k3[c], mean[c]
        for i in range(l_):
            gx[n, c, i] = a * gy[n, c, i] + b * (x[n, c, i] - mu) + d


def _as_ncl(a):
    return a.reshape(a.shape[0], a.shape[1], prod(a.shape[2:]))


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
    x3 = _as_ncl(x)
    mean, var = _statistics(x3, running_mean, running_var, p)
    if p.training and p.has_running:
        update_running_stats(running_mean, running_var, mean, var, p)
    _affine(x3, *scale_and_shift(mean, var, weight, bias, p.eps), _as_ncl(y))
    return y


def backward(gy, x, weight, running_mean, running_var, p):
    """(dL/dx, dL/dweight, dL/dbias) as selected by p.output_mask; unselected ones are None."""
    want_x, want_w, want_b = p.output_mask
    c, dt = p.channels, x.dtype
    if p.count == 0:
        return empty_batch_gradients(p, dt)
    x3, gy3 = _as_ncl(x), _as_ncl(gy)
    mean, var = _statistics(x3, running_mean, running_var, p)
    s1, s2 = np.empty(c), np.empty(c)
    _gradient_sums(gy3, x3, mean, s1, s2)
    r, k1, k2, k3 = input_gradient_coefficients(var, weight, s1, s2, p)
    gx = None
    if want_x:
        gx = np.empty(p.x_shape, dtype=dt)
        _input_gradient(gy3, x3, mean, k1, k2, k3, _as_ncl(gx))
    return (gx, (r * s2).astype(dt) if want_w else None, s1.astype(dt) if want_b else None)

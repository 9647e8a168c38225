"""Batch normalization kernels over axis 1 of an (N, C, ...) input, seen as (N, C, L).

Each direction is one compiled call: the per-channel rules (running-statistics update, scale
and shift, the gradient's coefficients) are fastconv.common.batchnorm's, shared with the CUDA
backend and compiled here per channel, inside the same kernel as the passes over the data (as
NumPy vector operations they cost 6-8 us a call, more than a small layer's whole work). An
absent weight, bias or pair of running statistics is an empty array. The forward's statistics
are exact two-pass sums in float64 (mean first, then the squared deviations from it: no
cancellation, unlike sum(x^2) - sum(x)^2), one parallel task per channel, whose second pass finds
the channel still in cache; the backward's are below. The sums are vectorised
(``FASTMATH_SUM``) in a fixed order, so they are bitwise repeatable. Then::

    forward:   y  = x * scale + shift                   one elementwise pass,
                                                        scale = weight / sqrt(var + eps),
                                                        shift = bias - mean * scale
    backward:  gx = k1 * gy + k2 * (x - mean) + k3      per-channel k1, k2, k3 below

The backward is one task per channel that makes its passes over that channel in turn, so x and
gy come from memory once: a channel of the zoo's largest layer (8x112x112 values of x and gy)
fits in the 2 MiB of cache a core has. It makes two. The first takes every sum at once about a
shift k, the channel's first value: with d = x - k, s1 = sum(d), s2 = sum(d^2), S1 = sum(gy)
and sum(gy * d), from which mean = k + s1/m, var = s2/m - (s1/m)^2 and S2 = sum(gy * d) -
(s1/m) * S1. The subtraction loses about log2(1 + (mean - k)^2 / var) of float64's 53 bits, so
where k lies more than 32 standard deviations from the mean (``_SHIFT_BOUND``: an outlier
first) the channel's sums are taken again exactly, about the mean. The second pass is gx.
(Exact two-pass statistics and then the gradient sums were four passes, 1.3-1.5x PyTorch's
time, which uses the mean and deviation its forward saved: now 1.0-1.2x.)

Training backward (see fastconv.reference.batchnorm for the derivation), with r = 1/sqrt(var + eps),
S1 = sum(gy), S2 = sum(gy * (x - mean)) over the m values of a channel:

    gx = r*weight*gy - r^3*weight*S2/m * (x - mean) - r*weight*S1/m
    d_weight = r*S2,   d_bias = S1

Evaluation backward: mean and var are the running ones, constants: gx = r*weight*gy.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..common.batchnorm import empty_batch_gradients, input_gradient_coefficients, \
    running_update, scale_and_shift
from ._loops import FASTMATH_SUM, frozen
from ._threads import parallel_jit

# The backward's one-pass sums are used while (mean - shift)^2 <= _SHIFT_BOUND * var, that is
# the shift within 32 standard deviations of the mean: at most 10 of float64's bits lost.
_SHIFT_BOUND = 1024.0
# (Per-channel values are read as np.float64(a[c]): Numba types float(a[c]) of a float32 array as
# float32, which had put the one-pass sums' deviations, and with them most of the cancelling
# gradient of a two-value channel, in float32.)

_running_update = njit(inline="always")(running_update)
_scale_and_shift = njit(inline="always")(scale_and_shift)
_input_gradient_coefficients = njit(inline="always")(input_gradient_coefficients)



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


@parallel_jit(fastmath=FASTMATH_SUM, cache=True)
def _forward(x, mean, var, running_mean, running_var, weight, bias, momentum, eps, y):
    # x, y (N, C, L); mean, var (C,): the running statistics to normalise with (evaluation), or
    # empty (training: the batch's); running_mean, running_var (C,): updated in place in
    # training, or empty; weight, bias (C,) or empty (absent). One task per channel, which
    # finds the channel still in cache from its statistics: the statistics, the running
    # update, scale and shift, then y = x * scale + shift over the channel.
    n_, c_, l_ = x.shape
    m = n_ * l_
    for c in prange(c_):
        if mean.size:
            mu, sigma2 = np.float64(mean[c]), np.float64(var[c])
        else:
            mu, sigma2 = _channel_mean_var(x, c)
            if running_mean.size:
                running_mean[c] = _running_update(running_mean[c], mu, momentum)
                running_var[c] = _running_update(running_var[c], sigma2 * m / (m - 1),
                                                 momentum)
        gamma = np.float64(weight[c]) if weight.size else 1.0
        beta = np.float64(bias[c]) if bias.size else 0.0
        s, t = _scale_and_shift(mu, sigma2, gamma, beta, eps)
        for n in range(n_):
            for i in range(l_):
                y[n, c, i] = x[n, c, i] * s + t


@njit(inline="always")
def _sums_about(gy, x, c, k):
    """sum(gy), sum(gy * d), sum(d), sum(d^2) over channel c, d = x - k, in float64."""
    n_, _, l_ = x.shape
    a = 0.0
    b = 0.0
    s1 = 0.0
    s2 = 0.0
    for n in range(n_):
        for i in range(l_):
            g = gy[n, c, i]
            d = x[n, c, i] - k
            a += g
            b += g * d
            s1 += d
            s2 += d * d
    return a, b, s1, s2


@parallel_jit(fastmath=FASTMATH_SUM, cache=True)
def _backward(gy, x, weight, running_mean, running_var, training, eps, gx, gw, gb):
    # One task per channel, which makes every pass over that channel in turn while its values
    # are still in cache (x and gy come from memory once): the batch statistics (training; else
    # the running ones), a = sum(gy), b = sum(gy * (x - mean)), the weight and bias gradients
    # r*b and a (where gw, gb are not empty), and, when gx is wanted (not empty),
    # gx = k1 * gy + k2 * (x - mean) + k3 with fastconv.common.batchnorm's coefficients.
    n_, c_, l_ = x.shape
    m = n_ * l_
    for c in prange(c_):
        if training:  # one pass about the shift k = the channel's first value (see above)
            k = np.float64(x[0, c, 0])
            a, bk, s1, s2 = _sums_about(gy, x, c, k)
            dm = s1 / m  # mean - k
            mu = k + dm
            var = s2 / m - dm * dm
            b = bk - dm * a
            if not dm * dm <= _SHIFT_BOUND * var:  # k far from the mean: the exact pass
                a, b, _, squares = _sums_about(gy, x, c, mu)
                var = squares / m
        else:
            mu, var = np.float64(running_mean[c]), np.float64(running_var[c])
            a, b, _, _ = _sums_about(gy, x, c, mu)
        gamma = np.float64(weight[c]) if weight.size else 1.0
        r, k1, k2, k3 = _input_gradient_coefficients(var, gamma, a, b, m, eps, training)
        if gw.size:
            gw[c] = r * b
        if gb.size:
            gb[c] = a
        if gx.size == 0:
            continue
        if not training:  # fixed statistics: x does not enter (not even as 0 * x, which is NaN
            for n in range(n_):  # for an infinite x)
                for i in range(l_):
                    gx[n, c, i] = k1 * gy[n, c, i]
            continue
        for n in range(n_):
            for i in range(l_):
                gx[n, c, i] = k1 * gy[n, c, i] + k2 * (x[n, c, i] - mu) + k3


# Empty per-channel arrays (nothing is ever written to them), writeable and read-only, per dtype
_EMPTY = {np.dtype(t): (np.empty(0, t), frozen(np.empty(0, t))) for t in (np.float32, np.float64)}


def _or_empty(a, dtype):
    """An optional per-channel array as the kernels take it: itself, or empty where absent."""
    return _EMPTY[dtype][1] if a is None else a


def forward(x, running_mean, running_var, weight, bias, p):
    """y = weight * (x - mean) / sqrt(var + eps) + bias; updates running stats when training."""
    y = np.empty(p.x_shape, dtype=x.dtype)
    if p.count == 0:  # an empty batch: nothing to normalise, nothing learned (as PyTorch)
        return y
    dt = x.dtype
    nothing, fixed_nothing = _EMPTY[dt]
    if p.training:  # running statistics (if any) are updated in place
        fixed = (fixed_nothing, fixed_nothing)
        updated = (running_mean, running_var) if p.has_running else (nothing, nothing)
    else:  # the running statistics are read, never written (handed over read-only)
        fixed, updated = (running_mean, running_var), (nothing, nothing)
    _forward(x.reshape(p.planes), *fixed, *updated, _or_empty(weight, dt), _or_empty(bias, dt),
             p.momentum, p.eps, y.reshape(p.planes))
    return y


def backward(gy, x, weight, running_mean, running_var, p):
    """(dL/dx, dL/dweight, dL/dbias) as selected by p.output_mask; unselected ones are None."""
    want_x, want_w, want_b = p.output_mask
    c, dt = p.channels, x.dtype
    if p.count == 0:
        return empty_batch_gradients(p, dt, np)
    stats = (running_mean, running_var) if not p.training else (_or_empty(None, dt),) * 2
    gx = np.empty(p.planes if want_x else (0, 0, 0), dtype=dt)
    gw, gb = np.empty(c if want_w else 0, dt), np.empty(c if want_b else 0, dt)
    _backward(gy.reshape(p.planes), x.reshape(p.planes), _or_empty(weight, dt), *stats,
              p.training, p.eps, gx, gw, gb)
    return gx.reshape(p.x_shape) if want_x else None, gw if want_w else None, \
        gb if want_b else None

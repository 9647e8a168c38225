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

The backward makes two passes over each channel while its values are still in cache, so x
and gy come from memory once. The channels go in groups of consecutive ones (a group's x and
gy within ``_GROUP_BYTES``), each thread a run of groups, each pass image by image over the
group's planes (one contiguous stretch of memory an image). The first pass takes every sum at
once about a shift k, the channel's first value: with d = x - k, s1 = sum(d), s2 = sum(d^2),
S1 = sum(gy) and sum(gy * d), from which mean = k + s1/m, var = s2/m - (s1/m)^2 and S2 =
sum(gy * d) - (s1/m) * S1. The subtraction loses about log2(1 + (mean - k)^2 / var) of
float64's 53 bits, so where k lies more than 32 standard deviations from the mean
(``_SHIFT_BOUND``: an outlier first) the channel's sums are taken again exactly, about the
mean. The second pass is gx, run by run (``_RUN`` values) beside the first pass over the next
group, so that the memory system reads while gx is written; a gx of ``_STREAM_BYTES`` or more is
stored non-temporally (fastconv.cpu._simd's streaming passes), which spares the read of every
line a normal store makes. (Exact two-pass statistics and then the gradient sums were four
passes, 1.3-1.5x PyTorch's time, which uses the mean and deviation its forward saved; one
task per channel with both passes, 1.0-1.2x; with the groups, the overlap and the streamed
gx, 0.74-0.78 in the bench, Zen 4.)

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
from ._simd import store_fence, stream_affine, stream_scale
from ._threads import parallel_jit, threads

# The backward's one-pass sums are used while (mean - shift)^2 <= _SHIFT_BOUND * var, that is
# the shift within 32 standard deviations of the mean: at most 10 of float64's bits lost.
_SHIFT_BOUND = 1024.0
# An output of at least _STREAM_BYTES is stored non-temporally (fastconv.cpu._simd's streaming
# passes): far larger than the caches, it would not be in them for the next op anyway, and a
# normal store first reads each line it writes, a third more traffic for the backward (x and gy
# read, gx read and written) and half as much again for the forward. Measured on 8x64x112x112
# and 8x256x56x56 float32 (25.7 MB an array), AMD EPYC Zen 4, 2 threads: backward 2.10 -> 1.72
# and 3.02 -> 2.22 ms. Below it the output is stored normally, where the next op finds it.
_STREAM_BYTES = 16 << 20
# The backward takes its channels in groups of up to _GROUP_BYTES of x and gy (see _group).
_GROUP_BYTES = 768 << 10
# ... and interleaves its two passes in runs of _RUN values (see _backward).
_RUN = 1024
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
def _forward(x, mean, var, running_mean, running_var, weight, bias, momentum, eps, y, stream):
    # x, y (N, C, L); mean, var (C,): the running statistics to normalise with (evaluation), or
    # empty (training: the batch's); running_mean, running_var (C,): updated in place in
    # training, or empty; weight, bias (C,) or empty (absent). One task per channel, which
    # finds the channel still in cache from its statistics: the statistics, the running
    # update, scale and shift, then y = x * scale + shift over the channel (stored
    # non-temporally where stream: see _STREAM_BYTES).
    n_, c_, l_ = x.shape
    m = n_ * l_
    x_flat, y_flat = x.reshape(x.size), y.reshape(y.size)
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
            at = (n * c_ + c) * l_
            stream_scale(y_flat, at, l_, x_flat, at, s, t, stream)
        if stream:
            store_fence()


@njit(inline="always")
def _sums_about(gy, x, c, k):
    """sum(gy), sum(gy * d), sum(d), sum(d^2) over channel c, d = x - k, in float64, in the
    backward's runs."""
    sums = np.zeros((1, 4))
    for n in range(x.shape[0]):
        for start in range(0, x.shape[2], _RUN):
            _run_sums(gy, x, n, c, start, min(_RUN, x.shape[2] - start), k, sums, 0)
    return sums[0, 0], sums[0, 1], sums[0, 2], sums[0, 3]


@njit(inline="always")
def _run_sums(gy, x, n, c, start, count, k, sums, j):
    """Adds sum(gy), sum(gy * d), sum(d), sum(d^2), d = x - k, over values start .. start +
    count - 1 of the plane (n, c), in float64, to sums[j, 0:4]."""
    a = 0.0
    b = 0.0
    s1 = 0.0
    s2 = 0.0
    first = np.uint64(start)
    for t in range(count):
        i = first + np.uint64(t)
        g = gy[n, c, i]
        d = x[n, c, i] - k
        a += g
        b += g * d
        s1 += d
        s2 += d * d
    sums[j, 0] += a
    sums[j, 1] += b
    sums[j, 2] += s1
    sums[j, 3] += s2


@njit(inline="always")
def _coefficients(gy, x, weight, running_var, training, eps, c, shift, sums, gw, gb):
    """(k1, k2, k3, mean) of channel c's gx from its sums about `shift` (training: about its
    first value, taken exactly again about the mean where that lies far from it; evaluation:
    about the running mean); writes its weight and bias gradients where gw, gb are not empty."""
    m = x.shape[0] * x.shape[2]
    a, b = sums[0], sums[1]
    if training:
        dm = sums[2] / m  # mean - shift
        mu = shift + dm
        var = sums[3] / m - dm * dm
        b = b - dm * a
        if not dm * dm <= _SHIFT_BOUND * var:  # the shift far from the mean: the exact pass
            a, b, _, squares = _sums_about(gy, x, c, mu)
            var = squares / m
    else:
        mu, var = shift, np.float64(running_var[c])
    gamma = np.float64(weight[c]) if weight.size else 1.0
    r, k1, k2, k3 = _input_gradient_coefficients(var, gamma, a, b, m, eps, training)
    if gw.size:
        gw[c] = r * b
    if gb.size:
        gb[c] = a
    return k1, k2, k3, mu


@parallel_jit(fastmath=FASTMATH_SUM, cache=True)
def _backward(gy, x, weight, running_mean, running_var, training, eps, gx, gw, gb, group,
              parts, stream):
    # The channels in groups of `group` consecutive ones (see _group), the groups split into
    # `parts` consecutive runs, one task each. A task takes its groups in turn, two passes over
    # each while its values are still in cache (x and gy come from memory once): the sums of
    # each channel (training: about the channel's first value, see above; evaluation: about
    # the running mean), then, when gx is wanted (not empty), gx = k1 * gy + k2 * (x - mean) +
    # k3 with fastconv.common.batchnorm's coefficients (stored non-temporally where stream: see
    # _STREAM_BYTES). The second pass over one group runs beside the first over the next, run
    # by run of _RUN values, so that memory is read (the next group) while gx is written; each
    # pass goes image by image over all of the group's planes in turn, one contiguous stretch
    # of memory an image. The weight and bias gradients r*b and a go where gw, gb are not empty.
    n_, c_, l_ = x.shape
    x_flat, gy_flat, gx_flat = x.reshape(x.size), gy.reshape(gy.size), gx.reshape(gx.size)
    sums_wanted = training or gw.size or gb.size
    writing = gx.size > 0
    groups = (c_ + group - 1) // group
    for part in prange(parts):
        first, last = groups * part // parts, groups * (part + 1) // parts
        shift = np.empty(group)
        sums = np.zeros((group, 4))
        coefficients = np.empty((group, 4))  # k1, k2, k3, mean of the group being written
        done, done_size = 0, 0  # the group whose sums are taken, and its size (0: none)
        for q in range(first, last + 1):
            c0 = q * group
            size = min(group, c_ - c0) if q < last else 0
            for j in range(size):
                c = c0 + j
                shift[j] = np.float64(x[0, c, 0]) if training else np.float64(running_mean[c])
                sums[j, :] = 0.0
            reads = size if sums_wanted else 0
            writes = done_size if writing else 0
            for n in range(n_):
                for j in range(max(reads, writes)):
                    for start in range(0, l_, _RUN):
                        count = min(_RUN, l_ - start)
                        if j < reads:
                            _run_sums(gy, x, n, c0 + j, start, count, shift[j], sums, j)
                        if j < writes:
                            at = (n * c_ + done + j) * l_ + start
                            k1, k2, k3, mu = coefficients[j, 0], coefficients[j, 1], \
                                coefficients[j, 2], coefficients[j, 3]
                            if training:
                                stream_affine(gx_flat, at, count, gy_flat, x_flat, at, k1, k2,
                                              mu, k3, stream)
                            else:  # fixed statistics: x does not enter (not even as 0 * x,
                                stream_scale(gx_flat, at, count, gy_flat, at, k1, -0.0,
                                             stream)  # NaN for an infinite x)
            for j in range(size):
                k1, k2, k3, mu = _coefficients(gy, x, weight, running_var, training, eps,
                                               c0 + j, shift[j], sums[j], gw, gb)
                coefficients[j, 0], coefficients[j, 1] = k1, k2
                coefficients[j, 2], coefficients[j, 3] = k3, mu
            done, done_size = c0, size
        if stream:
            store_fence()


def _group(shape, itemsize, threads):
    """(channels per group, tasks) of the backward: as many channels as keep a group's x and
    gy within _GROUP_BYTES (its second pass then reads them from cache, beside the next
    group's first), at least one; one task per thread (fewer where there are fewer groups)."""
    n, c, length = shape
    per_channel = 2 * n * length * itemsize
    group = max(1, min(_GROUP_BYTES // max(per_channel, 1), c // (8 * threads)))
    return group, max(1, min(threads, -(-c // group)))


def workspace_bytes(op, p, itemsize):
    """Extra memory of one call: the backward's per-task float64 shifts, sums and coefficients
    (9 values a channel of a group); nothing else (the forward keeps its sums in registers)."""
    if op != "batch_norm_backward" or p.count == 0:
        return 0
    group, parts = _group(p.planes, itemsize, threads())
    return 9 * 8 * group * parts


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
             p.momentum, p.eps, y.reshape(p.planes), y.nbytes >= _STREAM_BYTES)
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
              p.training, p.eps, gx, gw, gb, *_group(p.planes, dt.itemsize, threads()),
              gx.nbytes >= _STREAM_BYTES)
    return gx.reshape(p.x_shape) if want_x else None, gw if want_w else None, \
        gb if want_b else None

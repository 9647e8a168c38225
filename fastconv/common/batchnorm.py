"""Batch normalization's per-channel arithmetic, the same on both backends. Each rule is an
elementwise formula of plain operators and ``np.sqrt``, so the one definition runs per channel
inside the CPU backend's Numba kernels (fastconv.cpu.batchnorm, on floats) and on whole CuPy
vectors in the CUDA backend (fastconv.cuda.batchnorm; CuPy takes ``np.sqrt`` through
``__array_ufunc__``). An absent weight is 1.0, an absent bias 0.0. The reference
(fastconv.reference.batchnorm) derives the same rules on its own, as the oracle must."""
from __future__ import annotations

import numpy as np


def running_update(running, batch, momentum):
    """PyTorch's running statistic after one batch: ``(1 - momentum)*running + momentum*batch``
    (``batch`` the mean, or the unbiased variance ``var * m / (m - 1)``)."""
    return (1 - momentum) * running + momentum * batch


def scale_and_shift(mean, var, weight, bias, eps):
    """``(scale, shift)`` with ``y = x * scale + shift``: the whole forward of a channel."""
    scale = 1.0 / np.sqrt(var + eps) * weight
    return scale, bias - mean * scale


def input_gradient_coefficients(var, weight, s1, s2, count, eps, training):
    """``(r, k1, k2, k3)`` of ``gx = k1*gy + k2*(x - mean) + k3``, with ``r = 1/sqrt(var + eps)``,
    from the sums ``s1 = sum(gy)`` and ``s2 = sum(gy*(x - mean))`` over the ``count`` values
    of a channel. Training: the full gradient through the batch statistics (derived in
    fastconv.reference.batchnorm); evaluation: ``gx = r*weight*gy``. The weight gradient is
    ``r * s2``, the bias gradient ``s1``."""
    r = 1.0 / np.sqrt(var + eps)
    k1 = r * weight
    if training:
        return r, k1, -r ** 3 * weight * s2 / count, -r * weight * s1 / count
    return r, k1, 0.0 * var, 0.0 * var


def empty_batch_gradients(p, dtype, xp):
    """The gradients of an empty batch, as PyTorch gives them: an empty grad_x, zero grad_weight
    and grad_bias (each None where p.output_mask says so), as ``xp`` (numpy or cupy) arrays."""
    want_x, want_w, want_b = p.output_mask
    c = p.channels
    return (xp.empty(p.x_shape, dtype) if want_x else None,
            xp.zeros(c, dtype) if want_w else None, xp.zeros(c, dtype) if want_b else None)

"""Batch normalization's per-channel arithmetic, the same on both backends: written with array
operators only, so it runs on NumPy vectors (fastconv.cpu.batchnorm) and CuPy vectors
(fastconv.cuda.batchnorm) alike. The reference (fastconv.reference.batchnorm) derives the same
rules on its own, as the oracle must."""
from __future__ import annotations


def update_running_stats(running_mean, running_var, mean, var, p):
    """PyTorch's in-place update from the batch's mean and biased var (m values per channel):
    ``running = (1 - momentum)*running + momentum*batch``, the variance made unbiased."""
    m = p.count
    running_mean[...] = (1 - p.momentum) * running_mean + p.momentum * mean
    running_var[...] = (1 - p.momentum) * running_var + p.momentum * var * m / (m - 1)


def scale_and_shift(mean, var, weight, bias, eps):
    """Per-channel (scale, shift) with y = x * scale + shift: the whole forward in two vectors
    (float64 mean and var; weight and bias None for 1 and 0)."""
    scale = 1.0 / (var + eps) ** 0.5
    if weight is not None:
        scale = scale * weight
    shift = -mean * scale
    if bias is not None:
        shift = shift + bias
    return scale, shift


def input_gradient_coefficients(var, weight, s1, s2, p):
    """Per-channel ``(r, k1, k2, k3)`` of ``gx = k1*gy + k2*(x - mean) + k3``, with
    ``r = 1/sqrt(var + eps)``, from the sums ``s1 = sum(gy)`` and ``s2 = sum(gy*(x - mean))``
    (float64 vectors). Training: the full gradient through the batch statistics (derived in
    fastconv.reference.batchnorm); evaluation: ``gx = r*weight*gy``."""
    r = 1.0 / (var + p.eps) ** 0.5
    gamma = 1.0 if weight is None else weight.astype(var.dtype)
    k1 = r * gamma
    if p.training:
        return r, k1, -r ** 3 * gamma * s2 / p.count, -r * gamma * s1 / p.count
    return r, k1, 0 * var, 0 * var


def empty_batch_gradients(p, dtype, xp):
    """The gradients of an empty batch, as PyTorch gives them: an empty grad_x, zero grad_weight
    and grad_bias (each None where p.output_mask says so), as ``xp`` (numpy or cupy) arrays."""
    want_x, want_w, want_b = p.output_mask
    c = p.channels
    return (xp.empty(p.x_shape, dtype) if want_x else None,
            xp.zeros(c, dtype) if want_w else None, xp.zeros(c, dtype) if want_b else None)

"""Pointwise (1x1) convolution: a matrix product over channels, no im2col.

A 1x1 kernel sees one pixel, so with the pixels of an image as columns (P = Ho*Wo) and the
strided subsample xs = x[:, :, ::sh, ::sw]::

    y[n, g]   (Og, P) = w_g (Og, Cg) @ xs[n, g] (Cg, P)           forward
    gxs[n, g] (Cg, P) = w_g^T (Cg, Og) @ gy[n, g] (Og, P)          backward-data, scattered to ::sh, ::sw
    gw_g      (Og, Cg) = sum_n gy[n, g] (Og, P) @ xs[n, g]^T        backward-weight

The products run in NumPy's BLAS, or in cuBLAS for CuPy arrays: the code is written once for
both array modules, and fastconv.cuda.pointwise serves it on the GPU. x is used in place when
the stride is 1. The batch sum of the weight gradient runs in a fixed order, so results are
bitwise repeatable.
"""
from __future__ import annotations

import numpy as np

from ._loops import channel_sum


def _xp(a):
    """The array module of ``a``: numpy, or cupy for a CuPy array."""
    if isinstance(a, np.ndarray):
        return np
    import cupy

    return cupy


def _pixels(p):
    """Index of the input pixels a 1x1 kernel reads: every sh-th row and sw-th column, Ho x Wo
    of them (the input may extend beyond them, e.g. under a transposed conv's output_padding)."""
    (sh, sw), (ho, wo) = p.stride, p.y_shape[2:]
    return (Ellipsis, slice(0, (ho - 1) * sh + 1, sh), slice(0, (wo - 1) * sw + 1, sw))


def _subsampled(x, p):
    """xs (N, G, Cg, P): the pixels the kernel reads (x itself when that is all of it)."""
    n, c, ho, wo = p.x_shape[:2] + p.y_shape[2:]
    xs = x if x.shape[2:] == (ho, wo) else _xp(x).ascontiguousarray(x[_pixels(p)])
    return xs.reshape(n, p.groups, c // p.groups, ho * wo)


def _grouped(a, p):
    """An output-shaped array as (N, G, Og, P)."""
    n, o, ho, wo = a.shape
    return a.reshape(n, p.groups, o // p.groups, ho * wo)


def _weights(w, p):
    """w as (G, Og, Cg)."""
    o, cg = p.w_shape[:2]
    return w.reshape(p.groups, o // p.groups, cg)


def forward(x, w, b, p):
    """y = w @ x per pixel, plus b; x (N, C, H, W), w (O, C/G, 1, 1) -> (N, O, Ho, Wo)."""
    y = _xp(x).matmul(_weights(w, p), _subsampled(x, p)).reshape(p.y_shape)
    if b is not None:
        y += b.reshape(-1, 1, 1)
    return y


def backward_data(gy, w, p):
    """dL/dx; gy (N, O, Ho, Wo), w (O, C/G, 1, 1) -> (N, C, H, W)."""
    n, c, h, wd = p.x_shape
    ho, wo = p.y_shape[2:]
    xp = _xp(gy)
    gxs = xp.matmul(_weights(w, p).transpose(0, 2, 1), _grouped(gy, p)).reshape(n, c, ho, wo)
    if p.x_shape[2:] == (ho, wo):
        return gxs
    gx = xp.zeros(p.x_shape, dtype=gy.dtype)
    gx[_pixels(p)] = gxs  # pixels the kernel skipped get no gradient
    return gx


def backward_weight(x, gy, p):
    """dL/dw; x (N, C, H, W), gy (N, O, Ho, Wo) -> (O, C/G, 1, 1)."""
    xp = _xp(x)
    per_image = xp.matmul(_grouped(gy, p), _subsampled(x, p).transpose(0, 1, 3, 2))
    gw = xp.zeros(per_image.shape[1:], dtype=x.dtype)
    for n in range(per_image.shape[0]):  # a fixed-order sum over the batch
        gw += per_image[n]
    return gw.reshape(p.w_shape)


def backward_bias(gy, p):
    """dL/db = sum of gy over batch and space; gy (N, K, ...) -> (K,)."""
    return channel_sum(gy)


def why_not(op, p):
    """Pointwise serves 1x1 kernels without padding (any stride and groups)."""
    if p.kernel == (1, 1) and p.padding == ((0, 0), (0, 0)):
        return None
    return f"pointwise needs a 1x1 kernel and no padding, got kernel {p.kernel} and padding {p.padding}"


def workspace_bytes(op, p, itemsize):
    """The strided subsample of x (or its gradient) and the per-image weight-gradient products."""
    n, c = p.x_shape[:2]
    pixels = p.y_shape[2] * p.y_shape[3]
    strided = n * c * pixels * itemsize if p.x_shape[2:] != p.y_shape[2:] else 0
    per_image = n * p.y_shape[1] * p.w_shape[1] * itemsize if op.endswith("_backward") else 0
    return strided + per_image

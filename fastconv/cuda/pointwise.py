"""Pointwise (1x1) convolution on the GPU: a matrix product over channels, no im2col, run by
cuBLAS through ``cupy.matmul`` and batched over images and groups. No kernel of our own: a 1x1
convolution is a GEMM; only the bias gradient is ours (direct's channel sum).

With the pixels of an image as columns (P = Ho*Wo) and the strided subsample
xs = x[:, :, ::sh, ::sw]::

    y[n, g]   (Og, P) = w_g (Og, Cg) @ xs[n, g] (Cg, P)           forward
    gxs[n, g] (Cg, P) = w_g^T (Cg, Og) @ gy[n, g] (Og, P)          backward-data, scattered to ::sh, ::sw
    gw_g      (Og, Cg) = sum_n gy[n, g] (Og, P) @ xs[n, g]^T        backward-weight

x is used in place when the stride is 1. The batch sum of the weight gradient runs in a fixed
order, so results are bitwise repeatable.
"""
from __future__ import annotations

from ..common.pointwise import pixels, spread, subsampled, why_not
from .direct import backward_bias

__all__ = ["forward", "backward_data", "backward_weight", "backward_bias", "why_not",
           "workspace_bytes"]


def _subsampled(x, p):
    """xs (N, G, Cg, P): the pixels the kernel reads (x itself when that is all of it)."""
    import cupy

    n, c, ho, wo = p.x_shape[:2] + p.y_shape[2:]
    xs = cupy.ascontiguousarray(x[pixels(p)]) if subsampled(p) else x
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
    import cupy

    y = cupy.matmul(_weights(w, p), _subsampled(x, p)).reshape(p.y_shape)
    if b is not None:
        y += b.reshape(-1, 1, 1)
    return y


def backward_data(gy, w, p):
    """dL/dx; gy (N, O, Ho, Wo), w (O, C/G, 1, 1) -> (N, C, H, W)."""
    import cupy

    n, c = p.x_shape[:2]
    ho, wo = p.y_shape[2:]
    gxs = cupy.matmul(_weights(w, p).transpose(0, 2, 1), _grouped(gy, p)).reshape(n, c, ho, wo)
    return spread(gxs, p, cupy)


def backward_weight(x, gy, p):
    """dL/dw; x (N, C, H, W), gy (N, O, Ho, Wo) -> (O, C/G, 1, 1)."""
    import cupy

    per_image = cupy.matmul(_grouped(gy, p), _subsampled(x, p).transpose(0, 1, 3, 2))
    gw = cupy.zeros(per_image.shape[1:], dtype=x.dtype)
    for n in range(per_image.shape[0]):  # a fixed-order sum over the batch
        gw += per_image[n]
    return gw.reshape(p.w_shape)


def workspace_bytes(op, p, itemsize):
    """The strided subsample of x (or its gradient) and the per-image weight-gradient products."""
    n, c = p.x_shape[:2]
    pixels_read = p.y_shape[2] * p.y_shape[3]
    strided = n * c * pixels_read * itemsize if subsampled(p) else 0
    per_image = n * p.y_shape[1] * p.w_shape[1] * itemsize if op.endswith("_backward") else 0
    return strided + per_image

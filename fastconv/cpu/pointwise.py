"""Pointwise (1x1) convolution: a matrix product over channels, no im2col.

A 1x1 kernel sees one pixel, so with the pixels of an image as columns (P = Ho*Wo) and the
strided subsample xs = x[:, :, ::sh, ::sw]::

    y[n, g]   (Og, P) = w_g (Og, Cg) @ xs[n, g] (Cg, P)           forward
    gxs[n, g] (Cg, P) = w_g^T (Cg, Og) @ gy[n, g] (Og, P)          backward-data, scattered to ::sh, ::sw
    gw_g      (Og, Cg) = sum_n gy[n, g] (Og, P) @ xs[n, g]^T        backward-weight

Every operand is a block of x, y, grad_y or w themselves (row stride P), so the products read
and write them in place; x is copied only when a stride skips pixels. Threads, as in im2col:
the products are tasks of one parallel loop on Numba's threads, each a single-threaded GEMM
(``_blas.gemm``). Forward and backward-data split each (image, group) into blocks of
``COLUMNS_PER_TASK``-ish pixels; backward-weight gives each task a block of at most
``BLOCK`` x ``BLOCK`` weights and sums over the images and pixel blocks in order, so no sum
depends on which thread ran it or how many there are: results are bitwise repeatable.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from ..common.pointwise import pixels, spread, subsampled, why_not
from ._blas import gemm, library, single_threaded
from ._loops import channel_sum, frozen, planes
from ._threads import parallel_jit

__all__ = ["forward", "backward_data", "backward_weight", "backward_bias", "why_not",
           "workspace_bytes"]

# forward and backward-data: pixels per task, so that a task's block of the input (Cg x
# columns) stays within about TASK_BYTES; backward-weight: the weights of a task
TASK_BYTES = 2**20
MIN_COLUMNS = 256
BLOCK = 128


@parallel_jit(cache=True)
def _products(blas, a3, b3, c3, bias, has_bias, groups, columns, transpose_a):
    # c3[n, g] (M, P) = op(a3[g]) @ b3[n, g] (K, P) per (image, group, block of columns) task:
    # forward (a3 = w as (G, Og, Cg)) and backward-data (a3 the same w, transposed)
    n_, rows, pixels_ = c3.shape
    m = rows // groups
    k = b3.shape[1] // groups
    blocks = (pixels_ + columns - 1) // columns
    tasks = n_ * groups * blocks
    for task in prange(tasks):
        n, g, p0 = task // (groups * blocks), task // blocks % groups, task % blocks * columns
        p1 = min(pixels_, p0 + columns)
        out = c3[n, g * m:(g + 1) * m, p0:p1]
        if has_bias:
            for o in range(m):
                out[o, :] = bias[g * m + o]
        a = a3[g].T if transpose_a else a3[g]
        gemm(blas, a, b3[n, g * k:(g + 1) * k, p0:p1], out, 1.0 if has_bias else 0.0)


@parallel_jit(cache=True)
def _weight_products(blas, gy3, xs3, gw2, groups, columns, block):
    # gw2 (O, Cg) = sum over n and column blocks of gy[n, g] @ xs[n, g]^T, per (group, block of
    # rows, block of columns of gw) task
    n_, o_, pixels_ = gy3.shape
    og, cg = o_ // groups, gw2.shape[1]
    row_blocks, col_blocks = (og + block - 1) // block, (cg + block - 1) // block
    for task in prange(groups * row_blocks * col_blocks):
        g = task // (row_blocks * col_blocks)
        o0 = task // col_blocks % row_blocks * block
        c0 = task % col_blocks * block
        o1, c1 = min(og, o0 + block), min(cg, c0 + block)
        out = gw2[g * og + o0:g * og + o1, c0:c1]
        out[:, :] = 0
        for n in range(n_):
            for p0 in range(0, pixels_, columns):
                p1 = min(pixels_, p0 + columns)
                gemm(blas, gy3[n, g * og + o0:g * og + o1, p0:p1],
                     xs3[n, g * cg + c0:g * cg + c1, p0:p1].T, out, 1.0)


def _columns(k, p, itemsize) -> int:
    """Pixels per task for a product whose inner dimension is k."""
    total = p.y_shape[2] * p.y_shape[3]
    return max(1, min(total, max(MIN_COLUMNS, TASK_BYTES // max(1, k * itemsize))))


def _read(x, p):
    """xs (N, C, P): the pixels the kernel reads (a view of x when that is all of x)."""
    xs = frozen(np.ascontiguousarray(x[pixels(p)])) if subsampled(p) else x
    return planes(xs)


def _grouped_weights(w, p):
    """w as (G, Og, Cg)."""
    o, cg = p.w_shape[:2]
    return w.reshape(p.groups, o // p.groups, cg)


def forward(x, w, b, p):
    """y = w @ x per pixel, plus b; x (N, C, H, W), w (O, C/G, 1, 1) -> (N, O, Ho, Wo)."""
    y = np.empty(p.y_shape, dtype=x.dtype)
    bias = frozen(np.zeros(1, x.dtype)) if b is None else b
    with single_threaded():
        _products(library(), _grouped_weights(w, p), _read(x, p), planes(y), bias, b is not None,
                  p.groups, _columns(p.w_shape[1], p, x.itemsize), False)
    return y


def backward_data(gy, w, p):
    """dL/dx; gy (N, O, Ho, Wo), w (O, C/G, 1, 1) -> (N, C, H, W)."""
    n, c = p.x_shape[:2]
    gxs = np.empty((n, c) + p.y_shape[2:], dtype=gy.dtype)
    og = p.y_shape[1] // p.groups
    with single_threaded():
        _products(library(), _grouped_weights(w, p), planes(gy), planes(gxs),
                  frozen(np.zeros(1, gy.dtype)), False, p.groups, _columns(og, p, gy.itemsize),
                  True)
    return spread(gxs, p, np)


def backward_weight(x, gy, p):
    """dL/dw; x (N, C, H, W), gy (N, O, Ho, Wo) -> (O, C/G, 1, 1)."""
    gw = np.empty(p.w_shape[:2], dtype=x.dtype)
    columns = _columns(min(BLOCK, p.w_shape[1]), p, x.itemsize)
    with single_threaded():
        _weight_products(library(), planes(gy), _read(x, p), gw, p.groups, columns, BLOCK)
    return gw.reshape(p.w_shape)


def backward_bias(gy, p):
    """dL/db = sum of gy over batch and space; gy (N, K, ...) -> (K,)."""
    return channel_sum(gy)


def workspace_bytes(op, p, itemsize):
    """The strided subsample of x (or, in backward-data, the gradient at the pixels read)."""
    n, c = p.x_shape[:2]
    return n * c * p.y_shape[2] * p.y_shape[3] * itemsize if subsampled(p) else 0

"""im2col + GEMM: copy every window into a column, then one matrix product does the rest.

Per group g and image n, with K = Cg*kh*kw and the output pixels (i, j) of rows i0 .. i0+r-1
taken as the T = r*Wo columns of a tile::

    cols   (K, T)      cols[(c, a, e), (i, j)] = xp[n, g*Cg + c, i*sh + a*dh, j*sw + e*dw]
    y_g    (Og, T)     = w_g (Og, K) @ cols                           forward
    dcols  (K, T)      = w_g^T (K, Og) @ gy_g (Og, T), then col2im     backward-data
    gw_g   (Og, K)    += gy_g (Og, T) @ cols^T (T, K), over n and tiles backward-weight

The pixels of a tile are consecutive in each output plane, so ``y_g`` and ``gy_g`` are blocks of
y and grad_y themselves (row stride Ho*Wo): the products read and write them in place, and only
the columns are copied.

Threads: the tiles are tasks of one parallel loop on Numba's threads, and each task builds its
own columns and runs its own single-threaded GEMM (``_blas.gemm``), so that the copies run in
parallel and no second thread pool (BLAS's) ever starts. The slots of the loop take the tasks
round-robin, each with its own column buffer. Backward-data's tasks are whole (image, group)
pairs, so that the col2im scatters of overlapping windows never meet; backward-weight's are
(group, block of K rows of the columns) pairs, each summing over every image and tile in order,
so that the weight gradient needs no reduction between threads. No result depends on which
thread ran a task, nor on how many threads there are: results are bitwise repeatable.

Workspace: one buffer per slot of ``config.IM2COL_TILE_BYTES`` (a tile holds as many output rows
as fit, at least one), plus the zero-padded copy of the input (backward-data: of its gradient).
"""
from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange, uint64

from .. import config
from ._blas import gemm, single_threaded
from ._loops import FASTMATH, channel_sum, cropped, padded

# backward-weight splits the K = Cg*kh*kw rows of the columns into blocks of about this many,
# one task per block and group (fixed, so that no sum depends on the thread count)
WEIGHT_ROWS_PER_TASK = 64


@njit(inline="always")
def _fill_columns(xp, cols, n, c_first, k_first, i0, rows, geometry):
    # xp (N, C, Hp, Wp) -> cols (k rows from k_first, rows*Wo) for output rows i0.. of image n
    kh_, kw_, wo_, sh, sw, dh, dw = geometry
    shu, swu = uint64(sh), uint64(sw)
    for kk in range(cols.shape[0]):
        k = k_first + kk
        c = k // (kh_ * kw_)
        a = k // kw_ % kh_
        e = k % kw_
        q0 = uint64(e * dw)
        for t in range(rows):
            src = xp[n, c_first + c, (i0 + t) * sh + a * dh]
            dst = cols[kk]
            base = uint64(t * wo_)
            for j in range(wo_):
                dst[base + uint64(j)] = src[uint64(j) * swu + q0]


@njit(fastmath=FASTMATH, inline="always")
def _spread_columns(dcols, gxp, n, c_first, i0, rows, geometry):
    # dcols (K, rows*Wo) -> gxp (N, C, Hp, Wp) += ; the adjoint of _fill_columns, in a fixed
    # order (channel, tap, row, column), so overlapping windows add up the same way every time
    kh_, kw_, wo_, sh, sw, dh, dw = geometry
    swu = uint64(sw)
    for k in range(dcols.shape[0]):
        c = k // (kh_ * kw_)
        a = k // kw_ % kh_
        e = k % kw_
        q0 = uint64(e * dw)
        for t in range(rows):
            dst = gxp[n, c_first + c, (i0 + t) * sh + a * dh]
            src = dcols[k]
            base = uint64(t * wo_)
            for j in range(wo_):
                dst[uint64(j) * swu + q0] += src[base + uint64(j)]


@njit(parallel=True, cache=True)
def _forward(xp, w2, bias, has_bias, y3, buffers, groups, tile_rows, geometry):
    # y3 (N, O, Ho*Wo) = w2 (O, K) @ the columns of each (group, image, tile) task, + bias
    n_, o_, pixels = y3.shape
    wo_ = geometry[2]
    ho_, og, k_ = pixels // wo_, o_ // groups, w2.shape[1]
    cg = xp.shape[1] // groups
    tiles = (ho_ + tile_rows - 1) // tile_rows
    slots = buffers.shape[0]
    for s in prange(slots):
        for task in range(s, groups * n_ * tiles, slots):
            g, n, i0 = task // (n_ * tiles), task // tiles % n_, task % tiles * tile_rows
            rows = min(tile_rows, ho_ - i0)
            cols = buffers[s, :k_ * rows * wo_].reshape(k_, rows * wo_)
            _fill_columns(xp, cols, n, g * cg, 0, i0, rows, geometry)
            out = y3[n, g * og:(g + 1) * og, i0 * wo_:(i0 + rows) * wo_]
            if has_bias:
                for o in range(og):
                    out[o, :] = bias[g * og + o]
            gemm(w2[g * og:(g + 1) * og], cols, out, 1.0 if has_bias else 0.0)


@njit(parallel=True, cache=True)
def _backward_data(gy3, w2, gxp, buffers, groups, tile_rows, geometry):
    # gxp (N, C, Hp, Wp) += col2im(w_g^T @ gy_g) per (group, image) task, tile by tile
    n_, o_, pixels = gy3.shape
    wo_ = geometry[2]
    ho_, og, k_ = pixels // wo_, o_ // groups, w2.shape[1]
    cg = gxp.shape[1] // groups
    slots = buffers.shape[0]
    for s in prange(slots):
        for task in range(s, groups * n_, slots):
            g, n = task // n_, task % n_
            wgt = w2[g * og:(g + 1) * og].T  # (K, Og), contiguous columns
            for i0 in range(0, ho_, tile_rows):
                rows = min(tile_rows, ho_ - i0)
                dcols = buffers[s, :k_ * rows * wo_].reshape(k_, rows * wo_)
                gemm(wgt, gy3[n, g * og:(g + 1) * og, i0 * wo_:(i0 + rows) * wo_], dcols, 0.0)
                _spread_columns(dcols, gxp, n, g * cg, i0, rows, geometry)


@njit(parallel=True, cache=True)
def _backward_weight(xp, gy3, gw2, buffers, groups, block, tile_rows, geometry):
    # gw2 (O, K) = sum over images and tiles of gy_g @ cols^T, per (group, block of K) task
    n_, o_, pixels = gy3.shape
    wo_ = geometry[2]
    ho_, og, k_ = pixels // wo_, o_ // groups, gw2.shape[1]
    cg = xp.shape[1] // groups
    blocks = (k_ + block - 1) // block
    slots = buffers.shape[0]
    for s in prange(slots):
        for task in range(s, groups * blocks, slots):
            g, k0 = task // blocks, task % blocks * block
            kc = min(block, k_ - k0)
            out = gw2[g * og:(g + 1) * og, k0:k0 + kc]
            out[:, :] = 0
            for n in range(n_):
                for i0 in range(0, ho_, tile_rows):
                    rows = min(tile_rows, ho_ - i0)
                    cols = buffers[s, :kc * rows * wo_].reshape(kc, rows * wo_)
                    _fill_columns(xp, cols, n, g * cg, k0, i0, rows, geometry)
                    gemm(gy3[n, g * og:(g + 1) * og, i0 * wo_:(i0 + rows) * wo_], cols.T, out,
                         1.0)


def _geometry(p):
    """(kh, kw, Wo, sh, sw, dh, dw): what the column copies need."""
    return (*p.kernel, p.y_shape[3], *p.stride, *p.dilation)


def _k(p):
    return p.w_shape[1] * p.kernel[0] * p.kernel[1]


def weight_block(p) -> int:
    """Rows of the columns per backward-weight task: K split into nearly equal blocks of at
    most WEIGHT_ROWS_PER_TASK."""
    k = _k(p)
    blocks = -(-k // WEIGHT_ROWS_PER_TASK)
    return -(-k // blocks)


def rows_per_tile(p, itemsize, k_rows=None) -> int:
    """Output rows per tile: as many as keep the (k_rows, rows*Wo) columns within
    ``config.IM2COL_TILE_BYTES``, at least one (k_rows: K by default)."""
    per_row = (_k(p) if k_rows is None else k_rows) * p.y_shape[3] * itemsize
    return max(1, min(p.y_shape[2], config.IM2COL_TILE_BYTES // max(1, per_row)))


def _tasks(kernel, p, itemsize) -> int:
    n, groups = p.y_shape[0], p.groups
    if kernel == "backward_data":
        return groups * n
    if kernel == "backward_weight":
        return groups * -(-_k(p) // weight_block(p))
    return groups * n * -(-p.y_shape[2] // rows_per_tile(p, itemsize))


def _slots(kernel, p, itemsize) -> int:
    """Buffers, one per concurrent task: the threads, or fewer when there are fewer tasks."""
    return max(1, min(numba.get_num_threads(), _tasks(kernel, p, itemsize)))


def _buffers(kernel, p, dtype, k_rows):
    """One column buffer per slot, and the output rows of a tile."""
    itemsize = np.dtype(dtype).itemsize
    rows = rows_per_tile(p, itemsize, k_rows)
    return np.empty((_slots(kernel, p, itemsize), k_rows * rows * p.y_shape[3]), dtype), rows


def _planes(a):
    """(N, C, H, W) -> (N, C, H*W), a view."""
    return a.reshape(a.shape[0], a.shape[1], -1)


def forward(x, w, b, p):
    """y = conv(x, w) + b via column tiles and per-task GEMMs; -> (N, O, Ho, Wo)."""
    y = np.empty(p.y_shape, dtype=x.dtype)
    buffers, rows = _buffers("forward", p, x.dtype, _k(p))
    bias = np.zeros(1, x.dtype) if b is None else b
    with single_threaded():
        _forward(padded(x, p.padding), w.reshape(p.w_shape[0], -1), bias, b is not None,
                 _planes(y), buffers, p.groups, rows, _geometry(p))
    return y


def backward_data(gy, w, p):
    """dL/dx via dcols = w_g^T @ gy_g and col2im; -> (N, C, H, W)."""
    gxp = np.zeros(p.x_shape[:2] + p.padded_size, dtype=gy.dtype)
    buffers, rows = _buffers("backward_data", p, gy.dtype, _k(p))
    with single_threaded():
        _backward_data(_planes(gy), w.reshape(p.w_shape[0], -1), gxp, buffers, p.groups, rows,
                       _geometry(p))
    return cropped(gxp, p.padding, p.x_shape[2:])


def backward_weight(x, gy, p):
    """dL/dw = sum over images and tiles of gy_g @ cols^T; -> (O, C/G, kh, kw)."""
    gw = np.empty((p.y_shape[1], _k(p)), dtype=x.dtype)
    block = weight_block(p)
    buffers, rows = _buffers("backward_weight", p, x.dtype, block)
    with single_threaded():
        _backward_weight(padded(x, p.padding), _planes(gy), gw, buffers, p.groups, block, rows,
                         _geometry(p))
    return gw.reshape(p.w_shape)


def backward_bias(gy, p):
    """dL/db = sum of gy over batch and space; gy (N, K, ...) -> (K,)."""
    return channel_sum(gy)


def workspace_bytes(op, p, itemsize):
    """Upper bound of the extra memory of one call of ``op`` (see the module docstring): the
    most that any of its kernel calls (p.kernel_calls) holds at once."""
    return max((_kernel_workspace(k, p, itemsize) for k in p.kernel_calls(op)), default=0)


def _kernel_workspace(kernel, p, itemsize):
    k_rows = weight_block(p) if kernel == "backward_weight" else _k(p)
    tile = k_rows * rows_per_tile(p, itemsize, k_rows) * p.y_shape[3] * itemsize
    n, c = p.x_shape[:2]
    # forward and backward-weight pad a copy of x; backward-data accumulates into a padded
    # gradient (always allocated, padded or not)
    padded_copy = kernel == "backward_data" or p.padding != ((0, 0), (0, 0))
    pad = n * c * p.padded_size[0] * p.padded_size[1] * itemsize if padded_copy else 0
    return _slots(kernel, p, itemsize) * tile + pad

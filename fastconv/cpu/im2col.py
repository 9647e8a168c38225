"""im2col + GEMM: copy every window into a column, then one matrix product does the rest.

Per group g, with K = Cg*kh*kw and the output pixels (n, i, j) taken as columns::

    cols   (K, T)      cols[(c, a, e), (n, i, j)] = xp[n, g*Cg + c, i*sh + a*dh, j*sw + e*dw]
    y_g    (Og, T)     = w_g (Og, K) @ cols                  forward
    dcols  (K, T)      = w_g^T (K, Og) @ gy_g (Og, T)         backward-data, then col2im
    gw_g   (Og, K)    += gy_g (Og, T) @ cols^T (T, K)         backward-weight

The GEMMs run in NumPy's BLAS (multithreaded); Numba kernels move the data (im2col, col2im and
the reshuffles between NCHW and the (channel, pixel) tiles).

Workspace bound: the columns are built a tile of whole output rows at a time, with as many rows
as keep the column tile and its (Og, T) partner within ``config.IM2COL_WORKSPACE_BYTES``; a tile
holds at least one row. So the extra memory of a call is at most
``max(IM2COL_WORKSPACE_BYTES, (K + Og) * Wo * itemsize)`` for the tiles, plus the zero-padded copy
of the input (backward-data: of its gradient) and, in backward-weight, one (Og, K) product.
Tiles are visited in a fixed order and every GEMM has the same shape run after run, so results
are bitwise repeatable.
"""
from __future__ import annotations

import numpy as np
from numba import njit, uint64

from .. import config
from ._loops import FASTMATH, bias_or_zeros, channel_sum, cropped, padded


@njit(cache=True)
def _im2col(xp, cols, c_first, row0, kh_, kw_, ho_, wo_, sh, sw, dh, dw):
    # xp (N, C, Hp, Wp) -> cols (Cg*KH*KW, rows*Wo) for output rows row0.. of (n, i) order
    k_, t_ = cols.shape
    shu, swu, dhu, dwu = uint64(sh), uint64(sw), uint64(dh), uint64(dw)
    for k in range(k_):
        c = k // (kh_ * kw_)
        a = k // kw_ % kh_
        e = k % kw_
        q0 = uint64(e) * dwu
        for t in range(t_ // wo_):
            n = (row0 + t) // ho_
            i = (row0 + t) % ho_
            r = uint64(i) * shu + uint64(a) * dhu
            base = uint64(t * wo_)
            for j in range(wo_):
                cols[k, base + uint64(j)] = xp[n, c_first + c, r, uint64(j) * swu + q0]


@njit(fastmath=FASTMATH, cache=True)
def _col2im(dcols, gxp, c_first, row0, kh_, kw_, ho_, wo_, sh, sw, dh, dw):
    # dcols (Cg*KH*KW, rows*Wo) -> gxp (N, C, Hp, Wp) += ; the adjoint of _im2col. One task per
    # input channel, so overlapping windows add up in a fixed order.
    cg_ = dcols.shape[0] // (kh_ * kw_)
    rows = dcols.shape[1] // wo_
    shu, swu, dhu, dwu = uint64(sh), uint64(sw), uint64(dh), uint64(dw)
    for c in range(cg_):
        for a in range(kh_):
            for e in range(kw_):
                k = (c * kh_ + a) * kw_ + e
                q0 = uint64(e) * dwu
                for t in range(rows):
                    n = (row0 + t) // ho_
                    i = (row0 + t) % ho_
                    r = uint64(i) * shu + uint64(a) * dhu
                    base = uint64(t * wo_)
                    for j in range(wo_):
                        gxp[n, c_first + c, r, uint64(j) * swu + q0] += dcols[k, base + uint64(j)]


@njit(cache=True)
def _tile_to_nchw(tile, y, o_first, row0, bias):
    # tile (Og, rows*Wo) -> y[n, o_first + o, i, :] for output rows row0.. ; adds bias[o_first + o]
    og_, t_ = tile.shape
    ho_, wo_ = y.shape[2], y.shape[3]
    for o in range(og_):
        bv = bias[o_first + o]
        for t in range(t_ // wo_):
            n = (row0 + t) // ho_
            i = (row0 + t) % ho_
            base = uint64(t * wo_)
            for j in range(wo_):
                y[n, o_first + o, i, j] = tile[o, base + uint64(j)] + bv


@njit(cache=True)
def _nchw_to_tile(gy, tile, o_first, row0):
    # gy[n, o_first + o, i, :] for output rows row0.. -> tile (Og, rows*Wo)
    og_, t_ = tile.shape
    ho_, wo_ = gy.shape[2], gy.shape[3]
    for o in range(og_):
        for t in range(t_ // wo_):
            n = (row0 + t) // ho_
            i = (row0 + t) % ho_
            base = uint64(t * wo_)
            for j in range(wo_):
                tile[o, base + uint64(j)] = gy[n, o_first + o, i, j]


def rows_per_tile(p, itemsize) -> int:
    """Output rows per tile: as many as keep (K + Og) * rows * Wo * itemsize within the bound."""
    k = p.w_shape[1] * p.kernel[0] * p.kernel[1]
    og = p.y_shape[1] // p.groups
    per_row = (k + og) * p.y_shape[3] * itemsize
    return max(1, min(p.y_shape[0] * p.y_shape[2], config.IM2COL_WORKSPACE_BYTES // per_row))


def _tiles(p, itemsize):
    """(first row, rows) of each tile of the N*Ho output rows, in order."""
    total, step = p.y_shape[0] * p.y_shape[2], rows_per_tile(p, itemsize)
    return [(r, min(step, total - r)) for r in range(0, total, step)]


def _geometry(p):
    return (p.kernel[0], p.kernel[1], p.y_shape[2], p.y_shape[3], *p.stride, *p.dilation)


def _weight_matrix(w, p, g):
    """w_g as (Og, K)."""
    og = p.y_shape[1] // p.groups
    return w[g * og:(g + 1) * og].reshape(og, -1)


class _Buffers:
    """Tile buffers allocated once per call at the largest tile's size and reused for every
    group and tile (a smaller last tile uses a contiguous prefix)."""

    def __init__(self, p, dtype, *rows_of):
        tile_columns = rows_per_tile(p, np.dtype(dtype).itemsize) * p.y_shape[3]
        self.flat = [np.empty(r * tile_columns, dtype=dtype) for r in rows_of]

    def get(self, i, rows, columns):
        return self.flat[i][:rows * columns].reshape(rows, columns)


def forward(x, w, b, p):
    """y = conv(x, w) + b via column tiles and BLAS; -> (N, O, Ho, Wo)."""
    y = np.empty(p.y_shape, dtype=x.dtype)
    xp = padded(x, p.padding)
    bias = bias_or_zeros(b, p, x.dtype)
    cg, og, k = p.w_shape[1], p.y_shape[1] // p.groups, p.w_shape[1] * p.kernel[0] * p.kernel[1]
    buffers = _Buffers(p, x.dtype, k)
    for g in range(p.groups):
        wg = _weight_matrix(w, p, g)
        for row0, rows in _tiles(p, x.itemsize):
            cols = buffers.get(0, k, rows * p.y_shape[3])
            _im2col(xp, cols, g * cg, row0, *_geometry(p))
            _tile_to_nchw(wg @ cols, y, g * og, row0, bias)
    return y


def backward_data(gy, w, p):
    """dL/dx via dcols = w_g^T @ gy_g and col2im; -> (N, C, H, W)."""
    gxp = np.zeros(p.x_shape[:2] + p.padded_size, dtype=gy.dtype)
    cg, og = p.w_shape[1], p.y_shape[1] // p.groups
    buffers = _Buffers(p, gy.dtype, og)
    for g in range(p.groups):
        wgt = np.ascontiguousarray(_weight_matrix(w, p, g).T)
        for row0, rows in _tiles(p, gy.itemsize):
            tile = buffers.get(0, og, rows * p.y_shape[3])
            _nchw_to_tile(gy, tile, g * og, row0)
            _col2im(wgt @ tile, gxp, g * cg, row0, *_geometry(p))
    return cropped(gxp, p.padding, p.x_shape[2:])


def backward_weight(x, gy, p):
    """dL/dw as the sum over tiles of gy_g @ cols^T; -> (O, C/G, kh, kw)."""
    xp = padded(x, p.padding)
    cg, og, k = p.w_shape[1], p.y_shape[1] // p.groups, p.w_shape[1] * p.kernel[0] * p.kernel[1]
    gw = np.zeros((p.y_shape[1], k), dtype=x.dtype)
    buffers = _Buffers(p, x.dtype, k, og)
    for g in range(p.groups):
        for row0, rows in _tiles(p, x.itemsize):
            cols = buffers.get(0, k, rows * p.y_shape[3])
            _im2col(xp, cols, g * cg, row0, *_geometry(p))
            tile = buffers.get(1, og, rows * p.y_shape[3])
            _nchw_to_tile(gy, tile, g * og, row0)
            gw[g * og:(g + 1) * og] += tile @ cols.T
    return gw.reshape(p.w_shape)


def backward_bias(gy, p):
    """dL/db = sum of gy over batch and space; gy (N, K, ...) -> (K,)."""
    return channel_sum(gy)


def workspace_bytes(op, p, itemsize):
    """Upper bound of the extra memory of one call (see the module docstring)."""
    k = p.w_shape[1] * p.kernel[0] * p.kernel[1]
    og = p.y_shape[1] // p.groups
    tile = (k + og) * rows_per_tile(p, itemsize) * p.y_shape[3] * itemsize
    n, c = p.x_shape[:2]
    padded_copy = p.padding != ((0, 0), (0, 0))
    pad = n * c * p.padded_size[0] * p.padded_size[1] * itemsize if padded_copy else 0
    weight_tile = og * k * itemsize  # w_g transposed (backward-data) or gy_g @ cols^T (weight)
    return tile + pad + weight_tile

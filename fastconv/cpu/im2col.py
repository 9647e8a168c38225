"""im2col + GEMM: copy every window into a column, then one matrix product does the rest.

The output pixels of the batch, in (n, i, j) order, are cut into tiles of whole output rows:
a tile is one block of rows of one image, or, when a whole image fits the tile budget, a run of
whole images. Per group g, with K = Cg*kh*kw and a tile's T pixels as columns::

    cols   (K, T)      cols[(c, a, e), (n, i, j)] = xp[n, g*Cg + c, i*sh + a*dh, j*sw + e*dw]
                       (xp: x with its zero padding)
    yt_g   (Og, T)     = w_g (Og, K) @ cols                            forward
    dcols  (K, T)      = w_g^T (K, Og) @ gyt_g (Og, T), then col2im     backward-data
    gw_g   (Og, K)    += gyt_g (Og, T) @ cols^T (T, K), over the tiles  backward-weight

``yt`` and ``gyt`` are y and grad_y in channel-major order, (O, N*Ho*Wo), so that every tile's
block of them is a plain strided matrix that the products read and write in place; one
parallel pass moves y from (and grad_y into) that order (a no-op for a single image).

Threads: the tiles are the tasks of one parallel loop on Numba's threads, each building its own
columns and running its own single-threaded GEMM (``_blas.gemm``), so the copies run in
parallel and no second thread pool (BLAS's) ever starts. The tiles are as equal as the rows
allow, so the threads' equal shares of them are equal work, and each thread builds columns in
its own buffer (``numba.get_thread_id``). (Handing tasks out one at a time as threads come free,
Numba's parallel chunk size 1, cost more than it balanced: 2x on a one-tile call.)
Backward-data's tasks are whole images (a run of them, or one image done tile by tile), so the
col2im scatters of overlapping windows never meet; backward-weight's are (group, block of K
rows of the columns, share of the tiles) triples, each summing over the tiles of its share in
order into a partial weight gradient of its own, and the shares are then added in order. A
layer with many groups or a long K has a single share: no partials at all; one with few (a
stem's 3 input channels make K = 147, 3 blocks) splits its tiles into enough shares for
``WEIGHT_TASKS`` tasks (ResNet's stem: 36 -> 22 ms, where 3 tasks had kept one of two threads
half idle). The shares are fixed by the shapes. No result depends on which thread ran a task or
on how many threads there are: bitwise repeatable.

The zero padding is never copied: the column copies write zeros where a window hangs over the
edge of x (per tap, the output rows and columns whose input lies inside are known in advance),
and col2im drops what falls there.

Workspace: one column buffer per thread of at most ``config.IM2COL_TILE_BYTES`` (a tile holds as
many output rows as fit, at least one, split as evenly as the rows allow, and a call has at
least ``config.IM2COL_MIN_TILES`` tiles where it has the rows, so that a small batch, which
fits one tile, still gives every thread work) and the channel-major
output or output gradient (unless N == 1); backward-weight with several shares, their partial
weight gradients.
"""
from __future__ import annotations

import numpy as np
from numba import get_thread_id, njit, prange, uint64

from .. import config
from ._blas import gemm, library, single_threaded
from ._loops import FASTMATH, bias_or_zeros, channel_sum, frozen, planes, taps
from ._threads import parallel_jit, threads

# backward-weight splits the K = Cg*kh*kw rows of the columns into blocks of about this many,
# one task per block and group (fixed, so that no sum depends on the thread count)
WEIGHT_ROWS_PER_TASK = 64
# ... and, where that gives fewer tasks than this, also splits the tiles into shares summed
# apart and added in order (weight_shares)
WEIGHT_TASKS = 8


@njit(inline="always")
def _tile(t, n_, ho_, rows):
    """(first output row in (n, i) order, rows) of tile t; rows >= Ho is a multiple of Ho."""
    if rows >= ho_:
        r0 = t * rows
        return r0, min(rows, n_ * ho_ - r0)
    per = (ho_ + rows - 1) // rows
    i0 = t % per * rows
    return t // per * ho_ + i0, min(rows, ho_ - i0)


@njit(inline="always")
def _own(buffers):
    """The calling thread's row of the per-thread buffers. A serial twin (a tiny call, one
    thread) runs outside any parallel region, where TBB numbers the thread -2: row 0 then."""
    t = get_thread_id()
    return t if 0 <= t < buffers.shape[0] else 0


@njit(inline="always")
def _tile_count(n_, ho_, rows):
    if rows >= ho_:
        return (n_ * ho_ + rows - 1) // rows
    return n_ * ((ho_ + rows - 1) // rows)


@njit(inline="always")
def _gather(dst, d0, src, s0, count, step):
    for j in range(count):
        dst[d0 + j] = src[s0 + j * step]


@njit(inline="always")
def _zero(dst, d0, count):
    for j in range(count):
        dst[d0 + j] = 0


@njit(fastmath=FASTMATH, inline="always")
def _spread(dst, d0, step, src, s0, count):
    for j in range(count):
        dst[d0 + j * step] += src[s0 + j]


@njit(inline="always")
def _whole_images(geometry, w_, r0, rows):
    """Whether a tile takes the flat column copies (_fill_images, _spread_images): a run of
    whole images at unit stride with W == Wo."""
    ho_, wo_, sh, sw = geometry[2], geometry[3], geometry[4], geometry[5]
    return sh == 1 and sw == 1 and w_ == wo_ and r0 % ho_ == 0 and rows % ho_ == 0


@njit(inline="always")
def _fill_columns(x, cols, c_first, k_first, r0, rows, geometry):
    # x (N, C, H, W) -> cols (kc, rows*Wo): rows k_first.. of the tile's columns, with the
    # zero padding written as zeros (no padded copy of x): per tap, the output rows [i0, i1)
    # and columns [j0, j1) whose input lies inside x are copied, the rest are zero
    kh_, kw_, ho_, wo_, sh, sw, dh, dw, top, left = geometry
    _, c_, h_, w_ = x.shape
    if _whole_images(geometry, w_, r0, rows):
        _fill_images(x, cols, c_first, k_first, r0 // ho_, rows // ho_, geometry)
        return
    flat, out = x.reshape(-1), cols.reshape(-1)
    wou, swu = uint64(wo_), uint64(sw)
    for kk in range(cols.shape[0]):
        k = k_first + kk
        c, a, e = k // (kh_ * kw_), k // kw_ % kh_, k % kw_
        j0, j1 = taps(e * dw - left, sw, w_, wo_)
        i0, i1 = taps(a * dh - top, sh, h_, ho_)
        ju0, ju1, count = uint64(j0), uint64(j1), uint64(j1 - j0)
        n, i = r0 // ho_, r0 % ho_  # the (image, row) of each tile row, stepped along
        dst = uint64(kk * cols.shape[1])
        for _ in range(rows):
            if i < i0 or i >= i1:
                _zero(out, dst, wou)
            else:
                src = uint64(((n * c_ + c_first + c) * h_ + i * sh + a * dh - top) * w_
                             + j0 * sw + e * dw - left)
                _zero(out, dst, ju0)
                if sw == 1:
                    _gather(out, dst + ju0, flat, src, count, uint64(1))
                elif sw == 2:
                    _gather(out, dst + ju0, flat, src, count, uint64(2))
                else:
                    _gather(out, dst + ju0, flat, src, count, swu)
                _zero(out, dst + ju1, wou - ju1)
            dst += wou
            i += 1
            if i == ho_:
                n, i = n + 1, 0


@njit(inline="always")
def _fill_images(x, cols, c_first, k_first, n_first, images, geometry):
    # _fill_columns for a tile of whole images at unit stride with W == Wo (a "same" padded
    # layer, small images): per tap and image, the Ho*Wo columns are the input plane shifted
    # by a constant, so one contiguous copy from the first column whose input lies inside x to
    # the last, then zeros over the rest (the rows above and below, and the |shift| columns of
    # each row that fall on the padding). Row by row, 4x4 images cost a loop setup per
    # 4-element row, three times the copying itself (LeNet's second conv).
    kh_, kw_, ho_, wo_, sh, sw, dh, dw, top, left = geometry
    _, c_, h_, w_ = x.shape
    flat, out = x.reshape(-1), cols.reshape(-1)
    plane = uint64(ho_ * wo_)
    for kk in range(cols.shape[0]):
        k = k_first + kk
        c, a, e = k // (kh_ * kw_), k // kw_ % kh_, k % kw_
        i0, i1 = taps(a * dh - top, 1, h_, ho_)
        j0, j1 = taps(e * dw - left, 1, w_, wo_)
        dst = uint64(kk * cols.shape[1])
        if i0 >= i1 or j0 >= j1:  # the tap reads only padding
            _zero(out, dst, plane * uint64(images))
            continue
        first, last = uint64(i0 * wo_ + j0), uint64((i1 - 1) * wo_ + j1)  # [first, last)
        shift = (a * dh - top) * w_ + e * dw - left  # input index - column index, in a plane
        for n in range(n_first, n_first + images):
            src = uint64((n * c_ + c_first + c) * h_ * w_ + i0 * wo_ + j0 + shift)
            _zero(out, dst, first)
            _gather(out, dst + first, flat, src, last - first, uint64(1))
            for i in range(i0, i1 - 1):  # the padding columns between two rows' valid runs
                _zero(out, dst + uint64(i * wo_ + j1), uint64(wo_ - j1 + j0))
            _zero(out, dst + last, plane - last)
            dst += plane


@njit(fastmath=FASTMATH, inline="always")
def _spread_columns(dcols, gx, c_first, r0, rows, geometry):
    # dcols (K, rows*Wo) -> gx (N, C, H, W) += ; the adjoint of _fill_columns (what fell on the
    # padding is dropped), in a fixed order (channel, tap, row, column), so overlapping windows
    # add up the same way every time
    kh_, kw_, ho_, wo_, sh, sw, dh, dw, top, left = geometry
    _, c_, h_, w_ = gx.shape
    if _whole_images(geometry, w_, r0, rows):
        _spread_images(dcols, gx, c_first, r0 // ho_, rows // ho_, geometry)
        return
    flat, src_all = gx.reshape(-1), dcols.reshape(-1)
    wou, swu = uint64(wo_), uint64(sw)
    for k in range(dcols.shape[0]):
        c, a, e = k // (kh_ * kw_), k // kw_ % kh_, k % kw_
        j0, j1 = taps(e * dw - left, sw, w_, wo_)
        i0, i1 = taps(a * dh - top, sh, h_, ho_)
        count = uint64(j1 - j0)
        n, i = r0 // ho_, r0 % ho_
        src = uint64(k * dcols.shape[1] + j0)
        for _ in range(rows):
            if i0 <= i < i1:
                dst = uint64(((n * c_ + c_first + c) * h_ + i * sh + a * dh - top) * w_
                             + j0 * sw + e * dw - left)
                if sw == 1:
                    _spread(flat, dst, uint64(1), src_all, src, count)
                elif sw == 2:
                    _spread(flat, dst, uint64(2), src_all, src, count)
                else:
                    _spread(flat, dst, swu, src_all, src, count)
            src += wou
            i += 1
            if i == ho_:
                n, i = n + 1, 0


@njit(fastmath=FASTMATH, inline="always")
def _spread_images(dcols, gx, c_first, n_first, images, geometry):
    # _spread_columns for a tile of whole images at unit stride with W == Wo (as _fill_images):
    # per tap and image, one flat pass from the first column whose input lies inside gx to the
    # last, adding 0.0 where a column falls on the padding. Bitwise the row-by-row sums: every
    # element meets the same values in the same (channel, tap) order, and adding 0.0 changes
    # nothing, since a sum that starts from +0.0 is never -0.0.
    kh_, kw_, ho_, wo_, sh, sw, dh, dw, top, left = geometry
    _, c_, h_, w_ = gx.shape
    flat, src_all = gx.reshape(-1), dcols.reshape(-1)
    plane = ho_ * wo_
    keep = np.empty((kw_, plane), dtype=np.bool_)  # per column tap: its columns inside gx
    for e in range(kw_):
        j0, j1 = taps(e * dw - left, 1, w_, wo_)
        for i in range(ho_):
            for j in range(wo_):
                keep[e, i * wo_ + j] = j0 <= j < j1
    for k in range(dcols.shape[0]):
        c, a, e = k // (kh_ * kw_), k // kw_ % kh_, k % kw_
        i0, i1 = taps(a * dh - top, 1, h_, ho_)
        j0, j1 = taps(e * dw - left, 1, w_, wo_)
        if i0 >= i1 or j0 >= j1:  # the tap reads only padding
            continue
        first, last = uint64(i0 * wo_ + j0), uint64((i1 - 1) * wo_ + j1)  # [first, last)
        shift = (a * dh - top) * w_ + e * dw - left  # input index - column index, in a plane
        src = uint64(k * dcols.shape[1] + i0 * wo_ + j0)
        for n in range(n_first, n_first + images):
            dst = uint64((n * c_ + c_first + c) * h_ * w_ + i0 * wo_ + j0 + shift)  # in gx
            for t in range(last - first):
                flat[dst + t] += src_all[src + t] if keep[e, first + t] else 0.0
            src += uint64(plane)


@parallel_jit(cache=True)
def _forward(blas, x, w2, yt, buffers, groups, tile_rows, geometry):
    # yt (O, N*Ho*Wo) = w_g @ the columns of each (group, tile) task
    n_, ho_, wo_ = x.shape[0], geometry[2], geometry[3]
    og, k_, cg = w2.shape[0] // groups, w2.shape[1], x.shape[1] // groups
    tiles = _tile_count(n_, ho_, tile_rows)
    for task in prange(groups * tiles):
        g = task // tiles
        r0, rows = _tile(task % tiles, n_, ho_, tile_rows)
        cols = buffers[_own(buffers), :k_ * rows * wo_].reshape(k_, rows * wo_)
        _fill_columns(x, cols, g * cg, 0, r0, rows, geometry)
        gemm(blas, w2[g * og:(g + 1) * og], cols,
             yt[g * og:(g + 1) * og, r0 * wo_:(r0 + rows) * wo_], 0.0)


@parallel_jit(cache=True)
def _backward_data(blas, gyt, w2, gx, buffers, groups, tile_rows, geometry):
    # gx (N, C, H, W) += col2im(w_g^T @ gyt_g) per (group, whole images) task, tile by tile
    n_, ho_, wo_ = gx.shape[0], geometry[2], geometry[3]
    og, k_, cg = w2.shape[0] // groups, w2.shape[1], gx.shape[1] // groups
    tiles = _tile_count(n_, ho_, tile_rows)
    # tiles of one task: whole images (none at all in an empty batch)
    per_task = 1 if tile_rows >= ho_ or n_ == 0 else tiles // n_
    tasks = tiles // per_task
    for task in prange(groups * tasks):
        g = task // tasks
        wgt = w2[g * og:(g + 1) * og].T  # (K, Og), contiguous columns
        buffer = buffers[_own(buffers)]
        for t in range(task % tasks * per_task, (task % tasks + 1) * per_task):
            r0, rows = _tile(t, n_, ho_, tile_rows)
            dcols = buffer[:k_ * rows * wo_].reshape(k_, rows * wo_)
            gemm(blas, wgt, gyt[g * og:(g + 1) * og, r0 * wo_:(r0 + rows) * wo_], dcols, 0.0)
            _spread_columns(dcols, gx, g * cg, r0, rows, geometry)


@parallel_jit(cache=True)
def _backward_weight(blas, x, gyt, partial, buffers, groups, block, tile_rows, geometry):
    # partial (S, O, K): partial[s] = sum over the tiles of share s of gyt_g @ cols^T, one task
    # per (group, block of K rows, share s of the tiles); the caller adds the S shares in order
    n_, ho_, wo_ = x.shape[0], geometry[2], geometry[3]
    shares, og, k_ = partial.shape[0], partial.shape[1] // groups, partial.shape[2]
    cg = x.shape[1] // groups
    tiles = _tile_count(n_, ho_, tile_rows)
    blocks = (k_ + block - 1) // block
    for task in prange(groups * blocks * shares):
        s, gk = task % shares, task // shares
        g, k0 = gk // blocks, gk % blocks * block
        kc = min(block, k_ - k0)
        out = partial[s, g * og:(g + 1) * og, k0:k0 + kc]
        out[:, :] = 0
        buffer = buffers[_own(buffers)]
        for t in range(s * tiles // shares, (s + 1) * tiles // shares):
            r0, rows = _tile(t, n_, ho_, tile_rows)
            cols = buffer[:kc * rows * wo_].reshape(kc, rows * wo_)
            _fill_columns(x, cols, g * cg, k0, r0, rows, geometry)
            gemm(blas, gyt[g * og:(g + 1) * og, r0 * wo_:(r0 + rows) * wo_], cols.T, out,
                 1.0)


@parallel_jit(cache=True)
def _to_channel_major(a3, out):
    # a3 (N, O, P) -> out (O, N*P)
    n_, o_, p_ = a3.shape
    for task in prange(n_ * o_):
        n, o = task // o_, task % o_
        for j in range(p_):
            out[o, n * p_ + j] = a3[n, o, j]


@parallel_jit(cache=True)
def _from_channel_major(at, out, bias):
    # at (O, N*P) -> out (N, O, P), plus bias[o]
    n_, o_, p_ = out.shape
    for task in prange(n_ * o_):
        n, o = task // o_, task % o_
        for j in range(p_):
            out[n, o, j] = at[o, n * p_ + j] + bias[o]


def _geometry(p):
    """(kh, kw, Ho, Wo, sh, sw, dh, dw, top, left): what the column copies need."""
    return (*p.kernel, *p.y_shape[2:], *p.stride, *p.dilation, p.padding[0][0], p.padding[1][0])


def _k(p):
    return p.w_shape[1] * p.kernel[0] * p.kernel[1]


def weight_block(p) -> int:
    """Rows of the columns per backward-weight task: K split into nearly equal blocks of at
    most WEIGHT_ROWS_PER_TASK."""
    k = _k(p)
    blocks = -(-k // WEIGHT_ROWS_PER_TASK)
    return -(-k // blocks)


def weight_shares(p, tile_rows) -> int:
    """Shares of the tiles that backward-weight sums separately (then adds in order): enough
    that a layer with few (group, K block) tasks, such as a stem's 3 input channels, still has
    WEIGHT_TASKS tasks; fixed by the shapes, never by the thread count, so no sum depends on
    the threads."""
    k = _k(p)
    tasks = p.groups * -(-k // weight_block(p))
    tiles = _tile_count(p.y_shape[0], p.y_shape[2], tile_rows) if p.y_shape[0] else 1
    return max(1, min(tiles, -(-WEIGHT_TASKS // tasks)))


def rows_per_tile(p, itemsize, k_rows=None) -> int:
    """Output rows per tile: as many as keep the (k_rows, rows*Wo) columns within
    ``config.IM2COL_TILE_BYTES`` and leave at least ``config.IM2COL_MIN_TILES`` tiles, at least
    one row (k_rows: K by default); from a whole image up, whole images."""
    n, ho = max(1, p.y_shape[0]), p.y_shape[2]  # an empty batch has no tiles, sizes aside
    per_row = (_k(p) if k_rows is None else k_rows) * p.y_shape[3] * itemsize
    rows = max(1, min(n * ho, config.IM2COL_TILE_BYTES // max(1, per_row),
                      n * ho // max(1, config.IM2COL_MIN_TILES)))
    if rows < ho:  # blocks of rows of one image, as equal as they can be
        return -(-ho // -(-ho // rows))
    images = rows // ho  # runs of whole images, as equal as they can be
    return -(-n // -(-n // images)) * ho


def _buffers(p, dtype, k_rows):
    """One column buffer per thread, and the output rows of a tile."""
    itemsize = np.dtype(dtype).itemsize
    rows = rows_per_tile(p, itemsize, k_rows)
    # numba.get_thread_id picks a thread's own; untouched buffers take no physical memory
    return np.empty((threads(), k_rows * rows * p.y_shape[3]), dtype), rows


def _channel_major(a):
    """(N, O, Ho, Wo) -> (O, N*Ho*Wo): a copy, or a view for one image."""
    n, o, ho, wo = a.shape
    if n == 1:
        return a.reshape(o, ho * wo)
    out = np.empty((o, n * ho * wo), dtype=a.dtype)
    _to_channel_major(planes(a), out)
    return frozen(out)


def forward(x, w, b, p):
    """y = conv(x, w) + b via column tiles and per-task GEMMs; -> (N, O, Ho, Wo)."""
    n, o = p.y_shape[:2]
    y = np.empty(p.y_shape, dtype=x.dtype)
    in_place = n == 1 and b is None  # y is already channel-major
    yt = y.reshape(o, y.size // o) if in_place else np.empty((o, y.size // o), x.dtype)
    buffers, rows = _buffers(p, x.dtype, _k(p))
    with single_threaded():
        _forward(library(), x, w.reshape(o, _k(p)), yt, buffers, p.groups, rows, _geometry(p))
    if not in_place:
        _from_channel_major(yt, planes(y), bias_or_zeros(b, p, x.dtype))
    return y


def backward_data(gy, w, p):
    """dL/dx via dcols = w_g^T @ gy_g and col2im; -> (N, C, H, W)."""
    gx = np.zeros(p.x_shape, dtype=gy.dtype)
    buffers, rows = _buffers(p, gy.dtype, _k(p))
    with single_threaded():
        _backward_data(library(), _channel_major(gy), w.reshape(p.w_shape[0], _k(p)), gx,
                       buffers, p.groups, rows, _geometry(p))
    return gx


def backward_weight(x, gy, p):
    """dL/dw = sum over the tiles of gy_g @ cols^T; -> (O, C/G, kh, kw)."""
    block = weight_block(p)
    buffers, rows = _buffers(p, x.dtype, block)
    partial = np.empty((weight_shares(p, rows), p.y_shape[1], _k(p)), dtype=x.dtype)
    with single_threaded():
        _backward_weight(library(), x, _channel_major(gy), partial, buffers, p.groups, block,
                         rows, _geometry(p))
    if partial.shape[0] == 1:
        return partial[0].reshape(p.w_shape)
    gw = partial[0].copy()
    with np.errstate(invalid="ignore", over="ignore"):  # Inf + -Inf is NaN, silently, as in
        for share in partial[1:]:  # the kernels; in order: no sum depends on the threads
            gw += share
    return gw.reshape(p.w_shape)


def backward_bias(gy, p):
    """dL/db = sum of gy over batch and space; gy (N, K, ...) -> (K,)."""
    return channel_sum(gy)


def workspace_bytes(op, p, itemsize):
    """Upper bound of the extra memory of one call of ``op`` (see the module docstring): the
    most that any of its kernel calls (p.kernel_calls) holds at once."""
    return max((kernel_workspace(k, p, itemsize) for k in p.kernel_calls(op)), default=0)


def kernel_workspace(kernel, p, itemsize):
    k_rows = weight_block(p) if kernel == "backward_weight" else _k(p)
    rows = rows_per_tile(p, itemsize, k_rows)
    tile = k_rows * rows * p.y_shape[3] * itemsize
    # y (forward, unless one image without bias) or grad_y (backward) in channel-major order
    channel_major = p.y_shape[0] > 1 or (kernel == "forward" and p.has_bias)
    outputs = np.prod(p.y_shape, dtype=np.int64) * itemsize if channel_major else 0
    shares = weight_shares(p, rows) if kernel == "backward_weight" else 1
    partials = shares * p.y_shape[1] * _k(p) * itemsize if shares > 1 else 0
    return threads() * tile + int(outputs) + partials

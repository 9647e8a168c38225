"""Implicit-GEMM convolution on the GPU (kernels/implicit_gemm.cu): each direction is one matrix
product per group whose operands are gathered from x, w and gy while shared-memory tiles are
filled (im2col on the fly, no columns in global memory), with register-blocked outer products:
a block of 256 threads computes a 64 x 64 output tile, each thread 4 x 4 of it. With
K = Cg*kh*kw::

    forward          y  (Og x N*Ho*Wo)   = w (Og x K) . columns of x (K x N*Ho*Wo)
    backward-data    gx (Cg x N*H*W)     = w^T (Cg x Og*kh*kw) . gathered gy (Og*kh*kw x N*H*W)
    backward-weight  gw (Og x K)         = gy (Og x N*Ho*Wo) . columns of x^T (N*Ho*Wo x K)

Backward-weight's long contraction (N*Ho*Wo) over few output tiles is split into slices so the
GPU has enough blocks; the slices' partial sums go to a workspace and are added in a fixed order
by a second kernel, so the result is bitwise repeatable (no atomics).
"""
from __future__ import annotations

from math import prod

import numpy as np

from . import direct
from ._conv import conv_geometry, conv_index_bits, ints
from ._module import GEMM_TILE, index, index_bits, launch, launch_grid

BM, BN, BK, _, _ = GEMM_TILE
TARGET_BLOCKS = 512     # backward-weight: split K until about this many blocks (H100: 132 SMs)
MIN_SLICE = 16 * BK     # ... but keep at least this much of K per slice
MAX_GRID_YZ = 65_535    # CUDA's limit on gridDim.y and gridDim.z


def _ceil(a, b):
    return -(-a // b)


def _group_sizes(p):
    """(G, Og, Cg, taps)."""
    o, cg = p.w_shape[:2]
    return p.groups, o // p.groups, cg, prod(p.kernel)


def slicing(p) -> tuple[int, int]:
    """(slices, k_per_slice) of backward-weight's contraction over N*Ho*Wo."""
    g, og, cg, taps = _group_sizes(p)
    k_len = p.x_shape[0] * prod(p.y_shape[2:])
    tiles = _ceil(cg * taps, BN) * _ceil(og, BM) * g
    slices = max(1, min(_ceil(TARGET_BLOCKS, tiles), k_len // MIN_SLICE, MAX_GRID_YZ // g))
    k_per_slice = _ceil(_ceil(k_len, slices), BK) * BK
    return max(1, _ceil(k_len, k_per_slice)), k_per_slice


def forward(x, w, b, p):
    """y = conv(x, w) + b; x (N, C, H, W), w (O, C/G, kh, kw) -> (N, O, Ho, Wo)."""
    import cupy

    g, og, _, _ = _group_sizes(p)
    y = cupy.empty(p.y_shape, dtype=x.dtype)
    grid = (_ceil(p.x_shape[0] * prod(p.y_shape[2:]), BN), _ceil(og, BM), g)
    launch_grid("implicit_gemm_forward", x.dtype, conv_index_bits(p), grid,
                (x, w, w if b is None else b, np.int32(b is not None), y, *conv_geometry(p),
                 np.int32(g)))
    return y


def backward_data(gy, w, p):
    """dL/dx; gy (N, O, Ho, Wo), w (O, C/G, kh, kw) -> (N, C, H, W)."""
    import cupy

    g, _, cg, _ = _group_sizes(p)
    gx = cupy.empty(p.x_shape, dtype=gy.dtype)
    grid = (_ceil(prod(p.x_shape) // p.x_shape[1], BN), _ceil(cg, BM), g)
    launch_grid("implicit_gemm_backward_data", gy.dtype, conv_index_bits(p), grid,
                (gy, w, gx, *conv_geometry(p), np.int32(g)))
    return gx


def backward_weight(x, gy, p):
    """dL/dw; x (N, C, H, W), gy (N, O, Ho, Wo) -> (O, C/G, kh, kw)."""
    import cupy

    g, og, cg, taps = _group_sizes(p)
    slices, k_per_slice = slicing(p)
    bits = max(conv_index_bits(p), index_bits(slices * prod(p.w_shape)))
    gw = cupy.empty(p.w_shape, dtype=x.dtype)
    out = gw if slices == 1 else cupy.empty((slices,) + p.w_shape, dtype=x.dtype)
    grid = (_ceil(cg * taps, BN), _ceil(og, BM), g * slices)
    launch_grid("implicit_gemm_backward_weight", x.dtype, bits, grid,
                (x, gy, out, *conv_geometry(p), *ints(g, slices), index(bits, k_per_slice)))
    if slices > 1:
        launch("implicit_gemm_slice_sum", x.dtype, bits, gw.size,
               (out, gw, np.int32(slices), index(bits, gw.size)))
    return gw


backward_bias = direct.backward_bias


def why_not(op, p):
    """Implicit GEMM serves every convolution whose groups and row tiles fit CUDA's grid."""
    g, og, cg, _ = _group_sizes(p)
    if g > MAX_GRID_YZ or _ceil(max(og, cg), BM) > MAX_GRID_YZ:
        return (f"implicit_gemm launches a grid of groups x {BM}-channel tiles, at most "
                f"{MAX_GRID_YZ} each; got groups={g} and {max(og, cg)} channels per group")
    return None


def workspace_bytes(op, p, itemsize):
    """Backward-weight's partial sums when its contraction is split into slices."""
    if not op.endswith("_backward"):
        return 0
    slices, _ = slicing(p)
    return slices * prod(p.w_shape) * itemsize if slices > 1 else 0

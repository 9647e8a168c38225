"""Direct convolution on the GPU (kernels/conv.cu), shared-memory tiled: a block of 256
threads owns an 8 x 32 tile of output pixels for 4 output channels, and per input channel
copies the input patch under the tile into shared memory once, then runs every tap from there.
Backward-data is the same gather over a tile of input pixels and the gy patch they read, so no
atomics. Backward-weight gives each filter slice (oc, ci) one block (per 9 taps) whose threads
each sum a share of N*Ho*Wo for all its taps at once, one load of gy serving them all, in a
fixed order. Dilation, stride, padding and groups are plain loop bounds; no workspace."""
from __future__ import annotations

import numpy as np

from ._conv import channel_sum, conv_geometry, conv_index_bits
from ._module import DIRECT_TILE, launch

TH, TW, CB = DIRECT_TILE
WEIGHT_TAPS = 9  # FC_WEIGHT_TAPS in conv.cu: the taps one backward-weight block sums at once


def tiles(n, groups, channels_per_group, rows, cols) -> int:
    """Blocks of work: one per image, group, block of CB channels and TH x TW pixel tile."""
    return (n * groups * -(-channels_per_group // CB) * -(-rows // TH) * -(-cols // TW))


def forward(x, w, b, p):
    """y = conv(x, w) + b; x (N, C, H, W), w (O, C/G, kh, kw) -> (N, O, Ho, Wo)."""
    import cupy

    y = cupy.empty(p.y_shape, dtype=x.dtype)
    work = tiles(p.x_shape[0], p.groups, p.w_shape[0] // p.groups, *p.y_shape[2:])
    launch("direct_forward", x.dtype, conv_index_bits(p), y.size,
           (x, w, w if b is None else b, np.int32(b is not None), y, *conv_geometry(p),
            np.int32(p.groups)), blocks=work)
    return y


def backward_data(gy, w, p):
    """dL/dx; gy (N, O, Ho, Wo), w (O, C/G, kh, kw) -> (N, C, H, W)."""
    import cupy

    gx = cupy.empty(p.x_shape, dtype=gy.dtype)
    work = tiles(p.x_shape[0], p.groups, p.w_shape[1], *p.x_shape[2:])
    launch("direct_backward_data", gy.dtype, conv_index_bits(p), gx.size,
           (gy, w, gx, *conv_geometry(p), np.int32(p.groups)), blocks=work)
    return gx


def backward_weight(x, gy, p):
    """dL/dw; x (N, C, H, W), gy (N, O, Ho, Wo) -> (O, C/G, kh, kw)."""
    import cupy

    gw = cupy.empty(p.w_shape, dtype=x.dtype)
    o, cg, kh, kw = p.w_shape
    launch("direct_backward_weight", x.dtype, conv_index_bits(p), gw.size,
           (x, gy, gw, *conv_geometry(p), np.int32(p.groups)),
           blocks=o * cg * -(-kh * kw // WEIGHT_TAPS))
    return gw


def backward_bias(gy, p):
    """dL/db = sum of gy over batch and space; gy (N, K, ...) -> (K,)."""
    return channel_sum(gy)

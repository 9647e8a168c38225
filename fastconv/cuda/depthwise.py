"""Depthwise convolution on the GPU (kernels/conv.cu): groups == in_channels, O = C*M. A
stencil per channel, memory-bound: forward one thread per output over its kh*kw taps,
backward-data one thread per input gathering over its M filters and their taps. The weight
gradient and the bias gradient are direct's kernels (one block per filter, all its taps at
once, which here has N*Ho*Wo terms to sum: enough work per block without a channel loop)."""
from __future__ import annotations

import numpy as np

from ..common.depthwise import why_not
from . import direct
from ._conv import conv_geometry, conv_index_bits
from ._module import launch

__all__ = ["forward", "backward_data", "backward_weight", "backward_bias", "why_not"]


def forward(x, w, b, p):
    """y = depthwise_conv(x, w) + b; x (N, C, H, W), w (O, 1, kh, kw) -> (N, O, Ho, Wo)."""
    import cupy

    y = cupy.empty(p.y_shape, dtype=x.dtype)
    launch("depthwise_forward", x.dtype, conv_index_bits(p), y.size,
           (x, w, w if b is None else b, np.int32(b is not None), y, *conv_geometry(p)))
    return y


def backward_data(gy, w, p):
    """dL/dx; gy (N, O, Ho, Wo), w (O, 1, kh, kw) -> (N, C, H, W)."""
    import cupy

    gx = cupy.empty(p.x_shape, dtype=gy.dtype)
    launch("depthwise_backward_data", gy.dtype, conv_index_bits(p), gx.size,
           (gy, w, gx, *conv_geometry(p)))
    return gx


backward_weight, backward_bias = direct.backward_weight, direct.backward_bias

"""Reference convolution: every output is the dot product of a kernel with one input window.

Shapes (G = groups; channel ``c`` of group ``g`` is channel ``g*C/G + c``)::

    x   (N, C, H, W)          xp: x zero-padded to (N, C, Hp, Wp)
    w   (O, C/G, kh, kw)      read as (G, O/G, C/G, kh, kw)
    y   (N, O, Ho, Wo)        read as (N, G, O/G, Ho, Wo)

    y[n, g, o, i, j] = b[g, o] + sum_{c, a, e} xp[n, g, c, i*sh + a*dh, j*sw + e*dw] * w[g, o, c, a, e]

Output size per dimension: ``Ho = floor((H + top + bottom - dh*(kh - 1) - 1) / sh) + 1``.

All arithmetic is in float64; results come back in the input dtype. Transposed convolution
needs nothing of its own: it is this module's functions with the roles swapped (see
``fastconv.conv``).
"""
from __future__ import annotations

from math import prod

import numpy as np

from ._windows import crop, offset_slice, pad, windows


def _grouped_windows(x, p):
    """Windows of the padded input, (N, G, C/G, Ho, Wo, kh, kw), float64."""
    n, c = p.x_shape[:2]
    win = windows(pad(x, p.padding), p.kernel, p.stride, p.dilation, p.y_shape[2:])
    return win.reshape(n, p.groups, c // p.groups, *win.shape[2:])


def _grouped_weight(w, p):
    o, cg, kh, kw = p.w_shape
    return w.astype(np.float64).reshape(p.groups, o // p.groups, cg, kh, kw)


def _grouped_output(gy, p):
    """An output-shaped array as (N, G, O/G, Ho, Wo), float64."""
    n, o, ho, wo = p.y_shape
    return gy.astype(np.float64).reshape(n, p.groups, o // p.groups, ho, wo)


def forward(x, w, b, p):
    """y = conv(x, w) + b; x (N, C, H, W), w (O, C/G, kh, kw), b (O,) or None -> (N, O, Ho, Wo)."""
    y = np.einsum("ngcijae,gocae->ngoij", _grouped_windows(x, p), _grouped_weight(w, p),
                  optimize=True).reshape(p.y_shape)
    if b is not None:
        y += b.astype(np.float64)[:, None, None]
    return y.astype(x.dtype)


# Input gradient. y is linear in xp, and xp[n, g, c, r, q] appears in y[n, g, o, i, j] with
# weight w[g, o, c, a, e] exactly when r = i*sh + a*dh and q = j*sw + e*dw. So
#
#     dL/dxp[n, g, c, r, q] = sum over (o, i, j, a, e) with r = i*sh + a*dh, q = j*sw + e*dw
#                             of gy[n, g, o, i, j] * w[g, o, c, a, e]
#
# For a fixed kernel offset (a, e) the matching (r, q) form the strided slice offset_slice(a, e)
# of xp, so we scatter-add one contraction over o per offset, then crop the padding away
# (padding is a constant, it gets no gradient). Rows of xp that no window reaches get zero.
def backward_data(gy, w, p):
    """dL/dx; gy (N, O, Ho, Wo), w (O, C/G, kh, kw) -> (N, C, H, W)."""
    n, c, h, wd = p.x_shape
    gyg = _grouped_output(gy, p)
    wg = _grouped_weight(w, p)
    gxp = np.zeros((n, p.groups, c // p.groups) + p.padded_size)
    for a in range(p.kernel[0]):
        for e in range(p.kernel[1]):
            gxp[offset_slice(a, e, p.stride, p.dilation, p.y_shape[2:])] += np.einsum(
                "ngoij,goc->ngcij", gyg, wg[:, :, :, a, e], optimize=True)
    return crop(gxp.reshape((n, c) + p.padded_size), p.padding, (h, wd)).astype(gy.dtype)


# Weight gradient. y is linear in w with coefficient xp[n, g, c, i*sh + a*dh, j*sw + e*dw], so
#
#     dL/dw[g, o, c, a, e] = sum_{n, i, j} gy[n, g, o, i, j] * xp[n, g, c, i*sh + a*dh, j*sw + e*dw]
#
# i.e. the forward contraction with the roles of w and gy exchanged.
def backward_weight(x, gy, p):
    """dL/dw; x (N, C, H, W), gy (N, O, Ho, Wo) -> (O, C/G, kh, kw)."""
    gw = np.einsum("ngoij,ngcijae->gocae", _grouped_output(gy, p), _grouped_windows(x, p),
                   optimize=True)
    return gw.reshape(p.w_shape).astype(x.dtype)


# Bias gradient. b[o] is added to every y[n, o, i, j], so dL/db[o] = sum_{n, i, j} gy[n, o, i, j].
def backward_bias(gy, p):
    """dL/db; gy (N, O, Ho, Wo) -> (O,)."""
    return gy.astype(np.float64).sum(axis=(0, 2, 3)).astype(gy.dtype)


# The reference favours clarity over memory: it works on float64 copies, and ``einsum`` copies
# the window view into column matrices (twice, in NumPy 2.x). The multiples below of the arrays
# involved were read off ``tracemalloc`` on the layer zoo; they are estimates, not bounds.
def workspace_bytes(op, p, itemsize):
    """Approximate peak of this module's temporaries beyond a call's inputs and outputs."""
    n, c = p.x_shape[:2]
    padded, out = n * c * prod(p.padded_size), prod(p.y_shape)
    columns = n * c * p.kernel[0] * p.kernel[1] * prod(p.y_shape[2:])
    per_kernel = {
        "forward": padded + 2 * columns + out,   # windows -> einsum -> float64 y
        "backward_weight": padded + 2 * columns + out,
        "backward_data": padded + out + 2 * n * c * prod(p.y_shape[2:]),  # one offset at a time
    }
    return 8 * max((per_kernel[k] for k in p.kernel_calls(op)), default=0)

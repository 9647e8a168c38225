"""Sliding windows as strided views: the one trick the whole reference is built on.

A convolution or pooling window at output position ``(i, j)`` reads the padded input at rows
``i*sh + a*dh`` and columns ``j*sw + e*dw`` for kernel offsets ``(a, e)``. NumPy can present all
windows at once as a read-only view with two extra axes, without copying anything:

    windows(xp)[n, c, i, j, a, e] == xp[n, c, i*sh + a*dh, j*sw + e*dw]

The adjoint of reading through that view is a scatter-add: for each kernel offset ``(a, e)``
the values of all windows at that offset land on a strided slice of the padded input
(:func:`offset_slice`). Backward passes loop over the ``kh * kw`` offsets, never over pixels.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided


def pad(x, padding, value=0.0, dtype=np.float64):
    """A ``dtype`` copy of ``x`` (N, C, H, W) padded by ``padding = ((top, bottom), (left, right))``."""
    (top, bottom), (left, right) = padding
    xp = np.full(x.shape[:2] + (x.shape[2] + top + bottom, x.shape[3] + left + right), value,
                 dtype=dtype)
    xp[:, :, top:top + x.shape[2], left:left + x.shape[3]] = x
    return xp


def windows(xp, kernel, stride, dilation, out_size):
    """Read-only view (N, C, Ho, Wo, kh, kw) of every window of a padded (N, C, Hp, Wp) array."""
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = kernel, stride, dilation, out_size
    s_n, s_c, s_h, s_w = xp.strides
    return as_strided(xp, shape=xp.shape[:2] + (ho, wo, kh, kw),
                      strides=(s_n, s_c, s_h * sh, s_w * sw, s_h * dh, s_w * dw), writeable=False)


def offset_slice(a, e, stride, dilation, out_size):
    """Index of the padded-input elements that kernel offset ``(a, e)`` of every window reads.

    ``xp[offset_slice(a, e, ...)]`` has shape (N, C, Ho, Wo) and equals
    ``windows(xp, ...)[..., a, e]``, but can be written to.
    """
    (sh, sw), (dh, dw), (ho, wo) = stride, dilation, out_size
    rows = slice(a * dh, a * dh + (ho - 1) * sh + 1, sh)
    cols = slice(e * dw, e * dw + (wo - 1) * sw + 1, sw)
    return (Ellipsis, rows, cols)


def crop(xp, padding, size):
    """Inverse of :func:`pad` for gradients: the (H, W) interior of a padded array."""
    (top, _), (left, _) = padding
    return xp[:, :, top:top + size[0], left:left + size[1]]

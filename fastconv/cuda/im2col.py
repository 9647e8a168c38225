"""im2col convolution on the GPU: the windows of a chunk of images are copied into columns
(kernels/conv.cu ``im2col``), and one batched cuBLAS GEMM (``cupy.matmul``) over images and
groups does the contraction; backward-data multiplies by the transposed weights and gathers the
columns back into the input gradient (``col2im``, no atomics). With K = Cg*kh*kw and
L = Ho*Wo, per chunk of nb images::

    cols  (nb, G, K, L)  = im2col(x)
    y     (nb, G, Og, L) = w (G, Og, K) @ cols                   forward
    dcols (nb, G, K, L)  = w^T (G, K, Og) @ gy;  gx = col2im(dcols)   backward-data
    gw    (G, Og, K)    += sum over the chunk of gy @ cols^T     backward-weight (fixed order)

The chunk holds as many images as fit in config.CUDA_IM2COL_WORKSPACE_BYTES, at least one.
"""
from __future__ import annotations

from math import prod

from .. import config
from . import direct
from ._conv import ints
from ._module import index_bits, launch


def images_per_chunk(p, itemsize) -> int:
    n, c = p.x_shape[:2]
    per_image = c * prod(p.kernel) * prod(p.y_shape[2:]) * itemsize
    return max(1, min(n, config.CUDA_IM2COL_WORKSPACE_BYTES // max(1, per_image)))


def _shapes(p):
    """(G, Og, K, L)."""
    o, cg = p.w_shape[:2]
    return p.groups, o // p.groups, cg * prod(p.kernel), prod(p.y_shape[2:])


def _geometry(p, n0, nb):
    """The int arguments of im2col and col2im after their arrays."""
    _, c, h, w = p.x_shape
    (pt, _), (pl, _) = p.padding
    return ints(n0, nb, c, h, w, *p.y_shape[2:], *p.kernel, *p.stride, pt, pl, *p.dilation)


def _chunks(p, itemsize):
    nb = images_per_chunk(p, itemsize)
    for n0 in range(0, p.x_shape[0], nb):
        yield n0, min(nb, p.x_shape[0] - n0)


def _columns(x, p, n0, nb):
    import cupy

    g, _, k, length = _shapes(p)
    cols = cupy.empty((nb, g, k, length), dtype=x.dtype)
    launch("im2col", x.dtype, index_bits(x.size, cols.size), cols.size,
           (x, cols, *_geometry(p, n0, nb)))
    return cols


def forward(x, w, b, p):
    """y = conv(x, w) + b; x (N, C, H, W), w (O, C/G, kh, kw) -> (N, O, Ho, Wo)."""
    import cupy

    g, og, k, _ = _shapes(p)
    y = cupy.empty(p.y_shape, dtype=x.dtype)
    weights = w.reshape(g, og, k)
    for n0, nb in _chunks(p, x.dtype.itemsize):
        y[n0:n0 + nb] = cupy.matmul(weights, _columns(x, p, n0, nb)).reshape(
            (nb,) + p.y_shape[1:])
    if b is not None:
        y += b.reshape(-1, 1, 1)
    return y


def backward_data(gy, w, p):
    """dL/dx; gy (N, O, Ho, Wo), w (O, C/G, kh, kw) -> (N, C, H, W)."""
    import cupy

    g, og, k, length = _shapes(p)
    gx = cupy.empty(p.x_shape, dtype=gy.dtype)
    weights_t = w.reshape(g, og, k).transpose(0, 2, 1)
    for n0, nb in _chunks(p, gy.dtype.itemsize):
        dcols = cupy.matmul(weights_t, gy[n0:n0 + nb].reshape(nb, g, og, length))
        launch("col2im", gy.dtype, index_bits(gx.size, dcols.size), nb * prod(p.x_shape[1:]),
               (cupy.ascontiguousarray(dcols), gx, *_geometry(p, n0, nb)))
    return gx


def backward_weight(x, gy, p):
    """dL/dw; x (N, C, H, W), gy (N, O, Ho, Wo) -> (O, C/G, kh, kw)."""
    import cupy

    g, og, k, length = _shapes(p)
    gw = cupy.zeros((g, og, k), dtype=x.dtype)
    for n0, nb in _chunks(p, x.dtype.itemsize):
        per_image = cupy.matmul(gy[n0:n0 + nb].reshape(nb, g, og, length),
                                _columns(x, p, n0, nb).transpose(0, 1, 3, 2))
        for i in range(nb):  # a fixed-order sum over the images
            gw += per_image[i]
    return gw.reshape(p.w_shape)


backward_bias = direct.backward_bias


def workspace_bytes(op, p, itemsize):
    """One chunk's columns and its GEMM result (the output-sized product, or the per-image
    weight-gradient products)."""
    nb = images_per_chunk(p, itemsize)
    g, og, k, length = _shapes(p)
    return nb * g * (k * length + og * max(length, k)) * itemsize

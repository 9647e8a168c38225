"""What pointwise (1x1) convolution serves, and which input pixels it reads: the same on both
backends (fastconv.cpu.pointwise, fastconv.cuda.pointwise)."""
from __future__ import annotations


def pixels(p):
    """Index of the input pixels a 1x1 kernel reads: every sh-th row and sw-th column, Ho x Wo
    of them (the input may extend beyond them, e.g. under a transposed conv's output_padding)."""
    (sh, sw), (ho, wo) = p.stride, p.y_shape[2:]
    return (Ellipsis, slice(0, (ho - 1) * sh + 1, sh), slice(0, (wo - 1) * sw + 1, sw))


def subsampled(p) -> bool:
    """Whether the kernel reads only part of the input (a stride, or rows left over), so that
    the pixels it reads are copied out first."""
    return p.x_shape[2:] != p.y_shape[2:]


def spread(gxs, p, xp):
    """The input gradient from gxs, the gradient at the pixels read: gxs itself when they are
    all of the input, else zeros of the input's shape with gxs at those pixels (the pixels the
    kernel skipped get no gradient). ``xp``: NumPy or CuPy."""
    if not subsampled(p):
        return gxs
    gx = xp.zeros(p.x_shape, dtype=gxs.dtype)
    gx[pixels(p)] = gxs
    return gx


def why_not(op, p):
    """Pointwise serves 1x1 kernels without padding (any stride and groups)."""
    if p.kernel == (1, 1) and p.padding == ((0, 0), (0, 0)):
        return None
    return (f"pointwise needs a 1x1 kernel and no padding, got kernel {p.kernel} and padding "
            f"{p.padding}")

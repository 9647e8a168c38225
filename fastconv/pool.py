"""Pooling: max_pool2d, avg_pool2d, adaptive_avg_pool2d and their backward twins. Everything
about them that is not a kernel lives here: the parameter objects, the builders that validate
the arguments into them, the output-size arithmetic, the public ops, and the cost model.

Normal forms the kernels see: batched 2-D shapes (an unbatched ``(C, H, W)`` gets N = 1),
spatial arguments as pairs, symmetric padding (as PyTorch's pooling allows); the stride is 1
along any dimension with a single output, where it is never used.

Cost model: one operation (comparison or add) per window element, plus one divide per output
of an average; max-pool backward given the forward's indices counts one add per output.
``min_bytes`` is the traffic of an ideal kernel that reads each input and writes each output
exactly once.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from math import prod

from . import _calls, _validate, dispatch, registry
from ._calls import preparer
from ._validate import (at_most_limit, batched, check_grad, check_index_range,
                        dims, flag, ints, is_int, unused_stride_as_one,
                        user_shape)

__all__ = ["adaptive_avg_pool2d", "adaptive_avg_pool2d_backward", "avg_pool2d",
           "avg_pool2d_backward", "max_pool2d", "max_pool2d_backward", "AdaptivePoolParams",
           "PoolParams"]


# --------------------------------------------------------------------------------------------
# The parameter objects
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PoolParams:
    """A 2-D max or average pooling with every argument explicit.

    ``padding`` is symmetric ``(ph, pw)``, as PyTorch's pooling allows; with ``ceil_mode`` the
    last window may run past the bottom/right padding, and the elements there are ignored.
    """

    x_shape: tuple[int, int, int, int]
    y_shape: tuple[int, int, int, int]
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int] = (1, 1)
    ceil_mode: bool = False
    count_include_pad: bool = True
    divisor_override: int | None = None
    return_indices: bool = False
    saved_indices: bool = False  # max-pool backward given the forward's indices
    unbatched: bool = False

    def user_shape(self, shape):
        return user_shape(shape, 2, self.unbatched)

    @cached_property
    def window(self) -> tuple[int, ...]:
        """``(kh, kw, sh, sw, ph, pw)``, as the kernels take them (made once per object)."""
        return (*self.kernel, *self.stride, *self.padding)

    @cached_property
    def averaging(self) -> tuple[bool, int]:
        """``(count_include_pad, divisor)``, how an average divides, as the kernels take it:
        divisor 0 for no override (made once per object)."""
        return self.count_include_pad, (0 if self.divisor_override is None
                                        else self.divisor_override)

    def output_shapes(self, op: str) -> tuple:
        """Shapes of the arrays ``op`` returns, in the caller's layout."""
        if op.endswith("_backward"):
            return (self.user_shape(self.x_shape),)
        y = self.user_shape(self.y_shape)
        return (y, y) if self.return_indices else (y,)

    def output_bytes(self, op: str, itemsize: int) -> int:
        """Bytes of the arrays ``op`` returns (the indices are int64)."""
        if op.endswith("_backward"):
            return itemsize * prod(self.x_shape)
        return prod(self.y_shape) * (itemsize + (8 if self.return_indices else 0))

    def own_bytes(self, op: str, itemsize: int) -> int:
        """Memory the public op allocates itself, besides the kernels' workspace: the maxima
        and int64 indices that max_pool2d_backward recomputes when not given the forward's."""
        if op == "max_pool2d_backward" and not self.saved_indices:
            return prod(self.y_shape) * (itemsize + 8)
        return 0

    def sizes(self) -> tuple[int, ...]:
        return prod(self.x_shape), prod(self.y_shape)

    def flops(self, op: str) -> int:
        outputs = prod(self.y_shape)
        window = self.kernel[0] * self.kernel[1]
        backward = op.endswith("_backward")
        if op.startswith("max"):
            if backward and self.saved_indices:
                return outputs  # one add per output gradient, at its saved index
            # backward re-derives the argmax (window comparisons) and adds each gradient once
            return outputs * window + (outputs if backward else 0)
        return outputs * window + outputs  # sums (or scatters) plus one divide per output

    def min_bytes(self, op: str, itemsize: int) -> int:
        x, y = prod(self.x_shape), prod(self.y_shape)
        if op.endswith("_backward"):
            if self.saved_indices:  # reads grad_y and the int64 indices, writes grad_x
                return itemsize * (y + x) + 8 * y
            # reads grad_y (and x, to re-derive the argmax), writes grad_x
            return itemsize * (y + x + op.startswith("max") * x)
        return itemsize * (x + y) + (8 * y if self.return_indices else 0)


@dataclass(frozen=True)
class AdaptivePoolParams:
    """Adaptive average pooling from ``x_shape`` to ``y_shape``: output row ``i`` averages input
    rows ``floor(i*H/Ho) .. ceil((i+1)*H/Ho) - 1`` (and likewise for columns)."""

    x_shape: tuple[int, int, int, int]
    y_shape: tuple[int, int, int, int]
    unbatched: bool = False

    def user_shape(self, shape):
        return user_shape(shape, 2, self.unbatched)

    def output_shapes(self, op: str) -> tuple:
        return (self.user_shape(self.x_shape if op.endswith("_backward") else self.y_shape),)

    def output_bytes(self, op: str, itemsize: int) -> int:
        return itemsize * prod(self.x_shape if op.endswith("_backward") else self.y_shape)

    def own_bytes(self, op: str, itemsize: int) -> int:
        return 0

    def sizes(self) -> tuple[int, ...]:
        return prod(self.x_shape), prod(self.y_shape)

    def flops(self, op: str) -> int:
        (n, c, h, w), (_, _, ho, wo) = self.x_shape, self.y_shape
        # a window covers rows floor(i*h/ho) .. ceil((i+1)*h/ho) - 1; windows are rectangles
        return n * c * _window_lengths(h, ho) * _window_lengths(w, wo) + n * c * ho * wo

    def min_bytes(self, op: str, itemsize: int) -> int:
        return itemsize * (prod(self.x_shape) + prod(self.y_shape))


def _window_lengths(size: int, out: int) -> int:
    """Sum over the adaptive windows of one dimension of their lengths."""
    return sum(-((-(i + 1) * size) // out) - (i * size) // out for i in range(out))


# --------------------------------------------------------------------------------------------
# Output sizes and builders: each public op's signature with its arrays replaced by shapes
# --------------------------------------------------------------------------------------------
def output_size(size, kernel, stride, padding, dilation, ceil_mode):
    """Pooling output length along one dimension, exactly as PyTorch computes it.

    ``out = floor_or_ceil((size + 2*padding - dilation*(kernel-1) - 1) / stride) + 1``; with
    ``ceil_mode`` the last window must still start inside the input or the left padding, so an
    output whose window would start in the right padding is dropped. Plain arithmetic, no
    checks (fastconv.torch's fake kernels call it with symbolic sizes).
    """
    span = dilation * (kernel - 1) + 1
    out = (size + 2 * padding - span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def _pool(op, x_shape, kernel_size, stride, padding, dilation, ceil_mode, **extra):
    x_shape, unbatched = batched(op, "x", x_shape, 2)
    kernel = ints(op, "kernel_size", kernel_size, 2, minimum=1, expected="positive")
    # PyTorch: stride=None (or an empty sequence) means stride = kernel_size.
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        stride = kernel
    stride = ints(op, "stride", stride, 2, minimum=1, expected="positive")
    padding = ints(op, "padding", padding, 2, minimum=0, expected="non-negative")
    dilation = ints(op, "dilation", dilation, 2, minimum=1, expected="positive")
    ceil_mode = flag(op, "ceil_mode", ceil_mode)
    if any(p > k // 2 for p, k in zip(padding, kernel)):
        raise ValueError(f"{op}: padding must be at most half the kernel size "
                         f"(kernel_size // 2 = {tuple(k // 2 for k in kernel)}), got "
                         f"padding={padding} with kernel_size={kernel}")
    out = tuple(output_size(n, k, s, p, d, ceil_mode)
                for n, k, s, p, d in zip(x_shape[2:], kernel, stride, padding, dilation))
    if min(out) < 1:
        raise ValueError(f"{op}: the output size {out} is less than 1 for input size "
                         f"{x_shape[2:]} with kernel_size={kernel}, stride={stride}, "
                         f"padding={padding}, dilation={dilation}, ceil_mode={ceil_mode}")
    for axis, n, k, s, p, d, o in zip(("height", "width"), x_shape[2:], kernel, stride, padding,
                                      dilation, out):
        # Only a window starting in the padding can miss the input (a dilated window can step
        # over an input smaller than the dilation). Its max would be -inf from nothing: PyTorch
        # returns that with an index outside the input, which its backward then writes through.
        for i in range(min(o, -(-p // s))):
            start = i * s - p
            first = start + -(-max(0, -start) // d) * d  # the window's first tap at or after 0
            if first >= start + k * d or first >= n:
                raise ValueError(f"{op}: pooling window {i} along the {axis} covers only padding "
                                 f"(input size {n}, kernel_size {k}, padding {p}, dilation {d}); "
                                 f"every window must overlap the input")
    return PoolParams(x_shape=x_shape, y_shape=x_shape[:2] + out, kernel=kernel,
                      stride=unused_stride_as_one(stride, out),
                      padding=padding, dilation=dilation, ceil_mode=ceil_mode,
                      unbatched=unbatched, **extra)


def max_pool2d_params(x_shape, kernel_size, stride=None, padding=0, dilation=1,
                      ceil_mode=False, return_indices=False):
    return _pool("max_pool2d", x_shape, kernel_size, stride, padding, dilation, ceil_mode,
                 return_indices=flag("max_pool2d", "return_indices", return_indices))


def max_pool2d_backward_params(grad_y_shape, x_shape, kernel_size, stride=None, padding=0,
                               dilation=1, ceil_mode=False, *, indices_shape=None):
    op = "max_pool2d_backward"
    p = _pool(op, x_shape, kernel_size, stride, padding, dilation, ceil_mode)
    check_grad(op, grad_y_shape, p.user_shape(p.y_shape))
    if indices_shape is not None and tuple(indices_shape) != tuple(p.user_shape(p.y_shape)):
        raise ValueError(f"{op}: indices has shape {tuple(indices_shape)}, expected "
                         f"{p.user_shape(p.y_shape)} (the shape of grad_y)")
    return replace(p, saved_indices=indices_shape is not None)


def _avg_options(op, count_include_pad, divisor_override):
    count_include_pad = flag(op, "count_include_pad", count_include_pad)
    if divisor_override is not None:
        if not is_int(divisor_override):
            raise TypeError(f"{op}: divisor_override must be None or an int, got "
                            f"{divisor_override!r} ({type(divisor_override).__name__})")
        if divisor_override == 0:
            raise ValueError(f"{op}: divisor_override must be non-zero, got 0")
        divisor_override = int(divisor_override)
        at_most_limit(op, "divisor_override", divisor_override, (divisor_override,))
    return dict(count_include_pad=count_include_pad, divisor_override=divisor_override)


def avg_pool2d_params(x_shape, kernel_size, stride=None, padding=0, ceil_mode=False,
                      count_include_pad=True, divisor_override=None):
    op = "avg_pool2d"
    return _pool(op, x_shape, kernel_size, stride, padding, 1, ceil_mode,
                 **_avg_options(op, count_include_pad, divisor_override))


def avg_pool2d_backward_params(grad_y_shape, x_shape, kernel_size, stride=None, padding=0,
                               ceil_mode=False, count_include_pad=True, divisor_override=None):
    op = "avg_pool2d_backward"
    p = _pool(op, x_shape, kernel_size, stride, padding, 1, ceil_mode,
              **_avg_options(op, count_include_pad, divisor_override))
    check_grad(op, grad_y_shape, p.user_shape(p.y_shape))
    return p


def _adaptive(op, x_shape, output_size):
    """``output_size``: an int or a pair; ``None`` in a pair keeps that input dimension."""
    x_shape, unbatched = batched(op, "x", x_shape, 2)
    if is_int(output_size):
        output_size = (output_size, output_size)
    if not (isinstance(output_size, (tuple, list)) and len(output_size) == 2
            and all(v is None or is_int(v) for v in output_size)):
        raise TypeError(f"{op}: output_size must be an int or a pair of ints (None keeps the "
                        f"input size), got {output_size!r}")
    out = tuple(n if v is None else int(v) for n, v in zip(x_shape[2:], output_size))
    if min(out) < 1:
        raise ValueError(f"{op}: output_size must be positive, got {tuple(output_size)}")
    at_most_limit(op, "output_size", tuple(output_size), out)
    return AdaptivePoolParams(x_shape=x_shape, y_shape=x_shape[:2] + out, unbatched=unbatched)


def adaptive_avg_pool2d_params(x_shape, output_size):
    return _adaptive("adaptive_avg_pool2d", x_shape, output_size)


def adaptive_avg_pool2d_backward_params(grad_y_shape, x_shape):
    op = "adaptive_avg_pool2d_backward"
    x4, unbatched = batched(op, "x", x_shape, 2)
    grad_y_shape = dims(op, "grad_y", grad_y_shape, (len(x_shape),),
                        f"{len(x_shape)}-D like x")
    g4 = (1,) + grad_y_shape if unbatched else grad_y_shape
    if g4[:2] != x4[:2]:
        raise ValueError(f"{op}: grad_y has shape {grad_y_shape} but x has shape {tuple(x_shape)}; "
                         f"their batch and channel dimensions must agree")
    if min(g4[2:]) < 1:
        raise ValueError(f"{op}: grad_y must have a non-empty spatial extent (it sets the "
                         f"output size), got shape {grad_y_shape}")
    return _adaptive(op, x_shape, g4[2:])


registry.add_op("max_pool2d", "pool", ("x",), max_pool2d_params)
registry.add_op("avg_pool2d", "pool", ("x",), avg_pool2d_params)
registry.add_op("adaptive_avg_pool2d", "pool", ("x",), adaptive_avg_pool2d_params)
registry.add_op("max_pool2d_backward", "pool", ("grad_y", "x", "indices"),
                max_pool2d_backward_params)
registry.add_op("avg_pool2d_backward", "pool", ("grad_y", "x"), avg_pool2d_backward_params)
registry.add_op("adaptive_avg_pool2d_backward", "pool", ("grad_y", "x"),
                adaptive_avg_pool2d_backward_params)


# --------------------------------------------------------------------------------------------
# The public ops. Each hands its arrays to fastconv._calls.run with the function that makes
# the plan of such a call (validation, dispatch and the memory check, once per signature).
# --------------------------------------------------------------------------------------------
def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False, *, algo="auto"):
    """2-D max pooling, as ``torch.nn.functional.max_pool2d``.

    Parameters
    ----------
    x : ndarray, (N, C, H, W) or unbatched (C, H, W)
    kernel_size : int or pair
    stride : int or pair, default kernel_size
    padding : int or pair, at most kernel_size // 2; padding never wins the max
    dilation : int or pair, spacing of the window's elements
    ceil_mode : round the output size up instead of down (the last window must still start
        inside the input or the left padding)
    return_indices : also return the flat index into H*W of each maximum (int64)
    algo : "auto" or a name from ``algorithms("max_pool2d")``

    Returns
    -------
    y : ndarray (N, C, Ho, Wo), or ``(y, indices)``, where per dimension
        ``out = floor_or_ceil((in + 2*padding - dilation*(k - 1) - 1) / stride) + 1``.
        Ties go to the first maximal element in row-major window order; NaN propagates.
    """
    return _calls.run("max_pool2d", _max_pool2d_plan, (x,), kernel_size, stride, padding,
                      dilation, ceil_mode, return_indices, algo)


def _max_pool2d_plan(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices, algo):
    op = "max_pool2d"
    backend = _validate.check_arrays(op, x=x)
    p = max_pool2d_params(x.shape, kernel_size, stride, padding, dilation, ceil_mode,
                          return_indices)
    algorithm = dispatch.kernels_for(op, backend, algo, p, (x,))
    kernels, y_shape = algorithm.kernels, p.user_shape(p.y_shape)
    prep_x = preparer(backend, x, p.x_shape)

    def plan(x):
        y, indices = kernels.max_pool_forward(prep_x(x), p)
        if not p.return_indices:
            return y.reshape(y_shape) if p.unbatched else y
        return (y.reshape(y_shape), indices.reshape(y_shape)) if p.unbatched else (y, indices)
    return dispatch.finish(plan, algorithm, op, p, x.dtype.itemsize)


def max_pool2d_backward(grad_y, x, kernel_size, stride=None, padding=0, dilation=1,
                        ceil_mode=False, *, indices=None, algo="auto"):
    """Gradient of ``max_pool2d`` with respect to x.

    Each output gradient goes to the element its window selected (the first maximal one in
    row-major order); overlapping windows add up. ``indices`` from
    ``max_pool2d(..., return_indices=True)`` saves recomputing the selection; they are checked
    to lie in the plane on every call (they are data, not part of the call's signature).
    """
    return _calls.run("max_pool2d_backward", _max_pool2d_backward_plan, (grad_y, x, indices),
                      kernel_size, stride, padding, dilation, ceil_mode, algo, True)


def _max_pool2d_backward_of_own_indices(grad_y, x, indices, kernel_size, stride=None,
                                       padding=0, dilation=1, ceil_mode=False, algo="auto"):
    """:func:`max_pool2d_backward` given indices that max_pool2d made for this very call and
    that nobody else has held since (fastconv.torch's, saved inside its autograd node when
    the caller did not ask for them): the one call that may skip their range check (2-3 us
    of a tiny call). Everything else is validated as for the public op."""
    return _calls.run("max_pool2d_backward", _max_pool2d_backward_plan, (grad_y, x, indices),
                      kernel_size, stride, padding, dilation, ceil_mode, algo, False)


def _max_pool2d_backward_plan(grad_y, x, indices, kernel_size, stride, padding, dilation,
                              ceil_mode, algo, check_range):
    op = "max_pool2d_backward"
    backend = _validate.check_arrays(op, grad_y=grad_y, x=x)
    if indices is not None:
        _validate.check_indices(op, indices, backend)
    p = max_pool2d_backward_params(grad_y.shape, x.shape, kernel_size, stride, padding,
                                   dilation, ceil_mode,
                                   indices_shape=None if indices is None else indices.shape)
    # x is read only to recompute the indices when they are not given
    algorithm = dispatch.kernels_for(op, backend, algo, p,
                                     (grad_y, x if indices is None else indices))
    kernels, plane = algorithm.kernels, p.x_shape[2] * p.x_shape[3]
    # kernels that check the indices' range in their own pass over them (raising the same
    # ValueError before returning, writing nothing out of bounds) spare the separate one
    checked_inside = getattr(kernels, "CHECKS_INDEX_RANGE", False)
    selecting = replace(p, return_indices=True)
    prep_gy, prep_x = preparer(backend, grad_y, p.y_shape), preparer(backend, x, p.x_shape)
    prep_indices = preparer(backend, indices, p.y_shape)

    def plan(grad_y, x, indices):
        if indices is None:
            _, indices = kernels.max_pool_forward(prep_x(x), selecting)
        else:
            if check_range and not checked_inside:
                check_index_range(op, indices, plane)
            indices = prep_indices(indices)
        gx = kernels.max_pool_backward(prep_gy(grad_y), indices, p)
        return gx.reshape(x.shape) if p.unbatched else gx
    return dispatch.finish(plan, algorithm, op, p, x.dtype.itemsize)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None, *, algo="auto"):
    """2-D average pooling, as ``torch.nn.functional.avg_pool2d``.

    Parameters
    ----------
    x : ndarray, (N, C, H, W) or unbatched (C, H, W)
    kernel_size : int or pair
    stride : int or pair, default kernel_size
    padding : int or pair, at most kernel_size // 2 (zeros)
    ceil_mode : round the output size up (see max_pool2d)
    count_include_pad : divide by the window size including padding (True) or by the number
        of input elements in the window (False)
    divisor_override : int, non-zero: divide every window sum by this instead
    algo : "auto" or a name from ``algorithms("avg_pool2d")``

    Returns
    -------
    y : ndarray (N, C, Ho, Wo), ``out = floor_or_ceil((in + 2*padding - k) / stride) + 1``.
    """
    return _calls.run("avg_pool2d", _avg_pool2d_plan, (x,), kernel_size, stride, padding,
                      ceil_mode, count_include_pad, divisor_override, algo)


def _avg_pool2d_plan(x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                     divisor_override, algo):
    op = "avg_pool2d"
    backend = _validate.check_arrays(op, x=x)
    p = avg_pool2d_params(x.shape, kernel_size, stride, padding, ceil_mode, count_include_pad,
                          divisor_override)
    algorithm = dispatch.kernels_for(op, backend, algo, p, (x,))
    kernels, y_shape = algorithm.kernels, p.user_shape(p.y_shape)
    prep_x = preparer(backend, x, p.x_shape)

    def plan(x):
        y = kernels.avg_pool_forward(prep_x(x), p)
        return y.reshape(y_shape) if p.unbatched else y
    return dispatch.finish(plan, algorithm, op, p, x.dtype.itemsize)


def avg_pool2d_backward(grad_y, x, kernel_size, stride=None, padding=0, ceil_mode=False,
                        count_include_pad=True, divisor_override=None, *, algo="auto"):
    """Gradient of ``avg_pool2d`` with respect to x: each window spreads its output gradient
    over its input elements, divided by the same divisor as the forward."""
    return _calls.run("avg_pool2d_backward", _avg_pool2d_backward_plan, (grad_y, x),
                      kernel_size, stride, padding, ceil_mode, count_include_pad,
                      divisor_override, algo)


def _avg_pool2d_backward_plan(grad_y, x, kernel_size, stride, padding, ceil_mode,
                              count_include_pad, divisor_override, algo):
    op = "avg_pool2d_backward"
    backend = _validate.check_arrays(op, grad_y=grad_y, x=x)
    p = avg_pool2d_backward_params(grad_y.shape, x.shape, kernel_size, stride, padding,
                                   ceil_mode, count_include_pad, divisor_override)
    algorithm = dispatch.kernels_for(op, backend, algo, p, (grad_y, x))
    kernels, prep_gy = algorithm.kernels, preparer(backend, grad_y, p.y_shape)

    def plan(grad_y, x):
        gx = kernels.avg_pool_backward(prep_gy(grad_y), p)
        return gx.reshape(x.shape) if p.unbatched else gx
    return dispatch.finish(plan, algorithm, op, p, x.dtype.itemsize)


def adaptive_avg_pool2d(x, output_size, *, algo="auto"):
    """Adaptive 2-D average pooling, as ``torch.nn.functional.adaptive_avg_pool2d``.

    Output row ``i`` averages input rows ``floor(i*H/Ho)`` to ``ceil((i+1)*H/Ho) - 1`` (and
    likewise for columns); ``output_size=(1, 1)`` is global average pooling.

    Parameters
    ----------
    x : ndarray, (N, C, H, W) or unbatched (C, H, W)
    output_size : int or pair; None in a pair keeps that input dimension
    algo : "auto" or a name from ``algorithms("adaptive_avg_pool2d")``
    """
    return _calls.run("adaptive_avg_pool2d", _adaptive_plan, (x,), output_size, algo)


def _adaptive_plan(x, output_size, algo):
    op = "adaptive_avg_pool2d"
    backend = _validate.check_arrays(op, x=x)
    p = adaptive_avg_pool2d_params(x.shape, output_size)
    algorithm = dispatch.kernels_for(op, backend, algo, p, (x,))
    kernels, y_shape = algorithm.kernels, p.user_shape(p.y_shape)
    prep_x = preparer(backend, x, p.x_shape)

    def plan(x):
        y = kernels.adaptive_avg_pool_forward(prep_x(x), p)
        return y.reshape(y_shape) if p.unbatched else y
    return dispatch.finish(plan, algorithm, op, p, x.dtype.itemsize)


def adaptive_avg_pool2d_backward(grad_y, x, *, algo="auto"):
    """Gradient of ``adaptive_avg_pool2d`` with respect to x (the output size is grad_y's)."""
    return _calls.run("adaptive_avg_pool2d_backward", _adaptive_backward_plan, (grad_y, x),
                      algo)


def _adaptive_backward_plan(grad_y, x, algo):
    op = "adaptive_avg_pool2d_backward"
    backend = _validate.check_arrays(op, grad_y=grad_y, x=x)
    p = adaptive_avg_pool2d_backward_params(grad_y.shape, x.shape)
    algorithm = dispatch.kernels_for(op, backend, algo, p, (grad_y, x))
    kernels, prep_gy = algorithm.kernels, preparer(backend, grad_y, p.y_shape)

    def plan(grad_y, x):
        gx = kernels.adaptive_avg_pool_backward(prep_gy(grad_y), p)
        return gx.reshape(x.shape) if p.unbatched else gx
    return dispatch.finish(plan, algorithm, op, p, x.dtype.itemsize)

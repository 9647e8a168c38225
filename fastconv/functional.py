"""The public ops: the contract of API.md, mirroring ``torch.nn.functional``.

Every op runs the same steps: check the arrays (``params.check_arrays``), validate and
normalise the other arguments into a parameter object (``params.<op>``), let the dispatcher pick
an algorithm (``dispatch.select``), check that the memory it needs exists
(``params.check_memory``), and call that algorithm's kernels on contiguous, batched arrays.
Nothing here computes anything itself; the math lives in ``fastconv.reference`` and the
backends.

Transposed convolution is the adjoint of convolution and has no kernels of its own: its forward
is the convolution's backward-data, its backward-data the convolution's forward, and its weight
gradient the convolution's weight gradient with input and output gradient exchanged.
"""
from __future__ import annotations

import functools
from dataclasses import replace
from math import prod

import numpy as np

from . import config, dispatch, params
from .params import ALL_OUTPUTS


def _quiet(op):
    """Ops raise no NumPy floating-point warnings, as PyTorch raises none: NaN and Inf simply
    propagate (inf * 0 is NaN). Without this, the same call warned or not depending on the
    algorithm (einsum and BLAS set the flags NumPy reports; Numba kernels cannot), and OpenBLAS
    occasionally reported "invalid value" on finite data with finite results.

    An allocation that fails during the call (memory that exists but is taken) raises
    MemoryError naming the op; the call's outputs are dropped with it."""
    @functools.wraps(op)
    def quiet_op(*args, **kwargs):
        try:
            with np.errstate(all="ignore"):
                return op(*args, **kwargs)
        except MemoryError as e:
            if str(e).startswith(f"{op.__name__}:"):
                raise
            raise MemoryError(f"{op.__name__}: out of memory: {e}") from e
    return quiet_op


def _array_module(backend):
    if backend == "cuda":
        import cupy

        return cupy
    return np


def _kernels(op, backend, algo, p, *inputs):
    """The kernels of the algorithm that runs this call, once the memory the call needs is
    known to exist: its outputs, the algorithm's workspace, and the contiguous copies that
    :func:`_prepared` makes of non-contiguous inputs."""
    algorithm, needs = _plan(op, backend, algo, p, inputs[0].dtype.itemsize)
    copies = sum(a.nbytes for a in inputs if a is not None and not a.flags.c_contiguous)
    params.check_memory(op, backend, {**needs, "input copies": copies})
    return algorithm.kernels


_PLANS: dict = {}  # (op, backend, algo, p, itemsize, settings) -> (algorithm, memory needs)


def _plan(op, backend, algo, p, itemsize):
    """The algorithm that runs a call and the memory it needs besides input copies, found
    once per kind of call: the choice and the workspace depend only on the parameter object,
    the element size, the kernels' tunables (``config``) and the CPU threads (per-thread
    buffers)."""
    threads = _cpu_threads() if backend == "cpu" else None
    key = (op, backend, algo, p, itemsize, config.tunables(), threads)
    plan = _PLANS.get(key)
    if plan is None:
        algorithm = dispatch.select(op, backend, algo, p)
        outputs = [prod(s) * itemsize for s in dispatch.output_shapes(op, p) if s is not None]
        if getattr(p, "return_indices", False):
            outputs[-1] *= 8 // itemsize  # int64 indices
        plan = params.remember(_PLANS, key, (algorithm, {
            "outputs": sum(outputs),
            "workspace": dispatch.workspace_bytes(algorithm, op, p, itemsize)}))
    return plan


_threads = None  # fastconv.cpu._threads, imported on the first CPU call (the backend is lazy)


def _cpu_threads():
    global _threads
    if _threads is None:
        from .cpu import _threads
    return _threads.threads()


def _shape(a):
    return None if a is None else a.shape


def _prepared(backend, a, shape=None):
    """``a`` as a C-contiguous array of ``shape`` (a view when ``a`` already is contiguous),
    read-only on the CPU.

    The kernels read their inputs and never write them, and Numba compiles a kernel once per
    combination of argument types, writeable and read-only arrays being different types. Handing
    every input over read-only gives each kernel one compiled version per dtype whichever the
    caller passes (halving the compile time of a fresh process that sees both), and makes a
    kernel that wrote to an input fail to compile."""
    if a is None:
        return None
    a = _array_module(backend).ascontiguousarray(a)
    if backend != "cpu":
        return a if shape is None else a.reshape(shape)
    a = a.view() if shape is None else a.reshape(shape)  # a new view either way
    a.setflags(write=False)  # ~0.2 us
    return a


# --------------------------------------------------------------------------------------------
# Convolution
# --------------------------------------------------------------------------------------------
_CONV_DOC = """
    Parameters
    ----------
    x : ndarray, {x_layout}
    weight : ndarray, {w_layout}
    bias : ndarray (out_channels,), optional
    stride, dilation : int or {seq}, positive
    padding : int or {seq} (non-negative), or "valid" (no padding) or "same" (output size =
        input size, needs stride 1; an odd total puts the extra element at the end)
    groups : int, in_channels and out_channels must be divisible by it
    algo : "auto" or a name from ``algorithms("{op}")``

    Returns
    -------
    y : ndarray, {y_layout}, same array type and dtype as x, where per spatial dimension
        ``out = floor((in + pad_low + pad_high - dilation*(k - 1) - 1) / stride) + 1``.
"""


@_quiet
def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, algo="auto"):
    backend = params.check_arrays("conv2d", dict(bias=bias), x=x, weight=weight)
    p = params.conv2d(x.shape, weight.shape, _shape(bias), stride, padding, dilation, groups)
    return _conv_forward("conv2d", backend, algo, p, x, weight, bias)


@_quiet
def conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, algo="auto"):
    backend = params.check_arrays("conv1d", dict(bias=bias), x=x, weight=weight)
    p = params.conv1d(x.shape, weight.shape, _shape(bias), stride, padding, dilation, groups)
    return _conv_forward("conv1d", backend, algo, p, x, weight, bias)


conv2d.__doc__ = "2-D convolution (cross-correlation), as ``torch.nn.functional.conv2d``.\n" + \
    _CONV_DOC.format(x_layout="(N, C, H, W) or unbatched (C, H, W)",
                     w_layout="(out_channels, C/groups, kh, kw)", seq="pair",
                     y_layout="(N, out_channels, Ho, Wo)", op="conv2d")
conv1d.__doc__ = "1-D convolution (cross-correlation), as ``torch.nn.functional.conv1d``.\n" + \
    _CONV_DOC.format(x_layout="(N, C, L) or unbatched (C, L)",
                     w_layout="(out_channels, C/groups, k)", seq="1-sequence",
                     y_layout="(N, out_channels, Lo)", op="conv1d")


def _conv_forward(op, backend, algo, p, x, weight, bias):
    kernels = _kernels(op, backend, algo, p, x, weight, bias)
    y = kernels.forward(_prepared(backend, x, p.x_shape), _prepared(backend, weight, p.w_shape),
                        _prepared(backend, bias), p)
    return y.reshape(p.user_shape(p.y_shape))


@_quiet
def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, *, algo="auto"):
    """2-D transposed convolution, as ``torch.nn.functional.conv_transpose2d``.

    The adjoint (gradient with respect to the input) of ``conv2d`` with the same stride,
    padding, dilation and groups.

    Parameters
    ----------
    x : ndarray, (N, in_channels, H, W) or unbatched (in_channels, H, W)
    weight : ndarray, (in_channels, out_channels/groups, kh, kw)
    bias : ndarray (out_channels,), optional
    stride, dilation : int or pair, positive
    padding : int or pair, non-negative: removed from each side of the full output
    output_padding : int or pair, added to the bottom/right of the output; smaller than
        stride or dilation in each dimension
    groups : int, in_channels must be divisible by it
    algo : "auto" or a name from ``algorithms("conv_transpose2d")``

    Returns
    -------
    y : ndarray (N, out_channels, Ho, Wo), same array type and dtype as x, where per dimension
        ``out = (in - 1)*stride - 2*padding + dilation*(k - 1) + output_padding + 1``.
    """
    op = "conv_transpose2d"
    backend = params.check_arrays(op, dict(bias=bias), x=x, weight=weight)
    p = params.conv_transpose2d(x.shape, weight.shape, _shape(bias), stride, padding,
                                output_padding, groups, dilation)
    kernels = _kernels(op, backend, algo, p, x, weight, bias)
    # forward of the transposed op = backward-data of the convolution p describes
    y = kernels.backward_data(_prepared(backend, x, p.y_shape), _prepared(backend, weight), p)
    if bias is not None:
        y += bias.reshape(-1, 1, 1)
    return y.reshape(p.user_shape(p.x_shape))


_CONV_BACKWARD_DOC = """Gradients of ``{fwd}``: ``(grad_x, grad_weight, grad_bias)``.

    Parameters
    ----------
    grad_y : ndarray, the gradient of the loss with respect to ``{fwd}``'s output
    x, weight : ndarray, the forward call's input and weight
    stride, padding, dilation, groups : as for ``{fwd}``
    output_mask : three bools, which of (grad_x, grad_weight, grad_bias) to compute; the others
        come back as None and cost nothing
    algo : "auto" or a name from ``algorithms("{op}")``

    Returns
    -------
    (grad_x, grad_weight, grad_bias) with the shapes and dtype of x, weight and the bias
    (out_channels,), each None where output_mask says so.
"""


@_quiet
def conv2d_backward(grad_y, x, weight, stride=1, padding=0, dilation=1, groups=1, *,
                    output_mask=ALL_OUTPUTS, algo="auto"):
    op = "conv2d_backward"
    backend = params.check_arrays(op, grad_y=grad_y, x=x, weight=weight)
    p = params.conv2d_backward(grad_y.shape, x.shape, weight.shape, stride, padding, dilation,
                               groups, output_mask)
    return _conv_backward(op, backend, algo, p, grad_y, x, weight)


@_quiet
def conv1d_backward(grad_y, x, weight, stride=1, padding=0, dilation=1, groups=1, *,
                    output_mask=ALL_OUTPUTS, algo="auto"):
    op = "conv1d_backward"
    backend = params.check_arrays(op, grad_y=grad_y, x=x, weight=weight)
    p = params.conv1d_backward(grad_y.shape, x.shape, weight.shape, stride, padding, dilation,
                               groups, output_mask)
    return _conv_backward(op, backend, algo, p, grad_y, x, weight)


conv2d_backward.__doc__ = _CONV_BACKWARD_DOC.format(fwd="conv2d", op="conv2d_backward")
conv1d_backward.__doc__ = _CONV_BACKWARD_DOC.format(fwd="conv1d", op="conv1d_backward")


def _conv_backward(op, backend, algo, p, grad_y, x, weight):
    kernels = _kernels(op, backend, algo, p, grad_y, x, weight)
    want_x, want_w, want_b = p.output_mask
    gy = _prepared(backend, grad_y, p.y_shape)
    gx = gw = gb = None
    if want_x:
        gx = kernels.backward_data(gy, _prepared(backend, weight, p.w_shape), p)
        gx = gx.reshape(x.shape)
    if want_w:
        gw = kernels.backward_weight(_prepared(backend, x, p.x_shape), gy, p).reshape(weight.shape)
    if want_b:
        gb = kernels.backward_bias(gy, p)
    return gx, gw, gb


@_quiet
def conv_transpose2d_backward(grad_y, x, weight, stride=1, padding=0, output_padding=0,
                              groups=1, dilation=1, *, output_mask=ALL_OUTPUTS, algo="auto"):
    # With conv the convolution p describes, y = conv^T(x, w):
    #   grad_x = conv(grad_y, w)                      (the adjoint of the adjoint)
    #   grad_w = conv's weight gradient with conv's input = grad_y and conv's output grad = x
    #   grad_b = sum of grad_y over batch and space
    op = "conv_transpose2d_backward"
    backend = params.check_arrays(op, grad_y=grad_y, x=x, weight=weight)
    p = params.conv_transpose2d_backward(grad_y.shape, x.shape, weight.shape, stride, padding,
                                         output_padding, groups, dilation, output_mask)
    kernels = _kernels(op, backend, algo, p, grad_y, x, weight)
    want_x, want_w, want_b = p.output_mask
    gy = _prepared(backend, grad_y, p.x_shape)
    gx = gw = gb = None
    if want_x:
        gx = kernels.forward(gy, _prepared(backend, weight), None, p).reshape(x.shape)
    if want_w:
        gw = kernels.backward_weight(gy, _prepared(backend, x, p.y_shape), p)
    if want_b:
        gb = kernels.backward_bias(gy, p)
    return gx, gw, gb


conv_transpose2d_backward.__doc__ = _CONV_BACKWARD_DOC.format(
    fwd="conv_transpose2d", op="conv_transpose2d_backward").replace(
    "stride, padding, dilation, groups", "stride, padding, output_padding, groups, dilation")


# --------------------------------------------------------------------------------------------
# Pooling
# --------------------------------------------------------------------------------------------
@_quiet
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
    op = "max_pool2d"
    backend = params.check_arrays(op, x=x)
    p = params.max_pool2d(x.shape, kernel_size, stride, padding, dilation, ceil_mode,
                          return_indices)
    kernels = _kernels(op, backend, algo, p, x)
    y, indices = kernels.max_pool_forward(_prepared(backend, x, p.x_shape), p)
    y = y.reshape(p.user_shape(p.y_shape))
    return (y, indices.reshape(y.shape)) if p.return_indices else y


@_quiet
def max_pool2d_backward(grad_y, x, kernel_size, stride=None, padding=0, dilation=1,
                        ceil_mode=False, *, indices=None, algo="auto"):
    """Gradient of ``max_pool2d`` with respect to x.

    Each output gradient goes to the element its window selected (the first maximal one in
    row-major order); overlapping windows add up. ``indices`` from
    ``max_pool2d(..., return_indices=True)`` saves recomputing the selection.
    """
    op = "max_pool2d_backward"
    backend = params.check_arrays(op, grad_y=grad_y, x=x)
    if indices is not None:
        params.check_indices(op, indices, backend)
    p = params.max_pool2d_backward(grad_y.shape, x.shape, kernel_size, stride, padding,
                                   dilation, ceil_mode, indices_shape=_shape(indices))
    # x is read only to recompute the indices when they are not given
    kernels = _kernels(op, backend, algo, p, grad_y, x if indices is None else indices)
    if indices is None:
        _, indices = kernels.max_pool_forward(_prepared(backend, x, p.x_shape),
                                              replace(p, return_indices=True))
    else:
        params.check_index_range(op, indices, p.x_shape[2] * p.x_shape[3])
        indices = _prepared(backend, indices, p.y_shape)
    gx = kernels.max_pool_backward(_prepared(backend, grad_y, p.y_shape), indices, p)
    return gx.reshape(x.shape)


@_quiet
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
    op = "avg_pool2d"
    backend = params.check_arrays(op, x=x)
    p = params.avg_pool2d(x.shape, kernel_size, stride, padding, ceil_mode, count_include_pad,
                          divisor_override)
    kernels = _kernels(op, backend, algo, p, x)
    y = kernels.avg_pool_forward(_prepared(backend, x, p.x_shape), p)
    return y.reshape(p.user_shape(p.y_shape))


@_quiet
def avg_pool2d_backward(grad_y, x, kernel_size, stride=None, padding=0, ceil_mode=False,
                        count_include_pad=True, divisor_override=None, *, algo="auto"):
    """Gradient of ``avg_pool2d`` with respect to x: each window spreads its output gradient
    over its input elements, divided by the same divisor as the forward."""
    op = "avg_pool2d_backward"
    backend = params.check_arrays(op, grad_y=grad_y, x=x)
    p = params.avg_pool2d_backward(grad_y.shape, x.shape, kernel_size, stride, padding,
                                   ceil_mode, count_include_pad, divisor_override)
    kernels = _kernels(op, backend, algo, p, grad_y, x)
    gx = kernels.avg_pool_backward(_prepared(backend, grad_y, p.y_shape), p)
    return gx.reshape(x.shape)


@_quiet
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
    op = "adaptive_avg_pool2d"
    backend = params.check_arrays(op, x=x)
    p = params.adaptive_avg_pool2d(x.shape, output_size)
    kernels = _kernels(op, backend, algo, p, x)
    y = kernels.adaptive_avg_pool_forward(_prepared(backend, x, p.x_shape), p)
    return y.reshape(p.user_shape(p.y_shape))


@_quiet
def adaptive_avg_pool2d_backward(grad_y, x, *, algo="auto"):
    """Gradient of ``adaptive_avg_pool2d`` with respect to x (the output size is grad_y's)."""
    op = "adaptive_avg_pool2d_backward"
    backend = params.check_arrays(op, grad_y=grad_y, x=x)
    p = params.adaptive_avg_pool2d_backward(grad_y.shape, x.shape)
    kernels = _kernels(op, backend, algo, p, grad_y, x)
    gx = kernels.adaptive_avg_pool_backward(_prepared(backend, grad_y, p.y_shape), p)
    return gx.reshape(x.shape)


# --------------------------------------------------------------------------------------------
# Batch normalization
# --------------------------------------------------------------------------------------------
@_quiet
def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5, *, algo="auto"):
    """Batch normalization over axis 1, as ``torch.nn.functional.batch_norm``.

    ``y = weight * (x - mean) / sqrt(var + eps) + bias`` per channel. With ``training=True``
    mean and var are the batch's (biased variance) and, when running statistics are given,
    they are updated in place: ``running = (1 - momentum)*running + momentum*batch`` with the
    unbiased batch variance for ``running_var``. With ``training=False`` the running statistics
    are used and nothing is modified.

    Parameters
    ----------
    x : ndarray, (N, C, ...) of any rank >= 2
    running_mean, running_var : ndarray (C,) or None (both or neither; required in evaluation)
    weight, bias : ndarray (C,), optional (1 and 0)
    training : bool
    momentum, eps : float
    algo : "auto" or a name from ``algorithms("batch_norm")``
    """
    op = "batch_norm"
    backend = params.check_arrays(op, dict(running_mean=running_mean, running_var=running_var,
                                          weight=weight, bias=bias), x=x)
    p = params.batch_norm(x.shape, _shape(running_mean), _shape(running_var), _shape(weight),
                          _shape(bias), training, momentum, eps)
    if p.training:
        params.check_writeable(op, running_mean=running_mean, running_var=running_var)
    kernels = _kernels(op, backend, algo, p, x, weight, bias)
    # running statistics are passed as they are: they are updated in place
    return kernels.forward(_prepared(backend, x), running_mean, running_var,
                           _prepared(backend, weight), _prepared(backend, bias), p)


@_quiet
def batch_norm_backward(grad_y, x, weight=None, running_mean=None, running_var=None,
                        training=True, eps=1e-5, *, output_mask=ALL_OUTPUTS, algo="auto"):
    """Gradients of ``batch_norm``: ``(grad_x, grad_weight, grad_bias)``.

    ``training=True`` is the full gradient through the batch mean and variance (recomputed from
    x); ``training=False`` treats the running statistics as constants. A missing weight counts
    as ones; grad_weight and grad_bias are computed whether or not the forward had them.
    ``output_mask`` selects which gradients to compute; the others come back as None.
    """
    op = "batch_norm_backward"
    backend = params.check_arrays(op, dict(weight=weight, running_mean=running_mean,
                                          running_var=running_var), grad_y=grad_y, x=x)
    p = params.batch_norm_backward(grad_y.shape, x.shape, _shape(weight), _shape(running_mean),
                                   _shape(running_var), training, eps, output_mask)
    kernels = _kernels(op, backend, algo, p, grad_y, x, weight)
    return kernels.backward(*(_prepared(backend, a) for a in (grad_y, x, weight, running_mean,
                                                              running_var)), p)

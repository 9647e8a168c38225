"""Argument validation and normalisation: the one place where fastconv checks what it is given.

Every public op has a builder here with the op's name and signature, except that each array
argument is replaced by its shape (``x`` -> ``x_shape``). A builder validates every argument,
raising ``ValueError`` for bad shapes and values and ``TypeError`` for arguments of the wrong
kind, each message naming the op, the argument, the value given and what was expected; it then
returns a frozen parameter object with everything explicit. Kernels trust these objects and
check nothing themselves. :func:`check_arrays` does the same for the arrays themselves (array
type, device and dtype).

Normal forms the kernels see:

* spatial arguments are tuples with one int per spatial dimension; padding is a ``(low, high)``
  pair per dimension (``"same"`` may be asymmetric, the extra row/column at the high end);
* every op works on batched 2-D data: ``conv1d`` is lifted to a convolution with a unit height
  dimension, and unbatched inputs (``(C, H, W)``, ``(C, L)``) get a batch dimension of 1. The
  parameter object remembers both, so the public layer can give the caller their shapes back;
* transposed convolution is described by the convolution it is the adjoint of (see
  :class:`ConvParams`);
* the stride is 1 along any dimension with a single output (convolution and pooling), where
  it is never used; int arguments are at most ``INT_ARG_LIMIT`` (2**31 - 1) in magnitude.

The builders are pure functions of their arguments and their results are frozen, so each
remembers the parameter objects it built (:func:`_remembered`): a training loop that makes the
same call again and again validates it once (40-50 us a call saved on small layers).
"""
from __future__ import annotations

import functools
import numbers
from dataclasses import dataclass, replace
from math import prod

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
ALL_OUTPUTS = (True, True, True)
# Largest value of an int argument (stride, padding, dilation, kernel_size, output_padding,
# groups, output_size, divisor_override): PyTorch's pooling and transposed-convolution kernels
# hold these in 32-bit ints, and the bound keeps every sum and product of them that a kernel
# forms far inside 64 bits.
INT_ARG_LIMIT = 2**31 - 1
REMEMBERED = 4096  # parameter objects kept per builder; the memory is cleared when full


def _key(value):
    """A hashable stand-in for an argument that tells apart what validation tells apart: the
    type with the value (2, 2.0, True and np.int64(2) differ), sequences element by element;
    TypeError for what cannot be a key (an array, say)."""
    kind = type(value)
    if kind is tuple or kind is list:
        if all(type(v) is int for v in value):  # shapes, and most spatial arguments
            return kind, tuple(value)
        return kind, tuple(map(_key, value))
    hash(value)
    return kind, value


def _remembered(builder):
    """``builder`` with a memory of the objects it returned for the arguments seen so far.
    Calls that raise are not remembered (they raise again), nor calls whose arguments cannot
    be keys."""
    memory: dict = {}

    @functools.wraps(builder)
    def remembering(*args, **kwargs):
        try:
            key = (_key(args), _key(tuple(kwargs.items())) if kwargs else None)
        except TypeError:
            return builder(*args, **kwargs)
        found = memory.get(key)
        return found if found is not None else remember(memory, key, builder(*args, **kwargs))

    return remembering


def remember(memory: dict, key, value):
    """``memory[key] = value``, the memory emptied first when it holds ``REMEMBERED`` entries
    (the bound of every cache of the call path); returns value."""
    if len(memory) >= REMEMBERED:
        memory.clear()
    memory[key] = value
    return value


# --------------------------------------------------------------------------------------------
# Parameter objects
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConvParams:
    """A 2-D convolution ``y = conv(x, w)`` with every argument explicit.

    ``x_shape`` is ``(N, C, H, W)``, ``w_shape`` ``(O, C // groups, kh, kw)``, ``y_shape``
    ``(N, O, Ho, Wo)``. ``padding`` is ``((top, bottom), (left, right))``.

    Transposed convolution is described by the convolution it is the adjoint of
    (``transposed=True``): its input has this object's ``y_shape``, its output this object's
    ``x_shape``, and its weight ``(C_in, C_out // groups, kh, kw)`` is this object's
    ``w_shape``. Its forward is this convolution's backward-data, and so on.

    ``y_shape`` is given, not recomputed by kernels: for a transposed convolution with an
    ``output_padding`` of at least the stride it holds fewer rows than fit in the padded input.
    """

    x_shape: tuple[int, int, int, int]
    w_shape: tuple[int, int, int, int]
    y_shape: tuple[int, int, int, int]
    stride: tuple[int, int]
    padding: tuple[tuple[int, int], tuple[int, int]]
    dilation: tuple[int, int]
    groups: int
    has_bias: bool = False
    transposed: bool = False
    output_mask: tuple[bool, bool, bool] = ALL_OUTPUTS
    spatial_dims: int = 2  # 1 for conv1d (lifted here to a unit height dimension)
    unbatched: bool = False

    @property
    def kernel(self) -> tuple[int, int]:
        return self.w_shape[2], self.w_shape[3]

    @property
    def padded_size(self) -> tuple[int, int]:
        """Spatial size of the zero-padded input ``(H + top + bottom, W + left + right)``."""
        return tuple(n + lo + hi for n, (lo, hi) in zip(self.x_shape[2:], self.padding))

    def user_shape(self, shape):
        """The caller's view of a batched 2-D shape: unit height dropped for conv1d, batch
        dropped for unbatched calls."""
        return _user_shape(shape, self.spatial_dims, self.unbatched)

    def kernel_calls(self, op: str) -> tuple[str, ...]:
        """The conv family's entry points (``forward``, ``backward_data``,
        ``backward_weight``) that one call of ``op`` runs, in order: a transposed convolution's
        forward is this convolution's backward-data, its input gradient this one's forward."""
        ahead, gradient = ("backward_data", "forward") if self.transposed else (
            "forward", "backward_data")
        if not op.endswith("_backward"):
            return (ahead,)
        want_x, want_w, _ = self.output_mask
        return (gradient,) * want_x + ("backward_weight",) * want_w


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
        return _user_shape(shape, 2, self.unbatched)


@dataclass(frozen=True)
class AdaptivePoolParams:
    """Adaptive average pooling from ``x_shape`` to ``y_shape``: output row ``i`` averages input
    rows ``floor(i*H/Ho) .. ceil((i+1)*H/Ho) - 1`` (and likewise for columns)."""

    x_shape: tuple[int, int, int, int]
    y_shape: tuple[int, int, int, int]
    unbatched: bool = False

    def user_shape(self, shape):
        return _user_shape(shape, 2, self.unbatched)


@dataclass(frozen=True)
class BatchNormParams:
    """Batch normalization over axis 1 of ``x_shape`` (any rank >= 2), statistics over all other
    axes. ``has_running`` says running statistics were given (both or neither)."""

    x_shape: tuple[int, ...]
    training: bool
    momentum: float
    eps: float
    has_weight: bool = False
    has_bias: bool = False
    has_running: bool = False
    output_mask: tuple[bool, bool, bool] = ALL_OUTPUTS

    @property
    def channels(self) -> int:
        return self.x_shape[1]

    @property
    def count(self) -> int:
        """Number of values per channel that the batch statistics average over."""
        return prod(self.x_shape) // self.x_shape[1]


def _user_shape(shape, spatial_dims, unbatched):
    shape = tuple(shape)
    if spatial_dims == 1:
        shape = shape[:2] + shape[3:]
    return shape[1:] if unbatched else shape


# --------------------------------------------------------------------------------------------
# Small validators shared by every builder
# --------------------------------------------------------------------------------------------
def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _is_bool(value) -> bool:
    return isinstance(value, (bool, np.bool_))


def _ints(op, name, value, n, *, minimum, expected):
    """An int or a sequence of ``n`` ints, each ``>= minimum``, as a tuple of ``n`` ints."""
    if _is_int(value):
        values = (int(value),) * n
    elif isinstance(value, (tuple, list)) and all(_is_int(v) for v in value):
        if len(value) != n:
            what = "an int" if n == 1 else f"an int or a sequence of {n} ints"
            raise ValueError(f"{op}: {name} must be {what}, got {value!r} ({len(value)} values)")
        values = tuple(int(v) for v in value)
    else:
        what = "an int" if n == 1 else "an int or a pair of ints"
        raise TypeError(f"{op}: {name} must be {what}, got {value!r} ({type(value).__name__})")
    if any(v < minimum for v in values):
        raise ValueError(f"{op}: {name} must be {expected}, got {value!r}")
    _at_most_limit(op, name, value, values)
    return values


def _at_most_limit(op, name, value, values):
    if any(abs(v) > INT_ARG_LIMIT for v in values):
        raise ValueError(f"{op}: {name} must be at most 2**31 - 1 = {INT_ARG_LIMIT} in "
                         f"magnitude, got {value!r}")


def _positive_int(op, name, value):
    if not _is_int(value):
        raise TypeError(f"{op}: {name} must be an int, got {value!r} ({type(value).__name__})")
    if value < 1:
        raise ValueError(f"{op}: {name} must be a positive int, got {value!r}")
    _at_most_limit(op, name, value, (int(value),))
    return int(value)


def _flag(op, name, value):
    if not _is_bool(value):
        raise TypeError(f"{op}: {name} must be True or False, got {value!r} ({type(value).__name__})")
    return bool(value)


def _real(op, name, value, *, minimum=None):
    if not isinstance(value, numbers.Real) or _is_bool(value) or not np.isfinite(value):
        raise TypeError(f"{op}: {name} must be a finite real number, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {value!r}")
    return float(value)


def _mask(op, mask):
    """``output_mask``: three bools saying which of (input, weight, bias) gradients to compute."""
    if not (isinstance(mask, (tuple, list)) and len(mask) == 3 and all(_is_bool(m) for m in mask)):
        raise TypeError(f"{op}: output_mask must be a sequence of three bools "
                        f"(input, weight, bias), got {mask!r}")
    return tuple(bool(m) for m in mask)


def _shape(op, name, shape, ndims, legend):
    """A shape given as a sequence of non-negative ints with a length in ``ndims``."""
    if not (isinstance(shape, (tuple, list)) and all(_is_int(n) for n in shape)):
        raise TypeError(f"{op}: the shape of {name} must be a sequence of ints, got {shape!r}")
    shape = tuple(int(n) for n in shape)
    if len(shape) not in ndims:
        raise ValueError(f"{op}: {name} must be {legend}, got a {len(shape)}-D array of shape {shape}")
    if any(n < 0 for n in shape):
        raise ValueError(f"{op}: {name} has a negative dimension: {shape}")
    return shape


def _batched(op, name, shape, spatial_dims):
    """Shape of a batched input ``(N, C, *spatial)``; an unbatched ``(C, *spatial)`` gets N = 1.

    Returns ``(batched_shape, unbatched)``. Channels and spatial sizes must be at least 1; the
    batch may be empty (N = 0), as in PyTorch.
    """
    dims = {1: "L", 2: "H, W"}[spatial_dims]
    legend = f"{spatial_dims + 1}-D (C, {dims}) or {spatial_dims + 2}-D (N, C, {dims})"
    shape = _shape(op, name, shape, (spatial_dims + 1, spatial_dims + 2), legend)
    unbatched = len(shape) == spatial_dims + 1
    if unbatched:
        shape = (1,) + shape
    if any(n < 1 for n in shape[1:]):
        raise ValueError(f"{op}: {name} must have at least one channel and a non-empty spatial "
                         f"extent, got shape {shape[1:] if unbatched else shape}")
    return shape, unbatched


def _check_grad(op, grad_shape, user_shape):
    """``grad_y`` must have exactly the shape the forward op returns for these arguments."""
    grad_shape = _shape(op, "grad_y", grad_shape, (len(user_shape),),
                        f"{len(user_shape)}-D like the forward output {user_shape}")
    if grad_shape != tuple(user_shape):
        raise ValueError(f"{op}: grad_y has shape {grad_shape}, expected {tuple(user_shape)} "
                         f"(the output shape of the forward op for these arguments)")


def _lift(values, fill):
    """A 1-D spatial tuple lifted to 2-D: ``fill`` describes the new unit height dimension."""
    return (fill,) + tuple(values)


# --------------------------------------------------------------------------------------------
# Convolution
# --------------------------------------------------------------------------------------------
def _conv_padding(op, padding, stride, dilation, kernel):
    """Normalise conv padding (int, sequence, ``"valid"`` or ``"same"``) to (low, high) pairs.

    ``"same"`` pads ``dilation * (k - 1)`` in total, the odd one at the high end, as PyTorch;
    it needs stride 1 because no padding keeps a strided output the input's size.
    """
    n = len(kernel)
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * n
        if padding == "same":
            if any(s != 1 for s in stride):
                raise ValueError(f"{op}: padding='same' needs stride 1, got stride={stride}")
            totals = [d * (k - 1) for d, k in zip(dilation, kernel)]
            return tuple((t // 2, t - t // 2) for t in totals)
        raise ValueError(f"{op}: padding must be an int, a sequence of ints, 'same' or 'valid', "
                         f"got {padding!r}")
    pads = _ints(op, "padding", padding, n, minimum=0, expected="non-negative")
    return tuple((p, p) for p in pads)


def _conv_output_size(op, in_size, kernel, stride, padding, dilation):
    """out = floor((in + low + high - dilation*(k-1) - 1) / stride) + 1, per dimension."""
    out = []
    for n, k, s, (lo, hi), d in zip(in_size, kernel, stride, padding, dilation):
        span = d * (k - 1) + 1
        if n + lo + hi < span:
            raise ValueError(
                f"{op}: the kernel is larger than the padded input: kernel {tuple(kernel)} with "
                f"dilation {tuple(dilation)} spans {span} but the padded input is only "
                f"{n + lo + hi} (input {tuple(in_size)}, padding {tuple(padding)})")
        out.append((n + lo + hi - span) // s + 1)
    return tuple(out)


def _unused_stride_as_one(stride, out):
    """Along a dimension with a single output only window 0 is ever read, so the stride is never
    used: it becomes 1 there. Results are the same; kernels that size a buffer by the stride
    (direct's grid rows are a multiple of it) then stay small whatever stride was asked for."""
    return tuple(1 if o == 1 else s for s, o in zip(stride, out))


def _conv(op, spatial_dims, x_shape, weight_shape, bias_shape, stride, padding, dilation, groups):
    """Validate a convolution and describe it as a batched 2-D :class:`ConvParams`."""
    x_shape, unbatched = _batched(op, "x", x_shape, spatial_dims)
    kdims = "k" if spatial_dims == 1 else "kh, kw"
    weight_shape = _shape(op, "weight", weight_shape, (spatial_dims + 2,),
                          f"{spatial_dims + 2}-D (out_channels, in_channels/groups, {kdims})")
    groups = _positive_int(op, "groups", groups)
    n, c = x_shape[:2]
    o, cg, kernel = weight_shape[0], weight_shape[1], weight_shape[2:]
    if o < 1 or cg < 1 or min(kernel) < 1:
        raise ValueError(f"{op}: weight must have non-zero dimensions, got shape {weight_shape}")
    if o % groups:
        raise ValueError(f"{op}: weight has {o} output channels (weight.shape[0]), "
                         f"which is not divisible by groups={groups}")
    if cg * groups != c:
        raise ValueError(f"{op}: x has {c} channels but weight of shape {weight_shape} with "
                         f"groups={groups} expects {cg} * {groups} = {cg * groups} "
                         f"(weight.shape[1] must be in_channels / groups)")
    if bias_shape is not None:
        bias_shape = _shape(op, "bias", bias_shape, (1,), f"1-D of length {o}")
        if bias_shape != (o,):
            raise ValueError(f"{op}: bias must have shape ({o},) (one value per output channel), "
                             f"got {bias_shape}")
    stride = _ints(op, "stride", stride, spatial_dims, minimum=1, expected="positive")
    dilation = _ints(op, "dilation", dilation, spatial_dims, minimum=1, expected="positive")
    padding = _conv_padding(op, padding, stride, dilation, kernel)
    out = _conv_output_size(op, x_shape[2:], kernel, stride, padding, dilation)
    stride = _unused_stride_as_one(stride, out)
    if spatial_dims == 1:  # conv1d: a convolution over a unit-height image
        x_shape, weight_shape = x_shape[:2] + (1,) + x_shape[2:], weight_shape[:2] + (1,) + weight_shape[2:]
        stride, dilation, padding = _lift(stride, 1), _lift(dilation, 1), _lift(padding, (0, 0))
        out = _lift(out, 1)
    return ConvParams(x_shape=x_shape, w_shape=weight_shape, y_shape=(n, o) + out, stride=stride,
                      padding=padding, dilation=dilation, groups=groups,
                      has_bias=bias_shape is not None, spatial_dims=spatial_dims,
                      unbatched=unbatched)


@_remembered
def conv2d(x_shape, weight_shape, bias_shape=None, stride=1, padding=0, dilation=1, groups=1):
    return _conv("conv2d", 2, x_shape, weight_shape, bias_shape, stride, padding, dilation, groups)


@_remembered
def conv1d(x_shape, weight_shape, bias_shape=None, stride=1, padding=0, dilation=1, groups=1):
    return _conv("conv1d", 1, x_shape, weight_shape, bias_shape, stride, padding, dilation, groups)


def _conv_backward(op, spatial_dims, grad_y_shape, x_shape, weight_shape, stride, padding,
                   dilation, groups, mask):
    p = _conv(op, spatial_dims, x_shape, weight_shape, None, stride, padding, dilation, groups)
    _check_grad(op, grad_y_shape, p.user_shape(p.y_shape))
    return replace(p, output_mask=_mask(op, mask))


@_remembered
def conv2d_backward(grad_y_shape, x_shape, weight_shape, stride=1, padding=0, dilation=1,
                    groups=1, output_mask=ALL_OUTPUTS):
    return _conv_backward("conv2d_backward", 2, grad_y_shape, x_shape, weight_shape, stride,
                          padding, dilation, groups, output_mask)


@_remembered
def conv1d_backward(grad_y_shape, x_shape, weight_shape, stride=1, padding=0, dilation=1,
                    groups=1, output_mask=ALL_OUTPUTS):
    return _conv_backward("conv1d_backward", 1, grad_y_shape, x_shape, weight_shape, stride,
                          padding, dilation, groups, output_mask)


def _conv_transpose(op, x_shape, weight_shape, bias_shape, stride, padding, output_padding,
                    groups, dilation):
    """Validate a transposed convolution and describe it by the convolution it is the adjoint of.

    Output size per dimension, as PyTorch:
    ``out = (in - 1)*stride - 2*padding + dilation*(k - 1) + output_padding + 1``.
    """
    x_shape, unbatched = _batched(op, "x", x_shape, 2)
    weight_shape = _shape(op, "weight", weight_shape, (4,),
                          "4-D (in_channels, out_channels/groups, kh, kw)")
    groups = _positive_int(op, "groups", groups)
    n, c_in, h, w = x_shape
    if min(weight_shape) < 1:
        raise ValueError(f"{op}: weight must have non-zero dimensions, got shape {weight_shape}")
    if weight_shape[0] != c_in:
        raise ValueError(f"{op}: x has {c_in} channels but weight.shape[0] is {weight_shape[0]} "
                         f"(conv_transpose2d weights are (in_channels, out_channels/groups, kh, kw))")
    if c_in % groups:
        raise ValueError(f"{op}: x has {c_in} channels, which is not divisible by groups={groups}")
    c_out, kernel = weight_shape[1] * groups, weight_shape[2:]
    if bias_shape is not None:
        bias_shape = _shape(op, "bias", bias_shape, (1,), f"1-D of length {c_out}")
        if bias_shape != (c_out,):
            raise ValueError(f"{op}: bias must have shape ({c_out},) (one value per output "
                             f"channel), got {bias_shape}")
    stride = _ints(op, "stride", stride, 2, minimum=1, expected="positive")
    dilation = _ints(op, "dilation", dilation, 2, minimum=1, expected="positive")
    pads = _ints(op, "padding", padding, 2, minimum=0, expected="non-negative")
    out_pads = _ints(op, "output_padding", output_padding, 2, minimum=0, expected="non-negative")
    for op_, s, d in zip(out_pads, stride, dilation):
        if op_ >= max(s, d):
            raise ValueError(f"{op}: output_padding must be smaller than stride or dilation in "
                             f"each dimension, got output_padding={tuple(out_pads)} with "
                             f"stride={stride}, dilation={dilation}")
    out = tuple((i - 1) * s - 2 * p + d * (k - 1) + op_ + 1
                for i, s, p, d, k, op_ in zip((h, w), stride, pads, dilation, kernel, out_pads))
    if min(out) < 1:
        raise ValueError(f"{op}: the output size {out} is less than 1 for input size {(h, w)}, "
                         f"kernel {tuple(kernel)}, stride {stride}, padding {pads}, dilation "
                         f"{dilation}, output_padding {out_pads}")
    # the convolution's output is this op's input: its stride is unused where that has size 1
    return ConvParams(x_shape=(n, c_out) + out, w_shape=weight_shape, y_shape=x_shape,
                      stride=_unused_stride_as_one(stride, (h, w)),
                      padding=tuple((p, p) for p in pads), dilation=dilation, groups=groups,
                      has_bias=bias_shape is not None, transposed=True, unbatched=unbatched)


@_remembered
def conv_transpose2d(x_shape, weight_shape, bias_shape=None, stride=1, padding=0,
                     output_padding=0, groups=1, dilation=1):
    return _conv_transpose("conv_transpose2d", x_shape, weight_shape, bias_shape, stride,
                           padding, output_padding, groups, dilation)


@_remembered
def conv_transpose2d_backward(grad_y_shape, x_shape, weight_shape, stride=1, padding=0,
                              output_padding=0, groups=1, dilation=1, output_mask=ALL_OUTPUTS):
    op = "conv_transpose2d_backward"
    p = _conv_transpose(op, x_shape, weight_shape, None, stride, padding, output_padding, groups,
                        dilation)
    # The transposed op's output is the adjoint convolution's x.
    _check_grad(op, grad_y_shape, p.user_shape(p.x_shape))
    return replace(p, output_mask=_mask(op, output_mask))


# --------------------------------------------------------------------------------------------
# Pooling
# --------------------------------------------------------------------------------------------
def pool_output_size(size, kernel, stride, padding, dilation, ceil_mode):
    """Pooling output length along one dimension, exactly as PyTorch computes it.

    ``out = floor_or_ceil((size + 2*padding - dilation*(kernel-1) - 1) / stride) + 1``; with
    ``ceil_mode`` the last window must still start inside the input or the left padding, so an
    output whose window would start in the right padding is dropped.
    """
    span = dilation * (kernel - 1) + 1
    out = (size + 2 * padding - span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def _pool(op, x_shape, kernel_size, stride, padding, dilation, ceil_mode, **extra):
    x_shape, unbatched = _batched(op, "x", x_shape, 2)
    kernel = _ints(op, "kernel_size", kernel_size, 2, minimum=1, expected="positive")
    # PyTorch: stride=None (or an empty sequence) means stride = kernel_size.
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        stride = kernel
    stride = _ints(op, "stride", stride, 2, minimum=1, expected="positive")
    padding = _ints(op, "padding", padding, 2, minimum=0, expected="non-negative")
    dilation = _ints(op, "dilation", dilation, 2, minimum=1, expected="positive")
    ceil_mode = _flag(op, "ceil_mode", ceil_mode)
    if any(p > k // 2 for p, k in zip(padding, kernel)):
        raise ValueError(f"{op}: padding must be at most half the kernel size "
                         f"(kernel_size // 2 = {tuple(k // 2 for k in kernel)}), got "
                         f"padding={padding} with kernel_size={kernel}")
    out = tuple(pool_output_size(n, k, s, p, d, ceil_mode)
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
                      stride=_unused_stride_as_one(stride, out),
                      padding=padding, dilation=dilation, ceil_mode=ceil_mode,
                      unbatched=unbatched, **extra)


@_remembered
def max_pool2d(x_shape, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    return _pool("max_pool2d", x_shape, kernel_size, stride, padding, dilation, ceil_mode,
                 return_indices=_flag("max_pool2d", "return_indices", return_indices))


@_remembered
def max_pool2d_backward(grad_y_shape, x_shape, kernel_size, stride=None, padding=0, dilation=1,
                        ceil_mode=False, *, indices_shape=None):
    op = "max_pool2d_backward"
    p = _pool(op, x_shape, kernel_size, stride, padding, dilation, ceil_mode)
    _check_grad(op, grad_y_shape, p.user_shape(p.y_shape))
    if indices_shape is not None and tuple(indices_shape) != tuple(p.user_shape(p.y_shape)):
        raise ValueError(f"{op}: indices has shape {tuple(indices_shape)}, expected "
                         f"{p.user_shape(p.y_shape)} (the shape of grad_y)")
    return replace(p, saved_indices=indices_shape is not None)


def _avg_options(op, count_include_pad, divisor_override):
    count_include_pad = _flag(op, "count_include_pad", count_include_pad)
    if divisor_override is not None:
        if not _is_int(divisor_override):
            raise TypeError(f"{op}: divisor_override must be None or an int, got "
                            f"{divisor_override!r} ({type(divisor_override).__name__})")
        if divisor_override == 0:
            raise ValueError(f"{op}: divisor_override must be non-zero, got 0")
        divisor_override = int(divisor_override)
        _at_most_limit(op, "divisor_override", divisor_override, (divisor_override,))
    return dict(count_include_pad=count_include_pad, divisor_override=divisor_override)


@_remembered
def avg_pool2d(x_shape, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    op = "avg_pool2d"
    return _pool(op, x_shape, kernel_size, stride, padding, 1, ceil_mode,
                 **_avg_options(op, count_include_pad, divisor_override))


@_remembered
def avg_pool2d_backward(grad_y_shape, x_shape, kernel_size, stride=None, padding=0,
                        ceil_mode=False, count_include_pad=True, divisor_override=None):
    op = "avg_pool2d_backward"
    p = _pool(op, x_shape, kernel_size, stride, padding, 1, ceil_mode,
              **_avg_options(op, count_include_pad, divisor_override))
    _check_grad(op, grad_y_shape, p.user_shape(p.y_shape))
    return p


def _adaptive(op, x_shape, output_size):
    """``output_size``: an int or a pair; ``None`` in a pair keeps that input dimension."""
    x_shape, unbatched = _batched(op, "x", x_shape, 2)
    if _is_int(output_size):
        output_size = (output_size, output_size)
    if not (isinstance(output_size, (tuple, list)) and len(output_size) == 2
            and all(v is None or _is_int(v) for v in output_size)):
        raise TypeError(f"{op}: output_size must be an int or a pair of ints (None keeps the "
                        f"input size), got {output_size!r}")
    out = tuple(n if v is None else int(v) for n, v in zip(x_shape[2:], output_size))
    if min(out) < 1:
        raise ValueError(f"{op}: output_size must be positive, got {tuple(output_size)}")
    _at_most_limit(op, "output_size", tuple(output_size), out)
    return AdaptivePoolParams(x_shape=x_shape, y_shape=x_shape[:2] + out, unbatched=unbatched)


@_remembered
def adaptive_avg_pool2d(x_shape, output_size):
    return _adaptive("adaptive_avg_pool2d", x_shape, output_size)


@_remembered
def adaptive_avg_pool2d_backward(grad_y_shape, x_shape):
    op = "adaptive_avg_pool2d_backward"
    x4, unbatched = _batched(op, "x", x_shape, 2)
    grad_y_shape = _shape(op, "grad_y", grad_y_shape, (len(x_shape),),
                          f"{len(x_shape)}-D like x")
    g4 = (1,) + grad_y_shape if unbatched else grad_y_shape
    if g4[:2] != x4[:2]:
        raise ValueError(f"{op}: grad_y has shape {grad_y_shape} but x has shape {tuple(x_shape)}; "
                         f"their batch and channel dimensions must agree")
    if min(g4[2:]) < 1:
        raise ValueError(f"{op}: grad_y must have a non-empty spatial extent (it sets the "
                         f"output size), got shape {grad_y_shape}")
    return _adaptive(op, x_shape, g4[2:])


# --------------------------------------------------------------------------------------------
# Batch normalization
# --------------------------------------------------------------------------------------------
def _batch_norm(op, x_shape, running_mean_shape, running_var_shape, weight_shape, bias_shape,
                training, eps, **extra):
    x_shape = _shape(op, "x", x_shape, range(2, 33), "at least 2-D (N, C, ...)")
    c = x_shape[1]
    if c < 1:
        raise ValueError(f"{op}: x must have at least one channel (axis 1), got shape {x_shape}")
    for name, shape in (("running_mean", running_mean_shape), ("running_var", running_var_shape),
                        ("weight", weight_shape), ("bias", bias_shape)):
        if shape is not None and _shape(op, name, shape, (1,), f"1-D of length {c}") != (c,):
            raise ValueError(f"{op}: {name} must have shape ({c},) (one value per channel of "
                             f"x), got {tuple(shape)}")
    if (running_mean_shape is None) != (running_var_shape is None):
        raise ValueError(f"{op}: running_mean and running_var must both be given or both be None")
    training = _flag(op, "training", training)
    has_running = running_mean_shape is not None
    if not training and not has_running:
        raise ValueError(f"{op}: running_mean and running_var are required when training=False "
                         f"(evaluation normalises with the running statistics)")
    p = BatchNormParams(x_shape=x_shape, training=training, eps=_real(op, "eps", eps, minimum=0),
                        has_weight=weight_shape is not None, has_bias=bias_shape is not None,
                        has_running=has_running, **extra)
    if training and p.eps == 0:
        raise ValueError(f"{op}: eps must be positive when training=True (the batch variance "
                         f"may be 0), got {eps!r}")
    if training and p.count == 1:
        raise ValueError(f"{op}: expected more than 1 value per channel when training, got x "
                         f"of shape {x_shape}")
    return p


@_remembered
def batch_norm(x_shape, running_mean_shape=None, running_var_shape=None, weight_shape=None,
               bias_shape=None, training=False, momentum=0.1, eps=1e-5):
    op = "batch_norm"
    return _batch_norm(op, x_shape, running_mean_shape, running_var_shape, weight_shape,
                       bias_shape, training, eps, momentum=_real(op, "momentum", momentum))


@_remembered
def batch_norm_backward(grad_y_shape, x_shape, weight_shape=None, running_mean_shape=None,
                        running_var_shape=None, training=True, eps=1e-5,
                        output_mask=ALL_OUTPUTS):
    op = "batch_norm_backward"
    p = _batch_norm(op, x_shape, running_mean_shape, running_var_shape, weight_shape, None,
                    training, eps, momentum=0.0,
                    output_mask=_mask(op, output_mask))
    _check_grad(op, grad_y_shape, p.x_shape)
    return p


# --------------------------------------------------------------------------------------------
# Arrays
# --------------------------------------------------------------------------------------------
def array_kind(a) -> str | None:
    """``"cpu"`` for a NumPy array, ``"cuda"`` for a CuPy array, ``None`` for anything else.

    CuPy is recognised by its type's module so that NumPy calls never import it.
    """
    if isinstance(a, np.ndarray):
        return "cpu"
    if type(a).__module__.split(".")[0] == "cupy":
        import cupy

        if isinstance(a, cupy.ndarray):
            return "cuda"
    return None


def check_arrays(op, optional=None, **required) -> str:
    """Check the array arguments of one call; return the backend they run on.

    All arrays must be NumPy arrays (backend ``"cpu"``) or all CuPy arrays on one device
    (backend ``"cuda"``), of one floating dtype: float32 or float64. ``optional`` maps the
    names of optional arrays to their values, None where not given.
    """
    given = dict(required, **{k: v for k, v in (optional or {}).items() if v is not None})
    for name, a in given.items():
        if array_kind(a) is None:
            raise TypeError(f"{op}: {name} must be a numpy.ndarray or cupy.ndarray, got "
                            f"{type(a).__module__}.{type(a).__qualname__}")
    first, head = next(iter(given.items()))
    backend = array_kind(head)
    for name, a in given.items():
        if array_kind(a) != backend:
            raise TypeError(f"{op}: {first} is a {_type_name(head)} but {name} is a "
                            f"{_type_name(a)}; pass arrays of one kind")
        if backend == "cuda" and a.device.id != head.device.id:
            raise TypeError(f"{op}: {first} is on CUDA device {head.device.id} but {name} is on "
                            f"device {a.device.id}; pass arrays on one device")
        if a.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{op}: {name} has dtype {a.dtype}; expected float32 or float64")
        if a.dtype != head.dtype:
            raise TypeError(f"{op}: {first} has dtype {head.dtype} but {name} has dtype "
                            f"{a.dtype}; all arrays of one call must have the same dtype")
    return backend


def _type_name(a):
    return f"{type(a).__module__.split('.')[0]}.{type(a).__name__}"


def check_indices(op, indices, backend):
    """The ``indices`` of ``max_pool2d_backward``: an int64 array of the same kind as the data."""
    if array_kind(indices) is None:
        raise TypeError(f"{op}: indices must be a numpy.ndarray or cupy.ndarray, got "
                        f"{type(indices).__name__}")
    if array_kind(indices) != backend:
        raise TypeError(f"{op}: indices is a {_type_name(indices)} but grad_y and x are on the "
                        f"{backend!r} backend; pass arrays of one kind")
    if indices.dtype != np.int64:
        raise TypeError(f"{op}: indices has dtype {indices.dtype}; expected int64 (as returned "
                        f"by max_pool2d(..., return_indices=True))")


def check_index_range(op, indices, plane_size):
    """Indices address an H*W plane; one outside it would write out of bounds."""
    if indices.size:
        low, high = int(indices.min()), int(indices.max())
        if low < 0 or high >= plane_size:
            raise ValueError(f"{op}: indices must lie in [0, H*W) = [0, {plane_size}), got "
                             f"values from {low} to {high}")


def check_writeable(op, **arrays):
    """Arrays that are updated in place (running statistics) must be writeable."""
    for name, a in arrays.items():
        if a is not None and not a.flags.writeable:
            raise ValueError(f"{op}: {name} is read-only but training=True updates it in place")


def memory_size(backend) -> int | None:
    """All the memory there is to allocate from: the machine's physical memory for ``"cpu"``,
    the current device's for ``"cuda"``; None where it cannot be found out."""
    if backend == "cuda":
        try:
            import cupy

            device = cupy.cuda.runtime.getDevice()
        except Exception:  # no device: the allocators will say
            return None
        return _memory_size("cuda", device)
    return _memory_size("cpu", None)


@functools.lru_cache(maxsize=None)
def _memory_size(backend, device):
    """A machine's (or device's) total memory does not change: asked once, not per call."""
    try:
        if backend == "cuda":
            import cupy

            return int(cupy.cuda.runtime.memGetInfo()[1])
        import os

        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except Exception:  # no sysconf (Windows), no device: the allocators will say
        return None


def _bytes(n) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def check_memory(op, backend, needed):
    """``needed`` maps what one call allocates (outputs, workspace, copies of its inputs) to
    bytes. More than all the memory there is cannot be allocated: MemoryError, before any work
    starts, rather than an allocator failing half way through the call."""
    total, size = sum(needed.values()), memory_size(backend)
    if size is not None and total > size:
        parts = ", ".join(f"{what} {_bytes(n)}" for what, n in needed.items() if n)
        where = "the GPU has" if backend == "cuda" else "this machine has"
        raise MemoryError(f"{op}: this call needs {_bytes(total)} ({parts}) but {where} "
                          f"{_bytes(size)} of memory in all; nothing was computed")


def check_dtype_name(op, dtype):
    """A dtype given by name (as ``explain`` takes it): float32 or float64."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{op}: dtype must be 'float32' or 'float64', got {dtype!r}") from None
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"{op}: dtype must be 'float32' or 'float64', got {dtype!r}")
    return dt

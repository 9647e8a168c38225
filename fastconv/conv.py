"""Convolution: conv1d, conv2d, conv_transpose2d and their backward twins. Everything about
them that is not a kernel lives here: the parameter object, the builders that validate the
arguments into it, the output-size arithmetic, the public ops, and the cost model.

Normal forms the kernels see (:class:`ConvParams`): spatial arguments are tuples with one int
per dimension, padding a ``(low, high)`` pair per dimension (``"same"`` may be asymmetric, the
extra row/column at the high end); conv1d is lifted to a convolution with a unit height
dimension, and unbatched inputs get a batch dimension of 1 (the object remembers both, so the
caller gets their shapes back); the stride is 1 along any dimension with a single output,
where it is never used. Transposed convolution is described by the convolution it is the
adjoint of: its forward is that convolution's backward-data, its backward-data the
convolution's forward, and its weight gradient the convolution's weight gradient with input
and output gradient exchanged (as cuDNN and JAX treat it).

Cost model: ``flops`` counts a multiply-add as 2, so a convolution costs
``2 * N * O * Ho * Wo * (C / groups) * kh * kw`` per direction (forward, backward-data and
backward-weight perform the same multiply-adds); bias adds are not counted in a forward pass,
the bias gradient counts one add per element of ``grad_y``. ``min_bytes`` is the traffic of an
ideal kernel that reads each input and writes each output exactly once.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from math import prod

from . import _calls, _validate, dispatch, registry
from ._calls import preparer, shape_of
from ._validate import (ALL_OUTPUTS, batched, check_grad, dims, ints, lift,
                        gradient_mask, positive_int, unused_stride_as_one, user_shape)

__all__ = ["conv1d", "conv1d_backward", "conv2d", "conv2d_backward", "conv_transpose2d",
           "conv_transpose2d_backward", "ConvParams"]


# --------------------------------------------------------------------------------------------
# The parameter object
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
    def input_shape(self):
        """The op's input ``x`` (batched, 2-D): the convolution's x, or for a transposed
        convolution the convolution's y."""
        return self.y_shape if self.transposed else self.x_shape

    @property
    def output_shape(self):
        """The op's output (batched, 2-D): the convolution's y, or for a transposed convolution
        the convolution's x."""
        return self.x_shape if self.transposed else self.y_shape

    @property
    def out_channels(self) -> int:
        return self.output_shape[1]

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
        return user_shape(shape, self.spatial_dims, self.unbatched)

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

    def output_shapes(self, op: str) -> tuple:
        """Shapes of the arrays ``op`` returns, in the caller's layout (None: not computed)."""
        if not op.endswith("_backward"):
            return (self.user_shape(self.output_shape),)
        w = self.w_shape[:2] + self.w_shape[3:] if self.spatial_dims == 1 else self.w_shape
        return tuple(s if want else None for s, want in
                     zip((self.user_shape(self.input_shape), w, (self.out_channels,)),
                         self.output_mask))

    def output_bytes(self, op: str, itemsize: int) -> int:
        """Bytes of the arrays ``op`` returns."""
        return itemsize * sum(prod(s) for s in self.output_shapes(op) if s is not None)

    def own_bytes(self, op: str, itemsize: int) -> int:
        """Memory the public op allocates itself, besides the kernels' workspace: none."""
        return 0

    def sizes(self) -> tuple[int, ...]:
        """Element counts of the convolution's x, w and y, and of x zero-padded (the extent
        that index arithmetic over the padded input spans)."""
        return (prod(self.x_shape), prod(self.w_shape), prod(self.y_shape),
                prod(self.x_shape[:2]) * prod(self.padded_size))

    def macs(self) -> int:
        """Multiply-adds of one direction of the convolution."""
        n, o, ho, wo = self.y_shape
        return n * o * ho * wo * self.w_shape[1] * self.kernel[0] * self.kernel[1]

    def flops(self, op: str) -> int:
        """Floating-point operations of one call of ``op`` (see the module docstring)."""
        if not op.endswith("_backward"):
            return 2 * self.macs()
        want_x, want_w, want_b = self.output_mask
        return 2 * self.macs() * (want_x + want_w) + want_b * prod(self.output_shape)

    def min_bytes(self, op: str, itemsize: int) -> int:
        """Bytes an ideal kernel reads and writes: every input once, every output once."""
        x, w, y = prod(self.input_shape), prod(self.w_shape), prod(self.output_shape)
        if not op.endswith("_backward"):
            return itemsize * (x + w + y + self.has_bias * self.out_channels)
        want_x, want_w, want_b = self.output_mask
        reads = y + want_x * w + want_w * x
        writes = want_x * x + want_w * w + want_b * self.out_channels
        return itemsize * (reads + writes)


# --------------------------------------------------------------------------------------------
# Output sizes and builders: each public op's signature with its arrays replaced by shapes
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
    pads = ints(op, "padding", padding, n, minimum=0, expected="non-negative")
    return tuple((p, p) for p in pads)


def output_size(size, kernel, stride, low, high, dilation):
    """A convolution's output length along one dimension:
    ``out = floor((in + low + high - dilation*(k - 1) - 1) / stride) + 1``. Plain arithmetic,
    no checks (fastconv.torch's fake kernels call it with symbolic sizes)."""
    return (size + low + high - dilation * (kernel - 1) - 1) // stride + 1


def transposed_output_size(size, kernel, stride, padding, dilation, output_padding):
    """A transposed convolution's output length along one dimension, as PyTorch:
    ``out = (in - 1)*stride - 2*padding + dilation*(k - 1) + output_padding + 1``."""
    return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1


def _checked_output_size(op, in_size, kernel, stride, padding, dilation):
    """:func:`output_size` per dimension, once the padded input holds the dilated kernel."""
    out = []
    for n, k, s, (lo, hi), d in zip(in_size, kernel, stride, padding, dilation):
        span = d * (k - 1) + 1
        if n + lo + hi < span:
            raise ValueError(
                f"{op}: the kernel is larger than the padded input: kernel {tuple(kernel)} with "
                f"dilation {tuple(dilation)} spans {span} but the padded input is only "
                f"{n + lo + hi} (input {tuple(in_size)}, padding {tuple(padding)})")
        out.append(output_size(n, k, s, lo, hi, d))
    return tuple(out)


def _conv(op, spatial_dims, x_shape, weight_shape, bias_shape, stride, padding, dilation, groups):
    """Validate a convolution and describe it as a batched 2-D :class:`ConvParams`."""
    x_shape, unbatched = batched(op, "x", x_shape, spatial_dims)
    kdims = "k" if spatial_dims == 1 else "kh, kw"
    weight_shape = dims(op, "weight", weight_shape, (spatial_dims + 2,),
                        f"{spatial_dims + 2}-D (out_channels, in_channels/groups, {kdims})")
    groups = positive_int(op, "groups", groups)
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
        bias_shape = dims(op, "bias", bias_shape, (1,), f"1-D of length {o}")
        if bias_shape != (o,):
            raise ValueError(f"{op}: bias must have shape ({o},) (one value per output channel), "
                             f"got {bias_shape}")
    stride = ints(op, "stride", stride, spatial_dims, minimum=1, expected="positive")
    dilation = ints(op, "dilation", dilation, spatial_dims, minimum=1, expected="positive")
    padding = _conv_padding(op, padding, stride, dilation, kernel)
    out = _checked_output_size(op, x_shape[2:], kernel, stride, padding, dilation)
    stride = unused_stride_as_one(stride, out)
    if spatial_dims == 1:  # conv1d: a convolution over a unit-height image
        x_shape = x_shape[:2] + (1,) + x_shape[2:]
        weight_shape = weight_shape[:2] + (1,) + weight_shape[2:]
        stride, dilation, padding = lift(stride, 1), lift(dilation, 1), lift(padding, (0, 0))
        out = lift(out, 1)
    return ConvParams(x_shape=x_shape, w_shape=weight_shape, y_shape=(n, o) + out, stride=stride,
                      padding=padding, dilation=dilation, groups=groups,
                      has_bias=bias_shape is not None, spatial_dims=spatial_dims,
                      unbatched=unbatched)


def conv2d_params(x_shape, weight_shape, bias_shape=None, stride=1, padding=0, dilation=1,
                  groups=1):
    return _conv("conv2d", 2, x_shape, weight_shape, bias_shape, stride, padding, dilation, groups)


def conv1d_params(x_shape, weight_shape, bias_shape=None, stride=1, padding=0, dilation=1,
                  groups=1):
    return _conv("conv1d", 1, x_shape, weight_shape, bias_shape, stride, padding, dilation, groups)


def _conv_backward(op, spatial_dims, grad_y_shape, x_shape, weight_shape, stride, padding,
                   dilation, groups, mask):
    p = _conv(op, spatial_dims, x_shape, weight_shape, None, stride, padding, dilation, groups)
    check_grad(op, grad_y_shape, p.user_shape(p.y_shape))
    return replace(p, output_mask=gradient_mask(op, mask))


def conv2d_backward_params(grad_y_shape, x_shape, weight_shape, stride=1, padding=0,
                           dilation=1, groups=1, output_mask=ALL_OUTPUTS):
    return _conv_backward("conv2d_backward", 2, grad_y_shape, x_shape, weight_shape, stride,
                          padding, dilation, groups, output_mask)


def conv1d_backward_params(grad_y_shape, x_shape, weight_shape, stride=1, padding=0,
                           dilation=1, groups=1, output_mask=ALL_OUTPUTS):
    return _conv_backward("conv1d_backward", 1, grad_y_shape, x_shape, weight_shape, stride,
                          padding, dilation, groups, output_mask)


def _conv_transpose(op, x_shape, weight_shape, bias_shape, stride, padding, output_padding,
                    groups, dilation):
    """Validate a transposed convolution and describe it by the convolution it is the adjoint of.

    Output size per dimension, as PyTorch:
    ``out = (in - 1)*stride - 2*padding + dilation*(k - 1) + output_padding + 1``.
    """
    x_shape, unbatched = batched(op, "x", x_shape, 2)
    weight_shape = dims(op, "weight", weight_shape, (4,),
                        "4-D (in_channels, out_channels/groups, kh, kw)")
    groups = positive_int(op, "groups", groups)
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
        bias_shape = dims(op, "bias", bias_shape, (1,), f"1-D of length {c_out}")
        if bias_shape != (c_out,):
            raise ValueError(f"{op}: bias must have shape ({c_out},) (one value per output "
                             f"channel), got {bias_shape}")
    stride = ints(op, "stride", stride, 2, minimum=1, expected="positive")
    dilation = ints(op, "dilation", dilation, 2, minimum=1, expected="positive")
    pads = ints(op, "padding", padding, 2, minimum=0, expected="non-negative")
    out_pads = ints(op, "output_padding", output_padding, 2, minimum=0, expected="non-negative")
    for op_, s, d in zip(out_pads, stride, dilation):
        if op_ >= max(s, d):
            raise ValueError(f"{op}: output_padding must be smaller than stride or dilation in "
                             f"each dimension, got output_padding={tuple(out_pads)} with "
                             f"stride={stride}, dilation={dilation}")
    out = tuple(transposed_output_size(i, k, s, p, d, op_)
                for i, k, s, p, d, op_ in zip((h, w), kernel, stride, pads, dilation, out_pads))
    if min(out) < 1:
        raise ValueError(f"{op}: the output size {out} is less than 1 for input size {(h, w)}, "
                         f"kernel {tuple(kernel)}, stride {stride}, padding {pads}, dilation "
                         f"{dilation}, output_padding {out_pads}")
    # the convolution's output is this op's input: its stride is unused where that has size 1
    return ConvParams(x_shape=(n, c_out) + out, w_shape=weight_shape, y_shape=x_shape,
                      stride=unused_stride_as_one(stride, (h, w)),
                      padding=tuple((p, p) for p in pads), dilation=dilation, groups=groups,
                      has_bias=bias_shape is not None, transposed=True, unbatched=unbatched)


def conv_transpose2d_params(x_shape, weight_shape, bias_shape=None, stride=1, padding=0,
                            output_padding=0, groups=1, dilation=1):
    return _conv_transpose("conv_transpose2d", x_shape, weight_shape, bias_shape, stride,
                           padding, output_padding, groups, dilation)


def conv_transpose2d_backward_params(grad_y_shape, x_shape, weight_shape, stride=1, padding=0,
                                     output_padding=0, groups=1, dilation=1,
                                     output_mask=ALL_OUTPUTS):
    op = "conv_transpose2d_backward"
    p = _conv_transpose(op, x_shape, weight_shape, None, stride, padding, output_padding, groups,
                        dilation)
    # The transposed op's output is the adjoint convolution's x.
    check_grad(op, grad_y_shape, p.user_shape(p.x_shape))
    return replace(p, output_mask=gradient_mask(op, output_mask))


registry.add_op("conv2d", "conv", ("x", "weight", "bias"), conv2d_params)
registry.add_op("conv1d", "conv", ("x", "weight", "bias"), conv1d_params)
registry.add_op("conv_transpose2d", "conv", ("x", "weight", "bias"), conv_transpose2d_params)
registry.add_op("conv2d_backward", "conv", ("grad_y", "x", "weight"), conv2d_backward_params)
registry.add_op("conv1d_backward", "conv", ("grad_y", "x", "weight"), conv1d_backward_params)
registry.add_op("conv_transpose2d_backward", "conv", ("grad_y", "x", "weight"),
                conv_transpose2d_backward_params)


# --------------------------------------------------------------------------------------------
# The public ops. Each hands its arrays to fastconv._calls.run with the function that makes
# the plan of such a call (validation, dispatch and the memory check, once per signature).
# --------------------------------------------------------------------------------------------
def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, algo="auto"):
    """2-D convolution (cross-correlation), as ``torch.nn.functional.conv2d``.

    Parameters
    ----------
    x : ndarray, (N, C, H, W) or unbatched (C, H, W)
    weight : ndarray, (out_channels, C/groups, kh, kw)
    bias : ndarray (out_channels,), optional
    stride, dilation : int or pair, positive
    padding : int or pair (non-negative), or "valid" (no padding) or "same" (output size =
        input size, needs stride 1; an odd total puts the extra element at the end)
    groups : int, in_channels and out_channels must be divisible by it
    algo : "auto" or a name from ``algorithms("conv2d")``

    Returns
    -------
    y : ndarray, (N, out_channels, Ho, Wo), same array type and dtype as x, where per spatial
        dimension ``out = floor((in + pad_low + pad_high - dilation*(k - 1) - 1) / stride) + 1``.
    """
    return _calls.run("conv2d", _forward_plan, (x, weight, bias), "conv2d", conv2d_params,
                      stride, padding, dilation, groups, algo)


def conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, algo="auto"):
    """1-D convolution (cross-correlation), as ``torch.nn.functional.conv1d``.

    Parameters
    ----------
    x : ndarray, (N, C, L) or unbatched (C, L)
    weight : ndarray, (out_channels, C/groups, k)
    bias : ndarray (out_channels,), optional
    stride, dilation : int or 1-sequence, positive
    padding : int or 1-sequence (non-negative), or "valid" (no padding) or "same" (output
        size = input size, needs stride 1; an odd total puts the extra element at the end)
    groups : int, in_channels and out_channels must be divisible by it
    algo : "auto" or a name from ``algorithms("conv1d")``

    Returns
    -------
    y : ndarray, (N, out_channels, Lo), same array type and dtype as x, where
        ``out = floor((in + pad_low + pad_high - dilation*(k - 1) - 1) / stride) + 1``.
    """
    return _calls.run("conv1d", _forward_plan, (x, weight, bias), "conv1d", conv1d_params,
                      stride, padding, dilation, groups, algo)


def _forward_plan(x, weight, bias, op, params, stride, padding, dilation, groups, algo):
    backend = _validate.check_arrays(op, dict(bias=bias), x=x, weight=weight)
    p = params(x.shape, weight.shape, shape_of(bias), stride, padding, dilation, groups)
    algorithm = dispatch.kernels_for(op, backend, algo, p, (x, weight, bias))
    kernels, y_shape = algorithm.kernels, p.user_shape(p.output_shape)
    prep_x, prep_w = preparer(backend, x, p.x_shape), preparer(backend, weight, p.w_shape)
    prep_b = preparer(backend, bias)

    def plan(x, weight, bias):
        y = kernels.forward(prep_x(x), prep_w(weight), prep_b(bias), p)
        return y.reshape(y_shape)
    return dispatch.finish(plan, algorithm, op, p, x.dtype.itemsize)


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
    return _calls.run("conv_transpose2d", _transposed_plan, (x, weight, bias), stride, padding,
                      output_padding, groups, dilation, algo)


def _transposed_plan(x, weight, bias, stride, padding, output_padding, groups, dilation, algo):
    op = "conv_transpose2d"
    backend = _validate.check_arrays(op, dict(bias=bias), x=x, weight=weight)
    p = conv_transpose2d_params(x.shape, weight.shape, shape_of(bias), stride, padding,
                                output_padding, groups, dilation)
    algorithm = dispatch.kernels_for(op, backend, algo, p, (x, weight, bias))
    kernels, y_shape = algorithm.kernels, p.user_shape(p.output_shape)
    prep_x, prep_w = preparer(backend, x, p.input_shape), preparer(backend, weight)

    def plan(x, weight, bias):
        # forward of the transposed op = backward-data of the convolution p describes
        y = kernels.backward_data(prep_x(x), prep_w(weight), p)
        if bias is not None:
            y += bias.reshape(-1, 1, 1)
        return y.reshape(y_shape)
    # the bias is added here, by NumPy (or CuPy)
    return dispatch.finish(plan, algorithm, op, p, x.dtype.itemsize,
                           arithmetic_here=bias is not None)


def conv2d_backward(grad_y, x, weight, stride=1, padding=0, dilation=1, groups=1, *,
                    output_mask=ALL_OUTPUTS, algo="auto"):
    """Gradients of ``conv2d``: ``(grad_x, grad_weight, grad_bias)``.

    Parameters
    ----------
    grad_y : ndarray, the gradient of the loss with respect to ``conv2d``'s output
    x, weight : ndarray, the forward call's input and weight
    stride, padding, dilation, groups : as for ``conv2d``
    output_mask : three bools, which of (grad_x, grad_weight, grad_bias) to compute; the others
        come back as None and cost nothing
    algo : "auto" or a name from ``algorithms("conv2d_backward")``

    Returns
    -------
    (grad_x, grad_weight, grad_bias) with the shapes and dtype of x, weight and the bias
    (out_channels,), each None where output_mask says so.
    """
    return _calls.run("conv2d_backward", _backward_plan, (grad_y, x, weight), "conv2d_backward",
                      conv2d_backward_params, stride, padding, dilation, groups, output_mask,
                      algo)


def conv1d_backward(grad_y, x, weight, stride=1, padding=0, dilation=1, groups=1, *,
                    output_mask=ALL_OUTPUTS, algo="auto"):
    """Gradients of ``conv1d``: ``(grad_x, grad_weight, grad_bias)``.

    Parameters
    ----------
    grad_y : ndarray, the gradient of the loss with respect to ``conv1d``'s output
    x, weight : ndarray, the forward call's input and weight
    stride, padding, dilation, groups : as for ``conv1d``
    output_mask : three bools, which of (grad_x, grad_weight, grad_bias) to compute; the others
        come back as None and cost nothing
    algo : "auto" or a name from ``algorithms("conv1d_backward")``

    Returns
    -------
    (grad_x, grad_weight, grad_bias) with the shapes and dtype of x, weight and the bias
    (out_channels,), each None where output_mask says so.
    """
    return _calls.run("conv1d_backward", _backward_plan, (grad_y, x, weight), "conv1d_backward",
                      conv1d_backward_params, stride, padding, dilation, groups, output_mask,
                      algo)


def _backward_plan(grad_y, x, weight, op, params, stride, padding, dilation, groups, mask, algo):
    backend = _validate.check_arrays(op, grad_y=grad_y, x=x, weight=weight)
    p = params(grad_y.shape, x.shape, weight.shape, stride, padding, dilation, groups, mask)
    algorithm = dispatch.kernels_for(op, backend, algo, p, (grad_y, x, weight))
    kernels, (want_x, want_w, want_b) = algorithm.kernels, p.output_mask
    prep_gy, prep_x = preparer(backend, grad_y, p.y_shape), preparer(backend, x, p.x_shape)
    prep_w = preparer(backend, weight, p.w_shape)

    def plan(grad_y, x, weight):
        gy = prep_gy(grad_y)
        gx = gw = gb = None
        if want_x:
            gx = kernels.backward_data(gy, prep_w(weight), p)
            gx = gx.reshape(x.shape)
        if want_w:
            gw = kernels.backward_weight(prep_x(x), gy, p)
            gw = gw.reshape(weight.shape)
        if want_b:
            gb = kernels.backward_bias(gy, p)
        return gx, gw, gb
    return dispatch.finish(plan, algorithm, op, p, x.dtype.itemsize)


def conv_transpose2d_backward(grad_y, x, weight, stride=1, padding=0, output_padding=0,
                              groups=1, dilation=1, *, output_mask=ALL_OUTPUTS, algo="auto"):
    """Gradients of ``conv_transpose2d``: ``(grad_x, grad_weight, grad_bias)``.

    Parameters
    ----------
    grad_y : ndarray, the gradient of the loss with respect to ``conv_transpose2d``'s output
    x, weight : ndarray, the forward call's input and weight
    stride, padding, output_padding, groups, dilation : as for ``conv_transpose2d``
    output_mask : three bools, which of (grad_x, grad_weight, grad_bias) to compute; the others
        come back as None and cost nothing
    algo : "auto" or a name from ``algorithms("conv_transpose2d_backward")``

    Returns
    -------
    (grad_x, grad_weight, grad_bias) with the shapes and dtype of x, weight and the bias
    (out_channels,), each None where output_mask says so.
    """
    return _calls.run("conv_transpose2d_backward", _transposed_backward_plan,
                      (grad_y, x, weight), stride, padding, output_padding, groups, dilation,
                      output_mask, algo)


def _transposed_backward_plan(grad_y, x, weight, stride, padding, output_padding, groups,
                              dilation, mask, algo):
    # With conv the convolution p describes, y = conv^T(x, w):
    #   grad_x = conv(grad_y, w)                      (the adjoint of the adjoint)
    #   grad_w = conv's weight gradient with conv's input = grad_y and conv's output grad = x
    #   grad_b = sum of grad_y over batch and space
    op = "conv_transpose2d_backward"
    backend = _validate.check_arrays(op, grad_y=grad_y, x=x, weight=weight)
    p = conv_transpose2d_backward_params(grad_y.shape, x.shape, weight.shape, stride, padding,
                                         output_padding, groups, dilation, mask)
    algorithm = dispatch.kernels_for(op, backend, algo, p, (grad_y, x, weight))
    kernels, (want_x, want_w, want_b) = algorithm.kernels, p.output_mask
    prep_gy = preparer(backend, grad_y, p.output_shape)
    prep_x, prep_w = preparer(backend, x, p.input_shape), preparer(backend, weight)

    def plan(grad_y, x, weight):
        gy = prep_gy(grad_y)
        gx = gw = gb = None
        if want_x:
            gx = kernels.forward(gy, prep_w(weight), None, p).reshape(x.shape)
        if want_w:
            gw = kernels.backward_weight(gy, prep_x(x), p)
        if want_b:
            gb = kernels.backward_bias(gy, p)
        return gx, gw, gb
    return dispatch.finish(plan, algorithm, op, p, x.dtype.itemsize)

"""fastconv's ops as PyTorch operators: ``torch.library.custom_op`` registrations under the
``fastconv::`` namespace, each with a fake (meta) implementation for tracing and
``torch.compile``, and an autograd formula that calls the matching ``*_backward`` operator.
The functions at the bottom mirror ``torch.nn.functional``'s signatures and defaults and take
``algo=`` on top, passed through to fastconv's dispatcher.

Every operator hands its tensors to fastconv without copying (see ``_handover``): CPU tensors
as NumPy views, CUDA tensors as CuPy arrays through DLPack, on PyTorch's current stream.
fastconv validates every argument and raises ``ValueError``/``TypeError`` naming it.

Three ways in, one implementation (:func:`_way`). Under ``torch.compile``, on fake or meta
tensors, on tensor subclasses and under functorch transforms, a call goes through the
registered operator (``torch.ops.fastconv.*``), which PyTorch's dispatcher, fake tensors and
``opcheck`` understand. A plain eager call on CPU or CUDA tensors skips the dispatcher (about
10 us a call, ``benchmarks/custom_op_cost.py``): with no gradient wanted, the public function
hands the tensors straight to fastconv's op with the caller's arguments; otherwise it runs an
``autograd.Function`` (one per op kind, below) whose forward and backward call fastconv's
forward and backward ops, again with the caller's arguments. Max pooling without indices and
batch norm return one output there: the registered forms return the indices, and the updated
running statistics, as extra outputs.

Backward operators return an empty tensor in place of a gradient ``output_mask`` leaves out
(custom operators cannot return None); the autograd formulas turn those into None. Double
backward is not supported: the backward operators have no autograd formula of their own, and
the eager functions' backwards are ``once_differentiable`` (a second derivative raises).
"""
from __future__ import annotations

import numbers
from typing import Optional, Sequence

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

import fastconv
from fastconv.conv import output_size as conv_output_size
from fastconv.pool import _max_pool2d_backward_of_own_indices
from fastconv.conv import transposed_output_size
from fastconv.pool import output_size as pool_output_size

from ._handover import device_of, on_device, to_array, to_tensor

__all__ = ["conv2d", "conv1d", "conv_transpose2d", "max_pool2d", "avg_pool2d",
           "adaptive_avg_pool2d", "batch_norm"]


def _call(fn, tensors, *args, **kwargs):
    """fn(*arrays of tensors, *args, **kwargs) on the tensors' device; tensor results.

    The common case, CPU tensors with fastconv already on torch's thread count, is plain code:
    entering the two context managers of :func:`on_device` cost some 5 us a call."""
    arrays = []
    for t in tensors:
        if t is None:
            arrays.append(None)
        elif t.is_cpu:
            arrays.append(_numpy(t))
        else:  # CUDA (to_array names a device it cannot take)
            with on_device(device_of(*tensors)):
                return _tensors(fn(*(to_array(t) for t in tensors), *args, **kwargs))
    return _cpu_tensors(_cpu_run(fn, arrays, *args, **kwargs))


def _cpu_run(fn, arrays, *args, **kwargs):
    """fn(*arrays, *args, **kwargs) of NumPy arrays, fastconv's kernels on torch's thread
    count; fn's NumPy results."""
    wanted = torch.get_num_threads()
    if wanted == _thread_count():
        return fn(*arrays, *args, **kwargs)
    with _cpu_threads().limited(wanted):
        return fn(*arrays, *args, **kwargs)


def _numpy(t):
    """The NumPy view of a CPU tensor (force: without a detach() first when it requires grad,
    0.4 us less)."""
    return t.numpy(force=True) if t.requires_grad else t.numpy()


def _tensors(out):
    """Tensors over fastconv's result arrays (a tuple of them, None kept, or one)."""
    if type(out) is tuple:
        return tuple(None if a is None else to_tensor(a) for a in out)
    return to_tensor(out)


def _cpu_tensors(out):
    """:func:`_tensors` of NumPy results (every CPU call): torch.from_numpy straight away,
    without to_tensor's look at each array's kind (0.2 us a call)."""
    if type(out) is tuple:
        return tuple(None if a is None else _from_numpy(a) for a in out)
    return _from_numpy(out)


_from_numpy = torch.from_numpy
_threads = None  # fastconv.cpu._threads, imported with the first CPU call (it imports Numba)


def _cpu_threads():
    global _threads, _thread_count
    if _threads is None:
        from fastconv.cpu import _threads
        _thread_count = _threads.count_of_this_thread()
    return _threads


def _first_thread_count():
    return _cpu_threads().threads()


# fastconv's CPU thread count of the calling thread: the backend's fastest function for it once
# the backend is loaded (_cpu_threads), until then one that loads it
_thread_count = _first_thread_count


def _or_empty(gradients, like):
    """Backward results with each None (not asked for) as an empty tensor of like's kind."""
    return tuple(like.new_empty(0) if g is None else g for g in gradients)


def _masked(gradients, mask):
    return tuple(g if wanted else None for g, wanted in zip(gradients, mask))


def _fake_gradients(like, shapes, mask):
    """The fake of a backward operator: empty tensors of ``shapes``, (0,) where not asked for."""
    return tuple(like.new_empty(s if wanted else (0,)) for s, wanted in zip(shapes, mask))


# --------------------------------------------------------------------------------------------
# Three ways in
# --------------------------------------------------------------------------------------------
_PLAIN = (Tensor, torch.nn.Parameter)
_is_wrapped = torch._C._functorch.is_functorch_wrapped_tensor

DIRECT, EAGER, REGISTERED = "direct", "eager", "registered"


def _plain(tensors) -> bool:
    """Whether a call can skip PyTorch's dispatcher: eager (not compiling, no functorch
    transform active), and every tensor a plain tensor (no subclass, fake or meta tensor, no
    functorch wrapper left over from a transform) on the CPU or a CUDA device. About 1 us
    (``Tensor.device`` alone costs 0.4 us a tensor, its ``is_cpu`` 0.1)."""
    if torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active():
        return False
    for t in tensors:
        if t is not None and not (type(t) in _PLAIN and (t.is_cpu or t.is_cuda)
                                  and not _is_wrapped(t)):
            return False
    return True


def _way(*tensors) -> str:
    """How a call with these tensors runs:

    - ``DIRECT``: plain (:func:`_plain`) and no gradient wanted, so there is no autograd node
      to make: the public function hands the tensors straight to fastconv's op with the
      arguments as the caller gave them (fastconv validates them as PyTorch would). The common
      case of inference; on the CPU the public functions try :func:`_views`, the same way in
      checked in one pass, before they ask.
    - ``EAGER``: plain, under autograd: the op's ``autograd.Function`` below, whose forward and
      backward call fastconv's forward and backward ops directly, with the caller's arguments.
    - ``REGISTERED``: anything else (``torch.compile``, fake or meta tensors, subclasses,
      functorch transforms) goes through the registered operator ``torch.ops.fastconv.*``,
      which PyTorch's dispatcher, fake tensors and ``opcheck`` understand.
    """
    if not _plain(tensors):
        return REGISTERED
    if torch.is_grad_enabled():
        for t in tensors:
            if t is not None and t.requires_grad:
                return EAGER
    return DIRECT


def _views(*tensors):
    """The NumPy views of a call's tensors when it goes straight to fastconv's op on the CPU:
    plain tensors (:func:`_plain`) on the CPU, no gradient wanted, fastconv already on torch's
    thread count. None otherwise, and the call takes :func:`_way`'s road. The same checks as
    ``_way`` and ``_call`` made in one pass: the common case of inference, where every
    microsecond is a tenth of a tiny call.

    A functorch wrapper left over from a transform is told apart by ``Tensor.numpy`` itself,
    which refuses any tensor without storage of its own (a RuntimeError); only ``force=True``,
    which detaches first, needs the explicit look (0.15 us a tensor)."""
    if torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active():
        return None
    arrays = []
    try:
        for t in tensors:
            if t is None:
                arrays.append(None)
            elif type(t) not in _PLAIN or not t.is_cpu:
                return None
            elif t.requires_grad:  # (grad mode asked only here: 0.2 us)
                if torch.is_grad_enabled() or _is_wrapped(t):
                    return None
                arrays.append(t.numpy(force=True))
            else:
                arrays.append(t.numpy())
    except RuntimeError:
        return None
    if torch.get_num_threads() != _thread_count():
        return None
    return arrays


def _view(t):
    """:func:`_views` of a call with one tensor (pooling), without the loop: its NumPy view,
    or None."""
    if (torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active()
            or type(t) not in _PLAIN or not t.is_cpu
            or torch.get_num_threads() != _thread_count()):
        return None
    if t.requires_grad:
        if torch.is_grad_enabled() or _is_wrapped(t):
            return None
        return t.numpy(force=True)
    try:
        return t.numpy()
    except RuntimeError:  # a functorch wrapper (see _views)
        return None


def _first_order(backward):
    """``backward`` under ``once_differentiable`` (a second derivative raises rather than
    vanishing) only where one could be asked for: under ``create_graph=True``, the one case
    where grad mode is on during a backward. Otherwise once_differentiable's ``no_grad`` block
    is all it does, at 2-3 us a backward."""
    guarded = once_differentiable(backward)

    def backward_once(ctx, *grads):
        if torch.is_grad_enabled():
            return guarded(ctx, *grads)
        return backward(ctx, *grads)
    return backward_once


def _apply(function):
    """``function.apply`` without the Python layer of ``autograd.Function.apply`` (some 3 us
    a call), which binds defaults for a ``setup_context`` (these functions have none) and
    serves functorch (whose calls never come this way: :func:`_plain`) before it calls this
    same C implementation."""
    return super(torch.autograd.Function, function).apply


# --------------------------------------------------------------------------------------------
# The registered operators
# --------------------------------------------------------------------------------------------
def _register(name, impl, fake, *, backward=None, setup=None, formula=None):
    """``fastconv::<name>``: ``impl`` as a custom operator with ``fake`` as its fake; with
    ``formula`` (a function of the backward operator that returns the autograd formula) and
    ``setup``, differentiable through the registered operator ``backward``."""
    operator = torch.library.custom_op(f"fastconv::{name}", impl, mutates_args=())
    operator.register_fake(fake)
    if formula is not None:
        operator.register_autograd(formula(backward), setup_context=setup)
    return operator


def _differentiable(name, impl, fake, backward_impl, backward_fake, *, setup, formula):
    """``fastconv::<name>`` and ``fastconv::<name>_backward``, the first differentiable through
    the second: (forward, backward) operators."""
    backward = _register(f"{name}_backward", backward_impl, backward_fake)
    return _register(name, impl, fake, backward=backward, setup=setup, formula=formula), backward


# --------------------------------------------------------------------------------------------
# Output shapes for the fake implementations: the front end's own arithmetic (plain, so that
# symbolic sizes work)
# --------------------------------------------------------------------------------------------
def _conv_sizes(x, weight, stride, padding, padding_rule, dilation):
    spatial = len(stride)
    sizes = []
    for n, k, s, p, d in zip(x.shape[-spatial:], weight.shape[2:], stride, padding, dilation):
        if padding_rule == "same":
            low, high = d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2
        else:
            low = high = 0 if padding_rule == "valid" else p
        sizes.append(conv_output_size(n, k, s, low, high, d))
    return tuple(x.shape[:-spatial - 1]) + (weight.shape[0],) + tuple(sizes)


def _transposed_sizes(x, weight, stride, padding, output_padding, groups, dilation):
    sizes = [transposed_output_size(n, k, s, p, d, op) for n, k, s, p, op, d in
             zip(x.shape[-2:], weight.shape[2:], stride, padding, output_padding, dilation)]
    return tuple(x.shape[:-3]) + (weight.shape[1] * groups,) + tuple(sizes)


def _pool_sizes(x, kernel_size, stride, padding, dilation, ceil_mode):
    sizes = [pool_output_size(n, k, s, p, d, ceil_mode) for n, k, s, p, d in
             zip(x.shape[-2:], kernel_size, stride, padding, dilation)]
    return tuple(x.shape[:-2]) + tuple(sizes)


# --------------------------------------------------------------------------------------------
# Convolutions
# --------------------------------------------------------------------------------------------
def _padding_of(padding, padding_rule):
    return padding_rule or list(padding)


# Every convolution operator takes (x, weight, bias, *settings, algo) and its backward operator
# (grad_y, x, weight, *settings, output_mask, algo).
def _conv_setup(ctx, inputs, output):
    x, weight, bias, *settings = inputs
    ctx.save_for_backward(x, weight)
    ctx.settings, ctx.has_bias = settings, bias is not None


def _conv_autograd(backward):
    """The autograd formula of a convolution operator whose gradients ``backward`` computes."""
    def differentiate(ctx, grad_y):
        x, weight = ctx.saved_tensors
        wanted = ctx.needs_input_grad
        mask = [wanted[0], wanted[1], ctx.has_bias and wanted[2]]
        gradients = (None, None, None)
        if any(mask):
            *settings, algo = ctx.settings
            gradients = _masked(backward(grad_y, x, weight, *settings, mask, algo), mask)
        return gradients + (None,) * len(ctx.settings)
    return differentiate


def _define_conv(name):
    """fastconv::{name} and fastconv::{name}_backward for conv2d and conv1d (same signature)."""
    forward_fn = getattr(fastconv, name)
    backward_fn = getattr(fastconv, name + "_backward")

    def forward(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: Sequence[int],
                padding: Sequence[int], padding_rule: str, dilation: Sequence[int], groups: int,
                algo: str) -> Tensor:
        return _call(forward_fn, (x, weight, bias), list(stride),
                     _padding_of(padding, padding_rule), list(dilation), groups, algo=algo)

    def forward_fake(x, weight, bias, stride, padding, padding_rule, dilation, groups, algo):
        return x.new_empty(_conv_sizes(x, weight, stride, padding, padding_rule, dilation))

    def backward(grad_y: Tensor, x: Tensor, weight: Tensor, stride: Sequence[int],
                 padding: Sequence[int], padding_rule: str, dilation: Sequence[int],
                 groups: int, output_mask: Sequence[bool],
                 algo: str) -> tuple[Tensor, Tensor, Tensor]:
        out = _call(backward_fn, (grad_y, x, weight), list(stride),
                    _padding_of(padding, padding_rule), list(dilation), groups,
                    output_mask=tuple(output_mask), algo=algo)
        return _or_empty(out, x)

    def backward_fake(grad_y, x, weight, stride, padding, padding_rule, dilation, groups,
                      output_mask, algo):
        return _fake_gradients(x, (x.shape, weight.shape, (weight.shape[0],)), output_mask)

    return _differentiable(name, forward, forward_fake, backward, backward_fake,
                           setup=_conv_setup, formula=_conv_autograd)


_conv2d, _conv2d_backward = _define_conv("conv2d")
_conv1d, _conv1d_backward = _define_conv("conv1d")


def _conv_transpose2d_impl(x: Tensor, weight: Tensor, bias: Optional[Tensor],
                           stride: Sequence[int], padding: Sequence[int],
                           output_padding: Sequence[int], groups: int, dilation: Sequence[int],
                           algo: str) -> Tensor:
    return _call(fastconv.conv_transpose2d, (x, weight, bias), list(stride), list(padding),
                 list(output_padding), groups, list(dilation), algo=algo)


def _conv_transpose2d_fake(x, weight, bias, stride, padding, output_padding, groups, dilation,
                           algo):
    return x.new_empty(_transposed_sizes(x, weight, stride, padding, output_padding, groups,
                                         dilation))


def _conv_transpose2d_backward_impl(grad_y: Tensor, x: Tensor, weight: Tensor,
                                    stride: Sequence[int], padding: Sequence[int],
                                    output_padding: Sequence[int], groups: int,
                                    dilation: Sequence[int], output_mask: Sequence[bool],
                                    algo: str) -> tuple[Tensor, Tensor, Tensor]:
    out = _call(fastconv.conv_transpose2d_backward, (grad_y, x, weight), list(stride),
                list(padding), list(output_padding), groups, list(dilation),
                output_mask=tuple(output_mask), algo=algo)
    return _or_empty(out, x)


def _conv_transpose2d_backward_fake(grad_y, x, weight, stride, padding, output_padding, groups,
                                    dilation, output_mask, algo):
    return _fake_gradients(x, (x.shape, weight.shape, (weight.shape[1] * groups,)), output_mask)


_conv_transpose2d, _conv_transpose2d_backward = _differentiable(
    "conv_transpose2d", _conv_transpose2d_impl, _conv_transpose2d_fake,
    _conv_transpose2d_backward_impl, _conv_transpose2d_backward_fake, setup=_conv_setup,
    formula=_conv_autograd)


# --------------------------------------------------------------------------------------------
# Pooling
# --------------------------------------------------------------------------------------------
def _max_pool2d_impl(x: Tensor, kernel_size: Sequence[int], stride: Sequence[int],
                     padding: Sequence[int], dilation: Sequence[int], ceil_mode: bool,
                     algo: str) -> tuple[Tensor, Tensor]:
    return _call(fastconv.max_pool2d, (x,), list(kernel_size), list(stride), list(padding),
                 list(dilation), ceil_mode, True, algo=algo)


def _max_pool2d_fake(x, kernel_size, stride, padding, dilation, ceil_mode, algo):
    shape = _pool_sizes(x, kernel_size, stride, padding, dilation, ceil_mode)
    return x.new_empty(shape), x.new_empty(shape, dtype=torch.int64)


def _max_pool2d_backward_impl(grad_y: Tensor, x: Tensor, indices: Tensor,
                              kernel_size: Sequence[int], stride: Sequence[int],
                              padding: Sequence[int], dilation: Sequence[int], ceil_mode: bool,
                              algo: str) -> Tensor:
    return _call(_max_pool2d_backward_with_indices, (grad_y, x, indices), list(kernel_size),
                 list(stride), list(padding), list(dilation), ceil_mode, algo)


def _max_pool2d_backward_with_indices(grad_y, x, indices, kernel_size, stride, padding,
                                      dilation, ceil_mode, algo):
    return fastconv.max_pool2d_backward(grad_y, x, kernel_size, stride, padding, dilation,
                                        ceil_mode, indices=indices, algo=algo)


def _max_pool2d_backward_fake(grad_y, x, indices, kernel_size, stride, padding, dilation,
                              ceil_mode, algo):
    return x.new_empty(x.shape)


def _max_pool_setup(ctx, inputs, output):
    x, *settings = inputs
    ctx.save_for_backward(x, output[1])
    ctx.mark_non_differentiable(output[1])
    ctx.settings = settings


def _max_pool_autograd(backward):
    def differentiate(ctx, grad_y, _grad_indices):
        x, indices = ctx.saved_tensors
        gx = backward(grad_y, x, indices, *ctx.settings) if ctx.needs_input_grad[0] else None
        return (gx,) + (None,) * len(ctx.settings)
    return differentiate


_max_pool2d, _max_pool2d_backward = _differentiable(
    "max_pool2d", _max_pool2d_impl, _max_pool2d_fake, _max_pool2d_backward_impl,
    _max_pool2d_backward_fake, setup=_max_pool_setup, formula=_max_pool_autograd)


def _save_input(ctx, inputs, output):
    x, *settings = inputs
    ctx.save_for_backward(x)
    ctx.settings = settings


def _input_autograd(backward):
    """The formula of an operator (x, *settings) whose input gradient is
    ``backward(grad_y, x, *settings)``."""
    def differentiate(ctx, grad_y):
        (x,) = ctx.saved_tensors
        gx = backward(grad_y, x, *ctx.settings) if ctx.needs_input_grad[0] else None
        return (gx,) + (None,) * len(ctx.settings)
    return differentiate


def _avg_pool2d_impl(x: Tensor, kernel_size: Sequence[int], stride: Sequence[int],
                     padding: Sequence[int], ceil_mode: bool, count_include_pad: bool,
                     divisor_override: Optional[int], algo: str) -> Tensor:
    return _call(fastconv.avg_pool2d, (x,), list(kernel_size), list(stride), list(padding),
                 ceil_mode, count_include_pad, divisor_override, algo=algo)


def _avg_pool2d_fake(x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                     divisor_override, algo):
    return x.new_empty(_pool_sizes(x, kernel_size, stride, padding, (1, 1), ceil_mode))


def _avg_pool2d_backward_impl(grad_y: Tensor, x: Tensor, kernel_size: Sequence[int],
                              stride: Sequence[int], padding: Sequence[int], ceil_mode: bool,
                              count_include_pad: bool, divisor_override: Optional[int],
                              algo: str) -> Tensor:
    return _call(fastconv.avg_pool2d_backward, (grad_y, x), list(kernel_size), list(stride),
                 list(padding), ceil_mode, count_include_pad, divisor_override, algo=algo)


def _like_input(grad_y, x, *settings):
    """The fake of an operator whose result is an input gradient."""
    return x.new_empty(x.shape)


_avg_pool2d, _avg_pool2d_backward = _differentiable(
    "avg_pool2d", _avg_pool2d_impl, _avg_pool2d_fake, _avg_pool2d_backward_impl, _like_input,
    setup=_save_input, formula=_input_autograd)


def _adaptive_avg_pool2d_impl(x: Tensor, output_size: Sequence[int], algo: str) -> Tensor:
    return _call(fastconv.adaptive_avg_pool2d, (x,), list(output_size), algo=algo)


def _adaptive_avg_pool2d_fake(x, output_size, algo):
    return x.new_empty(tuple(x.shape[:-2]) + tuple(output_size))


def _adaptive_avg_pool2d_backward_impl(grad_y: Tensor, x: Tensor, algo: str) -> Tensor:
    return _call(fastconv.adaptive_avg_pool2d_backward, (grad_y, x), algo=algo)


def _adaptive_autograd(backward):
    def differentiate(ctx, grad_y):
        (x,) = ctx.saved_tensors
        (algo,) = ctx.settings[1:]
        gx = backward(grad_y, x, algo) if ctx.needs_input_grad[0] else None
        return gx, None, None
    return differentiate


_adaptive_avg_pool2d, _adaptive_avg_pool2d_backward = _differentiable(
    "adaptive_avg_pool2d", _adaptive_avg_pool2d_impl, _adaptive_avg_pool2d_fake,
    _adaptive_avg_pool2d_backward_impl, _like_input, setup=_save_input,
    formula=_adaptive_autograd)


# --------------------------------------------------------------------------------------------
# Batch normalization
# --------------------------------------------------------------------------------------------
def _batch_norm_impl(x: Tensor, running_mean: Optional[Tensor], running_var: Optional[Tensor],
                     weight: Optional[Tensor], bias: Optional[Tensor], training: bool,
                     momentum: float, eps: float, algo: str) -> tuple[Tensor, Tensor, Tensor]:
    """Functional: returns (y, updated running_mean, updated running_var), the statistics
    empty when not updated; :func:`batch_norm` writes them back. (An operator that mutates its
    inputs cannot have an autograd formula.)"""
    updating = training and running_mean is not None
    mean = running_mean.clone() if updating else running_mean
    var = running_var.clone() if updating else running_var
    y = _call(fastconv.batch_norm, (x, mean, var, weight, bias), training, momentum, eps,
              algo=algo)  # fastconv updates the clones in place
    return (y, mean, var) if updating else (y, x.new_empty(0), x.new_empty(0))


def _batch_norm_fake(x, running_mean, running_var, weight, bias, training, momentum, eps, algo):
    updating = training and running_mean is not None
    stats = running_mean.shape if updating else (0,)
    return x.new_empty(x.shape), x.new_empty(stats), x.new_empty(stats)


def _batch_norm_backward_impl(grad_y: Tensor, x: Tensor, weight: Optional[Tensor],
                              running_mean: Optional[Tensor], running_var: Optional[Tensor],
                              training: bool, eps: float, output_mask: Sequence[bool],
                              algo: str) -> tuple[Tensor, Tensor, Tensor]:
    out = _call(fastconv.batch_norm_backward, (grad_y, x, weight, running_mean, running_var),
                training, eps, output_mask=tuple(output_mask), algo=algo)
    return _or_empty(out, x)


def _batch_norm_backward_fake(grad_y, x, weight, running_mean, running_var, training, eps,
                              output_mask, algo):
    return _fake_gradients(x, (x.shape, (x.shape[1],), (x.shape[1],)), output_mask)


def _batch_norm_setup(ctx, inputs, output):
    x, running_mean, running_var, weight, bias, training, _, eps, algo = inputs
    ctx.mark_non_differentiable(output[1], output[2])
    # evaluation treats the running statistics as constants of the gradient; training
    # recomputes the batch statistics from x
    stats = (None, None) if training else (running_mean, running_var)
    ctx.save_for_backward(x, weight, *stats)
    ctx.has_weight, ctx.has_bias = weight is not None, bias is not None
    ctx.training, ctx.eps, ctx.algo = training, eps, algo


def _batch_norm_autograd(backward):
    def differentiate(ctx, grad_y, _grad_mean, _grad_var):
        x, weight, running_mean, running_var = ctx.saved_tensors
        wanted = ctx.needs_input_grad
        mask = [wanted[0], ctx.has_weight and wanted[3], ctx.has_bias and wanted[4]]
        gx = gw = gb = None
        if any(mask):
            gx, gw, gb = _masked(backward(grad_y, x, weight, running_mean, running_var,
                                          ctx.training, ctx.eps, mask, ctx.algo), mask)
        return gx, None, None, gw, gb, None, None, None, None
    return differentiate


_batch_norm, _batch_norm_backward = _differentiable(
    "batch_norm", _batch_norm_impl, _batch_norm_fake, _batch_norm_backward_impl,
    _batch_norm_backward_fake, setup=_batch_norm_setup, formula=_batch_norm_autograd)


# --------------------------------------------------------------------------------------------
# The eager autograd functions: fastconv's forward op in forward, its backward op in backward,
# each with the caller's own arguments (fastconv validates them), tensors handed over as views.
# Max pooling keeps its indices inside the node, and batch norm updates the running statistics
# in place, as torch does: the registered forms must return both as extra outputs (custom
# operators cannot mutate their inputs and have a formula too), which eagerly cost 10-20 us of
# a forward and backward for autograd to track. Indices that nobody else ever holds need no
# range check in the backward either.
# --------------------------------------------------------------------------------------------
class _Convolution(torch.autograd.Function):
    """``apply(ops, x, weight, bias, settings, algo)``: a convolution, ``ops`` its fastconv
    (forward, backward) pair and ``settings`` the caller's arguments between bias and algo."""

    @staticmethod
    def forward(ctx, ops, x, weight, bias, settings, algo):
        ctx.save_for_backward(x, weight)
        ctx.backward_op, ctx.settings, ctx.algo = ops[1], settings, algo
        return _call(ops[0], (x, weight, bias), *settings, algo=algo)

    @staticmethod
    @_first_order
    def backward(ctx, grad_y):
        x, weight = ctx.saved_tensors
        mask = ctx.needs_input_grad[1:4]  # x, weight, bias (False for a bias of None)
        gradients = _call(ctx.backward_op, (grad_y, x, weight), *ctx.settings,
                          output_mask=mask, algo=ctx.algo)
        return (None, *gradients, None, None)


# Pooling's gradients depend on x's shape, never on its values (max pooling's on the indices
# the forward chose): on the CPU the nodes below keep x's NumPy view (and max pooling its NumPy
# indices) for the backward rather than saving tensors, which would be unpacked and viewed
# again: 4-6 us of a tiny call's forward and backward. An in-place change of x after the
# forward leaves the gradient as it is, so nothing needs to catch one. Under saved-tensor
# hooks (torch.utils.checkpoint, save_on_cpu) they save tensors, so that the hooks decide what
# is kept.
def _keeps_views(x) -> bool:
    """Whether a pooling node of x may keep NumPy views: a CPU tensor, no saved-tensor hooks."""
    return x.is_cpu and _saved_tensor_hooks(False) is None


# the (pack, unpack) hooks in force, or None: 0.1 us (a private name; without it, always save)
_saved_tensor_hooks = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks",
                              lambda ignore_tracing: True)


class _Pooling(torch.autograd.Function):
    """``apply(ops, x, settings, algo)``: average or adaptive average pooling, ``ops`` its
    fastconv (forward, backward) pair, the backward called as ``(grad_y, x, *settings)``."""

    @staticmethod
    def forward(ctx, ops, x, settings, algo):
        ctx.backward_op, ctx.settings, ctx.algo = ops[1], settings, algo
        if _keeps_views(x):
            ctx.x = xa = _numpy(x)
            return _from_numpy(_cpu_run(ops[0], (xa,), *settings, algo=algo))
        ctx.x = None
        ctx.save_for_backward(x)
        return _call(ops[0], (x,), *settings, algo=algo)

    @staticmethod
    @_first_order
    def backward(ctx, grad_y):
        if ctx.x is not None:
            gx = _from_numpy(_cpu_run(ctx.backward_op, (_numpy(grad_y), ctx.x), *ctx.settings,
                                      algo=ctx.algo))
        else:
            (x,) = ctx.saved_tensors
            gx = _call(ctx.backward_op, (grad_y, x), *ctx.settings, algo=ctx.algo)
        return None, gx, None, None


class _MaxPool2d(torch.autograd.Function):
    """``apply(x, settings, algo)``: max pooling without indices for the caller, ``settings``
    (kernel_size, stride, padding, dilation, ceil_mode) as the caller gave them."""

    @staticmethod
    def forward(ctx, x, settings, algo):
        ctx.settings, ctx.algo = settings, algo
        if _keeps_views(x):
            xa = _numpy(x)
            y, indices = _cpu_run(fastconv.max_pool2d, (xa,), *settings, True, algo=algo)
            ctx.arrays = xa, indices
            return _from_numpy(y)
        ctx.arrays = None
        y, indices = _call(fastconv.max_pool2d, (x,), *settings, True, algo=algo)
        ctx.save_for_backward(x, indices)
        return y

    @staticmethod
    @_first_order
    def backward(ctx, grad_y):
        if ctx.arrays is not None:
            gx = _from_numpy(_cpu_run(_max_pool2d_backward_of_own_indices,
                                      (_numpy(grad_y), *ctx.arrays), *ctx.settings, ctx.algo))
        else:
            x, indices = ctx.saved_tensors
            gx = _call(_max_pool2d_backward_of_own_indices, (grad_y, x, indices),
                       *ctx.settings, ctx.algo)
        return gx, None, None


class _BatchNorm(torch.autograd.Function):
    """``apply(x, running_mean, running_var, weight, bias, training, momentum, eps, algo)``,
    the running statistics (which want no gradient) updated in place when training."""

    @staticmethod
    def forward(ctx, x, running_mean, running_var, weight, bias, training, momentum, eps, algo):
        y = _call(fastconv.batch_norm, (x, running_mean, running_var, weight, bias), training,
                  momentum, eps, algo=algo)
        _updated(training, running_mean, running_var)
        # evaluation treats the running statistics as constants of the gradient; training
        # recomputes the batch statistics from x
        stats = (None, None) if training else (running_mean, running_var)
        ctx.save_for_backward(x, weight, *stats)
        ctx.training, ctx.eps, ctx.algo = training, eps, algo
        return y

    @staticmethod
    @_first_order
    def backward(ctx, grad_y):
        x, weight, running_mean, running_var = ctx.saved_tensors
        wanted = ctx.needs_input_grad
        gx, gw, gb = _call(fastconv.batch_norm_backward,
                           (grad_y, x, weight, running_mean, running_var), ctx.training, ctx.eps,
                           output_mask=(wanted[0], wanted[3], wanted[4]), algo=ctx.algo)
        return gx, None, None, gw, gb, None, None, None, None


def _updated(training, running_mean, running_var):
    """Tell autograd that fastconv updated the running statistics in place (through their
    NumPy or CuPy views, which autograd does not see), as torch's own batch norm does: a
    graph that saved them then raises instead of using stale values."""
    if training and running_mean is not None:
        torch.autograd.graph.increment_version((running_mean, running_var))


def _adaptive_backward_as_pooling(grad_y, x, output_size, *, algo):
    """fastconv's backward, which reads the output size from grad_y, as ``_Pooling`` calls it."""
    return fastconv.adaptive_avg_pool2d_backward(grad_y, x, algo=algo)


_convolution, _pooling = _apply(_Convolution), _apply(_Pooling)
_max_pool, _batch_norm_function = _apply(_MaxPool2d), _apply(_BatchNorm)
_CONV2D = (fastconv.conv2d, fastconv.conv2d_backward)
_CONV1D = (fastconv.conv1d, fastconv.conv1d_backward)
_CONV_TRANSPOSE2D = (fastconv.conv_transpose2d, fastconv.conv_transpose2d_backward)
_AVG_POOL2D = (fastconv.avg_pool2d, fastconv.avg_pool2d_backward)
_ADAPTIVE_AVG_POOL2D = (fastconv.adaptive_avg_pool2d, _adaptive_backward_as_pooling)


# --------------------------------------------------------------------------------------------
# The functional interface, as torch.nn.functional
# --------------------------------------------------------------------------------------------
def _ints(value, n):
    """An int or a sequence as a list of n ints (a wrong length, or a bool, is left for
    fastconv to name)."""
    if isinstance(value, numbers.Integral):
        return [value] * n
    return list(value)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           algo="auto"):
    """As ``torch.nn.functional.conv2d``, computed by fastconv (``algo`` as fastconv.conv2d)."""
    return _convolve(_CONV2D, _conv2d, 2, input, weight, bias, stride, padding, dilation,
                     groups, algo)


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           algo="auto"):
    """As ``torch.nn.functional.conv1d``, computed by fastconv."""
    return _convolve(_CONV1D, _conv1d, 1, input, weight, bias, stride, padding, dilation,
                     groups, algo)


def _convolve(ops, registered, rank, input, weight, bias, stride, padding, dilation, groups,
              algo):
    """conv2d or conv1d (``ops`` the fastconv pair, ``registered`` the operator, ``rank`` the
    spatial rank) by whichever way the call takes."""
    settings = (stride, padding, dilation, groups)
    arrays = _views(input, weight, bias)
    if arrays is not None:
        return _cpu_tensors(ops[0](*arrays, *settings, algo=algo))
    way = _way(input, weight, bias)
    if way is DIRECT:
        return _call(ops[0], (input, weight, bias), *settings, algo=algo)
    if way is EAGER:
        return _convolution(ops, input, weight, bias, settings, algo)
    rule, pads = ((padding, [0] * rank) if isinstance(padding, str)
                  else ("", _ints(padding, rank)))
    return registered(input, weight, bias, _ints(stride, rank), pads, rule,
                      _ints(dilation, rank), groups, algo)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, *, algo="auto"):
    """As ``torch.nn.functional.conv_transpose2d``, computed by fastconv."""
    settings = (stride, padding, output_padding, groups, dilation)
    arrays = _views(input, weight, bias)
    if arrays is not None:
        return _cpu_tensors(fastconv.conv_transpose2d(*arrays, *settings, algo=algo))
    way = _way(input, weight, bias)
    if way is DIRECT:
        return _call(fastconv.conv_transpose2d, (input, weight, bias), *settings, algo=algo)
    if way is EAGER:
        return _convolution(_CONV_TRANSPOSE2D, input, weight, bias, settings, algo)
    return _conv_transpose2d(input, weight, bias, _ints(stride, 2), _ints(padding, 2),
                             _ints(output_padding, 2), groups, _ints(dilation, 2), algo)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False, *, algo="auto"):
    """As ``torch.nn.functional.max_pool2d``, computed by fastconv."""
    x = _view(input)
    if x is not None:
        return _cpu_tensors(fastconv.max_pool2d(x, kernel_size, stride, padding, dilation,
                                                ceil_mode, return_indices, algo=algo))
    settings = (kernel_size, stride, padding, dilation, ceil_mode)
    way = _way(input)
    if way is DIRECT:
        return _call(fastconv.max_pool2d, (input,), *settings, return_indices, algo=algo)
    if way is EAGER and not return_indices:
        return _max_pool(input, settings, algo)
    kernel = _ints(kernel_size, 2)
    strides = kernel if stride is None or stride == [] else _ints(stride, 2)
    y, indices = _max_pool2d(input, kernel, strides, _ints(padding, 2), _ints(dilation, 2),
                             ceil_mode, algo)
    return (y, indices) if return_indices else y


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None, *, algo="auto"):
    """As ``torch.nn.functional.avg_pool2d``, computed by fastconv."""
    x = _view(input)
    if x is not None:
        return _from_numpy(fastconv.avg_pool2d(x, kernel_size, stride, padding, ceil_mode,
                                               count_include_pad, divisor_override, algo=algo))
    settings = (kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
    way = _way(input)
    if way is DIRECT:
        return _call(fastconv.avg_pool2d, (input,), *settings, algo=algo)
    if way is EAGER:
        return _pooling(_AVG_POOL2D, input, settings, algo)
    kernel = _ints(kernel_size, 2)
    strides = kernel if stride is None or stride == [] else _ints(stride, 2)
    return _avg_pool2d(input, kernel, strides, _ints(padding, 2), ceil_mode, count_include_pad,
                       divisor_override, algo)


def adaptive_avg_pool2d(input, output_size, *, algo="auto"):
    """As ``torch.nn.functional.adaptive_avg_pool2d`` (None in output_size keeps that input
    size), computed by fastconv."""
    x = _view(input)
    if x is not None:
        return _from_numpy(fastconv.adaptive_avg_pool2d(x, output_size, algo=algo))
    way = _way(input)
    if way is DIRECT:
        return _call(fastconv.adaptive_avg_pool2d, (input,), output_size, algo=algo)
    if way is EAGER:
        return _pooling(_ADAPTIVE_AVG_POOL2D, input, (output_size,), algo)
    sizes = _ints(output_size, 2)
    sizes = [n if s is None else s for s, n in zip(sizes, input.shape[-2:])]
    return _adaptive_avg_pool2d(input, sizes, algo)


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5, *, algo="auto"):
    """As ``torch.nn.functional.batch_norm`` (running statistics updated in place when
    training), computed by fastconv."""
    tensors = (input, running_mean, running_var, weight, bias)
    arrays = _views(*tensors)
    if arrays is not None:  # fastconv updates the running statistics in place, as torch does
        y = _from_numpy(fastconv.batch_norm(*arrays, training, momentum, eps, algo=algo))
        if training:
            _updated(training, running_mean, running_var)
        return y
    way = _way(*tensors)
    if way is DIRECT:
        y = _call(fastconv.batch_norm, tensors, training, momentum, eps, algo=algo)
        _updated(training, running_mean, running_var)
        return y
    if way is EAGER and not any(t is not None and t.requires_grad
                                for t in (running_mean, running_var)):
        return _batch_norm_function(*tensors, training, momentum, eps, algo)
    y, mean, var = _batch_norm(input, running_mean, running_var, weight, bias, training,
                               momentum, eps, algo)
    if training and running_mean is not None:
        with torch.no_grad():
            running_mean.copy_(mean)
            running_var.copy_(var)
    return y

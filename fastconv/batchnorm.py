"""Batch normalization: batch_norm and batch_norm_backward, for inputs of rank 2 to 5 (any
rank >= 2: statistics over every axis but 1). Everything about them that is not a kernel lives
here: the parameter object, the builders that validate the arguments into it, the public ops,
and the cost model.

Cost model: the operations of a fused one-pass implementation per element: forward training 5
(sum, sum of squares, ``y = a*x + c``), evaluation 2; backward training 7 (two sums and
``gx = a*gy + b*x + c``), evaluation 4 (sums for the weight and bias gradients and
``gx = a*gy``); per-channel work is ignored. ``min_bytes`` is the traffic of an ideal kernel
that reads each input and writes each output exactly once.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from math import prod

from . import _calls, _validate, dispatch, registry
from ._calls import preparer, shape_of
from ._validate import (ALL_OUTPUTS, check_grad, check_writeable, dims, flag, gradient_mask,
                        real)

__all__ = ["batch_norm", "batch_norm_backward", "BatchNormParams"]


# --------------------------------------------------------------------------------------------
# The parameter object
# --------------------------------------------------------------------------------------------
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

    @cached_property
    def count(self) -> int:
        """Number of values per channel that the batch statistics average over."""
        return prod(self.x_shape) // self.x_shape[1]

    @cached_property
    def planes(self) -> tuple[int, int, int]:
        """``x_shape`` as the kernels take it, (N, C, L): L the product of the other sizes
        (made once per object: a reshape to it costs half of working it out each call)."""
        return (*self.x_shape[:2], prod(self.x_shape[2:]))


    def output_shapes(self, op: str) -> tuple:
        """Shapes of the arrays ``op`` returns (None: not computed)."""
        if not op.endswith("_backward"):
            return (self.x_shape,)
        return tuple(s if want else None for s, want in
                     zip((self.x_shape, (self.channels,), (self.channels,)), self.output_mask))

    def output_bytes(self, op: str, itemsize: int) -> int:
        """Bytes of the arrays ``op`` returns."""
        return itemsize * sum(prod(s) for s in self.output_shapes(op) if s is not None)

    def own_bytes(self, op: str, itemsize: int) -> int:
        """Memory the public op allocates itself, besides the kernels' workspace: none."""
        return 0

    def sizes(self) -> tuple[int, ...]:
        return (prod(self.x_shape),)

    def flops(self, op: str) -> int:
        per_element = {(False, True): 5, (False, False): 2, (True, True): 7, (True, False): 4}
        return per_element[(op.endswith("_backward"), self.training)] * prod(self.x_shape)

    def min_bytes(self, op: str, itemsize: int) -> int:
        x, c = prod(self.x_shape), self.channels
        if not op.endswith("_backward"):
            vectors = 2 * self.has_running * (1 + self.training) + self.has_weight + self.has_bias
            return itemsize * (2 * x + vectors * c)
        want_x, want_w, want_b = self.output_mask
        vectors = self.has_weight + 2 * (self.has_running and not self.training) + want_w + want_b
        return itemsize * ((2 + want_x) * x + vectors * c)


# --------------------------------------------------------------------------------------------
# Builders: each public op's signature with its arrays replaced by shapes
# --------------------------------------------------------------------------------------------
def _batch_norm(op, x_shape, running_mean_shape, running_var_shape, weight_shape, bias_shape,
                training, eps, **extra):
    x_shape = dims(op, "x", x_shape, range(2, 33), "at least 2-D (N, C, ...)")
    c = x_shape[1]
    if c < 1:
        raise ValueError(f"{op}: x must have at least one channel (axis 1), got shape {x_shape}")
    for name, shape in (("running_mean", running_mean_shape), ("running_var", running_var_shape),
                        ("weight", weight_shape), ("bias", bias_shape)):
        if shape is not None and dims(op, name, shape, (1,), f"1-D of length {c}") != (c,):
            raise ValueError(f"{op}: {name} must have shape ({c},) (one value per channel of "
                             f"x), got {tuple(shape)}")
    if (running_mean_shape is None) != (running_var_shape is None):
        raise ValueError(f"{op}: running_mean and running_var must both be given or both be None")
    training = flag(op, "training", training)
    has_running = running_mean_shape is not None
    if not training and not has_running:
        raise ValueError(f"{op}: running_mean and running_var are required when training=False "
                         f"(evaluation normalises with the running statistics)")
    p = BatchNormParams(x_shape=x_shape, training=training, eps=real(op, "eps", eps, minimum=0),
                        has_weight=weight_shape is not None, has_bias=bias_shape is not None,
                        has_running=has_running, **extra)
    if training and p.eps == 0:
        raise ValueError(f"{op}: eps must be positive when training=True (the batch variance "
                         f"may be 0), got {eps!r}")
    if training and p.count == 1:
        raise ValueError(f"{op}: expected more than 1 value per channel when training, got x "
                         f"of shape {x_shape}")
    return p


def batch_norm_params(x_shape, running_mean_shape=None, running_var_shape=None,
                      weight_shape=None, bias_shape=None, training=False, momentum=0.1,
                      eps=1e-5):
    op = "batch_norm"
    return _batch_norm(op, x_shape, running_mean_shape, running_var_shape, weight_shape,
                       bias_shape, training, eps, momentum=real(op, "momentum", momentum))


def batch_norm_backward_params(grad_y_shape, x_shape, weight_shape=None,
                               running_mean_shape=None, running_var_shape=None, training=True,
                               eps=1e-5, output_mask=ALL_OUTPUTS):
    op = "batch_norm_backward"
    p = _batch_norm(op, x_shape, running_mean_shape, running_var_shape, weight_shape, None,
                    training, eps, momentum=0.0,
                    output_mask=gradient_mask(op, output_mask))
    check_grad(op, grad_y_shape, p.x_shape)
    return p


registry.add_op("batch_norm", "batch_norm",
                ("x", "running_mean", "running_var", "weight", "bias"), batch_norm_params)
registry.add_op("batch_norm_backward", "batch_norm",
                ("grad_y", "x", "weight", "running_mean", "running_var"),
                batch_norm_backward_params)


# --------------------------------------------------------------------------------------------
# The public ops. Each hands its arrays to fastconv._calls.run with the function that makes
# the plan of such a call (validation, dispatch and the memory check, once per signature).
# --------------------------------------------------------------------------------------------
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
    return _calls.run("batch_norm", _forward_plan, (x, running_mean, running_var, weight, bias),
                      training, momentum, eps, algo)


def _forward_plan(x, running_mean, running_var, weight, bias, training, momentum, eps, algo):
    op = "batch_norm"
    backend = _validate.check_arrays(op, dict(running_mean=running_mean, running_var=running_var,
                                    weight=weight, bias=bias), x=x)
    p = batch_norm_params(x.shape, shape_of(running_mean), shape_of(running_var),
                          shape_of(weight), shape_of(bias), training, momentum, eps)
    updating = p.training and p.has_running
    if updating:
        check_writeable(op, running_mean=running_mean, running_var=running_var)
    algorithm = dispatch.kernels_for(op, backend, algo, p, (x, weight, bias))
    kernels = algorithm.kernels
    prep_x, prep_w, prep_b = (preparer(backend, a) for a in (x, weight, bias))
    if updating:
        def plan(x, running_mean, running_var, weight, bias):
            # writeable when the plan was made; an array's flag can change since
            check_writeable(op, running_mean=running_mean, running_var=running_var)
            # the running statistics are passed as they are: they are updated in place
            return kernels.forward(prep_x(x), running_mean, running_var, prep_w(weight),
                                   prep_b(bias), p)
    else:  # evaluation (or training without them): read, never written, inputs like any other
        prep_mean, prep_var = preparer(backend, running_mean), preparer(backend, running_var)

        def plan(x, running_mean, running_var, weight, bias):
            return kernels.forward(prep_x(x), prep_mean(running_mean), prep_var(running_var),
                                   prep_w(weight), prep_b(bias), p)
    return dispatch.finish(plan, algorithm, op, p, x.dtype.itemsize)


def batch_norm_backward(grad_y, x, weight=None, running_mean=None, running_var=None,
                        training=True, eps=1e-5, *, output_mask=ALL_OUTPUTS, algo="auto"):
    """Gradients of ``batch_norm``: ``(grad_x, grad_weight, grad_bias)``.

    ``training=True`` is the full gradient through the batch mean and variance (recomputed from
    x); ``training=False`` treats the running statistics as constants. A missing weight counts
    as ones; grad_weight and grad_bias are computed whether or not the forward had them.
    ``output_mask`` selects which gradients to compute; the others come back as None.
    """
    return _calls.run("batch_norm_backward", _backward_plan,
                      (grad_y, x, weight, running_mean, running_var), training, eps,
                      output_mask, algo)


def _backward_plan(grad_y, x, weight, running_mean, running_var, training, eps, mask, algo):
    op = "batch_norm_backward"
    backend = _validate.check_arrays(op, dict(weight=weight, running_mean=running_mean,
                                    running_var=running_var), grad_y=grad_y, x=x)
    p = batch_norm_backward_params(grad_y.shape, x.shape, shape_of(weight),
                                   shape_of(running_mean), shape_of(running_var), training, eps,
                                   mask)
    algorithm = dispatch.kernels_for(op, backend, algo, p, (grad_y, x, weight))
    kernels = algorithm.kernels
    prep_gy, prep_x, prep_w, prep_mean, prep_var = (
        preparer(backend, a) for a in (grad_y, x, weight, running_mean, running_var))

    def plan(grad_y, x, weight, running_mean, running_var):
        return kernels.backward(prep_gy(grad_y), prep_x(x), prep_w(weight),
                                prep_mean(running_mean), prep_var(running_var), p)
    return dispatch.finish(plan, algorithm, op, p, x.dtype.itemsize)

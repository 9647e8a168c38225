"""Parameter grids and hypothesis strategies: the cases every algorithm is compared on.

A :class:`Case` is one forward call (op, shapes of its arrays, keyword arguments). Tests draw
arrays for it with :func:`forward_args` and derive the matching backward call with
:func:`backward_args`, so one grid exercises the forward op and all of its gradients.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import product

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv


@dataclass(frozen=True)
class Case:
    op: str
    shapes: tuple
    kwargs: dict = field(default_factory=dict)

    def __str__(self):
        shapes = ",".join("-" if s is None else "x".join(map(str, s)) for s in self.shapes)
        args = ",".join(f"{k}={v}" for k, v in self.kwargs.items())
        return f"{shapes}|{args}".replace(" ", "")


def forward_args(case, rng):
    """float64 arrays for the case's forward call (variances positive)."""
    args = [None if s is None else rng.standard_normal(s) for s in case.shapes]
    if case.op == "batch_norm" and args[2] is not None:
        args[2] = np.abs(args[2]) + 0.5
    return args


def output_shape(case):
    return fastconv.explain(case.op, *case.shapes, **case.kwargs)["output_shapes"][0]


def backward_args(case, args, rng):
    """``(args, kwargs)`` of the backward op at the forward call ``case`` with arrays ``args``,
    with a random output gradient."""
    gy = rng.standard_normal(output_shape(case))
    kw = dict(case.kwargs)
    if case.op in ("conv2d", "conv1d", "conv_transpose2d"):
        return (gy, args[0], args[1]), kw
    if case.op == "batch_norm":
        x, rm, rv, w, _ = args
        return (gy, x, w, rm, rv), dict(training=kw.get("training", False),
                                        eps=kw.get("eps", 1e-5))
    kw.pop("return_indices", None)
    kw.pop("output_size", None)
    return (gy, args[0]), kw


# --------------------------------------------------------------------------------------------
# Product grids
# --------------------------------------------------------------------------------------------
KERNELS = ((1, 1), (3, 3), (5, 5), (7, 7), (2, 3))


def _span(k, d):
    return d * (k - 1) + 1


def conv2d_grid():
    """stride 1-3 x padding 0-2/same/valid x dilation 1-3 x groups 1/2/C x kernels 1, 3, 5, 7
    and non-square 2x3 x batch 1/3, on non-square inputs. Channels C=4, O=8 (depthwise with a
    channel multiplier of 2)."""
    for stride, padding, dilation, groups, kernel, n in product(
            (1, 2, 3), (0, 1, 2, "same", "valid"), (1, 2, 3), (1, 2, 4), KERNELS, (1, 3)):
        if padding == "same" and stride != 1:
            continue
        h, w = _span(kernel[0], dilation) + 3, _span(kernel[1], dilation) + 5
        yield Case("conv2d", ((n, 4, h, w), (8, 4 // groups) + kernel, (8,)),
                   dict(stride=stride, padding=padding, dilation=dilation, groups=groups))


def conv1d_grid():
    for stride, padding, dilation, groups, k, n in product(
            (1, 2, 3), (0, 1, 2, "same", "valid"), (1, 2, 3), (1, 2, 4), (1, 3, 5, 7, 2), (1, 3)):
        if padding == "same" and stride != 1:
            continue
        yield Case("conv1d", ((n, 4, _span(k, dilation) + 4), (8, 4 // groups, k), (8,)),
                   dict(stride=stride, padding=padding, dilation=dilation, groups=groups))


def conv_transpose2d_grid():
    """stride 1-3 x padding 0-2 x output_padding 0-2 (where < max(stride, dilation)) x
    dilation 1-3 x groups 1/2/C x kernels 1, 3, 5 and 2x3 x batch 1/3. C_in=4, C_out=6 or 8."""
    for stride, padding, out_pad, dilation, groups, kernel, n in product(
            (1, 2, 3), (0, 1, 2), (0, 1, 2), (1, 2, 3), (1, 2, 4), ((1, 1), (3, 3), (5, 5), (2, 3)),
            (1, 3)):
        if out_pad >= max(stride, dilation):
            continue
        if min((i - 1) * stride - 2 * padding + dilation * (k - 1) + out_pad + 1
               for i, k in zip((4, 5), kernel)) < 1:
            continue  # padding crops the whole output: an error case, tested elsewhere
        c_out_per_group = 2 if groups == 4 else 3
        yield Case("conv_transpose2d", ((n, 4, 4, 5), (4, c_out_per_group) + kernel,
                                        (c_out_per_group * groups,)),
                   dict(stride=stride, padding=padding, output_padding=out_pad, groups=groups,
                        dilation=dilation))


POOL_KERNELS = (1, 2, 3, (2, 3))


def max_pool2d_grid():
    """kernel 1/2/3/2x3 x stride default/1/2/3 x padding 0/1 (<= k // 2) x dilation 1/2 x
    ceil_mode, with indices, on a non-square input."""
    for kernel, stride, padding, dilation, ceil in product(
            POOL_KERNELS, (None, 1, 2, 3), (0, 1), (1, 2), (False, True)):
        if any(padding > k // 2 for k in np.broadcast_to(kernel, 2)):
            continue
        yield Case("max_pool2d", ((2, 3, 9, 11),),
                   dict(kernel_size=kernel, stride=stride, padding=padding, dilation=dilation,
                        ceil_mode=ceil, return_indices=True))


def avg_pool2d_grid():
    """kernel x stride x padding x ceil_mode x count_include_pad x divisor_override."""
    for kernel, stride, padding, ceil, include, divisor in product(
            POOL_KERNELS, (None, 1, 2, 3), (0, 1), (False, True), (True, False), (None, 3, -2)):
        if any(padding > k // 2 for k in np.broadcast_to(kernel, 2)):
            continue
        yield Case("avg_pool2d", ((2, 3, 9, 11),),
                   dict(kernel_size=kernel, stride=stride, padding=padding, ceil_mode=ceil,
                        count_include_pad=include, divisor_override=divisor))


def adaptive_avg_pool2d_grid():
    """Output sizes smaller than, equal to and larger than the input, in either dimension;
    (1, 1) is global average pooling; None keeps an input dimension."""
    sizes = ((5, 7), (8, 8), (1, 3), (9, 4), (16, 16), (7, 1))
    outs = (1, (1, 1), 2, 3, 4, (3, 4), (5, None), (None, 3), (7, 9), (2, 5), (6, 6), (16, 1))
    for (n, c), size, out in product(((2, 3), (1, 1), (3, 2)), sizes, outs):
        yield Case("adaptive_avg_pool2d", ((n, c) + size,), dict(output_size=out))


def batch_norm_grid():
    """Rank 2-5 x training/eval x affine (none, weight, bias, both) x running stats x momentum
    x eps."""
    shapes = ((6, 3), (4, 3, 5), (2, 3, 4, 5), (2, 3, 2, 3, 2))
    for shape, training, (has_w, has_b), running, momentum, eps in product(
            shapes, (True, False), product((False, True), repeat=2), (True, False), (0.1, 0.7),
            (1e-5, 0.3)):
        if not training and not running:
            continue
        c = (shape[1],)
        yield Case("batch_norm", (shape, c if running else None, c if running else None,
                                  c if has_w else None, c if has_b else None),
                   dict(training=training, momentum=momentum, eps=eps))


# --------------------------------------------------------------------------------------------
# Hypothesis strategies: any valid call, drawn
# --------------------------------------------------------------------------------------------
def _pair(draw, elements):
    return draw(st.one_of(elements, st.tuples(elements, elements)))


@st.composite
def conv2d_cases(draw):
    groups = draw(st.sampled_from((1, 2, 3)))
    c = groups * draw(st.integers(1, 3))
    o = groups * draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = draw(st.one_of(st.sampled_from(("valid", "same")), st.integers(0, 3),
                             st.tuples(st.integers(0, 3), st.integers(0, 3))))
    if padding == "same":
        stride = 1
    pads = (0, 0) if isinstance(padding, str) else np.broadcast_to(padding, 2)
    size = [draw(st.integers(max(1, _span(k, d) - 2 * p), _span(k, d) + 6))
            for k, d, p in zip(kernel, dilation, pads)]
    n = draw(st.integers(1, 3))
    bias = draw(st.booleans())
    return Case("conv2d", ((n, c, *size), (o, c // groups) + kernel, (o,) if bias else None),
                dict(stride=stride, padding=padding, dilation=dilation, groups=groups))


@st.composite
def conv_transpose2d_cases(draw):
    groups = draw(st.sampled_from((1, 2, 3)))
    c_in = groups * draw(st.integers(1, 3))
    c_out_g = draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    out_pad = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
    size = (draw(st.integers(1, 6)), draw(st.integers(1, 6)))
    # padding may eat at most what the full output has beyond one element
    full = [(i - 1) * s + d * (k - 1) + op + 1
            for i, s, d, k, op in zip(size, stride, dilation, kernel, out_pad)]
    padding = tuple(draw(st.integers(0, (f - 1) // 2)) for f in full)
    n = draw(st.integers(1, 3))
    bias = draw(st.booleans())
    return Case("conv_transpose2d", ((n, c_in, *size), (c_in, c_out_g) + kernel,
                                     (c_out_g * groups,) if bias else None),
                dict(stride=stride, padding=padding, output_padding=out_pad, groups=groups,
                     dilation=dilation))


@st.composite
def max_pool2d_cases(draw):
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    # an input of at least the dilation: smaller ones can leave a window all padding (an error)
    size = [draw(st.integers(max(d, _span(k, d) - 2 * p), _span(k, d) + 8))
            for k, d, p in zip(kernel, dilation, padding)]
    return Case("max_pool2d", ((draw(st.integers(1, 2)), draw(st.integers(1, 3)), *size),),
                dict(kernel_size=kernel, stride=stride, padding=padding, dilation=dilation,
                     ceil_mode=draw(st.booleans()), return_indices=True))


@st.composite
def avg_pool2d_cases(draw):
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    size = [draw(st.integers(max(1, k - 2 * p), k + 8)) for k, p in zip(kernel, padding)]
    divisor = draw(st.one_of(st.none(), st.integers(1, 9)))
    return Case("avg_pool2d", ((draw(st.integers(1, 2)), draw(st.integers(1, 3)), *size),),
                dict(kernel_size=kernel, stride=stride, padding=padding,
                     ceil_mode=draw(st.booleans()), count_include_pad=draw(st.booleans()),
                     divisor_override=divisor))


@st.composite
def conv1d_cases(draw):
    groups = draw(st.sampled_from((1, 2, 3)))
    c, o = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    k, d, s = draw(st.integers(1, 6)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    padding = draw(st.one_of(st.sampled_from(("valid", "same")), st.integers(0, 3)))
    if padding == "same":
        s = 1
    p = 0 if isinstance(padding, str) else padding
    length = draw(st.integers(max(1, _span(k, d) - 2 * p), _span(k, d) + 8))
    bias = draw(st.booleans())
    return Case("conv1d", ((draw(st.integers(1, 3)), c, length), (o, c // groups, k),
                           (o,) if bias else None),
                dict(stride=s, padding=padding, dilation=d, groups=groups))


@st.composite
def adaptive_avg_pool2d_cases(draw):
    size = (draw(st.integers(1, 12)), draw(st.integers(1, 12)))
    out = draw(st.one_of(st.integers(1, 14),
                         st.tuples(st.one_of(st.none(), st.integers(1, 14)),
                                   st.one_of(st.none(), st.integers(1, 14)))))
    return Case("adaptive_avg_pool2d", ((draw(st.integers(1, 2)), draw(st.integers(1, 3)), *size),),
                dict(output_size=out))


@st.composite
def batch_norm_cases(draw):
    c = draw(st.integers(1, 4))
    rest = tuple(draw(st.lists(st.integers(1, 5), min_size=0, max_size=3)))
    n = draw(st.integers(1, 4))
    if n * int(np.prod(rest)) < 2:
        n = 2  # training needs more than one value per channel
    shape = (n, c) + rest
    training = draw(st.booleans())
    running = (not training) or draw(st.booleans())
    vec = (c,)
    return Case("batch_norm", (shape, vec if running else None, vec if running else None,
                               vec if draw(st.booleans()) else None,
                               vec if draw(st.booleans()) else None),
                dict(training=training, momentum=draw(st.floats(0, 1)),
                     eps=draw(st.sampled_from((1e-5, 1e-3, 0.5)))))


# --------------------------------------------------------------------------------------------
# Everything above, gathered
# --------------------------------------------------------------------------------------------
GRIDS = {
    "conv2d": conv2d_grid,
    "conv1d": conv1d_grid,
    "conv_transpose2d": conv_transpose2d_grid,
    "max_pool2d": max_pool2d_grid,
    "avg_pool2d": avg_pool2d_grid,
    "adaptive_avg_pool2d": adaptive_avg_pool2d_grid,
    "batch_norm": batch_norm_grid,
}
CASES = [case for grid in GRIDS.values() for case in grid()]
DRAWN = [conv2d_cases, conv1d_cases, conv_transpose2d_cases, max_pool2d_cases,
         avg_pool2d_cases, adaptive_avg_pool2d_cases, batch_norm_cases]


def run_drawn(strategy, max_examples, check):
    """``check(case, rng)`` on ``max_examples`` cases drawn from ``strategy``."""
    @settings(max_examples=max_examples)
    @given(strategy())
    def drawn(case):
        check(case, np.random.default_rng(0))

    drawn()


def check_algorithms(case, rng, backend="cpu"):
    """Each algorithm of ``backend`` (the reference aside) that serves the case, forward and
    backward, both dtypes, against one reference run per (direction, dtype)."""
    from fastconv.testing import assert_matches, fastconv_runner, oracle_outputs, reference_op

    args = forward_args(case, rng)
    bargs, bkwargs = backward_args(case, args, rng)
    checked = 0
    for op, a, kw in ((case.op, args, case.kwargs), (case.op + "_backward", bargs, bkwargs)):
        shapes = [None if x is None else x.shape for x in a]
        info = fastconv.explain(op, *shapes, backend=backend, **kw)
        algos = [name for name in info["candidates"] if name != "reference"]
        for dtype in (np.float32, np.float64):
            expected = oracle_outputs(op, a, kw, reference_op, dtype)
            for algo in algos:
                assert_matches(op, a, kw, fastconv_runner(algo, backend), reference_op, dtype,
                               expected=expected)
                checked += 1
    assert checked > 0

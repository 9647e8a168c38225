"""NaN and Inf in the input behave as in PyTorch: they spread only to the outputs (and
gradients) whose windows touch them, a NaN in a max-pool window wins, and nothing else changes.

Every CPU algorithm is compared with the reference, and the reference with PyTorch where it is
installed; ``fastconv.testing.error`` requires NaN in exactly the same places and Inf equal.
In the grid cases only x holds the non-finite values (gradients and weights stay finite): the
kernels' zero padding and thrown-away grid columns must never turn into 0 * Inf. The weight
cases put them in w, against PyTorch: a forward's padding zeros meet the weights (0 * Inf =
NaN, as in PyTorch), while a tap/pixel pair of backward-data through which no output reads
forms no product at all.
"""
import numpy as np
import pytest

import fastconv
from fastconv.testing import assert_matches, fastconv_runner, reference_op

import grids

OPS = ("conv2d", "conv1d", "conv_transpose2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d",
       "batch_norm")
# every seventh case of the large convolution grids, all of the pooling and batch-norm ones
CASES = [c for op in OPS for i, c in enumerate(x for x in grids.CASES if x.op == op)
         if op not in ("conv2d", "conv1d", "conv_transpose2d") or i % 7 == 0]


def with_nonfinite(x, rng):
    """A copy of x with one NaN, one +Inf and one -Inf at random places."""
    x = x.copy()
    flat = x.reshape(-1)
    spots = rng.choice(flat.size, size=min(3, flat.size), replace=False)
    flat[spots] = (np.nan, np.inf, -np.inf)[:len(spots)]
    return x


def directions(case, rng):
    """(op, args, kwargs) of the forward call and of its backward call, x non-finite in both."""
    args = grids.forward_args(case, rng)
    args[0] = with_nonfinite(args[0], rng)
    bargs, bkwargs = grids.backward_args(case, args, rng)
    return [(case.op, args, case.kwargs), (case.op + "_backward", bargs, bkwargs)]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.op}[{c}]")
def test_every_algorithm_spreads_nonfinite_values_like_the_reference(case, rng):
    for op, args, kwargs in directions(case, rng):
        shapes = [None if a is None else a.shape for a in args]
        algos = [a for a in fastconv.explain(op, *shapes, **kwargs)["candidates"]
                 if a != "reference"]
        for algo in algos:
            assert_matches(op, args, kwargs, fastconv_runner(algo), reference_op, np.float32)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.op}[{c}]")
def test_the_reference_spreads_nonfinite_values_like_torch(case, rng):
    pytest.importorskip("torch")
    from fastconv.testing import torch_op

    for op, args, kwargs in directions(case, rng):
        assert_matches(op, args, kwargs, reference_op, torch_op, np.float64)


def test_nan_stays_local():
    """One NaN in a 3x3 convolution's input spoils exactly the 3x3 outputs around it, and in
    a max pool exactly the windows holding it."""
    x = np.ones((1, 1, 9, 9), np.float32)
    x[0, 0, 4, 4] = np.nan
    y = fastconv.conv2d(x, np.ones((1, 1, 3, 3), np.float32), padding=1)
    expected = np.zeros((9, 9), bool)
    expected[3:6, 3:6] = True
    assert np.array_equal(np.isnan(y[0, 0]), expected)
    y = fastconv.max_pool2d(x, 3, stride=3)
    assert np.array_equal(np.isnan(y[0, 0]), np.eye(3, dtype=bool) & (np.arange(3) == 1))


WEIGHT_CASES = [
    ("conv2d", (2, 4, 6, 6), (6, 4, 3, 3), dict(padding=1)),
    ("conv2d", (2, 4, 6, 6), (8, 2, 3, 3), dict(padding=(2, 1), stride=2, dilation=2, groups=2)),
    ("conv2d", (2, 4, 7, 7), (4, 1, 3, 3), dict(padding=1, groups=4)),
    ("conv2d", (2, 4, 6, 6), (6, 4, 1, 1), {}),
    ("conv1d", (2, 4, 9), (6, 4, 3), dict(padding="same")),
    ("conv_transpose2d", (2, 4, 5, 5), (4, 3, 3, 3), dict(stride=2, padding=1)),
    # stride 1, no padding: the border pixels of the output have taps that no input reads
    # through, which must add no term (0 * Inf would be NaN where PyTorch has none)
    ("conv_transpose2d", (2, 4, 5, 5), (4, 3, 3, 3), {}),
    ("conv_transpose2d", (2, 4, 5, 5), (4, 2, 3, 3), dict(groups=4, padding=1)),
    ("conv_transpose2d", (2, 4, 5, 6), (4, 2, 3, 2), dict(stride=(2, 3), dilation=(2, 1),
                                                          output_padding=(1, 2), groups=2)),
]


@pytest.mark.parametrize("op, x_shape, w_shape, kwargs", WEIGHT_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(WEIGHT_CASES)])
def test_nonfinite_weights_give_torchs_forward(op, x_shape, w_shape, kwargs, rng):
    """A NaN or Inf in the weights: PyTorch's forward treats the padding as zeros that meet the
    weight (0 * Inf is NaN there), and so does every algorithm; a transposed convolution (a
    backward-data) adds no term for a tap that reads no input (direct's stride-1 adjoint, a
    forward over zero-padded gy, gave NaN there)."""
    check_nonfinite_weights(op, x_shape, w_shape, kwargs, rng, "cpu")


def check_nonfinite_weights(op, x_shape, w_shape, kwargs, rng, backend):
    """The weight case on every algorithm of ``backend`` against PyTorch (tests/cuda runs it
    on the CUDA kernels)."""
    pytest.importorskip("torch")
    from fastconv.testing import torch_op

    x = rng.standard_normal(x_shape)
    w = with_nonfinite(rng.standard_normal(w_shape), rng)
    shapes = (x_shape, w_shape)
    failing = []
    for algo in fastconv.explain(op, *shapes, backend=backend, **kwargs)["candidates"]:
        try:
            assert_matches(op, [x, w], kwargs, fastconv_runner(algo, backend), torch_op,
                           np.float64)
        except AssertionError as e:
            failing.append(f"{algo}: {e}")
    assert not failing, "; ".join(failing)

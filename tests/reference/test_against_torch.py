"""The reference against PyTorch: every op, forward and all gradients, over product grids and
hypothesis-drawn cases, to 1e-10 relative in float64."""
import numpy as np
import pytest
from hypothesis import settings

from fastconv.testing import assert_matches, reference_op, torch_op

import grids
from grids import CASES, DRAWN

pytest.importorskip("torch")


def check_forward_and_backward(case, rng, dtype=np.float64):
    args = grids.forward_args(case, rng)
    assert_matches(case.op, args, case.kwargs, reference_op, torch_op, dtype)
    bargs, bkwargs = grids.backward_args(case, args, rng)
    assert_matches(case.op + "_backward", bargs, bkwargs, reference_op, torch_op, dtype)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.op}[{c}]")
def test_grid(case, rng):
    check_forward_and_backward(case, rng)


def _values(op, key):
    return {repr(c.kwargs[key]) for c in CASES if c.op == op}


def test_grids_cover_what_the_acceptance_asks():
    for op in ("conv2d", "conv1d"):
        assert _values(op, "stride") == {"1", "2", "3"}
        assert _values(op, "padding") == {"0", "1", "2", "'same'", "'valid'"}
        assert _values(op, "dilation") == {"1", "2", "3"}
        assert _values(op, "groups") == {"1", "2", "4"}  # 4 = C: depthwise
        assert {c.shapes[0][0] for c in CASES if c.op == op} == {1, 3}
    kernels = {c.shapes[1][2:] for c in CASES if c.op == "conv2d"}
    assert {(1, 1), (3, 3), (5, 5), (7, 7), (2, 3)} <= kernels
    assert all(c.shapes[0][2] != c.shapes[0][3] for c in CASES if c.op == "conv2d")
    assert _values("conv_transpose2d", "output_padding") == {"0", "1", "2"}
    assert _values("max_pool2d", "ceil_mode") == {"False", "True"}
    assert _values("max_pool2d", "dilation") == {"1", "2"}
    assert _values("max_pool2d", "padding") == {"0", "1"}
    assert _values("avg_pool2d", "count_include_pad") == {"False", "True"}
    assert _values("avg_pool2d", "divisor_override") == {"None", "3", "-2"}
    assert "(1, 1)" in _values("adaptive_avg_pool2d", "output_size")
    assert _values("batch_norm", "training") == {"False", "True"}
    affine = {(c.shapes[3] is not None, c.shapes[4] is not None, c.shapes[1] is not None)
              for c in CASES if c.op == "batch_norm"}
    assert len(affine) == 8  # weight x bias x running stats, all combinations


@pytest.mark.parametrize("strategy", DRAWN, ids=lambda s: s.__name__)
def test_drawn(strategy):
    grids.run_drawn(strategy, settings.default.max_examples, check_forward_and_backward)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", DRAWN, ids=lambda s: s.__name__)
def test_drawn_sweep(strategy):
    """The larger sweep: a thousand drawn cases per strategy."""
    grids.run_drawn(strategy, 1000, check_forward_and_backward)


@pytest.mark.parametrize("case", [grids.Case("conv2d", ((2, 4, 9, 8), (6, 2, 3, 2), (6,)),
                                             dict(stride=(2, 1), padding=1, dilation=(1, 2), groups=2)),
                                  grids.Case("conv_transpose2d", ((2, 4, 5, 6), (4, 3, 3, 2), (6,)),
                                             dict(stride=(2, 3), padding=1, output_padding=(1, 2),
                                                  groups=2, dilation=(1, 2))),
                                  next(grids.max_pool2d_grid()),
                                  next(grids.avg_pool2d_grid()),
                                  next(grids.batch_norm_grid())], ids=lambda c: c.op)
def test_float32_is_the_exact_answer_rounded(case, rng):
    """float32 inputs give float32 outputs within float32 rounding of the exact result."""
    check_forward_and_backward(case, rng, np.float32)

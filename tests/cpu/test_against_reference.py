"""Every CPU algorithm against the NumPy reference: forward and every gradient, float32 and
float64, over the reference's product grids and hypothesis-drawn cases."""
import numpy as np
import pytest
from hypothesis import settings

from fastconv import config, dispatch
from fastconv.testing import assert_matches, fastconv_runner, oracle_outputs, reference_op

import grids
from grids import CASES, DRAWN

DTYPES = (np.float32, np.float64)


def serving(op, case_shapes, kwargs):
    """The CPU algorithms (reference aside) that can serve this call."""
    info = dispatch.explain(op, *case_shapes, **kwargs)
    return [name for name in info["candidates"] if name != "reference"]


def check_algorithms(case, rng):
    """Each algorithm that serves the case, forward and backward, both dtypes, against one
    reference run per (direction, dtype)."""
    args = grids.forward_args(case, rng)
    bargs, bkwargs = grids.backward_args(case, args, rng)
    checked = 0
    for op, a, kw in ((case.op, args, case.kwargs), (case.op + "_backward", bargs, bkwargs)):
        algos = serving(op, [None if x is None else x.shape for x in a], kw)
        for dtype in DTYPES:
            expected = oracle_outputs(op, a, kw, reference_op, dtype)
            for algo in algos:
                assert_matches(op, a, kw, fastconv_runner(algo), reference_op, dtype,
                               expected=expected)
                checked += 1
    assert checked > 0


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.op}[{c}]")
def test_grid(case, rng):
    check_algorithms(case, rng)


@pytest.fixture
def tiny_tiles(monkeypatch):
    """Tunables at their smallest, so that small inputs span many im2col tiles and odd
    channel blocks."""
    monkeypatch.setattr(config, "IM2COL_WORKSPACE_BYTES", 1)
    monkeypatch.setattr(config, "DIRECT_OUT_CHANNELS_PER_TASK", 3)


@pytest.mark.parametrize("case", CASES[::25], ids=lambda c: f"{c.op}[{c}]")
def test_grid_with_tiny_tiles(case, rng, tiny_tiles):
    check_algorithms(case, rng)


@pytest.mark.parametrize("strategy", DRAWN, ids=lambda s: s.__name__)
def test_drawn(strategy):
    grids.run_drawn(strategy, settings.default.max_examples, check_algorithms)


@pytest.mark.parametrize("strategy", DRAWN, ids=lambda s: s.__name__)
def test_drawn_with_tiny_tiles(strategy, tiny_tiles):
    grids.run_drawn(strategy, settings.default.max_examples // 2, check_algorithms)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", DRAWN, ids=lambda s: s.__name__)
def test_drawn_sweep(strategy):
    grids.run_drawn(strategy, 1000, check_algorithms)

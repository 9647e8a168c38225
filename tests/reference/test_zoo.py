"""The reference on real layer sizes (the benchmark zoo, batch 8) against PyTorch, every
direction, in float32 judged against the exact answer. Slow: run with ``pytest -m slow``; the
default run makes the same pass over the quick suite's layers at batch 1, so that the slow
test's path cannot rot unseen."""
import numpy as np
import pytest

from fastconv.bench.zoo import BY_NAME, QUICK, ZOO
from fastconv.testing import assert_matches, reference_op, torch_op

pytest.importorskip("torch")

CALLS = [(layer, direction) for layer in ZOO for direction in layer.directions]
SMOKE = [(BY_NAME[name].at_batch(1), direction) for name in QUICK
         for direction in BY_NAME[name].directions]


def _ids(calls):
    return [f"{layer.name}-{direction}" for layer, direction in calls]


@pytest.mark.slow
@pytest.mark.parametrize("layer, direction", CALLS, ids=_ids(CALLS))
def test_zoo_layer(layer, direction):
    op, args, kwargs = layer.calls(np.float64)[direction]
    assert_matches(op, args, kwargs, reference_op, torch_op, np.float32)


@pytest.mark.parametrize("layer, direction", SMOKE, ids=_ids(SMOKE))
def test_zoo_layer_at_batch_1(layer, direction):
    test_zoo_layer(layer, direction)


def test_max_pool_backward_is_judged_with_indices_of_the_dtype_it_runs():
    """The zoo builds its calls in float64 and judges them in float32 (above). Saved max-pool
    indices come from the data, so they are made again from x as it runs: here two elements of
    a window differ in float64 and tie in float32, where the float64 indices name the second
    and every float32 kernel (and PyTorch) rightly takes the first."""
    x = np.zeros((1, 1, 2, 2))
    x[0, 0, 0, 0], x[0, 0, 0, 1] = 1.0, 1.0 + 1e-12
    _, indices = reference_op("max_pool2d", x, 2, return_indices=True)
    assert indices.ravel().tolist() == [1]  # the float64 maximum
    gy = np.ones((1, 1, 1, 1))
    assert_matches("max_pool2d_backward", [gy, x], dict(kernel_size=2, indices=indices),
                   reference_op, torch_op, np.float32)

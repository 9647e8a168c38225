"""The reference on real layer sizes (the benchmark zoo, batch 8) against PyTorch, every
direction, in float32 judged against the exact answer. Slow: run with ``pytest -m slow``."""
import numpy as np
import pytest

from fastconv.bench.zoo import ZOO
from fastconv.testing import assert_matches, reference_op, torch_op

pytest.importorskip("torch")

CALLS = [(layer, direction) for layer in ZOO for direction in layer.directions]


@pytest.mark.slow
@pytest.mark.parametrize("layer, direction", CALLS, ids=[f"{layer.name}-{d}" for layer, d in CALLS])
def test_zoo_layer(layer, direction):
    op, args, kwargs = layer.calls(np.float64)[direction]
    assert_matches(op, args, kwargs, reference_op, torch_op, np.float32)

"""The NumPy reference over the layer zoo, every direction: it must handle a ResNet-50 layer at
batch 8 in seconds. Run with ``pytest benchmarks/ --benchmark-only`` (not part of CI)."""
import numpy as np
import pytest

import fastconv
from shapes import ZOO

CALLS = [(layer, direction) for layer in ZOO for direction in layer.directions]


@pytest.mark.parametrize("layer, direction", CALLS, ids=[f"{l.name}-{d}" for l, d in CALLS])
def test_reference(benchmark, layer, direction):
    op, args, kwargs = layer.calls(np.float32)[direction]
    info = fastconv.explain(op, *[None if a is None else a.shape for a in args], **kwargs)
    benchmark.extra_info.update(flops=info["flops"], bytes=info["bytes"])
    benchmark.pedantic(getattr(fastconv, op), args=args, kwargs=dict(kwargs, algo="reference"),
                       rounds=3, iterations=1, warmup_rounds=0)

"""Every CPU algorithm over the layer zoo, every direction, next to PyTorch's kernels (group
``torch``). Run with ``pytest benchmarks/ --benchmark-only`` (not part of CI); JIT compilation
happens in the warm-up rounds, outside the timings."""
import numpy as np
import pytest

import fastconv
from baseline import torch_call
from shapes import ZOO

CALLS = [(layer, direction) for layer in ZOO for direction in layer.directions]
IDS = [f"{layer.name}-{direction}" for layer, direction in CALLS]


def _algorithms(op, args, kwargs):
    shapes = [None if a is None else a.shape for a in args]
    return [a for a in fastconv.explain(op, *shapes, **kwargs)["candidates"] if a != "reference"]


PARAMS = [(layer, direction, algo) for layer, direction in CALLS
          for algo in _algorithms(*layer.calls(np.float32)[direction])]


@pytest.mark.parametrize("layer, direction, algo", PARAMS,
                         ids=[f"{l.name}-{d}-{a}" for l, d, a in PARAMS])
def test_fastconv(benchmark, layer, direction, algo):
    op, args, kwargs = layer.calls(np.float32)[direction]
    benchmark.group = f"{layer.name}-{direction}"
    info = fastconv.explain(op, *[None if a is None else a.shape for a in args], **kwargs)
    benchmark.extra_info.update(flops=info["flops"], bytes=info["bytes"], algo=algo)
    benchmark.pedantic(getattr(fastconv, op), args=args, kwargs=dict(kwargs, algo=algo),
                       rounds=5, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("layer, direction", CALLS, ids=IDS)
def test_torch(benchmark, layer, direction):
    pytest.importorskip("torch")
    op, args, kwargs = layer.calls(np.float32)[direction]
    benchmark.group = f"{layer.name}-{direction}"
    benchmark.extra_info.update(algo="torch")
    benchmark.pedantic(torch_call(op, args, kwargs), rounds=5, iterations=1, warmup_rounds=1)

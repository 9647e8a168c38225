"""pytest-benchmark over the layer zoo (``fastconv.bench.zoo``): every algorithm that can serve
each call, every direction, float32, and PyTorch's kernel for the same call in the same group.

    pytest benchmarks/ --benchmark-only [--benchmark-group-by=group] [-k resnet50]

Not part of the test run (``testpaths`` is ``tests/``). JIT compilation happens in the warm-up
round, outside the timings. ``python -m fastconv bench`` measures the same calls with its own
table and plot.
"""
import numpy as np
import pytest

import fastconv
from fastconv.bench.baseline import configure, torch_call
from fastconv.bench.timing import cores, pin_threads
from fastconv.bench.zoo import ZOO

pin_threads(cores())
CALLS = [(layer, direction, call) for layer in ZOO
         for direction, call in layer.signatures().items()]
PARAMS = [(layer, direction, algo) for layer, direction, call in CALLS
          for algo in fastconv.explain(call.op, *call.shapes,
                                       **call.explain_kwargs())["candidates"]]


def _setup(benchmark, layer, direction):
    call = layer.calls(np.float32)[direction]
    info = fastconv.explain(call.op, *call.shapes, **call.explain_kwargs())
    benchmark.group = f"{layer.name}-{direction}"
    benchmark.extra_info.update(flops=info["flops"], bytes=info["bytes"], auto=info["algo"])
    return call


@pytest.mark.parametrize("layer, direction, algo", PARAMS,
                         ids=[f"{layer.name}-{d}-{a}" for layer, d, a in PARAMS])
def test_fastconv(benchmark, layer, direction, algo):
    call = _setup(benchmark, layer, direction)
    benchmark.extra_info["algo"] = algo
    benchmark.pedantic(getattr(fastconv, call.op), args=call.args,
                       kwargs=dict(call.kwargs, algo=algo), rounds=5, iterations=1,
                       warmup_rounds=1)


@pytest.mark.parametrize("layer, direction", [(layer, d) for layer, d, _ in CALLS],
                         ids=[f"{layer.name}-{d}-torch" for layer, d, _ in CALLS])
def test_torch(benchmark, layer, direction):
    pytest.importorskip("torch")
    configure("cpu", cores())
    call = _setup(benchmark, layer, direction)
    benchmark.extra_info["algo"] = "torch"
    benchmark.pedantic(torch_call(call), rounds=5, iterations=1, warmup_rounds=1)

"""Every CUDA algorithm against the NumPy reference: forward and every gradient, float32 and
float64, over the reference's product grids and hypothesis-drawn cases; bitwise repeatability;
the layer zoo. Skipped as a module where no GPU is visible (the sources are still compiled in
CI by test_compile.py)."""
import grids
import numpy as np
import pytest
from grids import CASES, DRAWN
from hypothesis import settings

from fastconv import config, testing

if not testing.gpu_available():
    pytest.skip("no CUDA device visible", allow_module_level=True)

import cupy  # noqa: E402

import fastconv  # noqa: E402
from fastconv.bench import zoo  # noqa: E402


def check_algorithms(case, rng):
    grids.check_algorithms(case, rng, "cuda")


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.op}[{c}]")
def test_grid(case, rng):
    check_algorithms(case, rng)


@pytest.fixture
def tiny_chunks(monkeypatch):
    """One image per im2col chunk, so that small batches span several chunks."""
    monkeypatch.setattr(config, "CUDA_IM2COL_WORKSPACE_BYTES", 1)


@pytest.mark.parametrize("case", CASES[::25], ids=lambda c: f"{c.op}[{c}]")
def test_grid_with_tiny_chunks(case, rng, tiny_chunks):
    check_algorithms(case, rng)


@pytest.mark.parametrize("strategy", DRAWN, ids=lambda s: s.__name__)
def test_drawn(strategy):
    grids.run_drawn(strategy, settings.default.max_examples, check_algorithms)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", DRAWN, ids=lambda s: s.__name__)
def test_drawn_sweep(strategy):
    grids.run_drawn(strategy, 1000, check_algorithms)


CALLS = [(layer, direction) for layer in zoo.ZOO for direction in layer.directions]


@pytest.mark.parametrize("layer, direction", CALLS,
                         ids=[f"{layer.name}-{d}" for layer, d in CALLS])
def test_zoo_every_algorithm_bitwise_repeatable_and_close_to_the_cpu(layer, direction):
    """Real layer sizes: each CUDA algorithm twice (bitwise the same results, no atomics) and
    against the CPU's auto choice (float32, both against each other)."""
    host = layer.calls(np.float32)[direction]
    device = layer.calls(np.float32, xp=cupy)[direction]
    cpu = getattr(fastconv, host.op)(*host.args, **host.kwargs)
    cpu = cpu if isinstance(cpu, tuple) else (cpu,)
    info = fastconv.explain(host.op, *host.shapes, backend="cuda", **host.explain_kwargs())
    for algo in info["candidates"]:
        runs = [getattr(fastconv, device.op)(*device.args, **device.kwargs, algo=algo)
                for _ in range(2)]
        first, second = ((r if isinstance(r, tuple) else (r,)) for r in runs)
        for a, b, c in zip(first, second, cpu):
            if a is None:
                continue
            assert bool((a == b).all()), (algo, "not bitwise repeatable")
            assert testing.error(cupy.asnumpy(a), c) <= 2 * testing.TOLERANCE[np.dtype(np.float32)]

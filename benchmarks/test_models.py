"""pytest-benchmark over the model zoo (``fastconv.bench.models``): a training step and an
inference pass of every network, after ``fastconv.torch.convert`` and in plain PyTorch, from
the same weights, in one group per (model, mode).

    pytest benchmarks/test_models.py --benchmark-only [--benchmark-group-by=group]

``python -m fastconv bench --models`` measures the same steps with idle gaps between the
contenders, its own table and plot.
"""
import pytest

torch = pytest.importorskip("torch")

from fastconv.bench import model_suite, models  # noqa: E402
from fastconv.bench.timing import cores, pin_threads  # noqa: E402

pin_threads(cores())
torch.set_num_threads(cores())
CASES = [(model, mode, contender) for model in models.MODELS for mode in model_suite.MODES
         for contender in model_suite.CONTENDERS]


@pytest.mark.parametrize("model, mode, contender", CASES,
                         ids=[f"{m.name}-{mode}-{c}" for m, mode, c in CASES])
def test_step(benchmark, model, mode, contender):
    step = model_suite.Pair(model).step(contender, mode)
    benchmark.group = f"{model.name}-{mode}"
    benchmark.extra_info.update(batch=model.input_shape[0], contender=contender)
    benchmark.pedantic(step, rounds=5, iterations=1, warmup_rounds=1)

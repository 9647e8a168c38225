"""The bad-input battery of tests/test_battery.py on the CUDA backend: the same drawn calls and
changes, the arrays handed over as CuPy arrays, the same rules against PyTorch. Skipped as a
module where no GPU is visible."""
import pytest
from hypothesis import given, settings

from fastconv import testing

if not testing.gpu_available():
    pytest.skip("no CUDA device visible", allow_module_level=True)

import test_battery as battery  # noqa: E402
from test_battery import small_memory  # noqa: E402,F401  (a fixture)


@pytest.mark.parametrize("op, change", battery.CALLS, ids=[f"{op}-{c}" for op, c in battery.CALLS])
@pytest.mark.usefixtures("small_memory")
def test_every_call_returns_what_torch_returns_or_raises_a_clear_error(op, change):
    @settings(max_examples=battery.EXAMPLES)
    @given(battery.calls(op, change))
    def check(call):
        battery.judge(*call, backend="cuda")
    check()

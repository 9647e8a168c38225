import os

import numpy as np
import pytest

import fastconv.config
from hypothesis import HealthCheck, settings

# Hypothesis: a modest number of examples per drawn test in the default run (the slow sweeps set
# their own counts; HYPOTHESIS_PROFILE=slow raises the default). No deadlines: a first call may
# compile.
settings.register_profile("default", max_examples=100, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("slow", max_examples=1000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])


settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# Tiny CPU calls normally run on one thread (fastconv.config.CPU_ONE_THREAD_BELOW); the tests'
# inputs are nearly all tiny, and must exercise the parallel loops as large inputs do.
# tests/test_calls.py tests the rule itself.
fastconv.config.CPU_ONE_THREAD_BELOW = 0


def pytest_collection_finish(session):
    """Start tests/cpu/test_index_width.py's probe (a fresh process that compiles every CPU
    kernel) as soon as the run is known to include it, so that it compiles beside this
    process rather than after it."""
    if session.config.option.collectonly:
        return
    for item in session.items:
        if "compiled" in getattr(item, "fixturenames", ()) and \
                hasattr(item.module, "start_probe"):
            item.module.start_probe()
            session.config.stop_probe = item.module.stop_probe
            return


def pytest_sessionfinish(session):
    stop = getattr(session.config, "stop_probe", None)
    if stop is not None:
        stop()


@pytest.fixture
def rng():
    return np.random.default_rng(20261121)


def pytest_terminal_summary(terminalreporter):
    """The size of the bad-input battery (tests/test_battery.py), when it ran."""
    import sys

    battery = next((m for name, m in sys.modules.items() if name.endswith("test_battery")
                    and hasattr(m, "TRIED")), None)
    if battery is not None and battery.TRIED:
        ops = {op for op, _, _ in battery.TRIED}
        changes = {change for _, change, _ in battery.TRIED}
        ends = {end: sum(v.startswith(end) for v in battery.TRIED.values())
                for end in ("returned", "raised", "stricter")}
        terminalreporter.write_line(
            f"bad-input battery: {len(battery.TRIED)} distinct calls over {len(ops)} ops and "
            f"{len(changes)} kinds of change: {ends['returned']} returned PyTorch's results, "
            f"{ends['raised']} raised where PyTorch raised, {ends['stricter']} raised where "
            f"the API contract is stricter than PyTorch")
        reasons = [v for v in battery.TRIED.values() if v.startswith("stricter")]
        for why in sorted(set(reasons)):
            terminalreporter.write_line(f"  {reasons.count(why):5d} {why}")

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# Hypothesis: a modest number of examples per drawn test in the default run (the slow sweeps set
# their own counts; HYPOTHESIS_PROFILE=slow raises the default). No deadlines: a first call may
# compile.
settings.register_profile("default", max_examples=100, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("slow", max_examples=1000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])


settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture
def rng():
    return np.random.default_rng(20261121)

"""Every CPU algorithm against the NumPy reference: forward and every gradient, float32 and
float64, over the reference's product grids and hypothesis-drawn cases."""
import grids
import pytest
from grids import CASES, DRAWN
from hypothesis import settings

from fastconv import config


def check_algorithms(case, rng):
    grids.check_algorithms(case, rng, "cpu")


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.op}[{c}]")
def test_grid(case, rng):
    check_algorithms(case, rng)


@pytest.fixture
def tiny_tiles(monkeypatch):
    """Tunables at their smallest, so that small inputs span many im2col tiles and odd
    channel blocks."""
    monkeypatch.setattr(config, "IM2COL_TILE_BYTES", 1)
    monkeypatch.setattr(config, "DIRECT_OUT_CHANNELS_PER_TASK", 3)


@pytest.mark.parametrize("case", CASES[::25], ids=lambda c: f"{c.op}[{c}]")
def test_grid_with_tiny_tiles(case, rng, tiny_tiles):
    check_algorithms(case, rng)


@pytest.mark.parametrize("strategy", DRAWN, ids=lambda s: s.__name__)
def test_drawn(strategy):
    grids.run_drawn(strategy, settings.default.max_examples, check_algorithms)


@pytest.mark.parametrize("strategy", DRAWN, ids=lambda s: s.__name__)
def test_drawn_with_tiny_tiles(strategy, tiny_tiles):
    grids.run_drawn(strategy, settings.default.max_examples // 2, check_algorithms)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", DRAWN, ids=lambda s: s.__name__)
def test_drawn_sweep(strategy):
    grids.run_drawn(strategy, 1000, check_algorithms)

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


def _whole_image_cases():
    """im2col's whole-image column copy (cpu.im2col._fill_images) serves unit-stride layers
    with W == Wo in tiles of whole images: batches large enough for the minimum tile count to
    leave whole images in a tile, "same" padding (symmetric or not, dilated), taps that read
    only padding (a 5x5 kernel on 2x2 images), one column, groups."""
    for (h, w), (kh, kw), d, groups in [((4, 4), (3, 3), 1, 1), ((3, 5), (3, 3), 1, 1),
                                        ((2, 2), (5, 5), 1, 1), ((4, 6), (3, 5), 2, 1),
                                        ((5, 1), (3, 1), 1, 1), ((4, 4), (2, 2), 1, 2),
                                        ((6, 3), (1, 3), 1, 2)]:
        yield grids.Case("conv2d", ((8, 4, h, w), (6, 4 // groups, kh, kw), (6,)),
                         dict(padding="same", dilation=d, groups=groups))
    yield grids.Case("conv2d", ((8, 3, 4, 4), (5, 3, 3, 3), None), dict(padding=(0, 1)))


@pytest.mark.parametrize("case", list(_whole_image_cases()), ids=str)
def test_im2col_whole_image_tiles(case, rng):
    check_algorithms(case, rng)

"""The index helpers every CPU kernel builds its loops from (fastconv.cpu._loops), against
brute force: which taps of a window, and which outputs of a row, lie inside the input."""
from itertools import product

import numpy as np

import fastconv
from fastconv.cpu._loops import inside, taps
from fastconv.testing import assert_matches, fastconv_runner, reference_op

SPAN = range(-9, 10)


def test_taps_are_the_taps_inside_and_never_past_the_count():
    """Also where no tap lies inside: lo stays <= count, since callers index with it (im2col
    zeroed lo columns of a row, so a tap wholly in a left padding wider than the row wrote
    past its buffer: glibc aborted at exit, free(): invalid pointer)."""
    for start, step, size, count in product(SPAN, range(1, 4), range(0, 6), range(0, 6)):
        lo, hi = taps(start, step, size, count)
        wanted = [t for t in range(count) if 0 <= start + t * step < size]
        assert 0 <= lo <= hi <= count, (start, step, size, count, lo, hi)
        assert list(range(lo, hi)) == wanted, (start, step, size, count, lo, hi)


def test_inside_is_the_outputs_whose_whole_window_lies_inside():
    for start, step, span, size, count in product(SPAN, range(1, 4), range(1, 5), range(0, 6),
                                                  range(0, 6)):
        lo, hi = inside(start, step, span, size, count)
        wanted = [j for j in range(count)
                  if 0 <= start + j * step and start + j * step + span <= size]
        assert 0 <= lo <= hi <= count
        assert list(range(lo, hi)) == wanted, (start, step, span, size, count, lo, hi)


def test_a_tap_wholly_in_a_padding_wider_than_the_row(monkeypatch):
    """The drawn case that wrote past im2col's column buffer (the bounds-checked suite caught
    it): a 1-wide input padded by 6 on each side, dilation 3, in tiles of one row."""
    monkeypatch.setattr(fastconv.config, "IM2COL_TILE_BYTES", 1)
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((1, 1, 2, 1)), rng.standard_normal((1, 1, 1, 5))
    kwargs = dict(padding=(0, 6), dilation=(1, 3))
    gy = rng.standard_normal((1, 1, 2, 1))
    for dtype in (np.float32, np.float64):
        assert_matches("conv2d", [x, w, None], kwargs, fastconv_runner("im2col"), reference_op,
                       dtype)
        assert_matches("conv2d_backward", [gy, x, w], kwargs, fastconv_runner("im2col"),
                       reference_op, dtype)

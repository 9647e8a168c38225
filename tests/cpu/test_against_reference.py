"""Every CPU algorithm against the NumPy reference: forward and every gradient, float32 and
float64, over the reference's product grids and hypothesis-drawn cases."""
import grids
import numpy as np
import pytest
from grids import CASES, DRAWN
from hypothesis import settings

import fastconv
from fastconv import config
from fastconv.testing import (assert_matches, error, fastconv_runner, reference_op, sum_error,
                              torch_available, torch_op, typed_args)


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


def _cancelling_weight_gradient():
    """conv1d (3, 1, 7) x (1, 1, 1), 'valid': the one weight gradient is the sum of 21
    products of size 1-2 that leaves 0.002 (the drawn case that once missed the normwise
    bound with every algorithm)."""
    rng = np.random.default_rng(7)
    x = (rng.uniform(1, 1.5, (3, 1, 7)) * rng.choice([-1, 1], (3, 1, 7))).astype(np.float32)
    gy = rng.uniform(1, 1.5, (3, 1, 7)).astype(np.float32)
    terms = gy.astype(np.float64) * x
    gy[-1, 0, -1] = np.float32((0.002 - (terms.sum() - terms[-1, 0, -1])) / x[-1, 0, -1])
    return [gy, x, np.ones((1, 1, 1), np.float32)], dict(output_mask=(False, True, False))


def test_a_cancelled_sum_is_judged_against_the_magnitude_of_its_terms():
    args, kwargs = _cancelling_weight_gradient()
    (_, exact, _), (_, magnitude, _) = (
        reference_op("conv1d_backward", *typed_args(a, np.float64), **kwargs)
        for a in (args, [np.abs(a) for a in args]))
    assert abs(exact.item()) < 0.01 and magnitude.item() > 20
    # a float32 rounding of the sum's terms: far off normwise, within the bound of a sum
    rounded = exact + 20 * np.finfo(np.float32).eps * magnitude / 21
    assert error(rounded, exact) > 1e-5 and sum_error(rounded, exact, magnitude) < 1e-5
    # a wrong sum (a term left out) is no rounding: both measures catch it
    wrong = exact + 1.0
    assert error(wrong, exact) > 1e-5 and sum_error(wrong, exact, magnitude) > 1e-5
    for algo in fastconv.explain("conv1d_backward", *[a.shape for a in args],
                                 **kwargs)["candidates"]:
        assert_matches("conv1d_backward", args, kwargs, fastconv_runner(algo), reference_op,
                       np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("side", [7, 32, 33, 70])
def test_global_average_pool_runs(side, dtype, rng):
    """Global average pooling sums a plane in runs of 1024 values in the input's dtype and adds
    the runs in float64 (fastconv.cpu.pool._GLOBAL_RUN): planes of one short run, exactly one
    run, one value over, and several runs, against the reference and PyTorch, both directions,
    on data far from zero (where a float32 sum of the whole plane would drift)."""
    x = rng.standard_normal((2, 3, side, side)) + 100.0
    gy = rng.standard_normal((2, 3, 1, 1))
    for oracle in (reference_op, *([torch_op] if torch_available() else [])):
        assert_matches("adaptive_avg_pool2d", [x], dict(output_size=1), fastconv_runner(),
                       oracle, dtype)
        assert_matches("adaptive_avg_pool2d_backward", [gy, x], {},
                       fastconv_runner(), oracle, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("first, offset", [(0.0, 0.0), (1e5, 0.0), (0.0, 1e4), (-1e6, 1e4)],
                         ids=["plain", "outlier-first", "offset", "outlier-and-offset"])
def test_batch_norm_backward_statistics_about_a_shift(first, offset, dtype, rng):
    """The CPU backward takes its statistics in one pass about a shift, the channel's first
    value, and again exactly about the mean where that value lies more than 32 standard
    deviations from it (fastconv.cpu.batchnorm). Both roads against the reference and
    PyTorch: 2500 values a channel, the first of them 1e5 or 1e6 from the others (which a
    channel this size puts 50 standard deviations or more from the mean: the exact road), or
    none (the one-pass road), on data near zero and far from it."""
    x = rng.standard_normal((4, 2, 25, 25)) + offset
    x[0, :, 0, 0] += first
    gy, w = rng.standard_normal(x.shape), rng.standard_normal(2)
    args, kwargs = [gy, x, w, None, None], dict(training=True)
    for oracle in (reference_op, *([torch_op] if torch_available() else [])):
        assert_matches("batch_norm_backward", args, kwargs, fastconv_runner("direct"), oracle,
                       dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("plane", [(1, 1), (3, 5), (4, 4), (5, 7), (9, 57)])
def test_batch_norm_streamed_stores(plane, dtype, rng, monkeypatch):
    """Batch norm writes outputs of fastconv.cpu.batchnorm._STREAM_BYTES or more with
    non-temporal stores, whole 64-byte lines from the first boundary on and the elements
    around them one at a time. Every output streamed (the bound at 0) and none (the bound out
    of reach), on planes whose length and offsets put the lines' boundaries anywhere (1 to 513
    values, odd and even): forward and backward, training and evaluation, against the
    reference and PyTorch; and streamed or not, the same bits (a value does not depend on the
    store that writes it)."""
    from fastconv.cpu import batchnorm as cpu_batchnorm

    x = rng.standard_normal((3, 5, *plane)) * 2.0 + 0.5
    gy, w, b = rng.standard_normal(x.shape), rng.standard_normal(5), rng.standard_normal(5)
    rm, rv = rng.standard_normal(5), rng.random(5) + 0.5
    oracles = (reference_op, *([torch_op] if torch_available() else []))
    calls = [("batch_norm", [x, rm, rv, w, b], dict(training=True)),
             ("batch_norm", [x, rm, rv, w, b], dict(training=False)),
             ("batch_norm_backward", [gy, x, w, None, None], dict(training=True)),
             ("batch_norm_backward", [gy, x, w, rm, rv], dict(training=False))]
    results = {}
    for bound in (0, 1 << 62):
        monkeypatch.setattr(cpu_batchnorm, "_STREAM_BYTES", bound)
        for op, args, kwargs in calls:
            for oracle in oracles:
                assert_matches(op, args, kwargs, fastconv_runner("direct"), oracle, dtype)
            typed = [None if a is None else a.astype(dtype) for a in args]
            out = getattr(fastconv, op)(*typed, **kwargs)
            results.setdefault((op, kwargs["training"]), []).append(
                [np.asarray(o).copy() for o in (out if isinstance(out, tuple) else (out,))
                 if o is not None])
    for (op, training), (streamed, stored) in results.items():
        for s, t in zip(streamed, stored):
            assert s.tobytes() == t.tobytes(), (op, training)

"""The extra memory of each CPU convolution stays within what explain() reports as its
workspace (NumPy allocations, measured with tracemalloc; BLAS's internal buffers are not seen).
SLACK covers the interpreter's own bookkeeping during a call and per-channel vectors (a zero
bias, a transposed weight slice) that the bounds leave out."""
import tracemalloc

import numpy as np
import pytest

import fastconv
from fastconv import config

LAYERS = [
    ((4, 16, 20, 20), (32, 16, 3, 3), dict(padding=1)),
    ((4, 16, 20, 20), (32, 4, 3, 3), dict(padding=(2, 1), stride=2, dilation=2, groups=4)),
    ((4, 16, 20, 20), (32, 16, 1, 1), dict(stride=2)),
    ((4, 16, 20, 20), (32, 1, 3, 3), dict(padding=1, groups=16)),
    ((2, 3, 64, 64), (8, 3, 7, 7), dict(padding=3, stride=2)),
]
SLACK = 16 * 1024
DIRECTIONS = {"forward": None, "backward_data": (True, False, False),
              "backward_weight": (False, True, False)}


def peak_extra_bytes(fn):
    tracemalloc.start()
    try:
        result = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    results = result if isinstance(result, tuple) else (result,)
    return peak - sum(r.nbytes for r in results if r is not None)


@pytest.mark.parametrize("limit", [config.IM2COL_WORKSPACE_BYTES, 4096])
@pytest.mark.parametrize("x_shape, w_shape, kwargs", LAYERS)
def test_peak_memory_within_reported_workspace(x_shape, w_shape, kwargs, limit, monkeypatch):
    monkeypatch.setattr(config, "IM2COL_WORKSPACE_BYTES", limit)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    y_shape = fastconv.explain("conv2d", x_shape, w_shape, **kwargs)["output_shapes"][0]
    gy = rng.standard_normal(y_shape).astype(np.float32)
    for direction, mask in DIRECTIONS.items():
        if mask is None:
            op, args, kw = "conv2d", (x, w), dict(kwargs)
        else:
            op, args, kw = "conv2d_backward", (gy, x, w), dict(kwargs, output_mask=mask)
        shapes = [a.shape for a in args]
        for algo in fastconv.explain(op, *shapes, **kw)["candidates"]:
            if algo == "reference":
                continue
            getattr(fastconv, op)(*args, **kw, algo=algo)  # compile outside the measurement
            reported = fastconv.explain(op, *shapes, **kw, algo=algo)["workspace_bytes"]
            measured = peak_extra_bytes(lambda: getattr(fastconv, op)(*args, **kw, algo=algo))
            assert measured <= reported + SLACK, (direction, algo, measured, reported)


def test_im2col_tiles_respect_the_bound(monkeypatch):
    from fastconv import params
    from fastconv.cpu import im2col

    p = params.conv2d((8, 64, 56, 56), (64, 64, 3, 3), None, 1, 1)
    for limit in (1, 2**16, 2**20, 2**24):
        monkeypatch.setattr(config, "IM2COL_WORKSPACE_BYTES", limit)
        rows = im2col.rows_per_tile(p, 4)
        per_row = (64 * 9 + 64) * 56 * 4
        assert rows >= 1 and (rows == 1 or rows * per_row <= limit)

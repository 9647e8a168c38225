"""The extra memory of every CPU op stays within what explain() reports as its workspace.

Measured with tracemalloc, which sees NumPy's allocations: im2col's column tiles and padded
copies, the indices max-pool backward recomputes, every output. It does not see BLAS's internal
buffers, nor the per-task buffers Numba kernels allocate inside a parallel loop (direct's and
depthwise's padded planes, which their workspace formulas bound by the number of tasks).
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


@pytest.mark.parametrize("limit", [config.IM2COL_TILE_BYTES, 4096])
@pytest.mark.parametrize("x_shape, w_shape, kwargs", LAYERS)
def test_peak_memory_within_reported_workspace(x_shape, w_shape, kwargs, limit, monkeypatch):
    monkeypatch.setattr(config, "IM2COL_TILE_BYTES", limit)
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
    """A task's columns (all K rows, or backward-weight's block of them) stay within
    IM2COL_TILE_BYTES, or are one output row when even that does not fit."""
    from fastconv import conv
    from fastconv.cpu import im2col

    p = conv.conv2d_params((8, 64, 56, 56), (64, 64, 3, 3), None, 1, 1)
    block = im2col.weight_block(p)
    assert block <= im2col.WEIGHT_ROWS_PER_TASK and -(-64 * 9 // block) * block >= 64 * 9
    for limit in (1, 2**16, 2**20, 2**24):
        monkeypatch.setattr(config, "IM2COL_TILE_BYTES", limit)
        for k_rows in (64 * 9, block):
            rows = im2col.rows_per_tile(p, 4, k_rows)
            per_row = k_rows * 56 * 4
            assert 1 <= rows <= 8 * 56 and (rows == 1 or rows * per_row <= limit)
            assert rows < 56 or rows % 56 == 0  # a block of one image, or whole images


def _every_other_op(rng):
    """(op, args, kwargs) of one call of every op the conv test above does not cover."""
    def a(*shape):
        return rng.standard_normal(shape).astype(np.float32)
    x, c = a(4, 16, 24, 24), np.abs(a(16)) + 0.5
    y_pool = fastconv.max_pool2d(x, 3, 2, 1, return_indices=True)
    calls = [
        ("conv_transpose2d", (a(4, 16, 12, 12), a(16, 8, 4, 4)), dict(stride=2, padding=1)),
        ("conv_transpose2d_backward", (a(4, 8, 24, 24), a(4, 16, 12, 12), a(16, 8, 4, 4)),
         dict(stride=2, padding=1)),
        ("conv1d", (a(4, 16, 200), a(32, 16, 5)), dict(padding=2)),
        ("conv1d_backward", (a(4, 32, 200), a(4, 16, 200), a(32, 16, 5)), dict(padding=2)),
        ("max_pool2d", (x, 3, 2, 1), dict(return_indices=True)),
        ("max_pool2d_backward", (a(*y_pool[0].shape), x, 3, 2, 1), {}),
        ("max_pool2d_backward", (a(*y_pool[0].shape), x, 3, 2, 1), dict(indices=y_pool[1])),
        ("avg_pool2d", (x, 3, 2, 1), {}),
        ("avg_pool2d_backward", (a(4, 16, 12, 12), x, 3, 2, 1), {}),
        ("adaptive_avg_pool2d", (x, 5), {}),
        ("adaptive_avg_pool2d_backward", (a(4, 16, 5, 5), x), {}),
        ("batch_norm", (x, c - 0.5, c, c, c), dict(training=True)),
        ("batch_norm", (x, c - 0.5, c, c, c), dict(training=False)),
        ("batch_norm_backward", (a(*x.shape), x, c, c - 0.5, c), dict(training=True)),
        ("batch_norm_backward", (a(*x.shape), x, c, c - 0.5, c), dict(training=False)),
    ]
    return calls


def _explain_args(op, args, kwargs):
    """explain()'s form of a call: shapes for arrays, and the op's other arguments by name."""
    import inspect

    names = list(inspect.signature(getattr(fastconv, op)).parameters)
    shapes, params = [], dict(kwargs)
    for name, value in zip(names, args):
        if isinstance(value, np.ndarray):
            shapes.append(value.shape)
        else:
            params[name] = value
    if "indices" in params:
        params["indices"] = params["indices"].shape
    return shapes, params


OTHER_OPS = [op for op, _, _ in _every_other_op(np.random.default_rng(0))]


@pytest.mark.parametrize("index", range(len(OTHER_OPS)), ids=OTHER_OPS)
def test_every_other_op_stays_within_its_reported_workspace(index):
    op, args, kwargs = _every_other_op(np.random.default_rng(index))[index]
    shapes, params = _explain_args(op, args, kwargs)

    def call():
        fresh = [a.copy() if isinstance(a, np.ndarray) and a.ndim == 1 else a for a in args]
        return getattr(fastconv, op)(*fresh, **kwargs)  # running statistics: fresh copies
    call()  # compile outside the measurement
    reported = fastconv.explain(op, *shapes, **params)["workspace_bytes"]
    measured = peak_extra_bytes(call)
    assert measured <= reported + SLACK, (op, measured, reported)

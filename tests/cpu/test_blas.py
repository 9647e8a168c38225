"""The GEMM inside the CPU kernels (fastconv.cpu._blas): both BLAS providers (NumPy's
scipy-openblas64 when NumPy has it, SciPy's through Numba's helper) against a float64 NumPy
product, on blocks of larger arrays with every layout the kernels pass, and the convolutions
that use it on the fallback provider."""
import itertools

import numpy as np
import pytest

from fastconv.cpu import _blas

PROVIDERS = {"scipy": np.zeros(2, np.int64)}
if _blas.library().any():
    PROVIDERS["numpy"] = _blas.library()


def _block(rng, rows, cols, dtype, column_major):
    """A (rows, cols) block inside a larger array: contiguous rows, or contiguous columns."""
    big = rng.standard_normal((rows + 3, cols + 5)).astype(dtype)
    if column_major:
        big = np.asfortranarray(big)
    return big[1:rows + 1, 2:cols + 2]


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_on_blocks_of_every_layout(provider, dtype):
    rng = np.random.default_rng(0)
    for (m, k, n), a_cols, b_cols, beta in itertools.product(
            [(1, 1, 1), (3, 5, 7), (1, 9, 4), (6, 1, 3), (5, 4, 1), (17, 33, 65), (0, 3, 2),
             (3, 0, 2)], (False, True), (False, True), (0.0, 0.5)):
        a = _block(rng, m, k, dtype, a_cols)
        b = _block(rng, k, n, dtype, b_cols)
        c = _block(rng, m, n, dtype, False)
        before = c.copy()
        with _blas.single_threaded():
            _blas.gemm(PROVIDERS[provider], a, b, c, beta)
        expected = a.astype(np.float64) @ b.astype(np.float64) + beta * before
        scale = max(1.0, np.abs(expected).max(initial=0.0))
        error = np.abs(c - expected).max(initial=0.0)
        assert error <= (1e-5 if dtype == np.float32 else 1e-12) * scale, (m, k, n, a_cols, b_cols)


def test_numpy_openblas_is_used_when_numpy_has_it():
    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    if blas.get("name") != "scipy-openblas":
        pytest.skip("NumPy is not built with scipy-openblas here")
    assert _blas.library().all() and _blas._computes_right(_blas.library())


def test_convolutions_on_the_fallback_blas(monkeypatch):
    """im2col and pointwise, every direction, on SciPy's BLAS, against the reference."""
    import fastconv

    monkeypatch.setattr(_blas, "_library", np.zeros(2, np.int64))
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 6, 9, 8))
    for w, kwargs, algo in ((rng.standard_normal((4, 3, 3, 3)), dict(padding=1, groups=2),
                             "im2col"),
                            (rng.standard_normal((8, 6, 1, 1)), dict(stride=2), "pointwise")):
        y = fastconv.conv2d(x, w, **kwargs, algo=algo)
        assert np.allclose(y, fastconv.conv2d(x, w, **kwargs, algo="reference"), atol=1e-10)
        gy = rng.standard_normal(y.shape)
        for got, want in zip(fastconv.conv2d_backward(gy, x, w, **kwargs, algo=algo),
                             fastconv.conv2d_backward(gy, x, w, **kwargs, algo="reference")):
            assert np.allclose(got, want, atol=1e-10)


def test_blas_is_held_at_one_thread_from_any_python_thread():
    """single_threaded holds every BLAS library at one thread whichever Python thread enters
    it (threadpoolctl ignores OpenBLAS limits set from a second thread unless it takes the
    control), and gives the counts back; the user's own limits work afterwards."""
    import threading

    from threadpoolctl import threadpool_limits

    libraries = _blas._blas_libraries()
    before = [lib.num_threads for lib in libraries]
    seen = {}

    def inside(name):
        with _blas.single_threaded():
            seen[name] = [lib.num_threads for lib in libraries]

    inside("main")
    worker = threading.Thread(target=inside, args=("worker",))
    worker.start()
    worker.join()
    assert seen == {"main": [1] * len(libraries), "worker": [1] * len(libraries)}
    assert [lib.num_threads for lib in libraries] == before
    with threadpool_limits(1, user_api="blas"):
        assert all(lib.num_threads == 1 for lib in libraries)
    assert [lib.num_threads for lib in libraries] == before

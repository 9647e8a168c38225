"""Matrix products inside Numba kernels: SciPy's BLAS (``sgemm``/``dgemm`` through
``scipy.linalg.cython_blas``), called from fastconv's own parallel loops, one single-threaded
GEMM per task.

Why not NumPy's ``@``: NumPy's BLAS runs its own thread pool, whose workers spin for about 0.1 s
after every product (OpenBLAS's thread timeout), and on a 2-core machine they fight Numba's
workers and PyTorch's for the cores (docs/algorithms.md, Threads). Here the tasks of one call run
on Numba's threads only, each multiplying its own tile, while :func:`single_threaded` holds the
BLAS libraries of the process at one thread each, so that no BLAS worker ever wakes.

:func:`gemm` takes row-major 2-D views whose rows (or, for a transposed view, columns) are
contiguous, with any leading dimension: a block of a larger array is multiplied in place,
without a copy. Fortran BLAS is column-major, so ``C = A @ B`` is computed as
``C^T = B^T @ A^T``: a row-major matrix with row stride ``ld`` is the column-major matrix of its
transpose with the same ``ld``.

Every product of a given shape runs the same code in the same order, whichever thread runs it
and however many threads there are, so results are bitwise repeatable.
"""
from __future__ import annotations

import contextlib
import threading

import numpy as np
import scipy.linalg.cython_blas  # noqa: F401  (Numba's BLAS helper takes its functions from here)
from numba import njit, types

# Numba's own C helper behind np.dot (numba/_lapack.c): it looks up SciPy's sgemm/dgemm when
# first called and passes the sizes on as BLAS's ints. Called by name, so that the kernels
# calling it stay in Numba's on-disk cache (a ctypes pointer would bake an address in).
_xxgemm = types.ExternalFunction("numba_xxgemm", types.intc(
    types.char, types.char, types.char,                    # kind ('s', 'd'), transa, transb
    types.intp, types.intp, types.intp,                    # m, n, k
    types.voidptr, types.voidptr, types.intp,              # alpha, a, lda
    types.voidptr, types.intp, types.voidptr,              # b, ldb, beta
    types.voidptr, types.intp))                            # c, ldc

BLAS_INT_MAX = 2**31 - 1  # SciPy's BLAS takes 32-bit ints
_N, _T = 110, 116  # ord("n"), ord("t")


@njit(inline="always")
def _operand(x):
    """(transpose flag, leading dimension) of row-major x as BLAS's column-major x^T."""
    r, s = x.shape
    item = x.itemsize
    if s == 1 or x.strides[1] == item:
        ld = x.strides[0] // item if r > 1 else s
        return _N, max(ld, s, 1)
    if r == 1 or x.strides[0] == item:
        ld = x.strides[1] // item if s > 1 else r
        return _T, max(ld, r, 1)
    raise ValueError("gemm: an operand has neither contiguous rows nor contiguous columns")


@njit(cache=True)
def gemm(a, b, c, beta):
    """c = a @ b + beta * c, in place; a (m, k), b (k, n), c (m, n) of one float dtype, c with
    contiguous rows, a and b with contiguous rows or columns. beta 0 ignores c's contents."""
    m, k = a.shape
    n = b.shape[1]
    if m == 0 or n == 0:
        return
    tb, ldb = _operand(b)
    ta, lda = _operand(a)
    tc, ldc = _operand(c)
    if tc != _N:
        raise ValueError("gemm: the result needs contiguous rows")
    if max(m, n, k, lda, ldb, ldc) > BLAS_INT_MAX:
        raise ValueError("gemm: a dimension exceeds BLAS's 32-bit ints")
    scalars = np.empty(2, c.dtype)
    scalars[0], scalars[1] = 1.0, beta
    kind = 115 if c.itemsize == 4 else 100  # ord("s"), ord("d")
    status = _xxgemm(kind, tb, ta, n, m, k, scalars[0:].ctypes, b.ctypes, ldb, a.ctypes, lda,
                     scalars[1:].ctypes, c.ctypes, ldc)
    if status != 0:
        raise RuntimeError("gemm: SciPy's BLAS could not be loaded")


# ---- one BLAS thread while fastconv's tasks call it -----------------------------------------

_lock = threading.Lock()
_depth = 0          # calls inside single_threaded() right now, over all Python threads
_saved: list = []   # (library, its thread count) from before the outermost one
_libraries = None   # threadpoolctl's controllers of the process's BLAS libraries


def _blas_libraries():
    global _libraries
    if _libraries is None:
        from threadpoolctl import ThreadpoolController

        _libraries = list(ThreadpoolController().select(user_api="blas").lib_controllers)
    return _libraries


@contextlib.contextmanager
def single_threaded():
    """Every BLAS library of the process at one thread while the block runs (the outermost of
    concurrent blocks saves the counts, the last to leave restores them): fastconv's tasks
    each call BLAS from a Numba thread, and a multithreaded BLAS would start its own pool on
    top of Numba's. Another Python thread's NumPy product in that window runs on one thread."""
    global _depth, _saved
    with _lock:
        if _depth == 0:
            _saved = [(lib, lib.num_threads) for lib in _blas_libraries()]
            for lib, threads in _saved:
                if threads != 1:
                    lib.set_num_threads(1)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                for lib, threads in _saved:
                    if threads != 1:
                        lib.set_num_threads(threads)

"""Matrix products inside Numba kernels: one single-threaded BLAS GEMM per task, called from
fastconv's own parallel loops.

Why not NumPy's ``@``: NumPy's BLAS runs its own thread pool, whose workers spin for about 0.1 s
after every product (OpenBLAS's thread timeout), and on a 2-core machine they fight Numba's
workers and PyTorch's for the cores (docs/algorithms.md, Threads). Here the tasks of one call run
on Numba's threads only, each multiplying its own tile, while :func:`single_threaded` holds the
BLAS libraries of the process at one thread each, so that no BLAS worker ever wakes.

Which BLAS (:func:`library`): NumPy's own OpenBLAS when NumPy was built with the
scipy-openblas64 library its wheels ship (``scipy_sgemm_64_``/``scipy_dgemm_64_``, 64-bit ints),
found through threadpoolctl and checked once on a product with a known result; otherwise
SciPy's BLAS (``scipy.linalg.cython_blas``) through Numba's own helper behind ``np.dot``. The
first is the newer OpenBLAS in today's wheels, and measured faster on the small-M products of
convolutions (1 thread, GFLOP/s: 64x576x512 91 against 72, 16x144x2048 65 against 40,
64x256x3136 81 against 66). Its address reaches the kernels as an argument, never as a
constant compiled into them, so that they stay in Numba's on-disk cache.

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
import ctypes
import threading

import numpy as np
import scipy.linalg.cython_blas  # noqa: F401  (Numba's BLAS helper takes its functions from here)
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

# Numba's own C helper behind np.dot (numba/_lapack.c): it looks up SciPy's sgemm/dgemm when
# first called and passes the sizes on as 32-bit ints. Called by name, so that the kernels
# calling it stay cacheable.
_xxgemm = types.ExternalFunction("numba_xxgemm", types.intc(
    types.char, types.char, types.char,                    # kind ('s', 'd'), transa, transb
    types.intp, types.intp, types.intp,                    # m, n, k
    types.voidptr, types.voidptr, types.intp,              # alpha, a, lda
    types.voidptr, types.intp, types.voidptr,              # b, ldb, beta
    types.voidptr, types.intp))                            # c, ldc

BLAS_INT_MAX = 2**31 - 1  # SciPy's BLAS takes 32-bit ints
_N, _T = 110, 116  # ord("n"), ord("t")


@intrinsic
def _fortran_gemm(typingctx, address, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c,
                  ldc):
    """Call the Fortran ?gemm at ``address`` (an int) with its 13 arguments, all pointers."""
    sig = types.void(types.int64, *[types.voidptr] * 13)

    def codegen(context, builder, signature, args):
        pointer = ir.IntType(8).as_pointer()
        function = ir.FunctionType(ir.VoidType(), [pointer] * 13)
        builder.call(builder.inttoptr(args[0], function.as_pointer()), args[1:])
        return context.get_dummy_value()
    return sig, codegen


@intrinsic
def _address(typingctx, data):
    """An integer address as the ``void *`` that BLAS takes."""
    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], ir.IntType(8).as_pointer())
    if not isinstance(data, types.Integer):
        return None
    return types.voidptr(data), codegen


@intrinsic
def _alive(typingctx, arrays):
    """Nothing: a use of a tuple of arrays after a product that read them through their
    addresses, so that none of them (a temporary view, say) is released before BLAS is done."""
    def codegen(context, builder, signature, args):
        return context.get_dummy_value()
    return types.void(arrays), codegen


@njit(inline="always")
def _operand(x):
    """(transpose flag, leading dimension) of row-major x as BLAS's column-major x^T; flag 0
    when x has neither contiguous rows nor contiguous columns (:func:`_product` refuses it)."""
    r, s = x.shape
    item = x.itemsize
    flag, ld = 0, 1
    if s == 1 or x.strides[1] == item:
        flag, ld = _N, max(x.strides[0] // item if r > 1 else s, s, 1)
    elif r == 1 or x.strides[0] == item:
        flag, ld = _T, max(x.strides[1] // item if s > 1 else r, r, 1)
    return flag, ld


@njit(cache=True)
def gemm(blas, a, b, c, beta):
    """c = a @ b + beta * c, in place; a (m, k), b (k, n), c (m, n) of one float dtype, c with
    contiguous rows, a and b with contiguous rows or columns. beta 0 ignores c's contents.
    ``blas``: :func:`library`'s addresses.

    Numba compiles this once per combination of the operands' types (dtype, layout,
    read-only), so it is kept small: it reads the layouts and addresses, and the product and
    its checks are one compiled function for all of them (:func:`_product`). Not inlined:
    inside the callers' ``prange`` bodies it compiled slower, and a loop body that may raise
    or return early is one Numba runs serially."""
    tb, ldb = _operand(b)
    ta, lda = _operand(a)
    tc, ldc = _operand(c)
    _product(blas, c.itemsize, tb, ta, b.shape[1], a.shape[0], a.shape[1], b.ctypes.data, ldb,
             a.ctypes.data, lda, beta, c.ctypes.data, ldc, tc)
    _alive((a, b, c))


@njit(cache=True)
def _product(blas, itemsize, transa, transb, m, n, k, a, lda, b, ldb, beta, c, ldc, transc):
    """The column-major ``c = a @ b + beta * c`` of Fortran ?gemm on raw addresses, ``itemsize``
    4 for float32, 8 for float64 (C = A @ B row-major reaches here as C^T = B^T @ A^T)."""
    if transa == 0 or transb == 0:
        raise ValueError("gemm: an operand has neither contiguous rows nor contiguous columns")
    if transc != _N:
        raise ValueError("gemm: the result needs contiguous rows")
    if m == 0 or n == 0:
        return
    alpha32, alpha64 = np.empty(2, np.float32), np.empty(2, np.float64)  # [alpha, beta]
    alpha32[0], alpha32[1], alpha64[0], alpha64[1] = 1.0, beta, 1.0, beta
    alpha = alpha32.ctypes.data if itemsize == 4 else alpha64.ctypes.data
    beta_at = alpha + np.uint64(itemsize)  # the next element
    address = blas[0] if itemsize == 4 else blas[1]
    if address != 0:  # NumPy's OpenBLAS, 64-bit ints
        flags = np.empty(2, np.uint8)
        flags[0], flags[1] = transa, transb
        ints = np.empty(6, np.int64)
        ints[0], ints[1], ints[2], ints[3], ints[4], ints[5] = m, n, k, lda, ldb, ldc
        _fortran_gemm(address, flags[0:].ctypes, flags[1:].ctypes, ints[0:].ctypes,
                      ints[1:].ctypes, ints[2:].ctypes, _address(alpha), _address(a),
                      ints[3:].ctypes, _address(b), ints[4:].ctypes, _address(beta_at),
                      _address(c), ints[5:].ctypes)
        _alive((alpha32, alpha64))
        return
    if max(m, n, k, lda, ldb, ldc) > BLAS_INT_MAX:
        raise ValueError("gemm: a dimension exceeds BLAS's 32-bit ints")
    kind = 115 if itemsize == 4 else 100  # ord("s"), ord("d")
    status = _xxgemm(kind, transa, transb, m, n, k, _address(alpha), _address(a), lda,
                     _address(b), ldb, _address(beta_at), _address(c), ldc)
    _alive((alpha32, alpha64))
    if status != 0:
        raise RuntimeError("gemm: SciPy's BLAS could not be loaded")


# ---- which BLAS ------------------------------------------------------------------------------

_library = None  # int64 [sgemm, dgemm] addresses of NumPy's OpenBLAS, or zeros for SciPy's


def library() -> np.ndarray:
    """The GEMMs :func:`gemm` calls, as it takes them: int64 ``[sgemm, dgemm]`` addresses in
    NumPy's scipy-openblas64, or zeros for SciPy's BLAS (see the module docstring)."""
    global _library
    if _library is None:
        found = _numpy_openblas()
        _library = np.zeros(2, np.int64)
        if found is not None:
            _library[:] = found
            if not _computes_right(_library):
                _library[:] = 0
    return _library


def _numpy_openblas():
    """(sgemm, dgemm) addresses in the scipy-openblas64 library NumPy was built with and has
    loaded, or None."""
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    except Exception:  # the layout of show_config is not a stable API
        return None
    if blas.get("name") != "scipy-openblas" or "USE64BITINT" not in blas.get(
            "openblas configuration", ""):
        return None
    for lib in _blas_libraries():
        if lib.internal_api != "openblas" or "numpy" not in lib.filepath:
            continue
        try:
            handle = ctypes.CDLL(lib.filepath)
            return tuple(ctypes.cast(getattr(handle, name), ctypes.c_void_p).value
                         for name in ("scipy_sgemm_64_", "scipy_dgemm_64_"))
        except (OSError, AttributeError):
            return None
    return None


def _computes_right(blas) -> bool:
    """A product with an exact known result, in both dtypes and every transposition."""
    a = np.arange(12.0).reshape(3, 4) - 5
    b = np.arange(20.0).reshape(4, 5) % 7 - 3
    expected = a @ b
    for dtype in (np.float32, np.float64):
        for left in (a.astype(dtype), np.asfortranarray(a.astype(dtype))):
            for right in (b.astype(dtype), np.asfortranarray(b.astype(dtype))):
                out = np.full((3, 5), np.nan, dtype)
                with single_threaded():
                    gemm(blas, left, right, out, 0.0)
                if not np.array_equal(out, expected):
                    return False
    return True


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
                    _set_threads(lib, 1)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                for lib, threads in _saved:
                    if threads != 1:
                        _set_threads(lib, threads)


def _set_threads(lib, count):
    """``lib.set_num_threads(count)`` from whichever Python thread runs fastconv. threadpoolctl
    (3.8) lets only one "controlling" thread set a process-wide OpenBLAS pool and silently
    ignores the others, so a call from a second Python thread left BLAS at its full count under
    fastconv's tasks. Its unconditional setter is used where it has one (older versions have no
    such rule); taking and giving up the control around each change instead doubled the cost
    of single_threaded (6.4 -> 13.7 us a call). ``_lock`` orders fastconv's own changes."""
    getattr(lib, "_real_set_num_threads", lib.set_num_threads)(count)

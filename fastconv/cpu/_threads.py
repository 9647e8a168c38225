"""Which Numba threading layer the CPU kernels run on, and what keeps them safe.

Numba runs ``prange`` loops on one of three layers: ``tbb``, ``omp`` (OpenMP) or ``workqueue``.
Only the first two may be entered from several Python threads at once; ``workqueue`` is not
thread-safe, and two threads launching parallel kernels on it at the same time abort the whole
process. So before its first kernel fastconv asks Numba for a thread-safe layer
(``"threadsafe"``: tbb if installed, else omp), unless the user has chosen one
(``NUMBA_THREADING_LAYER`` or ``numba.config.THREADING_LAYER``). If the chosen layer cannot be
loaded (no TBB, no OpenMP runtime), or the layer in use turns out to be ``workqueue`` (the user's
choice, or Numba's layer was started by other code first), fastconv falls back safely: the CPU
algorithms' kernels are registered wrapped in :class:`Serialised`, so that they run one call at
a time under a process-wide lock. Correct from any number of threads, just not concurrent.

Spinning. After a parallel loop, OpenMP's workers spin-wait for the next one before they sleep:
GNU OpenMP's default of 300,000 spins kept each worker busy for about 5.7 ms after every call
on this project's 2-core machine, on the cores that PyTorch's threads need next. Unless the user
has set ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``, fastconv loads Numba's OpenMP runtime with
``GOMP_SPINCOUNT=SPIN_COUNT`` (about 0.26 ms of spinning: the kernels of one call still find
their workers awake, and the workers are asleep soon after the call returns). Numba's OpenMP
layer links the system's libgomp, a copy of its own apart from PyTorch's, which reads the
setting once, when it loads; the variable is restored right after, so no other library sees it.

:func:`start` runs once, when the CPU backend loads (before any kernel can run);
:func:`layer` says what it found. :func:`limited` runs a block on fewer threads (fastconv.torch
passes ``torch.get_num_threads()``).
"""
from __future__ import annotations

import contextlib
import functools
import os
import threading
import types

import numba
import numpy as np
from numba import njit, prange

_LAYER: str | None = None
# Numba's per-thread count behind numba.get_num_threads, defined once its pool is launched (by
# start); a private name, so threads() falls back to the public call without it
_count = None
_SERIAL = threading.RLock()

# GNU OpenMP spin-waits before sleeping (see the module docstring). Measured here, worker CPU
# after one call: 5.7 ms at the default (300,000), 2.0 ms at 100,000, 0.26 ms at 10,000.
SPIN_COUNT = 10_000


@njit(parallel=True, cache=True)  # cached: compiling it cost ~0.1 s of the first call
def _probe(a):
    for i in prange(a.size):
        a[i] = i


def start() -> str:
    """Pick the threading layer (see the module docstring) by launching one tiny kernel; the
    name of the layer in use."""
    global _LAYER
    if _LAYER is not None:
        return _LAYER
    if numba.config.THREADING_LAYER == "default":  # NUMBA_THREADING_LAYER unset: ours to pick
        numba.config.THREADING_LAYER = "threadsafe"
    with _short_spin():
        try:
            _probe(np.empty(2))
        except ValueError:  # Numba: "No threading layer could be loaded"
            numba.config.THREADING_LAYER = "workqueue"
            _probe(np.empty(2))
    _LAYER = numba.threading_layer()
    global _count
    _count = getattr(numba.np.ufunc.parallel, "_get_num_threads", None)
    return _LAYER


@contextlib.contextmanager
def _short_spin():
    """GOMP_SPINCOUNT=SPIN_COUNT in the environment while Numba loads its threading layer,
    unless the user chose a wait policy; the environment as it was afterwards."""
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        yield
        return
    os.environ["GOMP_SPINCOUNT"] = str(SPIN_COUNT)
    try:
        yield
    finally:
        del os.environ["GOMP_SPINCOUNT"]


def layer() -> str | None:
    """The layer in use, or None before the CPU backend has loaded."""
    return _LAYER


def threads() -> int:
    """The threads the CPU kernels of this Python thread run on (after :func:`start`).

    Asked on every call (the plan cache's key): once the pool is up, Numba's own count is read
    directly (0.14 us), without ``numba.get_num_threads``' check that the pool is launched,
    which took 0.9 us of every call."""
    if _count is not None:
        count = _count()
        if count > 0:
            return count
    start()
    return numba.get_num_threads()


def count_of_this_thread():
    """The fastest function that returns :func:`threads` (after :func:`start`): Numba's own
    per-thread count where it has one, else threads itself."""
    start()
    return _count or threads


@contextlib.contextmanager
def limited(count: int):
    """Run the block's CPU kernels on at most ``count`` threads (Numba's count is per Python
    thread, so other threads' calls are not affected); never more than Numba has."""
    before = threads()
    wanted = max(1, min(int(count), numba.config.NUMBA_NUM_THREADS))
    if wanted == before:
        yield
        return
    numba.set_num_threads(wanted)
    try:
        yield
    finally:
        numba.set_num_threads(before)


class _Serial(threading.local):
    """Per Python thread: whether its kernels run as their serial twins (a tiny call's plan is
    running, :func:`on_one_thread`). False in a thread until set there."""
    on = False


_serial = _Serial()


def on_one_thread(plan):
    """``plan`` with its kernels run as their serial twins, on the calling thread alone (a tiny
    call: waking the other threads would cost more than its work). A per-thread flag that
    :class:`ParallelKernel` reads (0.25 us a call with its reset), not Numba's thread count:
    setting and restoring that took 1 us. Inside, ``threads()`` still reports the thread's
    count, so per-thread buffers are sized for it (a tiny call's; untouched buffers take no
    physical memory)."""
    def one_thread_plan(*arrays):
        if _serial.on:  # a plan inside a plan: the outer one resets the flag
            return plan(*arrays)
        _serial.on = True
        try:
            return plan(*arrays)
        finally:
            _serial.on = False
    return one_thread_plan


def parallel_jit(**options):
    """``@njit(parallel=True, **options)``, the kernel compiled twice: as written, and as its
    *serial twin* (``prange`` as ``range``), which runs in its place inside a tiny call's plan
    (:func:`on_one_thread`) and whenever the calling thread's Numba thread count is 1 (the
    user's choice). Entering a parallel loop costs about 2 us even on one thread; calling the
    twin, 0.5 us. The twin runs the same loops in the same order, with the error model of a
    ``prange`` body (``numpy``: a float division by zero gives inf or NaN, as in the parallel
    loop), so its results are bitwise the parallel kernel's wherever tested
    (tests/test_calls.py: every op and CPU algorithm, both directions). The kernels are called
    from Python only (the wrapper is a Python object, which compiled code cannot call).

    The twin is compiled from a copy of the function named ``<name>.serial``: Numba's disk cache
    files a kernel under its qualified name and keys it by signature and bytecode, not by
    ``parallel``, so a twin of the same name would load the parallel machine code, or
    overwrite it."""
    def compile_twice(fn):
        twin = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__,
                                  fn.__closure__)
        twin.__qualname__, twin.__module__ = fn.__qualname__ + ".serial", fn.__module__
        # the error model of a prange body (a float division by zero gives inf or NaN, as
        # the parallel kernel's, rather than raising)
        serial = njit(error_model="numpy", **options)(twin)
        return ParallelKernel(njit(parallel=True, **options)(fn), serial)
    return compile_twice


class ParallelKernel:
    """A parallel Numba kernel and its serial twin (see :func:`parallel_jit`); called like
    either, with the 0.1 us of a look at the serial flag and the thread count on top."""

    __slots__ = ("parallel", "serial", "__wrapped__")

    def __init__(self, parallel, serial):
        self.parallel, self.serial = parallel, serial
        self.__wrapped__ = getattr(parallel, "py_func", parallel)  # NUMBA_DISABLE_JIT: itself

    def __call__(self, *args):
        if _serial.on or (_count is not None and _count() == 1):
            return self.serial(*args)
        return self.parallel(*args)

    def __repr__(self):
        return f"ParallelKernel({self.__wrapped__.__qualname__})"


def thread_safe() -> bool:
    """Whether kernels may run from several threads at once (tbb or omp)."""
    return start() in ("tbb", "omp")


class Serialised:
    """A family's kernels (a module) with every entry point called under one process-wide lock:
    the fallback for the workqueue layer."""

    def __init__(self, kernels):
        self._kernels = kernels

    def __getattr__(self, name):
        entry = getattr(self._kernels, name)
        if not callable(entry):
            return entry

        @functools.wraps(entry)
        def one_at_a_time(*args, **kwargs):
            with _SERIAL:
                return entry(*args, **kwargs)
        return one_at_a_time

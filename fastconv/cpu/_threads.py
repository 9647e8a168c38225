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

:func:`start` runs once, when the CPU backend loads (before any kernel can run);
:func:`layer` says what it found.
"""
from __future__ import annotations

import functools
import threading

import numba
import numpy as np
from numba import njit, prange

_LAYER: str | None = None
_SERIAL = threading.RLock()


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
    try:
        _probe(np.empty(2))
    except ValueError:  # Numba: "No threading layer could be loaded"
        numba.config.THREADING_LAYER = "workqueue"
        _probe(np.empty(2))
    _LAYER = numba.threading_layer()
    return _LAYER


def layer() -> str | None:
    """The layer in use, or None before the CPU backend has loaded."""
    return _LAYER


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

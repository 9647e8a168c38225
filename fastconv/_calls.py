"""The call path every public op shares: a plan per call signature, made once and then reused.

A public op (``fastconv.conv2d``, ...) hands its arrays and its other arguments to :func:`run`
with a function that *makes the plan* of such a call: it checks the arrays, builds the
parameter object (every argument validated), lets the dispatcher pick the algorithm, checks
that the memory the call needs exists, and returns the plan: a function of the arrays alone
that calls the chosen kernels. Plans are kept per *signature*: the op, each array's type,
dtype, shape and strides (and device, for CuPy), every other argument with its type, and what
else decides the plan (the kernels' tunables, by their generation; the CPU threads of the
calling thread; the registry's epoch). A call whose signature was seen goes from that key
straight to the kernels: nothing it could change between calls is left unchecked (an array of
another type, dtype, shape or layout is another signature), and nothing is validated,
dispatched or measured again; what the signature fixes about the arrays is decided when the
plan is made (:func:`preparer`).

A call that raises is never remembered, so bad input raises the same error, before any work,
every time. Arguments that cannot be part of a key (an unhashable value) simply make the plan
afresh. The memory is bounded (:func:`remember`) and shared by all Python threads (dict
operations are atomic; two threads making the same plan at once both make it, harmlessly).
"""
from __future__ import annotations

import numpy as np

from . import config, registry

REMEMBERED = 4096  # plans kept; the memory is cleared when full

PLANS: dict = {}
_SEQUENCES = (tuple, list)
_PLAIN = frozenset((int, float, bool, str, type(None)))  # option types that are their own key

# the calling thread's CPU thread count (a function) once the CPU backend is loaded (lazily)
_thread_count = None


def remember(memory: dict, key, value):
    """``memory[key] = value``, the memory emptied first when it holds ``REMEMBERED`` entries;
    returns value."""
    if len(memory) >= REMEMBERED:
        memory.clear()
    memory[key] = value
    return value


def signature(op, arrays, options) -> tuple:
    """The key of a call's plan (see the module docstring); TypeError where an argument cannot
    be part of one. ``options`` are the op's other arguments, values with their types (``2``,
    ``2.0``, ``True`` and ``np.int64(2)`` differ, as they may to validation), sequences element
    by element.

    Kept short, as it is hashed and compared on every call: the registry's epoch and the
    tunables' generation stand for the tables and values they count, and each array adds a
    group that its first element delimits: ``None``; a NumPy array's dtype, shape and strides;
    another array's type, dtype, shape, strides and device."""
    types = tuple(map(type, options))
    if not _PLAIN.issuperset(types):
        options = _elementwise(options, types)
    key = (op, registry.epoch, config.generation, _thread_count and _thread_count(), types,
           options)
    for a in arrays:
        if a is None:
            key += (None,)
        elif type(a) is np.ndarray:
            key += (a.dtype, a.shape, a.strides)
        else:  # a CuPy array (anything else fails the plan's own check)
            key += (type(a), a.dtype, a.shape, a.strides, a.device.id)
    return key


def _elementwise(options, types):
    """``options`` with each sequence as its elements and their types (a list is no key, and
    a tuple of 2.0 equals one of 2; tuple and list subclasses too: a namedtuple of 2.0 equals
    2's). Where the sequences are is looked up by ``types`` (0.5 us less than asking each
    option)."""
    at = _SEQUENCES_AT.get(types)
    if at is None:
        at = remember(_SEQUENCES_AT, types,
                      tuple([i for i, t in enumerate(types) if issubclass(t, _SEQUENCES)]))
    if not at:  # other types only (NumPy scalars, say): their types tell them apart
        return options
    options = list(options)
    for i in at:
        v = options[i]
        options[i] = (tuple(v), tuple(map(type, v)))
    return tuple(options)


_SEQUENCES_AT: dict = {}  # the types of an op's options -> the positions of its sequences


def run(op, make, arrays, *options):
    """One call of ``op``: its plan's result on ``arrays``. ``make(*arrays, *options)`` makes
    the plan (raising for bad input) when this signature has not been seen."""
    try:
        key = signature(op, arrays, options)
        plan = PLANS.get(key)
    except (TypeError, AttributeError):  # unhashable, or not an array: no key, no memory
        key = plan = None
    if plan is None:
        plan = _made(make, arrays, options)
        if key is not None:
            remember(PLANS, key, plan)
    try:
        return plan(*arrays)
    except MemoryError as e:  # memory that exists but is taken: the allocation failed
        if str(e).startswith(f"{op}:"):
            raise
        raise MemoryError(f"{op}: out of memory: {e}") from e


def _made(make, arrays, options):
    """``make(*arrays, *options)``, made and run on the device of the call's arrays when they
    are CuPy arrays: the kernel cache, the launches, the memory check and every allocation then
    use that device, not whichever one is current (arrays on device 1 with device 0 current).
    NumPy arrays have no device: their plan is make's own."""
    device = next((a.device for a in arrays if type(a).__module__.startswith("cupy")), None)
    if device is None:
        return make(*arrays, *options)
    with device:
        plan = make(*arrays, *options)

    def on_device(*arrays):
        with device:
            return plan(*arrays)
    return on_device


def forget() -> None:
    """Drop every plan (tests that change what a plan depends on outside its key: the
    machine's memory, say)."""
    PLANS.clear()


def cpu_backend_loaded(threads_module) -> None:
    """Called once by the dispatcher when the CPU backend loads: from then on the signature
    includes the calling thread's CPU thread count (per-thread buffers, the tiny-call rule)."""
    global _thread_count
    # Numba's own per-thread count where the backend found it (0.2 us less than threads())
    _thread_count = threads_module.count_of_this_thread()


def quiet(plan):
    """``plan`` raising no NumPy floating-point warnings, as PyTorch raises none: NaN and Inf
    simply propagate (inf * 0 is NaN). Without it, the same call warned or not depending on the
    algorithm (einsum and NumPy's BLAS set the flags NumPy reports; compiled kernels cannot).
    Plans whose algorithm does all its arithmetic in compiled code need no wrapping
    (``Algorithm.quiet``): ``errstate`` costs 2 us a call."""
    def quiet_plan(*arrays):
        with np.errstate(all="ignore"):
            return plan(*arrays)
    return quiet_plan


def array_module(backend):
    if backend == "cuda":
        import cupy

        return cupy
    return np


def shape_of(a):
    return None if a is None else a.shape


def prepare(backend, a, shape=None):
    """``a`` as a C-contiguous array of ``shape`` (a view when ``a`` already is contiguous),
    read-only on the CPU.

    The kernels read their inputs and never write them, and Numba compiles a kernel once per
    combination of argument types, writeable and read-only arrays being different types. Handing
    every input over read-only gives each kernel one compiled version per dtype whichever the
    caller passes (halving the compile time of a fresh process that sees both), and makes a
    kernel that wrote to an input fail to compile."""
    if a is None:
        return None
    if backend != "cpu":
        a = array_module(backend).ascontiguousarray(a)
        return a if shape is None else a.reshape(shape)
    if type(a) is not np.ndarray or not a.flags.c_contiguous:  # (a subclass: its base array)
        a = np.ascontiguousarray(a)
    return read_only(a, shape)


def preparer(backend, a, shape=None):
    """The function a plan hands its arrays like ``a`` to the kernels through:
    :func:`prepare`, with what the plan's signature fixes decided once. Every array a plan
    sees has the type, dtype, shape and strides of the one it was made with, so one that is a
    contiguous NumPy array now always is, and needs only its read-only view (0.2 us, against
    0.7 for the whole of prepare)."""
    if a is None:
        return _none
    if backend == "cpu" and type(a) is np.ndarray and a.flags.c_contiguous:
        if shape is None or tuple(shape) == a.shape:
            return read_only
        shape = tuple(shape)
        return lambda a: read_only(a, shape)
    return lambda a: prepare(backend, a, shape)


def read_only(a, shape=None):
    """A read-only view of the contiguous NumPy array ``a``, of ``shape`` when given (a new
    view either way: the caller's array keeps its flags)."""
    a = a.view() if shape is None else a.reshape(shape)
    a.setflags(False)  # write=False (positional: the keyword costs 0.2 us more)
    return a


def _none(a):
    return None

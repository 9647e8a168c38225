"""Which kernel serves a call: the backends' loading, the ``auto`` rule, ``algorithms`` and
``explain``, and the kernels a call's plan runs (:func:`kernels_for`).

The records live in :mod:`fastconv.registry`; backends register their algorithms here when
first used, so that ``import fastconv`` never pays for importing Numba or CuPy.
"""
from __future__ import annotations

import threading

from . import _memory, config, registry
from ._validate import check_dtype_name
from .registry import OPS, Algorithm

BACKENDS = ("cpu", "cuda")
_LOADED: set[str] = set()
_LOADING = threading.Lock()

REFERENCE_SUMMARY = "the NumPy reference (float64, strided windows + einsum): the oracle, not fast"


def _register_reference(backend, kernels_of):
    from . import reference

    summary = REFERENCE_SUMMARY + (", on host copies" if backend != "cpu" else "")
    for family in reference.FAMILIES:
        registry.register(Algorithm("reference", backend, family, kernels_of(family), summary,
                                    workspace_bytes=reference.FAMILIES[family].workspace_bytes,
                                    index_bits=lambda op, p: 64))  # NumPy indexes with intp


def _load_cpu():
    from . import _calls, cpu, reference
    from .cpu import _threads

    safe = _threads.thread_safe()  # picks the Numba threading layer, before any kernel runs
    for algorithm in cpu.algorithms():
        registry.register(algorithm if safe else algorithm._replace(
            kernels=_threads.Serialised(algorithm.kernels)))
    registry.set_auto_rule("cpu", cpu.auto_rule)
    _register_reference("cpu", reference.FAMILIES.get)
    _calls.cpu_backend_loaded(_threads)


def _load_cuda():
    from . import cuda
    from .reference import on_host

    for algorithm in cuda.algorithms():
        registry.register(algorithm)
    registry.set_auto_rule("cuda", cuda.auto_rule)
    _register_reference("cuda", on_host.kernels)


_LOADERS = {"cpu": _load_cpu, "cuda": _load_cuda}


def _family(op: str) -> str:
    if not isinstance(op, str) or op not in OPS:
        raise ValueError(f"unknown op {op!r}; expected one of {sorted(OPS)}")
    return OPS[op].family


def _table(op: str, backend: str) -> dict[str, Algorithm]:
    family = _family(op)
    if backend not in BACKENDS:
        raise ValueError(f"{op}: backend must be one of {BACKENDS}, got {backend!r}")
    if backend not in _LOADED:
        with _LOADING:  # two threads' first calls must not see a half-filled registry
            if backend not in _LOADED:
                _LOADERS[backend]()
                _LOADED.add(backend)
    return registry.ALGORITHMS.get((family, backend), {})


def algorithms(op: str, backend: str = "cpu") -> list[str]:
    """Names of the algorithms available for ``op`` on ``backend`` (``"cpu"`` or ``"cuda"``)."""
    return list(_table(op, backend))


def _default_rule(op, p, candidates):
    fast = [name for name in candidates if name != "reference"]
    if fast:
        return fast[0], f"{fast[0]!r} is the first registered algorithm that can serve this call"
    return "reference", "the NumPy reference is the only algorithm that can serve this call here"


def decide(op: str, backend: str, algo, p):
    """The algorithm for one call, the reason for it, and what was ruled out.

    Returns ``(algorithm, reason, candidates, rejected)``: ``candidates`` names every algorithm
    that could serve the call, ``rejected`` maps the others to why not. A forced ``algo`` that
    is unknown or cannot serve the call raises ``ValueError`` naming those that can.
    """
    table = _table(op, backend)
    if not isinstance(algo, str):
        raise TypeError(f"{op}: algo must be a string ('auto' or an algorithm name), got {algo!r}")
    verdicts = {name: a.why_not(op, p) for name, a in table.items()}
    candidates = [name for name, why in verdicts.items() if why is None]
    rejected = {name: why for name, why in verdicts.items() if why is not None}
    if not table:
        raise ValueError(f"{op}: no algorithm is available on the {backend!r} backend in this "
                         f"version of fastconv")
    if algo != "auto":
        if algo not in table:
            raise ValueError(f"{op}: unknown algorithm algo={algo!r} on the {backend!r} backend; "
                             f"expected 'auto' or one of {list(table)}")
        if verdicts[algo] is not None:
            raise ValueError(f"{op}: algorithm algo={algo!r} cannot serve this call: "
                             f"{verdicts[algo]}; algorithms that can: {candidates}")
        return table[algo], f"forced by algo={algo!r}", candidates, rejected
    if not candidates:
        raise ValueError(f"{op}: no algorithm on the {backend!r} backend can serve this call: "
                         + "; ".join(f"{n}: {why}" for n, why in rejected.items()))
    rule = registry.AUTO_RULES.get(backend)
    name, reason = (rule and rule(op, p, candidates)) or _default_rule(op, p, candidates)
    return table[name], reason, candidates, rejected


def select(op: str, backend: str, algo, p) -> Algorithm:
    """The algorithm that runs one call (see :func:`decide`)."""
    return decide(op, backend, algo, p)[0]


def kernels_for(op: str, backend: str, algo, p, inputs):
    """The algorithm that runs one call, once the memory the call needs is known to exist: its
    outputs, the algorithm's workspace, and the contiguous copies that ``_calls.prepare`` makes
    of non-contiguous inputs. Made once per call signature (``fastconv._calls``)."""
    algorithm = select(op, backend, algo, p)
    itemsize = inputs[0].dtype.itemsize
    copies = sum(a.nbytes for a in inputs if a is not None and not a.flags.c_contiguous)
    _memory.check_memory(op, backend, {"outputs": p.output_bytes(op, itemsize),
                                       "workspace": workspace_bytes(algorithm, op, p, itemsize),
                                       "input copies": copies})
    return algorithm


def finish(plan, algorithm: Algorithm, op: str, p, itemsize: int, arithmetic_here=False):
    """A plan as it runs: under ``numpy.errstate`` unless the algorithm is quiet and the plan
    itself does no array arithmetic (``arithmetic_here``), and on one CPU thread when the call
    is too small to share (``config.CPU_ONE_THREAD_BELOW``): starting the threads of a
    parallel loop costs 2-4 us, more than such a call's whole work."""
    from . import _calls

    if arithmetic_here or not algorithm.quiet:
        plan = _calls.quiet(plan)
    if algorithm.backend == "cpu" and work(op, p, itemsize) < config.CPU_ONE_THREAD_BELOW:
        from .cpu import _threads

        plan = _threads.on_one_thread(plan)
    return plan


def work(op: str, p, itemsize: int) -> int:
    """A call's size for the one-thread rule: its floating-point operations plus the elements
    it reads and writes."""
    return p.flops(op) + p.min_bytes(op, itemsize) // itemsize


def workspace_bytes(algorithm: Algorithm, op: str, p, itemsize: int) -> int:
    """Extra memory of one call beyond its inputs and outputs: the algorithm's workspace, plus
    what the public op itself allocates on the way (``p.own_bytes``)."""
    return int(algorithm.workspace_bytes(op, p, itemsize)) + p.own_bytes(op, itemsize)


def explain(op: str, *shapes, backend: str = "cpu", dtype="float32", algo="auto", **kwargs):
    """Describe a call without running it.

    ``shapes`` are the shapes of the op's array arguments in order (``None`` for an optional
    one not given), ``kwargs`` the op's own keyword arguments; array arguments given by keyword
    (``indices=``) are shapes too. Returns a dict with ``algo``, ``reason``, ``candidates``,
    ``rejected``, ``flops``, ``bytes``, ``workspace_bytes``, ``intensity``, ``index_bits`` and
    ``output_shapes``.

    >>> explain("conv2d", (8, 64, 56, 56), (64, 64, 3, 3), padding=1)["flops"]
    1849688064
    """
    family = _family(op)
    array_names = OPS[op].arrays
    if len(shapes) > len(array_names):
        raise TypeError(f"explain: {op} takes the shapes of at most {len(array_names)} arrays "
                        f"{array_names}, got {len(shapes)}")
    for name in array_names:
        if name in kwargs:
            kwargs[f"{name}_shape"] = kwargs.pop(name)
    dt = check_dtype_name(op, dtype)
    p = OPS[op].params(*shapes, **kwargs)
    algorithm, reason, candidates, rejected = decide(op, backend, algo, p)
    flops = p.flops(op)
    moved = p.min_bytes(op, dt.itemsize)
    return {
        "op": op,
        "family": family,
        "backend": backend,
        "dtype": dt.name,
        "algo": algorithm.name,
        "reason": reason,
        "summary": algorithm.summary,
        "candidates": candidates,
        "rejected": rejected,
        "flops": flops,
        "bytes": moved,
        "workspace_bytes": workspace_bytes(algorithm, op, p, dt.itemsize),
        "intensity": flops / moved if moved else 0.0,
        "index_bits": int(algorithm.index_bits(op, p)),
        "output_shapes": p.output_shapes(op),
        "params": p,
    }

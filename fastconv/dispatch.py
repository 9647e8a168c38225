"""Which kernel serves a call: the algorithm registry, the ``auto`` rule, ``algorithms`` and
``explain``.

Ops come in families that share their kernels: every convolution op (conv1d, conv2d,
conv_transpose2d and their backward twins) is served by a *conv* algorithm through three entry
points, all pooling ops by a *pool* algorithm, batch norm by a *batch_norm* algorithm. An
:class:`Algorithm` is a named module of one family's entry points on one backend, plus a rule
saying which calls it can serve. Backends register their algorithms when first used, so that
``import fastconv`` never pays for importing Numba or CuPy.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from math import prod
from typing import Callable

from . import costs, params

BACKENDS = ("cpu", "cuda")

# op name -> (family, names of its array arguments in order)
OPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "conv2d": ("conv", ("x", "weight", "bias")),
    "conv1d": ("conv", ("x", "weight", "bias")),
    "conv_transpose2d": ("conv", ("x", "weight", "bias")),
    "conv2d_backward": ("conv", ("grad_y", "x", "weight")),
    "conv1d_backward": ("conv", ("grad_y", "x", "weight")),
    "conv_transpose2d_backward": ("conv", ("grad_y", "x", "weight")),
    "max_pool2d": ("pool", ("x",)),
    "avg_pool2d": ("pool", ("x",)),
    "adaptive_avg_pool2d": ("pool", ("x",)),
    "max_pool2d_backward": ("pool", ("grad_y", "x", "indices")),
    "avg_pool2d_backward": ("pool", ("grad_y", "x")),
    "adaptive_avg_pool2d_backward": ("pool", ("grad_y", "x")),
    "batch_norm": ("batch_norm", ("x", "running_mean", "running_var", "weight", "bias")),
    "batch_norm_backward": ("batch_norm", ("grad_y", "x", "weight", "running_mean",
                                           "running_var")),
}
INDEX_LIMIT = 2**31 - 1  # largest element count that 32-bit signed index arithmetic can address


def _never(op, p):
    return None


def _index_bits_by_size(op, p) -> int:
    """32-bit indices while every array (padded input included) stays below 2**31 elements."""
    sizes = [prod(getattr(p, name)) for name in ("x_shape", "w_shape", "y_shape")
             if hasattr(p, name)]
    if hasattr(p, "padded_size"):
        sizes.append(prod(p.x_shape[:2]) * prod(p.padded_size))
    return 64 if max(sizes) > INDEX_LIMIT else 32


@dataclass(frozen=True)
class Algorithm:
    """One algorithm of one family on one backend.

    ``kernels`` holds the family's entry points (see ``fastconv.reference`` for the list).
    ``why_not(op, p)`` returns ``None`` when the algorithm can serve the call, otherwise a short
    reason. ``workspace_bytes(op, p, itemsize)`` is the extra memory it allocates beyond its
    inputs and outputs; ``index_bits(op, p)`` the width of its index arithmetic.
    """

    name: str
    backend: str
    family: str
    kernels: object  # a module (or any namespace) holding the family's entry points
    summary: str
    why_not: Callable = _never
    workspace_bytes: Callable = field(default=lambda op, p, itemsize: 0)
    index_bits: Callable = _index_bits_by_size


_REGISTRY: dict[tuple[str, str], dict[str, Algorithm]] = {}
_AUTO_RULES: dict[str, Callable] = {}
_LOADED: set[str] = set()
_LOADING = threading.Lock()


def register(algorithm: Algorithm) -> None:
    """Add an algorithm; a later registration of the same name replaces the earlier one."""
    _REGISTRY.setdefault((algorithm.family, algorithm.backend), {})[algorithm.name] = algorithm


def unregister(family: str, backend: str, name: str) -> None:
    _REGISTRY.get((family, backend), {}).pop(name, None)


def set_auto_rule(backend: str, rule: Callable) -> None:
    """``rule(op, p, candidates) -> (name, reason)`` picks among the algorithms that can serve a
    call on ``backend``; ``candidates`` are their names in registration order. A rule returns
    None to leave a call to the default: the first candidate that is not the reference."""
    _AUTO_RULES[backend] = rule


REFERENCE_SUMMARY = "the NumPy reference (float64, strided windows + einsum): the oracle, not fast"


def _register_reference(backend, kernels_of):
    from . import reference

    summary = REFERENCE_SUMMARY + (", on host copies" if backend != "cpu" else "")
    for family in reference.FAMILIES:
        register(Algorithm("reference", backend, family, kernels_of(family), summary,
                           workspace_bytes=reference.workspace_bytes,
                           index_bits=lambda op, p: 64))  # NumPy indexes with intp


def _load_cpu():
    from . import cpu, reference
    from .cpu import _threads

    safe = _threads.thread_safe()  # picks the Numba threading layer, before any kernel runs
    for algorithm in cpu.algorithms():
        register(algorithm if safe else replace(algorithm,
                                                kernels=_threads.Serialised(algorithm.kernels)))
    set_auto_rule("cpu", cpu.choose)
    _register_reference("cpu", reference.FAMILIES.get)


def _load_cuda():
    from . import cuda
    from .cuda import reference as host_reference

    for algorithm in cuda.algorithms():
        register(algorithm)
    set_auto_rule("cuda", cuda.choose)
    _register_reference("cuda", host_reference.kernels)


_LOADERS = {"cpu": _load_cpu, "cuda": _load_cuda}


def _family(op: str) -> str:
    if not isinstance(op, str) or op not in OPS:
        raise ValueError(f"unknown op {op!r}; expected one of {sorted(OPS)}")
    return OPS[op][0]


def _table(op: str, backend: str) -> dict[str, Algorithm]:
    family = _family(op)
    if backend not in BACKENDS:
        raise ValueError(f"{op}: backend must be one of {BACKENDS}, got {backend!r}")
    if backend not in _LOADED:
        with _LOADING:  # two threads' first calls must not see a half-filled registry
            if backend not in _LOADED:
                _LOADERS[backend]()
                _LOADED.add(backend)
    return _REGISTRY.get((family, backend), {})


def algorithms(op: str, backend: str = "cpu") -> list[str]:
    """Names of the algorithms available for ``op`` on ``backend`` (``"cpu"`` or ``"cuda"``)."""
    return list(_table(op, backend))


def _default_rule(op, p, candidates):
    fast = [name for name in candidates if name != "reference"]
    if fast:
        return fast[0], f"{fast[0]!r} is the first registered algorithm that can serve this call"
    return "reference", "the NumPy reference is the only algorithm that can serve this call here"


def choose(op: str, backend: str, algo, p):
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
    rule = _AUTO_RULES.get(backend)
    name, reason = (rule and rule(op, p, candidates)) or _default_rule(op, p, candidates)
    return table[name], reason, candidates, rejected


def select(op: str, backend: str, algo, p) -> Algorithm:
    """The algorithm that runs one call (see :func:`choose`)."""
    return choose(op, backend, algo, p)[0]


def workspace_bytes(algorithm: Algorithm, op: str, p, itemsize: int) -> int:
    """Extra memory of one call beyond its inputs and outputs: the algorithm's workspace, plus,
    for max_pool2d_backward without the forward's indices, the maxima and indices that the
    public op recomputes first (``fastconv.functional.max_pool2d_backward``)."""
    extra = 0
    if op == "max_pool2d_backward" and not p.saved_indices:
        extra = prod(p.y_shape) * (itemsize + 8)  # y and int64 indices
    return int(algorithm.workspace_bytes(op, p, itemsize)) + extra


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
    array_names = OPS[op][1]
    if len(shapes) > len(array_names):
        raise TypeError(f"explain: {op} takes the shapes of at most {len(array_names)} arrays "
                        f"{array_names}, got {len(shapes)}")
    for name in array_names:
        if name in kwargs:
            kwargs[f"{name}_shape"] = kwargs.pop(name)
    dt = params.check_dtype_name(op, dtype)
    p = getattr(params, op)(*shapes, **kwargs)
    algorithm, reason, candidates, rejected = choose(op, backend, algo, p)
    flops = costs.flops(op, p)
    moved = costs.min_bytes(op, p, dt.itemsize)
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
        "output_shapes": output_shapes(op, p),
        "params": p,
    }


def output_shapes(op: str, p) -> tuple:
    """Shapes of the arrays ``op`` returns, in the caller's layout."""
    if isinstance(p, params.ConvParams):
        x_t, y_t = (p.y_shape, p.x_shape) if p.transposed else (p.x_shape, p.y_shape)
        if not op.endswith("_backward"):
            return (p.user_shape(y_t),)
        w = p.w_shape[:2] + p.w_shape[3:] if p.spatial_dims == 1 else p.w_shape
        channels = (y_t[1],)
        return tuple(s if want else None for s, want in
                     zip((p.user_shape(x_t), w, channels), p.output_mask))
    if isinstance(p, params.BatchNormParams):
        if not op.endswith("_backward"):
            return (p.x_shape,)
        return tuple(s if want else None for s, want in
                     zip((p.x_shape, (p.channels,), (p.channels,)), p.output_mask))
    if op.endswith("_backward"):
        return (p.user_shape(p.x_shape),)
    y = p.user_shape(p.y_shape)
    return (y, y) if getattr(p, "return_indices", False) else (y,)

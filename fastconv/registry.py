"""The ops and the algorithms that serve them: records and tables, nothing else (a leaf module:
the front end, the backends and the dispatcher import it; it imports none of them).

Ops come in families that share their kernels: every convolution op (conv1d, conv2d,
conv_transpose2d and their backward twins) is served by a *conv* algorithm through the same
entry points, every pooling op by a *pool* algorithm, batch norm by a *batch_norm* algorithm.
Each front-end module (``fastconv.conv``, ``fastconv.pool``, ``fastconv.batchnorm``) describes
its ops with :func:`add_op`; each backend describes its algorithms with :class:`Algorithm`
records that the dispatcher registers (:func:`register`) when the backend is first used.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

INDEX_LIMIT = 2**31 - 1  # largest element count that 32-bit signed index arithmetic can address


def index_bits(*sizes) -> int:
    """32 while every element count given stays below 2**31, else 64."""
    return 64 if max(sizes, default=0) > INDEX_LIMIT else 32


class Op(NamedTuple):
    """A public op: its family, the names of its array arguments in order, and the builder of
    its parameter object (the op's signature with each array replaced by its shape)."""

    name: str
    family: str
    arrays: tuple
    params: Callable


OPS: dict[str, Op] = {}


def add_op(name: str, family: str, arrays: tuple, params: Callable) -> None:
    OPS[name] = Op(name, family, tuple(arrays), params)


def _no_objection(op, p):
    """The default applicability rule: the algorithm serves every call of its family."""
    return None


def _no_workspace(op, p, itemsize):
    return 0


def _by_size(op, p) -> int:
    """32-bit indices while every array of the call stays below 2**31 elements."""
    return index_bits(*p.sizes())


class Algorithm(NamedTuple):
    """One algorithm of one family on one backend.

    ``kernels`` holds the family's entry points (see ``fastconv.reference`` for the list).
    ``why_not(op, p)`` returns ``None`` when the algorithm can serve the call, otherwise a short
    reason. ``workspace_bytes(op, p, itemsize)`` is the extra memory it allocates beyond its
    inputs and outputs; ``index_bits(op, p)`` the width of its index arithmetic. ``quiet``:
    its arithmetic is all compiled code, which raises no NumPy floating-point warnings, so a
    call needs no ``numpy.errstate`` around it.
    """

    name: str
    backend: str
    family: str
    kernels: object  # a module (or any namespace) holding the family's entry points
    summary: str
    why_not: Callable = _no_objection
    workspace_bytes: Callable = _no_workspace
    index_bits: Callable = _by_size
    quiet: bool = False


ALGORITHMS: dict[tuple[str, str], dict[str, Algorithm]] = {}  # (family, backend) -> by name
AUTO_RULES: dict[str, Callable] = {}
epoch = 0  # changes with every change of the tables: the plans made before it are stale


def _changed():
    global epoch
    epoch += 1


def register(algorithm: Algorithm) -> None:
    """Add an algorithm; a later registration of the same name replaces the earlier one."""
    ALGORITHMS.setdefault((algorithm.family, algorithm.backend), {})[algorithm.name] = algorithm
    _changed()


def unregister(family: str, backend: str, name: str) -> None:
    ALGORITHMS.get((family, backend), {}).pop(name, None)
    _changed()


def set_auto_rule(backend: str, rule: Callable) -> None:
    """``rule(op, p, candidates) -> (name, reason)`` picks among the algorithms that can serve a
    call on ``backend``; ``candidates`` are their names in registration order. A rule returns
    None to leave a call to the default: the first candidate that is not the reference."""
    AUTO_RULES[backend] = rule
    _changed()

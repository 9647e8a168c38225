"""The bad-input battery: every public op, called with every odd input there is.

Hypothesis draws a valid call of an op (the strategies of ``grids``), then one change to it from
:data:`CHANGES`: none, an empty batch, an unbatched input, NaN/Inf in x, float32, non-contiguous
or read-only arrays, numpy ints as arguments (all still valid), or an array of the wrong rank,
size, dtype or kind, a mismatched dtype, a Python scalar or list in place of an array, a bad
int, flag, float, mask or algorithm argument (zero, negative, huge, of the wrong type or
length). The call then runs on fastconv and on PyTorch, and :func:`judge` holds fastconv to:

* it returns exactly when PyTorch returns, the same results within the dtype's tolerance
  (NaN in the same places, Inf equal), or raises ``ValueError``/``TypeError`` (``MemoryError``
  for sizes no machine holds) whose message starts with the op and names an argument;
* where PyTorch accepts what fastconv refuses, the difference is one the API contract makes
  (:data:`STRICTER`): fastconv takes only float32/float64, only bools for flags, ints up to
  2**31 - 1, and refuses a pooling window that covers only padding; a convolution whose padded
  input (copied by every algorithm) does not fit in memory raises MemoryError;
* nothing else escapes (no SystemError, IndexError, OverflowError, no crash), and no input is
  modified, except the running statistics that batch_norm(training=True) updates.

The number of distinct calls tried is printed at the end of the run (``conftest.py``).
"""
from __future__ import annotations

import inspect
import re
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv.testing import error, tolerance

import grids

torch = pytest.importorskip("torch")
from fastconv.testing import torch_op  # noqa: E402  (needs torch)

STRATEGIES = {
    "conv2d": grids.conv2d_cases, "conv1d": grids.conv1d_cases,
    "conv_transpose2d": grids.conv_transpose2d_cases, "max_pool2d": grids.max_pool2d_cases,
    "avg_pool2d": grids.avg_pool2d_cases, "adaptive_avg_pool2d": grids.adaptive_avg_pool2d_cases,
    "batch_norm": grids.batch_norm_cases,
}
OPS = [op for fwd in STRATEGIES for op in (fwd, fwd + "_backward")]

# Every distinct call tried in this process, (op, change, a description of the call), and how
# it ended: "returned" (as PyTorch), "raised" (as PyTorch did) or "stricter: <why>" (PyTorch
# returned, the API contract refuses).
TRIED: dict[tuple[str, str, str], str] = {}

INT_ARGS = ("stride", "padding", "dilation", "groups", "kernel_size", "output_padding",
            "output_size", "divisor_override")
FLAG_ARGS = ("ceil_mode", "return_indices", "count_include_pad", "training")
REAL_ARGS = ("momentum", "eps")
BAD_INTS = (0, -1, -(2**31), 2**31 - 1, 2**31, 2**40, 2**63, 1.5, True, "2", None, (), (1,),
            (1, 2, 3), (0, 1), (2, -1), [2, 2], (1.0, 1), np.int64(2), np.array([1, 1]))
BAD_FLAGS = (None, 0, 1, "yes", 1.0, np.bool_(True))
BAD_REALS = (-1.0, 0.0, float("nan"), float("inf"), "0.1", None, 2, True, np.float32(0.5))
BAD_DTYPES = (np.bool_, np.int8, np.int32, np.int64, np.uint8, np.float16, np.complex64,
              np.complex128, object)
NOT_ARRAYS = ("list", "scalar", "none", "string", "tuple", "0-d")
EXAMPLES = 50  # drawn calls per (op, change)


# --------------------------------------------------------------------------------------------
# Drawing one call
# --------------------------------------------------------------------------------------------
def _array_names(op):
    """The op's array arguments, in the order its positional arguments take them."""
    return fastconv.registry.OPS[op].arrays


def _positional_names(op):
    return [n for n, p in inspect.signature(getattr(fastconv, op)).parameters.items()
            if p.kind == p.POSITIONAL_OR_KEYWORD]


def _present(args):
    return [i for i, a in enumerate(args) if isinstance(a, np.ndarray)]


@st.composite
def calls(draw, op, change):
    """``(op, args, kwargs, change)``: a valid call of ``op`` drawn, then ``change`` made."""
    fwd = op.removesuffix("_backward")
    case = draw(STRATEGIES[fwd]())
    if change == "empty-batch":
        case = replace(case, shapes=((0,) + case.shapes[0][1:],) + case.shapes[1:])
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    args = grids.forward_args(case, rng)
    kwargs = dict(case.kwargs)
    if change == "nonfinite":
        x = args[0].copy()
        spots = rng.choice(x.size, size=min(3, x.size), replace=False)
        x.reshape(-1)[spots] = (np.nan, np.inf, -np.inf)[:len(spots)]
        args[0] = x
    if op.endswith("_backward"):
        args, kwargs = grids.backward_args(case, args, rng)
        args = list(args)
        if op == "max_pool2d_backward" and (change == "bad-indices" or draw(st.booleans())):
            kwargs["indices"] = fastconv.max_pool2d(args[1], **dict(kwargs, return_indices=True))[1]
    if op == "max_pool2d":
        kwargs["return_indices"] = draw(st.booleans())
    args, kwargs = CHANGE[change](draw, op, args, kwargs, rng)
    return op, args, kwargs, change


def _keep(draw, op, args, kwargs, rng):
    return args, kwargs


def _float32(draw, op, args, kwargs, rng):
    return [a.astype(np.float32) if isinstance(a, np.ndarray) else a for a in args], kwargs


def _non_contiguous(draw, op, args, kwargs, rng):
    """Every array as a view that steps backwards over every other element of a larger one
    (negative strides), holding the same values."""
    def strided(a):
        if a.ndim == 0:
            return a
        view = np.repeat(a[..., ::-1], 2, axis=-1)[..., ::-2]
        assert view.strides[-1] < 0 and np.array_equal(view, a, equal_nan=True)
        return view
    return [strided(a) if isinstance(a, np.ndarray) else a for a in args], kwargs


def _read_only(draw, op, args, kwargs, rng):
    out = []
    for i, a in enumerate(args):
        if isinstance(a, np.ndarray):
            a = a.copy()
            # batch_norm(training=True) updates its running statistics: read-only ones are an
            # error there (fastconv's), so they stay writeable in this valid variant
            a.flags.writeable = op == "batch_norm" and kwargs.get("training") and i in (1, 2)
        out.append(a)
    return out, kwargs


def _unbatched(draw, op, args, kwargs, rng):
    """Drop the batch dimension of x (and grad_y, indices) when it is 1; batch norm has none."""
    if op.startswith("batch_norm") or args[0].shape[0] != 1:
        return args, kwargs
    batched = [0, 1] if op.endswith("_backward") else [0]  # (grad_y,) x
    args = [a[0] if i in batched else a for i, a in enumerate(args)]
    if "indices" in kwargs:
        kwargs = dict(kwargs, indices=kwargs["indices"][0])
    return args, kwargs


def _numpy_ints(draw, op, args, kwargs, rng):
    """Int arguments given as NumPy ints (as in ``stride=np.int64(2)``)."""
    def npint(v):
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
            return np.int64(v)
        if isinstance(v, tuple):
            return tuple(npint(e) for e in v)
        return v
    return args, {k: npint(v) if k in INT_ARGS else v for k, v in kwargs.items()}


def _replace_an_array(draw, args, make, at_least=1):
    """args with one of its arrays (drawn) replaced by ``make(array)``; as they are when there
    are fewer than ``at_least`` arrays."""
    present = _present(args)
    if len(present) < at_least:
        return args
    i = draw(st.sampled_from(present))
    args = list(args)
    args[i] = make(args[i])
    return args


def _wrong_rank(draw, op, args, kwargs, rng):
    def other_rank(a):
        ndim = max(0, a.ndim + draw(st.sampled_from((-3, -2, -1, 1, 2))))
        return rng.standard_normal(draw(st.lists(st.integers(1, 4), min_size=ndim,
                                                 max_size=ndim)))
    return _replace_an_array(draw, args, other_rank), kwargs


def _wrong_size(draw, op, args, kwargs, rng):
    """One dimension of one array changed: by one either way, to zero, or doubled. Channel
    counts then no longer match weights, groups, biases or statistics, gradients no longer
    match outputs (or, for a spatial size, the call may well stay valid)."""
    def other_size(a):
        if a.ndim == 0:
            return a
        shape = list(a.shape)
        axis = draw(st.integers(0, len(shape) - 1))
        shape[axis] = max(0, draw(st.sampled_from((shape[axis] - 1, shape[axis] + 1, 0,
                                                   2 * shape[axis]))))
        return rng.standard_normal(shape)
    return _replace_an_array(draw, args, other_size), kwargs


def _bad_dtype(draw, op, args, kwargs, rng):
    return _replace_an_array(draw, args, lambda a: a.astype(draw(st.sampled_from(BAD_DTYPES)))), \
        kwargs


def _mixed_dtypes(draw, op, args, kwargs, rng):
    return _replace_an_array(draw, args, lambda a: a.astype(np.float32), at_least=2), kwargs


def _not_an_array(draw, op, args, kwargs, rng):
    def not_an_array(a):
        kind = draw(st.sampled_from(NOT_ARRAYS))
        return {"list": a.tolist(), "scalar": 1.5, "none": None, "string": "x",
                "tuple": tuple(a.reshape(-1).tolist()), "0-d": np.float64(2.0)}[kind]
    return _replace_an_array(draw, args, not_an_array), kwargs


def _set_an_argument(draw, op, kwargs, names, values):
    """kwargs with one of the op's arguments in ``names`` (drawn) set to one of ``values``."""
    names = [n for n in names if n in kwargs or n in _positional_names(op)]
    if not names:
        return kwargs
    return dict(kwargs, **{draw(st.sampled_from(names)): draw(st.sampled_from(values))})


def _bad_int(draw, op, args, kwargs, rng):
    return args, _set_an_argument(draw, op, kwargs, INT_ARGS, BAD_INTS)


def _bad_flag(draw, op, args, kwargs, rng):
    return args, _set_an_argument(draw, op, kwargs, FLAG_ARGS, BAD_FLAGS)


def _bad_real(draw, op, args, kwargs, rng):
    return args, _set_an_argument(draw, op, kwargs, REAL_ARGS, BAD_REALS)


def _bad_mask(draw, op, args, kwargs, rng):
    if "output_mask" not in inspect.signature(getattr(fastconv, op)).parameters:
        return args, kwargs
    mask = draw(st.sampled_from(((True,), "all", (1, 0, 1), None, (True, True, True, True),
                                 (False, False, False), (True, False, True), [False, True, True])))
    return args, dict(kwargs, output_mask=mask)


def _bad_algo(draw, op, args, kwargs, rng):
    return args, dict(kwargs, algo=draw(st.sampled_from(("nope", None, 3, "", "AUTO",
                                                         "reference", "depthwise"))))


def _bad_indices(draw, op, args, kwargs, rng):
    if op != "max_pool2d_backward" or "indices" not in kwargs:
        return args, kwargs
    idx = kwargs["indices"]
    bad = draw(st.sampled_from(("int32", "shape", "negative", "past-end", "list", "float")))
    idx = {"int32": lambda: idx.astype(np.int32),
           "shape": lambda: np.zeros(idx.shape[:-1] + (idx.shape[-1] + 1,), np.int64),
           "negative": lambda: np.full(idx.shape, -1, np.int64),
           "past-end": lambda: np.full(idx.shape, args[1].shape[-1] * args[1].shape[-2],
                                       np.int64),
           "list": lambda: idx.tolist(),
           "float": lambda: idx.astype(np.float64)}[bad]()
    return args, dict(kwargs, indices=idx)


CHANGE = {
    "none": _keep, "empty-batch": _keep, "nonfinite": _keep, "float32": _float32,
    "non-contiguous": _non_contiguous, "read-only": _read_only, "unbatched": _unbatched,
    "numpy-ints": _numpy_ints,
    "wrong-rank": _wrong_rank, "wrong-size": _wrong_size, "bad-dtype": _bad_dtype,
    "mixed-dtypes": _mixed_dtypes, "not-an-array": _not_an_array, "bad-int": _bad_int,
    "bad-flag": _bad_flag, "bad-real": _bad_real, "bad-mask": _bad_mask, "bad-algo": _bad_algo,
    "bad-indices": _bad_indices,
}
CHANGES = tuple(CHANGE)


def applies(op, change):
    """Whether ``change`` means anything for ``op`` (a flag change needs a flag argument...)."""
    names = set(inspect.signature(getattr(fastconv, op)).parameters)
    return {"bad-int": bool(names & set(INT_ARGS)), "bad-flag": bool(names & set(FLAG_ARGS)),
            "bad-real": bool(names & set(REAL_ARGS)), "bad-mask": "output_mask" in names,
            "bad-indices": op == "max_pool2d_backward",
            "unbatched": not op.startswith("batch_norm"),
            "numpy-ints": bool(names & set(INT_ARGS)),
            "mixed-dtypes": len(_array_names(op)) > 1}.get(change, True)


CALLS = [(op, change) for op in OPS for change in CHANGES if applies(op, change)]


# --------------------------------------------------------------------------------------------
# Judging one call
# --------------------------------------------------------------------------------------------
def _describe(args, kwargs):
    def one(a):
        if isinstance(a, np.ndarray):
            flags = "" if a.flags.c_contiguous else ",strided"
            flags += "" if a.flags.writeable else ",ro"
            finite = "" if a.dtype.kind != "f" or np.isfinite(a).all() else ",nonfinite"
            return f"{a.dtype}{a.shape}{flags}{finite}"
        return f"{type(a).__name__}:{a!r}"[:60]
    return "; ".join([one(a) for a in args] + [f"{k}={one(v)}" for k, v in kwargs.items()])


def _stricter(op, change, message):
    """Why fastconv may refuse a call that PyTorch accepts (the API contract), or None."""
    if change in ("bad-dtype", "float32", "mixed-dtypes") and "dtype" in message:
        return "float32 and float64 only"
    if change == "bad-flag" and "must be True or False" in message:
        return "flags must be bools"
    if change in ("bad-int", "numpy-ints") and ("2**31 - 1" in message or
                                               "must be an int" in message):
        return "ints up to 2**31 - 1, of an int type"
    if change == "bad-real" and ("finite real number" in message or "eps must be" in message):
        return "finite real momentum and eps"
    if change == "bad-algo" and message.startswith(f"{op}: ") and "algo" in message:
        return "fastconv's own argument"
    if change == "bad-indices" and "indices" in message:
        return "fastconv's own argument"
    if change == "bad-mask" and "output_mask" in message:
        return "output_mask must be three bools"
    if "covers only padding" in message:
        return "a window of only padding has no maximum"
    if op.startswith("batch_norm") and "read-only" in message:
        return "running statistics updated in place must be writeable"
    if change == "not-an-array" and "must be a numpy.ndarray" in message:
        return "arrays only (PyTorch's autograd, the backward oracle, takes lists)"
    if re.search(r"must have shape \(\d+,\) \(one value per channel|must be 1-D of length",
                 message):
        return "per-channel vectors of exactly (C,) (PyTorch broadcasts some)"
    if change == "wrong-rank" and re.search(r"must be (\d-D|at least 2-D)", message):
        return "the ranks PyTorch documents (some of its kernels take others)"
    if "must both be given or both be None" in message:
        return "running statistics come in pairs"
    if "at least one channel" in message or "non-empty spatial extent" in message:
        return "at least one channel and a non-empty plane"
    if "output_size must be positive" in message or "is less than 1" in message:
        return "output sizes of at least 1"
    return None


def _names_an_argument(op, message):
    names = set(_positional_names(op)) | set(inspect.signature(
        getattr(fastconv, op)).parameters) | {"kernel", "output size", "window", "shape of"}
    return message.startswith(f"{op}: ") and any(
        re.search(rf"\b{re.escape(n)}\b", message) for n in names)


def _as_tuple(result):
    return result if isinstance(result, tuple) else (result,)


def _snapshot(args, kwargs):
    return [np.array(a, copy=True) if isinstance(a, np.ndarray) else None
            for a in list(args) + list(kwargs.values())]


def _for_torch(args, kwargs, as_float64=False):
    """Independent copies for PyTorch (it gets no view of fastconv's arrays)."""
    def copy(a):
        if isinstance(a, np.ndarray) and a.dtype != object:
            a = np.array(a, copy=True)
            return a.astype(np.float64) if as_float64 and a.dtype.kind == "f" else a
        return a
    return [copy(a) for a in args], {k: copy(v) for k, v in kwargs.items()}


def _pythonic(v):
    """NumPy scalars (and tuples of them) as Python values, which PyTorch insists on."""
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, tuple):
        return tuple(_pythonic(e) for e in v)
    return v


def _torch_max_pool_backward(args, kwargs):
    """max_pool2d_backward with given indices: PyTorch's kernel for it (autograd would
    recompute them from x)."""
    grad_y, x = (torch.from_numpy(a) for a in args[:2])
    k = {n: kwargs.get(n, d) for n, d in (("kernel_size", None), ("stride", None),
                                          ("padding", 0), ("dilation", 1), ("ceil_mode", False))}
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
    stride = pair(k["kernel_size"]) if k["stride"] is None else pair(k["stride"])
    gx = torch.ops.aten.max_pool2d_with_indices_backward(
        grad_y, x, pair(k["kernel_size"]), stride, pair(k["padding"]), pair(k["dilation"]),
        k["ceil_mode"], torch.from_numpy(kwargs["indices"]))
    return gx.numpy()


def _torch(op, args, kwargs):
    """PyTorch's result for the call, or the exception it raised. NumPy scalars that PyTorch
    refuses are retried as Python values: fastconv takes them as such."""
    kwargs = {k: v for k, v in kwargs.items() if k != "algo"}
    for attempt in (kwargs, {k: _pythonic(v) for k, v in kwargs.items()}):
        try:
            if "indices" in attempt:
                return _torch_max_pool_backward(args, attempt), None
            return torch_op(op, *args, **attempt), None
        except Exception as e:  # noqa: BLE001  (the oracle may refuse in any way it likes)
            error = e
    return None, error


def _error(op, actual, expected, grad_y):
    """:func:`fastconv.testing.error`, except that a gradient is measured against the larger
    of its own scale and grad_y's: one that cancels to far below grad_y (batch norm over two
    values per channel is eps-small) has only rounding left to compare."""
    err = error(actual, expected)
    if not (op.endswith("_backward") and 0 < err < np.inf):
        return err
    finite = np.isfinite(expected)
    gy = np.abs(np.asarray(grad_y, np.float64))
    scale = max(np.abs(expected[finite]).max(initial=0), gy[np.isfinite(gy)].max(initial=0))
    return min(err, np.abs(actual[finite] - expected[finite]).max() / scale)


def _on(backend, value):
    """A NumPy array as the backend's array (CuPy on "cuda"; object arrays stay NumPy)."""
    if backend == "cuda" and isinstance(value, np.ndarray) and value.dtype != object:
        import cupy

        return cupy.asarray(value)
    return value


def _host(value):
    return value.get() if type(value).__module__.split(".")[0] == "cupy" else value


def judge(op, args, kwargs, change, backend="cpu"):
    """Run one call on fastconv (on ``backend``) and on PyTorch, and hold fastconv to the
    module's rules."""
    key = (op, change, _describe(args, kwargs))
    before = _snapshot(args, kwargs)
    run_args = [_on(backend, a) for a in args]
    run_kwargs = {k: _on(backend, v) for k, v in kwargs.items()}
    try:
        got, err = _as_tuple(getattr(fastconv, op)(*run_args, **run_kwargs)), None
        got = tuple(_host(r) for r in got)
    except (ValueError, TypeError, MemoryError) as e:
        got, err = None, e
    # anything else (SystemError, IndexError, OverflowError, ...) fails the test as it is

    training = kwargs.get("training")
    updated = {1, 2} if op == "batch_norm" and isinstance(training, (bool, np.bool_)) \
        and training and err is None else set()
    after = [_host(a) for a in list(run_args) + list(run_kwargs.values())]
    for i, (a, b) in enumerate(zip(after, before)):
        if b is not None and i not in updated:
            assert np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"), \
                f"{op} modified argument {i}"
    args = after[:len(args)]  # batch norm's updated running statistics, on the host

    if err is not None and "indices" in kwargs and "indices" in str(err):
        TRIED[key] = "raised"  # PyTorch's kernel does not check indices: it would write out
        return                 # of bounds, so it is not asked
    if isinstance(err, MemoryError):  # more than the (patched) machine holds: PyTorch, which
        assert str(err).startswith(f"{op}: ")  # checks nothing first, would try to allocate
        TRIED[key] = "stricter: more memory than the machine has, refused before any work"
        return                                 # it and could take the whole machine down
    expected, torch_err = _torch(op, *_for_torch(args, kwargs))
    if err is not None:
        message = str(err)
        assert _names_an_argument(op, message) or isinstance(err, MemoryError), \
            f"{op} raised a message that names no argument: {message}"
        why = None if torch_err is not None else _stricter(op, change, message)
        assert torch_err is not None or why, f"{op} refused a call that PyTorch accepts: {message}"
        TRIED[key] = "raised" if why is None else f"stricter: {why}"
        return
    assert torch_err is None, f"{op} returned where PyTorch raised {torch_err!r}"
    dtype = next(a.dtype for a in args if isinstance(a, np.ndarray))
    if dtype == np.float32:  # judged against the exact answer, as fastconv.testing does
        expected, _ = _torch(op, *_for_torch(args, kwargs, as_float64=True))
    expected = _as_tuple(expected)
    if op == "batch_norm" and 1 in updated and args[1] is not None:
        t_args, t_kwargs = _for_torch(args, kwargs, as_float64=True)
        t_args[1], t_args[2] = (np.asarray(before[1], np.float64),
                                np.asarray(before[2], np.float64))
        torch_op(op, *t_args, **{k: _pythonic(v) for k, v in t_kwargs.items() if k != "algo"})
        got, expected = got + (args[1], args[2]), expected + (t_args[1], t_args[2])
    assert len(got) == len(expected), f"{op} returned {len(got)} results, PyTorch {len(expected)}"
    for k, (a, e) in enumerate(zip(got, expected)):
        if e is None or a is None:
            assert a is None and e is None, f"{op} result {k}: {a is None=} {e is None=}"
            continue
        assert type(a) is np.ndarray, f"{op} result {k} is a {type(a)}"
        if e.dtype == np.int64:
            assert a.dtype == np.int64 and np.array_equal(a, e), f"{op} indices differ"
            continue
        assert a.dtype == dtype, f"{op} result {k} has dtype {a.dtype}, expected {dtype}"
        err = _error(op, a, e, args[0])
        assert err <= tolerance(dtype), f"{op} result {k} differs from PyTorch: error {err:.3g}"
    TRIED[key] = "returned"


# --------------------------------------------------------------------------------------------
# The tests: every public op, each change drawn
# --------------------------------------------------------------------------------------------
@pytest.fixture
def small_memory(monkeypatch):
    """Every machine looks like one of 4 GiB: a huge padding then fails the memory check
    everywhere rather than running for minutes where the memory exists, and no drawn call
    that fastconv runs holds more than that (CI's machine has 24 GiB, shared with the rest of
    the run)."""
    from fastconv import _calls, _memory

    monkeypatch.setattr(_memory, "memory_size", lambda backend: 4 * 2**30)
    _calls.forget()  # the memory is checked when a call's plan is made
    yield
    _calls.forget()


@pytest.mark.parametrize("op, change", CALLS, ids=[f"{op}-{c}" for op, c in CALLS])
@pytest.mark.usefixtures("small_memory")
def test_every_call_returns_what_torch_returns_or_raises_a_clear_error(op, change):
    @settings(max_examples=EXAMPLES)
    @given(calls(op, change))
    def check(call):
        judge(*call)
    check()

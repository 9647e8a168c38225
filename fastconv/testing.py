"""What fastconv's tests and ``python -m fastconv check`` compare with, in one place.

* :data:`TOLERANCE`: the one per-dtype tolerance table, with :func:`error`, :func:`compare` and
  :func:`assert_matches` that apply it to one op call against an oracle;
* :func:`torch_op`: the PyTorch equivalent of any fastconv op (forward ops through
  ``torch.nn.functional``, backward ops through autograd), an oracle independent of ours. Needs
  torch; fastconv itself never imports it;
* :func:`numerical_gradient`: central finite differences, an oracle for gradients that needs
  neither torch nor our backward code.
"""
from __future__ import annotations

import numpy as np

# Error metric: max |actual - expected| / max |expected| (absolute when expected is all zero),
# NaNs required in the same places; for a sum whose terms cancel, against its terms' magnitudes
# (SUMS, below). float64 bounds the reference against PyTorch; float32 allows float32
# accumulation over the reduction lengths the tests use.
TOLERANCE = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-5}


def tolerance(dtype) -> float:
    return TOLERANCE[np.dtype(dtype)]


def error(actual, expected) -> float:
    """Normwise relative error of ``actual`` against ``expected`` (inf on a shape or NaN
    mismatch)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        return float("inf")
    nan = np.isnan(expected)
    if not np.array_equal(nan, np.isnan(actual)):
        return float("inf")
    if actual.size == 0 or nan.all():
        return 0.0
    a, e = actual[~nan], expected[~nan]
    inf = np.isinf(e)
    if not np.array_equal(a[inf], e[inf]):
        return float("inf")
    a, e = a[~inf], e[~inf]
    if e.size == 0:
        return 0.0
    scale = np.abs(e).max()
    return float(np.abs(a - e).max() / (scale if scale > 0 else 1.0))


# --------------------------------------------------------------------------------------------
# Comparing one op call with an oracle
# --------------------------------------------------------------------------------------------
OUTPUT_NAMES = {
    "max_pool2d": ("y", "indices"),
    "batch_norm": ("y", "running_mean", "running_var"),
}
GRADIENT_NAMES = ("grad_x", "grad_weight", "grad_bias")


def output_names(op, count):
    if op.endswith("_backward"):
        return GRADIENT_NAMES[:count] if count > 1 else ("grad_x",)
    return OUTPUT_NAMES.get(op, ("y",))[:count]


def outputs(op, args, kwargs, run):
    """``run(op, *args, **kwargs)`` on copies of args, as a tuple of results to compare, with
    the arrays the op updates in place (batch norm's running statistics) appended."""
    args = [None if a is None else np.array(a) for a in args]
    result = run(op, *args, **kwargs)
    result = result if isinstance(result, tuple) else (result,)
    if op == "batch_norm" and kwargs.get("training") and args[1] is not None:
        result = result + (args[1], args[2])
    return result


def fastconv_runner(algo="auto", backend="cpu"):
    """A ``run`` for :func:`outputs` that calls fastconv with ``algo`` on ``backend``, taking and
    returning NumPy arrays (CuPy arrays in between on the CUDA backend)."""
    import fastconv

    def run(op, *args, **kwargs):
        if backend == "cuda":
            import cupy

            args = [None if a is None else cupy.asarray(a) for a in args]
            kwargs = {k: cupy.asarray(v) if isinstance(v, np.ndarray) else v
                      for k, v in kwargs.items()}  # max-pool indices
            out = getattr(fastconv, op)(*args, algo=algo, **kwargs)
            return tuple(None if o is None else cupy.asnumpy(o) for o in out) \
                if isinstance(out, tuple) else cupy.asnumpy(out)
        return getattr(fastconv, op)(*args, algo=algo, **kwargs)
    return run


reference_op = fastconv_runner("reference")


def gpu_available() -> bool:
    """Whether CuPy imports and sees a CUDA device (the CUDA tests skip without one)."""
    from . import cuda

    return cuda.available()


def typed_args(args, dtype):
    return [None if a is None else np.asarray(a).astype(dtype) for a in args]


def typed_call(op, args, kwargs, dtype):
    """``(args, kwargs)`` of a call as it runs in ``dtype``: the arrays cast, and max-pool
    ``indices`` (saved by a forward, so derived from the data) made again from x as cast.
    Indices saved from the data in another dtype are another call's: rounding x to float32
    can tie two elements of a window whose float64 maximum was unique, and then the float32
    kernels rightly select the first of them, not the element the float64 indices name."""
    args = typed_args(args, dtype)
    if op == "max_pool2d_backward" and kwargs.get("indices") is not None:
        import fastconv

        pooling = {k: v for k, v in kwargs.items() if k != "indices"}
        _, indices = fastconv.max_pool2d(args[1], **pooling, return_indices=True,
                                         algo="reference")
        kwargs = dict(kwargs, indices=indices)
    return args, kwargs


def oracle_outputs(op, args, kwargs, oracle, dtype):
    """The oracle's results for the call as it runs in ``dtype`` (:func:`typed_call`): it gets
    float64 copies of exactly those values, so a float32 result is judged against the exact
    answer."""
    args, kwargs = typed_call(op, args, kwargs, dtype)
    return outputs(op, typed_args(args, np.float64), kwargs, oracle)


# Ops each of whose output elements is a sum of products of input elements, linear in each
# array: the convolutions and the average pools, both directions. Rounding errs by a few units
# of the *terms'* magnitudes, so a sum whose terms nearly cancel (0.002 left of 21 products of
# size 1-2, a drawn conv1d weight gradient) can miss the normwise bound with any correct
# algorithm. Such an output is judged element by element against those magnitudes instead
# (:func:`sum_error`), and only when it misses the normwise bound.
SUMS = frozenset(op + end for op in ("conv2d", "conv1d", "conv_transpose2d", "avg_pool2d",
                                     "adaptive_avg_pool2d") for end in ("", "_backward"))


def sum_error(actual, expected, magnitude) -> float:
    """max |actual - expected| / magnitude, element by element, ``magnitude`` the sum of the
    absolute values of each element's terms (the op on the inputs' absolute values): the
    forward error bound of a floating-point sum. Where a magnitude is 0 every term is 0, and
    the result must be exact. inf where the arrays are not all finite."""
    a, e, m = (np.asarray(v, dtype=np.float64) for v in (actual, expected, magnitude))
    if a.shape != e.shape or not (np.isfinite(a).all() and np.isfinite(e).all()):
        return float("inf")
    gap = np.abs(a - e)
    if (gap[m == 0] > 0).any():
        return float("inf")
    return float((gap[m > 0] / m[m > 0]).max(initial=0.0))


def compare(op, args, kwargs, run, oracle, dtype, expected=None, tol=None):
    """Errors of one call against an oracle, as ``[(output name, error), ...]``.

    The call as it runs in ``dtype`` (:func:`typed_call`) goes through ``run``; ``expected``
    is :func:`oracle_outputs` (computed here unless given, so that one oracle run can serve
    several algorithms). The error is :func:`error`'s; for an op of :data:`SUMS`, an output
    over ``tol`` (the dtype's tolerance by default) that is within it by :func:`sum_error`
    reports that. A result of the wrong dtype, or None where the oracle has an array (or the
    reverse), counts as inf.
    """
    tol = tolerance(dtype) if tol is None else tol
    if expected is None:
        expected = oracle_outputs(op, args, kwargs, oracle, dtype)
    actual = outputs(op, *typed_call(op, args, kwargs, dtype), run)
    if len(actual) != len(expected):
        return [("outputs", float("inf"))]
    found, magnitudes = [], None
    for i, (name, a, e) in enumerate(zip(output_names(op, len(actual)), actual, expected)):
        if a is None or e is None:
            err = 0.0 if a is None and e is None else float("inf")
        elif a.dtype != (np.int64 if e.dtype == np.int64 else np.dtype(dtype)):
            err = float("inf")
        else:
            err = error(a, e)
            if op in SUMS and tol < err < float("inf"):
                if magnitudes is None:  # the same call on the inputs' absolute values
                    absolute = [None if v is None else np.abs(v) for v in args]
                    magnitudes = oracle_outputs(op, absolute, kwargs, oracle, dtype)
                err = min(err, sum_error(a, e, np.abs(magnitudes[i])))
        found.append((name, err))
    return found


def assert_matches(op, args, kwargs, run, oracle, dtype, tol=None, expected=None):
    """Assert :func:`compare` finds every output within the tolerance of ``dtype``."""
    tol = tolerance(dtype) if tol is None else tol
    errors = compare(op, args, kwargs, run, oracle, dtype, expected, tol)
    bad = [f"{name}: {err:.3g}" for name, err in errors if not err <= tol]
    assert not bad, f"{op} ({np.dtype(dtype).name}) exceeds tolerance {tol:.0e}: {', '.join(bad)}"


# --------------------------------------------------------------------------------------------
# PyTorch as an oracle
# --------------------------------------------------------------------------------------------
def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _forward_torch(op, args, kwargs):
    import torch
    import torch.nn.functional as F

    # torch.from_numpy shares memory: batch_norm(training=True) updates the caller's running
    # statistics in place, exactly as fastconv does.
    args = [torch.from_numpy(a) if isinstance(a, np.ndarray) else a for a in args]
    return getattr(F, op)(*args, **kwargs)


def _backward_torch(op, grad_y, x, weight, kwargs, mask):
    """Gradients of forward op ``op`` at (x, weight) for output gradient grad_y, via autograd."""
    import torch
    import torch.nn.functional as F

    def leaf(a):
        return torch.tensor(a, requires_grad=True)

    if op == "batch_norm":
        c = x.shape[1]
        rm, rv = kwargs.pop("running_mean"), kwargs.pop("running_var")
        w = np.ones(c, x.dtype) if weight is None else weight
        inputs = [leaf(x), leaf(w), leaf(np.zeros(c, x.dtype))]
        stats = (None, None) if kwargs["training"] else (torch.tensor(rm), torch.tensor(rv))
        y = F.batch_norm(inputs[0], *stats, inputs[1], inputs[2], **kwargs)
    elif weight is not None:  # convolutions
        channels = weight.shape[1] * kwargs.get("groups", 1) if op == "conv_transpose2d" \
            else weight.shape[0]
        inputs = [leaf(x), leaf(weight), leaf(np.zeros(channels, x.dtype))]
        y = getattr(F, op)(*inputs, **kwargs)
    else:
        inputs = [leaf(x)]
        mask = mask[:1]
        y = getattr(F, op)(inputs[0], **kwargs)
    wanted = [t for t, m in zip(inputs, mask) if m]
    grads = iter(torch.autograd.grad(y, wanted, torch.from_numpy(grad_y)) if wanted else [])
    result = tuple(next(grads).numpy() if m else None for m in mask)
    return result if len(result) > 1 else result[0]


def torch_op(op, *args, **kwargs):
    """Run the PyTorch equivalent of fastconv op ``op`` on NumPy arrays.

    Takes the fastconv op's arguments (``algo`` is ignored) and returns NumPy results in the
    fastconv op's structure. Backward ops differentiate the forward op with autograd.
    """
    import warnings

    with warnings.catch_warnings():
        # e.g. torch's note that padding='same' with an even kernel copies the input
        warnings.simplefilter("ignore", UserWarning)
        return _torch_op(op, *args, **kwargs)


def _torch_op(op, *args, **kwargs):
    kwargs.pop("algo", None)
    if not op.endswith("_backward"):
        out = _forward_torch(op, args, kwargs)
        return tuple(t.numpy() for t in out) if isinstance(out, tuple) else out.numpy()
    fwd = op[: -len("_backward")]
    mask = tuple(kwargs.pop("output_mask", (True, True, True)))
    if fwd in ("conv2d", "conv1d", "conv_transpose2d"):
        grad_y, x, weight, *rest = args
        names = {"conv_transpose2d": ("stride", "padding", "output_padding", "groups",
                                      "dilation")}.get(fwd, ("stride", "padding", "dilation",
                                                              "groups"))
        kwargs.update(zip(names, rest))
        return _backward_torch(fwd, grad_y, x, weight, kwargs, mask)
    if fwd == "batch_norm":
        grad_y, x, *rest = args
        names = ("weight", "running_mean", "running_var", "training", "eps")
        kwargs = {"weight": None, "running_mean": None, "running_var": None, "training": True,
                  **dict(zip(names, rest)), **kwargs}
        weight = kwargs.pop("weight")
        return _backward_torch(fwd, grad_y, x, weight, kwargs, mask)
    grad_y, x, *rest = args
    kwargs.pop("indices", None)
    if fwd == "adaptive_avg_pool2d":
        kwargs["output_size"] = grad_y.shape[-2:]
    else:
        names = {"max_pool2d": ("kernel_size", "stride", "padding", "dilation", "ceil_mode"),
                 "avg_pool2d": ("kernel_size", "stride", "padding", "ceil_mode",
                                "count_include_pad", "divisor_override")}[fwd]
        kwargs.update(zip(names, rest))
    return _backward_torch(fwd, grad_y, x, None, kwargs, (True,))


# --------------------------------------------------------------------------------------------
# Finite differences
# --------------------------------------------------------------------------------------------
def numerical_gradient(f, arrays, index, grad_y, h=1e-6):
    """d<f(*arrays), grad_y>/d arrays[index] by central differences, element by element.

    ``f`` maps the arrays to one output array; arrays are float64 and are not modified (a copy
    is perturbed). Exact up to O(h^2) for smooth f; keep problems tiny, it costs two calls of f
    per element.
    """
    arrays = [None if a is None else np.array(a, dtype=np.float64) for a in arrays]
    target = arrays[index]
    grad = np.zeros_like(target)
    flat, gflat = target.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        saved = flat[i]
        flat[i] = saved + h
        plus = np.vdot(f(*arrays), grad_y)
        flat[i] = saved - h
        minus = np.vdot(f(*arrays), grad_y)
        flat[i] = saved
        gflat[i] = (plus - minus) / (2 * h)
    return grad

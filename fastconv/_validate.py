"""The argument and array checks every public op shares, and their messages.

Each check raises ``ValueError`` for a bad shape or value and ``TypeError`` for an argument of
the wrong kind, with a message naming the op, the argument, the value given and what was
expected; each returns the argument in its normal form (a tuple of ints, a bool, a float).
The op families' modules (``conv``, ``pool``, ``batchnorm``) build their parameter objects from
these; kernels trust those objects and check nothing themselves.
"""
from __future__ import annotations

import numbers

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
ALL_OUTPUTS = (True, True, True)
# Largest value of an int argument (stride, padding, dilation, kernel_size, output_padding,
# groups, output_size, divisor_override): PyTorch's pooling and transposed-convolution kernels
# hold these in 32-bit ints, and the bound keeps every sum and product of them that a kernel
# forms far inside 64 bits.
INT_ARG_LIMIT = 2**31 - 1


def user_shape(shape, spatial_dims, unbatched):
    shape = tuple(shape)
    if spatial_dims == 1:
        shape = shape[:2] + shape[3:]
    return shape[1:] if unbatched else shape


# --------------------------------------------------------------------------------------------
# Small validators shared by every builder
# --------------------------------------------------------------------------------------------
def is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def is_bool(value) -> bool:
    return isinstance(value, (bool, np.bool_))


def ints(op, name, value, n, *, minimum, expected):
    """An int or a sequence of ``n`` ints, each ``>= minimum``, as a tuple of ``n`` ints."""
    if is_int(value):
        values = (int(value),) * n
    elif isinstance(value, (tuple, list)) and all(is_int(v) for v in value):
        if len(value) != n:
            what = "an int" if n == 1 else f"an int or a sequence of {n} ints"
            raise ValueError(f"{op}: {name} must be {what}, got {value!r} ({len(value)} values)")
        values = tuple(int(v) for v in value)
    else:
        what = "an int" if n == 1 else "an int or a pair of ints"
        raise TypeError(f"{op}: {name} must be {what}, got {value!r} ({type(value).__name__})")
    if any(v < minimum for v in values):
        raise ValueError(f"{op}: {name} must be {expected}, got {value!r}")
    at_most_limit(op, name, value, values)
    return values


def at_most_limit(op, name, value, values):
    if any(abs(v) > INT_ARG_LIMIT for v in values):
        raise ValueError(f"{op}: {name} must be at most 2**31 - 1 = {INT_ARG_LIMIT} in "
                         f"magnitude, got {value!r}")


def positive_int(op, name, value):
    if not is_int(value):
        raise TypeError(f"{op}: {name} must be an int, got {value!r} ({type(value).__name__})")
    if value < 1:
        raise ValueError(f"{op}: {name} must be a positive int, got {value!r}")
    at_most_limit(op, name, value, (int(value),))
    return int(value)


def flag(op, name, value):
    if not is_bool(value):
        raise TypeError(f"{op}: {name} must be True or False, got {value!r} ({type(value).__name__})")
    return bool(value)


def real(op, name, value, *, minimum=None):
    if not isinstance(value, numbers.Real) or is_bool(value) or not np.isfinite(value):
        raise TypeError(f"{op}: {name} must be a finite real number, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {value!r}")
    return float(value)


def gradient_mask(op, mask):
    """``output_mask``: three bools saying which of (input, weight, bias) gradients to compute."""
    if not (isinstance(mask, (tuple, list)) and len(mask) == 3 and all(is_bool(m) for m in mask)):
        raise TypeError(f"{op}: output_mask must be a sequence of three bools "
                        f"(input, weight, bias), got {mask!r}")
    return tuple(bool(m) for m in mask)


def dims(op, name, shape, ndims, legend):
    """A shape given as a sequence of non-negative ints with a length in ``ndims``."""
    if not (isinstance(shape, (tuple, list)) and all(is_int(n) for n in shape)):
        raise TypeError(f"{op}: the shape of {name} must be a sequence of ints, got {shape!r}")
    shape = tuple(int(n) for n in shape)
    if len(shape) not in ndims:
        raise ValueError(f"{op}: {name} must be {legend}, got a {len(shape)}-D array of shape {shape}")
    if any(n < 0 for n in shape):
        raise ValueError(f"{op}: {name} has a negative dimension: {shape}")
    return shape


def batched(op, name, shape, spatial_dims):
    """Shape of a batched input ``(N, C, *spatial)``; an unbatched ``(C, *spatial)`` gets N = 1.

    Returns ``(batched_shape, unbatched)``. Channels and spatial sizes must be at least 1; the
    batch may be empty (N = 0), as in PyTorch.
    """
    axes = {1: "L", 2: "H, W"}[spatial_dims]
    legend = f"{spatial_dims + 1}-D (C, {axes}) or {spatial_dims + 2}-D (N, C, {axes})"
    shape = dims(op, name, shape, (spatial_dims + 1, spatial_dims + 2), legend)
    unbatched = len(shape) == spatial_dims + 1
    if unbatched:
        shape = (1,) + shape
    if any(n < 1 for n in shape[1:]):
        raise ValueError(f"{op}: {name} must have at least one channel and a non-empty spatial "
                         f"extent, got shape {shape[1:] if unbatched else shape}")
    return shape, unbatched


def check_grad(op, grad_shape, expected):
    """``grad_y`` must have exactly the shape the forward op returns for these arguments."""
    grad_shape = dims(op, "grad_y", grad_shape, (len(expected),),
                      f"{len(expected)}-D like the forward output {expected}")
    if grad_shape != tuple(expected):
        raise ValueError(f"{op}: grad_y has shape {grad_shape}, expected {tuple(expected)} "
                         f"(the output shape of the forward op for these arguments)")


def unused_stride_as_one(stride, out):
    """Along a dimension with a single output only window 0 is ever read, so the stride is never
    used: it becomes 1 there. Results are the same; kernels that size a buffer by the stride
    (direct's grid rows are a multiple of it) then stay small whatever stride was asked for."""
    return tuple(1 if o == 1 else s for s, o in zip(stride, out))


def lift(values, fill):
    """A 1-D spatial tuple lifted to 2-D: ``fill`` describes the new unit height dimension."""
    return (fill,) + tuple(values)



# --------------------------------------------------------------------------------------------
# Arrays
# --------------------------------------------------------------------------------------------
def array_kind(a) -> str | None:
    """``"cpu"`` for a NumPy array, ``"cuda"`` for a CuPy array, ``None`` for anything else.

    CuPy is recognised by its type's module so that NumPy calls never import it.
    """
    if isinstance(a, np.ndarray):
        return "cpu"
    if type(a).__module__.split(".")[0] == "cupy":
        import cupy

        if isinstance(a, cupy.ndarray):
            return "cuda"
    return None


def check_arrays(op, optional=None, **required) -> str:
    """Check the array arguments of one call; return the backend they run on.

    All arrays must be NumPy arrays (backend ``"cpu"``) or all CuPy arrays on one device
    (backend ``"cuda"``), of one floating dtype: float32 or float64. ``optional`` maps the
    names of optional arrays to their values, None where not given.
    """
    given = dict(required, **{k: v for k, v in (optional or {}).items() if v is not None})
    for name, a in given.items():
        if array_kind(a) is None:
            raise TypeError(f"{op}: {name} must be a numpy.ndarray or cupy.ndarray, got "
                            f"{type(a).__module__}.{type(a).__qualname__}")
    first, head = next(iter(given.items()))
    backend = array_kind(head)
    for name, a in given.items():
        if array_kind(a) != backend:
            raise TypeError(f"{op}: {first} is a {type_name(head)} but {name} is a "
                            f"{type_name(a)}; pass arrays of one kind")
        if backend == "cuda" and a.device.id != head.device.id:
            raise TypeError(f"{op}: {first} is on CUDA device {head.device.id} but {name} is on "
                            f"device {a.device.id}; pass arrays on one device")
        if a.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{op}: {name} has dtype {a.dtype}; expected float32 or float64")
        if a.dtype != head.dtype:
            raise TypeError(f"{op}: {first} has dtype {head.dtype} but {name} has dtype "
                            f"{a.dtype}; all arrays of one call must have the same dtype")
    return backend


def type_name(a):
    return f"{type(a).__module__.split('.')[0]}.{type(a).__name__}"


def check_indices(op, indices, backend):
    """The ``indices`` of ``max_pool2d_backward``: an int64 array of the same kind as the data."""
    if array_kind(indices) is None:
        raise TypeError(f"{op}: indices must be a numpy.ndarray or cupy.ndarray, got "
                        f"{type(indices).__name__}")
    if array_kind(indices) != backend:
        raise TypeError(f"{op}: indices is a {type_name(indices)} but grad_y and x are on the "
                        f"{backend!r} backend; pass arrays of one kind")
    if indices.dtype != np.int64:
        raise TypeError(f"{op}: indices has dtype {indices.dtype}; expected int64 (as returned "
                        f"by max_pool2d(..., return_indices=True))")


def check_index_range(op, indices, plane_size):
    """Indices address an H*W plane; one outside it would write out of bounds."""
    if indices.size:
        low, high = int(indices.min()), int(indices.max())
        if low < 0 or high >= plane_size:
            raise ValueError(f"{op}: indices must lie in [0, H*W) = [0, {plane_size}), got "
                             f"values from {low} to {high}")


def check_writeable(op, **arrays):
    """Arrays that are updated in place (running statistics) must be writeable."""
    for name, a in arrays.items():
        if a is not None and not getattr(a.flags, "writeable", True):  # CuPy's always are
            raise ValueError(f"{op}: {name} is read-only but training=True updates it in place")



def check_dtype_name(op, dtype):
    """A dtype given by name (as ``explain`` takes it): float32 or float64."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{op}: dtype must be 'float32' or 'float64', got {dtype!r}") from None
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"{op}: dtype must be 'float32' or 'float64', got {dtype!r}")
    return dt

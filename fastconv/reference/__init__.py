"""The NumPy reference: the readable oracle every fastconv kernel is tested against.

Pure NumPy, float64 arithmetic, vectorised with strided window views and ``einsum`` (no Python
loops over pixels). One module per family, each with the entry points every algorithm of that
family provides:

* :mod:`.conv`: ``forward(x, w, b, p)``, ``backward_data(gy, w, p)``,
  ``backward_weight(x, gy, p)``, ``backward_bias(gy, p)``; transposed convolution is the
  adjoint, composed from these in ``fastconv.functional``.
* :mod:`.pool`: ``max_pool_forward/backward``, ``avg_pool_forward/backward``,
  ``adaptive_avg_pool_forward/backward``.
* :mod:`.batchnorm`: ``forward``, ``backward``.

``p`` is the parameter object from ``fastconv.params``; arrays are contiguous and batched. Call
these through the public API with ``algo="reference"`` unless you are writing a kernel.
"""
from math import prod

from ..params import AdaptivePoolParams, BatchNormParams, ConvParams
from . import batchnorm, conv, pool

__all__ = ["FAMILIES", "ENTRY_POINTS", "batchnorm", "conv", "pool", "workspace_bytes"]

# each family's module, and the entry points every algorithm of the family provides
FAMILIES = {"conv": conv, "pool": pool, "batch_norm": batchnorm}
ENTRY_POINTS = {
    "conv": ("forward", "backward_data", "backward_weight", "backward_bias"),
    "pool": ("max_pool_forward", "max_pool_backward", "avg_pool_forward", "avg_pool_backward",
             "adaptive_avg_pool_forward", "adaptive_avg_pool_backward"),
    "batch_norm": ("forward", "backward"),
}


def _conv_directions(op, p):
    """Which of conv's entry points (forward, data, weight) an op runs on the convolution p."""
    if not op.endswith("_backward"):
        return ("data",) if p.transposed else ("forward",)
    want_x, want_w, _ = p.output_mask
    return (("forward" if p.transposed else "data",) * want_x) + (("weight",) * want_w)


def workspace_bytes(op, p, itemsize):
    """Approximate peak of the reference's temporaries beyond its inputs and outputs.

    The reference favours clarity over memory: it works on float64 copies, and ``einsum`` copies
    the window view into column matrices (twice, in NumPy 2.x). These multiples of the arrays
    involved were read off ``tracemalloc`` on the layer zoo; they are estimates, not bounds.
    """
    if isinstance(p, ConvParams):
        n, c = p.x_shape[:2]
        padded, out = n * c * prod(p.padded_size), prod(p.y_shape)
        columns = n * c * p.kernel[0] * p.kernel[1] * prod(p.y_shape[2:])
        per_direction = {
            "forward": padded + 2 * columns + out,   # windows -> einsum -> float64 y
            "weight": padded + 2 * columns + out,
            "data": padded + out + 2 * n * c * prod(p.y_shape[2:]),  # one offset at a time
        }
        return 8 * max((per_direction[d] for d in _conv_directions(op, p)), default=0)
    x = prod(p.x_shape)
    if isinstance(p, BatchNormParams):
        return 8 * x * (5 if op.endswith("_backward") else 2)
    y = prod(p.y_shape)
    if isinstance(p, AdaptivePoolParams):
        return 8 * x * (1 if op.endswith("_backward") else 2)
    if op.startswith("max"):  # masked window copies, plus the scatter target backward
        return 16 * y * p.kernel[0] * p.kernel[1] + (8 * x if op.endswith("_backward") else 0)
    return 8 * (2 * x if not op.endswith("_backward") else x + y)  # avg: padded float64 copy

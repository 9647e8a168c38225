"""The NumPy reference: the readable oracle every fastconv kernel is tested against.

Pure NumPy, float64 arithmetic, vectorised with strided window views and ``einsum`` (no Python
loops over pixels). One module per family, each with the entry points every algorithm of that
family provides:

* :mod:`.conv`: ``forward(x, w, b, p)``, ``backward_data(gy, w, p)``,
  ``backward_weight(x, gy, p)``, ``backward_bias(gy, p)``; transposed convolution is the
  adjoint, composed from these in ``fastconv.conv``.
* :mod:`.pool`: ``max_pool_forward/backward``, ``avg_pool_forward/backward``,
  ``adaptive_avg_pool_forward/backward``.
* :mod:`.batchnorm`: ``forward``, ``backward``.

``p`` is the parameter object of the op's front-end module (``fastconv.conv``, ``fastconv.pool``,
``fastconv.batchnorm``); arrays are contiguous and batched. Call
these through the public API with ``algo="reference"`` unless you are writing a kernel.
"""
from . import batchnorm, conv, pool

__all__ = ["FAMILIES", "ENTRY_POINTS", "batchnorm", "conv", "pool"]

# each family's module, and the entry points every algorithm of the family provides (each
# module also estimates its own temporaries: workspace_bytes(op, p, itemsize))
FAMILIES = {"conv": conv, "pool": pool, "batch_norm": batchnorm}
ENTRY_POINTS = {
    "conv": ("forward", "backward_data", "backward_weight", "backward_bias"),
    "pool": ("max_pool_forward", "max_pool_backward", "avg_pool_forward", "avg_pool_backward",
             "adaptive_avg_pool_forward", "adaptive_avg_pool_backward"),
    "batch_norm": ("forward", "backward"),
}

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
from . import batchnorm, conv, pool

__all__ = ["batchnorm", "conv", "pool"]

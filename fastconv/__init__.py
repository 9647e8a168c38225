"""fastconv: convolution, pooling and batch-norm kernels behind one dispatcher.

NumPy arrays run on the CPU backend, CuPy arrays on the CUDA backend; every op takes
``algo="auto"`` or the name of an algorithm from :func:`algorithms`, and :func:`explain`
describes a call without running it. ``algo="reference"`` is the NumPy oracle that every other
algorithm is tested against. The contract is API.md; ``python -m fastconv check`` self-tests an
installation.
"""
from .batchnorm import batch_norm, batch_norm_backward
from .conv import (conv1d, conv1d_backward, conv2d, conv2d_backward, conv_transpose2d,
                   conv_transpose2d_backward)
from .dispatch import algorithms, explain
from .pool import (adaptive_avg_pool2d, adaptive_avg_pool2d_backward, avg_pool2d,
                   avg_pool2d_backward, max_pool2d, max_pool2d_backward)

__version__ = "0.1.0"

__all__ = [
    "adaptive_avg_pool2d",
    "adaptive_avg_pool2d_backward",
    "algorithms",
    "avg_pool2d",
    "avg_pool2d_backward",
    "batch_norm",
    "batch_norm_backward",
    "conv1d",
    "conv1d_backward",
    "conv2d",
    "conv2d_backward",
    "conv_transpose2d",
    "conv_transpose2d_backward",
    "explain",
    "max_pool2d",
    "max_pool2d_backward",
]

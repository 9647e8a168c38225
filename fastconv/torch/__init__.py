"""fastconv inside PyTorch: autograd-aware operators, ``nn.Module`` drop-ins and
:func:`convert`, which swaps them into an existing model.

Needs PyTorch (``pip install "fastconv[torch]"``); fastconv itself does not.

- ``fastconv.torch.conv2d``, ``conv1d``, ``conv_transpose2d``, ``max_pool2d``, ``avg_pool2d``,
  ``adaptive_avg_pool2d``, ``batch_norm``: as ``torch.nn.functional``, plus ``algo=``. They are
  ``torch.library`` custom operators (``torch.ops.fastconv.*``) with fake implementations and
  autograd formulas, so they work under autograd, ``torch.compile`` and ``opcheck``.
- ``fastconv.torch.nn``: ``Conv2d``, ``Conv1d``, ``ConvTranspose2d``, ``MaxPool2d``,
  ``AvgPool2d``, ``AdaptiveAvgPool2d``, ``BatchNorm2d``, subclasses of the torch modules with the
  same parameters, buffers and state_dict.
- ``fastconv.torch.convert(model)``: swaps every supported module of a model in place.

Tensors are handed over without copies: CPU tensors as NumPy views, CUDA tensors as CuPy arrays
through DLPack, computed on PyTorch's current CUDA stream.
"""
try:
    import torch  # noqa: F401
except ImportError as error:  # pragma: no cover - the package is only imported with torch
    raise ImportError("fastconv.torch needs PyTorch: pip install 'fastconv[torch]'") from error

from . import nn
from .convert import Conversion, convert
from .ops import (
    adaptive_avg_pool2d,
    avg_pool2d,
    batch_norm,
    conv1d,
    conv2d,
    conv_transpose2d,
    max_pool2d,
)

__all__ = ["Conversion", "adaptive_avg_pool2d", "avg_pool2d", "batch_norm", "conv1d", "conv2d",
           "conv_transpose2d", "convert", "max_pool2d", "nn"]

"""PyTorch's own kernels for each benchmarked call: the baseline every timing is compared with.

Forward calls go through ``torch.nn.functional``. Each backward direction calls the ATen op that
PyTorch's autograd would run for it, with no autograd bookkeeping in the timed call:
``convolution_backward`` with one output mask per direction, ``max_pool2d_with_indices_backward``
(given the forward's indices, as fastconv's call is), ``avg_pool2d_backward``,
``_adaptive_avg_pool2d_backward`` and ``native_batch_norm_backward`` (given the batch mean and
inverse standard deviation its forward saved).

The tensors share the arrays' memory: ``torch.from_numpy`` for NumPy arrays, DLPack for CuPy
arrays. On CUDA the comparison is with cuDNN as a user would configure it for speed and
float32 accuracy: TF32 off, ``cudnn.benchmark`` on (its algorithm search happens in the
warm-up call, outside the timings).

fastconv never imports this module; only the benchmarks do.
"""
from __future__ import annotations

import numpy as np


def configure(backend: str, threads: int | None = None):
    """Import torch and set it up for a fair comparison; returns the module."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    if backend == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
    return torch


def _tensor(torch, a):
    if a is None or isinstance(a, torch.Tensor):
        return a
    if isinstance(a, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(a))
    return torch.from_dlpack(a)  # a CuPy array: same device memory


def _per_dim(v, n=2):
    """An int-or-sequence argument as a list of n values, as ATen takes them."""
    return list(v) if isinstance(v, (tuple, list)) else [v] * n


def torch_call(call):
    """A zero-argument callable running PyTorch's equivalent of the fastconv call ``call``
    (a :class:`fastconv.bench.zoo.Call`: op, args, kwargs; arrays or torch tensors)."""
    import torch
    import torch.nn.functional as F

    aten = torch.ops.aten
    op = call.op
    t = [_tensor(torch, a) for a in call.args]
    kw = {k: _tensor(torch, v) if hasattr(v, "shape") else v for k, v in call.kwargs.items()}
    if op in ("conv2d", "conv1d", "conv_transpose2d", "max_pool2d", "avg_pool2d",
              "adaptive_avg_pool2d", "batch_norm"):
        fn = getattr(F, op)
        return lambda: fn(*t, **kw)
    if op.startswith("conv"):
        gy, x, w = t
        transposed = op.startswith("conv_transpose")
        nd = x.dim() - 2
        stride, padding, dilation, out_pad = (
            _per_dim(v, nd) for v in (kw.get("stride", 1), kw.get("padding", 0),
                                      kw.get("dilation", 1), kw.get("output_padding", 0)))
        groups = kw.get("groups", 1)
        bias_sizes = [w.shape[1] * groups] if transposed else [w.shape[0]]
        mask = list(kw.get("output_mask", (True, True, True)))
        return lambda: aten.convolution_backward(gy, x, w, bias_sizes, stride, padding, dilation,
                                                 transposed, out_pad, groups, mask)
    if op == "max_pool2d_backward":
        gy, x = t
        k = _per_dim(kw["kernel_size"])
        s = _per_dim(kw.get("stride") or k)
        p, d = _per_dim(kw.get("padding", 0)), _per_dim(kw.get("dilation", 1))
        ceil = kw.get("ceil_mode", False)
        indices = kw.get("indices")
        if indices is None:
            _, indices = F.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
        return lambda: aten.max_pool2d_with_indices_backward(gy, x, k, s, p, d, ceil, indices)
    if op == "avg_pool2d_backward":
        gy, x = t
        k = _per_dim(kw["kernel_size"])
        return lambda: aten.avg_pool2d_backward(
            gy, x, k, _per_dim(kw.get("stride") or k), _per_dim(kw.get("padding", 0)),
            kw.get("ceil_mode", False), kw.get("count_include_pad", True),
            kw.get("divisor_override"))
    if op == "adaptive_avg_pool2d_backward":
        gy, x = t
        return lambda: aten._adaptive_avg_pool2d_backward(gy, x)
    if op == "batch_norm_backward":
        gy, x, w, rm, rv = t
        eps = kw.get("eps", 1e-5)
        training = kw.get("training", True)
        mean = invstd = None
        if training:
            _, mean, invstd = aten.native_batch_norm(x, w, None, None, None, True, 0.0, eps)
        return lambda: aten.native_batch_norm_backward(gy, x, w, rm, rv, mean, invstd, training,
                                                       eps, [True, True, True])
    raise ValueError(f"no PyTorch baseline for {op!r}")

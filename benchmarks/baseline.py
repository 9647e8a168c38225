"""PyTorch's own kernels for each zoo call, the baseline every timing is compared with.

Each direction calls the ATen op that PyTorch's autograd would run for it (no autograd
bookkeeping in the timed call): ``convolution_backward`` with one output mask per direction,
``max_pool2d_with_indices_backward``, ``avg_pool2d_backward``,
``_adaptive_avg_pool2d_backward`` and ``native_batch_norm_backward``.
"""
from __future__ import annotations

import numpy as np


def torch_call(op, args, kwargs):
    """A zero-argument callable running PyTorch's equivalent of fastconv ``op(*args, **kwargs)``
    on tensors that share the arrays' memory."""
    import torch
    import torch.nn.functional as F

    aten = torch.ops.aten
    t = [None if a is None else torch.from_numpy(np.ascontiguousarray(a)) for a in args]
    kw = dict(kwargs)
    if op in ("conv2d", "conv1d", "conv_transpose2d", "max_pool2d", "avg_pool2d",
              "adaptive_avg_pool2d"):
        fn = getattr(F, op)
        return lambda: fn(*t, **kw)
    if op == "batch_norm":
        x, rm, rv, w, b = t
        return lambda: F.batch_norm(x, rm, rv, w, b, **kw)
    if op.startswith("conv"):
        gy, x, w = t
        mask = list(kw.pop("output_mask", (True, True, True)))
        transposed = op.startswith("conv_transpose")
        nd = x.dim() - 2
        stride = _tuple(kw.get("stride", 1), nd)
        dilation = _tuple(kw.get("dilation", 1), nd)
        padding = _tuple(kw.get("padding", 0), nd)
        out_pad = _tuple(kw.get("output_padding", 0), nd)
        bias = [w.shape[1] * kw.get("groups", 1)] if transposed else [w.shape[0]]
        return lambda: aten.convolution_backward(gy, x, w, bias, stride, padding, dilation,
                                                 transposed, out_pad, kw.get("groups", 1), mask)
    if op == "max_pool2d_backward":
        gy, x = t
        k = _tuple(kw["kernel_size"], 2)
        s = _tuple(kw.get("stride") or k, 2)
        p, d = _tuple(kw.get("padding", 0), 2), _tuple(kw.get("dilation", 1), 2)
        _, indices = F.max_pool2d(x, k, s, p, d, kw.get("ceil_mode", False), return_indices=True)
        return lambda: aten.max_pool2d_with_indices_backward(gy, x, k, s, p, d,
                                                            kw.get("ceil_mode", False), indices)
    if op == "avg_pool2d_backward":
        gy, x = t
        k = _tuple(kw["kernel_size"], 2)
        s = _tuple(kw.get("stride") or k, 2)
        return lambda: aten.avg_pool2d_backward(gy, x, k, s, _tuple(kw.get("padding", 0), 2),
                                                kw.get("ceil_mode", False),
                                                kw.get("count_include_pad", True),
                                                kw.get("divisor_override"))
    if op == "adaptive_avg_pool2d_backward":
        gy, x = t
        return lambda: aten._adaptive_avg_pool2d_backward(gy, x)
    if op == "batch_norm_backward":
        gy, x, w, rm, rv = t
        eps = kw.get("eps", 1e-5)
        training = kw.get("training", True)
        if training:
            _, mean, invstd = aten.native_batch_norm(x, w, None, None, None, True, 0.0, eps)
        else:
            mean, invstd = None, None
        return lambda: aten.native_batch_norm_backward(gy, x, w, rm, rv, mean, invstd, training,
                                                       eps, [True, True, True])
    raise ValueError(f"no PyTorch baseline for {op}")


def _tuple(v, n):
    return list(v) if isinstance(v, (tuple, list)) else [v] * n

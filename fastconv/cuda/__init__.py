"""The CUDA backend: CuPy raw kernels (``kernels/*.cu``, compiled by NVRTC once per device) and
cuBLAS through ``cupy.matmul`` for the matrix products, one module per algorithm family with
the same entry points as ``fastconv.cpu``.

Convolution: ``depthwise``, ``pointwise``, ``im2col``, ``implicit_gemm``, ``direct``. Pooling
and batch norm: ``direct``. Every output element is computed by one thread (or one block, for
long sums) in a fixed order: no floating-point atomics, so results are bitwise repeatable.
Indices are 32-bit unless an array of the call has 2**31 elements or more.

Importing this package does not import CuPy: the dispatcher lists and explains these
algorithms on any machine; CuPy and a GPU are needed only to run them.
"""
from __future__ import annotations

from ..registry import Algorithm
from . import batchnorm, depthwise, direct, im2col, implicit_gemm, pointwise, pool


def available() -> bool:
    """Whether CuPy imports and sees a CUDA device."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # not installed, no driver, no device: all mean "no CUDA here"
        return False


def algorithms():
    """The CUDA backend's algorithms, in the order the default rule tries them."""
    conv = dict(backend="cuda", family="conv")
    return [
        Algorithm("depthwise", kernels=depthwise, why_not=depthwise.why_not,
                  summary="one filter per channel: a stencil, one thread per output", **conv),
        Algorithm("pointwise", kernels=pointwise, why_not=pointwise.why_not,
                  summary="1x1 kernel: a batched cuBLAS GEMM over channels, no im2col",
                  workspace_bytes=pointwise.workspace_bytes, **conv),
        Algorithm("im2col", kernels=im2col,
                  summary="columns of a chunk of images, then one batched cuBLAS GEMM",
                  workspace_bytes=im2col.workspace_bytes, **conv),
        Algorithm("implicit_gemm", kernels=implicit_gemm, why_not=implicit_gemm.why_not,
                  summary="im2col on the fly into shared-memory tiles, register-blocked GEMM",
                  workspace_bytes=implicit_gemm.workspace_bytes, **conv),
        Algorithm("direct", kernels=direct,
                  summary="one thread per output over its whole window; gathers backward",
                  **conv),
        Algorithm("direct", backend="cuda", family="pool", kernels=pool,
                  summary="one thread per output; gathers backward, no atomics"),
        Algorithm("direct", backend="cuda", family="batch_norm", kernels=batchnorm,
                  summary="block-per-channel double statistics, one elementwise pass"),
    ]


def auto_rule(op, p, candidates):
    """``auto`` for CUDA convolutions. Not yet measured on a GPU: the specialised kernels where
    they apply, otherwise im2col, whose GEMM runs in cuBLAS. Pooling and batch norm have one
    algorithm each (None: the dispatcher's default)."""
    if "depthwise" in candidates:
        return "depthwise", "groups == in_channels: a per-channel stencil, no channel reduction"
    if "pointwise" in candidates:
        return "pointwise", "1x1 kernel without padding: a GEMM over channels needs no im2col"
    if "im2col" in candidates:
        return "im2col", ("the general case: the contraction runs as one batched cuBLAS GEMM "
                          "per chunk of images (rule not yet measured on a GPU)")
    return None

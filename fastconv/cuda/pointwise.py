"""Pointwise (1x1) convolution on the GPU: the matrix products of fastconv/cpu/pointwise.py,
which is written for both array modules, run by cuBLAS through ``cupy.matmul`` and batched over
images and groups. No kernel of our own: a 1x1 convolution is a GEMM; only the bias gradient
is ours (direct's channel sum)."""
from __future__ import annotations

from ..cpu.pointwise import backward_data, backward_weight, forward, why_not, workspace_bytes
from .direct import backward_bias

__all__ = ["forward", "backward_data", "backward_weight", "backward_bias", "why_not",
           "workspace_bytes"]

"""The CPU backend: Numba kernels (the matrix products among them single-threaded BLAS GEMMs
inside Numba's parallel loops, ``_blas``), one module per algorithm family, each with the entry
points of its family (see ``fastconv.reference``).

Convolution: ``direct``, ``im2col``, ``depthwise``, ``pointwise``. Pooling and batch norm:
``direct``. :func:`auto_rule` is the ``auto`` rule for convolutions.
"""
from __future__ import annotations

from ..registry import Algorithm
from . import batchnorm, depthwise, direct, im2col, pointwise, pool


def _numba_index_bits(op, p):
    return 64  # Numba indexes with intp (int64) throughout


def algorithms():
    """The CPU backend's algorithms, fastest-first for the default rule."""
    # quiet: Numba's arithmetic raises no NumPy floating-point warnings
    common = dict(backend="cpu", index_bits=_numba_index_bits, quiet=True)
    return [
        Algorithm("depthwise", family="conv", kernels=depthwise, why_not=depthwise.why_not,
                  summary="one filter per channel: a per-row stencil, memory-bound",
                  workspace_bytes=depthwise.workspace_bytes, **common),
        Algorithm("pointwise", family="conv", kernels=pointwise, why_not=pointwise.why_not,
                  summary="1x1 kernel: a GEMM over channels, no im2col",
                  workspace_bytes=pointwise.workspace_bytes, **common),
        Algorithm("im2col", family="conv", kernels=im2col,
                  summary="windows copied into column tiles, then BLAS GEMM",
                  workspace_bytes=im2col.workspace_bytes, **common),
        Algorithm("direct", family="conv", kernels=direct,
                  summary="the convolution loop nest on flattened planes, 2x3 register tiles",
                  workspace_bytes=direct.workspace_bytes, **common),
        Algorithm("direct", family="pool", kernels=pool,
                  summary="one pass over each window, one task per plane", **common),
        Algorithm("direct", family="batch_norm", kernels=batchnorm,
                  summary="two-pass float64 statistics, one fused elementwise pass", **common),
    ]


def auto_rule(op, p, candidates):
    """``auto`` for CPU convolutions: the specialised kernels where they apply, otherwise the
    measured rule between im2col and direct (docs/algorithms.md). Pooling and batch norm have
    one Numba algorithm each: None leaves them to the dispatcher's default."""
    if "depthwise" in candidates:
        return "depthwise", "groups == in_channels: a per-channel stencil, no channel reduction"
    if "pointwise" in candidates:
        return "pointwise", "1x1 kernel without padding: a GEMM over channels needs no im2col"
    if "im2col" in candidates and "direct" in candidates:
        return direct_or_im2col(op, p)
    return None


# Measured on this project's 2-core AVX-512 machine, float32, batch 8, with
# benchmarks/direct_vs_im2col.py (docs/algorithms.md has the table). im2col's cost is one copy
# of every window element plus a GEMM with Og = O/groups rows; direct does the multiply-adds at
# about half of BLAS's rate (2x3 register tiles on flattened planes) but copies nothing. Direct
# won every direction with 2, 4 and 8 output channels per group at stride 1 (ResNeXt's
# 8-per-group layer: 4.2 against 9.2 ms forward, 7.3 against 11.4 backward-data, 8.5 against
# 13.8 backward-weight); at 16 the two split the directions, from 32 up im2col won. At stride 2
# direct computes on a grid twice as wide as the output and lost 3-6x at 16 per group.
DIRECT_BELOW_OUT_CHANNELS_PER_GROUP = 8
DIRECT_AT_STRIDE_1_UP_TO = 8


def direct_or_im2col(op, p):
    """The measured rule between the two general algorithms."""
    per_group = p.y_shape[1] // p.groups
    limit = DIRECT_AT_STRIDE_1_UP_TO + 1 if p.stride == (1, 1) else \
        DIRECT_BELOW_OUT_CHANNELS_PER_GROUP
    if per_group < limit:
        return "direct", (f"{per_group} output channel(s) per group: im2col's GEMMs would have "
                          f"{per_group} row(s), and copying the windows would cost more than "
                          f"the arithmetic it speeds up")
    return "im2col", (f"{per_group} output channels per group: one BLAS GEMM per column tile "
                      f"beats the loop nest")

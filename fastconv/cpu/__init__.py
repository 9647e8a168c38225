"""The CPU backend: Numba kernels (the matrix products among them single-threaded BLAS GEMMs
inside Numba's parallel loops, ``_blas``), one module per algorithm family, each with the entry
points of its family (see ``fastconv.reference``).

Convolution: ``direct``, ``blocked`` (register tiles, ``_simd``), ``im2col``, ``depthwise``,
``pointwise``. Pooling and batch norm: ``direct``. :func:`auto_rule` is the ``auto`` rule for
convolutions.
"""
from __future__ import annotations

import functools

from ..registry import Algorithm
from . import batchnorm, blocked, depthwise, direct, im2col, pointwise, pool
from ._simd import PIXEL_ROWS


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
        Algorithm("blocked", family="conv", kernels=blocked,
                  summary="the loop nest on register tiles: 4 vectors of output channels x 6 "
                          "pixels of accumulators, input values broadcast",
                  workspace_bytes=blocked.workspace_bytes, **common),
        Algorithm("im2col", family="conv", kernels=im2col,
                  summary="windows copied into column tiles, then BLAS GEMM",
                  workspace_bytes=im2col.workspace_bytes, **common),
        Algorithm("direct", family="conv", kernels=direct,
                  summary="the convolution loop nest on flattened planes, 2x3 register tiles",
                  workspace_bytes=direct.workspace_bytes, **common),
        Algorithm("direct", family="pool", kernels=pool,
                  summary="one pass over each window, one task per plane",
                  workspace_bytes=pool.workspace_bytes, **common),
        Algorithm("direct", family="batch_norm", kernels=batchnorm,
                  summary="two-pass float64 statistics, one fused elementwise pass",
                  workspace_bytes=batchnorm.workspace_bytes, **common),
    ]


def auto_rule(op, p, candidates):
    """``auto`` for CPU convolutions: the specialised kernels where they apply, otherwise the
    measured rule between im2col and direct (docs/algorithms.md). Pooling and batch norm have
    one Numba algorithm each: None leaves them to the dispatcher's default."""
    if not hasattr(p, "w_shape"):  # pooling or batch norm
        return None
    if "depthwise" in candidates:
        return "depthwise", "groups == in_channels: a per-channel stencil, no channel reduction"
    lanes = blocked.tiled_kernels(op, p)  # each kernel of the call: outputs per group
    if "pointwise" in candidates:
        if "blocked" in candidates and blocked_beats_pointwise(lanes, p):
            where = ("a weight gradient alone" if set(lanes) == {"backward_weight"} else
                     f"a plane of at most {POINTWISE_BLOCKED_PLANE} pixels on {host_cpu()}")
            return "blocked", (f"1x1 kernel, but {where}, with {POINTWISE_BLOCKED_LANES}+ "
                               "output channels per group in every kernel: register tiles beat "
                               "the small per-image GEMMs")
        return "pointwise", "1x1 kernel without padding: a GEMM over channels needs no im2col"
    if "direct" in candidates and direct_tiles_win(lanes, p):
        return "direct", (f"{max(lanes.values())} output channels per group at stride 1, fewer "
                          f"than {DIRECT_TILES_BELOW}, on planes of {DIRECT_TILES_MIN_PLANE}+ "
                          f"pixels: direct's pixel tiles (8 channels x 48 grid positions in "
                          f"registers) fill every lane, where blocked's tiles of 64 channels "
                          f"would not")
    if "blocked" in candidates and lanes and min(lanes.values()) >= blocked.MIN_LANES \
            and not small_plane_few_lanes(lanes, p):
        counts = ", ".join(f"{kernel} {count}" for kernel, count in lanes.items())
        return "blocked", (f"output channels per group on register tiles: {counts}; tiles of 4 "
                           f"vectors of output channels x 6 pixels keep both FMA units busy "
                           f"and copy no windows (blocked from {blocked.MIN_LANES} per group)")
    if "im2col" in candidates and "direct" in candidates:
        return direct_or_im2col(op, p)
    return None


# Measured on this project's 2-core AVX-512 machine (Intel Xeon), float32, batch 8, with
# benchmarks/direct_vs_im2col.py (docs/algorithms.md has the table). im2col's cost is one copy
# of every window element plus a GEMM with Og = O/groups rows; direct does the multiply-adds at
# about half of BLAS's rate but copies nothing. At stride 1 the crossover depends on the kernel
# and on whether the layer is grouped (many small GEMMs, one per group and tile), so the rule
# is a table of the most output channels per group at which direct still wins, per kernel set
# a call runs: dense layers 8 in every direction; grouped layers 4 forward (ResNeXt's 8 per
# group: 3.8 against 4.9 ms for im2col), 8 backward-data, none backward-weight (im2col's GEMM
# per group beat direct's dot products even at 2 per group: 2.8 against 3.7 ms), and 4 for a
# backward computing both gradients (at 8 per group the sums are 9.8 against 12.8 ms).
# At other strides direct computes on a grid wider than the output, and wins only below 8 per
# group (it lost 3-6x at 16).
# Since direct's forward and stride-1 backward-data run on pixel tiles (direct_tiles_win), and
# its weight gradient at column stride 1 on pixel grad tiles, the sets with backward-weight were
# re-measured (2 cores, AMD EPYC, ms backward-data + backward-weight, direct against im2col):
# 16->16 @64 batch 16 1.22 + 2.40 against 3.68 + 2.86; ResNeXt's 8 per group 1.19 + 2.80
# against 3.13 + 3.30; 16 per group 2.21 + 9.27 against 4.25 + 4.28; 32->32 @32 (blocked
# 1.78 + 2.58 there).
DIRECT_UP_TO = {  # (grouped, kernels run) -> most output channels per group for direct
    (False, ("forward",)): 8, (False, ("backward_data",)): 8,
    (False, ("backward_weight",)): 16, (False, ("backward_data", "backward_weight")): 16,
    (True, ("forward",)): 4, (True, ("backward_data",)): 8,
    (True, ("backward_weight",)): 8, (True, ("backward_data", "backward_weight")): 8,
}
DIRECT_BELOW_OUT_CHANNELS_PER_GROUP = 8  # at strides other than 1


# 1x1 without padding, pointwise (one GEMM per image and group) against blocked (ms forward /
# backward-data / backward-weight, 2 cores). AMD EPYC (Zen 5): 64->256 @56 batch 8
# 4.27/4.34/4.78 against 5.16/5.27/4.17; 256->64 @56 4.28/4.02/4.47 against 4.85/6.32/3.85;
# 128->256 @28 1.88/1.96/1.96 against 1.32/1.36/1.26; 96->24 @16 batch 16 0.12/0.14/0.24
# against 0.25/0.20/0.33. Intel Xeon (LLVM: rocketlake), `bench --algo all`: 64->256 @56
# 3.15/4.09/4.19 against 4.54/5.19/3.35; 256->64 @56 4.00/3.29/4.60 against 4.03/5.13/3.00;
# 128->256 @28 1.43/1.51/1.96 against 1.89/1.80/1.48; on an AMD EPYC Zen 4 pointwise also won
# 128->256 @28's forward. So blocked takes a weight gradient of 64+ channels everywhere, and
# the other directions on planes of up to 28x28 pixels with 64+ channels on both sides only on
# the CPUs where that was measured faster (POINTWISE_BLOCKED_CPUS, LLVM's name of the host).
POINTWISE_BLOCKED_PLANE = 28 * 28
POINTWISE_BLOCKED_LANES = 64
POINTWISE_BLOCKED_CPUS = frozenset({"znver5"})


@functools.lru_cache(maxsize=1)
def host_cpu() -> str:
    """LLVM's name of this CPU (what Numba compiles for): "znver4", "sapphirerapids", ..."""
    import llvmlite.binding

    return llvmlite.binding.get_host_cpu_name()


def blocked_beats_pointwise(lanes, p):
    """lanes: blocked.tiled_kernels of the call."""
    if not lanes or min(lanes.values()) < POINTWISE_BLOCKED_LANES:
        return False
    return set(lanes) == {"backward_weight"} or (
        host_cpu() in POINTWISE_BLOCKED_CPUS
        and p.y_shape[2] * p.y_shape[3] <= POINTWISE_BLOCKED_PLANE)


# direct's forward at column stride 1 runs on pixel tiles (8 output channels x 3 vectors of
# grid positions in registers, fastconv.cpu._simd.pixel_tile), and so does its backward-data at
# stride 1: measured (2 cores, AMD EPYC, ms forward / backward-data, direct against blocked):
# 16->16 @64 batch 16 1.65/1.22 against 3.30/3.44; 32->32 @32 1.28/1.27 against 2.70/1.78;
# ResNeXt's 8 per group 1.58/1.33 against 9.54/10.73; 64->64 @16 2.15/1.84 against 1.50/1.19,
# @56 6.49/6.97 against 5.89/6.14. So below 64 output channels per group they are direct's.
DIRECT_TILES_BELOW = 64
# A pixel tile spans 48 positions of the flattened output grid, so on small planes much of each
# tile is thrown away: measured (Intel Xeon, 2 cores, us forward, direct against im2col, 3x3
# padding 1) 16->32 @4 batch 32 (LeNet's second conv) 205 against 79; @8 269 against 188;
# 32->32 @12 batch 16 370 against 341, @16 485 against 605. So direct's tiles take output
# planes of at least 14x14 pixels.
DIRECT_TILES_MIN_PLANE = 14 * 14


def small_plane_few_lanes(lanes, p):
    """Output planes under DIRECT_TILES_MIN_PLANE pixels with fewer than DIRECT_TILES_BELOW
    output channels per group in some kernel: there im2col's GEMMs beat blocked's tiles too
    (us forward, Intel Xeon: 16->32 @4 batch 32 79 against 121; 32->32 @8 batch 16 192
    against 232), and direct_or_im2col decides."""
    return bool(lanes) and p.y_shape[2] * p.y_shape[3] < DIRECT_TILES_MIN_PLANE and \
        min(lanes.values()) < DIRECT_TILES_BELOW


def direct_tiles_win(lanes, p):
    """Whether every kernel of the call (lanes: blocked.tiled_kernels) is a forward at column
    stride 1 or a stride-1 backward-data, each with at least one tile's worth (PIXEL_ROWS) and
    fewer than DIRECT_TILES_BELOW output channels per group (below a tile, direct_or_im2col
    decides), on output planes of at least DIRECT_TILES_MIN_PLANE pixels."""
    fits = {"forward": p.stride[1] == 1, "backward_data": p.stride == (1, 1)}
    return bool(lanes) and p.y_shape[2] * p.y_shape[3] >= DIRECT_TILES_MIN_PLANE and all(
        fits.get(k, False) and PIXEL_ROWS <= n < DIRECT_TILES_BELOW for k, n in lanes.items())


def direct_or_im2col(op, p):
    """The measured rule between the two general algorithms."""
    per_group = p.y_shape[1] // p.groups
    if p.stride == (1, 1):
        kernels = tuple(k for k in ("forward", "backward_data", "backward_weight")
                        if k in p.kernel_calls(op))
        grouped = p.groups > 1
        limit = DIRECT_UP_TO.get((grouped, kernels), 8)
        runs = " + ".join(kernels) or "bias gradient"
        where = f"{'grouped' if grouped else 'dense'} {runs} at stride 1"
    else:
        limit, where = DIRECT_BELOW_OUT_CHANNELS_PER_GROUP - 1, f"stride {p.stride}"
    if per_group <= limit:
        return "direct", (f"{per_group} output channel(s) per group, {where}: im2col's GEMMs "
                          f"would have {per_group} row(s), and copying the windows costs more "
                          f"than the arithmetic it speeds up (direct up to {limit})")
    return "im2col", (f"{per_group} output channels per group, {where}: BLAS GEMMs over copied "
                      f"windows beat the loop nest (direct only up to {limit})")

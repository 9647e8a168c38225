"""Loading the CUDA sources: one ``cupy.RawModule`` per (device, source file), compiled once
(by NVRTC, through CuPy, which also keeps the binary in its on-disk cache) with every
specialisation of every kernel in the file, and the launch arithmetic shared by all kernels.

A kernel is a template over the dtype and the index type (and, for the tiled kernels, the tile
sizes); its name expression spells them, e.g. ``max_pool_forward<float, int>`` (32-bit
indices) or ``direct_forward<double, long long, 8, 32, 4>`` (64-bit, an 8x32 tile), and the
compiled (mangled) name encodes them. The sources live in ``kernels/``; each is compiled with
``kernels/common.cuh`` in front of it.

CuPy is imported only when a kernel is first wanted, so that the dispatcher can list and
explain the CUDA algorithms on a machine without CuPy or a GPU.
"""
from __future__ import annotations

import threading
from importlib import resources
from typing import NamedTuple

import numpy as np

from ..registry import index_bits  # noqa: F401  (the kernels' index width, one rule)

THREADS = 256          # threads per block: FC_THREADS in common.cuh
MAX_BLOCKS = 65_535 * 32  # grid-stride loops cover the rest
OPTIONS = ("-std=c++17",)

# every kernel of every source file; each is compiled for both dtypes and both index widths
KERNELS = {
    "pool.cu": ("max_pool_forward", "max_pool_backward", "avg_pool_forward", "avg_pool_backward",
                "adaptive_avg_pool_forward", "adaptive_avg_pool_backward"),
    "batchnorm.cu": ("bn_mean_var", "bn_affine", "bn_gradient_sums", "bn_input_gradient",
                     "channel_sum"),
    "conv.cu": ("direct_forward", "direct_backward_data", "direct_backward_weight",
                "depthwise_forward", "depthwise_backward_data", "im2col", "col2im"),
    "implicit_gemm.cu": ("implicit_gemm_forward", "implicit_gemm_backward_data",
                         "implicit_gemm_backward_weight", "implicit_gemm_slice_sum"),
}


class GemmTile(NamedTuple):
    """implicit GEMM: bm x bn outputs per block, K in steps of bk, tm x tn outputs per thread."""
    bm: int
    bn: int
    bk: int
    tm: int
    tn: int

    @property
    def threads(self) -> int:
        return (self.bm // self.tm) * (self.bn // self.tn)


class DirectTile(NamedTuple):
    """direct: th x tw pixels per block, cb channels per thread (one pixel each)."""
    th: int
    tw: int
    cb: int

    @property
    def threads(self) -> int:
        return self.th * self.tw


# The tiled kernels' tiles, their template arguments after T and I; 256 threads per block.
GEMM_TILE = GemmTile(64, 64, 16, 4, 4)
DIRECT_TILE = DirectTile(8, 32, 4)
TILES = {
    **dict.fromkeys(("implicit_gemm_forward", "implicit_gemm_backward_data",
                     "implicit_gemm_backward_weight"), GEMM_TILE),
    **dict.fromkeys(("direct_forward", "direct_backward_data"), DIRECT_TILE),
}
C_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
INDEX_TYPES = {32: "int", 64: "long long"}

_MODULES: dict = {}
_LOCK = threading.Lock()


def source(filename: str) -> str:
    """The text NVRTC compiles for ``filename``: common.cuh, then the file."""
    folder = resources.files(__package__) / "kernels"
    return (folder / "common.cuh").read_text() + "\n" + (folder / filename).read_text()


def expression(name: str, dtype, index_bits: int) -> str:
    """The name expression of one specialisation, e.g. ``im2col<float, int>``, or with the tile
    sizes, ``implicit_gemm_forward<double, long long, 64, 64, 16, 4, 4>``."""
    args = [C_TYPES[np.dtype(dtype)], INDEX_TYPES[index_bits], *map(str, TILES.get(name, ()))]
    return f"{name}<{', '.join(args)}>"


def tile_threads(name: str) -> int:
    """Threads per block of the tiled kernel ``name``."""
    return TILES[name].threads


def expressions(filename: str) -> list[str]:
    """Every specialisation of every kernel in ``filename``."""
    return [expression(name, dtype, bits) for name in KERNELS[filename]
            for dtype in C_TYPES for bits in INDEX_TYPES]


def _file_of(name: str) -> str:
    return next(f for f, names in KERNELS.items() if name in names)


def kernel(name: str, dtype, index_bits: int):
    """The compiled kernel ``name`` for ``dtype`` and ``index_bits`` on the current device.

    The first kernel wanted from a file compiles the whole file, every specialisation of every
    kernel in it, once per device, under a lock: ``RawModule`` compiles lazily, at its first
    ``get_function``, so a module made under the lock but compiled outside it let two threads
    compile the same file at once. A CUDA graph cannot capture a compilation: make one call of
    each op family before capturing."""
    import cupy

    filename = _file_of(name)
    key = (cupy.cuda.Device().id, filename)
    module = _MODULES.get(key)
    if module is None:
        with _LOCK:
            module = _MODULES.get(key)
            if module is None:
                module = cupy.RawModule(code=source(filename), options=OPTIONS,
                                        name_expressions=expressions(filename))
                module.compile()
                _MODULES[key] = module
    return module.get_function(expression(name, dtype, index_bits))


def index(bits: int, value: int):
    """``value`` as the kernel's index type I."""
    return np.int32(value) if bits == 32 else np.int64(value)


def launch_grid(name: str, dtype, bits: int, grid: tuple, args) -> None:
    """Launch the tiled kernel ``name`` on CuPy's current stream over a 3-D ``grid`` of tiles."""
    if 0 in grid:
        return
    kernel(name, dtype, bits)(grid, (tile_threads(name),), args)


def launch(name: str, dtype, bits: int, work: int, args, blocks: int | None = None) -> None:
    """Launch ``name`` on CuPy's current stream over ``work`` items with grid-stride loops, or
    with ``blocks`` blocks (one per result or per tile; grid-stride past MAX_BLOCKS)."""
    if blocks is None:
        blocks = min(max(1, -(-work // THREADS)), MAX_BLOCKS)
    if work == 0 or blocks == 0:
        return
    threads = tile_threads(name) if name in TILES else THREADS
    kernel(name, dtype, bits)((min(blocks, MAX_BLOCKS),), (threads,), args)

"""Tunables of the kernels, in one place. Tests patch them (tiny tiles, so that small inputs still
span many tiles); users may too, at their own risk.
"""
import sys
import types

# im2col: the column buffer of one task (a tile of output rows of one image) is kept within this
# many bytes, at least one output row's columns; one buffer per thread. See fastconv.cpu.im2col.
IM2COL_TILE_BYTES = 2 * 2**20

# im2col: a call is cut into at least this many tiles where it has the output rows (a small
# batch fits one 2 MiB tile, and one tile is one thread's work). A constant, not the thread
# count, so the tiles, and with them every result bit, are the same on any machine. LeNet's
# (32, 16, 4, 4) conv 3x3 on 2 cores, forward / backward: 1 tile 333 / 576 us, 2 tiles
# 227 / 473, 4 tiles 205 / 464, 8 tiles 218 / 508.
IM2COL_MIN_TILES = 4

# direct: output channels that one parallel task computes together, reusing each input row.
DIRECT_OUT_CHANNELS_PER_TASK = 8

# CUDA im2col: the columns of as many whole images as fit in this many bytes (at least one
# image) are built at once and multiplied by one batched cuBLAS GEMM, see fastconv.cuda.im2col.
CUDA_IM2COL_WORKSPACE_BYTES = 256 * 2**20

# direct: accumulator elements per output channel that a task keeps at once (whole output
# rows, at least one); with the channel block they should fit in L1.
DIRECT_CHUNK = 512

# A CPU call whose work (floating-point operations plus elements read and written) is below this
# runs on one thread: starting a parallel loop's threads costs 2-4 us, which such a call does
# not win back (PyTorch's grain size is the same 2**15 elements). Tests set it to 0, so that
# their small inputs exercise the parallel loops as large ones do.
CPU_ONE_THREAD_BELOW = 2**15


# Counts the assignments to the tunables (``config.X = ...``, monkeypatch.setattr included):
# part of the key of every remembered plan, so that a patched tunable takes effect at once.
# One int in the key in place of the values themselves, which cost 0.3 us more a call to read,
# hash and compare. It only grows, across a reload of this module too.
generation = globals().get("generation", -1) + 1


class _Tunables(types.ModuleType):
    """This module's type: an assignment to a tunable (or its deletion) counts one more
    generation."""

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        if name.isupper():
            super().__setattr__("generation", self.generation + 1)

    def __delattr__(self, name):
        super().__delattr__(name)
        if name.isupper():
            super().__setattr__("generation", self.generation + 1)


sys.modules[__name__].__class__ = _Tunables

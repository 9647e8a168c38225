"""How close the memory-bound zoo rows come to the memory system's floor, beside PyTorch.

    python benchmarks/memory_floor.py [--threads 2] [--out FILE]

Batch-norm backward and max-pool backward move far more bytes than they compute with: any
implementation must read its inputs and write its output at least once. For each such row of
the zoo this times, in one process with the bench's fair rounds (an idle gap before each
contender's block), three calls on the same arrays:

* **floor**: a Numba kernel that does nothing but that traffic, plane by plane on every thread
  (batch norm: ``gx = gy + x``, which reads x and grad_y once and writes grad_x once, with
  fastconv's non-temporal stores, so not reading gx's lines first; max pool:
  grad_x's planes written, grad_y and the indices read, no scatter): what no batch-norm or
  max-pool backward can go below on this machine, whatever its arithmetic;
* **fastconv**: the bench's call (auto);
* **PyTorch**: the bench's baseline call.

and prints the medians and the ratios floor/PyTorch and fastconv/PyTorch. Where floor/PyTorch
is above a target ratio, the target lies below what the memory system allows. Run it alone on
the machine (no other benchmark or test beside it).
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
from numba import njit, prange

from fastconv.cpu._simd import store_fence, stream_affine

ROWS = [("batchnorm-64@112", "backward"), ("batchnorm-256@56", "backward"),
        ("maxpool-3x3s2p1-64@112", "backward")]


@njit(parallel=True, cache=True)
def _bn_floor(gy, x, gx):
    # gy, x, gx (N*C, L): gx = gy + x, one read of each input and one write of the output,
    # stored non-temporally (as fastconv's batch norm stores outputs this large): no read of
    # the lines gx is written to
    length = gx.shape[1]
    gy_flat, x_flat, gx_flat = gy.reshape(gy.size), x.reshape(x.size), gx.reshape(gx.size)
    for plane in prange(gx.shape[0]):
        at = plane * length
        stream_affine(gx_flat, at, length, gy_flat, x_flat, at, 1.0, 1.0, 0.0, 0.0, 1)
        store_fence()


@njit(parallel=True, cache=True)
def _maxpool_floor(gy, indices, gx):
    # gy, indices (N*C, Ho*Wo), gx (N*C, H*W): every element of gx written, every element of
    # gy and indices read (their sum lands in the plane's first element, so none is skipped)
    for plane in prange(gx.shape[0]):
        total = 0.0
        for i in range(gy.shape[1]):
            total += gy[plane, i] + indices[plane, i]
        for i in range(gx.shape[1]):
            gx[plane, i] = 0.0
        gx[plane, 0] = total


def floor_call(call):
    """A zero-argument callable doing the minimum traffic of ``call`` (see the docstring)."""
    if call.op == "batch_norm_backward":
        gy, x = call.args[0], call.args[1]
        n, c = x.shape[:2]
        gx = np.empty((n * c, x[0, 0].size), dtype=x.dtype)
        args = gy.reshape(n * c, -1), x.reshape(n * c, -1), gx
        return lambda: _bn_floor(*args)
    if call.op == "max_pool2d_backward":
        gy, x = call.args[0], call.args[1]
        indices = call.kwargs["indices"]
        n, c = x.shape[:2]
        gx = np.empty((n * c, x[0, 0].size), dtype=x.dtype)
        args = gy.reshape(n * c, -1), indices.reshape(n * c, -1), gx
        return lambda: _maxpool_floor(*args)
    raise ValueError(f"no floor kernel for {call.op!r}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="also write the report to this file")
    args = parser.parse_args(argv)

    import torch

    import fastconv
    from fastconv.bench import baseline, timing, zoo

    torch.set_num_threads(args.threads)
    timing.pin_threads(args.threads)
    device = timing.cpu_device(args.threads)
    lines = [f"memory floor of the memory-bound rows: machine {device.line()}; "
             f"{args.threads} threads; median ms over the bench's fair rounds", "",
             f"{'layer':24} {'dir':4} {'floor':>8} {'fastconv':>9} {'torch':>8} "
             f"{'floor/torch':>12} {'fastconv/torch':>15}"]
    print("\n".join(lines), flush=True)
    for name, direction in ROWS:
        call = zoo.BY_NAME[name].calls(np.float32)[direction]
        fns = {"floor": floor_call(call),
               "fastconv": lambda call=call: getattr(fastconv, call.op)(*call.args,
                                                                          **call.kwargs),
               "torch": baseline.torch_call(call)}
        t = {k: v.summary()["median_ms"] for k, v in timing.measure_together(
            fns, min_repeat=30, min_time=1.5).items()}
        lines.append(f"{name:24} {direction[:3]:4} {t['floor']:8.3f} {t['fastconv']:9.3f} "
                     f"{t['torch']:8.3f} {t['floor'] / t['torch']:12.2f} "
                     f"{t['fastconv'] / t['torch']:15.2f}")
        print(lines[-1], flush=True)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

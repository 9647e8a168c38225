"""The measurements behind the CPU auto rule between direct and im2col (docs/algorithms.md).

    python benchmarks/direct_vs_im2col.py [--repeat 5]

Median ms of each algorithm in each direction over layers chosen to probe the rule: grouped
layers with 2, 4 and 8 output channels per group, few-channel layers, large kernels, and dense
ResNet layers.
"""
from __future__ import annotations

import argparse

import numpy as np

import fastconv
from fastconv.bench.timing import cores, measure, pin_threads

LAYERS = [
    ((8, 256, 28, 28), (256, 2, 3, 3), dict(padding=1, groups=128)),
    ((8, 256, 28, 28), (256, 4, 3, 3), dict(padding=1, groups=64)),
    ((8, 256, 28, 28), (128, 4, 3, 3), dict(padding=1, groups=64)),
    ((8, 256, 28, 28), (256, 8, 3, 3), dict(padding=1, groups=32)),
    ((8, 256, 28, 28), (256, 16, 3, 3), dict(padding=1, groups=16)),
    ((8, 256, 28, 28), (256, 32, 3, 3), dict(padding=1, groups=8)),
    ((8, 512, 14, 14), (512, 16, 3, 3), dict(padding=1, groups=32, stride=2)),
    ((8, 64, 56, 56), (64, 16, 3, 3), dict(padding=1, groups=4)),
    ((8, 1, 224, 224), (16, 1, 5, 5), dict(padding=2)),
    ((8, 3, 224, 224), (8, 3, 3, 3), dict(padding=1)),
    ((8, 8, 112, 112), (8, 8, 3, 3), dict(padding=1)),
    ((8, 4, 56, 56), (4, 4, 7, 7), dict(padding=3)),
    ((8, 16, 112, 112), (16, 16, 3, 3), dict(padding=1)),
    ((8, 32, 112, 112), (32, 32, 3, 3), dict(padding=1, stride=2)),
    ((8, 64, 56, 56), (64, 64, 3, 3), dict(padding=1)),
    ((1, 64, 56, 56), (64, 64, 3, 3), dict(padding=1)),
    ((8, 3, 224, 224), (64, 3, 7, 7), dict(stride=2, padding=3)),
    ((8, 512, 7, 7), (512, 512, 3, 3), dict(padding=1)),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    pin_threads(cores())
    rng = np.random.default_rng(0)
    print(f"{'x':18} {'weight':16} {'params':28} {'auto':7} "
          f"{'fwd direct/im2col':>18} {'bwd-data':>15} {'bwd-weight':>15}")
    for xs, ws, kw in LAYERS:
        x = rng.standard_normal(xs).astype(np.float32)
        w = rng.standard_normal(ws).astype(np.float32)
        gy = rng.standard_normal(fastconv.explain("conv2d", xs, ws, **kw)["output_shapes"][0])
        gy = gy.astype(np.float32)
        calls = {
            "fwd": lambda a: fastconv.conv2d(x, w, **kw, algo=a),
            "bwd-data": lambda a: fastconv.conv2d_backward(gy, x, w, **kw, algo=a,
                                                           output_mask=(True, False, False)),
            "bwd-weight": lambda a: fastconv.conv2d_backward(gy, x, w, **kw, algo=a,
                                                             output_mask=(False, True, False)),
        }
        cells = []
        for fn in calls.values():
            d, i = (1e3 * measure(lambda: fn(a), min_repeat=args.repeat, min_time=0).median
                    for a in ("direct", "im2col"))
            cells.append(f"{d:7.2f}/{i:<7.2f}")
        auto = fastconv.explain("conv2d", xs, ws, **kw)["algo"]
        print(f"{str(xs):18} {str(ws):16} {str(kw):28} {auto:7} " + "  ".join(cells), flush=True)


if __name__ == "__main__":
    main()

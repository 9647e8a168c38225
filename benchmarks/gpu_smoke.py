"""One small call of every op through every CUDA algorithm, forward and backward, in both
dtypes, each checked against the NumPy reference: the workload compute-sanitizer runs under in
benchmarks/gpu.sh (racecheck, synccheck, memcheck), small enough to finish under its tools, on
CuPy's plain allocator (no pool), so that memcheck sees every array's bounds. Every call runs
twice: with the index width the modules choose (32 bits at these sizes), then with the 64-bit
specialisations forced, as tests/cuda/test_host_emulation.py does on the host.
Exits 1 on any mismatch; needs a GPU.

    python benchmarks/gpu_smoke.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

CALLS = [  # (op, shapes, kwargs): one of each kernel's kind, with padding, stride and groups
    ("conv2d", ((2, 4, 9, 7), (6, 2, 3, 3), (6,)), dict(stride=2, padding=1, groups=2)),
    ("conv2d", ((2, 4, 9, 7), (8, 1, 3, 3), (8,)), dict(padding=1, groups=4)),  # depthwise
    ("conv2d", ((2, 4, 9, 7), (6, 4, 1, 1), None), {}),  # pointwise
    # a 5x5 filter (direct's weight gradient in chunks of taps) over 800 outputs (implicit
    # GEMM's weight gradient in slices of K)
    ("conv2d", ((2, 4, 20, 20), (6, 4, 5, 5), (6,)), dict(padding=2)),
    # a dilated window wider than direct's shared patch: its taps read global memory
    ("conv2d", ((1, 2, 70, 70), (4, 2, 3, 3), None), dict(dilation=30, padding=1)),
    ("conv1d", ((2, 4, 11), (6, 4, 3), (6,)), dict(dilation=2)),
    ("conv_transpose2d", ((2, 4, 5, 4), (4, 3, 3, 3), (3,)), dict(stride=2, padding=1)),
    ("max_pool2d", ((2, 3, 9, 8),), dict(kernel_size=3, stride=2, padding=1)),
    ("avg_pool2d", ((2, 3, 9, 8),), dict(kernel_size=3, stride=2, padding=1,
                                         count_include_pad=False)),
    ("adaptive_avg_pool2d", ((2, 3, 9, 8),), dict(output_size=(4, 3))),
    ("batch_norm", ((4, 3, 5, 6), (3,), (3,), (3,), (3,)), dict(training=True)),
]


def main() -> int:
    from fastconv import cuda

    if not cuda.available():
        print("gpu_smoke: no CUDA device visible; nothing run")
        return 0
    import cupy

    # no memory pool: every array its own allocation, so that memcheck sees a read or write
    # past an array's end (inside a pool's chunk it would land in memory the process owns)
    cupy.cuda.set_allocator(None)
    failures = run()
    for f in failures:
        print("FAIL", f)
    print(f"gpu_smoke: {2 * len(CALLS) - len(failures)} of {2 * len(CALLS)} calls (each with "
          f"the chosen and with 64-bit indices) match the reference through every CUDA "
          f"algorithm")
    return 1 if failures else 0


def run() -> list:
    """Every call of CALLS through every CUDA algorithm against the reference, with the index
    width the modules choose and then with 64-bit indices forced; the failures."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import grids

    from fastconv.cuda import _conv, batchnorm, im2col, implicit_gemm, pool

    rng = np.random.default_rng(0)
    failures = []
    for bits in (None, 64):  # as chosen (32-bit indices here), then the 64-bit kernels
        picks = [(m, m.index_bits) for m in (_conv, batchnorm, im2col, implicit_gemm, pool)]
        if bits:
            for module, _ in picks:  # each module that picks an index width
                module.index_bits = lambda *sizes: bits
        try:
            for op, shapes, kwargs in CALLS:
                case = grids.Case(op, shapes, kwargs)
                try:  # every CUDA algorithm that serves it, both directions and dtypes
                    grids.check_algorithms(case, rng, "cuda")
                except AssertionError as e:
                    failures.append(f"{op}[{case}] ({bits or 'chosen'}-bit indices): {e}")
        finally:
            for module, pick in picks:
                module.index_bits = pick
    return failures


if __name__ == "__main__":
    sys.exit(main())

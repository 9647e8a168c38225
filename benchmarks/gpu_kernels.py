"""Every CUDA kernel specialisation's resources on the visible GPU: registers, local memory
(spills), static shared memory and the most threads a block may have, one line each; exits 1
if any kernel uses local memory or more than 48 KiB of shared memory, or allows fewer threads
per block than fastconv launches it with. Run by benchmarks/gpu.sh; needs a GPU.

    python benchmarks/gpu_kernels.py
"""
from __future__ import annotations

import sys

import numpy as np

SHARED_LIMIT = 48 * 1024  # bytes of static shared memory a block may take without opting in


def main() -> int:
    from fastconv import cuda
    from fastconv.cuda import _module

    if not cuda.available():
        print("gpu_kernels: no CUDA device visible; nothing checked")
        return 0
    import cupy

    device = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"].decode()
    print(f"kernel resources on {device} (registers, local bytes, shared bytes, max threads)")
    failures = []
    for filename, names in _module.KERNELS.items():
        for name in names:
            threads = _module.tile_threads(name) if name in _module.TILES else _module.THREADS
            for dtype in (np.float32, np.float64):
                for bits in (32, 64):
                    k = _module.kernel(name, dtype, bits)
                    expr = _module.expression(name, dtype, bits)
                    line = (f"{expr:60s} regs {k.num_regs:4d}  local {k.local_size_bytes:6d}  "
                            f"shared {k.shared_size_bytes:6d}  max threads "
                            f"{k.max_threads_per_block:5d}")
                    problems = []
                    if k.local_size_bytes:
                        problems.append("local memory")
                    if k.shared_size_bytes > SHARED_LIMIT:
                        problems.append("shared memory past 48 KiB")
                    if k.max_threads_per_block < threads:
                        problems.append(f"fewer than the {threads} threads it is launched with")
                    if problems:
                        failures.append(f"{expr}: {', '.join(problems)}")
                    print(line + ("  <- " + "; ".join(problems) if problems else ""))
    print(f"{len(failures)} kernel(s) failing" if failures else "every kernel within limits")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

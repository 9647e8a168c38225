"""Median time of every CPU algorithm next to PyTorch's, over the layer zoo, in one run.

    python benchmarks/compare_cpu.py [--repeat 7] [--layers NAME ...] [--json FILE]

Both libraries use every core of the machine (Numba's and BLAS's threads, torch.set_num_threads);
each call is warmed up (JIT compile excluded) and then timed ``--repeat`` times; the table shows
the median in ms, with the ratio of the fastest fastconv algorithm to PyTorch.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fastconv  # noqa: E402
from baseline import torch_call  # noqa: E402
from shapes import ZOO  # noqa: E402


def median_ms(fn, repeat):
    fn()  # warm-up: JIT compile, caches, allocator
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times)), 1e3 * float(np.percentile(times, 75) - np.percentile(times, 25))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--layers", nargs="*")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(os.cpu_count())
    rows = []
    for layer in ZOO:
        if args.layers and layer.name not in args.layers:
            continue
        for direction, (op, call_args, kwargs) in layer.calls(np.float32).items():
            shapes = [None if a is None else a.shape for a in call_args]
            info = fastconv.explain(op, *shapes, **kwargs)
            row = {"layer": layer.name, "direction": direction, "op": op, "auto": info["algo"],
                   "flops": info["flops"], "times": {}}
            row["times"]["torch"] = median_ms(torch_call(op, call_args, kwargs), args.repeat)
            for algo in info["candidates"]:
                if algo == "reference":
                    continue
                fn = getattr(fastconv, op)
                row["times"][algo] = median_ms(
                    lambda: fn(*call_args, **kwargs, algo=algo), args.repeat)
            rows.append(row)
            print(format_row(row), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "repeat": args.repeat, "unit": "ms (median, IQR)",
                       "rows": rows}, f, indent=1)


def machine():
    """What the numbers were measured on."""
    import platform

    import numba
    import torch

    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": model, "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "numpy": np.__version__,
            "numba": numba.__version__, "numba_threading_layer": numba.threading_layer(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "date": time.strftime("%Y-%m-%d")}


def format_row(row):
    times = row["times"]
    ours = {k: v for k, v in times.items() if k != "torch"}
    best = min(ours, key=lambda k: ours[k][0])
    cells = "  ".join(f"{k}={v[0]:.2f}" for k, v in times.items())
    return (f"{row['layer']:34} {row['direction']:15} auto={row['auto']:9} best={best:9} "
            f"ratio={ours[best][0] / times['torch'][0]:5.2f}  {cells}")


if __name__ == "__main__":
    main()

"""Running the benchmark suite: every selected zoo call, with every chosen algorithm, timed next
to PyTorch's kernel for the same call.

:func:`run` yields one row (a plain dict, ready for JSON) per (layer, direction, algorithm) as it
is measured, so that a caller can print the table as it grows; :func:`measure_machine` measures
the roofs first. The timing rules are in :mod:`fastconv.bench.timing`.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from .. import dispatch
from .._validate import check_dtype_name
from . import timing, zoo

TORCH = "torch"  # PyTorch's kernel, among the contenders of a call
DIRECTION_LABELS = {"forward": "fwd", "backward": "bwd", "backward_data": "bwd-data",
                    "backward_weight": "bwd-weight"}


@dataclass
class Options:
    suite: str = "quick"
    layers: list | None = None          # shell patterns of zoo layer names
    ops: list | None = None             # forward ops of the zoo
    algo: str = "auto"                  # "auto", "all", or an algorithm name
    backend: str = "cpu"
    dtype: str = "float32"
    vs_torch: bool = False
    threads: int = field(default_factory=timing.cores)
    min_repeat: int | None = None       # None: the suite's default
    min_time: float | None = None
    idle_gap: float = timing.IDLE_GAP_S  # seconds idle before each timed block

    # (min_repeat, min_time in seconds) of each suite: the quick one for a first look, the
    # full one for numbers to quote
    REPEATS = {"quick": (5, 0.2), "full": (10, 1.0)}

    def repeats(self) -> tuple[int, float]:
        default_n, default_t = self.REPEATS.get(self.suite, self.REPEATS["full"])
        return (default_n if self.min_repeat is None else self.min_repeat,
                default_t if self.min_time is None else self.min_time)


def check_options(o: Options) -> list:
    """Validate before any work; returns the selected layers."""
    if o.backend not in dispatch.BACKENDS:
        raise ValueError(f"backend must be one of {dispatch.BACKENDS}, got {o.backend!r}")
    check_dtype_name("bench", o.dtype)
    timing.check_options(o.threads, *o.repeats(), o.idle_gap)
    layers = zoo.select(o.suite, o.layers, o.ops)
    missing = sorted({layer.op for layer in layers if not dispatch.algorithms(layer.op, o.backend)})
    if missing:
        raise ValueError(f"the {o.backend} backend has no algorithm for {missing} in this "
                         f"version of fastconv")
    if o.algo not in ("auto", "all"):
        known = sorted({name for layer in layers
                        for name in dispatch.algorithms(layer.op, o.backend)})
        if o.algo not in known:
            raise ValueError(f"algo must be 'auto', 'all' or one of {known}, got {o.algo!r}")
    if o.vs_torch:
        try:
            import torch  # noqa: F401
        except ImportError as e:
            raise ValueError("--vs torch needs PyTorch: pip install torch==2.13.0") from e
    return layers


def device_for(o: Options) -> timing.Device:
    if o.backend == "cuda":
        return timing.cuda_device()
    return timing.cpu_device(o.threads)


def measure_machine(device: timing.Device, dtype: str) -> dict:
    peak = timing.measure_peak(device, np.dtype(dtype))
    bandwidth = timing.measure_bandwidth(device)
    n = timing.PEAK_GEMM_ORDER
    blas = "cuBLAS (cupy.matmul)" if device.backend == "cuda" else "NumPy's BLAS"
    return {"peak_flops": peak, "bandwidth": bandwidth,
            "peak_how": f"{dtype} GEMM {n}x{n}x{n} through {blas}",
            "bandwidth_how": f"copy of a {timing.COPY_BYTES // 2**20} MiB array, read + write "
                             f"bytes"}


@dataclass
class Plan:
    """One (layer, direction) and the algorithms to time on it."""

    layer: zoo.Layer
    direction: str
    call: zoo.Call
    info: dict                   # explain() of the auto choice
    algos: list[str]             # what to time ("auto" stands for the dispatcher's choice)
    skipped: dict                # algorithm -> why it cannot serve this call


def plan(o: Options, layers) -> list[Plan]:
    """What :func:`run` will time, in order; arrays are made when a plan runs."""
    plans = []
    for layer in layers:
        for direction, call in layer.signatures().items():
            info = dispatch.explain(call.op, *call.shapes, backend=o.backend, dtype=o.dtype,
                                    **call.explain_kwargs())
            skipped = {}
            if o.algo == "auto":
                algos = ["auto"]
            elif o.algo == "all":
                algos = list(info["candidates"])
            elif o.algo in info["candidates"]:
                algos = [o.algo]
            else:
                algos = []
                skipped[o.algo] = info["rejected"].get(
                    o.algo, f"not an algorithm of {call.op} on {o.backend}")
            plans.append(Plan(layer, direction, call, info, algos, skipped))
    return plans


def run(o: Options, plans: list[Plan], device: timing.Device, roofs: dict, progress=None):
    """Time every plan; yields one row per (layer, direction, algorithm).

    ``progress(label)`` is called before each call is timed, with the call's name.
    """
    torch_call = None
    if o.vs_torch:
        from . import baseline

        baseline.configure(o.backend, o.threads)
        torch_call = baseline.torch_call
    for pl in plans:
        if pl.algos:
            yield from _time_plan(o, pl, device, roofs, torch_call, progress)


def _time_plan(o: Options, pl: Plan, device, roofs, torch_call, progress) -> list[dict]:
    """The rows of one plan, its contenders timed together; its arrays live only while it
    runs."""
    import fastconv

    min_repeat, min_time = o.repeats()
    call = pl.layer.calls(np.dtype(o.dtype), xp=device.xp)[pl.direction]
    fn = getattr(fastconv, call.op)
    if progress:
        progress(f"{pl.layer.name} {DIRECTION_LABELS[pl.direction]}")
    contenders = {algo: (lambda algo=algo: fn(*call.args, **call.kwargs, algo=algo))
                  for algo in pl.algos}
    if torch_call is not None:
        contenders[TORCH] = torch_call(call)
    timings = timing.measure_together(contenders, device.sync, min_repeat=min_repeat,
                                      min_time=min_time, gap=o.idle_gap)
    rows = []
    for algo in pl.algos:
        name = pl.info["algo"] if algo == "auto" else algo
        info = pl.info if name == pl.info["algo"] else dispatch.explain(
            call.op, *call.shapes, backend=o.backend, dtype=o.dtype, algo=name,
            **call.explain_kwargs())
        rows.append(_row(pl, name, info, timings[algo], timings.get(TORCH), roofs))
    return rows


def _row(pl: Plan, algo: str, info: dict, t: timing.Timing, torch_timing, roofs) -> dict:
    seconds = t.median
    flops, moved = info["flops"], info["bytes"]
    row = {
        "layer": pl.layer.name, "op": info["op"], "direction": pl.direction, "algo": algo,
        "auto": algo == pl.info["algo"], "auto_reason": pl.info["reason"],
        "flops": flops, "bytes": moved, "intensity": info["intensity"],
        "workspace_bytes": info["workspace_bytes"], "index_bits": info["index_bits"],
        "time": t.summary(),
        "gflops": flops / seconds / 1e9, "gbytes_per_s": moved / seconds / 1e9,
        "pct_peak": 100 * flops / seconds / roofs["peak_flops"],
        "pct_bandwidth": 100 * moved / seconds / roofs["bandwidth"],
        "torch": None, "ratio": None,
    }
    if torch_timing is not None:
        row["torch"] = torch_timing.summary()
        row["torch_gflops"] = flops / torch_timing.median / 1e9
        row["ratio"] = seconds / torch_timing.median
    return row


def per_call(rows: list[dict]) -> list[dict]:
    """One row per (layer, direction): auto's choice, or the one algorithm that was forced."""
    chosen: dict[tuple, dict] = {}
    for row in rows:
        key = (row["layer"], row["direction"])
        if key not in chosen or row["auto"]:
            chosen[key] = row
    return list(chosen.values())


def summarise(rows: list[dict]) -> dict:
    """Counts, warm-up times, and the geometric mean of the fastconv/PyTorch time ratios over
    the calls (see :func:`per_call`)."""
    calls = per_call(rows)
    ratios = [r["ratio"] for r in calls if r["ratio"] is not None]
    out = {"rows": len(rows), "calls": len(calls), "compared": len(ratios)}
    if ratios:
        out["geomean_ratio"] = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
        out["faster_than_torch"] = sum(r < 1 for r in ratios)
        out["worst_ratio"] = max(ratios)
    out["fastconv_warmup_s"] = sum(r["time"]["first_call_ms"] for r in rows) / 1e3
    out["torch_warmup_s"] = sum(r["torch"]["first_call_ms"] for r in calls if r["torch"]) / 1e3
    return out


# The start-up script: import time, then one small conv2d (as a user's first call: JIT code
# loaded from Numba's on-disk cache, or compiled when there is none), in a fresh interpreter.
_STARTUP = """
import time
t0 = time.perf_counter()
import fastconv
import numpy as np
t1 = time.perf_counter()
fastconv.conv2d(np.ones((1, 3, 8, 8), np.float32), np.ones((4, 3, 3, 3), np.float32), padding=1)
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
"""


def startup(backend: str = "cpu") -> dict:
    """Seconds of ``import fastconv`` and of the first ``conv2d`` call in a fresh process, the
    better of two runs (the first may fill the on-disk cache; the second shows the warm one).
    CPU only: the CUDA backend's start-up is dominated by CuPy's and the driver's."""
    import subprocess
    import sys

    if backend != "cpu":
        return {}
    runs = []
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", _STARTUP], capture_output=True, text=True,
                             check=True).stdout.split()
        runs.append(tuple(float(v) for v in out[-2:]))
    return {"import_s": min(r[0] for r in runs), "first_conv2d_s": min(r[1] for r in runs)}


def metadata(o: Options, device: timing.Device, roofs: dict, argv=None) -> dict:
    import fastconv

    min_repeat, min_time = o.repeats()
    meta = {"fastconv": fastconv.__version__, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": argv, "suite": o.suite, "backend": o.backend, "dtype": o.dtype,
            "algo": o.algo, "threads": o.threads, "min_repeat": min_repeat,
            "min_time_s": min_time, "rounds": timing.ROUNDS, "idle_gap_s": o.idle_gap,
            "batch": zoo.BATCH,
            "machine": device.description, "machine_line": device.line(), **roofs}
    if o.vs_torch:
        import torch

        meta["torch"] = torch.__version__
        meta["torch_threads"] = torch.get_num_threads()
        if o.backend == "cuda":
            meta["cudnn"] = torch.backends.cudnn.version()
    return meta

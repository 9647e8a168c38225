"""How the benchmarks time a call, and what they measure the machine against.

Timing: one warm-up call (JIT compilation, caches, allocators, cuDNN's algorithm search; its time
is kept apart as ``first_s``), then timed calls until both ``min_repeat`` calls and ``min_time``
seconds are reached (at most ``max_repeat``). Each call is timed on its own with
``time.perf_counter``; on a GPU the device is synchronised before and after, so a time covers
the launch and the kernels' completion. The garbage collector is off while timing. Reported:
the median and the interquartile range (the spread), never the mean or the best.

Contenders for the same call (fastconv's algorithms and PyTorch) are timed by
:func:`measure_together`: in blocks, one contender at a time, each block after an idle gap of
``IDLE_GAP_S``, in rounds whose order rotates. The gap is there because the libraries' thread
pools spin after their work (OpenBLAS's workers ~0.13 s after a product, GNU OpenMP's ~6 ms
at its default, PyTorch's among them): timed right after another library's call, a contender
shares the cores with those spinning workers and, on 2 cores, ran up to 2.5x slower (PyTorch's
1x1 forward on 8x64x56x56: 15 ms alone in a fresh process, 37 ms right after a fastconv
call). The rounds spread a slow spell of the machine over all contenders alike.

The machine: its description (CPU or GPU model, cores, library versions and thread counts), its
measured peak (a large GEMM through NumPy's BLAS, or cuBLAS through CuPy, in the benchmark's
dtype; the best of a few runs) and its bandwidth (a large array copy, counted as bytes read plus
bytes written, the STREAM convention; the best of a few runs). They are the roofs the table's
percentages and the roofline plot refer to.
"""
from __future__ import annotations

import gc
import os
import platform
import time
from dataclasses import dataclass, field

import numpy as np

CLOCK = time.perf_counter
ROUNDS = 3  # rounds of measure_together
IDLE_GAP_S = 0.25  # idle before each block of measure_together: every pool's spinning is over
PEAK_GEMM_ORDER = 2048  # the square GEMM that measures the peak
COPY_BYTES = 256 * 2**20  # the array copy that measures the bandwidth


@dataclass
class Timing:
    """Seconds of each timed call, and of the warm-up call."""

    times: list[float]
    first_s: float

    @property
    def median(self) -> float:
        return float(np.median(self.times))

    @property
    def q1(self) -> float:
        return float(np.percentile(self.times, 25))

    @property
    def q3(self) -> float:
        return float(np.percentile(self.times, 75))

    @property
    def spread(self) -> float:
        """Interquartile range over the median (0.05 = the middle half lies within 5%)."""
        return (self.q3 - self.q1) / self.median if self.median else 0.0

    def summary(self) -> dict:
        """Milliseconds, for the JSON file."""
        return {"median_ms": 1e3 * self.median, "q1_ms": 1e3 * self.q1, "q3_ms": 1e3 * self.q3,
                "spread": self.spread,
                "min_ms": 1e3 * min(self.times), "max_ms": 1e3 * max(self.times),
                "runs": len(self.times), "first_call_ms": 1e3 * self.first_s}


def _once(fn, sync) -> float:
    sync()
    start = CLOCK()
    fn()
    sync()
    return CLOCK() - start


def _block(fn, sync, times, min_repeat, min_time, max_repeat) -> None:
    """Append timed calls of ``fn`` to ``times`` until ``min_repeat`` calls and ``min_time``
    seconds (at most ``max_repeat`` calls), with the garbage collector off."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        spent, count = 0.0, 0
        while count < min_repeat or (spent < min_time and count < max_repeat):
            t = _once(fn, sync)
            times.append(t)
            spent, count = spent + t, count + 1
    finally:
        if collecting:
            gc.enable()


def measure(fn, sync=lambda: None, *, min_repeat=5, min_time=0.25, max_repeat=1000) -> Timing:
    """Warm ``fn`` up once, then time it (see the module's docstring)."""
    first = _once(fn, sync)
    times: list[float] = []
    _block(fn, sync, times, min_repeat, min_time, max_repeat)
    return Timing(times, first)


def measure_together(fns: dict, sync=lambda: None, *, min_repeat=5, min_time=0.25,
                     rounds=ROUNDS, max_repeat=1000, gap=IDLE_GAP_S,
                     sleep=time.sleep) -> dict[str, Timing]:
    """Time every function of ``{name: fn}`` in ``rounds`` rounds of blocks.

    Each is warmed up once (after ``gap`` seconds idle); then in each round each function in
    turn (the first one rotating) waits ``gap`` seconds idle, so that the previous contender's
    workers have stopped spinning, makes one untimed call, to start from its own state, and
    timed calls until its share of ``min_repeat`` calls and ``min_time`` seconds. Returns
    ``{name: Timing}`` over all its timed calls.
    """
    names = list(fns)
    first = {}
    for name in names:
        sleep(gap)
        first[name] = _once(fns[name], sync)
    times: dict[str, list[float]] = {name: [] for name in names}
    share = (-(-min_repeat // rounds), min_time / rounds, max(1, max_repeat // rounds))
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            sleep(gap)
            _once(fns[name], sync)
            _block(fns[name], sync, times[name], *share)
    return {name: Timing(times[name], first[name]) for name in names}


def check_options(threads, min_repeat, min_time, idle_gap) -> None:
    """ValueError naming a bad timing option of any bench (layers, models, tiny calls)."""
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    if min_repeat < 1 or min_time < 0:
        raise ValueError(f"repeat must be >= 1 and min-time >= 0, got {min_repeat} and "
                         f"{min_time}")
    if not idle_gap >= 0:
        raise ValueError(f"idle-gap must be >= 0 seconds, got {idle_gap}")


@dataclass
class Device:
    """Where a benchmark runs: the array module, how to wait for it, and what it is."""

    backend: str                    # "cpu" or "cuda"
    xp: object                      # numpy or cupy
    sync: object                    # waits for all queued work
    description: dict = field(default_factory=dict)

    def line(self) -> str:
        d = self.description
        if self.backend == "cuda":
            return (f"{d['gpu']} ({d['multiprocessors']} SMs, {d['memory_gib']:.0f} GiB), "
                    f"CUDA runtime {d['cuda_runtime']}, CuPy {d['cupy']}")
        isa = ", ".join(d["isa"]) or "no AVX"
        return (f"{d['cpu']} ({d['cores']} cores, {isa}), {d['memory_gib']:.0f} GiB, "
                f"{d['os']}; Python {d['python']}, NumPy {d['numpy']} ({d['blas']}, "
                f"{d['blas_threads']} threads), Numba {d['numba']} ({d['numba_threading_layer']}, "
                f"{d['numba_threads']} threads)")


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def pin_threads(threads: int) -> dict:
    """Use ``threads`` threads in Numba's parallel loops and NumPy's BLAS (through threadpoolctl,
    when installed). Returns what was set."""
    import numba

    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    blas = None
    try:
        from threadpoolctl import threadpool_limits

        # kept for the life of the process: the limiter object is deliberately not restored
        threadpool_limits(limits=threads, user_api="blas")
        blas = threads
    except ImportError:
        pass
    return {"numba_threads": numba.get_num_threads(), "blas_threads": blas}


def cpu_device(threads: int) -> Device:
    import numba

    pinned = pin_threads(threads)
    info = {"cpu": _cpu_model(), "cores": cores(), "isa": _isa(),
            "memory_gib": _memory_gib(), "os": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(), "numpy": np.__version__, "blas": _blas(),
            "blas_threads": pinned["blas_threads"] or "default",
            "numba": numba.__version__, "numba_threading_layer": _threading_layer(),
            "numba_threads": pinned["numba_threads"]}
    return Device("cpu", np, lambda: None, info)


def cuda_device() -> Device:
    """The current CUDA device through CuPy; ``RuntimeError`` if there is none."""
    try:
        import cupy
    except ImportError as e:
        raise RuntimeError("the cuda backend needs CuPy (pip install -e '.[cuda13]')") from e
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError:
        count = 0
    if count == 0:
        raise RuntimeError("the cuda backend needs a CUDA device; none is visible")
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"]
    info = {"gpu": name.decode() if isinstance(name, bytes) else str(name),
            "multiprocessors": props["multiProcessorCount"],
            "memory_gib": props["totalGlobalMem"] / 2**30,
            "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(), "cupy": cupy.__version__,
            "python": platform.python_version()}
    return Device("cuda", cupy, cupy.cuda.Device().synchronize, info)


def measure_peak(device: Device, dtype, size=PEAK_GEMM_ORDER, runs=5) -> float:
    """FLOP/s of the best of ``runs`` square GEMMs of order ``size`` (one untimed first)."""
    xp = device.xp
    rng = np.random.default_rng(0)
    a, b = (xp.asarray(rng.standard_normal((size, size)).astype(dtype)) for _ in range(2))
    out = xp.empty((size, size), dtype=dtype)
    timing = measure(lambda: xp.matmul(a, b, out=out), device.sync, min_repeat=runs, min_time=0)
    return 2 * size**3 / min(timing.times)


def measure_bandwidth(device: Device, nbytes=COPY_BYTES, runs=5) -> float:
    """Bytes/s of the best of ``runs`` copies of an ``nbytes`` array (read + write)."""
    xp = device.xp
    src = xp.ones(nbytes // 4, dtype=np.float32)
    dst = xp.empty_like(src)
    timing = measure(lambda: xp.copyto(dst, src), device.sync, min_repeat=runs, min_time=0)
    return 2 * nbytes / min(timing.times)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _isa() -> list[str]:
    """The vector extensions that matter to these kernels, as the kernel reports them."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")),
                         [])
    except OSError:
        return []
    return [name for name in ("avx2", "fma", "avx512f") if name in flags]


def _memory_gib() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return float("nan")


def _blas() -> str:
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas['name']} {blas.get('version', '')}".strip()
    except Exception:  # the layout of show_config is not a stable API
        return "unknown BLAS"


def _threading_layer() -> str:
    import numba

    try:
        return numba.threading_layer()
    except ValueError:  # no parallel region has run yet: run a tiny one to find out
        from ..cpu import _loops

        _loops.channel_sum(np.zeros((1, 1, 1), dtype=np.float32))
        return numba.threading_layer()


"""Index arithmetic past 2**31 elements.

Every CPU kernel indexes with 64-bit ints: Numba types ``range``, shapes and array indices as
intp (int64), and fastconv's kernels use no narrower int anywhere. The first test proves it for
the code as compiled, without 8 GB of data: in a fresh process (an empty Numba cache, so that
every kernel is compiled there and keeps its typed IR) it calls every CPU algorithm of every op,
then reads the type of every variable of every kernel, the inlined helpers and the parallel
loop bodies included, and finds no integer narrower than 64 bits. The same compilation is
checked for Numba's performance warnings: a ``prange`` loop that Numba quietly runs serially
(a body that may raise or return early does that) is a kernel on one core.

The slow test runs the kernels whose indices are data (max-pool's flat indices into H*W) and
the reductions over whole tensors on one plane of 46342 x 46342 > 2**31 float32 elements
(8.6 GB; the machine needs about 18 GB free), and checks the results at the far end.
"""
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest

import fastconv

PROBE = textwrap.dedent('''
    import importlib, json, warnings
    import numpy as np
    from numba.core import types
    from numba.core.errors import NumbaPerformanceWarning
    from numba.core.registry import CPUDispatcher
    from fastconv.cpu._threads import ParallelKernel
    import fastconv
    import grids

    caught = warnings.catch_warnings(record=True)  # left at the end of the calls
    compiled_warnings = caught.__enter__()
    warnings.simplefilter("always", NumbaPerformanceWarning)
    rng = np.random.default_rng(0)
    # every call on the parallel kernels (the serial twins, which tiny calls would run, are the
    # same Python functions, so the same integer types: compiling them too took a minute)
    fastconv.config.CPU_ONE_THREAD_BELOW = 0
    for case in grids.CASES[::10]:   # every op, every CPU algorithm, forward and backward
        args = [None if a is None else a.astype(np.float32)
                for a in grids.forward_args(case, rng)]
        back, kw = grids.backward_args(case, args, rng)
        back = [None if a is None else np.asarray(a, np.float32) for a in back]
        for op, a, k in ((case.op, args, case.kwargs), (case.op + "_backward", back, kw)):
            shapes = [None if x is None else x.shape for x in a]
            for algo in fastconv.explain(op, *shapes, **k)["candidates"]:
                if algo != "reference":
                    getattr(fastconv, op)(*a, **k, algo=algo)
    x, w = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((4, 3, 3, 3))
    fastconv.conv2d_backward(rng.standard_normal((2, 4, 4, 4)), x, w, algo="im2col")  # N > 1
    # depthwise on 16-lane pixels: float32 and whole blocks of 16 channels, which the grids'
    # 4 channels never make; stride 1 (backward-data as a forward) and 2 (as a scatter)
    x = rng.standard_normal((2, 16, 9, 9)).astype(np.float32)
    w = rng.standard_normal((16, 1, 3, 3)).astype(np.float32)
    for stride in (1, 2):
        y = fastconv.conv2d(x, w, stride=stride, padding=1, groups=16, algo="depthwise")
        fastconv.conv2d_backward(np.ones_like(y), x, w, stride=stride, padding=1, groups=16,
                                 algo="depthwise")
    caught.__exit__(None, None, None)
    serial = sorted({" ".join(str(w.message).split())[:400] for w in compiled_warnings
                     if issubclass(w.category, NumbaPerformanceWarning)})  # names the kernel

    kernels, narrow, missing = 0, [], []
    # not _blas: its gemm hands sizes to BLAS as BLAS's own 32-bit ints (after checking that
    # they fit), which is the interface, not index arithmetic
    for name in ("_loops", "_threads", "batchnorm", "blocked", "depthwise", "direct",
                 "im2col", "pointwise", "pool"):
        module = importlib.import_module("fastconv.cpu." + name)
        for attr, d in vars(module).items():
            if isinstance(d, ParallelKernel):
                d = d.parallel
            if not isinstance(d, CPUDispatcher) or d.py_func.__module__ != module.__name__:
                continue
            if d.targetoptions.get("inline") == "always":
                continue  # inlined into its callers: its variables are in their typed IR
            if not d.overloads:
                missing.append(name + "." + attr)
            for sig, result in d.overloads.items():
                kernels += 1
                for var, t in result.type_annotation.typemap.items():
                    for leaf in [t, *getattr(t, "types", ())]:
                        if isinstance(leaf, types.Integer) and leaf.bitwidth < 64:
                            narrow.append(f"{name}.{attr}: {var} is {leaf}")
    print(json.dumps(dict(kernels=kernels, missing=missing, narrow=narrow, serial=serial)))
''')


_probe = None  # (process, its directory) once started


def start_probe():
    """Start the probe: a fresh process with an empty Numba cache of its own, its output in
    files there. tests/conftest.py starts it as soon as the tests are collected, because it
    compiles every CPU kernel, about 100 s on two cores, which then overlaps the main
    process's own compiling (Numba compiles on one core) instead of following it."""
    global _probe
    if _probe is None:
        where = pathlib.Path(tempfile.mkdtemp(prefix="fastconv-index-width-"))
        env = dict(os.environ, NUMBA_CACHE_DIR=str(where / "numba-cache"),
                   PYTHONPATH=str(pathlib.Path(__file__).parents[1]))  # tests/, for grids
        with open(where / "stdout", "w") as out, open(where / "stderr", "w") as err:
            _probe = subprocess.Popen([sys.executable, "-c", PROBE], stdout=out, stderr=err,
                                      env=env), where
    return _probe


def stop_probe():
    """End the probe if it still runs (a run stopped before its tests) and remove its files."""
    global _probe
    if _probe is not None:
        process, where = _probe
        process.kill()  # a finished process ignores it
        process.wait()
        shutil.rmtree(where, ignore_errors=True)
        _probe = None


@pytest.fixture(scope="module")
def compiled():
    """What the probe found, compiling every CPU kernel in a fresh process."""
    process, where = start_probe()
    try:
        code = process.wait(timeout=900)
        stdout, stderr = ((where / name).read_text() for name in ("stdout", "stderr"))
    finally:
        stop_probe()
    assert code == 0, stderr[-3000:]
    return json.loads(stdout.strip().splitlines()[-1])


def test_every_cpu_kernel_indexes_with_64_bit_ints(compiled):
    found = compiled
    assert found["kernels"] >= 20, found
    assert not found["missing"], f"kernels never compiled: {found['missing']}"
    assert not found["narrow"], f"integers narrower than 64 bits: {found['narrow']}"


def test_every_parallel_loop_compiles_parallel(compiled):
    """No NumbaPerformanceWarning while compiling every kernel: no ``parallel=True`` kernel
    that Numba could not parallelise, no ``prange`` it runs serially."""
    assert not compiled["serial"], "\n".join(compiled["serial"])


def test_explain_reports_the_index_width():
    """CPU kernels are always 64-bit; CUDA picks 32-bit indices below 2**31 elements."""
    big = ((1, 1, 46342, 46342), (1, 1, 1, 1))
    small = ((8, 64, 56, 56), (64, 64, 3, 3))
    assert fastconv.explain("conv2d", *small)["index_bits"] == 64
    assert fastconv.explain("conv2d", *big)["index_bits"] == 64
    assert fastconv.explain("conv2d", *small, backend="cuda")["index_bits"] == 32
    assert fastconv.explain("conv2d", *big, backend="cuda")["index_bits"] == 64
    assert fastconv.explain("max_pool2d", big[0], kernel_size=2, backend="cuda")[
        "index_bits"] == 64


SIDE = 46342  # SIDE**2 = 2_147_580_964 > 2**31; the last two rows lie past 2**31


@pytest.mark.slow
def test_one_plane_past_2_31_elements():
    assert SIDE * SIDE > 2**31 and (SIDE - 2) * SIDE > 2**31
    x = np.zeros((1, 1, SIDE, SIDE), np.float32)
    far = (SIDE - 1) * SIDE + SIDE - 1  # flat index of the last element: 2_147_580_963
    x[0, 0, -1, -1] = 7.0
    x[0, 0, -2, -4] = 5.0  # window (last row, third from the end): flat > 2**31 too
    x[0, 0, 0, 0] = 3.0

    # batch norm (evaluation) and the reductions over the whole plane
    y = fastconv.batch_norm(x, np.zeros(1, np.float32), np.full(1, 4.0, np.float32), eps=0.0)
    assert y[0, 0, -1, -1] == 3.5 and y[0, 0, -2, -4] == 2.5 and y[0, 0, 0, 0] == 1.5
    assert np.count_nonzero(y) == 3
    del y
    total = 15.0 / SIDE**2
    g = fastconv.adaptive_avg_pool2d(x, 1)
    assert abs(g.item() - total) <= 1e-6 * total
    a = fastconv.avg_pool2d(x, 2)
    assert a[0, 0, -1, -1] == 7.0 / 4 and a[0, 0, -1, -2] == 5.0 / 4 and a[0, 0, 0, 0] == 0.75
    assert np.count_nonzero(a) == 3
    del a

    # max pool: indices are data; the far ones exceed 2**31
    m, idx = fastconv.max_pool2d(x, 2, return_indices=True)
    assert m[0, 0, -1, -1] == 7.0 and idx[0, 0, -1, -1] == far
    assert m[0, 0, -1, -2] == 5.0 and idx[0, 0, -1, -2] == (SIDE - 2) * SIDE + SIDE - 4
    # a zero window's index is its first element (ties go to the first)
    assert idx[0, 0, -1, 0] == (SIDE - 2) * SIDE
    assert idx.max() == far and idx.dtype == np.int64
    del m, x

    # the gradient through those indices lands past 2**31
    gy = np.ones(idx.shape, np.float32)
    shape_only = np.broadcast_to(np.zeros((), np.float32), (1, 1, SIDE, SIDE))
    gx = fastconv.max_pool2d_backward(gy, shape_only, 2, indices=idx)
    assert gx[0, 0, -1, -1] == 1.0 and gx[0, 0, -2, -4] == 1.0 and gx[0, 0, -2, -2] == 0.0
    assert gx.sum(dtype=np.float64) == idx.size

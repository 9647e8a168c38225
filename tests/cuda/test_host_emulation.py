"""The CUDA backend run on the host: every kernel compiled as plain C++ (every block of the
grid, its threads as fibers that meet at each barrier, see host_emulation.h) and the CUDA
modules' Python side run with NumPy standing in for CuPy, through the public ops, against the
NumPy reference over the product grids and drawn cases.

This checks, on machines without a GPU, everything but what needs a GPU: the kernels' index
arithmetic (strides, padding, dilation, groups, gathers, chunking, both index widths), the
launch geometry, the shared-memory tiles and trees with the real block size (a missing barrier
changes the result), and the Python glue (transposed convolution, batch-norm statistics). It
cannot check warp-level behaviour, the GPU's numerics, or CuPy itself:
tests/cuda/test_against_reference.py does that where a GPU is visible.
"""
import ctypes
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

import fastconv
import fastconv.cuda
from fastconv.testing import error, reference_op, tolerance
from fastconv import _calls, _validate, config
from fastconv.cuda import _conv, _module, batchnorm, im2col, implicit_gemm, pool

import grids
import test_nonfinite
from grids import CASES, DRAWN

GXX = shutil.which("g++")
pytestmark = pytest.mark.skipif(GXX is None, reason="the host emulation needs g++")
KERNELS = Path(fastconv.cuda.__file__).parent / "kernels"


def _compile(folder, *defines):
    """(library, {name expression: address of its host launcher}) for every kernel
    specialisation, compiled for the host."""
    names = [e for filename in _module.KERNELS for e in _module.expressions(filename)]
    text = ['#include "host_emulation.h"', (KERNELS / "common.cuh").read_text()]
    text += [(KERNELS / filename).read_text() for filename in _module.KERNELS]
    text.append('extern "C" void* fc_launchers[] = {'
                + ", ".join(f"(void*)&fc_host::launch<&{name}>" for name in names) + "};")
    source, library = folder / "kernels.cpp", folder / "kernels.so"
    source.write_text("\n".join(text))
    # -fwrapv: signed arithmetic wraps, as the GPU's integer instructions do, so that an
    # overflow shows here as it would there rather than as whatever the optimiser makes of it
    done = subprocess.run([GXX, "-O1", "-fwrapv", "-std=c++17", "-shared", "-fPIC", "-w", *defines,
                           f"-I{Path(__file__).parent}", "-o", str(library), str(source)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    loaded = ctypes.CDLL(str(library))
    table = (ctypes.c_void_p * len(names)).in_dll(loaded, "fc_launchers")
    return loaded, dict(zip(names, table))


@pytest.fixture(scope="module")
def kernels(tmp_path_factory):
    return _compile(tmp_path_factory.mktemp("host_emulation"))


@pytest.fixture(scope="module")
def kernels_without_patch(tmp_path_factory):
    """Every patch too large for shared memory: direct reads global memory."""
    return _compile(tmp_path_factory.mktemp("host_emulation_no_patch"), "-DFC_PATCH=1")


LAUNCHER = ctypes.CFUNCTYPE(None, ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_void_p))


def _dims(sizes):
    return tuple(sizes) + (1,) * (3 - len(sizes))


def _host_kernel(library, address):
    """A stand-in for a CuPy RawKernel: called with (grid, block, args), runs the whole grid on
    the host and fails on a barrier in divergent code."""
    def launch(grid, block, args):
        values = []
        for a in args:
            if isinstance(a, np.ndarray):
                assert a.flags.c_contiguous
                values.append(ctypes.c_void_p(a.ctypes.data))
            elif isinstance(a, np.int32):
                values.append(ctypes.c_int(int(a)))
            elif isinstance(a, np.int64):
                values.append(ctypes.c_longlong(int(a)))
            else:
                raise TypeError(f"kernel argument of type {type(a).__name__}")
        pointers = (ctypes.c_void_p * len(values))(
            *(ctypes.cast(ctypes.pointer(v), ctypes.c_void_p) for v in values))
        dims = (ctypes.c_uint * 6)(*_dims(grid), *_dims(block))
        LAUNCHER(address)(dims, pointers)
        assert library.fc_host_error() == 0, "__syncthreads() in divergent code"
    return launch


def use_kernels(monkeypatch, compiled):
    library, launchers = compiled
    monkeypatch.setattr(_module, "kernel", lambda name, dtype, bits: _host_kernel(
        library, launchers[_module.expression(name, dtype, bits)]))


@pytest.fixture
def on_host(monkeypatch, kernels):
    """The CUDA backend with NumPy arrays: CuPy's functions are NumPy's, kernels run on the
    host, and NumPy arrays count as the cuda backend's."""
    cupy = types.ModuleType("cupy")
    for name in ("empty", "zeros", "matmul", "ascontiguousarray", "asarray", "int64",
                 "float64", "ndarray"):
        setattr(cupy, name, getattr(np, name))
    cupy.asnumpy = np.asarray
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    use_kernels(monkeypatch, kernels)
    check_arrays, check_indices = _validate.check_arrays, _validate.check_indices

    def arrays_on_cuda(op, optional=None, **required):
        check_arrays(op, optional, **required)
        return "cuda"

    monkeypatch.setattr(_validate, "check_arrays", arrays_on_cuda)
    monkeypatch.setattr(_validate, "check_indices",
                        lambda op, indices, backend: check_indices(op, indices, "cpu"))
    _calls.forget()  # plans of NumPy arrays are the CPU backend's everywhere else
    yield
    _calls.forget()


def params_of(case):
    return fastconv.explain(case.op, *case.shapes, **case.kwargs)["params"]


def check(case, rng):
    grids.check_algorithms(case, rng, "cuda")


@pytest.mark.parametrize("case", CASES[::6], ids=lambda c: f"{c.op}[{c}]")
def test_grid(case, rng, on_host):
    check(case, rng)


@pytest.mark.parametrize("case", CASES[3::40], ids=lambda c: f"{c.op}[{c}]")
def test_grid_one_image_per_im2col_chunk(case, rng, on_host, monkeypatch):
    monkeypatch.setattr(config, "CUDA_IM2COL_WORKSPACE_BYTES", 1)
    check(case, rng)


@pytest.mark.parametrize("case", [c for c in CASES[2::45] if c.op.startswith("conv")],
                         ids=lambda c: f"{c.op}[{c}]")
def test_grid_direct_from_global_memory(case, rng, on_host, monkeypatch, kernels_without_patch):
    use_kernels(monkeypatch, kernels_without_patch)
    check(case, rng)


def _long_weight_gradient(case):  # N*Ho*Wo over two K steps: splits into slices when forced
    if not case.op.startswith("conv"):
        return False
    y = params_of(case).y_shape
    return y[0] * np.prod(y[2:]) > 2 * implicit_gemm.BK


@pytest.mark.parametrize("case", [c for c in CASES[1::20] if _long_weight_gradient(c)],
                         ids=lambda c: f"{c.op}[{c}]")
def test_grid_implicit_gemm_weight_gradient_in_slices(case, rng, on_host, monkeypatch):
    monkeypatch.setattr(implicit_gemm, "MIN_SLICE", implicit_gemm.BK)
    monkeypatch.setattr(implicit_gemm, "TARGET_BLOCKS", 10**6)  # as many slices as K allows
    assert implicit_gemm.slicing(params_of(case))[0] > 1
    check(case, rng)


@pytest.mark.parametrize("case", CASES[5::60], ids=lambda c: f"{c.op}[{c}]")
def test_grid_with_64_bit_indices(case, rng, on_host, monkeypatch):
    used = set()
    launch_kernel = _module.kernel

    def kernel(name, dtype, bits):
        used.add(bits)
        return launch_kernel(name, dtype, bits)

    monkeypatch.setattr(_module, "kernel", kernel)
    for module in (_conv, batchnorm, im2col, implicit_gemm, pool):  # each that picks a width
        monkeypatch.setattr(module, "index_bits", lambda *sizes: 64)
    check(case, rng)
    assert used <= {64}


@pytest.mark.parametrize("case", CASES[4::60], ids=lambda c: f"{c.op}[{c}]")
def test_grid_stride_loops_take_the_stride_of_a_huge_launch(case, rng, on_host, kernels):
    """Every launch's kernels see a grid 2**23 blocks wide (a stride of 2**31 items at 256
    threads a block) while only its real blocks run: every item is still done in the first
    step, and the next one must end the loop, 32-bit indices included. A stride computed as
    ``(int)blockDim.x * gridDim.x`` (an unsigned product) or a 32-bit counter wrapped the index
    negative there, as on a GPU for any launch of 1.6e9 items or more (issue 19): the loops
    count in 64 bits (fc_first_item, fc_grid_stride in common.cuh)."""
    library = kernels[0]
    library.fc_host_pretend_grid_x(2**23)
    try:
        check(case, rng)
    finally:
        library.fc_host_pretend_grid_x(0)


def test_a_stride_past_32_bit_patch_arithmetic(rng, on_host):
    """conv2d with a column stride sw over a row sw + 2 wide: two outputs, so the stride is
    used (a dimension with one output gets stride 1). A direct tile's patch spans
    (TW-1)*sw + (kw-1)*dw + 1 columns; sw = 69,273,668 is the first stride where that passes
    2**31. In 32 bits the width went negative, the area of its 8 rows wrapped to 496 and passed
    for shared, nothing was loaded into the patch, and the taps read past it (issue 19).
    Every CUDA algorithm's forward against the reference; the input is 277 MB."""
    sw = 69_273_668
    x = rng.standard_normal((1, 1, 1, sw + 2)).astype(np.float32)
    w = rng.standard_normal((2, 1, 1, 2)).astype(np.float32)
    kwargs = dict(stride=(1, sw))
    expected = reference_op("conv2d", x.astype(np.float64), w.astype(np.float64), **kwargs)
    candidates = fastconv.explain("conv2d", x.shape, w.shape, backend="cuda",
                                  **kwargs)["candidates"]
    assert "direct" in candidates
    for algo in candidates:
        y = fastconv.conv2d(x, w, algo=algo, **kwargs)
        assert error(y, expected) <= tolerance(np.float32), algo


def test_a_dilation_past_32_bit_patch_arithmetic_in_backward_data(rng, on_host):
    """direct backward-data's gy patch spans (TH-1 + (kh-1)*dh)/sh + 1 rows: with a 3x1 filter
    at dilation 2**28 and padding 2**28 (one output, whose middle tap reads the one input) it
    is ~2**29 rows, and in 32 bits its area wrapped to a few thousand and passed for shared, so
    the tap read gy from far past the patch (issue 19, the forward's fix not yet applied to
    backward-data). dL/dx is then the middle weight times gy, worked out by hand (the
    reference would materialise 2**29 rows of padding)."""
    d = 2**28
    x = rng.standard_normal((1, 1, 1, 1)).astype(np.float32)
    w = rng.standard_normal((1, 1, 3, 1)).astype(np.float32)
    gy = rng.standard_normal((1, 1, 1, 1)).astype(np.float32)
    kwargs = dict(padding=(d, 0), dilation=(d, 1), output_mask=(True, False, False))
    gx = fastconv.conv2d_backward(gy, x, w, algo="direct", **kwargs)[0]
    assert np.array_equal(gx, w[:, :, 1:2, :] * gy)


def test_gpu_smoke_calls_pass_on_the_host(on_host):
    """benchmarks/gpu_smoke.py's calls (the workload compute-sanitizer runs under in gpu.sh)
    are valid and pass here through every CUDA algorithm, with both index widths, so that a
    failure there on a GPU is the GPU's."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import gpu_smoke

    assert gpu_smoke.run() == []


@pytest.mark.parametrize("index", range(len(test_nonfinite.WEIGHT_CASES)))
def test_nonfinite_weights_give_torchs_forward(index, rng, on_host):
    """tests/test_nonfinite.py's weight cases through every CUDA algorithm: PyTorch's forward
    treats the padding as zeros that meet the weight (0 * Inf is NaN there), and every kernel
    must too, while a tap/pixel pair of backward-data through which no output reads adds no
    term at all (issue 19: depthwise skipped its padding taps; implicit GEMM and direct
    backward-data multiplied w by 0 for pairs that do not exist)."""
    test_nonfinite.check_nonfinite_weights(*test_nonfinite.WEIGHT_CASES[index], rng, "cuda")


@pytest.mark.parametrize("strategy", DRAWN, ids=lambda s: s.__name__)
def test_drawn(strategy, on_host):
    grids.run_drawn(strategy, settings.default.max_examples // 4, check)

"""Every CUDA source compiles, for every specialisation the loader asks for, for sm_80 (A100)
and sm_90 (H100/H200), through NVRTC as at run time. Needs no GPU: it runs in CI, and fails on
any compile error or warning, and on any kernel that would use local memory."""
import re

import pytest
from cupy.cuda import nvrtc

from fastconv.cuda import _module

ARCHS = ("sm_80", "sm_90")


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("filename", sorted(_module.KERNELS))
def test_source_compiles(filename, arch):
    program = nvrtc.createProgram(_module.source(filename), filename, [], [])
    expressions = _module.expressions(filename)
    for expression in expressions:
        nvrtc.addNameExpression(program, expression)
    try:
        nvrtc.compileProgram(program, [f"--gpu-architecture={arch}", *_module.OPTIONS])
    except nvrtc.NVRTCError:
        pytest.fail(f"{filename} ({arch}) does not compile:\n{nvrtc.getProgramLog(program)}")
    log = nvrtc.getProgramLog(program).strip("\x00").strip()
    assert log == "", f"{filename} ({arch}) compiles with warnings:\n{log}"
    mangled = {e: nvrtc.getLoweredName(program, e) for e in expressions}
    assert len(set(mangled.values())) == len(expressions)  # each specialisation its own kernel
    assert nvrtc.getCUBIN(program)


def _resources(filename, arch):
    """ptxas's resource report of every kernel specialisation in ``filename``, from NVRTC's own
    ptxas as at run time (``--ptxas-options=-v``), one dict per kernel: name, registers,
    stack (bytes of local memory), spill stores and loads, shared (static bytes)."""
    program = nvrtc.createProgram(_module.source(filename), filename, [], [])
    for expression in _module.expressions(filename):
        nvrtc.addNameExpression(program, expression)
    nvrtc.compileProgram(program, [f"--gpu-architecture={arch}", *_module.OPTIONS,
                                   "--ptxas-options=-v"])
    kernels, name = [], None
    for line in nvrtc.getProgramLog(program).splitlines():
        if found := re.search(r"Compiling entry function '(\w+)'", line):
            name, frame = found.group(1), None
        elif found := re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, "
                                r"(\d+) bytes spill loads", line):
            frame = [int(v) for v in found.groups()]
        elif name and frame and (found := re.search(r"Used (\d+) registers", line)):
            shared = re.search(r"(\d+) bytes smem", line)
            kernels.append(dict(name=name, registers=int(found.group(1)), stack=frame[0],
                                spill_stores=frame[1], spill_loads=frame[2],
                                shared=int(shared.group(1)) if shared else 0))
            name = None
    return kernels


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("filename", sorted(_module.KERNELS))
def test_no_kernel_uses_local_memory_or_too_much_shared_memory(filename, arch):
    """Issue 19, defect 7: the per-thread accumulators (direct's acc[CB] with its runtime
    channel bound, implicit GEMM's register tile, direct backward-weight's taps) stay in
    registers: every specialisation has no stack frame and no spills, and at most 48 KiB of
    static shared memory. benchmarks/gpu.sh checks the same on the GPU (gpu_kernels.py)."""
    kernels = _resources(filename, arch)
    assert len(kernels) == len(_module.expressions(filename))
    bad = [k for k in kernels if k["stack"] or k["spill_stores"] or k["spill_loads"]
           or k["shared"] > 48 * 1024]
    assert not bad, bad


def test_the_python_side_uses_the_kernels_constants():
    """Constants both sides must agree on: threads per block, backward-weight's taps."""
    from fastconv.cuda import direct

    source = _module.source("conv.cu")
    assert f"#define FC_THREADS {_module.THREADS} " in source
    assert f"#define FC_WEIGHT_TAPS {direct.WEIGHT_TAPS}\n" in source


def test_every_kernel_is_compiled_for_both_dtypes_and_index_widths():
    for filename, names in _module.KERNELS.items():
        assert "__global__ void" in _module.source(filename)
        for name in names:
            for dtype in ("float32", "float64"):
                for bits in (32, 64):
                    assert _module.expression(name, dtype, bits) in _module.expressions(filename)
        # every kernel in the file is listed, and nothing listed is missing from the file
        defined = {line.split("(")[0].split()[-1] for line in _module.source(filename)
                   .splitlines() if line.startswith("__global__ void")}
        assert defined == set(names), filename


def test_kernel_names_encode_dtype_and_index_width():
    assert _module.expression("im2col", "float32", 32) == "im2col<float, int>"
    assert _module.expression("im2col", "float64", 64) == "im2col<double, long long>"
    assert _module.index_bits(2**31 - 1) == 32 and _module.index_bits(2**31) == 64


def test_tiled_kernel_names_encode_their_tile():
    assert (_module.expression("implicit_gemm_forward", "float32", 32)
            == "implicit_gemm_forward<float, int, 64, 64, 16, 4, 4>")
    assert (_module.expression("direct_forward", "float64", 64)
            == "direct_forward<double, long long, 8, 32, 4>")
    assert _module.tile_threads("implicit_gemm_backward_weight") == 256


def test_cuda_algorithms_are_listed_and_explained_without_a_gpu():
    import fastconv

    assert fastconv.algorithms("conv2d", "cuda") == ["depthwise", "pointwise", "im2col",
                                                     "implicit_gemm", "direct", "reference"]
    assert fastconv.algorithms("max_pool2d", "cuda") == ["direct", "reference"]
    assert fastconv.algorithms("batch_norm_backward", "cuda") == ["direct", "reference"]
    picks = {
        "depthwise": ((8, 32, 28, 28), (32, 1, 3, 3), dict(padding=1, groups=32)),
        "pointwise": ((8, 64, 28, 28), (128, 64, 1, 1), {}),
        "im2col": ((8, 64, 28, 28), (64, 64, 3, 3), dict(padding=1)),
    }
    for algo, (x, w, kw) in picks.items():
        info = fastconv.explain("conv2d", x, w, backend="cuda", **kw)
        assert info["algo"] == algo and info["index_bits"] == 32
    huge = fastconv.explain("conv2d", (2**16, 64, 32, 32), (64, 64, 3, 3), padding=1,
                            backend="cuda", algo="direct")
    assert huge["index_bits"] == 64  # x has 2**32 elements


def test_a_file_is_compiled_once_under_the_lock_whatever_the_threads(monkeypatch):
    """Many threads asking at once for kernels of one file: the file compiles exactly once,
    never two compilations at a time, and every function is fetched from the compiled module
    (a stand-in for CuPy's RawModule, which compiles lazily at its first get_function unless
    compiled first)."""
    import sys
    import threading
    import time
    import types

    events, running = [], []

    class Module:
        def __init__(self, code, options, name_expressions):
            self.compiled = False

        def compile(self):
            running.append(1)
            events.append(("compile", len(running)))
            time.sleep(0.05)  # long enough for the other threads to arrive
            self.compiled = True
            running.pop()

        def get_function(self, expression):
            events.append(("get", self.compiled))
            return expression

    cupy = types.ModuleType("cupy")
    cupy.RawModule = Module
    cupy.cuda = types.SimpleNamespace(Device=lambda: types.SimpleNamespace(id=0))
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setattr(_module, "_MODULES", {})
    names = _module.KERNELS["pool.cu"]
    threads = [threading.Thread(target=_module.kernel, args=(names[i % len(names)], "float32",
                                                             32)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [e for e in events if e[0] == "compile"] == [("compile", 1)]
    assert [e for e in events if e[0] == "get"] == [("get", True)] * 8

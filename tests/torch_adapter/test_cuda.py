"""fastconv.torch with CUDA tensors: the same checks as on the CPU (forward values and gradients
against torch.nn.functional, gradcheck, the ResNet-18-style model before and after convert),
with the tensors handed to fastconv's CUDA kernels through DLPack on PyTorch's current stream.
Skips as a module where PyTorch or CuPy sees no GPU."""
import copy

import numpy as np
import pytest

from fastconv.testing import error, gpu_available, tolerance

torch = pytest.importorskip("torch")
if not (torch.cuda.is_available() and gpu_available()):
    pytest.skip("no CUDA device visible to PyTorch and CuPy", allow_module_level=True)

import torch_adapter.test_modules as modules  # noqa: E402
import torch_adapter.test_ops as ops  # noqa: E402

import fastconv.torch as ft  # noqa: E402

F = torch.nn.functional


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("op, shapes, kwargs", ops.CASES, ids=ops.IDS)
def test_forward_and_gradients_match_torch_on_cuda(op, shapes, kwargs, dtype):
    ours = [None if a is None else a.detach().cuda().requires_grad_(a.requires_grad)
            for a in ops.make_args(op, shapes, dtype, requires_grad=True)]
    theirs = [None if a is None else a.detach().clone().requires_grad_(a.requires_grad)
              for a in ours]
    with torch.backends.cudnn.flags(allow_tf32=False):
        y, y_torch = ops.call(ft, op, ours, kwargs), ops.call(F, op, theirs, kwargs)
        assert y.device == ours[0].device
        tol = tolerance(np.dtype(str(dtype).split(".")[1]))
        assert error(y.detach().cpu().numpy(), y_torch.detach().cpu().numpy()) <= tol
        gy = torch.randn_like(y)
        y.backward(gy)
        y_torch.backward(gy)
    for a, b in zip(ours, theirs):
        if a is not None and a.requires_grad:
            assert error(a.grad.cpu().numpy(), b.grad.cpu().numpy()) <= tol


@pytest.mark.parametrize("op, shapes, kwargs", ops.CASES[::4], ids=ops.IDS[::4])
def test_gradcheck_on_cuda(op, shapes, kwargs):
    if op == "batch_norm":
        pytest.skip("batch_norm's gradcheck (fresh statistics per evaluation) runs on the CPU")
    args = tuple(None if a is None else a.detach().cuda().requires_grad_(a.requires_grad)
                 for a in ops.make_args(op, shapes, torch.float64, requires_grad=True))
    assert torch.autograd.gradcheck(lambda *a: ops.call(ft, op, a, kwargs), args,
                                    fast_mode=True)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_resnet18_on_cuda_same_before_and_after_convert(training):
    torch.manual_seed(0)
    model = modules.ResNet18().cuda()
    reference = copy.deepcopy(model)
    ft.convert(model)
    model.train(training)
    reference.train(training)
    x = torch.randn(8, 3, 64, 64, device="cuda")
    target = torch.randint(0, 10, (8,), device="cuda")
    with torch.backends.cudnn.flags(allow_tf32=False):
        torch.backends.cuda.matmul.allow_tf32 = False
        out, grads = modules._step(model, x, target)
        out_ref, grads_ref = modules._step(reference, x, target)
    tol = tolerance(np.float32)
    assert error(out.cpu().numpy(), out_ref.cpu().numpy()) <= tol
    for name, g in grads.items():
        assert error(g.cpu().numpy(), grads_ref[name].cpu().numpy()) <= tol, name


def test_outputs_and_workspace_come_from_torchs_allocator():
    """Issue 19, defect 5: fastconv's outputs (and its workspace: im2col's columns) are
    PyTorch memory, counted by torch.cuda.memory_allocated, and CuPy's pool stays untouched."""
    import cupy

    x = torch.randn(4, 16, 32, 32, device="cuda")
    w = torch.randn(32, 16, 3, 3, device="cuda")
    pool = cupy.get_default_memory_pool()
    ft.conv2d(x, w, padding=1, algo="im2col")  # a first call: kernels, lazy cuBLAS state
    torch.cuda.synchronize()
    used, held, torch_before = pool.used_bytes(), pool.total_bytes(), torch.cuda.memory_allocated()
    y = ft.conv2d(x, w, padding=1, algo="im2col")
    torch.cuda.synchronize()
    assert (pool.used_bytes(), pool.total_bytes()) == (used, held)
    assert torch.cuda.memory_allocated() - torch_before >= y.numel() * y.element_size()
    with torch.backends.cudnn.flags(allow_tf32=False):
        expected = F.conv2d(x, w, padding=1)
    assert error(y.cpu().numpy(), expected.cpu().numpy()) <= tolerance(np.float32)
    del expected
    del y
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() == torch_before  # every buffer went back to PyTorch


def test_record_stream_holds_a_result_for_another_streams_work():
    """Issue 19, defect 5: a result is a view of a caching-allocator block, so record_stream
    works on it: freed while a side stream still uses it, its block is not handed out again on
    the main stream until that work is done (through DLPack the allocator did not own it, and
    record_stream recorded nothing)."""
    x = torch.randn(4, 16, 32, 32, device="cuda")
    w = torch.randn(32, 16, 3, 3, device="cuda")
    y = ft.conv2d(x, w, padding=1, algo="im2col")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        torch.cuda._sleep(100_000_000)  # the side stream busy for a while...
        y.mul_(2)  # ...then using y
    y.record_stream(side)
    held = y.untyped_storage().data_ptr()
    del y
    again = torch.empty(4, 32, 32, 32, device="cuda")  # the same size, on the main stream
    assert again.untyped_storage().data_ptr() != held
    torch.cuda.synchronize()

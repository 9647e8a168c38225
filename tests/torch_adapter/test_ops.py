"""fastconv.torch's operators: forward values and gradients against torch.nn.functional (the
independent oracle), torch.autograd.gradcheck in float64 over parameter grids, and
torch.library.opcheck (schema, fake implementation, autograd registration, AOT dispatch) for
every operator, forward and backward."""
from itertools import product

import numpy as np
import pytest

from fastconv.testing import error, tolerance

torch = pytest.importorskip("torch")
F = torch.nn.functional
ft = pytest.importorskip("fastconv.torch")


def _conv2d_cases():
    for stride, padding, dilation, groups, bias in product(
            (1, 2), (0, 1, "same", "valid"), (1, 2), (1, 2), (True, False)):
        if padding == "same" and stride != 1:
            continue
        yield ("conv2d", ((2, 4, 7, 6), (4, 4 // groups, 3, 2), (4,) if bias else None),
               dict(stride=stride, padding=padding, dilation=dilation, groups=groups))


def _conv1d_cases():
    for stride, padding, dilation, groups in product((1, 3), (0, 2, "same"), (1, 2), (1, 2)):
        if padding == "same" and stride != 1:
            continue
        yield ("conv1d", ((2, 4, 9), (6, 4 // groups, 3), (6,)),
               dict(stride=stride, padding=padding, dilation=dilation, groups=groups))


def _transposed_cases():
    for stride, padding, output_padding, groups, dilation in product(
            (1, 2), (0, 1), (0, 1), (1, 2), (1, 2)):
        if output_padding >= max(stride, dilation):
            continue
        yield ("conv_transpose2d", ((2, 4, 4, 5), (4, 6 // groups, 3, 3), (6,)),
               dict(stride=stride, padding=padding, output_padding=output_padding,
                    groups=groups, dilation=dilation))


def _max_pool_cases():
    for kernel, stride, padding, dilation, ceil_mode in product(
            (2, 3), (None, 1, 2), (0, 1), (1, 2), (False, True)):
        yield ("max_pool2d", ((2, 3, 7, 8),),
               dict(kernel_size=kernel, stride=stride, padding=padding, dilation=dilation,
                    ceil_mode=ceil_mode))


def _avg_pool_cases():
    for kernel, stride, padding, ceil_mode, include, divisor in product(
            (2, 3), (None, 2), (0, 1), (False, True), (True, False), (None, 5)):
        yield ("avg_pool2d", ((2, 3, 7, 8),),
               dict(kernel_size=kernel, stride=stride, padding=padding, ceil_mode=ceil_mode,
                    count_include_pad=include, divisor_override=divisor))


def _adaptive_cases():
    for size in (1, (2, 3), (None, 2), (5, 4), (7, 8)):
        yield "adaptive_avg_pool2d", ((2, 3, 7, 8),), dict(output_size=size)


def _batch_norm_cases():
    for training, affine, stats in product((True, False), (True, False), (True, False)):
        if not training and not stats:
            continue
        shapes = ((4, 3, 5, 6), (3,) if stats else None, (3,) if stats else None,
                  (3,) if affine else None, (3,) if affine else None)
        yield "batch_norm", shapes, dict(training=training, momentum=0.3, eps=1e-4)


CASES = [*_conv2d_cases(), *_conv1d_cases(), *_transposed_cases(), *_max_pool_cases(),
         *_avg_pool_cases(), *_adaptive_cases(), *_batch_norm_cases()]
IDS = [f"{op}-{i}" for i, (op, _, _) in enumerate(CASES)]
# arguments that are statistics, not differentiable inputs (batch_norm's running mean and var)
STATISTICS = {"batch_norm": (1, 2)}


def make_args(op, shapes, dtype, seed=0, requires_grad=False):
    rng = np.random.default_rng(seed)
    args = []
    for i, shape in enumerate(shapes):
        if shape is None:
            args.append(None)
            continue
        a = torch.from_numpy(rng.standard_normal(shape)).to(dtype)
        if op == "batch_norm" and i == 2:
            a = a.abs() + 0.5  # a variance
        statistic = i in STATISTICS.get(op, ())
        args.append(a.requires_grad_(requires_grad and not statistic))
    return args


def call(module, op, args, kwargs):
    return getattr(module, op)(*args, **kwargs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("op, shapes, kwargs", CASES, ids=IDS)
def test_forward_and_gradients_match_torch(op, shapes, kwargs, dtype):
    """The eager way in: an autograd.Function calling fastconv's ops directly."""
    _check_against_torch(op, shapes, kwargs, dtype)


@pytest.mark.parametrize("op, shapes, kwargs", CASES, ids=IDS)
def test_registered_operators_match_torch(op, shapes, kwargs, monkeypatch):
    """The way in of torch.compile, subclasses and functorch, taken here by plain tensors: the
    registered operators, their autograd formulas and backward operators."""
    from fastconv.torch import ops

    monkeypatch.setattr(ops, "_plain", lambda tensors: False)
    _check_against_torch(op, shapes, kwargs, torch.float64)


def _check_against_torch(op, shapes, kwargs, dtype):
    ours = make_args(op, shapes, dtype, requires_grad=True)
    theirs = [None if a is None else a.detach().clone().requires_grad_(a.requires_grad)
              for a in ours]
    y, y_torch = call(ft, op, ours, kwargs), call(F, op, theirs, kwargs)
    tol = tolerance(np.dtype(str(dtype).split(".")[1]))
    assert y.dtype == y_torch.dtype and y.shape == y_torch.shape
    assert error(y.detach().numpy(), y_torch.detach().numpy()) <= tol
    for a, b in zip(ours, theirs):  # running statistics updated alike
        if a is not None and not a.requires_grad:
            assert error(a.numpy(), b.numpy()) <= tol
    gy = torch.from_numpy(np.random.default_rng(1).standard_normal(y.shape)).to(dtype)
    y.backward(gy)
    y_torch.backward(gy)
    for a, b in zip(ours, theirs):
        if a is not None and a.requires_grad:
            assert a.grad is not None and a.grad.shape == a.shape
            assert error(a.grad.numpy(), b.grad.numpy()) <= tol


@pytest.mark.parametrize("op, shapes, kwargs", CASES, ids=IDS)
def test_gradcheck(op, shapes, kwargs):
    args = make_args(op, shapes, torch.float64, requires_grad=True)
    if op == "batch_norm":  # the statistics are updated in place: give each evaluation fresh ones
        stats = [None if a is None else a.detach().clone() for a in args[1:3]]

        def function(x, w, b):
            fresh = [None if s is None else s.clone() for s in stats]
            return ft.batch_norm(x, *fresh, w, b, **kwargs)

        inputs = (args[0], args[3], args[4])
    else:
        def function(*inputs):
            return call(ft, op, inputs, kwargs)

        inputs = tuple(args)
    assert torch.autograd.gradcheck(function, inputs, fast_mode=True)


def _custom_op_calls():
    """(operator, args) for every fastconv operator, forward and backward."""
    ops = torch.ops.fastconv
    f64 = dict(dtype=torch.float64)
    x, w, b = torch.randn(2, 4, 7, 6, **f64), torch.randn(6, 2, 3, 3, **f64), torch.randn(6, **f64)
    gy = torch.randn(2, 6, 4, 2, **f64)
    x1, w1 = torch.randn(2, 4, 9, **f64), torch.randn(6, 4, 3, **f64)
    xt, wt = torch.randn(2, 4, 4, 5, **f64), torch.randn(4, 3, 3, 3, **f64)
    gyt = torch.randn(2, 3, 9, 10, **f64)
    xp = torch.randn(2, 3, 7, 8, **f64)
    y, idx = ops.max_pool2d(xp, [3, 3], [2, 2], [1, 1], [1, 1], True, "auto")
    gyp = torch.randn_like(y)
    xb, rm, rv = torch.randn(4, 3, 5, 6, **f64), torch.zeros(3, **f64), torch.ones(3, **f64)
    wb, bb = torch.randn(3, **f64), torch.randn(3, **f64)
    conv = ([2, 1], [1, 0], "", [1, 2], 2)
    return [
        (ops.conv2d, (x, w, b, *conv, "auto")),
        (ops.conv2d, (x, w, None, [1, 1], [0, 0], "same", [1, 1], 2, "auto")),
        (ops.conv2d_backward, (gy, x, w, *conv, [True, True, True], "auto")),
        (ops.conv2d_backward, (gy, x, w, *conv, [False, True, False], "auto")),
        (ops.conv1d, (x1, w1, None, [2], [1], "", [1], 1, "auto")),
        (ops.conv1d_backward, (torch.randn(2, 6, 5, **f64), x1, w1, [2], [1], "", [1], 1,
                               [True, True, True], "auto")),
        (ops.conv_transpose2d, (xt, wt, torch.randn(3, **f64), [2, 2], [0, 1], [0, 1], 1,
                                [1, 1], "auto")),
        (ops.conv_transpose2d_backward, (gyt, xt, wt, [2, 2], [0, 1], [0, 1], 1, [1, 1],
                                         [True, True, True], "auto")),
        (ops.max_pool2d, (xp, [3, 3], [2, 2], [1, 1], [1, 1], True, "auto")),
        (ops.max_pool2d_backward, (gyp, xp, idx, [3, 3], [2, 2], [1, 1], [1, 1], True, "auto")),
        (ops.avg_pool2d, (xp, [3, 2], [2, 1], [1, 0], False, False, None, "auto")),
        (ops.avg_pool2d_backward, (torch.randn(2, 3, 4, 7, **f64), xp, [3, 2], [2, 1], [1, 0],
                                   False, False, None, "auto")),
        (ops.adaptive_avg_pool2d, (xp, [3, 5], "auto")),
        (ops.adaptive_avg_pool2d_backward, (torch.randn(2, 3, 3, 5, **f64), xp, "auto")),
        (ops.batch_norm, (xb, rm, rv, wb, bb, True, 0.1, 1e-5, "auto")),
        (ops.batch_norm, (xb, rm, rv, None, None, False, 0.1, 1e-5, "auto")),
        (ops.batch_norm_backward, (torch.randn_like(xb), xb, wb, None, None, True, 1e-5,
                                   [True, True, True], "auto")),
    ]


@pytest.mark.parametrize("index", range(len(_custom_op_calls())))
def test_opcheck(index):
    operator, args = _custom_op_calls()[index]
    differentiable = [a.requires_grad_() if isinstance(a, torch.Tensor) and a.is_floating_point()
                      and a.dim() > 1 and "backward" not in str(operator) else a for a in args]
    torch.library.opcheck(operator, differentiable)


def test_every_operator_is_opchecked():
    forward = ("conv2d", "conv1d", "conv_transpose2d", "max_pool2d", "avg_pool2d",
               "adaptive_avg_pool2d", "batch_norm")
    checked = {operator._qualified_op_name.split("::")[-1] for operator, _ in _custom_op_calls()}
    assert checked == {name + suffix for name in forward for suffix in ("", "_backward")}


def test_cpu_tensors_are_handed_over_without_copies():
    from fastconv.torch._handover import to_array, to_tensor

    x = torch.randn(2, 3, 4, 5)
    a = to_array(x)
    assert a.ctypes.data == x.data_ptr()
    t = to_tensor(a)
    assert t.data_ptr() == x.data_ptr()


def test_cuda_buffers_come_from_torchs_caching_allocator(monkeypatch):
    """Issue 19, defect 5: while fastconv serves PyTorch on a GPU, every buffer it allocates
    comes from PyTorch's caching allocator (one pool, PyTorch's stream rules), not from CuPy's
    pool. Stand-ins for the device calls, so that this runs without a GPU (test_cuda.py
    checks the real thing): on_device installs the allocator of the tensors' device for as
    long as it runs, and each allocation is a uint8 tensor of that device which the CuPy
    memory keeps alive and lets go with it."""
    import contextlib
    import gc
    import weakref

    import cupy

    from fastconv.torch import _handover

    made = []

    def empty(size, dtype, device):  # torch.empty on the GPU, here a CPU tensor
        made.append(torch.zeros(size, dtype=dtype))
        made[-1].asked = (size, dtype, device)
        return made[-1]

    class Stream:
        cuda_stream = 12345

    monkeypatch.setattr(torch, "empty", empty)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda index: Stream())
    monkeypatch.setattr(cupy.cuda, "Device", lambda index: contextlib.nullcontext())
    monkeypatch.setattr(cupy.cuda, "ExternalStream",
                        lambda ptr, index: contextlib.nullcontext())
    before = cupy.cuda.get_allocator()
    with _handover.on_device(torch.device("cuda", 1)):
        allocate = cupy.cuda.get_allocator()
        assert allocate is _handover.torch_allocator(1)
        pointer = allocate(1000)
    assert cupy.cuda.get_allocator() is before
    (block,) = made
    assert block.asked == (1000, torch.uint8, torch.device("cuda", 1))
    assert pointer.ptr == block.data_ptr() and pointer.mem.size == 1000
    alive = weakref.ref(block)
    del block, made[:]
    gc.collect()
    assert alive() is not None  # the CuPy memory holds the tensor...
    del pointer
    gc.collect()
    assert alive() is None  # ...and lets it go back to PyTorch's pool with itself


def test_cuda_results_come_back_as_views_of_the_allocators_blocks(monkeypatch):
    """Issue 19, defect 5: a result in torch_allocator's memory comes back as a view of the
    block tensor itself, not through DLPack (whose tensor the caching allocator does not own,
    so record_stream on it recorded nothing). Stand-ins as above, CPU tensors for the blocks;
    test_cuda.py checks record_stream on the GPU."""
    import types

    import cupy

    from fastconv.torch import _handover

    made = []

    def empty(size, dtype, device):
        made.append(torch.zeros(size, dtype=dtype))
        return made[-1]

    monkeypatch.setattr(torch, "empty", empty)
    pointer = _handover.torch_allocator(3)(64)
    (block,) = made

    def array(offset, shape, strides, dtype, base=pointer.ptr):
        data = types.SimpleNamespace(ptr=base + offset, mem=types.SimpleNamespace(ptr=base))
        return types.SimpleNamespace(data=data, shape=shape, strides=strides, dtype=dtype)

    view = _handover.block_view(array(8, (3, 4), (16, 4), np.float32))
    assert view.dtype == torch.float32 and view.shape == (3, 4)
    assert view.untyped_storage().data_ptr() == block.data_ptr()  # the block's own storage
    block.view(torch.float32)[2:14] = torch.arange(12, dtype=torch.float32)
    assert torch.equal(view, torch.arange(12, dtype=torch.float32).reshape(3, 4))
    assert torch.equal(_handover.block_view(array(0, (2, 2), (8, 32), np.float64)),
                       block.view(torch.float64).as_strided((2, 2), (1, 4)))
    assert _handover.block_view(array(2, (2,), (4,), np.float32)) is None  # unaligned start
    assert _handover.block_view(array(0, (2,), (-4,), np.float32)) is None  # negative stride
    assert _handover.block_view(array(0, (2,), (4,), np.float32, base=1)) is None  # not ours
    assert isinstance(pointer, cupy.cuda.MemoryPointer)


def test_algo_passes_through_and_bad_input_names_the_argument():
    x, w = torch.randn(2, 4, 8, 8), torch.randn(8, 4, 3, 3)
    for algo in ("direct", "im2col", "reference"):
        assert torch.allclose(ft.conv2d(x, w, algo=algo), F.conv2d(x, w), atol=1e-5)
    with pytest.raises(ValueError, match="pointwise"):
        ft.conv2d(x, w, algo="pointwise")
    with pytest.raises(ValueError, match="groups"):
        ft.conv2d(x, w, groups=3)
    with pytest.raises(TypeError, match="float16"):
        ft.conv2d(x.half(), w.half())


@pytest.mark.parametrize("grad", [False, True], ids=["no-grad", "grad"])
def test_running_statistics_are_updated_as_torch_updates_them(grad):
    """Every eager way in (straight to fastconv without gradients, the one-output autograd
    function with them) updates the running statistics in place, bumps their version as torch
    does, and gives torch's values."""
    x = torch.randn(4, 3, 5, 5, requires_grad=grad)
    ours, theirs = (torch.zeros(3), torch.ones(3)), (torch.zeros(3), torch.ones(3))
    before = ours[0]._version
    y = ft.batch_norm(x, *ours, training=True, momentum=0.3)
    expected = F.batch_norm(x, *theirs, training=True, momentum=0.3)
    assert ours[0]._version > before
    assert error(y.detach().numpy(), expected.detach().numpy()) <= tolerance(np.float32)
    for a, b in zip(ours, theirs):
        assert error(a.numpy(), b.numpy()) <= tolerance(np.float32)
    if grad:
        y.sum().backward()
        assert x.grad is not None


def test_second_derivatives_raise_rather_than_vanish():
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    for op in (lambda t: ft.max_pool2d(t, 2), lambda t: ft.avg_pool2d(t, 2),
               lambda t: ft.batch_norm(t, None, None, training=True)):
        (g,) = torch.autograd.grad(op(x).pow(2).sum(), x, create_graph=True)
        with pytest.raises(RuntimeError):
            g.sum().backward()


def _escaped(transform):
    """A tensor that escaped from inside a functorch transform: still wrapped, no transform
    active any more."""
    escaped = []

    def keep(t):
        escaped.append(t)
        return t * 2
    if transform == "vmap":
        torch.vmap(keep)(torch.randn(2, 2, 3, 6, 6))
    else:
        torch.func.grad(lambda t: keep(t).sum())(torch.randn(2, 3, 6, 6))
    return escaped[0]


@pytest.mark.parametrize("grad_mode", [True, False], ids=["grad-mode", "no-grad"])
@pytest.mark.parametrize("transform", ["vmap", "grad"])
def test_a_tensor_escaped_from_a_transform_is_treated_as_torch_treats_it(transform, grad_mode):
    """Such a tensor is never taken for a plain CPU tensor's NumPy view: one escaped from vmap
    raises, as torch raises; one escaped from grad gives torch's values, one op or several."""
    t = _escaped(transform)
    with torch.set_grad_enabled(grad_mode):
        for ours, theirs in ((lambda a: ft.avg_pool2d(a, 2), lambda a: F.avg_pool2d(a, 2)),
                             (lambda a: ft.batch_norm(a, None, None, training=True),
                              lambda a: F.batch_norm(a, None, None, training=True))):
            if transform == "vmap":
                with pytest.raises(RuntimeError):
                    theirs(t)
                with pytest.raises(RuntimeError):
                    ours(t)
            else:
                expected = theirs(t).detach().numpy()
                assert error(ours(t).detach().numpy(), expected) <= tolerance(np.float32)


@pytest.mark.parametrize("op", ["max_pool2d", "avg_pool2d", "adaptive_avg_pool2d"])
def test_pooling_under_saved_tensor_hooks_saves_what_the_hooks_see(op):
    """Pooling nodes keep NumPy views for their backward only where no saved-tensor hooks are
    in force: under hooks (checkpointing, save_on_cpu) the input is saved through them, and the
    gradient is torch's either way."""
    args = (2,) if op != "adaptive_avg_pool2d" else ((2, 3),)
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    expected = torch.autograd.grad(getattr(F, op)(x, *args).pow(2).sum(), x)[0]
    packed = []

    def pack(t):
        packed.append(t)
        return t
    for hooked in (False, True):
        packed.clear()
        if hooked:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                y = getattr(ft, op)(x, *args)
        else:
            y = getattr(ft, op)(x, *args)
        (gx,) = torch.autograd.grad(y.pow(2).sum(), x)
        assert any(t is x for t in packed) == hooked
        assert error(gx.numpy(), expected.numpy()) <= tolerance(np.float32)

"""Sizes no machine holds, and allocations that fail: MemoryError naming the op, raised before
any work, with nothing left half done (batch norm's running statistics untouched)."""
import numpy as np
import pytest

import fastconv as fc
from fastconv import _calls, _memory, registry

X = np.zeros((2, 4, 6, 6), np.float32)
W = np.zeros((6, 4, 3, 3), np.float32)


def huge(shape, dtype=np.float32):
    """A read-only array of any size that takes no memory (every element is the same one)."""
    return np.broadcast_to(np.ones((), dtype), shape)


IMPOSSIBLE = [
    ("conv2d", lambda: fc.conv2d(X, W, padding=2**21)),
    ("conv2d", lambda: fc.conv2d(huge((2**20, 4, 2**12, 2**12)), W)),
    ("conv_transpose2d", lambda: fc.conv_transpose2d(X, np.zeros((4, 2, 3, 3), np.float32),
                                                     stride=2**20)),
    ("conv2d_backward", lambda: fc.conv2d_backward(huge((2**20, 6, 2**12, 2**12)),
                                                   huge((2**20, 4, 2**12 + 2, 2**12 + 2)), W)),
    ("max_pool2d", lambda: fc.max_pool2d(huge((2**20, 4, 2**12, 2**12)), 1,
                                         return_indices=True)),
    ("avg_pool2d", lambda: fc.avg_pool2d(huge((2**30, 2**20, 4, 4)), 2)),
    ("adaptive_avg_pool2d", lambda: fc.adaptive_avg_pool2d(X, 2**21)),
    ("batch_norm", lambda: fc.batch_norm(huge((2**30, 3, 2**20)), None, None, training=True)),
]


@pytest.mark.parametrize("op, call", IMPOSSIBLE, ids=[f"{op}-{i}" for i, (op, _) in
                                                      enumerate(IMPOSSIBLE)])
def test_a_call_larger_than_memory_raises_memory_error_before_any_work(op, call):
    with pytest.raises(MemoryError, match=rf"^{op}: this call needs .* but this machine has "
                                          rf".* of memory in all; nothing was computed"):
        call()


def test_running_statistics_are_untouched_when_the_call_cannot_fit():
    rm, rv = np.zeros(3), np.ones(3)
    with pytest.raises(MemoryError, match="batch_norm: this call needs"):
        fc.batch_norm(huge((2**30, 3, 2**20), np.float64), rm, rv, training=True)
    np.testing.assert_array_equal(rm, np.zeros(3))
    np.testing.assert_array_equal(rv, np.ones(3))


def test_the_check_counts_outputs_workspace_and_input_copies(monkeypatch):
    """With the machine's memory set just below what a call needs, the same call fails; the
    message breaks the total down."""
    x = np.ones((2, 4, 6, 6), np.float32)[..., ::-1]  # a strided view: copied before the kernels
    explained = fc.explain("conv2d", x.shape, W.shape, padding=1, algo="im2col")
    outputs = int(np.prod(explained["output_shapes"][0])) * 4
    needed = outputs + explained["workspace_bytes"] + x.nbytes
    monkeypatch.setattr(_memory, "memory_size", lambda backend: needed)
    _calls.forget()  # the memory is checked when a call's plan is made
    fc.conv2d(x, W, padding=1, algo="im2col")  # exactly fits
    monkeypatch.setattr(_memory, "memory_size", lambda backend: needed - 1)
    _calls.forget()
    size = _memory.format_bytes
    with pytest.raises(MemoryError) as info:
        fc.conv2d(x, W, padding=1, algo="im2col")
    assert str(info.value).startswith(
        f"conv2d: this call needs {size(needed)} (outputs {size(outputs)}, workspace "
        f"{size(explained['workspace_bytes'])}, input copies {size(x.nbytes)}) but this "
        f"machine has {size(needed - 1)} of memory in all")


@pytest.fixture
def greedy_algorithm():
    """A conv algorithm whose kernels fail to allocate, as NumPy does when memory runs out."""
    class Kernels:
        def forward(self, x, w, b, p):
            raise MemoryError("Unable to allocate 9.00 GiB for an array with shape (3, 2**30)")

    algorithm = registry.Algorithm("greedy", "cpu", "conv", Kernels(), "fails to allocate")
    fc.algorithms("conv2d")  # load the built-in ones first
    registry.register(algorithm)
    yield algorithm
    registry.unregister("conv", "cpu", "greedy")


def test_an_allocation_that_fails_during_a_call_names_the_op(greedy_algorithm):
    with pytest.raises(MemoryError, match=r"^conv2d: out of memory: Unable to allocate 9.00 GiB"):
        fc.conv2d(X, W, algo="greedy")


@pytest.mark.parametrize("algo", ["im2col", "direct", "reference"])
def test_a_stride_of_2_31_minus_1_is_exact_and_costs_nothing(algo):
    """Only one window fits along each dimension: PyTorch's answer, with no buffer sized by
    the stride (direct's grid rows are a multiple of it)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 4, 9, 7)), rng.standard_normal((6, 4, 3, 3))
    s = 2**31 - 1
    got = fc.conv2d(x, w, stride=s, padding=1, algo=algo)
    want = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), stride=s,
                                      padding=1).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    gx, gw, _ = fc.conv2d_backward(np.ones_like(got), x, w, stride=s, padding=1, algo=algo)
    assert gx.shape == x.shape and gw.shape == w.shape
    assert fc.explain("conv2d", x.shape, w.shape, stride=s, padding=1,
                      algo=algo)["workspace_bytes"] < 2**20
    y = fc.max_pool2d(x, 3, stride=s, padding=1)
    want = torch.nn.functional.max_pool2d(torch.from_numpy(x), 3, stride=s, padding=1).numpy()
    np.testing.assert_array_equal(y, want)


def test_a_huge_pooling_window_is_checked_without_walking_it():
    """kernel_size 2**30 with padding 2**29: each window still overlaps the 6x6 input (the
    check is arithmetic, not a walk over 2**30 taps)."""
    y = fc.max_pool2d(X + 1, 2**30 + 1, stride=1, padding=2**29)
    assert y.shape == (2, 4, 6, 6) and (y == 1).all()

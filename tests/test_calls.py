"""The call path (fastconv._calls): a plan per call signature, made once, and what must never
change because of it: results, errors, and the inputs. Every result is compared with the NumPy
reference, never with fastconv itself only."""
import threading
from typing import NamedTuple

import numpy as np
import pytest

import grids

import fastconv as fc
from fastconv import _calls, config, registry
from fastconv.testing import error, fastconv_runner, outputs, reference_op, tolerance



def assert_matches(actual, expected, dtype):
    """Within the tolerance table's bound of the reference, normwise."""
    assert actual.shape == expected.shape and actual.dtype == np.dtype(dtype)
    assert error(actual, expected) <= tolerance(dtype)


class Pair(NamedTuple):
    h: object
    w: object


R = np.random.default_rng(7)
X = R.standard_normal((2, 3, 9, 9)).astype(np.float32)
W = R.standard_normal((4, 3, 3, 3)).astype(np.float32)


def test_a_seen_call_reuses_its_plan_and_matches_the_reference():
    fc.algorithms("conv2d")  # the CPU backend loaded: its thread count is part of every key
    before = len(_calls.PLANS)
    first = fc.conv2d(X, W, padding=1)
    after_one = len(_calls.PLANS)
    second = fc.conv2d(X, W, padding=1)
    assert len(_calls.PLANS) == after_one and after_one <= before + 1
    np.testing.assert_array_equal(first, second)
    assert_matches(second, reference_op("conv2d", X, W, padding=1), np.float32)


@pytest.mark.parametrize("good, bad, error", [
    (dict(stride=1), dict(stride=True), TypeError),           # True == 1 and hash(True) == 1
    (dict(stride=2), dict(stride=2.0), TypeError),            # 2.0 == 2
    (dict(padding=(1, 1)), dict(padding=(1, True)), TypeError),
    (dict(padding=[1, 1]), dict(padding=[1.0, 1]), TypeError),
    (dict(groups=1), dict(groups=np.float64(1.0)), TypeError),
    (dict(padding=1), dict(padding=-1), ValueError),
    (dict(stride=(2, 2)), dict(stride=Pair(2.0, 2)), TypeError),  # a tuple subclass
    (dict(stride=Pair(1, 1)), dict(stride=Pair(True, 1)), TypeError),
])
def test_bad_input_raises_after_the_same_call_with_good_input(good, bad, error):
    fc.conv2d(X, W, **good)
    with pytest.raises(error) as first:
        fc.conv2d(X, W, **bad)
    with pytest.raises(error) as again:  # a call that raised is never remembered
        fc.conv2d(X, W, **bad)
    assert str(first.value) == str(again.value)


def test_a_list_and_a_tuple_make_the_same_call():
    np.testing.assert_array_equal(fc.max_pool2d(X, [2, 2], [1, 2]), fc.max_pool2d(X, (2, 2), (1, 2)))


def test_what_differs_between_calls_is_checked_on_every_call():
    fc.avg_pool2d(X, 2)
    # another layout, dtype, shape or array type of the same op and arguments: another plan
    strided = np.asfortranarray(X)
    assert_matches(fc.avg_pool2d(strided, 2), reference_op("avg_pool2d", X, 2), np.float32)
    y64 = fc.avg_pool2d(X.astype(np.float64), 2)
    assert y64.dtype == np.float64
    assert_matches(y64, reference_op("avg_pool2d", X.astype(np.float64), 2), np.float64)
    assert fc.avg_pool2d(X[:1], 2).shape == (1, 3, 4, 4)
    with pytest.raises(TypeError, match="numpy.ndarray or cupy.ndarray"):
        fc.avg_pool2d(X.tolist(), 2)
    with pytest.raises(TypeError, match="int32; expected float32 or float64"):
        fc.avg_pool2d(X.astype(np.int32), 2)


def test_inputs_are_never_modified_and_running_stats_are_checked_each_call():
    x = X.copy()
    mean, var = np.zeros(3, np.float32), np.ones(3, np.float32)
    fc.batch_norm(x, mean, var, training=True)
    np.testing.assert_array_equal(x, X)
    mean.setflags(write=False)  # same signature as before: the flag is data, checked each call
    with pytest.raises(ValueError, match="running_mean is read-only"):
        fc.batch_norm(x, mean, var, training=True)


def test_saved_indices_are_range_checked_on_every_call():
    y, indices = fc.max_pool2d(X, 2, return_indices=True)
    gy = np.ones_like(y)
    fc.max_pool2d_backward(gy, X, 2, indices=indices)
    bad = indices.copy()
    bad[0, 0, 0, 0] = 81
    with pytest.raises(ValueError, match=r"indices must lie in \[0, H\*W\)"):
        fc.max_pool2d_backward(gy, X, 2, indices=bad)
    # the CPU kernel checks them in its own pass, plane by plane: a negative one in the last
    # plane, on every algorithm, and the message names the whole range
    bad = indices.copy()
    bad[-1, -1, -1, -1] = -1
    for algo in fc.explain("max_pool2d_backward", gy.shape, X.shape, 2,
                           indices=bad.shape)["candidates"]:
        with pytest.raises(ValueError, match=r"got values from -1 to "):
            fc.max_pool2d_backward(gy, X, 2, indices=bad, algo=algo)


def test_plans_are_bounded(monkeypatch):
    monkeypatch.setattr(_calls, "REMEMBERED", 3)
    for n in range(1, 9):
        fc.max_pool2d(X[:, :, :n + 1, :n + 1], 1)
        assert len(_calls.PLANS) <= 3


def test_a_change_of_the_registry_makes_new_plans():
    fc.conv2d(X, W)
    reference = registry.ALGORITHMS[("conv", "cpu")]["reference"]
    registry.register(reference._replace(name="oracle"))
    try:
        assert_matches(fc.conv2d(X, W, algo="oracle"), reference_op("conv2d", X, W), np.float32)
    finally:
        registry.unregister("conv", "cpu", "oracle")
    with pytest.raises(ValueError, match="unknown algorithm algo='oracle'"):
        fc.conv2d(X, W, algo="oracle")


def test_a_patched_tunable_takes_effect_at_once(monkeypatch):
    """The plans are keyed by the tunables' generation: every assignment to one (monkeypatch's
    and its undo included) makes the next call make its plan again, with the new value."""
    _calls.forget()  # (so that the memory cannot fill up and empty itself in between)
    fc.conv2d(X, W, padding=1, algo="im2col")
    before = len(_calls.PLANS)
    generation = config.generation
    monkeypatch.setattr(config, "IM2COL_TILE_BYTES", 1)  # one output row per tile
    assert config.generation == generation + 1
    y = fc.conv2d(X, W, padding=1, algo="im2col")
    assert len(_calls.PLANS) == before + 1
    assert_matches(y, reference_op("conv2d", X, W, padding=1), np.float32)
    monkeypatch.undo()
    assert config.generation == generation + 2


def test_calls_from_many_threads_at_once_agree_bitwise():
    expected = fc.conv2d(X, W, padding=1), fc.max_pool2d(X, 3, 2, 1), fc.avg_pool2d(X, 2)
    results, failures = [], []

    def work():
        try:
            for _ in range(20):
                results.append((fc.conv2d(X, W, padding=1), fc.max_pool2d(X, 3, 2, 1),
                                fc.avg_pool2d(X, 2)))
        except Exception as e:  # pragma: no cover - reported below
            failures.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    for got in results:
        for a, b in zip(got, expected):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("case", grids.CASES[::41], ids=lambda c: c.op)
def test_tiny_calls_on_one_thread_give_the_parallel_results(case, monkeypatch):
    """config.CPU_ONE_THREAD_BELOW (the tests set it to 0) runs tiny calls on one thread, where
    every parallel kernel runs as its serial twin (cpu._threads.parallel_jit): bitwise the
    results of the parallel loops, for every op and CPU algorithm, forward and backward, and
    Numba's thread count and the serial flag are as they were."""
    import numba

    from fastconv.cpu import _threads

    rng = np.random.default_rng(0)
    args = grids.forward_args(case, rng)
    back, back_kwargs = grids.backward_args(case, args, rng)
    before = numba.get_num_threads()
    for op, a, kwargs in ((case.op, args, case.kwargs), (case.op + "_backward", back, back_kwargs)):
        shapes = [None if x is None else x.shape for x in a]
        for algo in fc.explain(op, *shapes, **kwargs)["candidates"]:
            if algo == "reference":
                continue
            monkeypatch.setattr(config, "CPU_ONE_THREAD_BELOW", 0)
            parallel = outputs(op, a, kwargs, fastconv_runner(algo))
            monkeypatch.setattr(config, "CPU_ONE_THREAD_BELOW", 10**15)
            alone = outputs(op, a, kwargs, fastconv_runner(algo))
            assert numba.get_num_threads() == before and not _threads._serial.on
            assert len(alone) == len(parallel)
            for p, q in zip(parallel, alone):
                np.testing.assert_array_equal(q, p, err_msg=f"{op} {algo}")


def test_serial_twins_keep_the_parallel_loops_error_model(monkeypatch):
    """A float division by zero inside a kernel's loop gives inf or NaN on one thread as on
    many (Numba compiles prange bodies with the numpy error model; the twins too): evaluation
    batch norm with eps=0 and a zero running variance, against the reference."""
    x, zeros = np.ones((1, 2, 2, 2)), np.zeros(2)
    expected = reference_op("batch_norm", x, zeros, zeros, training=False, eps=0.0)
    gradients = []
    for below in (0, 10**15):  # parallel kernels, then their serial twins
        monkeypatch.setattr(config, "CPU_ONE_THREAD_BELOW", below)
        np.testing.assert_array_equal(fc.batch_norm(x, zeros, zeros, training=False, eps=0.0),
                                      expected)
        gradients.append(fc.batch_norm_backward(x, x, None, zeros, zeros, False, 0.0))
    for parallel, alone in zip(*gradients):
        np.testing.assert_array_equal(alone, parallel)


def test_a_cupy_calls_plan_is_made_and_run_on_its_arrays_device():
    """Arrays on one GPU while another is current: the plan is made (memory check, dispatch,
    kernel cache) and run (launches, allocations) inside that device's context. A stand-in
    for CuPy arrays and devices; tests/cuda runs the real thing where a GPU is visible."""
    current = []

    class Device:
        def __init__(self, id):
            self.id = id

        def __enter__(self):
            current.append(self.id)

        def __exit__(self, *exc):
            current.pop()

    class Array:  # as a CuPy array: of a class from a cupy module, with a device
        __module__ = "cupy._core.core"
        dtype, shape, strides = np.dtype(np.float32), (2,), (4,)

        def __init__(self, device):
            self.device = Device(device)

    seen = []

    def make(x, option):
        seen.append(("make", current[-1] if current else None))
        return lambda x: seen.append(("run", current[-1] if current else None))

    for _ in range(2):  # a plan made, then the same plan remembered
        _calls.run("a_test_op", make, (Array(1),), 0)
    assert seen == [("make", 1), ("run", 1), ("run", 1)] and current == []
    # NumPy arrays have no device to enter, subclasses included (their .device is "cpu")
    assert_matches(fc.avg_pool2d(np.ma.masked_array(X), 2), reference_op("avg_pool2d", X, 2),
                   np.float32)

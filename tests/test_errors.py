"""Every malformed call raises the right exception, with a message that names the argument, before
any work starts and without touching its inputs."""
import sys
import types

import numpy as np
import pytest

import fastconv as fc

X = np.zeros((2, 4, 6, 6))
W = np.zeros((6, 4, 3, 3))
X1 = np.zeros((2, 4, 9))
W1 = np.zeros((6, 4, 3))
WT = np.zeros((4, 3, 3, 3))  # conv_transpose2d: (in, out/groups, kh, kw)
GY = np.zeros((2, 6, 4, 4))  # conv2d(X, W) output
BN_X = np.zeros((4, 3, 5, 5))
C3 = np.zeros(3)


def _ro(a):
    a = a.copy()
    a.flags.writeable = False
    return a


# (id, call, exception, regex the message must match: names the argument and what was wrong)
CASES = [
    # --- shapes and channels -------------------------------------------------------------
    ("groups-divide-out", lambda: fc.conv2d(X, np.zeros((3, 2, 3, 3)), groups=2), ValueError,
     r"weight has 3 output channels.*not divisible by groups=2"),
    ("channels-vs-weight", lambda: fc.conv2d(X, np.zeros((6, 3, 3, 3))), ValueError,
     r"x has 4 channels but weight .* expects 3"),
    ("channels-vs-groups", lambda: fc.conv2d(X, np.zeros((6, 2, 3, 3)), groups=3), ValueError,
     r"x has 4 channels but weight .*groups=3"),
    ("kernel-larger-than-input", lambda: fc.conv2d(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 5, 5))),
     ValueError, r"kernel is larger than the padded input"),
    ("dilated-kernel-larger", lambda: fc.conv2d(X, W, dilation=3), ValueError,
     r"kernel is larger than the padded input.*dilation \(3, 3\)"),
    ("x-rank", lambda: fc.conv2d(np.zeros((4, 6)), W), ValueError, r"x must be 3-D .* or 4-D"),
    ("x-rank-conv1d", lambda: fc.conv1d(X, W1), ValueError, r"conv1d: x must be 2-D .* or 3-D"),
    ("weight-rank", lambda: fc.conv2d(X, np.zeros((6, 4, 3))), ValueError, r"weight must be 4-D"),
    ("weight-empty", lambda: fc.conv2d(X, np.zeros((0, 4, 3, 3))), ValueError,
     r"weight must have non-zero dimensions"),
    ("x-no-channels", lambda: fc.conv2d(np.zeros((2, 0, 6, 6)), np.zeros((6, 0, 3, 3))),
     ValueError, r"x must have at least one channel"),
    ("bias-shape", lambda: fc.conv2d(X, W, np.zeros(4)), ValueError, r"bias must have shape \(6,\)"),
    ("bias-rank", lambda: fc.conv2d(X, W, np.zeros((6, 1))), ValueError, r"bias must be 1-D"),
    ("transpose-channels", lambda: fc.conv_transpose2d(X, np.zeros((3, 3, 3, 3))), ValueError,
     r"x has 4 channels but weight.shape\[0\] is 3"),
    ("transpose-groups", lambda: fc.conv_transpose2d(X, WT, groups=3), ValueError,
     r"x has 4 channels, which is not divisible by groups=3"),
    ("transpose-output-too-small",
     lambda: fc.conv_transpose2d(np.zeros((1, 4, 1, 1)), np.zeros((4, 1, 1, 1)), padding=1),
     ValueError, r"output size \(-1, -1\) is less than 1"),
    ("pool-output-too-small", lambda: fc.max_pool2d(np.zeros((1, 1, 2, 2)), 3), ValueError,
     r"output size \(0, 0\) is less than 1"),
    ("avg-output-too-small", lambda: fc.avg_pool2d(np.zeros((1, 1, 2, 5)), 3), ValueError,
     r"output size \(0, 1\) is less than 1"),
    ("adaptive-output-zero", lambda: fc.adaptive_avg_pool2d(X, 0), ValueError,
     r"output_size must be positive"),
    ("adaptive-output-type", lambda: fc.adaptive_avg_pool2d(X, 1.5), TypeError, r"output_size"),
    ("adaptive-output-none", lambda: fc.adaptive_avg_pool2d(X, None), TypeError,
     r"output_size must be an int or a pair of ints"),
    ("adaptive-grad-empty",
     lambda: fc.adaptive_avg_pool2d_backward(np.zeros((2, 4, 0, 1)), X), ValueError,
     r"grad_y must have a non-empty spatial extent"),
    ("output-too-large", lambda: fc.conv2d(X, W, padding=2**20), MemoryError,
     r"conv2d: this call needs .* TiB \(outputs .* TiB.*\) but this machine has .* of memory"),
    ("pool-window-only-padding",
     lambda: fc.max_pool2d(np.zeros((1, 1, 1, 2)), (1, 2), padding=(0, 1), dilation=(1, 3)),
     ValueError, r"pooling window 0 along the width covers only padding"),
    ("pool-x-empty-plane", lambda: fc.max_pool2d(np.zeros((1, 1, 0, 4)), 1), ValueError,
     r"non-empty spatial extent"),
    # --- stride, padding, dilation, groups ----------------------------------------------------
    ("zero-stride", lambda: fc.conv2d(X, W, stride=0), ValueError, r"stride must be positive, got 0"),
    ("negative-stride-pair", lambda: fc.conv2d(X, W, stride=(1, -1)), ValueError,
     r"stride must be positive, got \(1, -1\)"),
    ("stride-length", lambda: fc.conv2d(X, W, stride=(1, 2, 3)), ValueError,
     r"stride must be an int or a sequence of 2 ints"),
    ("stride-float", lambda: fc.conv2d(X, W, stride=1.5), TypeError, r"stride must be an int"),
    ("stride-past-int32", lambda: fc.conv2d(X, W, stride=2**31), ValueError,
     r"stride must be at most 2\*\*31 - 1 = 2147483647 in magnitude, got 2147483648"),
    ("padding-past-int64", lambda: fc.max_pool2d(X, 2, padding=2**70), ValueError,
     r"padding must be at most 2\*\*31 - 1"),
    ("groups-past-int32", lambda: fc.conv2d(X, W, groups=2**40), ValueError,
     r"groups must be at most 2\*\*31 - 1"),
    ("divisor-past-int32", lambda: fc.avg_pool2d(X, 2, divisor_override=-(2**32)), ValueError,
     r"divisor_override must be at most 2\*\*31 - 1 = 2147483647 in magnitude"),
    ("output-size-past-int32", lambda: fc.adaptive_avg_pool2d(X, (2**31, 1)), ValueError,
     r"output_size must be at most 2\*\*31 - 1"),
    ("stride-bool", lambda: fc.conv2d(X, W, stride=True), TypeError, r"stride must be an int"),
    ("negative-padding", lambda: fc.conv2d(X, W, padding=-1), ValueError,
     r"padding must be non-negative, got -1"),
    ("padding-string", lambda: fc.conv2d(X, W, padding="full"), ValueError,
     r"padding must be an int, a sequence of ints, 'same' or 'valid', got 'full'"),
    ("same-with-stride", lambda: fc.conv2d(X, W, stride=2, padding="same"), ValueError,
     r"padding='same' needs stride 1"),
    ("zero-dilation", lambda: fc.conv2d(X, W, dilation=0), ValueError,
     r"dilation must be positive, got 0"),
    ("zero-groups", lambda: fc.conv2d(X, W, groups=0), ValueError,
     r"groups must be a positive int, got 0"),
    ("float-groups", lambda: fc.conv2d(X, W, groups=2.0), TypeError, r"groups must be an int"),
    ("conv1d-zero-stride", lambda: fc.conv1d(X1, W1, stride=0), ValueError,
     r"conv1d: stride must be positive"),
    ("transpose-padding-string", lambda: fc.conv_transpose2d(X, WT, padding="same"), TypeError,
     r"padding must be an int or a pair of ints, got 'same'"),
    ("transpose-negative-padding", lambda: fc.conv_transpose2d(X, WT, padding=-1), ValueError,
     r"padding must be non-negative"),
    ("output-padding-too-large", lambda: fc.conv_transpose2d(X, WT, stride=2, output_padding=2),
     ValueError, r"output_padding must be smaller than stride or dilation"),
    ("output-padding-negative", lambda: fc.conv_transpose2d(X, WT, output_padding=-1), ValueError,
     r"output_padding must be non-negative"),
    ("pool-zero-stride", lambda: fc.max_pool2d(X, 2, stride=0), ValueError,
     r"stride must be positive, got 0"),
    ("pool-zero-kernel", lambda: fc.avg_pool2d(X, 0), ValueError, r"kernel_size must be positive"),
    ("pool-padding-too-large", lambda: fc.max_pool2d(X, 3, padding=2), ValueError,
     r"padding must be at most half the kernel size"),
    ("pool-negative-padding", lambda: fc.avg_pool2d(X, 3, padding=-1), ValueError,
     r"padding must be non-negative"),
    ("pool-zero-dilation", lambda: fc.max_pool2d(X, 3, dilation=0), ValueError,
     r"dilation must be positive"),
    ("ceil-mode-type", lambda: fc.max_pool2d(X, 2, ceil_mode="yes"), TypeError,
     r"ceil_mode must be True or False"),
    ("return-indices-type", lambda: fc.max_pool2d(X, 2, return_indices=1), TypeError,
     r"return_indices must be True or False"),
    ("divisor-zero", lambda: fc.avg_pool2d(X, 2, divisor_override=0), ValueError,
     r"divisor_override must be non-zero"),
    ("divisor-float", lambda: fc.avg_pool2d(X, 2, divisor_override=1.5), TypeError,
     r"divisor_override must be None or an int"),
    ("count-include-pad-type", lambda: fc.avg_pool2d(X, 2, count_include_pad=None), TypeError,
     r"count_include_pad must be True or False"),
    # --- array types and dtypes -------------------------------------------------------------
    ("list-input", lambda: fc.conv2d(X.tolist(), W), TypeError,
     r"x must be a numpy.ndarray or cupy.ndarray, got builtins.list"),
    ("scalar-input", lambda: fc.max_pool2d(3.0, 2), TypeError, r"x must be a numpy.ndarray"),
    ("none-input", lambda: fc.conv2d(None, W), TypeError,
     r"x must be a numpy.ndarray or cupy.ndarray, got builtins.NoneType"),
    ("none-weight", lambda: fc.conv2d_backward(GY, X, None), TypeError, r"weight must be a numpy"),
    ("int-dtype", lambda: fc.conv2d(X.astype(np.int64), W.astype(np.int64)), TypeError,
     r"x has dtype int64; expected float32 or float64"),
    ("bool-dtype", lambda: fc.max_pool2d(X.astype(bool), 2), TypeError, r"x has dtype bool"),
    ("complex-dtype", lambda: fc.avg_pool2d(X.astype(complex), 2), TypeError,
     r"x has dtype complex128"),
    ("float16-on-cpu", lambda: fc.conv2d(X.astype(np.float16), W.astype(np.float16)), TypeError,
     r"x has dtype float16; expected float32 or float64"),
    ("object-dtype", lambda: fc.adaptive_avg_pool2d(X.astype(object), 1), TypeError,
     r"x has dtype object"),
    ("mixed-dtypes", lambda: fc.conv2d(X.astype(np.float32), W), TypeError,
     r"x has dtype float32 but weight has dtype float64"),
    ("mixed-bias-dtype", lambda: fc.conv2d(X, W, np.zeros(6, np.float32)), TypeError,
     r"x has dtype float64 but bias has dtype float32"),
    # --- backward-specific --------------------------------------------------------------------
    ("grad-shape", lambda: fc.conv2d_backward(np.zeros((2, 6, 5, 4)), X, W), ValueError,
     r"grad_y has shape \(2, 6, 5, 4\), expected \(2, 6, 4, 4\)"),
    ("grad-rank", lambda: fc.max_pool2d_backward(np.zeros((2, 4, 3)), X, 2), ValueError,
     r"grad_y must be 4-D"),
    ("output-mask", lambda: fc.conv2d_backward(GY, X, W, output_mask=(True, False)), TypeError,
     r"output_mask must be a sequence of three bools"),
    ("output-mask-type", lambda: fc.conv2d_backward(GY, X, W, output_mask="all"), TypeError,
     r"output_mask"),
    ("indices-dtype", lambda: fc.max_pool2d_backward(np.zeros((2, 4, 3, 3)), X, 2,
                                                     indices=np.zeros((2, 4, 3, 3), np.int32)),
     TypeError, r"indices has dtype int32; expected int64"),
    ("indices-shape", lambda: fc.max_pool2d_backward(np.zeros((2, 4, 3, 3)), X, 2,
                                                     indices=np.zeros((2, 4, 3, 2), np.int64)),
     ValueError, r"indices has shape \(2, 4, 3, 2\), expected \(2, 4, 3, 3\)"),
    ("indices-range", lambda: fc.max_pool2d_backward(np.zeros((2, 4, 3, 3)), X, 2,
                                                     indices=np.full((2, 4, 3, 3), 36, np.int64)),
     ValueError, r"indices must lie in \[0, H\*W\) = \[0, 36\)"),
    ("indices-type", lambda: fc.max_pool2d_backward(np.zeros((2, 4, 3, 3)), X, 2, indices=[0]),
     TypeError, r"indices must be a numpy.ndarray"),
    ("adaptive-grad-channels", lambda: fc.adaptive_avg_pool2d_backward(np.zeros((2, 3, 1, 1)), X),
     ValueError, r"grad_y has shape \(2, 3, 1, 1\) but x has shape \(2, 4, 6, 6\)"),
    # --- batch norm ---------------------------------------------------------------------------
    ("bn-running-shape", lambda: fc.batch_norm(BN_X, np.zeros(4), np.ones(4)), ValueError,
     r"running_mean must have shape \(3,\)"),
    ("bn-weight-shape", lambda: fc.batch_norm(BN_X, C3, C3 + 1, np.ones(2)), ValueError,
     r"weight must have shape \(3,\)"),
    ("bn-one-running", lambda: fc.batch_norm(BN_X, C3, None, training=True), ValueError,
     r"running_mean and running_var must both be given or both be None"),
    ("bn-eval-without-stats", lambda: fc.batch_norm(BN_X, None, None), ValueError,
     r"running_mean and running_var are required when training=False"),
    ("bn-one-value-per-channel", lambda: fc.batch_norm(np.zeros((1, 3)), None, None, training=True),
     ValueError, r"expected more than 1 value per channel when training"),
    ("bn-read-only-stats", lambda: fc.batch_norm(BN_X, _ro(C3), C3 + 1, training=True), ValueError,
     r"running_mean is read-only"),
    ("bn-momentum-type", lambda: fc.batch_norm(BN_X, C3, C3 + 1, momentum="0.1"), TypeError,
     r"momentum must be a finite real number"),
    ("bn-eps-negative", lambda: fc.batch_norm(BN_X, C3, C3 + 1, eps=-1.0), ValueError,
     r"eps must be >= 0"),
    ("bn-eps-zero-training", lambda: fc.batch_norm(BN_X, None, None, training=True, eps=0.0),
     ValueError, r"eps must be positive when training=True"),
    ("bn-training-type", lambda: fc.batch_norm(BN_X, C3, C3 + 1, training="yes"), TypeError,
     r"training must be True or False"),
    ("bn-rank", lambda: fc.batch_norm(np.zeros(5), None, None, training=True), ValueError,
     r"x must be at least 2-D"),
    ("bn-backward-eval-without-stats", lambda: fc.batch_norm_backward(BN_X, BN_X, training=False),
     ValueError, r"running_mean and running_var are required"),
    # --- algorithms and explain ---------------------------------------------------------------
    ("unknown-algo", lambda: fc.conv2d(X, W, algo="winograd"), ValueError,
     r"unknown algorithm algo='winograd' on the 'cpu' backend; expected 'auto' or one of \[.*'direct'.*'reference'\]"),
    ("algo-type", lambda: fc.conv2d(X, W, algo=None), TypeError, r"algo must be a string"),
    ("algorithms-unknown-op", lambda: fc.algorithms("conv3d"), ValueError, r"unknown op 'conv3d'"),
    ("algorithms-unknown-backend", lambda: fc.algorithms("conv2d", "tpu"), ValueError,
     r"backend must be one of \('cpu', 'cuda'\), got 'tpu'"),
    ("explain-dtype", lambda: fc.explain("conv2d", X.shape, W.shape, dtype="int8"), TypeError,
     r"dtype must be 'float32' or 'float64'"),
    ("explain-shape", lambda: fc.explain("conv2d", (2, 4), W.shape), ValueError,
     r"x must be 3-D .* or 4-D .*got a 2-D"),
    ("explain-too-many-shapes", lambda: fc.explain("max_pool2d", X.shape, X.shape), TypeError,
     r"max_pool2d takes the shapes of at most 1 arrays"),
]


@pytest.mark.parametrize("call, exception, message", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_call_raises_with_a_clear_message(call, exception, message):
    with pytest.raises(exception, match=message):
        call()


def test_every_error_message_names_the_op():
    for name, call, exception, _ in CASES:
        with pytest.raises(exception) as info:
            call()
        op_names = set(fc.__all__) | {"explain"}
        assert any(str(info.value).startswith(op) for op in op_names) or "unknown op" in str(
            info.value), f"{name}: {info.value}"


def test_torch_tensor_is_rejected_with_a_type_error():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"x must be a numpy.ndarray or cupy.ndarray, got torch"):
        fc.conv2d(torch.zeros(2, 4, 6, 6), W)


def test_failed_call_leaves_running_stats_untouched():
    rm, rv = np.arange(3.0), np.arange(3.0) + 1
    with pytest.raises(TypeError):
        fc.batch_norm(BN_X, rm, rv, np.ones(3, np.float32), training=True)
    with pytest.raises(ValueError):
        fc.batch_norm(BN_X, rm, rv, training=True, eps=-1.0)
    np.testing.assert_array_equal(rm, np.arange(3.0))
    np.testing.assert_array_equal(rv, np.arange(3.0) + 1)


class _FakeDevice:
    """Stands in for a cupy.cuda.Device: its id, and a context that makes it current."""

    def __init__(self, id):
        self.id = id

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _FakeCupyArray:
    """Stands in for a cupy.ndarray, so that mixing array kinds is tested without a GPU."""

    def __init__(self, shape, device=0):
        self.shape, self.dtype, self.device = shape, np.dtype(np.float64), _FakeDevice(device)


_FakeCupyArray.__module__ = "cupy"


@pytest.fixture
def fake_cupy(monkeypatch):
    module = types.ModuleType("cupy")
    module.ndarray = _FakeCupyArray
    monkeypatch.setitem(sys.modules, "cupy", module)
    return module


def test_mixing_numpy_and_cupy_arrays_names_both(fake_cupy):
    with pytest.raises(TypeError, match=r"x is a numpy.ndarray but weight is a cupy._FakeCupyArray"):
        fc.conv2d(X, _FakeCupyArray(W.shape))


def test_cupy_arrays_on_two_devices_are_rejected(fake_cupy):
    with pytest.raises(TypeError, match=r"x is on CUDA device 0 but weight is on device 1"):
        fc.conv2d(_FakeCupyArray(X.shape, 0), _FakeCupyArray(W.shape, 1))


def test_cuda_forced_algorithm_that_cannot_serve_says_why(fake_cupy):
    with pytest.raises(ValueError, match=r"algorithm algo='depthwise' cannot serve this call: "
                                         r"depthwise needs one input channel per group"):
        fc.conv2d(_FakeCupyArray(X.shape), _FakeCupyArray(W.shape), algo="depthwise")

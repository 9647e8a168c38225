"""The CPU depthwise forward's channel-blocked kernel (16 channels to a vector, for small
planes; fastconv.cpu.depthwise) and the in-register transpose it is built on (fastconv.cpu.
_simd): against the NumPy reference and PyTorch over a grid of its own, since the shared grids'
four channels never make a block of 16."""
import numpy as np
import pytest
from numba import njit

import fastconv
from fastconv.conv import conv2d_params
from fastconv.cpu import _simd, depthwise
from fastconv.testing import assert_matches, fastconv_runner, reference_op, tolerance, \
    torch_available, torch_op, error


@njit
def _transpose(dst, d0, dstride, src, s0, sstride):
    _simd.transpose16(dst, d0, dstride, src, s0, sstride)


@pytest.mark.parametrize("d0, dstride, s0, sstride", [
    (0, 16, 0, 16), (3, 20, 5, 17), (0, 100, 7, 16), (11, 16, 0, 300)])
def test_transpose16_transposes_a_block_and_touches_nothing_else(d0, dstride, s0, sstride):
    rng = np.random.default_rng(0)
    src = rng.standard_normal(s0 + 15 * sstride + 16 + 5).astype(np.float32)
    dst = rng.standard_normal(d0 + 15 * dstride + 16 + 5).astype(np.float32)
    expected = dst.copy()
    for r in range(16):
        for c in range(16):
            expected[d0 + c * dstride + r] = src[s0 + r * sstride + c]
    before = src.copy()
    _transpose(dst, d0, dstride, src, s0, sstride)
    assert np.array_equal(dst, expected) and np.array_equal(src, before)


@njit
def _lane_calls(out9, out, dst, acc9, acc, src, g, at, w, bias, count, step):
    _simd.lane_taps(out, 8, count, src, 5, step, at, w, bias)
    if at.size == 9:
        _simd.lane_taps9(out9, 8, count, src, 5, step, at, w, bias)
        _simd.lane_dots9(acc9, count, src, 5, step, at, g, 4)
    _simd.lane_scatter(dst, 3, count, step, at, w, g, 4)
    _simd.lane_dots(acc, count, src, 5, step, at, g, 4)


@pytest.mark.parametrize("count", [0, 1, 7, 56])
@pytest.mark.parametrize("taps", [9, 4], ids=["3x3", "2x2"])
def test_lane_intrinsics_against_numpy(count, taps):
    """The blocked kernels' 16-lane rows (fastconv.cpu._simd) against the same sums in
    float64; the nine-tap forms give bitwise the generic forms' results."""
    rng = np.random.default_rng(1)
    step = 32  # stride 2: pixel j starts 2 pixels of 16 lanes after pixel j - 1
    at = (np.array([0, 16, 32, 160, 176, 192, 320, 336, 352][:taps], np.int64))
    src = rng.standard_normal(5 + 352 + 16 + step * 60).astype(np.float32)
    g = rng.standard_normal(4 + 16 * 60).astype(np.float32)
    w = rng.standard_normal(16 * taps).astype(np.float32)
    bias = rng.standard_normal(16).astype(np.float32)
    out, out9 = np.zeros(8 + 16 * 60, np.float32), np.zeros(8 + 16 * 60, np.float32)
    dst = rng.standard_normal(src.size).astype(np.float32)
    acc = rng.standard_normal(16 * taps)
    acc9, dst0, acc0 = acc.copy(), dst.astype(np.float64), acc.copy()
    _lane_calls(out9, out, dst, acc9, acc, src, g, at, w, bias, count, step)
    expect_out, expect_dst, expect_acc = np.zeros(out.size), dst0, acc0
    for j in range(count):
        lanes = slice(8 + 16 * j, 24 + 16 * j)
        expect_out[lanes] = bias
        for t in range(taps):
            x = src[5 + at[t] + j * step:5 + at[t] + j * step + 16].astype(np.float64)
            gj = g[4 + 16 * j:20 + 16 * j].astype(np.float64)
            expect_out[lanes] += w[16 * t:16 * t + 16] * x
            expect_dst[3 + at[t] + j * step:3 + at[t] + j * step + 16] += w[16 * t:16 * t + 16] * gj
            expect_acc[16 * t:16 * t + 16] += gj * x
    assert np.abs(out - expect_out).max() <= 1e-5 * max(1, count)
    assert np.abs(dst - expect_dst).max() <= 1e-5 * max(1, count)
    assert np.abs(acc - expect_acc).max() <= 1e-5 * max(1, count)
    if taps == 9:
        assert np.array_equal(out9, out) and np.array_equal(acc9, acc)


CASES = [  # (x shape, kernel, kwargs): every one served by the blocked kernel
    ((2, 16, 14, 14), (3, 3), dict(stride=2, padding=1)),       # MobileNet's strided layers
    ((3, 32, 7, 7), (3, 3), dict(padding=1)),                    # stride 1, plane 7x7
    ((1, 16, 56, 56), (3, 3), dict(padding=1)),                  # stride 1 at the 56x56 limit
    ((2, 16, 5, 16), (3, 3), dict(padding=(0, 2))),               # rows of one whole vector
    ((2, 16, 4, 33), (2, 2), dict(stride=(1, 2), padding=1)),     # two vectors and one pixel
    ((2, 16, 11, 13), (5, 5), dict(stride=(2, 3), padding=(2, 1), dilation=(1, 2))),
    ((3, 16, 6, 5), (2, 3), dict(stride=3)),                     # no padding, taps left over
    ((2, 48, 10, 10), (3, 3), dict(padding="same", dilation=2)),
    ((1, 16, 9, 15), (1, 1), dict(stride=2, padding=1)),         # 1x1 with padding
    ((2, 16, 17, 3), (3, 1), dict(stride=(2, 1), padding=(1, 0))),  # rows narrower than 16
    ((1, 16, 40, 40), (7, 7), dict(stride=2, padding=3)),        # large plane, strided
    ((1, 16, 60, 60), (3, 3), dict(padding=1)),  # large plane: blocked gradients only
    ((2, 16, 9, 8), (3, 3), dict(padding=(3, 0), dilation=(1, 2))),  # padding past the kernel
    ((0, 16, 8, 8), (3, 3), dict(stride=2, padding=1)),          # empty batch
]


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("x_shape, kernel, kwargs", CASES, ids=str)
def test_blocked_kernels_match_the_reference_and_torch(x_shape, kernel, kwargs, bias, rng):
    """Forward, and backward (input, weight and bias gradients) in one call."""
    c = x_shape[1]
    w_shape = (c, 1) + kernel
    p = conv2d_params(x_shape, w_shape, (c,) if bias else None, groups=c, **kwargs)
    assert depthwise._blocked("backward_weight", p.x_shape, p.w_shape, 4, p.stride)
    assert depthwise._blocked("backward_data", p.x_shape, p.w_shape, 4, p.stride)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    gy = rng.standard_normal(p.y_shape)
    kwargs = dict(kwargs, groups=c)
    calls = [("conv2d", [x, w, rng.standard_normal(c) if bias else None], kwargs),
             ("conv2d_backward", [gy, x, w], dict(kwargs, output_mask=(True, True, bias)))]
    for op, args, kw in calls:
        for oracle in (reference_op, *([torch_op] if torch_available() else [])):
            assert_matches(op, args, kw, fastconv_runner("depthwise"), oracle, np.float32)


@pytest.mark.parametrize("kwargs", [dict(stride=2, padding=1), dict(padding=1),
                                    dict(stride=2, output_padding=1, dilation=2, padding=2)],
                         ids=str)
def test_blocked_kernels_serve_depthwise_transposed_convolutions(kwargs, rng):
    """A depthwise transposed convolution's forward is the blocked backward-data, its input
    gradient the blocked forward."""
    x, w = rng.standard_normal((2, 16, 7, 7)), rng.standard_normal((16, 1, 3, 3))
    kwargs = dict(kwargs, groups=16)
    y = reference_op("conv_transpose2d", x, w, **kwargs)
    calls = [("conv_transpose2d", [x, w, None], kwargs),
             ("conv_transpose2d_backward", [rng.standard_normal(y.shape), x, w],
              dict(kwargs, output_mask=(True, True, False)))]
    for op, args, kw in calls:
        for oracle in (reference_op, *([torch_op] if torch_available() else [])):
            assert_matches(op, args, kw, fastconv_runner("depthwise"), oracle, np.float32)


def test_blocked_forward_is_repeatable_and_takes_non_contiguous_input(rng):
    """Bitwise the same run after run; a non-contiguous x (which the plane kernel serves)
    gives the same values within the tolerance."""
    x = rng.standard_normal((4, 32, 14, 28)).astype(np.float32)
    w = rng.standard_normal((32, 1, 3, 3)).astype(np.float32)
    first = fastconv.conv2d(x, w, stride=2, padding=1, groups=32, algo="depthwise")
    again = fastconv.conv2d(x, w, stride=2, padding=1, groups=32, algo="depthwise")
    assert np.array_equal(first, again)
    strided = fastconv.conv2d(x[..., ::2], w, stride=2, padding=1, groups=32, algo="depthwise")
    expected = reference_op("conv2d", x[..., ::2].astype(np.float64), w.astype(np.float64),
                            stride=2, padding=1, groups=32)
    assert error(strided, expected) <= tolerance(np.float32)


def test_blocked_kernels_spread_nonfinite_values_as_torch(rng):
    """NaN and Inf in x, and apart in w: the forward's padding zeros meet the weights, as in
    PyTorch, the gradients spread them as PyTorch's do, and a transposed convolution's taps that
    read no input add no term."""
    pytest.importorskip("torch")
    kwargs = dict(stride=2, padding=1, groups=16)
    x = rng.standard_normal((2, 16, 14, 14))
    w = rng.standard_normal((16, 1, 3, 3))
    x[0, 3, 0, 5], x[1, 7, 13, 13], x[1, 0, 6, 6] = np.nan, np.inf, -np.inf
    gy = rng.standard_normal((2, 16, 7, 7))
    run = fastconv_runner("depthwise")
    assert_matches("conv2d", [x, w, None], kwargs, run, torch_op, np.float32)
    assert_matches("conv2d_backward", [gy, x, w], dict(kwargs, output_mask=(False, True, False)),
                   run, torch_op, np.float32)
    x = rng.standard_normal((2, 16, 14, 14))
    w[2, 0, 0, 0], w[9, 0, 1, 2] = np.inf, np.nan
    assert_matches("conv2d", [x, w, None], kwargs, run, torch_op, np.float32)
    assert_matches("conv_transpose2d", [gy, w, None], dict(kwargs, output_padding=1), run,
                   torch_op, np.float32)
    # stride 1: the gather over zero-padded gy would meet the Inf weight at the borders, so
    # the scatter runs; and the gather itself, with finite weights
    for weights in (w, rng.standard_normal(w.shape)):
        assert_matches("conv_transpose2d", [gy, weights, None], dict(groups=16), run, torch_op,
                       np.float32)
        assert_matches("conv2d_backward", [rng.standard_normal((2, 16, 14, 14)), x, weights],
                       dict(padding=1, groups=16, output_mask=(True, False, False)), run,
                       torch_op, np.float32)


@pytest.mark.parametrize("x_shape, stride, blocked", [
    ((8, 512, 14, 14), 2, True), ((8, 1024, 7, 7), 1, True), ((8, 128, 56, 56), 1, True),
    ((8, 128, 56, 56), 2, True), ((8, 24, 14, 14), 2, False), ((8, 32, 112, 112), 1, False),
    ((8, 32, 57, 56), 1, False), ((8, 32, 112, 112), 2, True)])
def test_blocked_kernels_serve_small_or_strided_planes_of_whole_blocks(x_shape, stride,
                                                                       blocked):
    """The forward on small or strided planes, the gradients on every plane; only float32,
    one filter per channel, whole blocks of 16 channels."""
    c, strides = x_shape[1], (stride, stride)
    assert depthwise._blocked("forward", x_shape, (c, 1, 3, 3), 4, strides) == blocked
    for kernel in ("backward_data", "backward_weight"):
        assert depthwise._blocked(kernel, x_shape, (c, 1, 3, 3), 4, strides) == (c % 16 == 0)
    for kernel in ("forward", "backward_data", "backward_weight"):
        assert not depthwise._blocked(kernel, x_shape, (c, 1, 3, 3), 8, strides)  # float64
        assert not depthwise._blocked(kernel, x_shape, (2 * c, 1, 3, 3), 4, strides)  # M = 2

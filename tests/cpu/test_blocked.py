"""The CPU register tiles: blocked's (fastconv.cpu.blocked) and direct's pixel tiles, built on
fastconv.cpu._simd,
against the NumPy reference and PyTorch over a grid of its own, since the shared grids' four
channels never fill a tile (64 float32 or 32 float64 output channels) nor make more than one
block of them, and tile-sized edges (6 pixels, 6 (channel, tap) pairs, 16-lane transposes) are
the places where such kernels go wrong."""
import numpy as np
import pytest

import fastconv
from fastconv.conv import conv2d_params
from fastconv.registry import OPS
from fastconv.cpu import blocked
from fastconv.testing import assert_matches, fastconv_runner, reference_op, torch_available, \
    torch_op

ORACLES = (reference_op, *([torch_op] if torch_available() else []))
RUN = fastconv_runner("blocked")

CASES = [  # (x shape, out channels, kernel, kwargs)
    ((2, 64, 9, 9), 64, (3, 3), dict(padding=1)),                 # one whole tile block
    ((2, 5, 7, 11), 70, (3, 3), dict(padding=1)),                 # 70: a block and 6 lanes
    ((3, 17, 10, 13), 19, (3, 3), dict(stride=2, padding=1)),     # odd everything, stride 2
    ((2, 3, 23, 23), 64, (7, 7), dict(stride=2, padding=3)),      # the stem's shape, small
    ((1, 40, 8, 8), 33, (5, 5), dict(padding=2, dilation=2)),      # dilated 5x5
    ((2, 12, 9, 10), 24, (3, 3), dict(padding=1, groups=3)),       # grouped, 8 per group
    ((2, 64, 7, 7), 128, (3, 3), dict(padding=1, groups=2)),       # grouped, 64 per group
    ((2, 8, 6, 9), 16, (2, 3), dict(stride=(2, 1), padding=(0, 1))),  # non-square everything
    ((2, 20, 5, 5), 36, (1, 1), dict(padding=1)),                 # padded 1x1
    ((2, 9, 6, 6), 10, (3, 3), dict(padding=3)),                  # padding past the kernel
    ((1, 33, 1, 40), 65, (1, 3), dict(padding=(0, 1))),           # conv1d-like, one row
    ((0, 16, 8, 8), 32, (3, 3), dict(padding=1)),                 # empty batch
]


def _matches_forward_and_backward(algo, x_shape, out_channels, kernel, kwargs, dtype, rng):
    """Forward with bias, and backward (input, weight and bias gradients) in one call, against
    every oracle."""
    groups = kwargs.get("groups", 1)
    w_shape = (out_channels, x_shape[1] // groups) + kernel
    p = conv2d_params(x_shape, w_shape, (out_channels,), **kwargs)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    calls = [("conv2d", [x, w, rng.standard_normal(out_channels)], kwargs),
             ("conv2d_backward", [rng.standard_normal(p.y_shape), x, w],
              dict(kwargs, output_mask=(True, True, True)))]
    for op, args, kw in calls:
        for oracle in ORACLES:
            assert_matches(op, args, kw, fastconv_runner(algo), oracle, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape, out_channels, kernel, kwargs", CASES, ids=str)
def test_blocked_matches_the_reference_and_torch(x_shape, out_channels, kernel, kwargs, dtype,
                                                  rng):
    _matches_forward_and_backward("blocked", x_shape, out_channels, kernel, kwargs, dtype, rng)


@pytest.mark.parametrize("kwargs", [dict(stride=2, padding=1), dict(padding=1),
                                    dict(stride=2, output_padding=1, dilation=2, padding=2)],
                         ids=str)
def test_blocked_serves_transposed_convolutions(kwargs, rng):
    """A transposed convolution's forward is the convolution's backward-data (phase by phase at
    stride 2), its input gradient the tiled forward."""
    x, w = rng.standard_normal((2, 40, 6, 6)), rng.standard_normal((40, 36, 3, 3))
    y = reference_op("conv_transpose2d", x, w, **kwargs)
    calls = [("conv_transpose2d", [x, w, rng.standard_normal(36)], kwargs),
             ("conv_transpose2d_backward", [rng.standard_normal(y.shape), x, w],
              dict(kwargs, output_mask=(True, True, True)))]
    for op, args, kw in calls:
        for oracle in ORACLES:
            assert_matches(op, args, kw, RUN, oracle, np.float32)


def test_blocked_is_bitwise_repeatable_on_any_number_of_threads(rng):
    """Every sum runs in the code's order, whichever thread runs it and however many there
    are; a non-contiguous input gives bitwise what its contiguous copy gives."""
    import numba

    x = rng.standard_normal((3, 48, 13, 26)).astype(np.float32)
    w = rng.standard_normal((70, 48, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((3, 70, 13, 13)).astype(np.float32)

    def run():
        y = fastconv.conv2d(x[..., ::2], w, padding=1, algo="blocked")
        grads = fastconv.conv2d_backward(gy, x[..., ::2], w, padding=1, algo="blocked")
        return [y.tobytes()] + [g.tobytes() for g in grads]

    first = run()
    assert run() == first
    assert fastconv.conv2d(np.ascontiguousarray(x[..., ::2]), w, padding=1,
                           algo="blocked").tobytes() == first[0]
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        assert run() == first
    finally:
        numba.set_num_threads(before)


def test_nonfinite_weights_take_the_col2im_road_in_backward_data(rng):
    """An Inf weight: the forward's padding zeros meet it (NaN, as in PyTorch); the input
    gradient at stride 1 goes through im2col's col2im, which forms no product for tap/pixel
    pairs that no output reads, so it matches PyTorch where the adjoint's padding would not."""
    pytest.importorskip("torch")
    x = rng.standard_normal((2, 20, 8, 8))
    w = rng.standard_normal((36, 20, 3, 3))
    w[3, 5, 0, 0], w[30, 1, 2, 1] = np.inf, np.nan
    gy = rng.standard_normal((2, 36, 8, 8))
    # the packing flags the tasks (output channels here) whose taps hold an Inf or NaN
    w32, width = w.astype(np.float32), blocked._width(np.float32)
    packed, finite = np.empty(36 * 9 * width, np.float32), np.empty(36, np.bool_)
    blocked._pack_adjoint(w32.reshape(36, 20, 9), packed, 1, width, np.arange(9),
                          np.array([0, 9]), finite)
    assert np.flatnonzero(~finite).tolist() == [3, 30]
    packed = np.empty(36 * 3 * width, np.float32)  # two phases: taps 4, 5 and tap 8
    blocked._pack_adjoint(w32.reshape(36, 20, 9), packed, 1, width, np.array([4, 5, 8]),
                          np.array([0, 2, 3]), finite)
    assert finite.all()  # neither non-finite weight is on taps 4, 5 and 8
    assert_matches("conv2d", [x, w, None], dict(padding=1), RUN, torch_op, np.float32)
    assert_matches("conv2d_backward", [gy, x, w], dict(padding=1, output_mask=(True, True, True)),
                   RUN, torch_op, np.float32)
    x[1, 4, 3, 3] = np.inf
    assert_matches("conv2d_backward", [gy, x, rng.standard_normal(w.shape)],
                   dict(padding=1, output_mask=(True, True, False)), RUN, torch_op, np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_packing_and_unpacking_the_filter_against_numpy(dtype, rng):
    """The forward's packed filter (16 x 16 transposes where whole), its inverse (the weight
    gradient's unpacking) and backward-data's packing of a phase's taps, against the same
    layouts made by NumPy indexing."""
    width = blocked._width(dtype)
    for shape, groups in [((70, 9, 3, 3), 1), ((128, 5, 1, 3), 2), ((12, 2, 3, 3), 3),
                          ((64, 40, 2, 2), 2)]:
        o, cg, kh, kw = shape
        og, taps = o // groups, kh * kw
        w = rng.standard_normal(shape).astype(dtype)
        packed, _, blocks = blocked._packed(w, None, groups, dtype)
        wide = np.zeros((groups, blocks * width, cg, taps), dtype)
        wide[:, :og] = w.reshape(groups, og, cg, taps)
        expected = wide.reshape(groups, blocks, width, cg, taps).transpose(0, 1, 3, 4, 2)
        assert np.array_equal(packed, expected.reshape(-1))
        back = np.empty((o, cg * taps), dtype)
        blocked._unpack_forward(packed, back, groups, width)
        assert np.array_equal(back, w.reshape(back.shape))

        # backward-data's phases, packed in one call: taps (last, first), then the rest
        phases = [[taps - 1, 0][:taps], list(range(1, taps - 1))]
        chosen = np.array(phases[0] + phases[1], np.int64)
        starts = np.array([0, len(phases[0]), chosen.size])
        in_blocks = -(-cg // width)
        adjoint = np.empty(groups * in_blocks * og * chosen.size * width, dtype)
        finite = np.empty(groups * in_blocks * og, np.bool_)
        blocked._pack_adjoint(w.reshape(o, cg, taps), adjoint, groups, width, chosen, starts,
                              finite)
        assert finite.all()
        expected = []
        for phase in phases:
            wide = np.zeros((groups, og, len(phase), in_blocks * width), dtype)
            wide[..., :cg] = w.reshape(groups, og, cg, taps)[..., phase].transpose(0, 1, 3, 2)
            expected.append(wide.reshape(groups, og, len(phase), in_blocks, width)
                            .transpose(0, 3, 1, 2, 4).reshape(-1))
        assert np.array_equal(adjoint, np.concatenate(expected))


@pytest.mark.parametrize("op, shapes, kwargs, tiled", [
    ("conv2d", ((8, 64, 56, 56), (64, 64, 3, 3)), dict(padding=1), {"forward": 64}),
    ("conv2d_backward", ((8, 64, 112, 112), (8, 3, 224, 224), (64, 3, 7, 7)),
     dict(stride=2, padding=3), {"backward_data": 3, "backward_weight": 64}),
    ("conv2d_backward", ((8, 256, 28, 28), (8, 256, 28, 28), (256, 8, 3, 3)),
     dict(padding=1, groups=32), {"backward_data": 8, "backward_weight": 8}),
])
def test_tiled_kernels_name_the_lanes_each_kernel_fills(op, shapes, kwargs, tiled):
    p = OPS[op].params(*shapes, **kwargs)
    assert blocked.tiled_kernels(op, p) == tiled


DIRECT_CASES = [  # (x shape, out channels, kernel, kwargs): direct's pixel tiles (8 channels)
    ((2, 8, 9, 9), 8, (3, 3), dict(padding=1)),                   # one tile of channels
    ((2, 6, 11, 7), 21, (3, 3), dict(padding=1)),                 # two tiles and 5 on the old path
    ((2, 64, 10, 10), 64, (3, 3), dict(padding=1, groups=8)),     # ResNeXt-like, 8 per group
    ((1, 12, 13, 9), 24, (5, 5), dict(padding=2, dilation=(2, 1), groups=2)),
    ((2, 5, 12, 10), 16, (3, 3), dict(stride=(2, 1), padding=1)),  # column stride 1 only
    ((2, 4, 3, 40), 9, (1, 3), dict(padding=(0, 1))),              # one row, wide
    ((2, 16, 5, 5), 16, (3, 3), dict(padding=3)),                  # padding past the kernel
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape, out_channels, kernel, kwargs", DIRECT_CASES, ids=str)
def test_direct_pixel_tiles_match_the_reference_and_torch(x_shape, out_channels, kernel, kwargs,
                                                          dtype, rng):
    """direct's forward at column stride 1, its stride-1 backward-data (the same kernel on
    grad_y) and its weight gradient's grad tiles, on channel counts that fill its tiles of 8
    output channels, with remainders."""
    _matches_forward_and_backward("direct", x_shape, out_channels, kernel, kwargs, dtype, rng)


def test_direct_grad_tiles_leave_a_nonfinite_input_to_the_exact_sums(rng):
    """The pixel grad tiles multiply grad_y's zero padding by the inputs past each row's end;
    with an Inf or NaN there that is NaN, so an input that is not all finite goes to the
    row-by-row sums, and the weight gradient matches PyTorch's."""
    pytest.importorskip("torch")
    x = rng.standard_normal((2, 8, 9, 9))
    x[0, 2, 4, 8], x[1, 5, 0, 0] = np.inf, np.nan
    w = rng.standard_normal((16, 8, 3, 3))
    gy = rng.standard_normal((2, 16, 9, 9))
    assert_matches("conv2d_backward", [gy, x, w], dict(padding=1, output_mask=(False, True, False)),
                   fastconv_runner("direct"), torch_op, np.float32)

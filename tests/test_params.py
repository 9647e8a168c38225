"""Parameter normalisation and output-size arithmetic, checked against PyTorch's shapes."""
from itertools import product

import numpy as np
import pytest

from fastconv import batchnorm, conv, pool

torch = pytest.importorskip("torch")
F = torch.nn.functional


def test_int_and_pair_arguments_normalise_alike():
    a = conv.conv2d_params((1, 2, 9, 9), (3, 2, 3, 3), None, 2, 1, 2, 1)
    b = conv.conv2d_params((1, 2, 9, 9), (3, 2, 3, 3), None, (2, 2), [1, 1], np.int64(2), 1)
    assert a == b
    assert a.stride == (2, 2) and a.padding == ((1, 1), (1, 1)) and a.dilation == (2, 2)


@pytest.mark.parametrize("kernel, dilation, expected", [
    ((3, 3), (1, 1), ((1, 1), (1, 1))),
    ((4, 2), (1, 1), ((1, 2), (0, 1))),   # odd total: the extra row/column goes at the end
    ((4, 3), (2, 3), ((3, 3), (3, 3))),
    ((2, 2), (3, 1), ((1, 2), (0, 1))),
])
def test_same_padding_split(kernel, dilation, expected):
    p = conv.conv2d_params((1, 1, 9, 10), (1, 1) + kernel, None, 1, "same", dilation, 1)
    assert p.padding == expected
    assert p.y_shape[2:] == (9, 10)
    torch_shape = F.conv2d(torch.zeros(1, 1, 9, 10), torch.zeros((1, 1) + kernel), padding="same",
                           dilation=dilation).shape
    assert tuple(torch_shape) == p.y_shape


def test_valid_padding_is_zero():
    assert conv.conv1d_params((1, 1, 9), (1, 1, 4), None, 3, "valid", 1, 1).padding == ((0, 0), (0, 0))


@pytest.mark.parametrize("size, kernel, stride, padding, dilation, ceil", [
    (n, k, s, p, d, c) for n, k, s, p, d, c in product(range(1, 13), range(1, 5), range(1, 4),
                                                        range(0, 3), (1, 2), (False, True))
    if p <= k // 2 and n + 2 * p >= d * (k - 1) + 1
])
def test_pool_output_size_matches_torch(size, kernel, stride, padding, dilation, ceil):
    ours = pool.output_size(size, kernel, stride, padding, dilation, ceil)
    theirs = F.max_pool2d(torch.zeros(1, 1, size, 1), (kernel, 1), (stride, 1), (padding, 0),
                          (dilation, 1), ceil_mode=ceil).shape[2]
    assert ours == theirs


def test_ceil_mode_last_window_must_start_inside_input_or_left_padding():
    # H=5, k=2, s=2, p=1: ceil((5 + 2 - 2) / 2) + 1 = 4 windows, but the 4th would start at padded
    # row 6 = H + p, in the right padding, so it is dropped.
    assert pool.output_size(5, 2, 2, 1, 1, True) == 3
    assert pool.output_size(5, 2, 2, 0, 1, True) == 3   # the 3rd starts at row 4 < 5: kept
    assert pool.output_size(5, 2, 2, 0, 1, False) == 2


@pytest.mark.parametrize("size, kernel, stride, padding, dilation, out_pad", [
    (n, k, s, p, d, o) for n, k, s, p, d, o in product((1, 2, 5), (1, 2, 3), (1, 2, 3), (0, 1, 2),
                                                        (1, 2), (0, 1, 2))
    if o < max(s, d) and (n - 1) * s - 2 * p + d * (k - 1) + o + 1 >= 1
])
def test_transposed_output_size_matches_torch(size, kernel, stride, padding, dilation, out_pad):
    p = conv.conv_transpose2d_params((1, 1, size, 2), (1, 1, kernel, 1), None, (stride, 1),
                                (padding, 0), (out_pad, 0), 1, (dilation, 1))
    theirs = F.conv_transpose2d(torch.zeros(1, 1, size, 2), torch.zeros(1, 1, kernel, 1),
                                stride=(stride, 1), padding=(padding, 0),
                                output_padding=(out_pad, 0), dilation=(dilation, 1)).shape
    assert p.x_shape == tuple(theirs)  # the transposed output is the adjoint conv's input


def test_transposed_conv_is_described_by_its_adjoint():
    p = conv.conv_transpose2d_params((2, 4, 5, 6), (4, 3, 3, 3), (6,), 2, 1, 1, 2, 1)
    assert p.transposed and p.y_shape == (2, 4, 5, 6)       # transposed input = conv output
    assert p.x_shape == (2, 6, 10, 12)                      # transposed output = conv input
    assert p.w_shape == (4, 3, 3, 3) and p.groups == 2      # conv weight (O=4, C/G=3)


def test_conv1d_is_lifted_to_a_unit_height_convolution():
    p = conv.conv1d_params((2, 4, 11), (6, 2, 3), (6,), 2, 1, 3, 2)
    assert p.x_shape == (2, 4, 1, 11) and p.w_shape == (6, 2, 1, 3)
    assert p.stride == (1, 2) and p.padding == ((0, 0), (1, 1)) and p.dilation == (1, 3)
    assert p.y_shape == (2, 6, 1, 4)
    assert p.user_shape(p.y_shape) == (2, 6, 4)


def test_unbatched_input_gets_a_batch_of_one():
    p = pool.max_pool2d_params((3, 8, 8), 2)
    assert p.x_shape == (1, 3, 8, 8) and p.unbatched
    assert p.user_shape(p.y_shape) == (3, 4, 4)
    q = conv.conv1d_params((4, 11), (6, 4, 3))
    assert q.x_shape == (1, 4, 1, 11) and q.user_shape(q.y_shape) == (6, 9)


def test_empty_batch_is_valid():
    assert conv.conv2d_params((0, 2, 5, 5), (3, 2, 3, 3)).y_shape == (0, 3, 3, 3)
    assert batchnorm.batch_norm_params((0, 3, 2, 2), training=True).count == 0


def test_adaptive_output_size_none_keeps_the_input_size():
    assert pool.adaptive_avg_pool2d_params((1, 2, 5, 7), (None, 3)).y_shape == (1, 2, 5, 3)
    assert pool.adaptive_avg_pool2d_params((2, 5, 7), 4).y_shape == (1, 2, 4, 4)


def test_pool_stride_defaults_to_kernel_size():
    assert pool.avg_pool2d_params((1, 1, 9, 9), (3, 2)).stride == (3, 2)
    assert pool.max_pool2d_params((1, 1, 9, 9), 3, stride=[]).stride == (3, 3)  # as torch: [] = None

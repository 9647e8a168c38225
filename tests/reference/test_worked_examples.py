"""Worked examples from the lecture notes in shared/seeds, our users' teaching material."""
import numpy as np
import pytest

import fastconv


def test_seed_5x5_image_3x3_kernel():
    """The sliding-window example: a 5x5 binary image convolved with a 3x3 'X' kernel gives the
    3x3 'convolved feature' [[4, 3, 4], [2, 4, 3], [2, 3, 4]]."""
    image = np.array([[1, 1, 1, 0, 0],
                      [0, 1, 1, 1, 0],
                      [0, 0, 1, 1, 1],
                      [0, 0, 1, 1, 0],
                      [0, 1, 1, 0, 0]], dtype=np.float64)
    kernel = np.array([[1, 0, 1],
                       [0, 1, 0],
                       [1, 0, 1]], dtype=np.float64)
    expected = np.array([[4, 3, 4],
                         [2, 4, 3],
                         [2, 3, 4]], dtype=np.float64)
    for dtype in (np.float32, np.float64):
        y = fastconv.conv2d(image[None, None].astype(dtype), kernel[None, None].astype(dtype),
                            algo="reference")
        assert y.shape == (1, 1, 3, 3) and y.dtype == dtype
        np.testing.assert_array_equal(y[0, 0], expected)
    # the same example unbatched, (C, H, W)
    np.testing.assert_array_equal(fastconv.conv2d(image[None], kernel[None, None])[0], expected)


@pytest.mark.parametrize("stride, padding, expected", [
    (1, 0, 5),   # "7x7 input with 3x3 filter => outputs 5x5"
    (2, 0, 3),   # stride 2 => 3x3
    (3, 0, 2),   # "stride 3 doesn't work": (7 - 3)/3 + 1 is not whole; PyTorch floors it to 2
    (1, 1, 7),   # (N + 2P - F)/stride + 1 with P = 1 keeps 7x7
])
def test_seed_output_size_formula(stride, padding, expected):
    """OutputSize = (N + 2P - F) / Stride + 1 for a 7x7 input and a 3x3 filter."""
    y = fastconv.conv2d(np.ones((1, 1, 7, 7)), np.ones((1, 1, 3, 3)), stride=stride,
                        padding=padding)
    assert y.shape[2:] == (expected, expected)


def test_seed_1x1_convolution_cost():
    """A 32x32x200 tensor to 32x32x32 with 32 5x5 filters: (32*32*200) * (5*5*32) = 163.84M
    multiplications, against 6.5M for a 1x1 convolution to 32 channels."""
    five = fastconv.explain("conv2d", (1, 200, 32, 32), (32, 200, 5, 5), padding="same")
    assert five["flops"] == 2 * (32 * 32 * 200) * (5 * 5 * 32) == 2 * 163_840_000
    one = fastconv.explain("conv2d", (1, 200, 32, 32), (32, 200, 1, 1))
    assert one["flops"] == 2 * 32 * 32 * 200 * 32


def test_seed_depthwise_separable_cost_ratio():
    """Depthwise-separable cost over standard cost is 1/N_O + 1/(h*w)."""
    n_i, n_o, h, w = 64, 128, 3, 3
    shape = (1, n_i, 56, 56)
    standard = fastconv.explain("conv2d", shape, (n_o, n_i, h, w), padding=1)["flops"]
    depthwise = fastconv.explain("conv2d", shape, (n_i, 1, h, w), padding=1, groups=n_i)["flops"]
    pointwise = fastconv.explain("conv2d", shape, (n_o, n_i, 1, 1))["flops"]
    assert (depthwise + pointwise) / standard == pytest.approx(1 / n_o + 1 / (h * w))


def test_seed_feature_map_examples():
    """56x56x64 -> 56x56x128 with stride 1 and -> 28x28x128 with stride 2 (3x3, padding 1)."""
    x = np.zeros((1, 64, 56, 56))
    w = np.zeros((128, 64, 3, 3))
    assert fastconv.conv2d(x, w, padding=1).shape == (1, 128, 56, 56)
    assert fastconv.conv2d(x, w, stride=2, padding=1).shape == (1, 128, 28, 28)


def test_seed_global_average_pooling():
    """GAP reduces each h x w feature map to the average of its hw values."""
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float64).reshape(2, 3, 4, 5)
    y = fastconv.adaptive_avg_pool2d(x, (1, 1))
    np.testing.assert_allclose(y[..., 0, 0], x.mean(axis=(2, 3)), rtol=1e-15)


def test_seed_max_pooling_2x2_stride_2():
    """2x2 max pooling with stride 2 halves each dimension, [224x224x64] -> [112x112x64], each
    output the max of 4 numbers."""
    x = np.array([[1, 1, 2, 4],
                  [5, 6, 7, 8],
                  [3, 2, 1, 0],
                  [1, 2, 3, 4]], dtype=np.float64)
    np.testing.assert_array_equal(fastconv.max_pool2d(x[None, None], 2)[0, 0], [[6, 8], [3, 4]])
    assert fastconv.explain("max_pool2d", (1, 64, 224, 224), kernel_size=2)[
        "output_shapes"] == ((1, 64, 112, 112),)


def test_seed_batch_norm_algorithm():
    """The batch-norm transform of the notes: mini-batch mean, (biased) variance, normalise,
    scale and shift."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((16, 3)) * 3 + 2
    gamma, beta, eps = np.array([1.0, 2.0, 0.5]), np.array([0.0, -1.0, 3.0]), 1e-5
    mu = x.sum(axis=0) / len(x)
    var = ((x - mu) ** 2).sum(axis=0) / len(x)
    expected = gamma * (x - mu) / np.sqrt(var + eps) + beta
    y = fastconv.batch_norm(x, None, None, gamma, beta, training=True, eps=eps)
    np.testing.assert_allclose(y, expected, rtol=1e-13)

"""Every gradient of the reference against central finite differences of its own forward: an
oracle independent of PyTorch and of the backward code. float64, tiny problems."""
import pytest

from fastconv.testing import error, numerical_gradient, reference_op

from grids import Case, backward_args, forward_args

CASES = [
    Case("conv2d", ((2, 4, 6, 5), (4, 2, 3, 2), (4,)),
         dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2)),
    Case("conv2d", ((1, 2, 5, 4), (3, 2, 2, 3), (3,)), dict(padding="same", dilation=(2, 1))),
    Case("conv2d", ((2, 3, 5, 5), (6, 1, 3, 3), (6,)), dict(stride=2, padding=1, groups=3)),
    Case("conv1d", ((2, 2, 9), (4, 1, 3), (4,)), dict(stride=2, padding=1, dilation=2, groups=2)),
    Case("conv_transpose2d", ((1, 4, 3, 4), (4, 2, 3, 2), (4,)),
         dict(stride=(2, 3), padding=1, output_padding=(1, 2), groups=2, dilation=(1, 2))),
    Case("conv_transpose2d", ((2, 2, 3, 3), (2, 2, 3, 3), (2,)),
         dict(stride=1, output_padding=2, dilation=3)),
    Case("max_pool2d", ((1, 2, 6, 7),),
         dict(kernel_size=3, stride=2, padding=1, dilation=(1, 2), ceil_mode=True)),
    Case("avg_pool2d", ((1, 2, 6, 7),),
         dict(kernel_size=(3, 2), stride=2, padding=1, ceil_mode=True, count_include_pad=False)),
    Case("avg_pool2d", ((1, 2, 6, 7),), dict(kernel_size=3, padding=1, divisor_override=4)),
    Case("adaptive_avg_pool2d", ((1, 2, 5, 7),), dict(output_size=(3, 4))),
    Case("adaptive_avg_pool2d", ((1, 2, 3, 2),), dict(output_size=(5, 4))),
    Case("batch_norm", ((3, 2, 3, 2), None, None, (2,), (2,)), dict(training=True)),
    Case("batch_norm", ((5, 3), None, None, (3,), (3,)), dict(training=True, eps=0.1)),
    Case("batch_norm", ((3, 2, 3, 2), (2,), (2,), (2,), (2,)), dict(training=False)),
]
# forward arguments that each gradient (grad_x, grad_weight, grad_bias) differentiates
DIFFERENTIABLE = {"batch_norm": (0, 3, 4)}
FD_TOLERANCE = 1e-7  # central differences with h = 1e-6: O(h^2) truncation, O(eps/h) rounding


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.op}[{c}]")
def test_gradients_match_finite_differences(case, rng):
    args = forward_args(case, rng)
    bargs, bkwargs = backward_args(case, args, rng)
    grads = reference_op(case.op + "_backward", *bargs, **bkwargs)
    grads = grads if isinstance(grads, tuple) else (grads,)
    which = DIFFERENTIABLE.get(case.op, (0, 1, 2))[:len(grads)]

    def forward(*a):
        return reference_op(case.op, *a, **case.kwargs)

    for name, grad, index in zip(("grad_x", "grad_weight", "grad_bias"), grads, which):
        numeric = numerical_gradient(forward, args, index, bargs[0])
        err = error(grad, numeric)
        assert err < FD_TOLERANCE, f"{name}: relative error {err:.2g} against finite differences"

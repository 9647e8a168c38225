"""Cost model of every op: floating-point operations and the minimum bytes moved.

``flops`` counts a multiply-add as 2, the convention of every GEMM and convolution benchmark, so
a convolution costs ``2 * N * O * Ho * Wo * (C / groups) * kh * kw`` per direction (forward,
backward-data and backward-weight all perform the same multiply-adds). Bias adds are not
counted in a forward pass; the bias gradient counts one add per element of ``grad_y``.
Pooling counts one operation (comparison or add) per window element, plus one divide per output
of an average; max-pool backward given the forward's indices counts one add per output. Batch
norm counts the operations of a fused one-pass implementation per element: forward training 5
(sum, sum of squares, ``y = a*x + c``), evaluation 2; backward training 7 (two sums and
``gx = a*gy + b*x + c``), evaluation 4 (sums for the weight and bias gradients and
``gx = a*gy``); per-channel work is ignored.

``min_bytes`` is the traffic of an ideal kernel that reads each input and writes each output
exactly once: the denominator of arithmetic intensity, and of the bandwidth a memory-bound
kernel achieves.
"""
from __future__ import annotations

from math import prod

from .params import AdaptivePoolParams, BatchNormParams, ConvParams, PoolParams


def conv_macs(p: ConvParams) -> int:
    """Multiply-adds of one direction of the convolution p describes."""
    n, o, ho, wo = p.y_shape
    return n * o * ho * wo * p.w_shape[1] * p.kernel[0] * p.kernel[1]


def _grad_y_elements(op, p: ConvParams) -> int:
    # the transposed op's output is the adjoint convolution's x
    return prod(p.x_shape) if p.transposed else prod(p.y_shape)


def _window_lengths(size: int, out: int) -> int:
    """Sum over the adaptive windows of one dimension of their lengths."""
    return sum(-((-(i + 1) * size) // out) - (i * size) // out for i in range(out))


def flops(op: str, p) -> int:
    """Floating-point operations of one call of ``op`` with parameters ``p``."""
    backward = op.endswith("_backward")
    if isinstance(p, ConvParams):
        if not backward:
            return 2 * conv_macs(p)
        want_x, want_w, want_b = p.output_mask
        return 2 * conv_macs(p) * (want_x + want_w) + want_b * _grad_y_elements(op, p)
    if isinstance(p, PoolParams):
        outputs = prod(p.y_shape)
        window = p.kernel[0] * p.kernel[1]
        if op.startswith("max"):
            if backward and p.saved_indices:
                return outputs  # one add per output gradient, at its saved index
            # backward re-derives the argmax (window comparisons) and adds each gradient once
            return outputs * window + (outputs if backward else 0)
        return outputs * window + outputs  # sums (or scatters) plus one divide per output
    if isinstance(p, AdaptivePoolParams):
        (n, c, h, w), (_, _, ho, wo) = p.x_shape, p.y_shape
        # a window covers rows floor(i*h/ho) .. ceil((i+1)*h/ho) - 1; windows are rectangles
        return n * c * _window_lengths(h, ho) * _window_lengths(w, wo) + n * c * ho * wo
    if isinstance(p, BatchNormParams):
        per_element = {(False, True): 5, (False, False): 2, (True, True): 7, (True, False): 4}
        return per_element[(backward, p.training)] * prod(p.x_shape)
    raise TypeError(f"no cost model for {type(p).__name__}")


def min_bytes(op: str, p, itemsize: int) -> int:
    """Bytes an ideal kernel reads and writes: every input once, every output once."""
    backward = op.endswith("_backward")
    if isinstance(p, ConvParams):
        x, w, y = prod(p.x_shape), prod(p.w_shape), prod(p.y_shape)
        if p.transposed:  # the transposed op reads the adjoint's y and writes its x
            x, y = y, x
        channels_out = p.x_shape[1] if p.transposed else p.y_shape[1]
        if not backward:
            return itemsize * (x + w + y + p.has_bias * channels_out)
        want_x, want_w, want_b = p.output_mask
        reads = y + want_x * w + want_w * x
        writes = want_x * x + want_w * w + want_b * channels_out
        return itemsize * (reads + writes)
    if isinstance(p, PoolParams):
        x, y = prod(p.x_shape), prod(p.y_shape)
        if backward and p.saved_indices:
            return itemsize * (y + x) + 8 * y  # reads grad_y and the int64 indices, writes grad_x
        if backward:  # reads grad_y (and x, to re-derive the argmax), writes grad_x
            return itemsize * (y + x + op.startswith("max") * x)
        indices = 8 * y if p.return_indices else 0
        return itemsize * (x + y) + indices
    if isinstance(p, AdaptivePoolParams):
        return itemsize * (prod(p.x_shape) + prod(p.y_shape))
    if isinstance(p, BatchNormParams):
        x, c = prod(p.x_shape), p.channels
        if not backward:
            vectors = 2 * p.has_running * (1 + p.training) + p.has_weight + p.has_bias
            return itemsize * (2 * x + vectors * c)
        want_x, want_w, want_b = p.output_mask
        vectors = p.has_weight + 2 * (p.has_running and not p.training) + want_w + want_b
        return itemsize * ((2 + want_x) * x + vectors * c)
    raise TypeError(f"no cost model for {type(p).__name__}")

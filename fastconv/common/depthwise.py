"""What depthwise convolution serves: the same rule on both backends (fastconv.cpu.depthwise,
fastconv.cuda.depthwise)."""
from __future__ import annotations


def why_not(op, p):
    """Depthwise serves convolutions with one input channel per group (groups == in_channels)."""
    if p.w_shape[1] == 1:
        return None
    return (f"depthwise needs one input channel per group (groups == in_channels), got "
            f"groups={p.groups} with {p.x_shape[1]} channels")

"""``torch.nn`` modules computed by fastconv: subclasses of the torch modules with the same
constructor (plus ``algo=``), parameters, buffers, state_dict and ``repr``; only the
computation is fastconv's. A model can mix them freely with torch's own modules, and
:func:`fastconv.torch.convert` turns torch's modules into these in place.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import ops

__all__ = ["AdaptiveAvgPool2d", "AvgPool2d", "BatchNorm2d", "Conv1d", "Conv2d",
           "ConvTranspose2d", "MaxPool2d"]


class _Fastconv:
    """The shared part: the ``algo`` every call passes to fastconv's dispatcher ("auto" unless
    set), shown in the repr when it is not the default."""

    algo = "auto"

    def __init__(self, *args, algo="auto", **kwargs):
        super().__init__(*args, **kwargs)
        self.algo = algo

    def extra_repr(self):
        text = super().extra_repr()
        return text if self.algo == "auto" else f"{text}, algo={self.algo!r}"


class Conv2d(_Fastconv, torch.nn.Conv2d):
    """``torch.nn.Conv2d`` computed by fastconv (non-zero padding modes pad with torch first,
    as torch does)."""

    def _conv_forward(self, input, weight, bias):
        if self.padding_mode != "zeros":
            input = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return ops.conv2d(input, weight, bias, self.stride, 0, self.dilation, self.groups,
                              algo=self.algo)
        return ops.conv2d(input, weight, bias, self.stride, self.padding, self.dilation,
                          self.groups, algo=self.algo)


class Conv1d(_Fastconv, torch.nn.Conv1d):
    """``torch.nn.Conv1d`` computed by fastconv."""

    def _conv_forward(self, input, weight, bias):
        if self.padding_mode != "zeros":
            input = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return ops.conv1d(input, weight, bias, self.stride, 0, self.dilation, self.groups,
                              algo=self.algo)
        return ops.conv1d(input, weight, bias, self.stride, self.padding, self.dilation,
                          self.groups, algo=self.algo)


class ConvTranspose2d(_Fastconv, torch.nn.ConvTranspose2d):
    """``torch.nn.ConvTranspose2d`` computed by fastconv (``output_size`` as torch)."""

    def forward(self, input, output_size=None):
        if self.padding_mode != "zeros":
            raise ValueError("Only `zeros` padding mode is supported for ConvTranspose2d")
        output_padding = self._output_padding(input, output_size, self.stride, self.padding,
                                              self.kernel_size, 2, self.dilation)
        return ops.conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding,
                                    output_padding, self.groups, self.dilation, algo=self.algo)


class MaxPool2d(_Fastconv, torch.nn.MaxPool2d):
    """``torch.nn.MaxPool2d`` computed by fastconv."""

    def forward(self, input):
        return ops.max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                              ceil_mode=self.ceil_mode, return_indices=self.return_indices,
                              algo=self.algo)


class AvgPool2d(_Fastconv, torch.nn.AvgPool2d):
    """``torch.nn.AvgPool2d`` computed by fastconv."""

    def forward(self, input):
        return ops.avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                              self.count_include_pad, self.divisor_override, algo=self.algo)


class AdaptiveAvgPool2d(_Fastconv, torch.nn.AdaptiveAvgPool2d):
    """``torch.nn.AdaptiveAvgPool2d`` computed by fastconv."""

    def forward(self, input):
        return ops.adaptive_avg_pool2d(input, self.output_size, algo=self.algo)


class BatchNorm2d(_Fastconv, torch.nn.BatchNorm2d):
    """``torch.nn.BatchNorm2d`` computed by fastconv: the same rules as torch's for which
    statistics normalise (the batch's when training or without running statistics) and for
    the update (momentum, or the cumulative average when momentum is None, and
    ``num_batches_tracked``)."""

    def forward(self, input):
        self._check_input_dim(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                factor = 1.0 / float(self.num_batches_tracked)
        batch_statistics = self.training or (self.running_mean is None
                                             and self.running_var is None)
        # the buffers are passed only where they are used or updated, as torch does
        tracked = not self.training or self.track_running_stats
        return ops.batch_norm(input, self.running_mean if tracked else None,
                              self.running_var if tracked else None, self.weight, self.bias,
                              batch_statistics, factor, self.eps, algo=self.algo)

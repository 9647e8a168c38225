"""The layer zoo: the one list of layers that benchmarks, the CLI and the docs use.

Batch 8, float32 by default. Each :class:`Layer` is one forward call; :meth:`Layer.calls` gives
the call of each direction (forward, backward-data, backward-weight for convolutions; forward
and backward for pooling and batch norm, batch norm in training mode).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

BATCH = 8


@dataclass(frozen=True)
class Layer:
    name: str
    op: str
    shapes: tuple           # shapes of the forward op's array arguments
    kwargs: dict = field(default_factory=dict)

    @property
    def is_conv(self) -> bool:
        return self.op in ("conv2d", "conv1d", "conv_transpose2d")

    @property
    def directions(self) -> tuple[str, ...]:
        return ("forward", "backward_data", "backward_weight") if self.is_conv \
            else ("forward", "backward")

    def calls(self, dtype=np.float32, seed=0):
        """``{direction: (op, args, kwargs)}`` with random arrays of ``dtype``."""
        import fastconv

        rng = np.random.default_rng(seed)

        def r(shape):
            return None if shape is None else rng.standard_normal(shape).astype(dtype)

        args = [r(s) for s in self.shapes]
        if self.op == "batch_norm":
            args[2] = np.abs(args[2]) + 0.5
        out_shape = fastconv.explain(self.op, *self.shapes, **self.kwargs)["output_shapes"][0]
        gy = r(out_shape)
        calls = {"forward": (self.op, args, dict(self.kwargs))}
        back = self.op + "_backward"
        if self.is_conv:
            calls["backward_data"] = (back, [gy, args[0], args[1]],
                                      dict(self.kwargs, output_mask=(True, False, False)))
            calls["backward_weight"] = (back, [gy, args[0], args[1]],
                                        dict(self.kwargs, output_mask=(False, True, False)))
        elif self.op == "batch_norm":
            x, rm, rv, w, _ = args
            calls["backward"] = (back, [gy, x, w, rm, rv],
                                 dict(training=self.kwargs["training"]))
        else:
            kw = {k: v for k, v in self.kwargs.items() if k not in ("output_size", "return_indices")}
            calls["backward"] = (back, [gy, args[0]], kw)
        return calls


def _conv(name, c, o, size, k, stride=1, padding=0, dilation=1, groups=1):
    return Layer(name, "conv2d", ((BATCH, c, size, size), (o, c // groups, k, k)),
                 dict(stride=stride, padding=padding, dilation=dilation, groups=groups))


def _bn(name, c, size):
    return Layer(name, "batch_norm", ((BATCH, c, size, size), (c,), (c,), (c,), (c,)),
                 dict(training=True))


ZOO = [
    _conv("resnet50-stem-7x7s2-3-64@224", 3, 64, 224, 7, stride=2, padding=3),
    _conv("resnet50-3x3-64-64@56", 64, 64, 56, 3, padding=1),
    _conv("resnet50-1x1-64-256@56", 64, 256, 56, 1),
    _conv("resnet50-1x1-256-64@56", 256, 64, 56, 1),
    _conv("resnet50-3x3s2-128-128@56", 128, 128, 56, 3, stride=2, padding=1),
    _conv("resnet50-3x3-256-256@14", 256, 256, 14, 3, padding=1),
    _conv("resnet50-3x3-512-512@7", 512, 512, 7, 3, padding=1),
    _conv("resnext-3x3g32-256-256@28", 256, 256, 28, 3, padding=1, groups=32),
    _conv("mobilenet-dw3x3-128@56", 128, 128, 56, 3, padding=1, groups=128),
    _conv("mobilenet-dw3x3s2-512@14", 512, 512, 14, 3, stride=2, padding=1, groups=512),
    _conv("mobilenet-pw1x1-128-256@28", 128, 256, 28, 1),
    _conv("dilated-3x3d2-256-256@28", 256, 256, 28, 3, padding=2, dilation=2),
    Layer("transposed-4x4s2-128-64@16", "conv_transpose2d",
          ((BATCH, 128, 16, 16), (128, 64, 4, 4)), dict(stride=2, padding=1)),
    Layer("transposed-2x2s2-128-64@28", "conv_transpose2d",
          ((BATCH, 128, 28, 28), (128, 64, 2, 2)), dict(stride=2)),
    Layer("maxpool-3x3s2p1-64@112", "max_pool2d", ((BATCH, 64, 112, 112),),
          dict(kernel_size=3, stride=2, padding=1)),
    Layer("avgpool-2x2s2-256@56", "avg_pool2d", ((BATCH, 256, 56, 56),),
          dict(kernel_size=2, stride=2)),
    Layer("global-avgpool-2048@7", "adaptive_avg_pool2d", ((BATCH, 2048, 7, 7),),
          dict(output_size=(1, 1))),
    _bn("batchnorm-64@112", 64, 112),
    _bn("batchnorm-256@56", 256, 56),
]

BY_NAME = {layer.name: layer for layer in ZOO}

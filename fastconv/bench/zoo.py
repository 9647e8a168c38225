"""The layer zoo: the one list of layers that ``python -m fastconv bench``, the pytest-benchmark
suites in ``benchmarks/``, the tests and the docs use.

Batch 8, float32 by default. Each :class:`Layer` is one forward call of a real network's layer;
:meth:`Layer.calls` gives the call of each direction: forward, backward-data and backward-weight
for convolutions; forward and backward for pooling and batch norm (batch norm in training mode,
max-pool backward with the indices its forward saved, as a training step runs them).
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np

BATCH = 8
CONV_OPS = ("conv2d", "conv1d", "conv_transpose2d")


class Array(NamedTuple):
    """An array argument before it exists: its role in the op and its shape."""

    name: str
    shape: tuple


class Call(NamedTuple):
    """One op call: ``getattr(fastconv, op)(*args, **kwargs)``; the arrays may still be
    :class:`Array` descriptions (see :meth:`Layer.signatures`)."""

    op: str
    args: list
    kwargs: dict

    @property
    def shapes(self) -> list:
        """The shapes of the array arguments, for :func:`fastconv.explain`."""
        return [None if a is None else tuple(a.shape) for a in self.args]

    def explain_kwargs(self) -> dict:
        """``kwargs`` with array keywords (``indices``) turned into shapes, as explain takes."""
        return {k: tuple(v.shape) if hasattr(v, "shape") else v for k, v in self.kwargs.items()}


@dataclass(frozen=True)
class Layer:
    name: str
    op: str                 # the forward op
    shapes: tuple           # shapes of the forward op's array arguments
    kwargs: dict = field(default_factory=dict)
    note: str = ""          # where the layer comes from

    @property
    def is_conv(self) -> bool:
        return self.op in CONV_OPS

    def at_batch(self, n: int) -> "Layer":
        """The same layer with a batch of ``n`` images (the tests' quick pass over the zoo)."""
        x, *others = self.shapes
        return replace(self, shapes=((n, *x[1:]), *others))

    @property
    def directions(self) -> tuple[str, ...]:
        return ("forward", "backward_data", "backward_weight") if self.is_conv \
            else ("forward", "backward")

    def signatures(self) -> dict[str, Call]:
        """``{direction: Call}`` with :class:`Array` descriptions in place of arrays."""
        import fastconv

        names = fastconv.registry.OPS[self.op].arrays
        a = {name: None if shape is None else Array(name, tuple(shape))
             for name, shape in zip(names, self.shapes)}
        y_shape = fastconv.explain(self.op, *self.shapes, **self.kwargs)["output_shapes"][0]
        gy = Array("grad_y", tuple(y_shape))
        calls = {"forward": Call(self.op, list(a.values()), dict(self.kwargs))}
        back = self.op + "_backward"
        if self.is_conv:
            for direction, mask in (("backward_data", (True, False, False)),
                                    ("backward_weight", (False, True, False))):
                calls[direction] = Call(back, [gy, a["x"], a["weight"]],
                                        dict(self.kwargs, output_mask=mask))
        elif self.op == "batch_norm":
            calls["backward"] = Call(back, [gy, a["x"], a["weight"], a["running_mean"],
                                            a["running_var"]],
                                     dict(training=self.kwargs["training"]))
        elif self.op == "max_pool2d":
            calls["backward"] = Call(back, [gy, a["x"]],
                                     dict(self.kwargs, indices=Array("indices", gy.shape)))
        elif self.op == "adaptive_avg_pool2d":
            calls["backward"] = Call(back, [gy, a["x"]], {})
        else:
            calls["backward"] = Call(back, [gy, a["x"]], dict(self.kwargs))
        return calls

    def calls(self, dtype=np.float32, seed=0, xp=np) -> dict[str, Call]:
        """:meth:`signatures` with arrays of ``dtype``, made with NumPy and moved to ``xp``
        (``numpy`` or ``cupy``): standard normal values, positive running variances, and the
        max-pool indices of the forward call. Directions share their arrays (one x per layer)."""
        import fastconv

        rng = np.random.default_rng(seed)
        host: dict[str, np.ndarray] = {}
        device: dict = {}

        def make(spec):
            if not isinstance(spec, Array):
                return spec
            if spec.name not in host:
                if spec.name == "indices":
                    _, a = fastconv.max_pool2d(host["x"], **self.kwargs, return_indices=True,
                                               algo="reference")
                else:
                    a = rng.standard_normal(spec.shape)
                    a = (np.abs(a) + 0.5 if spec.name == "running_var" else a).astype(dtype)
                host[spec.name] = a
                device[spec.name] = a if xp is np else xp.asarray(a)
            return device[spec.name]

        return {d: Call(c.op, [make(a) for a in c.args], {k: make(v) for k, v in c.kwargs.items()})
                for d, c in self.signatures().items()}


def _conv(name, c, o, size, k, stride=1, padding=0, dilation=1, groups=1, note=""):
    return Layer(name, "conv2d", ((BATCH, c, size, size), (o, c // groups, k, k)),
                 dict(stride=stride, padding=padding, dilation=dilation, groups=groups), note)


def _bn(name, c, size, note):
    return Layer(name, "batch_norm", ((BATCH, c, size, size), (c,), (c,), (c,), (c,)),
                 dict(training=True), note)


ZOO = [
    _conv("resnet50-stem-7x7s2-3-64@224", 3, 64, 224, 7, stride=2, padding=3,
          note="ResNet-50 conv1: few input channels, large kernel"),
    _conv("resnet50-3x3-64-64@56", 64, 64, 56, 3, padding=1, note="ResNet-50 layer1 3x3"),
    _conv("resnet50-1x1-64-256@56", 64, 256, 56, 1, note="ResNet-50 layer1 expansion"),
    _conv("resnet50-1x1-256-64@56", 256, 64, 56, 1, note="ResNet-50 layer1 reduction"),
    _conv("resnet50-3x3s2-128-128@56", 128, 128, 56, 3, stride=2, padding=1,
          note="ResNet-50 layer2 downsampling 3x3"),
    _conv("resnet50-3x3-256-256@14", 256, 256, 14, 3, padding=1, note="ResNet-50 layer3 3x3"),
    _conv("resnet50-3x3-512-512@7", 512, 512, 7, 3, padding=1, note="ResNet-50 layer4 3x3"),
    _conv("resnext-3x3g32-256-256@28", 256, 256, 28, 3, padding=1, groups=32,
          note="ResNeXt-50 32x4d grouped 3x3"),
    _conv("mobilenet-dw3x3-128@56", 128, 128, 56, 3, padding=1, groups=128,
          note="MobileNet depthwise 3x3"),
    _conv("mobilenet-dw3x3s2-512@14", 512, 512, 14, 3, stride=2, padding=1, groups=512,
          note="MobileNet depthwise 3x3, stride 2"),
    _conv("mobilenet-pw1x1-128-256@28", 128, 256, 28, 1, note="MobileNet pointwise 1x1"),
    _conv("dilated-3x3d2-256-256@28", 256, 256, 28, 3, padding=2, dilation=2,
          note="DeepLab-style dilated 3x3"),
    Layer("transposed-4x4s2-128-64@16", "conv_transpose2d",
          ((BATCH, 128, 16, 16), (128, 64, 4, 4)), dict(stride=2, padding=1),
          "DCGAN-style 2x upsampling"),
    Layer("transposed-2x2s2-128-64@28", "conv_transpose2d",
          ((BATCH, 128, 28, 28), (128, 64, 2, 2)), dict(stride=2), "U-Net up-convolution"),
    Layer("maxpool-3x3s2p1-64@112", "max_pool2d", ((BATCH, 64, 112, 112),),
          dict(kernel_size=3, stride=2, padding=1), "ResNet-50 stem max pool"),
    Layer("avgpool-2x2s2-256@56", "avg_pool2d", ((BATCH, 256, 56, 56),),
          dict(kernel_size=2, stride=2), "DenseNet transition average pool"),
    Layer("global-avgpool-2048@7", "adaptive_avg_pool2d", ((BATCH, 2048, 7, 7),),
          dict(output_size=(1, 1)), "ResNet-50 head global average pool"),
    _bn("batchnorm-64@112", 64, 112, "ResNet-50 stem batch norm"),
    _bn("batchnorm-256@56", 256, 56, "ResNet-50 layer1 batch norm"),
]

BY_NAME = {layer.name: layer for layer in ZOO}

# The default (quick) suite: one layer of each kind, every direction.
QUICK = ["resnet50-stem-7x7s2-3-64@224", "resnet50-3x3-64-64@56", "resnet50-1x1-64-256@56",
         "resnext-3x3g32-256-256@28", "mobilenet-dw3x3-128@56", "transposed-4x4s2-128-64@16",
         "maxpool-3x3s2p1-64@112", "global-avgpool-2048@7", "batchnorm-64@112"]
SUITES = {"quick": QUICK, "full": [layer.name for layer in ZOO]}


def select(suite: str = "quick", layers=None, ops=None) -> list[Layer]:
    """The zoo layers of ``suite``, narrowed to the names matching any of the ``layers`` patterns
    (shell wildcards, e.g. ``"resnet50-*"``; given layers are taken from the whole zoo) and to
    the forward ``ops`` listed. Raises ``ValueError`` naming what matched nothing."""
    if suite not in SUITES:
        raise ValueError(f"suite must be one of {sorted(SUITES)}, got {suite!r}")
    chosen = [BY_NAME[name] for name in SUITES[suite]]
    if layers:
        for pattern in layers:
            if not any(fnmatch.fnmatchcase(layer.name, pattern) for layer in ZOO):
                raise ValueError(f"layers: {pattern!r} matches no zoo layer; the zoo has "
                                 f"{[layer.name for layer in ZOO]}")
        chosen = [layer for layer in ZOO
                  if any(fnmatch.fnmatchcase(layer.name, pattern) for pattern in layers)]
    if ops:
        known = sorted({layer.op for layer in ZOO})
        unknown = [op for op in ops if op not in known]
        if unknown:
            raise ValueError(f"ops: {unknown} are not ops of the zoo; expected some of {known}")
        chosen = [layer for layer in chosen if layer.op in ops]
        if not chosen:
            raise ValueError(f"ops: no layer of the selection is one of {list(ops)}")
    return chosen

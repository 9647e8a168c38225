"""The model zoo: whole networks for ``python -m fastconv bench --models``, built from plain
``torch.nn`` modules so that the same model runs once as it is (PyTorch's kernels) and once after
:func:`fastconv.torch.convert` (fastconv's), from the same weights.

torchvision cannot be installed beside the pinned torch, so the networks are defined here, small
versions of the classics at the input sizes a 2-core CPU trains at:

- ``lenet-digits``: the LeNet of ``examples/train_digits.py`` on 8x8 digits (batch 32);
- ``resnet18-cifar``: ResNet-18 as He et al. adapted it to CIFAR (3x3 stem, no max pool, four
  stages of two basic blocks, 64 to 512 channels) at 32x32 (batch 16);
- ``mobilenetv2-64``: MobileNetV2 (Sandler et al., inverted residuals of expansion 6,
  depthwise 3x3, linear bottlenecks, width 1.0) at 64x64 (batch 16);
- ``unet-64``: a U-Net (Ronneberger et al.) of three levels, 16 to 128 channels, two 3x3
  conv-batch-norm-ReLU per level, max-pool down and 2x2/stride-2 transposed convolutions up,
  at 64x64 (batch 16).

Needs PyTorch; ``import fastconv`` never imports this module.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


class LeNet(nn.Module):
    """conv 3x3 (1->16) - batch norm - ReLU - max pool 2 - conv 3x3 (16->32) - ReLU - global
    average pool - linear (32->10). ``layers`` is the module namespace the conv, norm and pool
    layers come from: ``torch.nn`` (the default) or ``fastconv.torch.nn``."""

    def __init__(self, layers=nn):
        super().__init__()
        self.features = nn.Sequential(
            layers.Conv2d(1, 16, 3, padding=1), layers.BatchNorm2d(16), nn.ReLU(),
            layers.MaxPool2d(2),
            layers.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
            layers.AdaptiveAvgPool2d(1))
        self.classifier = nn.Linear(32, 10)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


def _conv_bn(c_in, c_out, kernel, stride=1, groups=1, relu=True):
    layers = [nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
              nn.BatchNorm2d(c_out)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN with an identity (or 1x1 conv-BN) shortcut, ReLU after the sum."""

    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.body = nn.Sequential(_conv_bn(c_in, c_out, 3, stride),
                                  _conv_bn(c_out, c_out, 3, relu=False))
        self.shortcut = nn.Identity() if stride == 1 and c_in == c_out else \
            _conv_bn(c_in, c_out, 1, stride, relu=False)

    def forward(self, x):
        return torch.relu(self.body(x) + self.shortcut(x))


class ResNet18Cifar(nn.Module):
    """ResNet-18 for 32x32 inputs: 3x3 stem (64), stages of 2 basic blocks with 64, 128, 256,
    512 channels (stride 2 at the first block of each stage after the first), global average
    pool, linear to ``classes``."""

    def __init__(self, classes=10):
        super().__init__()
        self.stem = _conv_bn(3, 64, 3)
        blocks, c_in = [], 64
        for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1)]
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, classes)

    def forward(self, x):
        return self.fc(self.pool(self.blocks(self.stem(x))).flatten(1))


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expansion (unless the ratio is 1), depthwise 3x3, linear 1x1
    projection; a residual when the shape is kept."""

    def __init__(self, c_in, c_out, stride, expansion):
        super().__init__()
        hidden = c_in * expansion
        layers = [] if expansion == 1 else [_conv_bn(c_in, hidden, 1)]
        layers += [_conv_bn(hidden, hidden, 3, stride, groups=hidden),
                   _conv_bn(hidden, c_out, 1, relu=False)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


class MobileNetV2(nn.Module):
    """MobileNetV2, width 1.0 (Sandler et al., Table 2): stem 3x3/2 (32), 17 inverted residual
    blocks, 1x1 to 1280, global average pool, linear to ``classes``. (ReLU stands in for ReLU6,
    which changes no kernel.)"""

    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1))  # (expansion, channels, repeats, stride)

    def __init__(self, classes=10):
        super().__init__()
        layers, c_in = [_conv_bn(3, 32, 3, 2)], 32
        for expansion, c_out, repeats, stride in self.SETTINGS:
            for i in range(repeats):
                layers.append(InvertedResidual(c_in, c_out, stride if i == 0 else 1, expansion))
                c_in = c_out
        layers += [_conv_bn(c_in, 1280, 1), nn.AdaptiveAvgPool2d(1)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(1280, classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


class UNet(nn.Module):
    """A U-Net of ``levels`` levels: two 3x3 conv-BN-ReLU per level (``width`` channels at the
    top, doubling per level), 2x2 max pooling down, 2x2/stride-2 transposed convolution up,
    skip connections concatenated, 1x1 convolution to ``classes`` per pixel."""

    def __init__(self, c_in=1, classes=2, width=16, levels=3):
        super().__init__()
        widths = [width * 2**i for i in range(levels + 1)]
        self.down = nn.ModuleList()
        for c in widths:
            self.down.append(nn.Sequential(_conv_bn(c_in, c, 3), _conv_bn(c, c, 3)))
            c_in = c
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList(nn.ConvTranspose2d(c, c // 2, 2, stride=2)
                                for c in reversed(widths[1:]))
        self.merge = nn.ModuleList(
            nn.Sequential(_conv_bn(c, c // 2, 3), _conv_bn(c // 2, c // 2, 3))
            for c in reversed(widths[1:]))
        self.head = nn.Conv2d(width, classes, 1)

    def forward(self, x):
        skips = []
        for i, level in enumerate(self.down):
            x = level(x if i == 0 else self.pool(x))
            skips.append(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips[:-1])):
            x = merge(torch.cat([up(x), skip], 1))
        return self.head(x)


@dataclass(frozen=True)
class Model:
    """A network of the zoo, the shape of one batch of its input, and its task: ``classes``
    per image, or per pixel (``dense``), each trained with cross-entropy."""

    name: str
    build: Callable[[], nn.Module]
    input_shape: tuple
    classes: int
    dense: bool = False
    note: str = ""

    def batch(self, seed: int = 0):
        """(inputs, targets): a fixed batch of standard-normal inputs and random labels."""
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(self.input_shape, generator=g)
        n, _, h, w = self.input_shape
        shape = (n, h, w) if self.dense else (n,)
        return x, torch.randint(0, self.classes, shape, generator=g)

    def make(self, seed: int = 0) -> nn.Module:
        """The network with weights drawn from ``seed`` (PyTorch's default initialisation)."""
        torch.manual_seed(seed)
        return self.build()


MODELS = [
    Model("lenet-digits", LeNet, (32, 1, 8, 8), 10,
          note="examples/train_digits.py: 2 convs, batch norm, max and global pooling"),
    Model("resnet18-cifar", ResNet18Cifar, (16, 3, 32, 32), 10,
          note="ResNet-18 for CIFAR: dense 3x3 convs, 1x1 shortcuts, batch norm"),
    Model("mobilenetv2-64", MobileNetV2, (16, 3, 64, 64), 10,
          note="MobileNetV2 1.0: depthwise 3x3, 1x1 expansions and projections, batch norm"),
    Model("unet-64", UNet, (16, 1, 64, 64), 2, dense=True,
          note="U-Net, 3 levels: 3x3 convs, batch norm, max pool, 2x2/s2 transposed convs"),
]
BY_NAME = {m.name: m for m in MODELS}


def select(names=None) -> list[Model]:
    """The models matching the shell patterns ``names`` (all when None); ``ValueError`` naming
    a pattern that matches none."""
    import fnmatch

    if not names:
        return list(MODELS)
    for pattern in names:
        if not any(fnmatch.fnmatchcase(m.name, pattern) for m in MODELS):
            raise ValueError(f"models: {pattern!r} matches no model; the zoo has "
                             f"{[m.name for m in MODELS]}")
    return [m for m in MODELS if any(fnmatch.fnmatchcase(m.name, p) for p in names)]

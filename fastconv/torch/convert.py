"""``convert(model)``: swap every supported torch module of a model for fastconv's, in place.

A module is swapped by changing its class to the fastconv subclass: the object stays the same,
with its parameters, buffers, hooks and place in the model, so optimisers, state_dicts and
references to it keep working and no weight is copied. Only modules whose class is exactly a
supported torch class are swapped; subclasses (which may override ``forward``) and everything
else are left alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import nn

SWAPS = {
    torch.nn.Conv2d: nn.Conv2d,
    torch.nn.Conv1d: nn.Conv1d,
    torch.nn.ConvTranspose2d: nn.ConvTranspose2d,
    torch.nn.MaxPool2d: nn.MaxPool2d,
    torch.nn.AvgPool2d: nn.AvgPool2d,
    torch.nn.AdaptiveAvgPool2d: nn.AdaptiveAvgPool2d,
    torch.nn.BatchNorm2d: nn.BatchNorm2d,
}


@dataclass
class Conversion:
    """What :func:`convert` did: ``swapped`` lists ``(name, torch class, fastconv class)`` per
    module swapped, ``kept`` lists ``(name, class, why)`` for modules of a kind fastconv covers
    that were left alone. ``str()`` is a short table."""

    model: torch.nn.Module
    swapped: list = field(default_factory=list)
    kept: list = field(default_factory=list)

    def __str__(self):
        lines = [f"fastconv.torch.convert: {len(self.swapped)} module(s) swapped, "
                 f"{len(self.kept)} kept"]
        lines += [f"  swapped {name or '(model)'}: {old.__name__} -> fastconv {new.__name__}"
                  for name, old, new in self.swapped]
        lines += [f"  kept    {name or '(model)'}: {cls.__name__} ({why})"
                  for name, cls, why in self.kept]
        return "\n".join(lines)


def convert(model: torch.nn.Module, *, algo: str = "auto") -> Conversion:
    """Swap every ``Conv2d``, ``Conv1d``, ``ConvTranspose2d``, ``MaxPool2d``, ``AvgPool2d``,
    ``AdaptiveAvgPool2d`` and ``BatchNorm2d`` of ``model`` (the model itself included) for
    fastconv's, in place, keeping weights, buffers and hooks; every call of a swapped module
    passes ``algo`` to fastconv. Returns a :class:`Conversion` listing what was swapped and what
    was kept (subclasses of the supported classes, whose ``forward`` may differ)."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"convert: model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(algo, str):
        raise TypeError(f"convert: algo must be a string, got {type(algo).__name__}")
    done = Conversion(model)
    fastconv_classes = tuple(SWAPS.values())
    for name, module in model.named_modules():
        cls = type(module)
        if cls in SWAPS:
            module.__class__ = SWAPS[cls]
            module.algo = algo
            done.swapped.append((name, cls, SWAPS[cls]))
        elif isinstance(module, fastconv_classes):
            if algo != "auto":
                module.algo = algo
        elif isinstance(module, tuple(SWAPS)):
            base = next(b for b in SWAPS if isinstance(module, b))
            done.kept.append((name, cls, f"a subclass of torch.nn.{base.__name__}, whose "
                                         f"forward may differ"))
    return done

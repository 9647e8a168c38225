"""Whole models: ``python -m fastconv bench --models`` times a training step and an inference
pass of every network of :mod:`.models`, once as PyTorch runs it and once after
:func:`fastconv.torch.convert`, with the same weights, the same batch and the same threads.

- training step: ``zero_grad``, forward, cross-entropy, backward, SGD step (momentum 0.9);
- inference: ``eval()`` mode under ``torch.no_grad()``, forward only.

The two contenders of a row are timed by :func:`fastconv.bench.timing.measure_together`
(blocks, an idle gap before each so that the other library's pools have stopped spinning,
rotating rounds). :func:`profile` breaks one step down op by op with ``torch.profiler``: the
self CPU time per step of each op family (convolution, batch norm, pooling, the rest), forward
and backward, for both contenders.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np

from . import models, timing

CONTENDERS = ("fastconv", "torch")
MODES = ("train", "infer")


@dataclass
class ModelOptions:
    names: list | None = None            # shell patterns of model names (None: all)
    modes: tuple = MODES
    threads: int = field(default_factory=timing.cores)
    min_repeat: int = 5
    min_time: float = 1.0                # seconds of timed runs per contender and mode
    idle_gap: float = timing.IDLE_GAP_S
    profile: bool = False
    profile_steps: int = 5


def check_options(o: ModelOptions) -> list:
    """Validate before any work; the selected models."""
    timing.check_options(o.threads, o.min_repeat, o.min_time, o.idle_gap)
    return models.select(o.names)


class Pair:
    """A model twice, from the same weights: as PyTorch runs it and converted to fastconv's
    modules; the same batch for both; a training step and an inference pass of each."""

    def __init__(self, model: models.Model, seed: int = 0):
        import torch

        import fastconv.torch

        self.model = model
        self.x, self.y = model.batch(seed)
        plain = model.make(seed)
        converted = copy.deepcopy(plain)
        self.conversion = fastconv.torch.convert(converted)
        self.nets = {"fastconv": converted, "torch": plain}
        self.optimisers = {name: torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
                           for name, net in self.nets.items()}

    def step(self, contender: str, mode: str):
        """A zero-argument callable: one training step or one inference pass."""
        import torch
        import torch.nn.functional as F

        net, optimiser = self.nets[contender], self.optimisers[contender]
        x, y = self.x, self.y
        if mode == "infer":
            def infer():
                net.eval()
                with torch.no_grad():
                    net(x)
            return infer

        def train():
            net.train()
            optimiser.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), y).backward()
            optimiser.step()
        return train

    def parameters(self) -> int:
        return sum(p.numel() for p in self.nets["torch"].parameters())


def run(o: ModelOptions, selected, progress=None):
    """Time every (model, mode); yields one row (a plain dict, ready for JSON) per pair."""
    from . import baseline

    baseline.configure("cpu", o.threads)
    timing.pin_threads(o.threads)
    for model in selected:
        pair = Pair(model)
        for mode in o.modes:
            if progress:
                progress(f"{model.name} {mode}")
            contenders = {name: pair.step(name, mode) for name in CONTENDERS}
            times = timing.measure_together(contenders, min_repeat=o.min_repeat,
                                            min_time=o.min_time, gap=o.idle_gap)
            row = {"model": model.name, "mode": mode, "batch": model.input_shape[0],
                   "input_shape": list(model.input_shape), "parameters": pair.parameters(),
                   "swapped": len(pair.conversion.swapped), "note": model.note,
                   **{name: times[name].summary() for name in CONTENDERS}}
            row["ratio"] = times["fastconv"].median / times["torch"].median
            if o.profile:
                row["profile"] = profile(pair, mode, o.profile_steps, o.idle_gap)
            yield row


# ---- op-by-op profile ------------------------------------------------------------------------

FAMILIES = ("convolution", "batch norm", "pooling", "other")


AUTOGRAD_FORWARD = "generatedbackwardfor_"  # a custom op's autograd function, run forward


def family(op_name: str) -> tuple[str, str]:
    """(family, direction) of a profiler event name: fastconv's custom operators
    (``fastconv::conv2d_backward``), ATen's (``aten::mkldnn_convolution``) and autograd's
    nodes (``ConvolutionBackward0``) alike. ``GeneratedBackwardFor_fastconv_conv2d_default``
    is the autograd function of ``fastconv::conv2d``: its event is the op's forward call
    under autograd, the forward kernels included."""
    name = op_name.lower()
    if name.startswith(AUTOGRAD_FORWARD):
        name, direction = name[len(AUTOGRAD_FORWARD):], "forward"
    else:
        direction = "backward" if "backward" in name else "forward"
    if "batch_norm" in name or "batchnorm" in name:
        return "batch norm", direction
    if "pool" in name:
        return "pooling", direction
    if "conv" in name:
        return "convolution", direction
    return "other", direction


def profile(pair: Pair, mode: str, steps: int = 5, gap: float = timing.IDLE_GAP_S) -> dict:
    """Self CPU milliseconds per step of each (family, direction) and of the top ops, for both
    contenders: ``{contender: {"families": {...}, "ops": [(name, ms), ...], "total": ms}}``."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    out = {}
    for name in CONTENDERS:
        step = pair.step(name, mode)
        time.sleep(gap)
        step()
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                step()
        families: dict[str, float] = {}
        ops = []
        for event in prof.key_averages():
            ms = event.self_cpu_time_total / 1e3 / steps
            if event.key.startswith("ProfilerStep"):
                continue
            fam, direction = family(event.key)
            key = f"{fam} {direction}" if fam != "other" else "other"
            families[key] = families.get(key, 0.0) + ms
            ops.append((event.key, ms))
        ops.sort(key=lambda item: -item[1])
        out[name] = {"families": families, "ops": ops[:12],
                     "total": sum(ms for _, ms in ops)}
    return out


def metadata(o: ModelOptions, argv=None) -> dict:
    import torch

    import fastconv

    device = timing.cpu_device(o.threads)
    return {"fastconv": fastconv.__version__, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": argv, "suite": "models", "threads": o.threads,
            "min_repeat": o.min_repeat, "min_time_s": o.min_time, "rounds": timing.ROUNDS,
            "idle_gap_s": o.idle_gap, "machine": device.description,
            "machine_line": device.line(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads()}


def summarise(rows: list[dict]) -> dict:
    """The geometric mean and the worst of the fastconv/PyTorch ratios, per mode."""
    out = {}
    for mode in MODES:
        ratios = [r["ratio"] for r in rows if r["mode"] == mode]
        if ratios:
            out[mode] = {"geomean_ratio": float(np.exp(np.mean(np.log(ratios)))),
                         "worst_ratio": max(ratios), "models": len(ratios)}
    return out

"""The cost of a call itself: ``python -m fastconv bench --overhead`` times every op, forward and
backward, on tiny inputs, where what a call costs is what it costs to get to the kernel.

Three ways to make each call, timed in one run:

- ``numpy``: fastconv's NumPy API (``fastconv.conv2d(x, w, ...)``, ``fastconv.conv2d_backward``)
  against ``torch.nn.functional`` forward and, for each backward, the ATen op that PyTorch's
  autograd runs for it (:func:`fastconv.bench.baseline.torch_call`). Target: at most 2.0x.
- ``torch fwd``: ``fastconv.torch``'s op on tensors that want no gradient, against torch's own
  op. Target: at most 3.0x.
- ``torch fwd+bwd``: the op on tensors that want gradients, then ``backward`` of its output,
  under autograd, against torch's own op the same way. Target: at most 3.0x.

Each pair of contenders is timed by :func:`fastconv.bench.timing.measure_together` (blocks, an
idle gap before each, rotating rounds); every figure is the median of single timed calls, in
microseconds. Tiny calls leave no pool spinning for long (fastconv runs them on one thread,
PyTorch's tiny ops are serial; GNU OpenMP's workers spin at most ~6 ms), so the gap is shorter
than the layer bench's, and the rounds more (``ROUNDS``): a slow spell of this shared machine
then falls on both contenders of a row alike. The inputs are one (2, 4, 8, 8) image batch (length 16 for the 1-d ops).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from . import timing
from .report import Columns

# (name, forward op, array shapes in the op's order, keyword arguments)
TINY = [
    ("conv2d 3x3", "conv2d", ((2, 4, 8, 8), (8, 4, 3, 3), (8,)), dict(padding=1)),
    ("conv1d 3", "conv1d", ((2, 4, 16), (8, 4, 3), (8,)), dict(padding=1)),
    ("conv_transpose2d 3x3", "conv_transpose2d", ((2, 4, 8, 8), (4, 8, 3, 3), (8,)),
     dict(padding=1)),
    ("max_pool2d 2", "max_pool2d", ((2, 4, 8, 8),), dict(kernel_size=2)),
    ("avg_pool2d 2", "avg_pool2d", ((2, 4, 8, 8),), dict(kernel_size=2)),
    ("adaptive_avg_pool2d 1", "adaptive_avg_pool2d", ((2, 4, 8, 8),), dict(output_size=(1, 1))),
    ("batch_norm train", "batch_norm", ((2, 4, 8, 8), None, None), dict(training=True)),
    ("batch_norm train affine", "batch_norm", ((2, 4, 8, 8), (4,), (4,), (4,), (4,)),
     dict(training=True)),
    ("batch_norm eval affine", "batch_norm", ((2, 4, 8, 8), (4,), (4,), (4,), (4,)),
     dict(training=False)),
]
TARGETS = {"numpy": 2.0, "torch fwd": 3.0, "torch fwd+bwd": 3.0}
IDLE_GAP_S = 0.05  # seconds idle before each block
ROUNDS = 7
WAYS = tuple(TARGETS)


@dataclass
class OverheadOptions:
    ways: tuple = WAYS
    min_repeat: int = 300
    min_time: float = 0.7               # seconds of timed calls per contender, all rounds
    idle_gap: float = IDLE_GAP_S
    threads: int = field(default_factory=timing.cores)


def _arrays(name_shapes, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for role, shape in name_shapes:
        if shape is None:
            out.append(None)
            continue
        a = rng.standard_normal(shape).astype(np.float32)
        out.append(np.abs(a) + 0.5 if role == "running_var" else a)
    return out


def _calls(op, shapes, kwargs):
    """``(forward Call, backward Call)`` of one tiny case, arrays made (zoo.Call objects)."""
    import fastconv
    from .zoo import Call

    names = fastconv.registry.OPS[op].arrays
    arrays = dict(zip(names, _arrays(list(zip(names, shapes)))))
    forward = Call(op, list(arrays.values()), dict(kwargs))
    y = getattr(fastconv, op)(*forward.args, **forward.kwargs)
    gy = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
    back = op + "_backward"
    if op == "batch_norm":
        backward = Call(back, [gy] + [arrays.get(name) for name in
                                      ("x", "weight", "running_mean", "running_var")],
                        dict(training=kwargs["training"]))
    elif op.startswith("conv"):
        backward = Call(back, [gy, arrays["x"], arrays["weight"]],
                        {k: v for k, v in kwargs.items()})
    elif op == "max_pool2d":
        _, indices = fastconv.max_pool2d(arrays["x"], **kwargs, return_indices=True)
        backward = Call(back, [gy, arrays["x"]], dict(kwargs, indices=indices))
    elif op == "adaptive_avg_pool2d":
        backward = Call(back, [gy, arrays["x"]], {})
    else:
        backward = Call(back, [gy, arrays["x"]], dict(kwargs))
    return forward, backward


def _numpy_pairs(forward, backward):
    import fastconv
    from .baseline import torch_call

    for call in (forward, backward):
        fn = getattr(fastconv, call.op)
        yield call.op, (lambda fn=fn, c=call: fn(*c.args, **c.kwargs)), torch_call(call)


def _torch_pairs(forward, with_grad: bool):
    """(fastconv.torch call, torch call) of the forward op on tensors, with or without a
    backward through autograd."""
    import torch
    import torch.nn.functional as F

    import fastconv
    import fastconv.torch as ft

    mine, theirs = getattr(ft.ops, forward.op), getattr(F, forward.op)
    differentiable = {"x", "weight", "bias"}
    names = fastconv.registry.OPS[forward.op].arrays
    tensors = [None if a is None else torch.from_numpy(a.copy()) for a in forward.args]
    if with_grad:
        for name, t in zip(names, tensors):
            if t is not None and name in differentiable:
                t.requires_grad_(True)
    y = theirs(*tensors, **forward.kwargs)
    gy = torch.ones_like(y)

    def run(fn):
        if not with_grad:
            def call():
                fn(*tensors, **forward.kwargs)
        else:
            def call():
                fn(*tensors, **forward.kwargs).backward(gy)
        return call

    return run(mine), run(theirs)


def check_options(o: OverheadOptions) -> None:
    """Validate before any work."""
    unknown = [w for w in o.ways if w not in WAYS]
    if unknown or not o.ways:
        raise ValueError(f"ways must be some of {list(WAYS)}, got {list(o.ways)}")
    timing.check_options(o.threads, o.min_repeat, o.min_time, o.idle_gap)


def metadata(o: OverheadOptions, argv=None) -> dict:
    import torch

    import fastconv

    device = timing.cpu_device(o.threads)
    return {"fastconv": fastconv.__version__, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "suite": "overhead", "torch": torch.__version__,
            "machine_line": device.line(), "machine": device.description, "threads": o.threads,
            "min_repeat": o.min_repeat, "min_time_s": o.min_time, "idle_gap_s": o.idle_gap,
            "rounds": ROUNDS, "targets": TARGETS, "command": argv}


def summarise(rows: list[dict]) -> dict:
    """Per way: the worst ratio, its call, and how many calls meet the target."""
    out = {}
    for way in WAYS:
        mine = [r for r in rows if r["way"] == way]
        if mine:
            worst = max(mine, key=lambda r: r["ratio"])
            out[way] = {"calls": len(mine), "met": sum(r["met"] for r in mine),
                        "worst_ratio": worst["ratio"], "worst": f"{worst['case']} {worst['op']}",
                        "target": TARGETS[way]}
    return out


class Table(Columns):
    columns = (("case", 24, "<"), ("way", 14, "<"), ("op", 29, "<"), ("fastconv us", 11, ">"),
               ("torch us", 9, ">"), ("ratio", 6, ">"), ("target", 7, ">"))

    def format(self, row: dict) -> str:
        verdict = f"{'<=' if row['met'] else '> '}{row['target']:g}"
        return self._line([row["case"], row["way"], row["op"], f"{row['fastconv_us']:.1f}",
                           f"{row['torch_us']:.1f}", f"{row['ratio']:.2f}", verdict]).rstrip()


def header(meta: dict) -> str:
    return "\n".join([
        f"fastconv {meta['fastconv']} bench --overhead: tiny calls, fastconv against torch "
        f"{meta['torch']} in the same process, {meta['threads']} threads",
        f"machine: {meta['machine_line']}",
        "numpy: fastconv's NumPy API vs torch.nn.functional (forward) and the ATen backward op "
        "autograd runs; torch fwd: fastconv.torch vs torch, no gradient; torch fwd+bwd: the "
        "same under autograd, forward and backward",
        f"timing: {meta['rounds']} rounds of blocks, each after {meta['idle_gap_s']:g} s idle, "
        f"at least {meta['min_repeat']} calls and {meta['min_time_s']:g} s each; median "
        f"microseconds of single calls"])


def footer(summary: dict, wall_s: float) -> str:
    lines = [f"{way}: {s['met']} of {s['calls']} calls within {s['target']:g}x; worst "
             f"{s['worst_ratio']:.2f}x ({s['worst']})" for way, s in summary.items()]
    lines.append(f"in {wall_s:.0f} s")
    return "\n".join(lines)


def run(o: OverheadOptions, progress=None):
    """One row per (case, way): the two medians in microseconds and their ratio."""
    import torch

    torch.set_num_threads(o.threads)
    for case, op, shapes, kwargs in TINY:
        forward, backward = _calls(op, shapes, kwargs)
        pairs = []
        if "numpy" in o.ways:
            pairs += [("numpy", name, f, t) for name, f, t in _numpy_pairs(forward, backward)]
        for way, grad in (("torch fwd", False), ("torch fwd+bwd", True)):
            if way in o.ways:
                pairs.append((way, forward.op, *_torch_pairs(forward, grad)))
        for way, name, mine, theirs in pairs:
            if progress:
                progress(f"{case} {way} {name}")
            t = timing.measure_together({"fastconv": mine, "torch": theirs},
                                        min_repeat=o.min_repeat, min_time=o.min_time,
                                        max_repeat=20 * o.min_repeat, gap=o.idle_gap,
                                        rounds=ROUNDS)
            f_us, t_us = 1e6 * t["fastconv"].median, 1e6 * t["torch"].median
            yield {"case": case, "way": way, "op": name, "fastconv_us": f_us,
                   "torch_us": t_us, "ratio": f_us / t_us, "target": TARGETS[way],
                   "met": f_us / t_us <= TARGETS[way]}

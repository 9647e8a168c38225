"""What ``torch.library`` costs a call by itself, measured on an op that does almost nothing
(it returns a new, uninitialised tensor shaped like its input; a custom operator may not
return a view of its input), so that what is left is the machinery: the
measurements behind ``fastconv.torch``'s two ways in (fastconv/torch/ops.py).

    python benchmarks/custom_op_cost.py [--calls 20000]

Rows, median microseconds per call over rounds of ``--calls`` calls:

- ``python function``: the op's implementation called directly (the floor);
- ``custom_op``: the same through ``torch.library.custom_op`` (the dispatcher);
- ``custom_op + fake``: with a fake kernel registered (it runs only on fake tensors);
- ``custom_op + autograd, no grad``: with ``register_autograd``, on tensors that want no
  gradient;
- ``custom_op + autograd, fwd+bwd``: forward on a tensor that wants a gradient, then
  ``backward`` through the registered formula;
- ``autograd.Function, fwd+bwd``: the same formula in a plain ``autograd.Function`` (what
  ``fastconv.torch`` runs for eager calls);
- ``torch.nn.functional.relu, fwd+bwd``: a native op, for scale.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch


def per_call_us(fn, calls, rounds=7):
    for _ in range(200):
        fn()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20000)
    calls = parser.parse_args(argv).calls

    def impl(x: torch.Tensor) -> torch.Tensor:
        return torch.empty_like(x)

    bare = torch.library.custom_op("fastconv_cost::bare", impl, mutates_args=())
    faked = torch.library.custom_op("fastconv_cost::faked", impl, mutates_args=())
    faked.register_fake(lambda x: x.new_empty(x.shape))
    differentiable = torch.library.custom_op("fastconv_cost::grad", impl, mutates_args=())
    differentiable.register_fake(lambda x: x.new_empty(x.shape))
    differentiable.register_autograd(lambda ctx, g: g, setup_context=lambda ctx, inputs, output: None)

    class Function(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return impl(x)

        @staticmethod
        def backward(ctx, g):
            return g

    x = torch.randn(2, 4, 8, 8)
    xg = x.clone().requires_grad_(True)
    g = torch.ones_like(x)
    rows = [
        ("python function", lambda: impl(x)),
        ("custom_op", lambda: bare(x)),
        ("custom_op + fake", lambda: faked(x)),
        ("custom_op + autograd, no grad", lambda: differentiable(x)),
        ("custom_op + autograd, fwd+bwd", lambda: differentiable(xg).backward(g)),
        ("autograd.Function, fwd+bwd", lambda: Function.apply(xg).backward(g)),
        ("torch.nn.functional.relu, fwd+bwd", lambda: torch.relu(xg).backward(g)),
    ]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; median us per call")
    for name, fn in rows:
        print(f"{name:36s} {per_call_us(fn, calls):8.1f}")


if __name__ == "__main__":
    main()

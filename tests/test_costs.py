"""explain's FLOP and byte counts against counts made independently of fastconv's cost model.

Convolutions are counted by PyTorch's own FLOP counter (``torch.utils.flop_counter``) running
the very ATen calls the benchmark baseline times, on meta tensors (no arithmetic is done).
Pooling and batch norm, which that counter does not count, are counted from the shapes PyTorch's
ops return, by the conventions the front end's parameter objects document (``flops``, ``min_bytes``). Bytes are the sizes of the tensors
each call reads and writes.
"""
import numpy as np
import pytest

import fastconv
from fastconv.bench import baseline, zoo

torch = pytest.importorskip("torch")
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

ITEMSIZE = 4  # the zoo's float32
CALLS = [(layer, direction, call) for layer in zoo.ZOO
         for direction, call in layer.signatures().items()]


def meta(call):
    """The call with meta tensors (shape and dtype only) in place of its arrays."""
    def tensor(a):
        if not isinstance(a, zoo.Array):
            return a
        dtype = torch.int64 if a.name == "indices" else torch.float32
        return torch.empty(a.shape, dtype=dtype, device="meta")

    return zoo.Call(call.op, [tensor(a) for a in call.args],
                    {k: tensor(v) for k, v in call.kwargs.items()})


def torch_counts(call):
    """(FLOPs PyTorch's counter sees, the tensors PyTorch returns) for the call."""
    run = baseline.torch_call(meta(call))
    with FlopCounterMode(display=False) as counter:
        out = run()
    out = [t for t in (out if isinstance(out, tuple) else (out,)) if t is not None]
    return counter.get_total_flops(), out


def _counter_misses_groups_in_weight_gradient() -> bool:
    """PyTorch's counter before pytorch/pytorch#183405 (2026) forgets to divide the weight
    gradient of a grouped convolution by the groups; probe it on a tiny grouped layer, where the
    weight gradient's multiply-adds are those of the forward pass."""
    x, w = torch.empty(1, 4, 5, 5, device="meta"), torch.empty(4, 2, 3, 3, device="meta")
    with FlopCounterMode(display=False) as forward:
        torch.nn.functional.conv2d(x, w, groups=2)
    with FlopCounterMode(display=False) as backward:
        torch.ops.aten.convolution_backward(torch.empty(1, 4, 3, 3, device="meta"), x, w, None,
                                            [1, 1], [0, 0], [1, 1], False, [0, 0], 2,
                                            [False, True, False])
    return backward.get_total_flops() == 2 * forward.get_total_flops()


def independent_flops(layer, call):
    flops, out = torch_counts(call)
    if layer.is_conv:
        groups = layer.kwargs.get("groups", 1)
        if call.kwargs.get("output_mask", (0, 0))[1] and groups > 1 \
                and _counter_misses_groups_in_weight_gradient():
            flops //= groups
        return flops
    assert flops == 0  # PyTorch's counter counts only the convolutions
    x = call.args[1] if call.op.endswith("_backward") else call.args[0]
    x_elements = int(np.prod(x.shape))
    y_elements = int(np.prod((out[0] if not call.op.endswith("_backward") else
                              call.args[0]).shape))
    if layer.op == "max_pool2d":
        k = layer.kwargs["kernel_size"] ** 2
        # forward: one comparison per window element; backward with indices: one add per output
        return y_elements if call.op.endswith("_backward") else y_elements * k
    if layer.op == "avg_pool2d":
        return y_elements * (layer.kwargs["kernel_size"] ** 2 + 1)  # sums plus one divide
    if layer.op == "adaptive_avg_pool2d":  # global: every element once, one divide per output
        assert y_elements * 49 == x_elements
        return x_elements + y_elements
    if layer.op == "batch_norm":  # training: 5 per element forward, 7 backward
        return (7 if call.op.endswith("_backward") else 5) * x_elements
    raise AssertionError(layer.op)


def independent_bytes(layer, call):
    _, out = torch_counts(call)

    def size(a):
        return int(np.prod(a.shape)) * (8 if a.name == "indices" else ITEMSIZE)

    args = dict(zip(fastconv.registry.OPS[call.op].arrays, call.args))
    args.update({k: v for k, v in call.kwargs.items() if isinstance(v, zoo.Array)})
    if layer.is_conv and call.op.endswith("_backward"):
        want_x, want_w, _ = call.kwargs["output_mask"]
        read = [args["grad_y"]] + [args["weight"]] * want_x + [args["x"]] * want_w
    elif layer.op == "max_pool2d" and call.op.endswith("_backward"):
        read = [args["grad_y"], args["indices"]]  # x is not needed once indices are saved
    elif call.op.endswith("pool2d_backward"):
        read = [args["grad_y"]]  # average pooling's gradient needs only x's shape
    elif layer.op == "batch_norm" and not call.op.endswith("_backward"):
        # training: reads x, weight, bias, both running stats; updates the running stats
        read = list(args.values()) + [args["running_mean"], args["running_var"]]
    elif layer.op == "batch_norm":  # training backward: grad_y, x, weight
        read = [args["grad_y"], args["x"], args["weight"]]
    else:
        read = [a for a in args.values() if a is not None]
    written = sum(int(np.prod(t.shape)) * ITEMSIZE for t in out)
    return sum(size(a) for a in read) + written


@pytest.mark.parametrize("layer, direction, call", CALLS,
                         ids=[f"{layer.name}-{d}" for layer, d, _ in CALLS])
def test_zoo_flops_and_bytes_match_an_independent_count(layer, direction, call):
    info = fastconv.explain(call.op, *call.shapes, **call.explain_kwargs())
    assert info["flops"] == independent_flops(layer, call)
    assert info["bytes"] == independent_bytes(layer, call)
    assert info["intensity"] == pytest.approx(info["flops"] / info["bytes"])


def test_every_zoo_conv_costs_the_textbook_formula():
    """2 x N x O x Ho x Wo x (C / groups) x kh x kw, written out once more by hand."""
    for layer in zoo.ZOO:
        if layer.op != "conv2d":
            continue
        (n, c, h, w), (o, cg, kh, kw) = layer.shapes
        s, p, d = (layer.kwargs[k] for k in ("stride", "padding", "dilation"))
        ho = (h + 2 * p - d * (kh - 1) - 1) // s + 1
        wo = (w + 2 * p - d * (kw - 1) - 1) // s + 1
        assert cg == c // layer.kwargs["groups"]
        assert fastconv.explain("conv2d", *layer.shapes, **layer.kwargs)["flops"] \
            == 2 * n * o * ho * wo * cg * kh * kw


@pytest.mark.parametrize("weight, padding, macs", [
    ((32, 200, 5, 5), "same", 163_840_000),        # 32 5x5 filters straight on 200 channels
    ((16, 200, 1, 1), 0, 32 * 32 * 200 * 16),      # the 1x1 bottleneck to 16 channels ...
])
def test_seed_1x1_example_against_torch(weight, padding, macs):
    """The lecture notes' 1x1 example: a 32x32x200 input reduced to 32 channels with 5x5
    filters takes (32*32*200) x (5*5*32) ~ 163M multiplications; a 1x1 to 16 channels first
    costs 3.3M, and the 5x5 after it 13.1M."""
    x_shape = (1, 200, 32, 32)
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.conv2d(torch.empty(x_shape, device="meta"),
                                   torch.empty(weight, device="meta"), padding=padding)
    info = fastconv.explain("conv2d", x_shape, weight, padding=padding)
    assert info["flops"] == counter.get_total_flops() == 2 * macs
    after = fastconv.explain("conv2d", (1, 16, 32, 32), (32, 16, 5, 5), padding=2)["flops"]
    assert after == 2 * 32 * 32 * 16 * 5 * 5 * 32 == 2 * 13_107_200

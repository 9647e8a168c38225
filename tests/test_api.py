"""The public API's contract (API.md): dispatch, explain, layouts, dtypes, and the promises every
op keeps (inputs untouched, deterministic, any strides)."""
import numpy as np
import pytest

import fastconv as fc
from fastconv import dispatch, registry
from fastconv.check import cases, serves
from fastconv.reference import conv as reference_conv
from fastconv.testing import assert_matches, error, fastconv_runner, reference_op, torch_op

ALL_CASES = cases()
CASES = {op: calls[0] for op, calls in ALL_CASES.items()}  # one general case per op
OPS = sorted(dispatch.OPS)
# every algorithm on every case it can serve: the promises below hold for each of them
SERVED = [(op, algo, i) for op in OPS for algo in fc.algorithms(op)
          for i, (args, kwargs) in enumerate(ALL_CASES[op]) if serves(algo, op, args, kwargs)]
SERVED_IDS = [f"{op}-{algo}-{i}" for op, algo, i in SERVED]


def call(op, args, kwargs, **extra):
    return getattr(fc, op)(*args, **kwargs, **extra)


def as_tuple(result):
    return result if isinstance(result, tuple) else (result,)


def test_every_op_of_the_api_is_exported_and_covered():
    assert set(OPS) == set(CASES) == {n for n in fc.__all__ if n not in ("algorithms", "explain")}


@pytest.mark.parametrize("op", OPS)
def test_reference_is_available_for_every_op(op):
    assert "reference" in fc.algorithms(op)
    assert fc.algorithms(op, backend="cpu") == fc.algorithms(op)


@pytest.mark.parametrize("op", OPS)
def test_explain_describes_every_op(op):
    args, kwargs = CASES[op]
    shapes = [None if a is None else a.shape for a in args]
    info = fc.explain(op, *shapes, **kwargs)
    for key in ("algo", "reason", "candidates", "flops", "bytes", "workspace_bytes", "intensity",
                "index_bits"):
        assert key in info
    assert info["algo"] in info["candidates"] and "reference" in info["candidates"]
    assert set(info["candidates"]) | set(info["rejected"]) == set(fc.algorithms(op))
    assert isinstance(info["reason"], str) and info["reason"]
    assert isinstance(info["flops"], int) and info["flops"] > 0
    assert isinstance(info["bytes"], int) and info["bytes"] > 0
    assert info["intensity"] == pytest.approx(info["flops"] / info["bytes"])
    assert info["index_bits"] in (32, 64)
    # explain's output shapes are what the op returns
    result = as_tuple(call(op, args, kwargs))
    assert tuple(None if r is None else r.shape for r in result[:len(info["output_shapes"])]) \
        == info["output_shapes"]


def test_explain_counts_conv_flops_and_bytes_independently():
    n, c, h, w, o, k = 8, 64, 56, 56, 64, 3
    info = fc.explain("conv2d", (n, c, h, w), (o, c, k, k), padding=1)
    assert info["flops"] == 2 * n * o * h * w * c * k * k
    assert info["bytes"] == 4 * (n * c * h * w + o * c * k * k + n * o * h * w)
    info64 = fc.explain("conv2d", (n, c, h, w), (o, c, k, k), padding=1, dtype="float64")
    assert info64["bytes"] == 2 * info["bytes"]
    grouped = fc.explain("conv2d", (n, c, h, w), (o, c // 32, k, k), padding=1, groups=32)
    assert grouped["flops"] == info["flops"] // 32
    backward = fc.explain("conv2d_backward", (n, o, h, w), (n, c, h, w), (o, c, k, k), padding=1,
                          output_mask=(True, False, True))
    assert backward["flops"] == info["flops"] + n * o * h * w
    assert backward["output_shapes"] == ((n, c, h, w), None, (o,))


def test_explain_takes_array_keywords_as_shapes():
    info = fc.explain("max_pool2d_backward", (1, 2, 3, 3), (1, 2, 6, 6), kernel_size=2,
                       indices=(1, 2, 3, 3))
    assert info["output_shapes"] == ((1, 2, 6, 6),)


def test_explain_forced_algorithm_says_so():
    info = fc.explain("avg_pool2d", (1, 2, 6, 6), kernel_size=2, algo="reference")
    assert info["algo"] == "reference" and "forced" in info["reason"]


# --------------------------------------------------------------------------------------------
# The dispatcher, on a registry of its own: the reference and a stand-in that only serves
# unit-stride convolutions
# --------------------------------------------------------------------------------------------
@pytest.fixture
def unit_stride_algorithm(monkeypatch):
    from fastconv.reference import pool as reference_pool

    monkeypatch.setattr(registry, "ALGORITHMS", {})
    monkeypatch.setattr(registry, "AUTO_RULES", {})
    monkeypatch.setattr(registry, "epoch", registry.epoch + 1)  # plans made before are stale
    monkeypatch.setattr(dispatch, "_LOADED", {"cpu"})

    def why_not(op, p):
        return None if p.stride == (1, 1) else f"needs stride 1, got stride={p.stride}"

    registry.register(registry.Algorithm("reference", "cpu", "conv", reference_conv, "oracle"))
    registry.register(registry.Algorithm("reference", "cpu", "pool", reference_pool, "oracle"))
    registry.register(registry.Algorithm("unitstride", "cpu", "conv", reference_conv,
                                         "test stand-in (the reference kernels)", why_not=why_not))


def test_auto_prefers_a_registered_algorithm_that_can_serve(unit_stride_algorithm):
    assert fc.algorithms("conv_transpose2d") == ["reference", "unitstride"]
    assert fc.explain("conv2d", (1, 2, 5, 5), (3, 2, 3, 3))["algo"] == "unitstride"
    strided = fc.explain("conv2d", (1, 2, 5, 5), (3, 2, 3, 3), stride=2)
    assert strided["algo"] == "reference"
    assert strided["rejected"] == {"unitstride": "needs stride 1, got stride=(2, 2)"}


def test_forced_algorithm_that_cannot_serve_names_those_that_can(unit_stride_algorithm):
    x, w = np.ones((1, 2, 5, 5)), np.ones((3, 2, 3, 3))
    with pytest.raises(ValueError, match=r"algorithm algo='unitstride' cannot serve this call: needs "
                                         r"stride 1.*algorithms that can: \['reference'\]"):
        fc.conv2d(x, w, stride=2, algo="unitstride")
    np.testing.assert_array_equal(fc.conv2d(x, w, algo="unitstride"), fc.conv2d(x, w))


def test_default_index_width_follows_the_sizes(unit_stride_algorithm):
    small = fc.explain("conv2d", (1, 2, 5, 5), (3, 2, 3, 3), algo="unitstride")
    assert small["index_bits"] == 32
    # 2**31 elements only in the padded input: the padded copy counts too
    huge = fc.explain("conv2d", (1, 2, 32768, 32767), (1, 2, 1, 1), padding=1, algo="unitstride")
    assert huge["index_bits"] == 64


def test_families_have_their_own_algorithms(unit_stride_algorithm):
    assert fc.algorithms("max_pool2d") == ["reference"]


def test_auto_rule_of_a_backend_is_used(unit_stride_algorithm):
    registry.set_auto_rule("cpu", lambda op, p, candidates: ("reference", "because"))
    info = fc.explain("conv2d", (1, 2, 5, 5), (3, 2, 3, 3))
    assert (info["algo"], info["reason"]) == ("reference", "because")


# --------------------------------------------------------------------------------------------
# The CPU backend's auto rule
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shapes, kwargs, expected", [
    (((8, 128, 56, 56), (128, 1, 3, 3)), dict(padding=1, groups=128), "depthwise"),
    (((8, 64, 28, 28), (128, 1, 3, 3)), dict(padding=1, groups=64), "depthwise"),  # multiplier 2
    (((8, 64, 56, 56), (256, 64, 1, 1)), {}, "pointwise"),
    (((8, 128, 28, 28), (32, 128, 1, 1)), {}, "pointwise"),  # 32 outputs: under 64 lanes
    (((8, 128, 29, 29), (256, 128, 1, 1)), {}, "pointwise"),  # past 28x28
    (((8, 64, 56, 56), (64, 64, 1, 1)), dict(padding=1), "blocked"),  # padded 1x1: no pointwise
    (((8, 64, 56, 56), (64, 64, 3, 3)), dict(padding=1), "blocked"),
    (((8, 3, 224, 224), (64, 3, 7, 7)), dict(padding=3, stride=2), "blocked"),  # the stem
    (((8, 512, 7, 7), (512, 512, 3, 3)), dict(padding=1), "blocked"),
    (((8, 256, 28, 28), (256, 128, 3, 3)), dict(padding=1, groups=2), "blocked"),  # 128 per group
    (((8, 64, 28, 28), (32, 64, 3, 3)), dict(padding=1), "direct"),  # 32: direct's pixel tiles
    (((8, 64, 28, 28), (32, 64, 3, 3)), dict(padding=1, stride=2), "blocked"),  # not at stride 2
    (((8, 256, 28, 28), (256, 8, 3, 3)), dict(padding=1, groups=32), "direct"),  # 8 per group
    (((8, 256, 28, 28), (256, 4, 3, 3)), dict(padding=1, groups=64), "direct"),  # 4 per group
    (((8, 8, 112, 112), (8, 8, 3, 3)), dict(padding=1), "direct"),  # 8 outputs, dense
    (((8, 512, 28, 28), (512, 8, 3, 3)), dict(padding=1, stride=2, groups=64), "im2col"),
    (((8, 256, 28, 28), (256, 16, 3, 3)), dict(padding=1, groups=16), "direct"),
    (((8, 256, 28, 28), (256, 2, 3, 3)), dict(padding=1, groups=128), "direct"),  # 2 per group
    (((8, 256, 28, 28), (128, 4, 3, 3)), dict(padding=1, groups=64), "direct"),
    (((8, 4, 56, 56), (4, 4, 7, 7)), dict(padding=3), "direct"),  # 4 outputs, dense
    (((8, 16, 112, 112), (16, 16, 3, 3)), dict(padding=1), "direct"),
    (((8, 16, 112, 112), (16, 16, 3, 3)), dict(padding=1, stride=2), "im2col"),
])
def test_cpu_auto_picks_the_specialised_kernels(shapes, kwargs, expected):
    info = fc.explain("conv2d", *shapes, **kwargs)
    assert info["algo"] == expected, info["reason"]


@pytest.mark.parametrize("host, expected", [("znver5", "blocked"), ("znver4", "pointwise"),
                                            ("sapphirerapids", "pointwise")])
@pytest.mark.parametrize("shapes, kwargs", [
    (((8, 256, 56, 56), (128, 256, 1, 1)), dict(stride=2)),  # 28x28 out, 128 channels
    (((8, 128, 28, 28), (256, 128, 1, 1)), {}),  # MobileNet's, 28x28
])
def test_cpu_auto_takes_blocked_for_small_1x1_planes_only_where_measured_faster(
        shapes, kwargs, host, expected, monkeypatch):
    from fastconv import cpu

    monkeypatch.setattr(cpu, "host_cpu", lambda: host)
    info = fc.explain("conv2d", *shapes, **kwargs)
    assert info["algo"] == expected, info["reason"]
    gy = info["output_shapes"][0]
    assert fc.explain("conv2d_backward", gy, *shapes, **kwargs,
                      output_mask=(False, True, False))["algo"] == "blocked"  # everywhere


@pytest.mark.parametrize("mask, expected", [
    ((True, False, False), "pointwise"), ((False, True, False), "blocked"),
    ((True, True, False), "pointwise"), ((True, True, True), "pointwise"),
])
def test_cpu_auto_gives_blocked_the_weight_gradient_of_a_wide_1x1(mask, expected):
    """resnet50's 1x1 64->256 at 56x56: pointwise's per-image GEMMs win the forward-like
    kernels there, blocked's weight tiles its weight gradient alone."""
    info = fc.explain("conv2d_backward", (8, 256, 56, 56), (8, 64, 56, 56), (256, 64, 1, 1),
                      output_mask=mask)
    assert info["algo"] == expected, info["reason"]


@pytest.mark.parametrize("groups, mask, expected", [
    (32, (True, False, False), "direct"), (32, (False, True, False), "direct"),
    (32, (True, True, True), "direct"), (16, (True, False, False), "direct"),
    (16, (False, True, False), "im2col"), (16, (True, True, True), "im2col"),
])
def test_cpu_auto_rule_is_per_set_of_directions(groups, mask, expected):
    """ResNeXt's grouped layer: at 8 outputs per group direct's pixel tiles win every
    direction; at 16 its input gradient still, but im2col's GEMMs the weight gradient and a
    backward computing both (fastconv.cpu.DIRECT_UP_TO)."""
    info = fc.explain("conv2d_backward", (8, 256, 28, 28), (8, 256, 28, 28),
                      (256, 256 // groups, 3, 3), padding=1, groups=groups, output_mask=mask)
    assert info["algo"] == expected, info["reason"]


@pytest.mark.parametrize("mask, expected", [
    ((True, False, False), "im2col"), ((False, True, False), "blocked"),
    ((True, True, False), "im2col"), ((True, True, True), "im2col"),
])
def test_cpu_auto_counts_the_lanes_of_every_kernel_a_call_runs(mask, expected):
    """The stem (3 input channels): its weight gradient fills a tile's 64 lanes, its input
    gradient 3 of them, so blocked serves the weight gradient alone and not a backward that
    computes both (fastconv.cpu.blocked.tiled_kernels)."""
    info = fc.explain("conv2d_backward", (8, 64, 112, 112), (8, 3, 224, 224), (64, 3, 7, 7),
                      padding=3, stride=2, output_mask=mask)
    assert info["algo"] == expected, info["reason"]


def test_every_cpu_algorithm_is_listed():
    assert fc.algorithms("conv2d") == ["depthwise", "pointwise", "blocked", "im2col", "direct",
                                       "reference"]
    for op in ("max_pool2d", "avg_pool2d_backward", "batch_norm", "batch_norm_backward"):
        assert fc.algorithms(op) == ["direct", "reference"]


# --------------------------------------------------------------------------------------------
# Promises every op keeps
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("op, algo, i", SERVED, ids=SERVED_IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_results_are_numpy_arrays_of_the_input_dtype(op, algo, i, dtype):
    args, kwargs = ALL_CASES[op][i]
    args = [None if a is None else a.astype(dtype) for a in args]
    for r in as_tuple(call(op, args, kwargs, algo=algo)):
        assert r is None or type(r) is np.ndarray
        assert r is None or r.dtype in (np.dtype(dtype), np.int64)


@pytest.mark.parametrize("op, algo, i", SERVED, ids=SERVED_IDS)
def test_inputs_are_not_modified_and_may_be_read_only(op, algo, i):
    args, kwargs = ALL_CASES[op][i]
    frozen = []
    for j, a in enumerate(args):
        if a is None:
            frozen.append(None)
            continue
        a = a.copy()
        # batch_norm(training=True) updates its running statistics in place, as documented
        if not (op == "batch_norm" and kwargs.get("training") and j in (1, 2)):
            a.flags.writeable = False
        frozen.append(a)
    call(op, frozen, kwargs, algo=algo)
    for a, original in zip(frozen, args):
        if a is not None and not a.flags.writeable:
            np.testing.assert_array_equal(a, original)


@pytest.mark.parametrize("op, algo, i", SERVED, ids=SERVED_IDS)
def test_writeable_inputs_stay_writeable(op, algo, i):
    """The CPU kernels take read-only views of the inputs (_calls.prepare); the caller's
    arrays keep their flags."""
    args, kwargs = ALL_CASES[op][i]
    args = [None if a is None else a.copy() for a in args]
    call(op, args, kwargs, algo=algo)
    assert all(a.flags.writeable for a in args if a is not None)


def test_batch_norm_updates_running_stats_in_place_only_when_training():
    (x, rm, rv, w, b), _ = CASES["batch_norm"]
    rm, rv = rm.copy(), rv.copy()
    ids = id(rm), id(rv)
    before = rm.copy(), rv.copy()
    fc.batch_norm(x, rm, rv, w, b, training=False)
    np.testing.assert_array_equal(rm, before[0])
    fc.batch_norm(x, rm, rv, w, b, training=True, momentum=0.25)
    assert (id(rm), id(rv)) == ids
    m = x.size // x.shape[1]
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    np.testing.assert_allclose(rm, 0.75 * before[0] + 0.25 * mean, rtol=1e-14)
    np.testing.assert_allclose(rv, 0.75 * before[1] + 0.25 * var * m / (m - 1), rtol=1e-14)
    # a strided view of a larger buffer is updated in place too
    buf = np.zeros((3, 2))
    buf[:, 0], buf[:, 1] = before[0], before[1]
    fc.batch_norm(x, buf[:, 0], buf[:, 1], w, b, training=True, momentum=0.25)
    np.testing.assert_allclose(buf[:, 0], rm, rtol=1e-14)


@pytest.mark.parametrize("op, algo, i", SERVED, ids=SERVED_IDS)
def test_same_call_twice_is_bitwise_identical(op, algo, i):
    args, kwargs = ALL_CASES[op][i]
    for dtype in (np.float32, np.float64):
        typed = [None if a is None else a.astype(dtype) for a in args]
        first = as_tuple(call(op, [None if a is None else a.copy() for a in typed], kwargs, algo=algo))
        second = as_tuple(call(op, [None if a is None else a.copy() for a in typed], kwargs, algo=algo))
        for a, b in zip(first, second):
            assert (a is None and b is None) or a.tobytes() == b.tobytes()


def _strided_variants(a):
    """The same values behind different memory layouts."""
    yield "fortran", np.asfortranarray(a)
    padded = np.zeros(a.shape + (2,), a.dtype)
    padded[..., 0] = a
    yield "strided-view", padded[..., 0]
    flipped = np.ascontiguousarray(a[..., ::-1])
    yield "negative-strides", flipped[..., ::-1]
    if a.ndim >= 2:
        swapped = np.ascontiguousarray(np.swapaxes(a, -1, -2))
        yield "transposed-view", np.swapaxes(swapped, -1, -2)


@pytest.mark.parametrize("op, algo, i", SERVED, ids=SERVED_IDS)
def test_any_memory_layout_gives_the_same_result(op, algo, i):
    args, kwargs = ALL_CASES[op][i]
    expected = as_tuple(call(op, [None if a is None else a.copy() for a in args], kwargs, algo=algo))
    for j, a in enumerate(args):
        if a is None or (op == "batch_norm" and j in (1, 2)):
            continue
        for name, variant in _strided_variants(a):
            assert np.array_equal(variant, a)
            varied = [None if b is None else b.copy() for b in args]
            varied[j] = variant
            for r, e in zip(as_tuple(call(op, varied, kwargs, algo=algo)), expected):
                assert (r is None and e is None) or r.tobytes() == e.tobytes(), (j, name)


UNBATCHED_OPS = [op for op in OPS if not op.startswith("batch_norm")]


@pytest.mark.parametrize("op", UNBATCHED_OPS)
def test_unbatched_input_matches_a_batch_of_one(op):
    args, kwargs = CASES[op]
    batch_args = 2 if op.endswith("_backward") else 1  # (grad_y, x) or x carry the batch
    batched = [a[:1] if i < batch_args else a for i, a in enumerate(args)]
    unbatched = [a[0] if i < batch_args else a for i, a in enumerate(batched)]
    expected = as_tuple(call(op, batched, kwargs))
    got = as_tuple(call(op, unbatched, kwargs))
    for g, e in zip(got, expected):
        if e is None:
            continue
        if g.shape == e.shape[1:]:  # batched outputs lose their batch dimension
            g = g[None]
        np.testing.assert_array_equal(g, e)


@pytest.mark.parametrize("op, algo, i", SERVED, ids=SERVED_IDS)
def test_empty_batch_works_as_in_torch(op, algo, i):
    pytest.importorskip("torch")
    args, kwargs = ALL_CASES[op][i]
    batched_args = 2 if op.endswith("_backward") else 1
    empty = [a[:0] if j < batched_args else a for j, a in enumerate(args)]
    assert_matches(op, empty, kwargs, fastconv_runner(algo), torch_op, np.float64)


def test_max_pool_backward_with_indices_equals_without():
    (gy, x), kwargs = CASES["max_pool2d_backward"]
    _, indices = fc.max_pool2d(x, **kwargs, return_indices=True)
    np.testing.assert_array_equal(fc.max_pool2d_backward(gy, x, **kwargs, indices=indices),
                                  fc.max_pool2d_backward(gy, x, **kwargs))


def test_max_pool_ties_go_to_the_first_element_and_nan_propagates():
    torch = pytest.importorskip("torch")
    x = np.array([[[[3.0, 3.0, 1.0, 3.0],
                    [1.0, np.nan, 2.0, np.nan],
                    [-np.inf, -np.inf, 5.0, 5.0]]]])
    y, idx = fc.max_pool2d(x, (1, 4), return_indices=True)
    ty, tidx = torch.nn.functional.max_pool2d(torch.from_numpy(x), (1, 4), return_indices=True)
    np.testing.assert_array_equal(idx, tidx.numpy())
    assert idx[0, 0, :, 0].tolist() == [0, 7, 10]
    assert error(y, ty.numpy()) == 0 and np.isnan(y[0, 0, 1, 0])
    # a window of -inf with padding still reports an input element, never the padding
    y, idx = fc.max_pool2d(np.full((1, 1, 2, 2), -np.inf), 2, stride=1, padding=1,
                           return_indices=True)
    ty, tidx = torch.nn.functional.max_pool2d(torch.full((1, 1, 2, 2), -np.inf, dtype=torch.float64),
                                              2, stride=1, padding=1, return_indices=True)
    np.testing.assert_array_equal(idx, tidx.numpy())


def test_conv_nan_spreads_only_to_the_outputs_it_touches():
    x = np.zeros((1, 1, 7, 7))
    x[0, 0, 0, 0] = np.nan
    y = fc.conv2d(x, np.ones((1, 1, 3, 3)))
    assert np.isnan(y[0, 0, 0, 0]) and np.isnan(y).sum() == 1


def test_reference_runs_through_the_public_api_and_directly_alike():
    (x, w, b), kwargs = CASES["conv2d"]
    from fastconv import conv
    p = conv.conv2d_params(x.shape, w.shape, b.shape, **kwargs)
    np.testing.assert_array_equal(reference_conv.forward(x, w, b, p),
                                  reference_op("conv2d", x, w, b, **kwargs))


@pytest.mark.parametrize("algo", fc.algorithms("conv2d"))
def test_inf_times_zero_is_nan_as_in_torch_and_nothing_warns(algo, recwarn):
    torch = pytest.importorskip("torch")
    x = np.ones((1, 2, 5, 5))
    x[0, 0, 2, 2] = np.inf
    w = np.ones((4, 2, 1, 1)) if algo == "pointwise" else np.ones((4, 2, 3, 3))
    if algo == "depthwise":
        w = np.ones((4, 1, 3, 3))
    w[:, 0, w.shape[2] // 2, w.shape[3] // 2] = 0.0  # the inf meets a zero weight: NaN
    groups = 2 if algo == "depthwise" else 1
    y = fc.conv2d(x, w, groups=groups, algo=algo)
    t = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), groups=groups).numpy()
    assert np.isnan(y).any()
    np.testing.assert_array_equal(np.isnan(y), np.isnan(t))
    np.testing.assert_array_equal(np.isinf(y), np.isinf(t))
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_empty_batch_of_images_larger_than_a_tile():
    """An empty batch whose one image needs several im2col tiles (64 channels of 32x32 at 3x3:
    K * Wo too wide for one 2 MiB tile): no work, no division by the batch."""
    pytest.importorskip("torch")
    x, w = np.zeros((0, 64, 32, 32)), np.ones((64, 64, 3, 3))
    args, kwargs = (np.zeros((0, 64, 32, 32)), x, w), dict(padding=1)
    for op, a in (("conv2d", (x, w)), ("conv2d_backward", args)):
        assert_matches(op, a, kwargs, fastconv_runner("im2col"), torch_op, np.float64)

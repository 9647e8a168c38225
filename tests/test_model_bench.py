"""The model zoo and ``python -m fastconv bench --models``: the networks build, train and
convert; the bench times both contenders on the same model and reports table, JSON, plot and
the op-by-op profile. Nothing here asserts a time."""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fastconv.torch  # noqa: E402
from fastconv import cli  # noqa: E402
from fastconv.bench import model_suite, models  # noqa: E402

SWAPPED = {"lenet-digits": 5, "resnet18-cifar": 41, "mobilenetv2-64": 105, "unet-64": 33}


def test_the_zoo_has_the_models_the_issue_asks_for():
    assert set(models.BY_NAME) == {"lenet-digits", "resnet18-cifar", "mobilenetv2-64",
                                   "unet-64"}
    for model in models.MODELS:
        assert model.input_shape[0] in (16, 32)
    assert models.BY_NAME["mobilenetv2-64"].input_shape[2:] == (64, 64)
    assert models.BY_NAME["resnet18-cifar"].input_shape[2:] == (32, 32)


@pytest.mark.parametrize("model", models.MODELS, ids=lambda m: m.name)
def test_every_model_converts_completely_and_computes_what_torch_computes(model):
    """convert swaps every conv, pool and batch-norm module; the converted copy's outputs,
    loss gradients and one SGD step match plain PyTorch's from the same weights."""
    pair = model_suite.Pair(model)
    assert len(pair.conversion.swapped) == SWAPPED[model.name] and not pair.conversion.kept
    kinds = {cls.__name__ for _, cls, _ in pair.conversion.swapped}
    if model.name == "unet-64":
        assert "ConvTranspose2d" in kinds and "MaxPool2d" in kinds
    x, y = pair.x[:2], pair.y[:2]
    losses = {}
    for name, net in pair.nets.items():
        net.train()
        out = net(x)
        n, classes = out.shape[:2]
        assert n == 2 and classes == model.classes
        loss = torch.nn.functional.cross_entropy(out, y)
        loss.backward()
        losses[name] = (loss.item(), [p.grad.clone() for p in net.parameters()])
    (lf, gf), (lt, gt) = losses["fastconv"], losses["torch"]
    assert lf == pytest.approx(lt, rel=1e-4)
    # normwise per parameter; a floor for the gradients that are zero in exact arithmetic (a
    # conv bias right before batch norm)
    floor = 1e-6 * max(b.norm().item() for b in gt)
    for a, b in zip(gf, gt):
        assert (a - b).norm().item() <= 1e-3 * b.norm().item() + floor


def test_profile_families():
    assert model_suite.family("fastconv::conv2d_backward") == ("convolution", "backward")
    assert model_suite.family("aten::mkldnn_convolution") == ("convolution", "forward")
    assert model_suite.family("GeneratedBackwardFor_fastconv_batch_norm_default") == \
        ("batch norm", "forward")
    assert model_suite.family("aten::max_pool2d_with_indices_backward") == ("pooling", "backward")
    assert model_suite.family("aten::native_batch_norm") == ("batch norm", "forward")
    assert model_suite.family("Optimizer.step#SGD.step") == ("other", "forward")


def test_bench_models_prints_the_table_profile_json_and_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out_json, out_png = tmp_path / "models.json", tmp_path / "models.png"
    code = cli.main(["bench", "--models", "lenet-*", "--repeat", "2", "--min-time", "0",
                     "--idle-gap", "0", "--profile", "--json", str(out_json),
                     "--plot", str(out_png)])
    out = capsys.readouterr().out
    assert code == 0
    assert "fastconv.torch.convert against plain PyTorch" in out and "machine: " in out
    assert "lenet-digits" in out and "train" in out and "infer" in out
    assert "geometric mean" in out and "profile lenet-digits train" in out
    assert "convolution backward" in out
    data = json.loads(out_json.read_text())
    rows = data["rows"]
    assert [(r["model"], r["mode"]) for r in rows] == [("lenet-digits", "train"),
                                                       ("lenet-digits", "infer")]
    for row in rows:
        assert row["fastconv"]["runs"] >= 2 and row["torch"]["runs"] >= 2
        assert row["ratio"] == pytest.approx(row["fastconv"]["median_ms"] /
                                             row["torch"]["median_ms"])
        assert row["swapped"] == 5 and row["parameters"] > 0
        assert set(row["profile"]) == {"fastconv", "torch"}
        line = next(x for x in out.splitlines() if f"{row['ratio']:.2f}" in x
                    and row["mode"] in x)
        assert f"{row['fastconv']['median_ms']:.2f}" in line
    assert data["meta"]["idle_gap_s"] == 0 and data["meta"]["threads"] >= 1
    assert set(data["summary"]) == {"train", "infer"}
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_models_modes_selects_what_is_timed(capsys):
    code = cli.main(["bench", "--models", "lenet-digits", "--modes", "infer", "--repeat", "1",
                     "--min-time", "0", "--idle-gap", "0"])
    out = capsys.readouterr().out
    assert code == 0 and "infer" in out and " train " not in out


@pytest.mark.parametrize("argv, message", [
    (["--models", "nope"], "'nope' matches no model"),
    (["--models", "--threads", "0"], "threads must be a positive int"),
    (["--models", "--idle-gap", "-1"], "idle-gap must be >= 0"),
    (["--profile"], "--profile needs --models"),
    (["--modes", "train"], "--modes needs --models"),
])
def test_bench_models_rejects_bad_options_before_timing(capsys, argv, message):
    code = cli.main(["bench", *argv])
    out = capsys.readouterr()
    assert code == 2 and message in out.err and "ms" not in out.out


def test_bench_overhead_prints_every_op_both_ways_and_writes_json(tmp_path, capsys):
    import json

    from fastconv import cli
    from fastconv.bench import overhead

    path = tmp_path / "overhead.json"
    code = cli.main(["bench", "--overhead", "--repeat", "2", "--min-time", "0", "--idle-gap",
                     "0", "--json", str(path)])
    out = capsys.readouterr().out
    assert code == 0
    data = json.loads(path.read_text())
    ops = {row["op"] for row in data["rows"] if row["way"] == "numpy"}
    assert ops == {op for op in fastconv.registry.OPS}  # every op, forward and backward
    for way in overhead.WAYS:
        rows = [r for r in data["rows"] if r["way"] == way]
        assert rows and all(r["fastconv_us"] > 0 and r["torch_us"] > 0 for r in rows)
        assert all(r["ratio"] == pytest.approx(r["fastconv_us"] / r["torch_us"]) for r in rows)
        assert f"{way}: " in out
    assert data["meta"]["targets"] == overhead.TARGETS

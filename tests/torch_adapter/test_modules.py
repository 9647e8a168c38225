"""fastconv.torch.nn and convert(): each module against its torch twin (same parameters,
buffers and state_dict, same outputs and gradients), and a ResNet-18-style model that gives the
same outputs, gradients and running statistics before and after convert."""
import copy

import numpy as np
import pytest

from fastconv.testing import error, tolerance

torch = pytest.importorskip("torch")
ft = pytest.importorskip("fastconv.torch")
nn = torch.nn

TOL32 = tolerance(np.float32)

MODULES = [
    (ft.nn.Conv2d, nn.Conv2d, (4, 6, 3), dict(stride=2, padding=1, dilation=1, groups=2), 4),
    (ft.nn.Conv2d, nn.Conv2d, (4, 8, (3, 1)), dict(padding="same", bias=False), 4),
    (ft.nn.Conv2d, nn.Conv2d, (4, 4, 3), dict(padding=2, padding_mode="reflect"), 4),
    (ft.nn.Conv1d, nn.Conv1d, (4, 6, 5), dict(stride=2, padding=2, padding_mode="circular"), 3),
    (ft.nn.ConvTranspose2d, nn.ConvTranspose2d, (4, 6, 3),
     dict(stride=2, padding=1, output_padding=1, groups=2), 4),
    (ft.nn.MaxPool2d, nn.MaxPool2d, (3,), dict(stride=2, padding=1, ceil_mode=True), 4),
    (ft.nn.AvgPool2d, nn.AvgPool2d, (3,), dict(stride=2, padding=1, count_include_pad=False), 4),
    (ft.nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool2d, ((3, None),), {}, 4),
    (ft.nn.BatchNorm2d, nn.BatchNorm2d, (4,), dict(momentum=None), 4),
    (ft.nn.BatchNorm2d, nn.BatchNorm2d, (4,), dict(affine=False, track_running_stats=False), 4),
]


def _input(rank, seed=0):
    shape = (3, 4, 9, 10) if rank == 4 else (3, 4, 17)
    return torch.from_numpy(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


@pytest.mark.parametrize("ours, theirs, args, kwargs, rank", MODULES,
                         ids=[f"{m[0].__name__}-{i}" for i, m in enumerate(MODULES)])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_module_matches_torch(ours, theirs, args, kwargs, rank, training):
    torch.manual_seed(0)
    reference = theirs(*args, **kwargs)
    torch.manual_seed(0)
    module = ours(*args, **kwargs)
    assert isinstance(module, theirs)
    assert module.state_dict().keys() == reference.state_dict().keys()
    for (name, a), b in zip(module.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(a, b), name
    module.train(training)
    reference.train(training)
    for step in range(2):  # twice: running statistics and num_batches_tracked move alike
        x = _input(rank, step).requires_grad_()
        xr = x.detach().clone().requires_grad_()
        y, yr = module(x), reference(xr)
        assert y.shape == yr.shape
        assert error(y.detach().numpy(), yr.detach().numpy()) <= TOL32
        projection = torch.randn(y.shape, generator=torch.Generator().manual_seed(step))
        (y * projection).sum().backward()  # a loss with no cancellation in its gradient
        (yr * projection).sum().backward()
        assert error(x.grad.numpy(), xr.grad.numpy()) <= TOL32
        for (name, p), q in zip(module.named_parameters(), reference.parameters()):
            assert error(p.grad.numpy(), q.grad.numpy()) <= TOL32, name
        for (name, a), b in zip(module.state_dict().items(), reference.state_dict().values()):
            assert error(a.numpy(), b.numpy()) <= TOL32, name


def test_algo_is_a_module_setting():
    conv = ft.nn.Conv2d(4, 8, 3, algo="direct")
    assert conv.algo == "direct" and "algo='direct'" in repr(conv)
    assert ft.nn.Conv2d(4, 8, 3).algo == "auto"
    with pytest.raises(ValueError, match="pointwise needs a 1x1 kernel"):
        ft.nn.Conv2d(4, 8, 3, algo="pointwise")(torch.randn(1, 4, 6, 6))


# --- a ResNet-18-style model (torchvision's layout, 16 to 128 channels wide) -------------------
class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + identity)


class ResNet18(nn.Module):
    def __init__(self, width=16, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        layers, cin = [], width
        for i, cout in enumerate((width, 2 * width, 4 * width, 8 * width)):
            stride = 1 if i == 0 else 2
            layers.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


def _step(model, x, target):
    model.zero_grad()
    out = model(x)
    torch.nn.functional.cross_entropy(out, target).backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_resnet18_same_outputs_and_gradients_after_convert(training):
    torch.manual_seed(0)
    model = ResNet18()
    # 64x64 inputs leave the last stage 2x2, so its batch norms average 32 values per channel;
    # at 32x32 they average 4 (in training mode), and float32 rounding differences of 1e-7 grow
    # to 2e-5 through them
    x, target = torch.randn(8, 3, 64, 64), torch.randint(0, 10, (8,))
    reference = copy.deepcopy(model)
    parameters = {n: p for n, p in model.named_parameters()}
    done = ft.convert(model)
    kinds = {new for _, _, new in done.swapped}
    assert kinds == {ft.nn.Conv2d, ft.nn.BatchNorm2d, ft.nn.MaxPool2d, ft.nn.AdaptiveAvgPool2d}
    assert len(done.swapped) == 20 + 20 + 1 + 1  # 20 convs, 20 batch norms, 2 pools
    assert all(p is parameters[n] for n, p in model.named_parameters())  # no copies
    assert isinstance(model.fc, nn.Linear) and type(model.fc) is nn.Linear
    model.train(training)
    reference.train(training)
    for _ in range(2):
        out, grads = _step(model, x, target)
        out_ref, grads_ref = _step(reference, x, target)
        assert error(out.numpy(), out_ref.numpy()) <= TOL32
        for name, g in grads.items():
            assert error(g.numpy(), grads_ref[name].numpy()) <= TOL32, name
        for (name, a), b in zip(model.state_dict().items(), reference.state_dict().values()):
            assert error(a.numpy(), b.numpy()) <= TOL32, name


def test_convert_reports_and_leaves_subclasses_alone():
    class MyConv(nn.Conv2d):
        pass

    calls = []
    model = nn.Sequential(nn.Conv2d(3, 4, 3), MyConv(4, 4, 1), nn.ReLU(), nn.BatchNorm2d(4))
    model[0].register_forward_hook(lambda *args: calls.append(1))
    done = ft.convert(model, algo="direct")
    assert [(n, old, new) for n, old, new in done.swapped] == [
        ("0", nn.Conv2d, ft.nn.Conv2d), ("3", nn.BatchNorm2d, ft.nn.BatchNorm2d)]
    assert [(n, cls) for n, cls, _ in done.kept] == [("1", MyConv)]
    assert type(model[1]) is MyConv and model[0].algo == "direct"
    text = str(done)
    assert "2 module(s) swapped, 1 kept" in text and "MyConv" in text
    model(torch.randn(2, 3, 8, 8))
    assert calls == [1]  # hooks survive
    assert ft.convert(model).swapped == []  # converting twice swaps nothing more
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        ft.convert("resnet")


def test_state_dict_round_trips_between_torch_and_fastconv_models():
    torch.manual_seed(0)
    model = ResNet18()
    converted = copy.deepcopy(model)
    ft.convert(converted)
    plain = ResNet18()
    plain.load_state_dict(converted.state_dict())
    for (name, a), b in zip(plain.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name

"""End to end: the digits example learns with fastconv's modules (a short run), and
two-process data-parallel training (torch.distributed, gloo, loopback) of a converted model gets
the gradients one process gets on the whole batch."""
import importlib.util
import os
import socket
from pathlib import Path

import numpy as np
import pytest

from fastconv.testing import error, tolerance

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")
ft = pytest.importorskip("fastconv.torch")

EXAMPLE = Path(__file__).parents[2] / "examples" / "train_digits.py"


def _example():
    spec = importlib.util.spec_from_file_location("train_digits", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_digits_example_learns_with_fastconv_modules():
    digits = _example()
    data = digits.load(seed=0)
    assert [len(a) for a in data] == [1437, 1437, 360, 360]
    ours = digits.train(ft.nn, data, epochs=5, seed=0)
    theirs = digits.train(torch.nn, data, epochs=5, seed=0)
    assert ours.losses[-1] < 0.3 * ours.losses[0]
    assert ours.accuracy >= 0.8  # 97-98% after the example's 30 epochs
    # the same initial weights and batches: the two runs follow each other (float32 rounding
    # differences between the libraries grow slowly over the steps)
    assert np.allclose(ours.losses, theirs.losses, rtol=0.01)
    assert all(isinstance(m, torch.nn.Module) for m in ours.model.modules())
    assert any(isinstance(m, ft.nn.Conv2d) for m in ours.model.modules())


def _model():
    torch.manual_seed(0)
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1, groups=2), nn.ReLU(),
                         nn.AvgPool2d(2), nn.Conv2d(16, 16, 1), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(16, 5))


def _batches(steps=3, size=8):
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(size, 3, 12, 12, generator=generator),
             torch.randint(0, 5, (size,), generator=generator)) for _ in range(steps)]


def _worker(rank, world, port, out):
    """One data-parallel process: the converted model under DistributedDataParallel, its half
    of each batch; rank 0 saves every step's gradients and the final parameters."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        model = _model()
        ft.convert(model)
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        optimiser = torch.optim.SGD(ddp.parameters(), lr=0.1)
        grads = []
        for x, y in _batches():
            half = slice(rank * len(x) // world, (rank + 1) * len(x) // world)
            optimiser.zero_grad()
            torch.nn.functional.cross_entropy(ddp(x[half]), y[half]).backward()
            grads.append([p.grad.clone() for p in model.parameters()])
            optimiser.step()
        if rank == 0:
            torch.save({"grads": grads, "params": [p.detach() for p in model.parameters()]}, out)
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_data_parallel_training_matches_one_process(tmp_path, monkeypatch):
    out = tmp_path / "rank0.pt"
    # the spawned processes import this file by its module name: put its folder on their path
    here = str(Path(__file__).parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [here, *filter(None, [os.environ.get("PYTHONPATH")])]))
    monkeypatch.syspath_prepend(here)
    import test_training as this

    torch.multiprocessing.spawn(this._worker, args=(2, _free_port(), str(out)), nprocs=2,
                                join=True)
    saved = torch.load(out)

    model = _model()
    ft.convert(model)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    tol = tolerance(np.float32)
    for step, (x, y) in enumerate(_batches()):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        for p, g in zip(model.parameters(), saved["grads"][step]):
            assert error(g.numpy(), p.grad.numpy()) <= tol, step
        optimiser.step()
    for p, q in zip(model.parameters(), saved["params"]):
        assert error(q.numpy(), p.detach().numpy()) <= tol

"""Train a small LeNet-style CNN on scikit-learn's bundled 8x8 digits twice: with fastconv's
modules (``fastconv.torch.nn``) and with PyTorch's own, from the same initial weights, on the
same batches; print test accuracy and seconds per epoch for both.

    python examples/train_digits.py [--epochs 30] [--batch-size 32] [--seed 0]

Needs ``pip install -e ".[examples]"`` (PyTorch and scikit-learn). The data: all 1797 images,
a fixed 80/20 train/test split (1437/360) drawn with the seed, pixels scaled to [0, 1] and
standardised with the training set's mean and standard deviation.
"""
from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

import numpy as np
import torch

import fastconv.torch
from fastconv.bench.models import LeNet  # the digits model of the bench's model zoo


def load(seed: int):
    """(x_train, y_train, x_test, y_test): (N, 1, 8, 8) float32 images and int64 labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float32)[:, None] / 16.0
    order = np.random.default_rng(seed).permutation(len(images))
    cut = int(0.8 * len(images))
    train, test = order[:cut], order[cut:]
    mean, std = images[train].mean(), images[train].std()
    images = (images - mean) / std
    labels = digits.target.astype(np.int64)
    return tuple(torch.from_numpy(a) for a in (images[train], labels[train], images[test],
                                               labels[test]))


def accuracy(model, x, y) -> float:
    model.eval()
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def train(nn, data, epochs: int = 30, batch_size: int = 32, seed: int = 0, lr: float = 0.01):
    """Train LeNet(nn) with Adam, the learning rate annealed from lr to 0 along a cosine over
    the epochs; returns accuracy (test), seconds_per_epoch (median of the
    epochs), losses (mean training loss per epoch) and the model."""
    x_train, y_train, x_test, y_test = data
    torch.manual_seed(seed)  # the same initial weights for both runs
    model = LeNet(nn)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, epochs)
    batches = torch.Generator().manual_seed(seed)  # ... and the same batches
    seconds, losses = [], []
    for _ in range(epochs):
        model.train()
        start, total = time.perf_counter(), 0.0
        for index in torch.randperm(len(x_train), generator=batches).split(batch_size):
            optimiser.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x_train[index]), y_train[index])
            loss.backward()
            optimiser.step()
            total += loss.item() * len(index)
        schedule.step()
        seconds.append(time.perf_counter() - start)
        losses.append(total / len(x_train))
    return SimpleNamespace(accuracy=accuracy(model, x_test, y_test),
                           seconds_per_epoch=float(np.median(seconds)), losses=losses,
                           model=model)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data = load(args.seed)
    print(f"digits: {len(data[0])} training and {len(data[2])} test images, 8x8; "
          f"{args.epochs} epochs, batch {args.batch_size}, seed {args.seed}, "
          f"{torch.get_num_threads()} threads")
    results = {}
    for name, nn in (("fastconv", fastconv.torch.nn), ("torch", torch.nn)):
        result = train(nn, data, args.epochs, args.batch_size, args.seed)
        results[name] = result
        print(f"{name:9} test accuracy {100 * result.accuracy:5.1f}%   "
              f"{1000 * result.seconds_per_epoch:7.1f} ms per epoch (median)   "
              f"final training loss {result.losses[-1]:.4f}")
    return results


if __name__ == "__main__":
    main()

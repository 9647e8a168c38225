"""Train a small LeNet-style CNN on scikit-learn's bundled 8x8 digits twice: with fastconv's
modules (``fastconv.torch.nn``) and with PyTorch's own, from the same initial weights, on the
same batches; print test accuracy and seconds per epoch for both.

    python examples/train_digits.py [--epochs 30] [--batch-size 32] [--seed 0]

Needs ``pip install -e ".[examples]"`` (PyTorch and scikit-learn). The data: all 1797 images,
a fixed 80/20 train/test split (1437/360) drawn with the seed, pixels scaled to [0, 1] and
standardised with the training set's mean and standard deviation. The two runs take turns
epoch by epoch (who goes first alternating, after an idle gap), so that a slow spell of the
machine falls on both alike; each one's time is the median of its epochs.
"""
from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

import numpy as np
import torch

import fastconv.torch
from fastconv.bench.models import LeNet  # the digits model of the bench's model zoo
from fastconv.bench.timing import IDLE_GAP_S  # the bench's pause between contenders


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


class Run:
    """One library's training run: LeNet(nn) with Adam, the learning rate annealed from lr to 0
    along a cosine over the epochs; the same initial weights and the same batches for every
    run with the same seed."""

    def __init__(self, nn, data, epochs: int = 30, batch_size: int = 32, seed: int = 0,
                 lr: float = 0.01):
        self.data, self.batch_size = data, batch_size
        torch.manual_seed(seed)  # the same initial weights for both runs
        self.model = LeNet(nn)
        self.optimiser = torch.optim.Adam(self.model.parameters(), lr=lr)
        self.schedule = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimiser, epochs)
        self.batches = torch.Generator().manual_seed(seed)  # ... and the same batches
        self.seconds, self.losses = [], []

    def epoch(self):
        """Train one epoch; record its seconds and its mean training loss."""
        x_train, y_train = self.data[:2]
        self.model.train()
        start, total = time.perf_counter(), 0.0
        for index in torch.randperm(len(x_train), generator=self.batches).split(self.batch_size):
            self.optimiser.zero_grad()
            loss = torch.nn.functional.cross_entropy(self.model(x_train[index]), y_train[index])
            loss.backward()
            self.optimiser.step()
            total += loss.item() * len(index)
        self.schedule.step()
        self.seconds.append(time.perf_counter() - start)
        self.losses.append(total / len(x_train))

    def result(self):
        """accuracy (test), seconds_per_epoch (median of the epochs), losses (mean training
        loss per epoch) and the model."""
        return SimpleNamespace(accuracy=accuracy(self.model, *self.data[2:]),
                               seconds_per_epoch=float(np.median(self.seconds)),
                               losses=self.losses, model=self.model)


def train(nn, data, epochs: int = 30, batch_size: int = 32, seed: int = 0, lr: float = 0.01):
    """Train LeNet(nn) alone (see :class:`Run`); its result."""
    run = Run(nn, data, epochs, batch_size, seed, lr)
    for _ in range(epochs):
        run.epoch()
    return run.result()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data = load(args.seed)
    print(f"digits: {len(data[0])} training and {len(data[2])} test images, 8x8; "
          f"{args.epochs} epochs, batch {args.batch_size}, seed {args.seed}, "
          f"{torch.get_num_threads()} threads; the two runs take turns epoch by epoch")
    runs = {name: Run(nn, data, args.epochs, args.batch_size, args.seed)
            for name, nn in (("fastconv", fastconv.torch.nn), ("torch", torch.nn))}
    for epoch in range(args.epochs):
        for name in list(runs)[::1 if epoch % 2 == 0 else -1]:  # who goes first alternates
            time.sleep(IDLE_GAP_S)  # the other library's worker threads go idle
            runs[name].epoch()
    results = {name: run.result() for name, run in runs.items()}
    for name, result in results.items():
        print(f"{name:9} test accuracy {100 * result.accuracy:5.1f}%   "
              f"{1000 * result.seconds_per_epoch:7.1f} ms per epoch (median)   "
              f"final training loss {result.losses[-1]:.4f}")
    ratio = results["fastconv"].seconds_per_epoch / results["torch"].seconds_per_epoch
    print(f"fastconv/torch time per epoch: {ratio:.2f}")
    return results


if __name__ == "__main__":
    main()

"""The loop a careful engineer writes by hand, timed against lrsched by bench/overhead.py.

    python bench/hand_written.py [--epochs 20] [--threads N]   # in a process of its own

It imports torch alone, so that its peak memory and its whole-process time are a hand-written
loop's (bench/overhead.py --whole-process).
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from torch import nn


def hand_written_epochs(epochs: int, device: str) -> list[float]:
    """The loop a careful engineer writes by hand: same model, data, optimizer and schedule."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(8000, 2, generator=generator).to(device)
    y = (x[:, 0] * x[:, 1] > 0).long()
    x_train, y_train, x_val, y_val = x[:6400], y[:6400], x[6400:], y[6400:]
    model = nn.Sequential(
        nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2)
    ).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.5)
    loss_fn = nn.CrossEntropyLoss()
    seconds = []
    for _ in range(epochs):
        started = time.perf_counter()
        model.train()
        order = torch.randperm(len(x_train), generator=generator).to(device)
        xs, ys = x_train[order], y_train[order]
        total = torch.zeros((), device=device)
        for i in range(math.ceil(len(xs) / 64)):
            xb, yb = xs[i * 64 : (i + 1) * 64], ys[i * 64 : (i + 1) * 64]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(xb)
        model.eval()
        with torch.no_grad():
            output = model(x_val)
            val = loss_fn(output, y_val) * len(x_val)
            correct = (output.argmax(1) == y_val).sum()
        torch.stack([total, val, correct]).tolist()  # the one host sync per epoch
        scheduler.step()
        seconds.append(time.perf_counter() - started)
    return seconds


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0: torch's")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    hand_written_epochs(args.epochs, "cpu")
